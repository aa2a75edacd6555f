"""Writing rosbag2 bags (sqlite3 or MCAP) without a ROS 2 installation, via ``rosbags``.

Bags are written in rosbag2 format version 8 (the one ROS 2 Jazzy writes; Humble reads it
too). Every topic carries its full message definition (``ros2msg`` text, dependencies
included) and its RIHS01 type hash: sqlite3 bags in the ``message_definitions`` table,
MCAP bags as the channel's schema. So ``ros2 bag info/play`` and MCAP tools (Foxglove,
``mcap`` + ``mcap_ros2``) decode the custom ``affect_msgs`` types without having them
installed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Sequence, Union

from ros2_affect.bags.labels import ANNOTATION_MSGTYPE, Annotation
from ros2_affect.errors import AffectError, BagError

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Accepted values of ``storage``.
STORAGES = ("sqlite3", "mcap")
#: rosbag2 metadata version written.
BAG_VERSION: Literal[8] = 8
#: Where affect_node publishes its FaceAffectArray (``~/faces`` of the default node name).
FACES_TOPIC = "/affect_node/faces"
FACE_AFFECT_ARRAY_MSGTYPE = "affect_msgs/msg/FaceAffectArray"


def _storage_plugin(storage: str) -> Any:
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise BagError(f"storage {storage!r} is not supported; choose one of {', '.join(STORAGES)}")
    return StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3


def node_qos(depth: int = 10) -> Any:
    """The QoS the node's publishers offer (rclpy's default for ``create_publisher(..., depth)``):
    reliable, volatile, keep last ``depth``. Recorded so ``ros2 bag play`` publishes alike."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    unspecified = QosTime(sec=0, nsec=0)  # RMW_DURATION_UNSPECIFIED: the middleware default
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.VOLATILE,
        deadline=unspecified,
        lifespan=unspecified,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=unspecified,
        avoid_ros_namespace_conventions=False,
    )


def storage_file(path: PathLike) -> Path:
    """The single ``.db3``/``.mcap`` file of a bag folder written by :class:`BagWriter`."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".db3", ".mcap"))
    if len(files) != 1:
        raise BagError(f"bag {str(path)!r} holds {len(files)} storage files; expected exactly one .db3 or .mcap")
    return files[0]


def _looks_like_bag(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / "metadata.yaml").is_file()
        and all(p.suffix in (".db3", ".mcap", ".yaml", ".zstd") for p in path.iterdir())
    )


class BagWriter:
    """A new bag, opened for writing. Use as a context manager::

        with BagWriter("out_bag", storage="mcap", typestore=store) as bag:
            bag.add_topic("/affect_node/faces", "affect_msgs/msg/FaceAffectArray")
            bag.write("/affect_node/faces", stamp_ns, msg)

    Args:
        path: the bag folder to create (must not exist, unless ``overwrite`` and it is a bag).
        storage: "sqlite3" or "mcap".
        typestore: rosbags typestore that knows every type written with :meth:`write`
            (default: :func:`ros2_affect.bags.reader.create_bag_typestore`).
        overwrite: replace an existing bag folder at ``path`` (only a folder that holds a
            bag and nothing else is ever deleted).

    Raises:
        BagError: ``path`` exists (and cannot or may not be replaced), or an unknown storage.
    """

    def __init__(
        self, path: PathLike, storage: str = "sqlite3", typestore: Any = None, overwrite: bool = False
    ) -> None:
        self.path = Path(path)
        self.storage = storage
        self._plugin = _storage_plugin(storage)
        if self.path.exists():
            if not overwrite:
                raise BagError(
                    f"output bag {str(self.path)!r} already exists; remove it, choose another path or pass --overwrite"
                )
            if not _looks_like_bag(self.path):
                raise BagError(
                    f"output path {str(self.path)!r} exists and is not a bag folder; "
                    "refusing to delete it with --overwrite"
                )
        # checked now (before a long run starts), deleted only when the new bag is opened
        self._replace = overwrite and self.path.exists()
        if typestore is None:
            from ros2_affect.bags.reader import create_bag_typestore

            typestore = create_bag_typestore()
        self.typestore = typestore
        self._writer: Any = None
        self._connections: Dict[str, Any] = {}
        self.counts: Dict[str, int] = {}

    def open(self) -> BagWriter:
        from rosbags.rosbag2 import Writer

        if self._replace and _looks_like_bag(self.path):
            shutil.rmtree(self.path)
        try:
            self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=self._plugin)
            self._writer.open()
        except Exception as exc:
            self._writer = None
            raise BagError(f"cannot create bag {str(self.path)!r}: {exc}") from None
        return self

    def close(self) -> None:
        """Finish the storage file and write ``metadata.yaml``."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception as exc:
                raise BagError(f"cannot finish bag {str(self.path)!r}: {exc}") from None

    def abort(self) -> None:
        """Stop after an error and delete the partial bag (this writer created the folder)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.abort()
            except Exception as exc:
                LOG.debug("aborting %s failed: %s", self.path, exc)
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def writer(self) -> Any:
        if self._writer is None:
            raise BagError(f"bag {str(self.path)!r} is not open for writing; use `with BagWriter(...) as bag:`")
        return self._writer

    def add_topic(
        self,
        topic: str,
        msgtype: str,
        msgdef: Optional[str] = None,
        digest: Optional[str] = None,
        qos: Sequence[Any] = (),
    ) -> None:
        """Declare a topic. Its definition comes from ``msgdef``/``digest`` (copying a topic
        from another bag) or else from the typestore. ``qos``: the offered QoS profiles to
        record (rosbags ``Qos``; e.g. :func:`node_qos`, or those of a copied topic).

        Raises:
            BagError: the topic exists already, or the type is unknown and no definition given.
        """
        if topic in self._connections:
            raise BagError(f"topic {topic!r} is added twice to bag {str(self.path)!r}")
        try:
            if msgdef and digest:
                conn = self.writer.add_connection(
                    topic, msgtype, msgdef=msgdef, rihs01=digest, offered_qos_profiles=list(qos)
                )
            else:
                if msgtype not in self.typestore.types:
                    raise BagError(
                        f"cannot write {msgtype} on {topic!r}: the type is unknown to the typestore and no "
                        "message definition was given"
                    )
                conn = self.writer.add_connection(
                    topic, msgtype, typestore=self.typestore, offered_qos_profiles=list(qos)
                )
        except AffectError:
            raise
        except Exception as exc:
            raise BagError(f"cannot add topic {topic!r} ({msgtype}) to bag {str(self.path)!r}: {exc}") from None
        self._connections[topic] = conn
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        return topic in self._connections

    def write_raw(self, topic: str, bag_time_ns: int, data: bytes) -> None:
        """Write already serialized CDR bytes at bag time ``bag_time_ns``."""
        if topic not in self._connections:
            raise BagError(f"topic {topic!r} was not added to bag {str(self.path)!r}; call add_topic first")
        self.writer.write(self._connections[topic], int(bag_time_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, bag_time_ns: int, msg: Any) -> bytes:
        """Serialize ``msg`` (a typestore message) and write it; returns the CDR bytes."""
        conn = self._connections.get(topic)
        if conn is None:
            raise BagError(f"topic {topic!r} was not added to bag {str(self.path)!r}; call add_topic first")
        data = bytes(self.typestore.serialize_cdr(msg, conn.msgtype))
        self.write_raw(topic, bag_time_ns, data)
        return data


# -- message construction ----------------------------------------------------------------------


def make_header(typestore: Any, stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/msg/Header`` for ``stamp_ns``."""
    time_cls = typestore.types["builtin_interfaces/msg/Time"]
    header_cls = typestore.types["std_msgs/msg/Header"]
    return header_cls(
        stamp=time_cls(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)), frame_id=frame_id
    )


