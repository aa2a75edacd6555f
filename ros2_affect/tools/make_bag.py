"""``ros2-affect make-bag``: turn a video, an image folder or a dataset clip into a rosbag2 bag.

The bag holds the images as ``sensor_msgs/msg/Image`` (rgb8 or bgr8) or
``sensor_msgs/msg/CompressedImage`` (JPEG or PNG, image_transport's format string) at a
fixed frame rate, with header stamps, and, when the input has annotations, the ground
truth as ``affect_msgs/msg/AffectAnnotation`` on ``/affect_annotations`` with the same
stamps: such a bag carries its own labels through ``replay`` and ``evaluate``.

Inputs (recognised by their form):

- a video file (anything OpenCV reads): frame ``i`` is frame index ``i``; the frame rate
  defaults to the video's own;
- an AFEW-VA clip folder (PNG frames + ``<clip>.json``): frame index = PNG number, and
  the JSON's valence/arousal are recorded automatically;
- an Aff-Wild2 frames folder (``cropped_aligned/<video>/00001.jpg`` ...) with
  ``--labels`` pointing at its EXPR and/or VA ``<video>.txt`` (or at folders holding them):
  frame index = image number - 1, so gaps (frames without a face crop) keep their time;
- any other folder of images: frame index = position in name order;
- ``--labels FILE`` (CSV, AFEW-VA JSON, Aff-Wild2 txt) adds labels to any of these.

Stamps are ``start + frame_index / fps``, also used as the bag receive time, so the same
input always gives the same messages.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ros2_affect.bags.labels import (
    DEFAULT_ANNOTATION_TOPIC,
    AnnotationSet,
    LabelError,
    find_affwild2_labels,
    load_afew_va,
    load_affwild2,
    load_labels,
)
from ros2_affect.errors import BagError, InvalidImageError
from ros2_affect.tools.cli_args import add_command, bounded_float, topic_name

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
COMPRESSIONS = ("none", "jpeg", "png")
ENCODINGS = ("rgb8", "bgr8")
DEFAULT_TOPIC = "/camera/image_raw"
DEFAULT_FPS = 25.0
#: Default stamp of the first frame: a fixed time (2023-11-14), not "now", so repeated
#: runs give identical bags and viewers show a plausible date.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
JPEG_QUALITY = 95


@dataclass(frozen=True)
class SourceFrame:
    """One input frame: its frame index and ``(H, W, 3)`` uint8 BGR pixels."""

    frame_index: int
    bgr: np.ndarray
    name: str


@dataclass
class MakeBagResult:
    """What :func:`make_bag` wrote."""

    path: Path
    image_topic: str
    images: int
    annotation_topic: Optional[str]
    annotations: int
    fps: float
    kind: str  #: "video", "afew-va", "aff-wild2" or "folder"
    label_source: str = ""
    skipped: List[str] = field(default_factory=list)


def _natural_key(path: Path) -> Tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def _image_files(folder: Path) -> List[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key)


def _is_afew_clip(folder: Path) -> bool:
    return (folder / f"{folder.name}.json").is_file() and any(folder.glob("*.png"))


def _read_image(path: Path) -> np.ndarray:
    """BGR pixels; the declared size is checked before decoding and a truncated JPEG refused."""
    from ros2_affect.core.image import decode_image_file

    return decode_image_file(path)


def _folder_frames(files: Sequence[Path], index_of: Any, skipped: List[str]) -> Iterator[SourceFrame]:
    for position, path in enumerate(files):
        try:
            bgr = _read_image(path)
        except InvalidImageError as exc:
            LOG.warning("skipping %s", exc)
            skipped.append(str(path))
            continue
        yield SourceFrame(index_of(position, path), bgr, path.name)


def _video_frames(path: Path) -> Tuple[Iterator[SourceFrame], float, int]:
    import cv2

    from ros2_affect.core.image import check_capture_size

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InvalidImageError(f"video {str(path)!r} cannot be opened by OpenCV; check the file or convert it to mp4")
    check_capture_size(capture, f"video {str(path)!r}")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def frames() -> Iterator[SourceFrame]:
        index = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield SourceFrame(index, bgr, f"{path.name}#{index}")
                index += 1
        finally:
            capture.release()

    return frames(), fps, count


def _integer_stem(path: Path) -> int:
    if not path.stem.isdigit():
        raise LabelError(f"{path}: dataset frames must be named by their frame number (00001.jpg); got {path.name!r}")
    return int(path.stem)


@dataclass
class _Plan:
    kind: str
    frames: Iterator[SourceFrame]
    total: Optional[int]
    fps: Optional[float]
    labels: Optional[AnnotationSet]


def _plan(input_path: Path, labels: Sequence[Path], skipped: List[str]) -> _Plan:
    if not input_path.exists():
        raise BagError(f"input {str(input_path)!r} does not exist; pass a video file or a folder of images")
    if input_path.is_file():
        frames, fps, count = _video_frames(input_path)
        label_set = _load_extra_labels(labels)
        return _Plan("video", frames, count or None, fps if fps > 0 else None, label_set)
    files = _image_files(input_path)
    if not files:
        raise BagError(f"folder {str(input_path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if _is_afew_clip(input_path) and not labels:
        label_set = load_afew_va(input_path / f"{input_path.name}.json")
        return _Plan(
            "afew-va", _folder_frames(files, lambda i, p: _integer_stem(p), skipped), len(files), None, label_set
        )
    if labels and any(p.is_dir() or p.suffix == ".txt" for p in labels):
        expr, va = find_affwild2_labels(input_path, labels)
        if expr is None and va is None:
            raise LabelError(
                f"no Aff-Wild2 annotation {input_path.name}.txt (EXPR or VA) found in {', '.join(map(str, labels))}"
            )
        label_set = load_affwild2(expr, va)
        # Aff-Wild2 images are numbered from 1; annotation line k (frame index k - 1) is image k
        frames = _folder_frames(files, lambda i, p: _integer_stem(p) - 1, skipped)
        return _Plan("aff-wild2", frames, len(files), None, label_set)
    if _is_afew_clip(input_path):
        frames = _folder_frames(files, lambda i, p: _integer_stem(p), skipped)
        return _Plan("afew-va", frames, len(files), None, _load_extra_labels(labels))
    return _Plan("folder", _folder_frames(files, lambda i, p: i, skipped), len(files), None, _load_extra_labels(labels))


def _load_extra_labels(labels: Sequence[Path]) -> Optional[AnnotationSet]:
    if not labels:
        return None
    if len(labels) > 1:
        raise LabelError(
            f"{len(labels)} label files given ({', '.join(map(str, labels))}); several are only accepted for "
            "Aff-Wild2 (EXPR + VA .txt of a frames folder)"
        )
    return load_labels(labels[0])


def _image_msg(store: Any, bgr: np.ndarray, header: Any, compression: str, encoding: str) -> Tuple[str, Any]:
    import cv2

    if compression == "none":
        cls = store.types["sensor_msgs/msg/Image"]
        pixels = bgr if encoding == "bgr8" else bgr[:, :, ::-1]
        pixels = np.ascontiguousarray(pixels)
        h, w = pixels.shape[:2]
        msg = cls(
            header=header,
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=w * 3,
            data=pixels.reshape(-1).view(np.uint8),
        )
        return "sensor_msgs/msg/Image", msg
    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]) if compression == "jpeg" else (".png", [])
    ok, buffer = cv2.imencode(ext, bgr, params)
    if not ok:
        raise InvalidImageError(f"OpenCV could not encode a {bgr.shape} image as {compression}")
    cls = store.types["sensor_msgs/msg/CompressedImage"]
    # image_transport's convention: "<original encoding>; <codec> compressed <encoded channel order>"
    fmt = f"{encoding}; {compression} compressed bgr8"
    return "sensor_msgs/msg/CompressedImage", cls(
        header=header, format=fmt, data=np.asarray(buffer, dtype=np.uint8).reshape(-1)
    )


def make_bag(
    input_path: Path,
    out: Path,
    labels: Sequence[Path] = (),
    fps: Optional[float] = None,
    compression: str = "none",
    storage: str = "sqlite3",
    topic: str = DEFAULT_TOPIC,
    frame_id: str = "camera",
    encoding: str = "rgb8",
    label_topic: str = DEFAULT_ANNOTATION_TOPIC,
    start_ns: int = DEFAULT_START_NS,
    overwrite: bool = False,
    progress: bool = False,
) -> MakeBagResult:
    """Write the bag (see the module docstring). Returns a summary.

    The bag is written beside ``out`` and moved there only when complete; with
    ``overwrite`` an existing bag that ros2-affect wrote is replaced only then (see
    :class:`~ros2_affect.bags.writer.BagWriter`).

    Raises:
        OutputError: ``out`` is, holds or lies inside the input or a label file, or exists.
        BagError: missing input, no images, a bad option.
        LabelError: unreadable labels.
    """
    from ros2_affect.bags.reader import create_bag_typestore
    from ros2_affect.bags.writer import BagWriter, annotation_msg, make_header

    store = create_bag_typestore()
    if compression not in COMPRESSIONS:
        raise BagError(f"--compressed {compression!r} is not accepted; choose one of {', '.join(COMPRESSIONS)}")
    if encoding not in ENCODINGS:
        raise BagError(f"--encoding {encoding!r} is not accepted; choose one of {', '.join(ENCODINGS)}")
    if fps is not None and not 0.1 <= fps <= 1000:
        raise BagError(f"--fps {fps} is out of range; expected 0.1..1000 frames per second")
    if compression != "none" and not topic.endswith("/compressed"):
        topic = topic.rstrip("/") + "/compressed"  # the image_transport name of a compressed stream
    # the output is checked (not an input, not an existing bag without --overwrite) before any work
    writer = BagWriter(
        out, storage=storage, typestore=store, overwrite=overwrite, tool="make-bag", inputs=[input_path, *labels]
    )
    skipped: List[str] = []
    plan = _plan(Path(input_path), [Path(p) for p in labels], skipped)
    rate = fps or plan.fps or DEFAULT_FPS
    by_frame = plan.labels.by_frame_index() if plan.labels is not None else {}

    result = MakeBagResult(Path(out), topic, 0, None, 0, rate, plan.kind, plan.labels.source if plan.labels else "")
    frames: Iterator[SourceFrame] = plan.frames
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(plan.frames, total=plan.total, unit="img", desc="make-bag")
        frames = iter(bar)
    # recorded in each message: dataset and clip name only, so the bag does not depend on local paths
    label_name = f"{plan.labels.dataset} {Path(input_path).name}" if plan.labels is not None else ""
    # the bar ends its line before any message (an error, Ctrl-C) is printed
    with contextlib.ExitStack() as stack, writer as bag:
        if bar is not None:
            stack.callback(bar.close)
        image_type = "sensor_msgs/msg/Image" if compression == "none" else "sensor_msgs/msg/CompressedImage"
        bag.add_topic(topic, image_type)
        if plan.labels is not None and len(plan.labels):
            bag.add_topic(label_topic, "affect_msgs/msg/AffectAnnotation")
            result.annotation_topic = label_topic
        for frame in frames:
            stamp_ns = int(start_ns + round(frame.frame_index * 1e9 / rate))
            header = make_header(store, stamp_ns, frame_id)
            msgtype, msg = _image_msg(store, frame.bgr, header, compression, encoding)
            bag.write(topic, stamp_ns, msg)
            result.images += 1
            annotation = by_frame.get(frame.frame_index)
            if annotation is not None and result.annotation_topic:
                bag.write(label_topic, stamp_ns, annotation_msg(store, annotation, stamp_ns, frame_id, label_name))
                result.annotations += 1
        if result.images == 0:
            raise BagError(
                f"no frame of {str(input_path)!r} could be read; nothing written"
                + (f" ({str(out)!r} was left as it was)" if Path(out).exists() else "")
            )
    if by_frame and result.annotations < len(by_frame):
        LOG.warning(
            "%d of %d annotated frames have no image in %s (labels for other frames?)",
            len(by_frame) - result.annotations,
            len(by_frame),
            input_path,
        )
    result.skipped = skipped
    return result


# -- command line ------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "make-bag",
        "write a rosbag2 bag from a video, an image folder or a dataset clip (with its labels)",
        __doc__,
    )
    parser.add_argument(
        "input", type=Path, help="video file, image folder, AFEW-VA clip folder or Aff-Wild2 frames folder"
    )
    parser.add_argument("--out", type=Path, required=True, help="bag folder to create")
    parser.add_argument(
        "--labels",
        type=Path,
        action="append",
        default=[],
        help="annotations: CSV, AFEW-VA .json, Aff-Wild2 EXPR/VA .txt or a folder of them (repeatable)",
    )
    parser.add_argument(
        "--fps", type=float, default=None, help=f"frame rate (default: the video's, else {DEFAULT_FPS:g})"
    )
    parser.add_argument(
        "--compressed",
        choices=COMPRESSIONS,
        default="none",
        help="none: sensor_msgs/Image; jpeg/png: sensor_msgs/CompressedImage (topic gets /compressed)",
    )
    parser.add_argument("--encoding", choices=ENCODINGS, default="rgb8", help="pixel order of raw images")
    parser.add_argument(
        "--storage", choices=("sqlite3", "mcap"), default="sqlite3",
        help="rosbag2 storage: sqlite3 (.db3, ROS 2 Humble's default) or mcap (.mcap, Jazzy's default; "
             "Humble reads it with the rosbag2_storage_mcap plugin) (default sqlite3)",
    )
    parser.add_argument("--topic", type=topic_name, default=DEFAULT_TOPIC, help="image topic")
    parser.add_argument("--frame-id", default="camera", help="header.frame_id of the images")
    parser.add_argument(
        "--label-topic", type=topic_name, default=DEFAULT_ANNOTATION_TOPIC,
        help="topic of the AffectAnnotation messages",
    )
    parser.add_argument(
        "--start-s", type=bounded_float(0, 2**31 - 1, " s (builtin_interfaces/Time holds int32 seconds)"),
        default=DEFAULT_START_NS / 1e9, help="stamp of frame 0, seconds since the epoch (>= 0)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output bag that ros2-affect wrote (only once the new one is complete)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = make_bag(
        args.input,
        args.out,
        labels=args.labels,
        fps=args.fps,
        compression=args.compressed,
        storage=args.storage,
        topic=args.topic,
        frame_id=args.frame_id,
        encoding=args.encoding,
        label_topic=args.label_topic,
        start_ns=int(round(args.start_s * 1e9)),
        overwrite=args.overwrite,
        progress=True,
    )
    print(
        f"wrote {result.path}: {result.images} images on {result.image_topic} at {result.fps:g} fps"
        + (
            f", {result.annotations} annotations on {result.annotation_topic} ({result.label_source})"
            if result.annotation_topic
            else ", no annotations"
        )
        + (f"; skipped {len(result.skipped)} unreadable images" if result.skipped else "")
    )
    return 0
