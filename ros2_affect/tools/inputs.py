"""Frame sources for the command-line tools: video files, images, image folders, cameras, the sample.

:func:`open_input` picks a source for an INPUT argument by trying :data:`INPUT_KINDS` in
order; each entry is ``(kind, matches(spec) -> bool, open(spec, options) -> InputSource)``.
Another source is added by inserting an entry into that table before the generic ones.
Every source yields :class:`InputFrame` tuples ``(index, stamp_ns, image, name)`` with
``image`` as ``(H, W, 3)`` uint8 RGB.

A rosbag (:func:`is_bag_input`) is no frame source: its image messages go through the
frame processor as in ``ros2-affect replay`` (``run`` on a bag is a replay plus
``results.jsonl``; see :class:`ros2_affect.tools.replay.BagReplay`).

A folder of images is a set of unrelated **photos** by default: each is processed on its
own (:attr:`InputSource.independent`; ``ros2-affect run`` resets the pipeline before each,
so no track, eye or sequence state crosses files). ``InputOptions(sequence=True)``
(``run --sequence``) reads it as the numbered frames of one video instead.

The ``sample`` input is a synthetic 30-frame clip (15 fps, 640x480) made from one
public-domain photograph, ``ros2_affect/data/astronaut.jpg`` (NASA; see
``ros2_affect/data/README.md``): the camera slowly pans, zooms in and rocks by up to 8
degrees, so detection, eye alignment, tracking and the temporal model all have work to
do, with one face that must keep one id.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ros2_affect.bags.reader import STORAGE_SUFFIXES
from ros2_affect.errors import ConfigError, InvalidImageError
from ros2_affect.tools.input_source import InputFrame, InputOptions, InputSource

__all__ = ["INPUT_KINDS", "InputFrame", "InputOptions", "InputSource", "is_bag_input", "open_input"]

LOG = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SAMPLE_IMAGE = "astronaut.jpg"
SAMPLE_FRAMES = 30
SAMPLE_FPS = 15.0
SAMPLE_SIZE_WH = (640, 480)
INPUT_HINT = (
    "pass a video file, an image file, a folder of photos (or, with --sequence, of one video's frames), a rosbag "
    "(folder, .db3 or .mcap), "
    "a camera index (0, 1, ...) or the word 'sample'"
)


def read_image_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB (see :func:`~ros2_affect.core.image.decode_image_file`:
    the declared size is checked before decoding, a truncated JPEG is refused).

    Raises:
        InvalidImageError: the file is not a decodable image.
    """
    from ros2_affect.core.image import decode_image_file

    return np.ascontiguousarray(decode_image_file(path)[:, :, ::-1])


def is_bag_input(spec: str) -> bool:
    """True for a rosbag2 folder (holding metadata.yaml) or a .db3/.mcap file."""
    path = Path(spec)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix in STORAGE_SUFFIXES and path.is_file()


def _limit(options: InputOptions, length: Optional[int]) -> Optional[int]:
    if options.max_frames is None:
        return length
    return options.max_frames if length is None else min(length, options.max_frames)


# -- image files and folders ------------------------------------------------------------------


def _is_image(spec: str) -> bool:
    return Path(spec).is_file() and Path(spec).suffix.lower() in IMAGE_SUFFIXES


def _is_folder(spec: str) -> bool:
    return Path(spec).is_dir()


def unique_names(paths: List[Path]) -> List[str]:
    """A name per image for outputs: the file stem (``00042``), or the whole file name where
    two files share a stem (``a.png``, ``a.jpg``), so no output is written over another.
    Names differ even ignoring case (for case-insensitive file systems): ``~2``, ``~3``... is
    appended where they still would not."""
    stems: Dict[str, int] = {}
    for path in paths:
        stems[path.stem.lower()] = stems.get(path.stem.lower(), 0) + 1
    names: List[str] = []
    taken = set()
    for path in paths:
        name = path.stem if stems[path.stem.lower()] == 1 else path.name
        candidate, n = name, 2
        while candidate.lower() in taken:
            candidate, n = f"{name}~{n}", n + 1
        taken.add(candidate.lower())
        names.append(candidate)
    return names


