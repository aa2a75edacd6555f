"""``ros2-affect bench``: end-to-end frame rate, latency, per-stage split and memory.

Every measured frame goes the way a camera frame goes on the robot: a real
``sensor_msgs/Image`` (rosbags class, rgb8) is decoded with
:func:`ros2_affect.msgs.conversions.image_msg_to_rgb`, run through the pipeline, and the
``affect_msgs/FaceAffectArray`` is built with
:func:`ros2_affect.msgs.messages.build_face_affect_array`. The images are scenes of N real
faces on a real background (:mod:`ros2_affect.tools.scenes`); before timing, the scene is
calibrated so the pipeline's own detector finds its N faces, and the number of faces the
pipeline reported per frame is part of the result (and checked).

Figures depend on the machine; the one machine-independent figure is ``overhead_ratio``:
the share of frame time spent outside face detection, landmarks and model inference
(decode, alignment, tracking, message building and the pipeline's glue). With ``--json``
the last line printed is one JSON object (see ``BENCHMARKS.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from ros2_affect.config import PipelineConfig
from ros2_affect.errors import AffectError, AssetMissingError, BackendUnavailableError, ConfigError, ModelLoadError
from ros2_affect.tools.cli_args import config_with_overrides, plain_text

LOG = logging.getLogger(__name__)

#: Stage keys of a result's ``stages_ms``, in pipeline order. ``other`` is the pipeline's
#: time outside its named stages (input check, sorting, result building).
STAGE_KEYS = ("decode", "detect", "landmarks", "align", "track", "infer", "message", "other")
#: Stages that are model execution (not the pipeline's own overhead).
MODEL_STAGES = ("detect", "landmarks", "infer")
#: A scene passes the face-count check when the pipeline reports at least this share of
#: its faces on average (BlazeFace short-range misses the odd face in a crowded frame).
MIN_FACE_SHARE = 0.85
#: ... and fails when it reports more than this many faces per frame beyond those drawn (a
#: false detection on the background would make an "N faces" row measure N + 1).
MAX_EXTRA_FACES = 0.1

FRAME_PERIOD_NS = 33_333_333  # 30 fps stamps
#: Input message kinds ``--encoding`` accepts.
ENCODINGS = ("rgb8", "bgr8", "jpeg")


def _csv(kind: Any) -> Any:
    def parse(text: str) -> List[Any]:
        try:
            return [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return parse


def _resolution(text: str) -> Tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        size = int(w), int(h)
    except ValueError:
        raise ValueError(f"resolution {text!r} is not WIDTHxHEIGHT (e.g. 640x480)") from None
    if not (64 <= size[0] <= 8192 and 64 <= size[1] <= 8192):
        raise ValueError(f"resolution {text!r} is out of range; width and height must be in 64..8192")
    return size


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure fps, latency, per-stage time and memory on scenes of real faces",
        description=plain_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--markdown", action="store_true", help="also print the results as a Markdown table")
    parser.add_argument("--frames", type=int, default=200, help="timed frames per configuration (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed frames first (default 20)")
    parser.add_argument("--resolutions", type=_csv(_resolution), default=[(640, 480), (1280, 720)],
                        help="comma-separated WIDTHxHEIGHT (default 640x480,1280x720)")
    parser.add_argument("--faces", type=_csv(int), default=[1, 2, 4, 8], help="faces per scene (default 1,2,4,8)")
    parser.add_argument("--models", type=_csv(str), default=["frame", "temporal"],
                        help="model kinds: frame, temporal, none (default frame,temporal)")
    parser.add_argument("--backends", type=_csv(str), default=["onnxruntime"],
                        help="inference backends (default onnxruntime); unavailable ones are reported as skipped")
    parser.add_argument("--encoding", choices=ENCODINGS, default="rgb8",
                        help="how frames arrive: raw sensor_msgs/Image rgb8 or bgr8, or CompressedImage jpeg "
                             "(quality 90) (default rgb8)")
    parser.add_argument("--soak-frames", type=int, default=0,
                        help="also run this many frames of faces appearing/disappearing and report RSS growth")
    parser.add_argument("--config", type=Path, default=None,
                        help="ROS 2 parameter file (default: the packaged config/affect.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a pipeline parameter, e.g. --set detector.detect_scale=0.5 (repeatable)")
    parser.add_argument("--frame-model", default="", help="frame model ONNX (default: the bundled one)")
    parser.add_argument("--encoder-model", default="", help="temporal encoder ONNX (default: bundled)")
    parser.add_argument("--sequence-model", default="", help="temporal sequence head ONNX (default: bundled)")
    parser.add_argument("--no-check", action="store_true",
                        help="report, but do not fail on, scenes where fewer or more faces than drawn were found")
    parser.set_defaults(func=main)


# -- configuration ---------------------------------------------------------------------------


def config_for(base: PipelineConfig, kind: str, backend: str, args: argparse.Namespace) -> PipelineConfig:
    model = dataclasses.replace(
        base.model,
        kind=kind,
        backend=backend,
        fallback_backend="none",  # a silent fallback would report another backend's figures
        frame_model=args.frame_model or base.model.frame_model,
        encoder_model=args.encoder_model or base.model.encoder_model,
        sequence_model=args.sequence_model or base.model.sequence_model,
    )
    return dataclasses.replace(base, model=model).validate()


# -- machine -----------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine_info() -> Dict[str, Any]:
    """The machine and library versions the figures belong to."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": _cpu_model(),
        "cores": usable,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": _version("onnxruntime"),
        "mediapipe": _version("mediapipe"),
        "ai_edge_litert": _version("ai-edge-litert"),
        "numpy": _version("numpy"),
        "opencv": _version("opencv-python-headless") if _version("opencv-python-headless") != "not installed"
        else _version("opencv-python"),
        # Other processes on the machine distort timings; the load says how busy it was.
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (2**20 if sys.platform == "darwin" else 2**10)


