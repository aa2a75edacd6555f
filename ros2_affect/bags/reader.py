"""Reading rosbag2 bags (sqlite3 or MCAP) without a ROS 2 installation, via ``rosbags``.

:class:`BagReader` opens a bag folder (``metadata.yaml`` + storage file) or a single
``.db3`` / ``.mcap`` file, lists its topics, finds the image topics and yields their
images (:class:`BagImage`, decoded lazily) with their stamps. Every failure of the
storage layer (corrupt, truncated, missing files) becomes a
:class:`~ros2_affect.errors.BagError` that names the file and says what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from ros2_affect.bags.labels import ANNOTATION_MSGTYPE, AnnotationSet, annotation_from_msg
from ros2_affect.errors import AffectError, BagError
from ros2_affect.msgs.messages import image_stamp_ns, stamp_ns_of
from ros2_affect.msgs.msg_types import COMPRESSED_IMAGE_MSGTYPE, IMAGE_MSGTYPES

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]
T = TypeVar("T")

STORAGE_SUFFIXES = {".db3": "sqlite3", ".mcap": "mcap"}


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: name, full message type, message count, and whether a
    message definition is stored for it (needed to copy it into another bag)."""

    name: str
    msgtype: str
    count: int
    has_definition: bool = True

    @property
    def is_image(self) -> bool:
        return self.msgtype in IMAGE_MSGTYPES

    @property
    def compressed(self) -> bool:
        return self.msgtype == COMPRESSED_IMAGE_MSGTYPE


@dataclass(frozen=True)
class BagMessage:
    """One raw message: topic, type, bag receive time, CDR bytes and the connection
    (its ``msgdef`` and ``digest`` let a writer copy the topic as is)."""

    topic: str
    msgtype: str
    bag_time_ns: int
    data: bytes
    connection: Any


@dataclass(frozen=True)
class BagImage:
    """One image message of a bag.

    Attributes:
        index: 0-based position of the message on its topic (in bag-time order).
        topic, msgtype: where it came from; ``msgtype`` tells raw from compressed.
        stamp_ns: the header stamp, or the bag receive time when the header stamp is 0
            (``stamp_from_header`` False), so that every image has a usable time.
        bag_time_ns: when the recorder received it.
        frame_id: header frame id.
        msg: the decoded message (rosbags dataclass: header, data, format / encoding...).
        data: its serialized CDR bytes (for copying it into another bag).
    """

    index: int
    topic: str
    msgtype: str
    stamp_ns: int
    bag_time_ns: int
    frame_id: str
    stamp_from_header: bool
    msg: Any
    data: bytes

    @property
    def compressed(self) -> bool:
        return self.msgtype == COMPRESSED_IMAGE_MSGTYPE

    def to_rgb(self) -> np.ndarray:
        """Decode to ``(H, W, 3)`` uint8 RGB.

        Raises:
            InvalidImageError: an unsupported encoding or undecodable data.
        """
        from ros2_affect.msgs.frame_processor import decode_image_msg

        return decode_image_msg(self.msg)


