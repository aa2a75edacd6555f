"""``ros2-affect run INPUT --out DIR``: run the pipeline on a video, photos, a rosbag, a camera or the sample.

Writes ``DIR/results.jsonl`` (one JSON object per frame, see :func:`frame_record`) and
annotated output: ``DIR/annotated.mp4`` for clips (video, camera, sample, rosbag) or
``DIR/annotated/<name>.jpg`` for images and image folders. The pipeline settings come
from the same parameter file the ROS node reads (default: the packaged affect.yaml).

A rosbag INPUT is replayed exactly as ``ros2-affect replay`` does it
(:class:`~ros2_affect.tools.replay.BagReplay`: the same frame processor as the node,
camera_info pairing with ``use_camera_info``, header-or-bag-time stamps, ``--copy-input``)
into ``DIR/bag``, and each image's result is also a line of ``results.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ros2_affect.bags.writer import STOPPED_BY_KEY, own_bag
from ros2_affect.config import PipelineConfig
from ros2_affect.core.types import FaceResult, Frame, FrameResult
from ros2_affect.errors import AffectError, ConfigError, InferenceError, Interrupted
from ros2_affect.msgs.msg_types import FACES_TOPIC
from ros2_affect.outputs import OutputTarget, OwnedCheck, StopSignals, files_with_suffix, only_entries
from ros2_affect.tools.cli_args import add_config_arguments, config_with_overrides, track_seed

LOG = logging.getLogger(__name__)

#: Per-frame errors are logged for the first few frames, then once every this many.
ERROR_LOG_EVERY = 50


def _px(values: Any) -> List[float]:
    return [round(float(v), 1) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def _points(values: Any) -> List[List[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in np.asarray(values, dtype=np.float64).reshape(-1, 2)]


def face_record(face: FaceResult, with_model: bool) -> Dict[str, Any]:
    """One face of ``results.jsonl``: pixels of the source image, subject's right eye first."""
    record: Dict[str, Any] = {
        "id": face.track_id,
        "confirmed": face.track_confirmed,
        "box": _px(face.detection.bbox_xyxy_px),
        "eyes": _points(face.detection.eyes_px),
        "keypoints": _points(face.detection.keypoints_px),
        "score": round(float(face.detection.score), 3),
    }
    if with_model:
        affect = face.affect
        # A rejected (non-finite) model output is reported as nulls, never as numbers.
        record.update(
            {
                "expression": affect.label if affect else None,
                "confidence": round(affect.confidence, 4) if affect else None,
                "probabilities": (
                    {c: round(float(p), 4) for c, p in zip(affect.class_names, affect.probabilities, strict=True)}
                    if affect else None
                ),
                "valence": round(affect.valence, 4) if affect else None,
                "arousal": round(affect.arousal, 4) if affect else None,
                "va_derived": affect.va_derived if affect else None,
                "frames_used": affect.frames_used if affect else None,
                "model_id": affect.model_id if affect else None,
            }
        )
    return record


def frame_record(index: int, name: str, result: FrameResult, with_model: bool) -> Dict[str, Any]:
    """One line of ``results.jsonl``."""
    return {
        "frame": index,
        "name": name,
        "stamp": round(result.stamp_ns * 1e-9, 6),
        "stamp_ns": int(result.stamp_ns),
        "width": result.width_px,
        "height": result.height_px,
        "faces": [face_record(face, with_model) for face in result.faces],
        "faces_dropped": result.faces_dropped,
        "stage_ms": {k: round(float(v), 2) for k, v in result.stage_ms.items()},
    }


