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
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Sequence, Union

from ros2_affect.bags.labels import ANNOTATION_MSGTYPE, Annotation
from ros2_affect.errors import AffectError, BagError
from ros2_affect.msgs.messages import split_stamp_ns
from ros2_affect.msgs.msg_types import create_typestore

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Accepted values of ``storage``.
STORAGES = ("sqlite3", "mcap")
#: rosbag2 metadata version written.
BAG_VERSION: Literal[8] = 8
#: Where affect_node publishes its FaceAffectArray (``~/faces`` of the default node name).


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


#: ``custom_data`` key of ``metadata.yaml`` naming the ros2-affect command that wrote a bag.
#: ``--overwrite`` only ever replaces a bag that carries it.
TOOL_KEY = "ros2_affect.tool"
#: ``custom_data`` keys of a bag closed early (a replay stopped by SIGINT/SIGTERM).
PARTIAL_KEY = "ros2_affect.partial"
STOPPED_BY_KEY = "ros2_affect.stopped_by"


def bag_custom_data(path: PathLike) -> Dict[str, str]:
    """The ``custom_data`` of a bag folder's ``metadata.yaml`` ({} when there is none, or
    when the file cannot be read)."""
    import yaml

    try:
        meta = yaml.safe_load((Path(path) / "metadata.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    info = meta.get("rosbag2_bagfile_information", {}) if isinstance(meta, dict) else {}
    custom = info.get("custom_data") if isinstance(info, dict) else None
    return {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}


def own_bag(path: Path) -> Optional[str]:
    """None when ``path`` is a bag folder that ros2-affect wrote and that holds nothing else
    (``metadata.yaml`` and the storage files it lists), else why not.

    Used as the ``owned`` check of :class:`ros2_affect.outputs.OutputTarget`: only such a
    folder may be replaced by ``--overwrite``.
    """
    import yaml

    if not path.is_dir():
        return "it is not a folder"
    meta_path = path / "metadata.yaml"
    if not meta_path.is_file():
        storage = sorted(p.name for p in path.iterdir() if p.suffix in (".db3", ".mcap"))
        return (
            "it has no metadata.yaml" + (f" beside {', '.join(storage)} (an unfinished recording?)" if storage else "")
        )
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
        info = meta["rosbag2_bagfile_information"]
        listed = {str(Path(f).name) for f in info.get("relative_file_paths") or []}
        listed |= {str(Path(f["path"]).name) for f in info.get("files") or []}
        custom = info.get("custom_data") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as exc:
        return f"its metadata.yaml cannot be read ({type(exc).__name__})"
    if not isinstance(custom, dict) or TOOL_KEY not in custom:
        return f"it is a bag that ros2-affect did not write (no {TOOL_KEY} in its metadata.yaml custom_data)"
    foreign = sorted(p.name for p in path.iterdir() if p.name != "metadata.yaml" and p.name not in listed)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return f"it holds {shown} beside the bag's own files"
    if any(not (path / name).is_file() for name in listed if (path / name).exists()):
        return "its storage entries are not plain files"
    return None


class BagWriter:
    """A new bag, opened for writing. Use as a context manager::

        with BagWriter("out_bag", storage="mcap", typestore=store, tool="replay") as bag:
            bag.add_topic("/affect_node/faces", "affect_msgs/msg/FaceAffectArray")
            bag.write("/affect_node/faces", stamp_ns, msg)

    The bag is written in a folder beside ``path`` and moved there by :meth:`close` only
    (:mod:`ros2_affect.outputs`): an error or Ctrl-C before that (:meth:`abort`) leaves an
    existing bag at ``path`` untouched and no partial one; :meth:`close_partial` keeps what
    was written as ``<path>.partial``, marked partial in its ``metadata.yaml``.

    Args:
        path: the bag folder to create. It must not exist (or be an empty folder), unless
            ``overwrite`` is set and it holds a bag that ros2-affect wrote and nothing else
            (:func:`own_bag`); that bag is removed only when the new one is complete.
        storage: "sqlite3" or "mcap".
        typestore: rosbags typestore that knows every type written with :meth:`write`
            (default: :func:`ros2_affect.bags.reader.create_bag_typestore`).
        overwrite: replace an existing bag that ros2-affect wrote.
        tool: the command writing the bag, recorded in ``metadata.yaml``'s ``custom_data``
            (:data:`TOOL_KEY`) so that ``--overwrite`` can recognise its own output.
        inputs: paths the caller reads; ``path`` may not be, hold or lie inside any of them.

    Raises:
        OutputError: ``path`` is an input, exists (and may not be replaced).
        BagError: an unknown storage.
    """

    def __init__(
        self,
        path: PathLike,
        storage: str = "sqlite3",
        typestore: Any = None,
        overwrite: bool = False,
        tool: str = "ros2-affect",
        inputs: Sequence[Optional[PathLike]] = (),
    ) -> None:
        from ros2_affect.outputs import OutputTarget

        self.path = Path(path)
        self.storage = storage
        self.tool = tool
        self._plugin = _storage_plugin(storage)
        # checked now, before a long run starts; a previous bag is removed only by close()
        self._target = OutputTarget(self.path, overwrite=overwrite, owned=own_bag, tool=tool, inputs=inputs)
        if typestore is None:

            typestore = create_typestore()
        self.typestore = typestore
        self._writer: Any = None
        self._stage: Any = None
        self._connections: Dict[str, Any] = {}
        self.counts: Dict[str, int] = {}

    def open(self) -> BagWriter:
        from rosbags.rosbag2 import Writer

        self._stage = self._target.stage()
        try:
            self._writer = Writer(self._stage.path, version=BAG_VERSION, storage_plugin=self._plugin)
            self._writer.set_custom_data(TOOL_KEY, self.tool)
            self._writer.open()
        except Exception as exc:
            self._writer = None
            self._stage.discard()
            raise BagError(f"cannot create bag {str(self.path)!r}: {exc}") from None
        return self

    def close(self) -> None:
        """Finish the storage file and ``metadata.yaml``, then move the bag into place."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception as exc:
                self._stage.discard()
                raise BagError(f"cannot finish bag {str(self.path)!r}: {exc}") from None
            self._stage.commit()

    def close_partial(self, custom_data: Optional[Dict[str, str]] = None, in_place: bool = False) -> Path:
        """Finish what was written as a valid bag marked partial (``custom_data``
        :data:`PARTIAL_KEY` ``"true"``, plus ``custom_data``) and keep it beside the target
        as ``<path>.partial`` (numbered when taken); an existing bag at ``path`` stays.
        ``in_place``: move it to ``path`` itself (for a bag inside a folder that is kept as
        partial as a whole). Returns where the partial bag is.

        Raises:
            BagError: the storage could not be finished (nothing is kept then).
        """
        if self._writer is None:
            raise BagError(f"bag {str(self.path)!r} is not open for writing; nothing to close")
        writer, self._writer = self._writer, None
        writer.set_custom_data(PARTIAL_KEY, "true")
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, str(value))
        try:
            writer.close()
        except Exception as exc:
            self._stage.discard()
            raise BagError(f"cannot finish the partial bag {str(self.path)!r}: {exc}") from None
        kept: Path = self._stage.commit() if in_place else self._stage.keep_partial()
        return kept

    def abort(self) -> None:
        """Stop after an error: delete the new bag; an existing bag at ``path`` stays as it was."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.abort()
            except Exception as exc:
                LOG.debug("aborting %s failed: %s", self.path, exc)
            self._stage.discard()

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
    sec, nanosec = split_stamp_ns(stamp_ns)
    time_cls = typestore.types["builtin_interfaces/msg/Time"]
    return typestore.types["std_msgs/msg/Header"](stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id)


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
