"""Benchmark and soak scenes made of real faces on a real background.

Random noise is no benchmark for a face pipeline: the detector finds nothing and every
later stage is skipped. The scenes here paste real face patches (cut from the AFEW-VA
frames in ``../shared/data`` around their annotated landmarks, and the bundled sample
photo ``ros2_affect/data/astronaut.jpg`` when present) at realistic sizes onto a real
camera frame (the first image of a recorded bag in ``../shared/data/rosbags``, or an
AFEW-VA frame, or the part of the sample photo below its face, blurred), and move them by a few pixels
from frame to frame, as people in front of a robot do.

:class:`SceneSource` loads the patches and background once; :class:`Scene` renders frame
``i`` of a layout of ``N`` faces (deterministic: the same index gives the same image);
:class:`ChurnScene` additionally switches faces on and off on a schedule, so tracks are
created and deleted all the time (the soak test).

Nothing here is imported by the runtime; the CLI's ``bench`` and the tests use it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ros2_affect.errors import AssetMissingError

LOG = logging.getLogger(__name__)

#: Where the real data lives (same rule as tests/conftest.py): $ROS2_AFFECT_SHARED_DATA or ../shared/data.
_REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA_ENV = "ROS2_AFFECT_SHARED_DATA"

#: The bundled sample photo (added with the package data).
SAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "data" / "astronaut.jpg"

#: Side of a pasted face patch relative to the face's inter-ocular distance: the patch is
#: the head with some forehead and chin, as a detector sees a face in a room.
_PATCH_IOD_FACTOR = 4.4


def shared_data_dir() -> Path:
    return Path(os.environ.get(SHARED_DATA_ENV, _REPO_ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class FacePatch:
    """A square face image and its alpha mask.

    Attributes:
        rgb: ``(S, S, 3)`` uint8, the face centred, eyes level-ish.
        alpha: ``(S, S)`` float32 in 0..1, an ellipse feathered at the border (so no
            square seam gives the detector a hard edge).
        origin: where it was cut from (file name), for the bench report.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    origin: str


