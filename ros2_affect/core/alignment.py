"""Eye-levelled face crops (the Emotion-GCN recipe: rotate so the eyes are level, crop).

Rotation, crop and resize are one affine map per face, computed for all faces at once in
numpy (:func:`alignment_matrices`) and applied with one ``cv2.warpAffine`` per face from
the source image straight into the ``S x S`` output: the full image is never rotated.
When a face is shrunk the warp renders at ``ceil(shrink)`` times ``S`` (so source pixels
are sampled at least once each) and is reduced with area averaging, so small crops are anti-aliased like the
area-downscaled FER2013 images instead of aliased by bilinear point sampling.

Two geometries (``AlignmentConfig``):

- ``eye_distance_ratio > 0`` (default): scale so the eye centres are that fraction of the
  crop apart and put their midpoint at ``(S/2, eye_y * S)``. Independent of the
  detector's box, so a model sees faces framed exactly like its training crops.
- ``eye_distance_ratio == 0``: a square around the face box enlarged by ``margin`` on
  each side, rotated about the box centre.

Calibration of the defaults against FER2013 (the shipped models are trained on it, so
runtime crops must frame faces the way FER2013 does). 1000 random FER2013 Training images
(``random.Random(0).sample`` of the sorted file list) were measured with
:func:`measure_crop_geometry` (upscaled to 192 px, padded, BlazeFace + Face Mesh eye
centres); a face was found in 963. Medians (interquartile range):

    inter-ocular distance / width    0.370  (0.321 .. 0.407)
    eye-midpoint x / width           0.499  (0.473 .. 0.519)
    eye-midpoint y / height          0.390  (0.354 .. 0.415)
    roll                             1.0 deg (-3.4 .. 6.1)

so ``eye_distance_ratio`` defaults to 0.37 and ``eye_y`` to 0.39, and the eyes are
centred horizontally. FER2013 faces are not roll-normalised (the IQR above); levelling
them at run time keeps crops inside the training distribution, at its centre.
``tests/core/test_alignment.py`` re-measures 200 FER2013 images against the defaults and
checks that aligned AFEW-VA faces come out with the same geometry.

Border: pixels outside the image are filled by replicating the edge
(``BORDER_REPLICATE``). FER2013 crops have image content up to their borders; a black
band is a pattern the model never saw in training, a smeared edge is closer to it.

``roll_deg`` is the rotation removed, positive when the face was tilted
counter-clockwise as seen on screen (the subject's left eye, on the image's right,
higher than the right eye).
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ros2_affect.config import AlignmentConfig
from ros2_affect.core.types import AlignedFace, FaceDetection
from ros2_affect.errors import ConfigError, InvalidImageError

#: In eye-distance mode the inter-ocular distance used for scaling is at least this
#: fraction of the face box side, so a profile face (eyes nearly on top of each other)
#: is not blown up to fill the crop with one eye. Frontal faces have about 0.4.
MIN_IOD_TO_BOX = 0.2
#: Largest supersampling factor for anti-aliased shrinking (a 48 px crop then renders at
#: most 768 px, about 1 ms; beyond 16x, i.e. eyes over 280 px apart, it aliases a little).
MAX_SUPERSAMPLE = 16
#: Largest block average before the warp is 2^this (a 48 px crop from faces up to ~3000 px).
MAX_PYRAMID_LEVELS = 6


def roll_degrees(eyes_px: np.ndarray) -> np.ndarray:
    """``(N, 2, 2)`` eyes (subject's right first) -> ``(N,)`` roll, degrees, + counter-clockwise."""
    eyes = np.asarray(eyes_px, dtype=np.float64).reshape(-1, 2, 2)
    d = eyes[:, 1] - eyes[:, 0]
    return np.degrees(np.arctan2(-d[:, 1], d[:, 0]))


def square_box_centres(bboxes_xyxy_px: np.ndarray, image_size_wh: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Centres and sides of the square faces behind (possibly clipped) boxes.

    Detector boxes are square but clipped to the image; a box cut by the border is
    re-extended to a square on the side of that border, since the face continues there.

    Args:
        bboxes_xyxy_px: ``(N, 4)`` boxes.
        image_size_wh: ``(width, height)`` of the image they were clipped to.

    Returns:
        ``(N, 2)`` float64 centres and ``(N,)`` float64 sides, pixels.
    """
    # Plain float arithmetic per face: for the few faces of a frame it is several times
    # faster than numpy's per-call overhead (this runs every frame, in two stages).
    boxes = np.asarray(bboxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
    width, height = image_size_wh
    out = []
    for x1, y1, x2, y2 in boxes.tolist():
        w, h = x2 - x1, y2 - y1
        side = max(w, h)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if w < side:
            if x1 <= 0:
                cx = x2 - side / 2
            if x2 >= width:
                cx = x1 + side / 2
        if h < side:
            if y1 <= 0:
                cy = y2 - side / 2
            if y2 >= height:
                cy = y1 + side / 2
        out.append((cx, cy, side))
    arr = np.array(out, dtype=np.float64).reshape(-1, 3)
    return arr[:, :2], arr[:, 2]


def similarity_matrices(direction: np.ndarray, scale: np.ndarray, src_pt: np.ndarray, dst_pt: np.ndarray) -> np.ndarray:
    """``(N, 2, 3)`` maps that rotate ``direction`` onto +x, scale, and send ``src_pt`` to ``dst_pt``.

    Args:
        direction: ``(N, 2)`` vectors (need not be unit; zero vectors mean no rotation).
        scale: ``(N,)`` scale factors.
        src_pt, dst_pt: ``(N, 2)`` and ``(N, 2)`` (or ``(2,)``) points.
    """
    direction = np.asarray(direction, dtype=np.float64).reshape(-1, 2)
    n = len(direction)
    scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,)).tolist()
    src = np.broadcast_to(np.asarray(src_pt, dtype=np.float64), (n, 2)).tolist()
    dst = np.broadcast_to(np.asarray(dst_pt, dtype=np.float64), (n, 2)).tolist()
    rows = []
    for (dx, dy), s, (sx, sy), (tx, ty) in zip(direction.tolist(), scales, src, dst, strict=True):
        norm = math.hypot(dx, dy)
        ux, uy = (dx / norm, dy / norm) if norm > 1e-9 else (1.0, 0.0)
        # Rotation taking u onto +x, scaled: [[ux, uy], [-uy, ux]] * s.
        a, b, c, d = s * ux, s * uy, -s * uy, s * ux
        rows.append((a, b, tx - (a * sx + b * sy), c, d, ty - (c * sx + d * sy)))
    return np.array(rows, dtype=np.float64).reshape(n, 2, 3)


def alignment_matrices(
    eyes_px: np.ndarray,
    bboxes_xyxy_px: Optional[np.ndarray],
    config: AlignmentConfig,
    image_size_wh: Optional[Tuple[int, int]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Source-pixel -> crop-pixel affine maps for all faces at once.

    Args:
        eyes_px: ``(N, 2, 2)`` eye centres, subject's right eye first.
        bboxes_xyxy_px: ``(N, 4)`` face boxes, or None. Required when
            ``config.eye_distance_ratio == 0``; in eye mode it only bounds the scale
            (:data:`MIN_IOD_TO_BOX`).
        config: the crop geometry.
        image_size_wh: ``(width, height)``, to undo clipping of boxes cut by the border.

    Returns:
        ``(N, 2, 3)`` float64 matrices (crop pixel centres at integer coordinates
        0..S-1) and ``(N,)`` roll in degrees.

    Raises:
        ConfigError: box mode without boxes.
    """
    eyes = np.asarray(eyes_px, dtype=np.float64).reshape(-1, 2, 2)
    n = len(eyes)
    size = float(config.output_size_px)
    direction = eyes[:, 1] - eyes[:, 0]
    roll = roll_degrees(eyes)
    if bboxes_xyxy_px is not None:
        boxes = np.asarray(bboxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
        if len(boxes) != n:
            raise ValueError(f"got {n} eye pairs but {len(boxes)} boxes; pass one box per face")
        wh = image_size_wh if image_size_wh is not None else (np.inf, np.inf)
        centres, sides = square_box_centres(boxes, wh)  # type: ignore[arg-type]
    if config.eye_distance_ratio > 0:
        iod = np.linalg.norm(direction, axis=1)
        if bboxes_xyxy_px is not None:
            iod = np.maximum(iod, MIN_IOD_TO_BOX * sides)
        scale = config.eye_distance_ratio * size / np.maximum(iod, 1e-6)
        target = np.array([(size - 1) / 2.0, config.eye_y * size - 0.5])
        mats = similarity_matrices(direction, scale, eyes.mean(axis=1), target)
    else:
        if bboxes_xyxy_px is None:
            raise ConfigError(
                "alignment.eye_distance_ratio is 0 (crop around the face box) but no box was given; "
                "pass bbox_xyxy_px or set alignment.eye_distance_ratio > 0"
            )
        scale = size / np.maximum(sides * (1.0 + 2.0 * config.margin), 1e-6)
        mats = similarity_matrices(direction, scale, centres, np.array([(size - 1) / 2.0] * 2))
    return mats, roll


def _as_working_image(image: np.ndarray, grayscale: bool) -> np.ndarray:
    """Validate a source image and bring it to the channel count of the output."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidImageError(
            f"alignment needs a uint8 image, got {kind}; convert it with ros2_affect.core.image.as_rgb"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3) or image.size == 0:
        raise InvalidImageError(f"alignment needs an (H, W, 3) RGB or (H, W) grey uint8 image, got shape {image.shape}")
    image = np.ascontiguousarray(image)
    if grayscale and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if not grayscale and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image


def warp_faces(image: np.ndarray, matrices: np.ndarray, config: AlignmentConfig) -> np.ndarray:
    """Apply alignment matrices: one warp per face from ``image`` into ``S x S``.

    Shrinking is anti-aliased with box filters: the face's source region is first
    averaged over k x k blocks (k a power of two, leaving at most a 2x shrink), then warped
    with supersampling (render at f x S, area-average down). Rendering the whole shrink by
    supersampling costs f^2 (a 200 px face into 48 px: a 240 x 240 warp); the block
    average does most of it in one cheap pass. Grey crops from an RGB frame convert only
    the source region of each face, not the whole frame.

    Args:
        image: ``(H, W, 3)`` uint8 RGB or ``(H, W)`` / ``(H, W, 1)`` uint8 grey.
        matrices: ``(N, 2, 3)`` from :func:`alignment_matrices`.
        config: ``output_size_px`` and ``grayscale``.

    Returns:
        ``(N, S, S, C)`` uint8, ``C`` = 1 when ``config.grayscale`` else 3.
    """
    size = int(config.output_size_px)
    channels = 1 if config.grayscale else 3
    mats = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    out = np.empty((len(mats), size, size, channels), dtype=np.uint8)
    grey_from_rgb = config.grayscale and isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
    if grey_from_rgb:
        _as_working_image(image[:1, :1], True)  # same validation as the full path
        frame = image
    else:
        frame = _as_working_image(image, config.grayscale)
    height, width = frame.shape[:2]
    for i, (row0, row1) in enumerate(mats.tolist()):
        warped = _warp_one(frame, row0, row1, size, width, height, grey_from_rgb)
        out[i] = warped.reshape(size, size, channels)
    return out


def _warp_one(
    frame: np.ndarray, row0: List[float], row1: List[float], size: int, width: int, height: int, to_grey: bool
) -> np.ndarray:
    """One face: source region -> (grey) -> k x k block average -> supersampled warp.

    Plain float arithmetic: for the few faces of a frame it is several times faster than
    numpy's per-call overhead, and this runs for every face of every frame.
    """
    a, b, tx = row0
    c, d, ty = row1
    det = a * d - b * c
    if abs(det) < 1e-12:  # degenerate: warp the whole frame, no region to shrink
        src = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if to_grey else frame
        mat = np.array([row0, row1])
        return cv2.warpAffine(src, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    scale = math.sqrt(abs(det))
    levels = min(MAX_PYRAMID_LEVELS, int(math.floor(math.log2(1.0 / scale)))) if scale < 1.0 else 0
    k = 2**levels
    # The source pixels the warp reads: the crop's corners mapped back, plus a margin for
    # the filters (bilinear sampling, and up to a block beyond the footprint), clipped to
    # the image: inside a clipped side nothing changes, and at the image border
    # BORDER_REPLICATE repeats the same pixels.
    xs, ys = [], []
    for px, py in ((-0.5, -0.5), (size - 0.5, -0.5), (-0.5, size - 0.5), (size - 0.5, size - 0.5)):
        qx, qy = px - tx, py - ty
        xs.append((d * qx - b * qy) / det)
        ys.append((a * qy - c * qx) / det)
    margin = 2 + 2 * k
    x0 = int(min(max(math.floor(min(xs)) - margin, 0), width - 1))
    y0 = int(min(max(math.floor(min(ys)) - margin, 0), height - 1))
    x1 = int(min(max(math.ceil(max(xs)) + margin + 1, x0 + 1), width))
    y1 = int(min(max(math.ceil(max(ys)) + margin + 1, y0 + 1), height))
    src = np.ascontiguousarray(frame[y0:y1, x0:x1])
    if to_grey:
        src = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
    # The matrix from region pixels: the translation moves by the region's origin.
    tx, ty = tx + a * x0 + b * y0, ty + c * x0 + d * y0
    if k > 1 and src.shape[0] >= k and src.shape[1] >= k:
        # Box-average k x k blocks (the filter supersampling applies, for less work): pixel
        # u of the result covers region pixels [k*u, k*u + k), centred on k*u + (k - 1)/2.
        h, w = (src.shape[0] // k) * k, (src.shape[1] // k) * k
        src = cv2.resize(src[:h, :w], (w // k, h // k), interpolation=cv2.INTER_AREA)
        half = (k - 1) / 2.0
        tx, ty = tx + (a + b) * half, ty + (c + d) * half
        a, b, c, d = a * k, b * k, c * k, d * k
        scale *= k
    factor = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(1.0 / max(scale, 1e-6) - 1e-6))))
    if factor == 1:
        mat = np.array([[a, b, tx], [c, d, ty]])
        return cv2.warpAffine(src, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # Render at factor*S; output pixel j averages big pixels [j*f, (j+1)*f), whose centre is
    # j*f + (f-1)/2 in the big grid.
    big = np.array([[a, b, tx], [c, d, ty]]) * factor
    big[:, 2] += (factor - 1) / 2.0
    warped = cv2.warpAffine(
        src, big, (size * factor, size * factor), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)


def align_faces(
    image: np.ndarray,
    eyes_px: np.ndarray,
    bboxes_xyxy_px: Optional[np.ndarray],
    config: AlignmentConfig,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align several faces of one image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB or ``(H, W)`` / ``(H, W, 1)`` uint8 grey.
        eyes_px: ``(N, 2, 2)`` eye centres, subject's right eye first.
        bboxes_xyxy_px: ``(N, 4)`` boxes or None (eye mode only).
        config: crop geometry.

    Returns:
        crops ``(N, S, S, C)`` uint8, roll ``(N,)`` degrees, matrices ``(N, 2, 3)``.
    """
    size_wh = (int(image.shape[1]), int(image.shape[0])) if isinstance(image, np.ndarray) and image.ndim >= 2 else None
    mats, roll = alignment_matrices(eyes_px, bboxes_xyxy_px, config, size_wh)
    return warp_faces(image, mats, config), roll, mats


def align_face(
    image: np.ndarray,
    eyes_px: np.ndarray,
    bbox_xyxy_px: Optional[np.ndarray],
    config: AlignmentConfig,
) -> Tuple[np.ndarray, float]:
    """Align one face (e.g. a dataset image with landmark-derived eye centres).

    Args:
        image: ``(H, W, 3)`` uint8 RGB or ``(H, W)`` / ``(H, W, 1)`` uint8 grey.
        eyes_px: ``(2, 2)`` eye centres, the subject's right eye first.
        bbox_xyxy_px: ``(4,)`` face box, or None when ``config.eye_distance_ratio > 0``.
        config: crop geometry (use the model's alignment metadata when training).

    Returns:
        ``(S, S, C)`` uint8 crop and the roll removed, degrees (+: face was tilted
        counter-clockwise on screen).

    Raises:
        InvalidImageError: not a uint8 grey/RGB image.
        ConfigError: box mode without a box.
    """
    boxes = None if bbox_xyxy_px is None else np.asarray(bbox_xyxy_px).reshape(1, 4)
    crops, roll, _ = align_faces(image, np.asarray(eyes_px).reshape(1, 2, 2), boxes, config)
    return crops[0], float(roll[0])


class FaceAligner:
    """Pipeline stage: detections -> :class:`~ros2_affect.core.types.AlignedFace`."""

    def __init__(self, config: Optional[AlignmentConfig] = None) -> None:
        self.config = config or AlignmentConfig()
        self.config.validate()

    def align(self, image_rgb: np.ndarray, detections: Sequence[FaceDetection]) -> List[AlignedFace]:
        """Crop every detection, eyes level.

        Args:
            image_rgb: ``(H, W, 3)`` uint8 RGB, the image the detections came from.
            detections: faces; their ``eyes_px`` set the rotation (and scale in eye mode).

        Returns:
            One :class:`AlignedFace` per detection, in order, with ``affine_2x3`` set.
        """
        if not detections:
            return []
        eyes = np.stack([d.eyes_px for d in detections])
        boxes = np.stack([d.bbox_xyxy_px for d in detections])
        crops, roll, mats = align_faces(image_rgb, eyes, boxes, self.config)
        return [
            AlignedFace(crop=crops[i], detection=det, roll_deg=float(roll[i]), affine_2x3=mats[i])
            for i, det in enumerate(detections)
        ]


def measure_crop_geometry(
    crops: Sequence[np.ndarray], detector: Any, eye_locator: Any, upscale_px: int = 192, pad_px: int = 48
) -> np.ndarray:
    """Where the eyes are in face crops, as the runtime's own detector and locator see them.

    Used to calibrate the alignment defaults on FER2013 and to check that runtime crops
    match: each crop is upscaled (bicubic) to ``upscale_px``, padded with ``pad_px`` of
    black (BlazeFace misses faces that fill the whole image: 92% found unpadded, 99%
    padded on FER2013), then detected and eye-refined.

    Args:
        crops: ``(S, S)``, ``(S, S, 1)`` or ``(S, S, 3)`` uint8 crops.
        detector: a :class:`~ros2_affect.core.detection.MediaPipeFaceDetector`
            (``min_face_px`` small enough for the upscaled crops).
        eye_locator: a :class:`~ros2_affect.core.landmarks.FaceMeshEyeLocator`.
        upscale_px, pad_px: measurement resolution.

    Returns:
        ``(M, 4)`` float64 rows for the M crops where a face was found and its eyes
        refined: inter-ocular distance / width, eye-midpoint x / width, eye-midpoint
        y / height (continuous coordinates, 0 = top/left edge), roll in degrees.
    """
    rows = []
    for crop in crops:
        grey_or_rgb = np.asarray(crop)
        if grey_or_rgb.ndim == 3 and grey_or_rgb.shape[2] == 1:
            grey_or_rgb = grey_or_rgb[:, :, 0]
        big = cv2.resize(grey_or_rgb, (upscale_px, upscale_px), interpolation=cv2.INTER_CUBIC)
        if big.ndim == 2:
            big = cv2.cvtColor(big, cv2.COLOR_GRAY2RGB)
        big = cv2.copyMakeBorder(big, pad_px, pad_px, pad_px, pad_px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        faces = detector.detect(big)
        if not faces:
            continue
        (face,) = eye_locator.refine(big, faces[:1])
        if not face.eyes_refined:
            continue
        eyes = (face.eyes_px.astype(np.float64) - pad_px + 0.5) / upscale_px
        mid = eyes.mean(axis=0)
        rows.append([np.linalg.norm(eyes[1] - eyes[0]), mid[0], mid[1], roll_degrees(eyes)[0]])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)