def annotation_msg(typestore: Any, annotation: Annotation, stamp_ns: int, frame_id: str, source: str = "") -> Any:
    """An ``affect_msgs/msg/AffectAnnotation`` for one :class:`Annotation`."""
    if ANNOTATION_MSGTYPE not in typestore.types:
        raise BagError(
            f"the typestore lacks {ANNOTATION_MSGTYPE}; affect_msgs/msg/AffectAnnotation.msg was not found "
            "(run from a ros2_affect checkout or set $ROS2_AFFECT_MSG_DIR)"
        )
    cls = typestore.types[ANNOTATION_MSGTYPE]
    return cls(
        header=make_header(typestore, stamp_ns, frame_id),
        frame_index=-1 if annotation.frame_index is None else int(annotation.frame_index),
        face_id=annotation.face_id,
        has_expression=annotation.expression is not None,
        expression=annotation.expression or "",
        has_valence=annotation.valence is not None,
        valence=float(annotation.valence or 0.0),
        has_arousal=annotation.arousal is not None,
        arousal=float(annotation.arousal or 0.0),
        source=source,
    )


def add_copied_topic(writer: BagWriter, connection: Any) -> bool:
    """Declare a topic of another bag (a rosbags connection) with its stored definition and
    QoS. Returns False, with a warning, when neither the bag nor the typestore defines it."""
    qos = getattr(connection.ext, "offered_qos_profiles", ())
    if connection.msgdef.data and connection.digest:
        writer.add_topic(connection.topic, connection.msgtype, connection.msgdef.data, connection.digest, qos)
    elif connection.msgtype in writer.typestore.types:
        writer.add_topic(connection.topic, connection.msgtype, qos=qos)
    else:
        LOG.warning(
            "not copying %s (%s): the input bag stores no definition for it", connection.topic, connection.msgtype
        )
        return False
    return True


def copy_topics(reader: Any, writer: BagWriter, topics: Sequence[str]) -> Dict[str, int]:
    """Copy ``topics`` of an open :class:`~ros2_affect.bags.reader.BagReader` verbatim
    (same bytes, same bag times, the stored definitions) into ``writer``.

    Topics whose definition the source bag lacks are taken from the typestore, or skipped
    with a warning when it does not know them. Returns topic -> messages copied.
    """
    conns = {c.topic: c for c in reader.reader.connections}
    copied: Dict[str, int] = {}
    for topic in topics:
        info = reader.topic(topic)
        conn = conns[info.name]
        if writer.has_topic(info.name):
            continue
        if add_copied_topic(writer, conn):
            copied[info.name] = 0
    for message in reader.messages(list(copied)):
        writer.write_raw(message.topic, message.bag_time_ns, message.data)
        copied[message.topic] += 1
    return copied
