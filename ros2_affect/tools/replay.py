"""``ros2-affect replay``: run the node's pipeline over a bag's images, write its output to a bag.

The same parameter file as the node (``config/affect.yaml``, or ``--config``), the same
models, tracker and message builder (:func:`ros2_affect.msgs.messages.build_face_affect_array`),
run in bag time: each image's header stamp (the bag receive time when the header stamp
is 0) is the frame's stamp, and the ``affect_msgs/msg/FaceAffectArray`` is written on
``/affect_node/faces`` (the node's ``~/faces``) with the source image's header and at
the image's bag receive time. Raw (``sensor_msgs/Image``) and compressed topics are told
apart by their message type.

Deterministic: the tracker's id seed is fixed (``--seed``), so the same bag and settings
give the same messages, byte for byte, except ``processing_latency_ms``, which is the
measured wall time of each frame; ``--latency zero`` writes 0 there to make whole
messages reproducible.

With ``--copy-input`` every input topic (images, camera info, annotation topics...) is
copied verbatim into the output bag, so it alone feeds ``ros2-affect evaluate`` and
``ros2 bag play``. With ``use_camera_info: true`` in the parameter file the latest
``camera_info`` of the image's camera gives every face its viewing ray, as in the node.

``ros2-affect run BAG`` is this same replay (:class:`BagReplay`) plus a line of
``results.jsonl`` per image.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set

from ros2_affect.bags.reader import BagReader, create_bag_typestore
from ros2_affect.bags.writer import (
    STOPPED_BY_KEY,
    STORAGES,
    BagWriter,
    add_copied_topic,
    node_qos,
)
from ros2_affect.config import PipelineConfig, load_parameter_file, load_pipeline_config
from ros2_affect.errors import BagError, ConfigError, Interrupted, InvalidImageError
from ros2_affect.msgs.msg_types import CAMERA_INFO_MSGTYPE, FACE_AFFECT_ARRAY_MSGTYPE, FACES_TOPIC
from ros2_affect.tools.cli_args import (
    add_command,
    add_config_arguments,
    config_with_overrides,
    topic_name,
    track_seed,
)

LOG = logging.getLogger(__name__)

LATENCY_MODES = ("measured", "zero")
#: Tracker id seed used by replays unless told otherwise (any fixed value makes runs repeatable).
DEFAULT_SEED = 0


@dataclass
class ReplayResult:
    """What :func:`replay` did."""

    out: Path
    image_topic: str
    compressed: bool
    images: int = 0
    arrays: int = 0
    faces: int = 0
    frames_with_faces: int = 0
    skipped: List[str] = field(default_factory=list)
    copied: Dict[str, int] = field(default_factory=dict)
    stamps_from_bag_time: int = 0
    processing_ms: List[float] = field(default_factory=list)
    #: input messages that could not be read (undecodable, or in a damaged storage page/chunk).
    unreadable: int = 0
    #: the storage's repair tool, when messages were lost to damaged storage.
    recovery_hint: str = ""
    #: model outputs that were non-finite and left out of the messages (the face has no affect).
    rejected_outputs: int = 0


def _camera_info_topic(bag: BagReader, image_topic: str) -> Optional[str]:
    """The CameraInfo topic of an image topic's camera (``.../camera_info`` beside it)."""
    infos = [t.name for t in bag.topics.values() if t.msgtype == CAMERA_INFO_MSGTYPE]
    parts = image_topic.rstrip("/").split("/")
    # /cam/image_raw -> /cam/camera_info; /cam/image_raw/compressed -> /cam/camera_info too
    for depth in range(len(parts) - 1, 0, -1):
        candidate = "/".join(parts[:depth] + ["camera_info"])
        if candidate in infos:
            return candidate
    return infos[0] if len(infos) == 1 else None