def _image_files(paths: List[Path], options: InputOptions, kind: str, name: str) -> InputSource:
    period_ns = int(round(1e9 / options.fps))
    paths = paths[: _limit(options, len(paths))]
    names = unique_names(paths)

    def frames(source: InputSource) -> Iterator[InputFrame]:
        for index, path in enumerate(paths):
            try:
                image = read_image_rgb(path)
            except InvalidImageError as exc:
                source.skipped += 1
                LOG.warning("skipping %s", exc)
                continue
            yield InputFrame(index, index * period_ns, image, names[index])

    independent = kind == "image" or not options.sequence
    return InputSource(kind, name, options.fps, False, len(paths), frames, independent=independent)


def open_image(spec: str, options: InputOptions) -> InputSource:
    path = Path(spec)
    if options.sequence:
        raise ConfigError(
            f"--sequence reads a folder of one video's frames, but {spec!r} is one image; "
            "drop --sequence, or pass the folder that holds the frames"
        )
    return _image_files([path], options, "image", path.stem)


def open_folder(spec: str, options: InputOptions) -> InputSource:
    folder = Path(spec)
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ConfigError(f"folder {str(folder)!r} has no images ({', '.join(IMAGE_SUFFIXES)}); {INPUT_HINT}")
    return _image_files(paths, options, "folder", folder.name or str(folder))


# -- videos and cameras -----------------------------------------------------------------------


def _is_video(spec: str) -> bool:
    return Path(spec).is_file() and Path(spec).suffix.lower() in VIDEO_SUFFIXES


def _is_camera(spec: str) -> bool:
    return spec.isdigit()


def _capture(cap: Any, kind: str, name: str, options: InputOptions, live: bool) -> InputSource:
    """Frames of an open ``cv2.VideoCapture`` (its declared frame size checked first)."""
    import cv2

    from ros2_affect.core.image import check_capture_size

    check_capture_size(cap, f"{kind} {name!r}")
    reported_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = reported_fps if math.isfinite(reported_fps) and 1.0 <= reported_fps <= 1000.0 else options.fps
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if not live else 0
    period_ns = int(round(1e9 / fps))

    def frames(source: InputSource) -> Iterator[InputFrame]:
        last_stamp = -1
        index = 0
        while options.max_frames is None or index < options.max_frames:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if live:
                stamp = time.time_ns()  # capture time, as a camera driver would stamp it
            else:
                # The container's presentation time; some backends report 0 for every frame,
                # so fall back to index / fps whenever it does not advance.
                msec = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
                stamp = int(round(msec * 1e6)) if math.isfinite(msec) else -1
                if stamp <= last_stamp:
                    stamp = index * period_ns if index * period_ns > last_stamp else last_stamp + period_ns
            last_stamp = stamp
            image = np.ascontiguousarray(bgr[:, :, ::-1]) if bgr.ndim == 3 else np.repeat(bgr[:, :, None], 3, 2)
            yield InputFrame(index, stamp, image, f"{name}_{index:06d}")
            index += 1

    return InputSource(kind, name, fps, True, _limit(options, count or None), frames, cap.release)


def open_video(spec: str, options: InputOptions) -> InputSource:
    import cv2

    cap = cv2.VideoCapture(str(spec))
    if not cap.isOpened():
        cap.release()
        raise ConfigError(f"cannot open video {spec!r} (OpenCV has no decoder for it, or the file is damaged)")
    return _capture(cap, "video", Path(spec).stem, options, live=False)


def open_camera(spec: str, options: InputOptions) -> InputSource:
    import cv2

    cap = cv2.VideoCapture(int(spec))
    if not cap.isOpened():
        cap.release()
        raise ConfigError(f"cannot open camera {spec} (no such device, or it is busy); {INPUT_HINT}")
    return _capture(cap, "camera", f"camera{spec}", options, live=True)


# -- the bundled sample -----------------------------------------------------------------------