class AnnotatedWriter:
    """Annotated frames as one mp4 (clips) or one JPEG per input image."""

    def __init__(self, out_dir: Path, as_video: bool, fps: float, codec: str = "auto") -> None:
        self.out_dir = out_dir
        self.as_video = as_video
        self.fps = fps
        self.codec = codec  #: ``--video-codec``; after the first frame, the codec written (e.g. "VP9")
        self._video: Any = None
        self._size: Optional[Tuple[int, int]] = None
        self.written = 0
        self.path = out_dir / "annotated.mp4" if as_video else out_dir / "annotated"
        if not as_video:
            self.path.mkdir(parents=True, exist_ok=True)

    def write(self, image_rgb: np.ndarray, name: str) -> None:
        import cv2

        bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
        if not self.as_video:
            if not cv2.imwrite(str(self.path / f"{name}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90]):
                raise ConfigError(f"cannot write {self.path / (name + '.jpg')}; check the --out folder is writable")
            self.written += 1
            return
        if self._video is None:
            from ros2_affect.draw import open_video_writer

            # even sides: H.264 and VP9 store 4:2:0 colour (2x2 blocks)
            self._size = (max(2, bgr.shape[1] // 2 * 2), max(2, bgr.shape[0] // 2 * 2))
            self._video, self.codec = open_video_writer(self.path, self.fps, self._size, self.codec)
        if (bgr.shape[1], bgr.shape[0]) != self._size:
            bgr = cv2.resize(bgr, self._size, interpolation=cv2.INTER_AREA)
        self._video.write(bgr)
        self.written += 1

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the pipeline on a video, photos, a rosbag, a camera or the bundled sample",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    parser.add_argument("input", metavar="INPUT",
                        help="video file, image file, folder of photos, rosbag (folder, .db3 or .mcap; also writes "
                             "an output bag), camera index (0, 1, ...) or 'sample'")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: new, or empty (written when the run is complete)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run's --out folder (one holding only what run writes)")
    add_config_arguments(parser, overrides=False)
    parser.add_argument("--model-kind", choices=("frame", "temporal", "none"), default=None,
                        help="override model.kind: 'none' runs detection, alignment and tracking only")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    parser.add_argument("--fps", type=float, default=25.0,
                        help="frame rate for stamps of image folders and videos without timing (default 25)")
    parser.add_argument("--no-video", action="store_true", help="write results.jsonl only, no annotated output")
    parser.add_argument("--video-codec", choices=("auto", "h264", "vp9", "mp4v"), default="auto",
                        help="codec of annotated.mp4: auto takes H.264, else VP9 (both play in browsers), else "
                             "MPEG-4 Part 2 (mp4v: fastest to write, needs VLC or similar) (default auto)")
    parser.add_argument("--seed", type=track_seed, default=None, help="seed of the track ids (reproducible ids)")
    parser.add_argument("--strict", action="store_true",
                        help="a rosbag INPUT: stop at the first unreadable message or damaged storage page "
                             "(default: skip them and count them as skipped)")
    parser.add_argument("--image-topic", default=None,
                        help="a rosbag INPUT: the image topic (default: the bag's only Image/CompressedImage topic)")
    parser.add_argument("--copy-input", action="store_true",
                        help="a rosbag INPUT: copy every input topic into DIR/bag too, as `replay --copy-input`")
    parser.add_argument("--sequence", action="store_true",
                        help="INPUT is a folder holding the numbered frames of one video: track faces across the "
                             "files (default: a folder holds unrelated photos, each processed on its own)")
    parser.set_defaults(func=main)


def load_config(path: Optional[Path], model_kind: Optional[str]) -> PipelineConfig:
    return config_with_overrides(path, [f"model.kind={model_kind}"] if model_kind is not None else [])


def input_path(spec: str) -> Optional[Path]:
    """The file or folder an INPUT argument reads (None for a camera index or the sample)."""
    if spec == "sample" or (spec.isdigit() and not Path(spec).exists()):
        return None
    return Path(spec)


def owned_run_output() -> OwnedCheck:
    """``run``'s check that an existing ``--out`` folder holds only what ``run`` writes:
    ``results.jsonl``, ``annotated.mp4``, ``annotated/*.jpg`` and ``bag/`` (a bag it wrote)."""
    return only_entries(
        {
            "results.jsonl": None,
            "annotated.mp4": None,
            "annotated": files_with_suffix({".jpg"}, "run"),
            "bag": own_bag,
        },
        "run",
    )


BAG_MODE = "mode: video (bag: frames in order, faces tracked across them)"


def _source_items(
    source: Any, pipeline: Any, stop: StopSignals, skipped: List[int]
) -> Iterator[Tuple[int, str, np.ndarray, FrameResult]]:
    """``(index, name, rgb, result)`` of every frame of a frame source through ``pipeline``,
    until ``stop`` has received a signal; frames the pipeline refuses are logged and counted
    in ``skipped[0]``."""
    for item in source:
        if stop.received:
            return
        if source.independent:  # unrelated photos: no track, eye or sequence state crosses files
            pipeline.reset()
        try:
            result = pipeline.process(Frame(item.image, item.stamp_ns, source.name))
        except InferenceError:
            raise  # the model itself fails: every frame would, so stop with its message
        except AffectError as exc:
            skipped[0] += 1
            if skipped[0] <= 3 or skipped[0] % ERROR_LOG_EVERY == 0:
                LOG.warning("frame %d (%s) skipped: %s [%d skipped so far]", item.index, item.name, exc, skipped[0])
            continue
        yield item.index, item.name, item.image, result


def _bag_fps(session: Any, default: float) -> float:
    """The image topic's mean rate (for the annotated video), else ``default`` (``--fps``)."""
    count, duration_s = session.info.count, session.bag.reader.duration / 1e9
    return (count - 1) / duration_s if count > 1 and duration_s > 0 else default


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ros2_affect.core.pipeline import create_pipeline
    from ros2_affect.draw import annotate
    from ros2_affect.tools.inputs import InputOptions, describe_mode, is_bag_input, open_input
    from ros2_affect.tools.replay import BagReplay, camera_info_setting

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames = {args.max_frames}; pass a number of frames >= 1")
    is_bag = is_bag_input(str(args.input))
    if not is_bag and (args.copy_input or args.image_topic):
        raise ConfigError(
            f"--copy-input and --image-topic apply to a rosbag INPUT only, and {str(args.input)!r} is not one"
        )
    config = load_config(args.config, args.model_kind)
    # checked before any work: --out is not an input and replaces only an earlier run's output
    target = OutputTarget(
        args.out,
        overwrite=args.overwrite,
        owned=owned_run_output(),
        tool="run",
        inputs=[input_path(str(args.input)), args.config],
    )
    source: Any = None
    if not is_bag:
        source = open_input(
            str(args.input),
            InputOptions(fps=args.fps, max_frames=args.max_frames, sequence=args.sequence, strict=args.strict),
        )
    print(describe_mode(source) if source is not None else BAG_MODE)
    stop = StopSignals("the current frame")
    frames = faces = 0
    skipped = [0]  # frames the pipeline refused (a frame source)
    stage_sums: Dict[str, float] = {}
    started = time.perf_counter()
    session: Any = None
    with contextlib.ExitStack() as stack:
        if source is not None:
            stack.enter_context(source)
        staged = target.stage()  # everything is written beside --out, moved there when complete
        stack.callback(staged.discard)  # an error or no frame: the new output goes, an old one stays
        out_dir = staged.path
        out_dir.mkdir()
        stack.enter_context(stop)
        if is_bag:  # a rosbag in: replayed (one implementation), with DIR/bag as replay's output bag
            session = stack.enter_context(
                BagReplay(
                    Path(args.input),
                    out_dir / "bag",
                    config,
                    image_topic=args.image_topic,
                    copy_input=args.copy_input,
                    seed=args.seed,
                    use_camera_info=camera_info_setting(args.config),
                    strict=args.strict,
                    max_images=args.max_frames,
                    tool="run",
                    inputs=[Path(args.input)],
                    stop=stop,
                )
            )
            pipeline = session.pipeline
            name, fps, is_sequence = Path(args.input).name, _bag_fps(session, args.fps), True
            length = session.info.count if args.max_frames is None else min(session.info.count, args.max_frames)
            items: Iterator[Tuple[int, str, np.ndarray, FrameResult]] = (
                (i.index, f"{i.index:06d}", i.processed.rgb, i.processed.result) for i in session.images()
            )
        else:
            pipeline = create_pipeline(config, tracker_seed=args.seed)
            stack.callback(pipeline.close)
            name, fps, is_sequence, length = source.name, source.fps, source.is_sequence, source.length
            items = _source_items(source, pipeline, stop, skipped)
        with_model = pipeline.model is not None
        writer = None if args.no_video else AnnotatedWriter(out_dir, is_sequence, fps, args.video_codec)
        if writer is not None:
            stack.callback(writer.close)
        with open(out_dir / "results.jsonl", "w") as results:
            progress = tqdm(items, total=length, unit="frame", desc=f"run {name}", disable=None)
            stack.callback(progress.close)  # the bar ends its line before an error or Ctrl-C message
            # both item sources end once a signal is received; what they yielded is written
            for index, frame_name, image, result in progress:
                results.write(json.dumps(frame_record(index, frame_name, result, with_model)) + "\n")
                frames += 1
                faces += len(result.faces)
                for key, value in result.stage_ms.items():
                    stage_sums[key] = stage_sums.get(key, 0.0) + value
                if writer is not None:
                    writer.write(annotate(image, result), frame_name)
            progress.close()
        if session is not None:
            replayed = session.tally()
            total_skipped = len(replayed.skipped) + replayed.unreadable
        else:
            total_skipped = skipped[0] + source.skipped
        # a camera has no end: a signal is how a live run is stopped, and its output is complete
        stopped = stop.received if source is None or source.kind != "camera" else None
        if stopped and frames == 0:
            raise Interrupted(f"stopped by {stopped} before the first frame; nothing written", stopped)
        if frames == 0:
            raise ConfigError(
                f"no frame of {args.input!r} could be processed ({total_skipped} skipped); see the warnings above"
                + (f"; {str(target.path)!r} was left as it was" if target.path.exists() else "")
            )
        if writer is not None:
            writer.close()
        if session is not None:  # the output bag is finished before its folder is moved into place
            if stopped:
                session.close_partial({STOPPED_BY_KEY: stopped}, in_place=True)
            session.close()
        final = staged.keep_partial() if stopped else staged.commit()
    elapsed = time.perf_counter() - started
    means = ", ".join(f"{k} {v / frames:.1f}" for k, v in stage_sums.items()) if frames else "-"
    print(f"{frames} frames, {faces} faces, {total_skipped} skipped, {elapsed:.1f} s; mean ms per frame: {means}")
    if with_model and pipeline.rejected_outputs:
        print(f"warning: {pipeline.rejected_outputs} model outputs were non-finite and left out")
    print(f"results: {final / 'results.jsonl'}")
    if writer is not None and writer.written:
        print(f"annotated: {final / writer.path.name}")
    if session is not None:
        copied = f"; {len(replayed.copied)} input topics copied" if replayed.copied else ""
        print(f"bag: {final / 'bag'} ({replayed.arrays} affect_msgs/FaceAffectArray on {FACES_TOPIC}{copied})")
    if stopped:
        raise Interrupted(
            f"stopped by {stopped} after {frames} frames of {args.input!r}: the partial output is in "
            f"{str(final)!r}" + (f"; {str(target.path)!r} was left as it was" if target.path.exists() else ""),
            stopped,
        )
    if stop.received and source.kind == "camera":
        print(f"stopped by {stop.received}: camera run ended")
    return 0
