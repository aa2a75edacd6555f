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
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from ros2_affect.bags.reader import CAMERA_INFO_MSGTYPE, BagReader, create_bag_typestore
from ros2_affect.bags.writer import (
    STOPPED_BY_KEY,
    STORAGES,
    BagWriter,
    add_copied_topic,
    node_qos,
)
from ros2_affect.config import PipelineConfig, load_parameter_file, load_pipeline_config
from ros2_affect.errors import BagError, ConfigError, Interrupted, InvalidImageError
from ros2_affect.msgs.msg_types import FACE_AFFECT_ARRAY_MSGTYPE, FACES_TOPIC
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
    """Replay ``in_bag`` through the pipeline into ``out_bag`` (see the module docstring).

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
    from ros2_affect.core.pipeline import create_pipeline
    from ros2_affect.msgs.frame_processor import FrameProcessor
    from ros2_affect.msgs.messages import rosbags_message_types
    from ros2_affect.outputs import StopSignals, check_not_an_input

    if latency not in LATENCY_MODES:
        raise ConfigError(f"--latency {latency!r} is not accepted; choose one of {', '.join(LATENCY_MODES)}")
    if storage is not None and storage not in STORAGES:
        raise BagError(f"--storage {storage!r} is not accepted; choose one of {', '.join(STORAGES)}")
    if config is None:
        config = load_pipeline_config(config_path)
    if use_camera_info is None:
        from ros2_affect.assets import default_config_path

        params = load_parameter_file(config_path if config_path is not None else default_config_path())
        use_camera_info = bool(params.get("use_camera_info", False))
    check_not_an_input(out_bag, [in_bag, config_path])  # before reading anything

    store = create_bag_typestore()
    msg_types = rosbags_message_types(store)
    with BagReader(in_bag, typestore=store, strict=strict) as bag:
        info = bag.select_image_topic(image_topic)
        if faces_topic in bag.topics:
            raise BagError(
                f"input bag {str(in_bag)!r} already has {faces_topic!r} ({bag.topics[faces_topic].msgtype}); "
                "it is an output of the node or of replay. Replay the original recording, or pass --faces-topic"
            )
        info_topic = _camera_info_topic(bag, info.name) if use_camera_info else None
        if use_camera_info and info_topic is None:
            LOG.warning("use_camera_info is set but %s has no camera_info topic for %s", in_bag, info.name)
        result = ReplayResult(Path(out_bag), info.name, info.compressed)
        copy = sorted(bag.topics) if copy_input else []
        read = sorted(set(copy) | {info.name} | ({info_topic} if info_topic else set()))
        writer = BagWriter(
            out_bag,
            storage=storage or bag.storage,
            typestore=store,
            overwrite=overwrite,
            tool="replay",
            inputs=[in_bag, config_path],
        )
        stop = StopSignals("the current image")
        pipeline: Any = None
        bar: Any = None
        with contextlib.ExitStack() as stack:
            if stop_on_signals:  # from here on, a signal stops the loop and keeps a partial bag
                stack.enter_context(stop)
            stack.callback(lambda: pipeline.close() if pipeline is not None else None)
            stack.callback(lambda: bar.close() if bar is not None else None)
            pipeline = create_pipeline(config, tracker_seed=seed)
            processor = FrameProcessor(
                pipeline,
                msg_types,
                on_time_jump=lambda before, after: LOG.warning(
                    "image stamps go back in time (%d -> %d ns); restarting the tracks", before, after
                ),
            )
            camera_problems: Set[str] = set()
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=info.count, unit="img", desc="replay")
            with writer:
                writer.add_topic(faces_topic, FACE_AFFECT_ARRAY_MSGTYPE, qos=[node_qos()])
                for topic in list(copy):
                    conn = next(c for c in bag.reader.connections if c.topic == topic)
                    if not add_copied_topic(writer, conn):
                        copy.remove(topic)
                camera_info: Any = None
                index = -1
                for message in bag.messages(read):
                    if stop.received:
                        break
                    if message.topic in copy:
                        writer.write_raw(message.topic, message.bag_time_ns, message.data)
                        result.copied[message.topic] = result.copied.get(message.topic, 0) + 1
                    if message.topic == info_topic:
                        camera_info = bag.decode_or_skip(message) or camera_info
                        continue
                    if message.topic != info.name:
                        continue
                    index += 1
                    if bar is not None:
                        bar.update(1)
                    msg = bag.decode_or_skip(message)
                    if msg is None:  # logged and counted by the reader (--strict: an error)
                        continue
                    result.images += 1
                    try:
                        processed = processor.process(
                            msg,
                            camera_info,
                            fallback_stamp_ns=message.bag_time_ns,
                            latency_ms=0.0 if latency == "zero" else None,
                        )
                    except InvalidImageError as exc:
                        LOG.warning("skipping image %d of %s (t=%d ns): %s", index, info.name, message.bag_time_ns, exc)
                        result.skipped.append(f"{index}: {exc}")
                        continue
                    if processed.camera_problem and processed.camera_problem not in camera_problems:
                        camera_problems.add(processed.camera_problem)
                        LOG.warning("no viewing rays: %s", processed.camera_problem)
                    frame_result = processed.result
                    if not processed.stamp_from_header:
                        result.stamps_from_bag_time += 1
                    array = processed.faces_msg
                    writer.write(faces_topic, message.bag_time_ns, array)
                    result.arrays += 1
                    result.faces += len(frame_result.faces)
                    result.frames_with_faces += bool(frame_result.faces)
                    result.processing_ms.append(float(frame_result.stage_ms.get("total", 0.0)))
                result.unreadable = bag.unreadable
                result.rejected_outputs = pipeline.rejected_outputs
                if result.arrays == 0 and not getattr(stop, "received", None):
                    raise BagError(
                        f"no image of {info.name!r} in {str(in_bag)!r} could be processed ({info.count} messages, "
                        f"{len(result.skipped)} undecodable images, {result.unreadable} unreadable messages; see the "
                        f"warnings above), so no output bag was written; choose another topic with --image-topic "
                        f"(image topics: {', '.join(t.name for t in bag.image_topics())})"
                    )
                if stop.received and result.images == 0:  # leaving `with writer` removes the empty bag
                    raise Interrupted(f"stopped by {stop.received} before the first image; nothing written",
                                      stop.received)
                if stop.received:
                    partial = writer.close_partial(
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