def _elliptic_alpha(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    c = (side - 1) / 2.0
    # Ellipse slightly taller than wide (a head), soft over the outer 15%.
    r = np.sqrt(((xx - c) / (0.48 * side)) ** 2 + ((yy - c) / (0.5 * side)) ** 2)
    alpha: np.ndarray = np.clip((1.0 - r) / 0.15, 0.0, 1.0).astype(np.float32)
    return alpha


def _patch_around(rgb: np.ndarray, centre: Tuple[float, float], side: float, origin: str) -> Optional[FacePatch]:
    """Square crop of ``side`` pixels centred on ``centre``; None when it leaves the image."""
    cx, cy = centre
    half = side / 2.0
    x1, y1 = int(round(cx - half)), int(round(cy - half))
    s = int(round(side))
    if x1 < 0 or y1 < 0 or x1 + s > rgb.shape[1] or y1 + s > rgb.shape[0] or s < 32:
        return None
    crop = np.ascontiguousarray(rgb[y1:y1 + s, x1:x1 + s])
    return FacePatch(rgb=crop, alpha=_elliptic_alpha(s), origin=origin)


def _afew_patches(clip_dir: Path, every: int = 6) -> List[FacePatch]:
    """Face patches from AFEW-VA frames, centred between eyes and mouth (68-point landmarks)."""
    annotation = json.loads((clip_dir / "001.json").read_text()) if (clip_dir / "001.json").exists() else None
    if annotation is None:
        return []
    patches = []
    frames = annotation.get("frames", {})
    for key in sorted(frames)[::every]:
        path = clip_dir / f"{key}.png"
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        lm = np.asarray(frames[key]["landmarks"], dtype=np.float64)
        right, left = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
        iod = float(np.linalg.norm(left - right))
        centre = (right + left) / 2.0 * 0.55 + lm[48:68].mean(axis=0) * 0.45
        patch = _patch_around(bgr[:, :, ::-1], (float(centre[0]), float(centre[1])), iod * _PATCH_IOD_FACTOR,
                              f"afew-va/{path.name}")
        if patch is not None:
            patches.append(patch)
            # The mirror image is another real-looking face (and another pose for the detector).
            mirrored = np.ascontiguousarray(patch.rgb[:, ::-1])
            patches.append(FacePatch(mirrored, patch.alpha, patch.origin + " (mirrored)"))
    return patches


def _sample_patch(path: Path) -> List[FacePatch]:
    """The bundled sample photo's face, found with the real detector (no hand-placed box)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return []
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    from ros2_affect.config import DetectorConfig
    from ros2_affect.core.detection import create_detector

    with create_detector(DetectorConfig(model="full_range")) as detector:
        faces = detector.detect(rgb)
    if not faces:
        return []
    eyes = faces[0].eyes_px.astype(np.float64)
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    mouth = faces[0].keypoints_px[3].astype(np.float64)
    centre = eyes.mean(axis=0) * 0.55 + mouth * 0.45
    patch = _patch_around(rgb, (float(centre[0]), float(centre[1])), iod * _PATCH_IOD_FACTOR, f"sample/{path.name}")
    return [patch] if patch is not None else []


#: Bags in ../shared/data/rosbags whose first image can serve as background, preferred first.
BACKGROUND_BAGS = ("ros2_aruco_images_sqlite3", "ros2_aruco_images_mcap", "ros2_fiducial_board_611_sqlite3")


def _bag_background(bags_dir: Path, names: Sequence[str] = BACKGROUND_BAGS) -> Optional[Tuple[np.ndarray, str]]:
    from ros2_affect.bags.reader import BagReader

    for name in names:
        path = bags_dir / name
        if not path.exists():
            continue
        try:
            with BagReader(path) as bag:
                topic = bag.select_image_topic(None)
                for image in bag.images(topic.name):
                    return image.to_rgb(), f"rosbag {name} {topic.name}"
        except Exception as exc:  # a broken bag only costs us the background
            LOG.warning("cannot read a background from %s: %s", path, exc)
    return None


@dataclass
class SceneSource:
    """Real face patches and a real background image, loaded once.

    Attributes:
        patches: face patches, in a fixed order.
        background: ``(H, W, 3)`` uint8 RGB.
        description: where patches and background came from (printed by the bench).
        fallback: True when ``../shared/data`` was absent and only the bundled sample was used.
    """

    patches: List[FacePatch]
    background: np.ndarray
    description: str
    fallback: bool = False

    @classmethod
    def load(cls, data_dir: Optional[Path] = None, sample: Path = SAMPLE_IMAGE) -> SceneSource:
        """Load from ``data_dir`` (default ``../shared/data``), falling back to the sample photo.

        Raises:
            AssetMissingError: neither the shared data nor the sample photo is present.
        """
        data_dir = data_dir or shared_data_dir()
        clip_dir = data_dir / "afew-va-sample" / "001"
        patches = _afew_patches(clip_dir) if clip_dir.is_dir() else []
        sample_patches = _sample_patch(sample) if sample.is_file() else []
        patches += sample_patches
        if not patches:
            raise AssetMissingError(
                f"no real faces for benchmark scenes: neither {clip_dir} (AFEW-VA sample) nor {sample} exists; "
                f"run from a checkout next to ../shared/data or set ${SHARED_DATA_ENV}"
            )
        fallback = not clip_dir.is_dir()
        background = None
        origin = ""
        if (data_dir / "rosbags").is_dir():
            found = _bag_background(data_dir / "rosbags")
            if found is not None:
                background, origin = found
        if background is None and clip_dir.is_dir():
            bgr = cv2.imread(str(sorted(clip_dir.glob("*.png"))[0]), cv2.IMREAD_COLOR)
            if bgr is not None:
                background, origin = np.ascontiguousarray(bgr[:, :, ::-1]), "AFEW-VA frame"
        if background is None:
            bgr = cv2.imread(str(sample), cv2.IMREAD_COLOR)
            if bgr is None:
                raise AssetMissingError(f"no background image for benchmark scenes: {sample} is not readable")
            # Only the part below the head (suit, patch), lightly blurred: a blurred whole photo
            # still holds a head-shaped blob, which BlazeFace reported as a frame-filling second face.
            below_head = np.ascontiguousarray(bgr[int(bgr.shape[0] * 0.65):, :, ::-1])
            background = cv2.GaussianBlur(below_head, (0, 0), 3)
            origin = f"blurred {sample.name} (below the face)"
        kinds = sorted({p.origin.split("/")[0] for p in patches})
        description = f"{len(patches)} real face patches ({', '.join(kinds)}) on a {origin} background"
        if fallback:
            description += " (../shared/data absent: bundled sample only)"
        return cls(patches=patches, background=background, description=description, fallback=fallback)


def _paste(canvas: np.ndarray, patch: FacePatch, centre: Tuple[float, float], side: int) -> None:
    """Alpha-blend ``patch`` scaled to ``side`` pixels at ``centre`` (clipped at the border)."""
    rgb = cv2.resize(patch.rgb, (side, side), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(patch.alpha, (side, side), interpolation=cv2.INTER_LINEAR)
    x1 = int(round(centre[0] - side / 2))
    y1 = int(round(centre[1] - side / 2))
    h, w = canvas.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x1 + side, w), min(y1 + side, h)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    src = rgb[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1].astype(np.float32)
    a = alpha[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1, None]
    dst = canvas[cy1:cy2, cx1:cx2].astype(np.float32)
    canvas[cy1:cy2, cx1:cx2] = (src * a + dst * (1.0 - a) + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class FacePlacement:
    """Where face ``k`` of a layout sits: centre (px), side (px), which patch, motion phase."""

    centre: Tuple[float, float]
    side: int
    patch_index: int
    phase: float


def grid_layout(num_faces: int, size_wh: Tuple[int, int], n_patches: int) -> List[FacePlacement]:
    """Place ``num_faces`` faces on a grid over ``size_wh``, as large as the cells allow.

    The grid has ``ceil(sqrt(N * W / H))`` columns, so cells are about square. A patch
    fills 95% of its cell, at most 30% of the frame width (1 face at 640x480: 192 px,
    8 faces: 152 px; at 1280x720: 384 and 304 px), with a little size variety. Smaller
    faces are not reliably found by the default short-range BlazeFace, which is made
    for faces within about 2 m (a face narrower than about 1/6 of the frame is missed).
    """
    width, height = size_wh
    if num_faces < 1:
        return []
    cols = max(1, int(math.ceil(math.sqrt(num_faces * width / height))))
    rows = int(math.ceil(num_faces / cols))
    cell_w, cell_h = width / cols, height / rows
    base = min(0.3 * width, 0.95 * min(cell_w, cell_h))
    placements = []
    for k in range(num_faces):
        r, c = divmod(k, cols)
        placements.append(
            FacePlacement(
                centre=((c + 0.5) * cell_w, (r + 0.5) * cell_h),
                side=int(base * (1.0 - 0.04 * (k % 3))),
                patch_index=k % n_patches,
                phase=k * 1.7,
            )
        )
    return placements


@dataclass
class Scene:
    """Frames of ``num_faces`` real faces moving slightly over a real background.

    Args:
        source: the loaded patches and background.
        num_faces: faces per frame.
        size_wh: frame ``(width, height)`` in pixels.
        motion_px: amplitude of the per-face drift (sinusoidal, a few pixels per frame).
    """

    source: SceneSource
    num_faces: int
    size_wh: Tuple[int, int]
    motion_px: float = 4.0
    _background: np.ndarray = field(init=False, repr=False)
    placements: List[FacePlacement] = field(init=False)

    def __post_init__(self) -> None:
        width, height = self.size_wh
        self._background = cv2.resize(self.source.background, (width, height), interpolation=cv2.INTER_AREA)
        self.placements = grid_layout(self.num_faces, self.size_wh, len(self.source.patches))

    def visible(self, index: int) -> Sequence[bool]:
        """Which placements are drawn in frame ``index`` (all, in this scene)."""
        return [True] * len(self.placements)

    def centre_of(self, placement: FacePlacement, index: int) -> Tuple[float, float]:
        t = index * 0.15 + placement.phase
        return (placement.centre[0] + self.motion_px * math.sin(t),
                placement.centre[1] + 0.5 * self.motion_px * math.cos(0.7 * t))

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``(H, W, 3)`` uint8 RGB (deterministic)."""
        canvas: np.ndarray = self._background.copy()
        for placement, shown in zip(self.placements, self.visible(index), strict=True):
            if shown:
                _paste(canvas, self.source.patches[placement.patch_index], self.centre_of(placement, index),
                       placement.side)
        return canvas

    def expected_faces(self, index: int) -> int:
        return int(sum(self.visible(index)))

    def hits(self, index: int, boxes_xyxy_px: Sequence[np.ndarray]) -> List[bool]:
        """Per placement: is a box centre within the face patch drawn in frame ``index``?"""
        centres = [((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0) for b in boxes_xyxy_px]
        out = []
        for placement, shown in zip(self.placements, self.visible(index), strict=True):
            cx, cy = self.centre_of(placement, index)
            half = placement.side / 2.0
            out.append(bool(shown) and any(abs(x - cx) < half and abs(y - cy) < half for x, y in centres))
        return out

    def calibrate(self, detect: Callable[[np.ndarray], Sequence[np.ndarray]], frames: int = 10) -> List[float]:
        """Give each placement the face patch the detector finds most reliably there.

        Real faces differ in how well BlazeFace sees them at a given size and spot (pose,
        blur, contrast with the background); a benchmark of N faces must contain N faces
        the detector actually reports, else the later stages run on fewer. Every patch is
        tried at every placement on ``frames`` frames (all faces drawn at once, so the
        crowding is the real one) and the best one kept.

        Args:
            detect: ``rgb -> boxes`` (``(4,)`` xyxy arrays), e.g. the pipeline's detector.

        Returns:
            The hit rate (0..1) of the chosen patch per placement.
        """
        n_patches = len(self.source.patches)
        rates = np.zeros((len(self.placements), n_patches))
        base = list(self.placements)
        for shift in range(n_patches):
            self.placements = [replace(p, patch_index=(k + shift) % n_patches) for k, p in enumerate(base)]
            for index in range(0, frames * 6, 6):  # spans the drift's period (~42 frames)
                for k, hit in enumerate(self.hits(index, detect(self.render(index)))):
                    rates[k, (k + shift) % n_patches] += hit / frames
        best = rates.argmax(axis=1)
        self.placements = [replace(p, patch_index=int(best[k])) for k, p in enumerate(base)]
        return [float(rates[k, best[k]]) for k in range(len(base))]


@dataclass
class ChurnScene(Scene):
    """A :class:`Scene` whose faces come and go: face ``k`` is visible for ``on_frames``
    frames and away for ``off_frames`` frames (longer than the tracker's ``max_misses``, so
    every return is a new track), each with its own offset, so the number of faces and of
    live tracks changes all the time."""

    on_frames: int = 30
    off_frames: int = 15

    def visible(self, index: int) -> Sequence[bool]:
        period = self.on_frames + self.off_frames
        return [((index + 11 * k) % period) < self.on_frames for k in range(len(self.placements))]