def camera_info_setting(config_path: Optional[Path]) -> bool:
    """``use_camera_info`` of the parameter file (default: the packaged ``config/affect.yaml``)."""
    from ros2_affect.assets import default_config_path

    params = load_parameter_file(config_path if config_path is not None else default_config_path())
    return bool(params.get("use_camera_info", False))


@dataclass(frozen=True)
class ReplayedImage:
    """One image a :class:`BagReplay` processed.

    Attributes:
        index: its position on the image topic (0-based, counting unreadable messages).
        bag_time_ns: when the recorder received it (its FaceAffectArray is written then).
        processed: the frame processor's :class:`~ros2_affect.msgs.frame_processor.ProcessedFrame`.
    """

    index: int
    bag_time_ns: int
    processed: Any


class BagReplay:
    """One pass of a bag's images through the frame processor into an output bag: the one
    replay implementation, behind ``ros2-affect replay`` (:func:`replay`) and ``ros2-affect
    run`` on a bag (which also writes each result as a line of ``results.jsonl``).

    For every message of the image topic, in bag order: decode (raw or compressed), stamp
    (the header stamp, the bag receive time when that is 0), pair with the latest
    ``camera_info`` of the image's camera (``use_camera_info``), run the pipeline (backwards
    time restarts the tracks) and write the ``FaceAffectArray`` on ``faces_topic`` at the
    image's bag time; with ``copy_input``, every input topic is copied as it comes::

        with BagReplay(in_bag, out_bag, config) as session:
            for image in session.images():
                ...  # image.processed.result, image.processed.rgb
            result = session.tally()

    Leaving the block normally finishes the output bag; after an error the new bag is
    deleted (an existing one stays); :meth:`close_partial` keeps it, marked partial.

    Args:
        config: the pipeline settings.
        seed: tracker id seed; None: fresh ids every run (as the node).
        storage: "sqlite3" or "mcap"; default: the input bag's.
        stop: a :class:`~ros2_affect.outputs.StopSignals` checked before every message
            (:meth:`images` ends once it has received a signal).
        progress: something with ``update(1)`` (a tqdm bar), told of every image message.
        max_images: stop after this many messages of the image topic.
        tool, inputs, overwrite: of the output :class:`~ros2_affect.bags.writer.BagWriter`.

    Raises (when entered):
        OutputError: the output is, holds or lies inside an input, or exists (see ``overwrite``).
        BagError: unreadable input, missing/ambiguous image topic, ``faces_topic`` already there.
        ConfigError, AssetMissingError, ModelLoadError: bad settings or models.
    """

    def __init__(
        self,
        in_bag: Path,
        out_bag: Path,
        config: PipelineConfig,
        *,
        image_topic: Optional[str] = None,
        copy_input: bool = False,
        storage: Optional[str] = None,
        latency: str = "measured",
        faces_topic: str = FACES_TOPIC,
        seed: Optional[int] = DEFAULT_SEED,
        use_camera_info: bool = False,
        overwrite: bool = False,
        strict: bool = False,
        max_images: Optional[int] = None,
        tool: str = "replay",
        inputs: Sequence[Optional[Path]] = (),
        stop: Any = None,
        progress: Any = None,
    ) -> None:
        if latency not in LATENCY_MODES:
            raise ConfigError(f"--latency {latency!r} is not accepted; choose one of {', '.join(LATENCY_MODES)}")
        if storage is not None and storage not in STORAGES:
            raise BagError(f"--storage {storage!r} is not accepted; choose one of {', '.join(STORAGES)}")
        self.in_bag, self.out_bag, self.config = Path(in_bag), Path(out_bag), config
        self.image_topic, self.copy_input, self.storage, self.latency = image_topic, copy_input, storage, latency
        self.faces_topic, self.seed, self.use_camera_info = faces_topic, seed, use_camera_info
        self.overwrite, self.strict, self.max_images = overwrite, strict, max_images
        self.tool, self.inputs, self.stop, self.progress = tool, list(inputs), stop, progress
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> BagReplay:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> Optional[bool]:
        return self._stack.__exit__(*exc)

    def _open(self) -> None:
        from ros2_affect.core.pipeline import create_pipeline
        from ros2_affect.msgs.frame_processor import FrameProcessor
        from ros2_affect.msgs.messages import rosbags_message_types

        store = create_bag_typestore()
        bag = self.bag = self._stack.enter_context(BagReader(self.in_bag, typestore=store, strict=self.strict))
        info = self.info = bag.select_image_topic(self.image_topic)
        if self.faces_topic in bag.topics:
            raise BagError(
                f"input bag {str(self.in_bag)!r} already has {self.faces_topic!r} "
                f"({bag.topics[self.faces_topic].msgtype}); it is an output of the node or of replay. Replay the "
                "original recording, or pass --faces-topic"
            )
        self.info_topic = _camera_info_topic(bag, info.name) if self.use_camera_info else None
        if self.use_camera_info and self.info_topic is None:
            LOG.warning("use_camera_info is set but %s has no camera_info topic for %s", self.in_bag, info.name)
        self.result = ReplayResult(self.out_bag, info.name, info.compressed)
        self._copy = sorted(bag.topics) if self.copy_input else []
        writer = BagWriter(
            self.out_bag,
            storage=self.storage or bag.storage,
            typestore=store,
            overwrite=self.overwrite,
            tool=self.tool,
            inputs=self.inputs,
        )
        self.pipeline = create_pipeline(self.config, tracker_seed=self.seed)
        self._stack.callback(self.pipeline.close)
        self.processor = FrameProcessor(self.pipeline, rosbags_message_types(store))
        self.writer = self._stack.enter_context(writer)
        writer.add_topic(self.faces_topic, FACE_AFFECT_ARRAY_MSGTYPE, qos=[node_qos()])
        for topic in list(self._copy):
            conn = next(c for c in bag.reader.connections if c.topic == topic)
            if not add_copied_topic(writer, conn):
                self._copy.remove(topic)

    def images(self) -> Iterator[ReplayedImage]:
        """Process the bag (see the class docstring), yielding every image that gave a FaceAffectArray.

        Undecodable images are logged and listed in ``result.skipped``; unreadable messages
        are logged and counted by the reader (``strict``: a BagError).
        """
        bag, info, result, writer = self.bag, self.info, self.result, self.writer
        read = sorted(set(self._copy) | {info.name} | ({self.info_topic} if self.info_topic else set()))
        camera_info: Any = None
        camera_problems: Set[str] = set()
        index = -1
        for message in bag.messages(read):
            if self.stop is not None and self.stop.received:
                return
            if message.topic in self._copy:
                writer.write_raw(message.topic, message.bag_time_ns, message.data)
                result.copied[message.topic] = result.copied.get(message.topic, 0) + 1
            if message.topic == self.info_topic:
                camera_info = bag.decode_or_skip(message) or camera_info
                continue
            if message.topic != info.name:
                continue
            index += 1
            if self.max_images is not None and index >= self.max_images:
                return
            if self.progress is not None:
                self.progress.update(1)
            msg = bag.decode_or_skip(message)
            if msg is None:  # logged and counted by the reader (--strict: an error)
                continue
            result.images += 1
            try:
                processed = self.processor.process(
                    msg,
                    camera_info,
                    fallback_stamp_ns=message.bag_time_ns,
                    latency_ms=0.0 if self.latency == "zero" else None,
                )
            except InvalidImageError as exc:
                LOG.warning("skipping image %d of %s (t=%d ns): %s", index, info.name, message.bag_time_ns, exc)
                result.skipped.append(f"{index}: {exc}")
                continue
            if processed.camera_problem and processed.camera_problem not in camera_problems:
                camera_problems.add(processed.camera_problem)
                LOG.warning("no viewing rays: %s", processed.camera_problem)
            if not processed.stamp_from_header:
                result.stamps_from_bag_time += 1
            writer.write(self.faces_topic, message.bag_time_ns, processed.faces_msg)
            frame_result = processed.result
            result.arrays += 1
            result.faces += len(frame_result.faces)
            result.frames_with_faces += bool(frame_result.faces)
            result.processing_ms.append(float(frame_result.stage_ms.get("total", 0.0)))
            yield ReplayedImage(index, message.bag_time_ns, processed)

    def tally(self) -> ReplayResult:
        """:attr:`result` with the reader's unreadable messages and the model's rejected outputs so far."""
        self.result.unreadable = self.bag.unreadable
        self.result.rejected_outputs = self.pipeline.rejected_outputs
        return self.result

    def close(self) -> None:
        """Finish the output bag now (complete, unless :meth:`close_partial` was called) and
        release the input bag and the pipeline; leaving the ``with`` block then does nothing."""
        self._stack.close()

    def close_partial(self, custom_data: Dict[str, str], in_place: bool = False) -> Path:
        """Finish the output bag written so far, marked partial (see
        :meth:`~ros2_affect.bags.writer.BagWriter.close_partial`); returns where it is."""
        return self.writer.close_partial(custom_data, in_place=in_place)