# -- messages ------------------------------------------------------------------------------------


class MessageKit:
    """rosbags message classes: the input Image/CompressedImage and the output FaceAffectArray.

    Args:
        encoding: ``rgb8`` or ``bgr8`` (a raw sensor_msgs/Image) or ``jpeg`` (a
            sensor_msgs/CompressedImage as image_transport's compressed plugin sends it).
    """

    def __init__(self, encoding: str = "rgb8") -> None:
        from ros2_affect.msgs.messages import rosbags_message_types
        from ros2_affect.msgs.msg_types import COMPRESSED_IMAGE_MSGTYPE, RAW_IMAGE_MSGTYPE, create_typestore

        if encoding not in ENCODINGS:
            raise ConfigError(f"--encoding {encoding!r}: choose one of {', '.join(ENCODINGS)}")
        self.encoding = encoding
        store = create_typestore("humble")
        self.Image = store.types[RAW_IMAGE_MSGTYPE]
        self.CompressedImage = store.types[COMPRESSED_IMAGE_MSGTYPE]
        self.out = rosbags_message_types(store)
        self._processor: Any = None  # the FrameProcessor of the pipeline last timed

    def image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera_optical_frame") -> Any:
        """The message a camera driver would publish for ``rgb`` (no row padding)."""
        import cv2

        from ros2_affect.msgs.messages import to_time

        h, w = rgb.shape[:2]
        header = self.out.Header(stamp=to_time(stamp_ns, self.out), frame_id=frame_id)
        if self.encoding == "jpeg":
            ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            return self.CompressedImage(header=header, format="rgb8; jpeg compressed bgr8", data=jpeg.reshape(-1))
        pixels = rgb if self.encoding == "rgb8" else rgb[:, :, ::-1]
        return self.Image(header=header, height=h, width=w, encoding=self.encoding, is_bigendian=0, step=w * 3,
                          data=np.ascontiguousarray(pixels).reshape(-1).copy())

    def processor_for(self, pipeline: Any) -> Any:
        """The :class:`~ros2_affect.msgs.frame_processor.FrameProcessor` of ``pipeline`` (one per pipeline)."""
        from ros2_affect.msgs.frame_processor import FrameProcessor

        if self._processor is None or self._processor.pipeline is not pipeline:
            self._processor = FrameProcessor(pipeline, self.out)
        return self._processor


# -- measuring ------------------------------------------------------------------------------------


@dataclasses.dataclass
class FrameTiming:
    total_ms: float
    stages_ms: Dict[str, float]
    faces: int
    #: CPU time of the whole process (all threads) for the frame: less disturbed than wall
    #: time when other processes compete for the cores.
    cpu_ms: float = 0.0