def _describe_failure(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def create_bag_typestore(distro: str = "humble") -> Any:
    """A rosbags typestore with the distribution's messages and all affect_msgs types
    (FaceAffect, FaceAffectArray, AffectAnnotation)."""
    from ros2_affect.msgs.msg_types import create_typestore

    return create_typestore(distro)


class BagReader:
    """A rosbag2 bag opened for reading. Use as a context manager::

        with BagReader("session/") as bag:
            topic = bag.select_image_topic(None)
            for image in bag.images(topic.name):
                rgb = image.to_rgb()

    Args:
        path: a bag folder (with ``metadata.yaml``) or a ``.db3`` / ``.mcap`` file.
        typestore: rosbags typestore used to decode messages; default
            :func:`create_bag_typestore` (humble + affect_msgs). Types it lacks are
            registered from the definitions stored in the bag.

        strict: stop at the first unreadable message or damaged storage page (BagError);
            by default they are skipped (logged, counted in :attr:`unreadable`) and reading
            goes on after the damage.

    Raises:
        BagError: the path is not a readable bag (see :meth:`open`).
    """

    def __init__(self, path: PathLike, typestore: Any = None, strict: bool = False) -> None:
        self.path = Path(path)
        self._typestore = typestore
        self._reader: Any = None
        self._connections: List[Any] = []
        self.strict = strict
        #: messages skipped so far: undecodable ones (:meth:`decode_or_skip`) and those lost
        #: in damaged storage pages/chunks (:meth:`messages`).
        self.unreadable = 0

    # -- opening ---------------------------------------------------------------------------

    def _guard(self, action: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; turn storage-layer exceptions into a BagError naming the bag."""
        try:
            return fn()
        except AffectError:
            raise
        except Exception as exc:  # rosbags, sqlite (apsw), mcap, struct and OS errors alike
            raise BagError(
                f"bag {str(self.path)!r}: cannot {action}: {_describe_failure(exc)} ({type(exc).__name__}). "
                f"The bag is corrupt or truncated (an interrupted recording?); {self.recovery_hint()}"
            ) from None

    def recovery_hint(self) -> str:
        """How to repair this bag's storage: ``mcap recover`` for MCAP, ``ros2 bag reindex`` for sqlite3."""
        storage = "mcap" if self.path.suffix == ".mcap" or any(self.path.glob("*.mcap")) else "sqlite3"
        if storage == "mcap":
            return (
                "recover what is readable with `mcap recover BAG.mcap -o fixed.mcap` (the mcap CLI) and replay that, "
                "or re-copy the bag"
            )
        return (
            "rebuild its metadata with `ros2 bag reindex BAG_FOLDER sqlite3` on a ROS 2 machine (or "
            "`sqlite3 BAG.db3 '.recover'` for damaged pages), or re-copy the bag"
        )

    def open(self) -> BagReader:
        """Open the bag and read its topic list.

        Raises:
            BagError: the path does not exist, is a folder without ``metadata.yaml``, is not
                a bag, or its storage cannot be read (corrupt or truncated).
        """
        if not self.path.exists():
            raise BagError(f"bag {str(self.path)!r} does not exist; pass a bag folder or a .db3/.mcap file")
        if self.path.is_dir():
            if not (self.path / "metadata.yaml").is_file():
                storage = sorted(p.name for p in self.path.iterdir() if p.suffix in STORAGE_SUFFIXES)
                hint = (
                    f"; it holds {', '.join(storage)}: pass that file directly, or run `ros2 bag reindex` on it"
                    if storage
                    else "; it holds no .db3 or .mcap file either"
                )
                raise BagError(
                    f"bag folder {str(self.path)!r} has no metadata.yaml, so it is not a complete rosbag2 bag{hint}"
                )
        elif self.path.suffix not in STORAGE_SUFFIXES:
            raise BagError(
                f"{str(self.path)!r} is not a bag: expected a bag folder (with metadata.yaml) or a "
                f"{' / '.join(STORAGE_SUFFIXES)} file, got a {self.path.suffix or 'suffix-less'} file"
            )
        from rosbags.rosbag2 import Reader

        def _open() -> Any:
            reader = Reader(self.path)
            reader.open()
            return reader

        self._reader = self._guard("open it", _open)
        self._connections = list(self._reader.connections)
        if self._typestore is None:
            self._typestore = create_bag_typestore()
        self._register_bag_types()
        return self

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            try:
                reader.close()
            except Exception as exc:  # closing a corrupt storage must not hide the first error
                LOG.debug("closing %s failed: %s", self.path, exc)

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _register_bag_types(self) -> None:
        """Make types only known from the bag's stored definitions decodable."""
        from rosbags.typesys import get_types_from_idl, get_types_from_msg
        from rosbags.typesys.base import TypesysError

        for conn in self._connections:
            if conn.msgtype in self._typestore.types or not conn.msgdef.data:
                continue
            try:
                if conn.msgdef.data.startswith("=" * 80 + "\nIDL: "):
                    types = get_types_from_idl(conn.msgdef.data)
                else:
                    types = get_types_from_msg(conn.msgdef.data, conn.msgtype)
                self._typestore.register({k: v for k, v in types.items() if k not in self._typestore.types})
            except (TypesysError, ValueError, KeyError) as exc:
                LOG.warning(
                    "%s: cannot parse the stored definition of %s (%s); it will not be decoded",
                    self.path,
                    conn.msgtype,
                    exc,
                )

    # -- inspection -------------------------------------------------------------------------

    @property
    def reader(self) -> Any:
        if self._reader is None:
            raise BagError(f"bag {str(self.path)!r} is not open; use `with BagReader(path) as bag:`")
        return self._reader

    @property
    def typestore(self) -> Any:
        return self._typestore

    @property
    def storage(self) -> str:
        """ "sqlite3" or "mcap"."""
        name = type(self.reader.storage).__name__
        if name == "DirectoryReader":
            return str(self.reader.storage.storages[0].__class__.__name__).replace("Reader", "").lower()
        return name.replace("Reader", "").lower()

    @property
    def topics(self) -> Dict[str, TopicInfo]:
        """Topic name -> :class:`TopicInfo`, sorted by name."""
        out: Dict[str, TopicInfo] = {}
        for conn in sorted(self._connections, key=lambda c: c.topic):
            prev = out.get(conn.topic)
            count = conn.msgcount + (prev.count if prev else 0)
            out[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count, bool(conn.msgdef.data))
        return out

    def describe_topics(self) -> str:
        """``"/a (sensor_msgs/msg/Image, 42 msgs), ..."`` for error messages."""
        topics = self.topics.values()
        return ", ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in topics) or "(no topics)"

    def image_topics(self) -> List[TopicInfo]:
        return [t for t in self.topics.values() if t.is_image]

    def topic(self, name: str) -> TopicInfo:
        """The topic ``name``.

        Raises:
            BagError: no such topic; the message lists the bag's topics and their types.
        """
        topics = self.topics
        if name not in topics:
            # rosbag2 stores names as recorded; accept a missing or extra leading slash
            alt = name[1:] if name.startswith("/") else "/" + name
            if alt in topics:
                return topics[alt]
            raise BagError(f"bag {str(self.path)!r} has no topic {name!r}; topics present: {self.describe_topics()}")
        return topics[name]

    def select_image_topic(self, name: Optional[str] = None) -> TopicInfo:
        """The image topic to process: ``name`` when given, else the bag's only one.

        Raises:
            BagError: ``name`` is missing or not an image topic; or ``name`` is None and the
                bag has no or several image topics (all listed, with their types).
        """
        if name:
            info = self.topic(name)
            if not info.is_image:
                raise BagError(
                    f"topic {info.name!r} of bag {str(self.path)!r} has type {info.msgtype}, not an image "
                    f"({' or '.join(IMAGE_MSGTYPES)}); image topics: "
                    f"{', '.join(t.name for t in self.image_topics()) or '(none)'}"
                )
            return info
        images = self.image_topics()
        if len(images) == 1:
            return images[0]
        if not images:
            raise BagError(
                f"bag {str(self.path)!r} has no image topic ({' or '.join(IMAGE_MSGTYPES)}); "
                f"topics present: {self.describe_topics()}"
            )
        raise BagError(
            f"bag {str(self.path)!r} has {len(images)} image topics: "
            f"{', '.join(f'{t.name} ({t.msgtype})' for t in images)}; choose one with --image-topic"
        )

    # -- iteration --------------------------------------------------------------------------

    def messages(self, topics: Sequence[str] = ()) -> Iterator[BagMessage]:
        """Raw messages of ``topics`` (all topics when empty) in bag-time order.

        Raises:
            BagError: a topic is missing, or the storage fails while reading.
        """
        names = {self.topic(t).name for t in topics}
        conns = [c for c in self._connections if not names or c.topic in names]
        if not conns:
            return
        expected = sum(int(c.msgcount) for c in conns)
        yielded = 0
        start: Optional[int] = None  # where reading (re)starts, ns; None: the beginning
        last_ns: Optional[int] = None
        damaged = False
        while True:
            try:
                for conn, bag_time_ns, data in self.reader.messages(connections=conns, start=start):
                    last_ns = int(bag_time_ns)
                    yielded += 1
                    yield BagMessage(conn.topic, conn.msgtype, last_ns, bytes(data), conn)
                break
            except AffectError:
                raise
            except Exception as exc:  # a damaged page (sqlite) or chunk (MCAP)
                if self.strict:
                    raise BagError(
                        f"bag {str(self.path)!r}: cannot read its messages after t={last_ns} ns: "
                        f"{_describe_failure(exc)} ({type(exc).__name__}); {self.recovery_hint()}, or leave out "
                        "--strict to skip the damaged part"
                    ) from None
                if not damaged:
                    LOG.warning(
                        "bag %s: damaged storage after t=%s ns (%s); skipping the unreadable part. To repair it: %s",
                        self.path, last_ns, _describe_failure(exc), self.recovery_hint(),
                    )
                damaged = True
                failed = last_ns if last_ns is not None else int(self.reader.start_time) - 1
                if start is not None and start > failed:
                    failed = start  # the resumed read failed at once: the damage goes on past it
                start = self._resume_after(conns, failed)
                if start is None:
                    break
        if damaged:
            lost = max(0, expected - yielded)
            self.unreadable += lost
            LOG.warning("bag %s: %d message(s) in damaged storage were skipped", self.path, lost)

    def decode(self, message: BagMessage) -> Any:
        """Deserialize one message.

        Raises:
            BagError: the type is unknown (no stored definition) or the bytes do not decode.
        """
        if message.msgtype not in self._typestore.types:
            raise BagError(
                f"bag {str(self.path)!r}: cannot decode {message.msgtype} on {message.topic}: the type is not "
                "known here and the bag stores no definition for it"
            )
        return self._guard(
            f"decode a {message.msgtype} message on {message.topic} at t={message.bag_time_ns} ns",
            lambda: self._typestore.deserialize_cdr(message.data, message.msgtype),
        )

    def _readable_from(self, conns: List[Any], start: int) -> bool:
        """Whether reading ``conns`` from ``start`` (ns) gets a first message without a storage error."""
        try:
            next(iter(self.reader.messages(connections=conns, start=start)), None)
        except AffectError:
            raise
        except Exception:
            return False
        return True

    def _resume_after(self, conns: List[Any], failed_ns: int) -> Optional[int]:
        """The earliest start (to 1 us) after ``failed_ns`` from which reading works again, or None.

        Steps forward in doubling strides from the damage until a read works, then bisects
        back, so messages just past a damaged sqlite page or MCAP chunk are not lost.
        """
        end_ns = int(self.reader.end_time)
        stride, good = 1_000, failed_ns + 1
        while not self._readable_from(conns, good):
            if good >= end_ns:
                return None
            failed_ns = good
            stride *= 2
            good = min(failed_ns + stride, end_ns)
        while good - failed_ns > 1_000:
            middle = (failed_ns + good) // 2
            if self._readable_from(conns, middle):
                good = middle
            else:
                failed_ns = middle
        return good

    def decode_or_skip(self, message: BagMessage) -> Any:
        """:meth:`decode`, or None (logged, counted in :attr:`unreadable`) when the message does
        not decode and the reader is not ``strict``.

        Raises:
            BagError: the message does not decode and ``strict`` is set.
        """
        try:
            return self.decode(message)
        except BagError as exc:
            if self.strict:
                raise BagError(f"{exc}; or leave out --strict to skip unreadable messages") from None
            self.unreadable += 1
            if self.unreadable <= 3 or self.unreadable % 100 == 0:
                LOG.warning("skipping an unreadable message (%d so far): %s", self.unreadable, exc)
            return None

    def images(self, topic: str) -> Iterator[BagImage]:
        """The images of ``topic`` in bag-time order (see :class:`BagImage`).

        Raises:
            BagError: the topic is missing or not an image topic, or reading fails.
        """
        info = self.select_image_topic(topic)
        for index, message in enumerate(self.messages([info.name])):
            msg = self.decode_or_skip(message)
            if msg is None:
                continue
            stamp_ns, from_header = image_stamp_ns(msg.header, message.bag_time_ns)
            yield BagImage(
                index=index,
                topic=message.topic,
                msgtype=message.msgtype,
                stamp_ns=stamp_ns,
                bag_time_ns=message.bag_time_ns,
                frame_id=str(msg.header.frame_id),
                stamp_from_header=from_header,
                msg=msg,
                data=message.data,
            )

    def annotation_topics(self) -> List[TopicInfo]:
        return [t for t in self.topics.values() if t.msgtype == ANNOTATION_MSGTYPE]

    def read_annotations(self, topic: Optional[str] = None) -> AnnotationSet:
        """The annotations on ``topic`` (default: the bag's only annotation topic).

        Raises:
            BagError: no (or an ambiguous) annotation topic, or a wrong message type.
        """
        if topic:
            info = self.topic(topic)
            if info.msgtype != ANNOTATION_MSGTYPE:
                raise BagError(
                    f"topic {info.name!r} has type {info.msgtype}; a label topic has type {ANNOTATION_MSGTYPE}"
                )
        else:
            found = self.annotation_topics()
            if len(found) != 1:
                raise BagError(
                    f"bag {str(self.path)!r} has {len(found)} annotation topics ({ANNOTATION_MSGTYPE}): "
                    f"{', '.join(t.name for t in found) or 'none'}; "
                    + ("choose one with --label-topic" if found else "pass labels with --labels")
                )
            info = found[0]
        annotations = []
        for message in self.messages([info.name]):
            msg = self.decode_or_skip(message)  # an unreadable one is logged and counted (strict: an error)
            if msg is not None:
                annotations.append(annotation_from_msg(msg, f"{self.path} topic {info.name}"))
        annotations.sort(key=lambda a: (a.stamp_ns or 0, a.face_id))
        return AnnotationSet(tuple(annotations), f"topic {info.name} of {self.path}", "bag")


def read_predictions(bag: BagReader, topic: Optional[str] = None) -> Tuple[str, List[Any]]:
    """The ``affect_msgs/msg/FaceAffectArray`` messages of an open bag, as
    :class:`~ros2_affect.bags.alignment.FramePrediction` in bag order.

    Args:
        topic: the topic; default ``/affect_node/faces`` when present, else the bag's only
            FaceAffectArray topic.

    Raises:
        BagError: no (or an ambiguous) prediction topic, or a topic of another type.
    """
    from ros2_affect.bags.alignment import FramePrediction, face_prediction_from_msg
    from ros2_affect.msgs.msg_types import FACE_AFFECT_ARRAY_MSGTYPE, FACES_TOPIC

    if topic:
        info = bag.topic(topic)
    else:
        found = [t for t in bag.topics.values() if t.msgtype == FACE_AFFECT_ARRAY_MSGTYPE]
        preferred = [t for t in found if t.name == FACES_TOPIC]
        if preferred or len(found) == 1:
            info = (preferred or found)[0]
        else:
            raise BagError(
                f"bag {str(bag.path)!r} has {len(found)} {FACE_AFFECT_ARRAY_MSGTYPE} topics"
                + (
                    f" ({', '.join(t.name for t in found)}); choose one with --predictions-topic"
                    if found
                    else "; it holds no predictions: run `ros2-affect replay` on it first. "
                    f"Topics: {bag.describe_topics()}"
                )
            )
    if info.msgtype != FACE_AFFECT_ARRAY_MSGTYPE:
        raise BagError(f"topic {info.name!r} has type {info.msgtype}; predictions are {FACE_AFFECT_ARRAY_MSGTYPE}")
    frames = []
    for index, message in enumerate(bag.messages([info.name])):
        msg = bag.decode_or_skip(message)  # an unreadable one is logged and counted (strict: an error)
        if msg is None:
            continue
        frames.append(
            FramePrediction(
                index=index,
                stamp_ns=stamp_ns_of(msg.header.stamp),
                bag_time_ns=message.bag_time_ns,
                faces=tuple(face_prediction_from_msg(f) for f in msg.faces),
                processing_latency_ms=float(msg.processing_latency_ms),
            )
        )
    return info.name, frames


def image_stamps(path: PathLike, topic: Optional[str] = None) -> Tuple[str, List[int]]:
    """The image topic of a bag and the stamps of its images, in order (frame index -> stamp)."""
    with BagReader(path) as bag:
        info = bag.select_image_topic(topic)
        return info.name, [image.stamp_ns for image in bag.images(info.name)]