def replay(
    in_bag: Path,
    out_bag: Path,
    image_topic: Optional[str] = None,
    config: Optional[PipelineConfig] = None,
    config_path: Optional[Path] = None,
    copy_input: bool = False,
    storage: Optional[str] = None,
    latency: str = "measured",
    faces_topic: str = FACES_TOPIC,
    seed: Optional[int] = DEFAULT_SEED,
    use_camera_info: Optional[bool] = None,
    overwrite: bool = False,
    progress: bool = False,
    stop_on_signals: bool = False,
    strict: bool = False,
) -> ReplayResult:
    """Replay ``in_bag`` through the pipeline into ``out_bag`` (see the module docstring and :class:`BagReplay`).

    Args:
        config: pipeline settings; default: those of ``config_path`` (default: the
            packaged ``config/affect.yaml``).
        storage: "sqlite3" or "mcap"; default: the input bag's.
        seed: tracker id seed; None: fresh ids every run (as the node).
        use_camera_info: default: the parameter file's ``use_camera_info``.
        overwrite: replace an existing output bag that ros2-affect wrote, once the new one
            is complete (:class:`~ros2_affect.bags.writer.BagWriter`).
        stop_on_signals: SIGINT and SIGTERM stop the replay between images (the command
            line sets it): the bag written so far is closed, marked partial and kept as
            ``<out_bag>.partial``, and :class:`~ros2_affect.errors.Interrupted` is raised.

    Raises:
        OutputError: the output is, holds or lies inside an input, or exists (see ``overwrite``).
        BagError: unreadable input, missing/ambiguous image topic.
        ConfigError, AssetMissingError, ModelLoadError: bad settings or models.
        Interrupted: stopped by a signal (``stop_on_signals``), after keeping the partial bag.
    """
    from ros2_affect.outputs import StopSignals, check_not_an_input

    if config is None:
        config = load_pipeline_config(config_path)
    if use_camera_info is None:
        use_camera_info = camera_info_setting(config_path)
    session = BagReplay(
        in_bag,
        out_bag,
        config,
        image_topic=image_topic,
        copy_input=copy_input,
        storage=storage,
        latency=latency,
        faces_topic=faces_topic,
        seed=seed,
        use_camera_info=use_camera_info,
        overwrite=overwrite,
        strict=strict,
        inputs=[in_bag, config_path],
    )
    check_not_an_input(out_bag, [in_bag, config_path])  # before reading anything
    stop = StopSignals("the current image")
    with contextlib.ExitStack() as stack:
        if stop_on_signals:  # from here on, a signal stops the loop and keeps a partial bag
            stack.enter_context(stop)
        session.stop = stop
        stack.enter_context(session)
        info = session.info
        if progress:
            from tqdm import tqdm

            session.progress = stack.enter_context(tqdm(total=info.count, unit="img", desc="replay"))
        for _ in session.images():
            pass
        result = session.tally()
        if result.arrays == 0 and not stop.received:
            raise BagError(
                f"no image of {info.name!r} in {str(in_bag)!r} could be processed ({info.count} messages, "
                f"{len(result.skipped)} undecodable images, {result.unreadable} unreadable messages; see the "
                f"warnings above), so no output bag was written; choose another topic with --image-topic "
                f"(image topics: {', '.join(t.name for t in session.bag.image_topics())})"
            )
        if stop.received and result.images == 0:  # leaving the session removes the empty bag
            raise Interrupted(f"stopped by {stop.received} before the first image; nothing written", stop.received)
        if stop.received:
            partial = session.close_partial(
                {STOPPED_BY_KEY: stop.received, "ros2_affect.images": f"{result.images} of {info.count}"}
            )
            raise Interrupted(
                f"stopped by {stop.received} after {result.images} of {info.count} images: the partial bag "
                f"{str(partial)!r} holds {result.arrays} FaceAffectArray on {faces_topic} and is marked "
                f"partial in its metadata.yaml (custom_data ros2_affect.partial: 'true')"
                + (f"; {str(out_bag)!r} was left as it was" if Path(out_bag).exists() else ""),
                stop.received,
            )
    if result.stamps_from_bag_time:
        LOG.warning(
            "%d of %d images had a zero header stamp; their bag receive time was used instead",
            result.stamps_from_bag_time,
            result.images,
        )
    return result