def timed_frame(pipeline: Any, kit: MessageKit, msg: Any, stamp_ns: int) -> Tuple[FrameTiming, Any]:
    """One image message through the front ends' shared path (decode -> pipeline -> message), timed.

    ``stamp_ns`` is the stamp already in ``msg``'s header (kept for the callers' bookkeeping).
    """
    processor = kit.processor_for(pipeline)
    c0 = time.process_time()
    t0 = time.perf_counter()
    processed = processor.process(msg)
    t3 = time.perf_counter()
    cpu_ms = (time.process_time() - c0) * 1e3
    result = processed.result
    stage = result.stage_ms
    pipeline_ms = float(stage.get("total", 0.0))
    named = sum(float(stage.get(k, 0.0)) for k in ("detect", "landmarks", "align", "track", "infer"))
    total_ms = (t3 - t0) * 1e3
    stages = {
        "decode": processed.decode_ms,
        "detect": float(stage.get("detect", 0.0)),
        "landmarks": float(stage.get("landmarks", 0.0)),
        "align": float(stage.get("align", 0.0)),
        "track": float(stage.get("track", 0.0)),
        "infer": float(stage.get("infer", 0.0)),
        "message": max(0.0, total_ms - processed.decode_ms - pipeline_ms),
        "other": max(0.0, pipeline_ms - named),
    }
    return FrameTiming(total_ms, stages, len(result.faces), cpu_ms), result


def summarize(timings: Sequence[FrameTiming]) -> Dict[str, Any]:
    totals = np.array([t.total_ms for t in timings], dtype=np.float64)
    faces = np.array([t.faces for t in timings])
    return {
        "fps": round(1000.0 / float(totals.mean()), 1),
        "p50_ms": round(float(np.percentile(totals, 50)), 2),
        "p95_ms": round(float(np.percentile(totals, 95)), 2),
        "p99_ms": round(float(np.percentile(totals, 99)), 2),
        "stages_ms": {k: round(float(np.mean([t.stages_ms[k] for t in timings])), 3) for k in STAGE_KEYS},
        "cpu_ms": round(float(np.mean([t.cpu_ms for t in timings])), 2),
        "faces_found_mean": round(float(faces.mean()), 2),
        "faces_found_min": int(faces.min()),
    }


def overhead_ratio(results: Iterable[Dict[str, Any]]) -> Optional[float]:
    """Share of frame time outside detection, landmarks and inference, over all results
    (each weighted by its mean frame time)."""
    total = other = 0.0
    for r in results:
        if "stages_ms" not in r:
            continue
        frame = sum(r["stages_ms"].values())
        total += frame
        other += frame - sum(r["stages_ms"][k] for k in MODEL_STAGES)
    return round(other / total, 4) if total > 0 else None


def detector_boxes(pipeline: Any) -> Any:
    """``rgb -> boxes`` with the pipeline's own detector (for :meth:`Scene.calibrate`)."""
    return lambda rgb: [d.bbox_xyxy_px for d in pipeline.detector.detect(rgb)]


def run_config(pipeline: Any, scene: Any, kit: MessageKit, frames: int, warmup: int) -> List[FrameTiming]:
    """Warm up, then time ``frames`` frames of ``scene`` (rendering and message building untimed)."""
    timings = []
    gc.collect()
    for i in range(warmup + frames):
        stamp_ns = (i + 1) * FRAME_PERIOD_NS
        msg = kit.image(scene.render(i), stamp_ns)
        timing, _ = timed_frame(pipeline, kit, msg, stamp_ns)
        if i >= warmup:
            timings.append(timing)
    return timings


def soak(pipeline: Any, scene: Any, kit: MessageKit, frames: int, warmup: int, report_every: int = 0) -> Dict[str, Any]:
    """Run ``frames`` frames of a churning scene; RSS after ``warmup`` frames and at the end.

    Returns:
        ``rss_start_mb`` (after warm-up), ``rss_end_mb``, ``rss_peak_mb`` (sampled),
        ``frames``, and the largest numbers of live tracks and sequence buffers seen after
        warm-up together with their values at the end (they must not grow).
    """
    rss_start = None
    peak = 0.0
    max_tracks = max_buffers = 0
    track_ids: Set[str] = set()
    for i in range(frames):
        stamp_ns = (i + 1) * FRAME_PERIOD_NS
        msg = kit.image(scene.render(i), stamp_ns)
        _, result = timed_frame(pipeline, kit, msg, stamp_ns)
        track_ids.update(f.track_id for f in result.faces)
        if i == warmup - 1:
            gc.collect()
            rss_start = rss_mb()
        if i >= warmup:
            max_tracks = max(max_tracks, len(pipeline.tracker))
            if pipeline.buffers is not None:
                max_buffers = max(max_buffers, len(pipeline.buffers))
            if i % 50 == 0:
                peak = max(peak, rss_mb())
        if report_every and i and i % report_every == 0:
            LOG.info("soak: %d/%d frames, RSS %.1f MB, %d track ids so far", i, frames, rss_mb(), len(track_ids))
    gc.collect()
    end = rss_mb()
    start = rss_start if rss_start is not None else end
    return {
        "rss_start_mb": round(start, 1),
        "rss_end_mb": round(end, 1),
        "rss_peak_mb": round(max(peak, end), 1),
        "rss_growth_mb": round(end - start, 2),
        "frames": frames,
        "warmup_frames": warmup,
        "track_ids_seen": len(track_ids),
        "max_live_tracks": max_tracks,
        "max_sequence_buffers": max_buffers,
        "live_tracks_end": len(pipeline.tracker),
        "sequence_buffers_end": len(pipeline.buffers) if pipeline.buffers is not None else 0,
    }