def sample_path() -> Path:
    return DATA_DIR / SAMPLE_IMAGE


def sample_frame(photo: np.ndarray, t: float, size_wh: Tuple[int, int] = SAMPLE_SIZE_WH) -> np.ndarray:
    """One frame of the sample clip at time ``t`` in 0..1: pan, zoom and roll of ``photo``."""
    import cv2

    width, height = size_wh
    face_centre = (225.0, 130.0)  # in the 512x512 photograph
    scale = 0.9 + 0.3 * t
    angle = 8.0 * math.sin(2 * math.pi * t)
    target = (width * (0.35 + 0.2 * t), height * (0.42 - 0.08 * t))
    matrix = cv2.getRotationMatrix2D(face_centre, angle, scale)
    matrix[:, 2] += np.array(target) - np.array(face_centre)
    frame: np.ndarray = cv2.warpAffine(
        photo, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40)
    )
    return frame


def open_sample(spec: str, options: InputOptions) -> InputSource:
    path = sample_path()
    if not path.is_file():
        raise ConfigError(f"the sample image {path} is missing from the installation; reinstall ros2_affect")
    photo = read_image_rgb(path)
    count = _limit(options, SAMPLE_FRAMES) or SAMPLE_FRAMES
    period_ns = int(round(1e9 / SAMPLE_FPS))

    def frames(source: InputSource) -> Iterator[InputFrame]:
        for index in range(count):
            t = index / (SAMPLE_FRAMES - 1)
            yield InputFrame(index, index * period_ns, sample_frame(photo, t), f"sample_{index:03d}")

    return InputSource("sample", "sample", SAMPLE_FPS, True, count, frames)


def describe_mode(source: InputSource) -> str:
    """One line saying how the frames of ``source`` are processed (printed by ``run``)."""
    count = f"{source.length} " if source.length is not None else ""
    if source.kind == "image":
        return "mode: photo (one image, processed on its own)"
    if source.independent:
        return (
            f"mode: photos ({count}images, each processed on its own: no track, eye or sequence state crosses "
            "files); pass --sequence if the folder holds the frames of one video"
        )
    if source.kind == "folder":
        return (
            f"mode: sequence ({count}images read as the frames of one video in file-name order, faces tracked "
            "across them)"
        )
    return f"mode: video ({source.kind}: frames in order, faces tracked across them)"


#: (kind, matches INPUT, opens it), tried in order. Insert new kinds before "folder"
#: when they are directories.
INPUT_KINDS: List[Tuple[str, Callable[[str], bool], Callable[[str, InputOptions], InputSource]]] = [
    ("sample", lambda spec: spec == "sample", open_sample),
    ("camera", _is_camera, open_camera),
    ("image", _is_image, open_image),
    ("video", _is_video, open_video),
    ("folder", _is_folder, open_folder),
]


def open_input(spec: str, options: Optional[InputOptions] = None) -> InputSource:
    """Open INPUT (see :data:`INPUT_KINDS`).

    Raises:
        ConfigError: INPUT does not exist, is a rosbag (see :func:`is_bag_input`) or is of no
            supported kind; the message lists the accepted kinds.
    """
    options = options or InputOptions()
    if is_bag_input(spec):
        raise ConfigError(
            f"input {spec!r} is a rosbag, not a frame source: `ros2-affect run` and `replay` read its images "
            "through the frame processor (ros2_affect.tools.replay.BagReplay)"
        )
    if options.fps <= 0 or not math.isfinite(options.fps):
        raise ConfigError(f"--fps = {options.fps} is not accepted; pass a frame rate > 0")
    for _kind, matches, opener in INPUT_KINDS:
        if matches(spec):
            return opener(spec, options)
    path = Path(spec)
    if not path.exists():
        raise ConfigError(f"input {spec!r} does not exist; {INPUT_HINT}")
    raise ConfigError(
        f"input {spec!r} is not a supported file (image suffixes {', '.join(IMAGE_SUFFIXES)}; video suffixes "
        f"{', '.join(VIDEO_SUFFIXES)}); {INPUT_HINT}"
    )