# -- command line ------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "replay",
        "run the node's pipeline over a bag's images and write FaceAffectArray to an output bag",
        __doc__,
    )
    parser.add_argument("bag", type=Path, help="input bag (folder, or a .db3/.mcap file)")
    parser.add_argument("--out", type=Path, required=True, help="output bag folder to create")
    parser.add_argument("--image-topic", help="image topic (default: the bag's only Image/CompressedImage topic)")
    add_config_arguments(parser)
    parser.add_argument("--copy-input", action="store_true", help="copy every input topic into the output bag")
    parser.add_argument("--storage", choices=STORAGES, help="output storage (default: the input's)")
    parser.add_argument(
        "--latency",
        choices=LATENCY_MODES,
        default="measured",
        help="processing_latency_ms: the measured time, or 0 for byte-reproducible messages",
    )
    parser.add_argument(
        "--faces-topic", type=topic_name, default=FACES_TOPIC, help=f"output topic (default {FACES_TOPIC})"
    )
    parser.add_argument(
        "--seed", type=track_seed, default=DEFAULT_SEED, help="tracker id seed (repeatable ids), >= 0"
    )
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable message or damaged storage page (default: skip and count)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output bag that ros2-affect wrote (only once the new one is complete)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_with_overrides(args.config, args.overrides)
    result = replay(
        args.bag,
        args.out,
        image_topic=args.image_topic,
        config=config,
        config_path=args.config,
        copy_input=args.copy_input,
        storage=args.storage,
        latency=args.latency,
        faces_topic=args.faces_topic,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=True,
        stop_on_signals=True,
        strict=args.strict,
    )
    kind = "compressed" if result.compressed else "raw"
    line = (
        f"wrote {result.out}: {result.arrays} FaceAffectArray on {args.faces_topic} for {result.images} {kind} images "
        f"of {result.image_topic}; {result.frames_with_faces} with faces ({result.faces} faces)"
    )
    if result.unreadable:
        line += f"; skipped {result.unreadable} unreadable input messages (--strict stops at the first)"
    if result.rejected_outputs:
        line += f"; {result.rejected_outputs} non-finite model outputs left out (those faces carry no affect)"
    if result.skipped:
        line += f"; skipped {len(result.skipped)} undecodable images"
    if result.copied:
        line += f"; copied {len(result.copied)} input topics"
    print(line)
    return 0