def _fmt_row(r: Dict[str, Any]) -> str:
    if "skipped" in r:
        return f"{r['resolution']:>9} {r['faces']:>5} {r['model']:>8} {r['backend']:>11}  skipped: {r['skipped']}"
    s = r["stages_ms"]
    return (
        f"{r['resolution']:>9} {r['faces']:>5} {r['model']:>8} {r['backend']:>11} {r['fps']:>7.1f} "
        f"{r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} {r['p99_ms']:>7.2f}  "
        + " ".join(f"{s[k]:>6.2f}" for k in STAGE_KEYS)
        + f"  {r['faces_found_mean']:>5.2f} {r['cpu_ms']:>6.2f}"
    )


def markdown_table(results: Sequence[Dict[str, Any]]) -> str:
    """The results as a Markdown table (the format of BENCHMARKS.md)."""
    head = ["resolution", "faces", "model", "backend", "fps", "p50 ms", "p95 ms", "p99 ms"] + list(STAGE_KEYS)
    head += ["found", "CPU ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["resolution"], str(r["faces"]), r["model"], r["backend"]]
        if "skipped" in r:
            cells += ["skipped: " + r["skipped"][:80]] + [""] * (len(head) - 5)
        else:
            cells += [f"{r['fps']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}"]
            cells += [f"{r['stages_ms'][k]:.2f}" for k in STAGE_KEYS]
            cells += [f"{r['faces_found_mean']:.2f}", f"{r['cpu_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


HEADER = (
    f"{'res':>9} {'faces':>5} {'model':>8} {'backend':>11} {'fps':>7} {'p50':>7} {'p95':>7} {'p99':>7}  "
    + " ".join(f"{k[:6]:>6}" for k in STAGE_KEYS)
    + "  found    cpu"
)


def main(args: argparse.Namespace) -> int:
    from ros2_affect.core.pipeline import create_pipeline
    from ros2_affect.tools.scenes import ChurnScene, Scene, SceneSource

    if args.frames < 1 or args.warmup < 0 or args.soak_frames < 0:
        raise ConfigError("--frames must be >= 1 and --warmup, --soak-frames >= 0")
    bad_faces = [n for n in args.faces if not 1 <= n <= 64]
    if bad_faces or not args.faces:
        raise ConfigError(f"--faces {','.join(map(str, args.faces))}: pass face counts in 1..64, e.g. --faces 1,2,4")
    for kind in args.models:
        if kind not in ("frame", "temporal", "none"):
            raise ConfigError(f"--models {kind!r}: choose from frame, temporal, none")
    base = config_with_overrides(args.config, args.overrides)
    machine = machine_info()
    rss_begin = rss_mb()
    source = SceneSource.load()
    kit = MessageKit(args.encoding)
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
          f"onnxruntime {machine['onnxruntime']}, mediapipe {machine['mediapipe']}, "
          f"load average {machine['loadavg_1min']}")
    print(f"scenes: {source.description}")
    raw = args.encoding != "jpeg"
    print(f"input: sensor_msgs/{'Image ' if raw else 'CompressedImage '}{args.encoding}")
    print(f"pipeline: detector {base.detector.model} (detect_scale {base.detector.detect_scale}), landmarks "
          f"{'on, every ' + str(base.landmarks.every_n_frames) + ' frame(s)' if base.landmarks.enabled else 'off'}, "
          f"model threads {base.model.threads}")
    if args.overrides:
        print(f"overrides: {' '.join(args.overrides)}")
    print("times in ms per frame (means for stages); found = faces the pipeline reported per frame (mean); "
          "cpu = process CPU ms per frame (all threads)")
    print(HEADER, flush=True)

    results: List[Dict[str, Any]] = []
    failures: List[str] = []
    for width, height in args.resolutions:
        for n_faces in args.faces:
            scene = Scene(source, n_faces, (width, height))
            calibrated = False
            for kind in args.models:
                for backend in args.backends:
                    row: Dict[str, Any] = {"resolution": f"{width}x{height}", "faces": n_faces, "model": kind,
                                           "backend": backend}
                    try:
                        pipeline = create_pipeline(config_for(base, kind, backend, args), tracker_seed=0)
                    except (AssetMissingError, BackendUnavailableError, ModelLoadError) as exc:
                        # Another backend may need other files (torch: .pt checkpoints); a
                        # missing or broken ONNX model for onnxruntime is an error, not a skip.
                        if isinstance(exc, (ModelLoadError, AssetMissingError)) and backend == "onnxruntime":
                            raise
                        row["skipped"] = str(exc).splitlines()[0][:300]
                        results.append(row)
                        print(_fmt_row(row), flush=True)
                        continue
                    with pipeline:
                        if not calibrated:
                            scene.calibrate(detector_boxes(pipeline))
                            calibrated = True
                        row.update(summarize(run_config(pipeline, scene, kit, args.frames, args.warmup)))
                        row["rejected_outputs"] = pipeline.rejected_outputs
                        if pipeline.model is not None:
                            row["model_id"] = pipeline.model.model_id  # says "-int8" for quantised graphs
                    row["overhead_ratio"] = overhead_ratio([row])
                    if row["faces_found_mean"] < MIN_FACE_SHARE * n_faces:
                        failures.append(f"{row['resolution']} {n_faces} faces ({kind}): the pipeline found "
                                        f"{row['faces_found_mean']} faces per frame on average")
                    elif row["faces_found_mean"] > n_faces + MAX_EXTRA_FACES:
                        failures.append(f"{row['resolution']} {n_faces} faces ({kind}): the pipeline found "
                                        f"{row['faces_found_mean']} faces per frame on average, more than drawn "
                                        "(false detections on the background)")
                    results.append(row)
                    print(_fmt_row(row), flush=True)

    memory: Dict[str, Any]
    if args.soak_frames:
        soak_config = config_for(base, args.models[-1], args.backends[0], args)
        with create_pipeline(soak_config, tracker_seed=0) as pipeline:
            scene = ChurnScene(source, 4, (640, 480))
            scene.calibrate(detector_boxes(pipeline))
            warmup = min(1000, max(1, args.soak_frames // 10))
            memory = soak(pipeline, scene, kit, args.soak_frames, warmup, report_every=1000)
            memory["model"] = soak_config.model.kind
        print(f"soak: {memory['frames']} frames at 640x480, 4 faces coming and going "
              f"({memory['track_ids_seen']} track ids): RSS {memory['rss_start_mb']} MB after "
              f"{memory['warmup_frames']} frames -> {memory['rss_end_mb']} MB (growth {memory['rss_growth_mb']} MB), "
              f"live tracks max {memory['max_live_tracks']}, sequence buffers max {memory['max_sequence_buffers']}")
    else:
        gc.collect()
        memory = {"rss_start_mb": round(rss_begin, 1), "rss_end_mb": round(rss_mb(), 1),
                  "frames": sum(args.frames + args.warmup for r in results if "skipped" not in r)}
    memory["rss_peak_mb"] = round(max(memory.get("rss_peak_mb", 0.0), peak_rss_mb()), 1)

    ratio = overhead_ratio(results)
    if args.markdown:
        print(markdown_table(results))
    print(f"overhead_ratio: {ratio} (share of frame time outside detection, landmarks and inference)")
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    if args.json:
        machine["input"] = args.encoding
        print(json.dumps({"machine": machine, "overhead_ratio": ratio, "results": results, "memory": memory}))
    if failures and not args.no_check:
        raise BenchCheckError(
            f"{len(failures)} scene(s) where the pipeline found fewer or more faces than drawn (first: {failures[0]}); "
            "the figures would describe fewer faces than claimed. Use --no-check to report them anyway"
        )
    return 0


class BenchCheckError(AffectError):
    """A benchmark scene did not produce the faces it claims (the figures would mislead)."""
