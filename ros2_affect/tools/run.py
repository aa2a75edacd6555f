"""``ros2-affect run INPUT --out DIR``: run the pipeline on a video, photos, a rosbag, a camera or the sample.

Writes ``DIR/results.jsonl`` (one JSON object per frame, see :func:`frame_record`) and
annotated output: ``DIR/annotated.mp4`` for clips (video, camera, sample) or
``DIR/annotated/<name>.jpg`` for images and image folders. The pipeline settings come
from the same parameter file the ROS node reads (default: the packaged affect.yaml).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ros2_affect.bags.writer import STOPPED_BY_KEY, own_bag
from ros2_affect.config import PipelineConfig
from ros2_affect.core.types import FaceResult, Frame, FrameResult
from ros2_affect.errors import AffectError, ConfigError, InferenceError, Interrupted
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


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ros2_affect.core.pipeline import create_pipeline
    from ros2_affect.draw import annotate
    from ros2_affect.tools.inputs import InputOptions, describe_mode, open_input

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames = {args.max_frames}; pass a number of frames >= 1")
    config = load_config(args.config, args.model_kind)
    # checked before any work: --out is not an input and replaces only an earlier run's output
    target = OutputTarget(
        args.out,
        overwrite=args.overwrite,
        owned=owned_run_output(),
        tool="run",
        inputs=[input_path(str(args.input)), args.config],
    )
    source = open_input(
        str(args.input),
        InputOptions(fps=args.fps, max_frames=args.max_frames, sequence=args.sequence, strict=args.strict),
    )
    print(describe_mode(source))
    stop = StopSignals("the current frame")
    frames = faces = errors = 0
    stage_sums: Dict[str, float] = {}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(source)
        staged = target.stage()  # everything is written beside --out, moved there when complete
        stack.callback(staged.discard)  # an error or no frame: the new output goes, an old one stays
        out_dir = staged.path
        out_dir.mkdir()
        stack.enter_context(stop)
        pipeline = create_pipeline(config, tracker_seed=args.seed)
        stack.callback(pipeline.close)
        with_model = pipeline.model is not None
        writer = None if args.no_video else AnnotatedWriter(out_dir, source.is_sequence, source.fps, args.video_codec)
        if writer is not None:
            stack.callback(writer.close)
        bag_out: Any = None
        if source.kind == "bag":  # a rosbag in: also a bag out, as `ros2-affect replay` writes it
            from ros2_affect.tools.bag_input import BagResultWriter

            bag_out = BagResultWriter(source, out_dir / "bag")
            stack.push(lambda kind, exc, tb: bag_out.close(exc))  # deletes it after an error
        with open(out_dir / "results.jsonl", "w") as results:
            progress = tqdm(source, total=source.length, unit="frame", desc=f"run {source.name}", disable=None)
            stack.callback(progress.close)  # the bar ends its line before an error or Ctrl-C message
            for item in progress:
                if stop.received:
                    break
                if source.independent:  # unrelated photos: no track, eye or sequence state crosses files
                    pipeline.reset()
                try:
                    result = pipeline.process(Frame(item.image, item.stamp_ns, source.name))
                except InferenceError:
                    raise  # the model itself fails: every frame would, so stop with its message
                except AffectError as exc:
                    errors += 1
                    if errors <= 3 or errors % ERROR_LOG_EVERY == 0:
                        LOG.warning(
                            "frame %d (%s) skipped: %s [%d skipped so far]", item.index, item.name, exc, errors
                        )
                    continue
                results.write(json.dumps(frame_record(item.index, item.name, result, with_model)) + "\n")
                if bag_out is not None:
                    bag_out.write(item.index, result)
                frames += 1
                faces += len(result.faces)
                for key, value in result.stage_ms.items():
                    stage_sums[key] = stage_sums.get(key, 0.0) + value
                if writer is not None:
                    writer.write(annotate(item.image, result), item.name)
            progress.close()
        skipped = errors + source.skipped
        # a camera has no end: a signal is how a live run is stopped, and its output is complete
        stopped = stop.received if source.kind != "camera" else None
        if stopped and frames == 0:
            raise Interrupted(f"stopped by {stopped} before the first frame; nothing written", stopped)
        if frames == 0:
            raise ConfigError(
                f"no frame of {args.input!r} could be processed ({skipped} skipped); see the warnings above"
                + (f"; {str(target.path)!r} was left as it was" if target.path.exists() else "")
            )
        if writer is not None:
            writer.close()
        if bag_out is not None:
            if stopped:
                bag_out.close_partial({STOPPED_BY_KEY: stopped})
            else:
                bag_out.close()
        final = staged.keep_partial() if stopped else staged.commit()
    elapsed = time.perf_counter() - started
    means = ", ".join(f"{k} {v / frames:.1f}" for k, v in stage_sums.items()) if frames else "-"
    print(f"{frames} frames, {faces} faces, {skipped} skipped, {elapsed:.1f} s; mean ms per frame: {means}")
    if with_model and pipeline.rejected_outputs:
        print(f"warning: {pipeline.rejected_outputs} model outputs were non-finite and left out")
    print(f"results: {final / 'results.jsonl'}")
    if writer is not None and writer.written:
        print(f"annotated: {final / writer.path.name}")
    if bag_out is not None:
        print(f"bag: {final / 'bag'} ({bag_out.written} affect_msgs/FaceAffectArray on /affect_node/faces)")
    if stopped:
        raise Interrupted(
            f"stopped by {stopped} after {frames} frames of {args.input!r}: the partial output is in "
            f"{str(final)!r}" + (f"; {str(target.path)!r} was left as it was" if target.path.exists() else ""),
            stopped,
        )
    if stop.received and source.kind == "camera":
        print(f"stopped by {stop.received}: camera run ended")
    return 0
