"""The perception pipeline: one camera frame in, every face's track id, crop and affect out.

Stages (each timed into ``FrameResult.stage_ms``)::

    detect -> keep the max_faces largest -> track -> landmarks (eye refinement) -> align -> infer

Tracking needs only the boxes, so it runs right after detection; the eye refinement then
starts from each track's refined eyes of the previous frame. ``infer`` calls the affect
model's one ``estimate`` with the tracks and their crops, in one batch per frame: a frame
model runs on all crops (:class:`~ros2_affect.core.affect_model.FrameAffectModel`); a
temporal model (:class:`~ros2_affect.core.affect_model.TemporalAffectModel`) encodes only
the new crops (one encoder batch), pushes the features into the per-track ring buffers it
owns, and runs its sequence head on every current track's last T features (one batch).
Each crop is encoded exactly once, however long the sequences.

Everything is built at configure time (:func:`create_pipeline`: detector, landmark model,
ONNX sessions, the model's preallocated sequence buffers); :meth:`AffectPipeline.process` allocates only
per-frame arrays. There is no module state: two pipelines in one process are independent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ros2_affect.config import AlignmentConfig, PipelineConfig
from ros2_affect.core.affect_model import AffectModel, TemporalAffectModel, create_affect_model
from ros2_affect.core.alignment import FaceAligner
from ros2_affect.core.detection import create_detector
from ros2_affect.core.image import as_rgb
from ros2_affect.core.landmarks import create_eye_locator
from ros2_affect.core.sequence import SequenceBuffers
from ros2_affect.core.tracking import FaceTracker
from ros2_affect.core.types import AffectEstimate, FaceResult, Frame, FrameResult
from ros2_affect.errors import ConfigError, ModelContractError

LOG = logging.getLogger(__name__)

STAGES = ("detect", "track", "landmarks", "align", "infer", "total")


def alignment_for_model(config: AlignmentConfig, model: Optional[AffectModel]) -> AlignmentConfig:
    """The alignment a model needs: its metadata overrides the configured settings.

    Crop size and channels come from the model's input; the other fields from the
    ``alignment`` object in its metadata (the settings it was trained with). Changes are
    logged, since they override the parameter file.

    Raises:
        ModelContractError: the metadata's alignment values are not valid settings.
    """
    if model is None:
        return config
    known = {f.name for f in dataclasses.fields(AlignmentConfig)}
    wanted: Dict[str, Any] = {}
    for key, value in model.alignment.items():
        if key in known and key not in ("output_size_px", "grayscale"):
            wanted[key] = value
        elif key not in known:
            LOG.warning(
                "model %s: ignoring unknown alignment setting %r = %r in its metadata", model.model_id, key, value
            )
    wanted["output_size_px"] = model.input_size
    wanted["grayscale"] = model.channels == 1
    changes = {k: v for k, v in wanted.items() if getattr(config, k) != v}
    try:
        aligned = dataclasses.replace(config, **changes)
        aligned.validate()
    except (ConfigError, TypeError) as exc:
        raise ModelContractError(
            f"model {model.model_id}: its metadata's alignment settings {model.alignment} are not valid ({exc}); "
            "re-export the model"
        ) from None
    if changes:
        LOG.info(
            "alignment follows model %s: %s (overrides the parameter file)",
            model.model_id, ", ".join(f"{k}={v!r}" for k, v in sorted(changes.items())),
        )
    return aligned


@dataclasses.dataclass(frozen=True)
class _RefinedEyes:
    """A track's eyes from its latest Face Mesh run and the box they were found in."""

    eyes_px: np.ndarray  #: (2, 2) float32
    bbox_xyxy_px: np.ndarray  #: (4,) float32
    frame_index: int  #: the pipeline's frame count when they were found
    phase: int  #: with every_n_frames = n, refined on frames whose count % n == phase

    def follow(self, bbox_xyxy_px: np.ndarray) -> np.ndarray:
        """The eyes moved and scaled with the box: ``(2, 2)`` float32 in ``bbox_xyxy_px``'s frame."""
        old = self.bbox_xyxy_px.astype(np.float64)
        new = np.asarray(bbox_xyxy_px, dtype=np.float64)
        old_size = max(float(np.sqrt((old[2] - old[0]) * (old[3] - old[1]))), 1e-6)
        new_size = float(np.sqrt(max((new[2] - new[0]) * (new[3] - new[1]), 0.0)))
        old_centre = (old[:2] + old[2:]) / 2
        new_centre = (new[:2] + new[2:]) / 2
        moved = new_centre + (self.eyes_px.astype(np.float64) - old_centre) * (new_size / old_size)
        return moved.astype(np.float32)


class AffectPipeline:
    """Runs the stages on one frame at a time. Build it with :func:`create_pipeline`.

    Attributes:
        config: the settings, with alignment/sequence values as overridden by the model.
        model: the affect model, or None (``model.kind: none``: detection and tracking only).
        frames_processed, faces_dropped_total: counters for diagnostics.
    """

    def __init__(
        self,
        config: PipelineConfig,
        detector: Any,
        eye_locator: Any,
        aligner: FaceAligner,
        tracker: FaceTracker,
        model: Optional[AffectModel],
    ) -> None:
        self.config = config
        self.detector = detector
        self.eye_locator = eye_locator
        self.aligner = aligner
        self.tracker = tracker
        self.model = model
        self.frames_processed = 0
        self.faces_dropped_total = 0
        #: track id -> its latest refined eyes (live tracks only).
        self._refined_eyes: Dict[str, _RefinedEyes] = {}
        self._next_phase = 0

    @property
    def buffers(self) -> Optional[SequenceBuffers]:
        """The temporal model's per-track sequence buffers (None for a frame model or none)."""
        return self.model.buffers if self.model is not None else None

    @property
    def rejected_outputs(self) -> int:
        return self.model.rejected_outputs if self.model is not None else 0

    def process(self, frame: Frame) -> FrameResult:
        """Run every stage on ``frame``.

        Raises:
            InvalidImageError: the frame's image is not a usable RGB image (callers log
                and skip the frame).
        """
        start = time.perf_counter()
        image = as_rgb(frame.image, "rgb8")
        stage_ms: Dict[str, float] = dict.fromkeys(STAGES, 0.0)

        t = time.perf_counter()
        detections = self.detector.detect(image)
        # The detector promises largest first; sorting again (stable) keeps max_faces
        # correct with any detector registered later.
        detections = sorted(detections, key=lambda d: -d.area_px)
        max_faces = self.config.detector.max_faces
        dropped = max(0, len(detections) - max_faces)
        detections = detections[:max_faces]
        stage_ms["detect"] = _ms(t)

        # Tracking needs only the boxes, so it runs before the eye refinement, which
        # then starts from each track's eyes of the previous frame.
        t = time.perf_counter()
        tracks = self.tracker.update(detections, frame.stamp_ns)
        if self.tracker.ended_track_ids:
            if self.model is not None:
                self.model.end_tracks(self.tracker.ended_track_ids)
            for track_id in self.tracker.ended_track_ids:
                self._refined_eyes.pop(track_id, None)
        stage_ms["track"] = _ms(t)

        if self.eye_locator is not None and detections:
            t = time.perf_counter()
            detections = self._refine_eyes(image, detections, tracks)
            stage_ms["landmarks"] = _ms(t)

        t = time.perf_counter()
        aligned = self.aligner.align(image, detections)
        stage_ms["align"] = _ms(t)

        estimates: List[Optional[AffectEstimate]] = [None] * len(tracks)
        if self.model is not None and tracks:
            t = time.perf_counter()
            crops = np.stack([aligned[track.detection_index].crop for track in tracks])
            estimates = self.model.estimate([track.track_id for track in tracks], crops)
            stage_ms["infer"] = _ms(t)

        faces = tuple(
            FaceResult(
                track_id=track.track_id,
                detection=detections[track.detection_index],
                aligned=aligned[track.detection_index],
                affect=estimate,
                track_confirmed=track.confirmed,
            )
            for track, estimate in zip(tracks, estimates, strict=True)
        )
        self.frames_processed += 1
        self.faces_dropped_total += dropped
        stage_ms["total"] = _ms(start)
        return FrameResult(
            stamp_ns=int(frame.stamp_ns),
            frame_id=frame.frame_id,
            width_px=int(image.shape[1]),
            height_px=int(image.shape[0]),
            faces=faces,
            faces_dropped=dropped,
            stage_ms=stage_ms,
        )

    def _refine_eyes(self, image: np.ndarray, detections: List[Any], tracks: List[Any]) -> List[Any]:
        """Face Mesh eye refinement, its crops levelled on each track's previous refined eyes.

        The landmark crop is rotated to level the eyes it is given, and the model needs a
        second pass when they were off by more than 2 degrees
        (:meth:`~ros2_affect.core.landmarks.FaceMeshEyeLocator.eye_centres`). BlazeFace's
        eye keypoints are that far off for most faces, so levelling on them cost two
        Face Mesh runs per face (1.83 on average on the bench scenes); last frame's
        refined eyes of the same track are within a degree or two for a face that moves
        naturally, so one run suffices. Only the direction of the eye line is used, so
        the motion between frames does not matter.

        With ``landmarks.every_n_frames`` = n > 1 a track's eyes are refined on one frame
        in n; in between, its last refined eyes follow its detection box (moved and
        scaled with it). Each track gets its own phase, so the refinements are spread
        over the frames (about 1/n of the faces each frame) and no frame pays for all.
        """
        assert self.eye_locator is not None
        every = self.config.landmarks.every_n_frames
        frame_index = self.frames_processed
        track_of = {track.detection_index: track for track in tracks}
        refine: List[int] = []
        for i in range(len(detections)):
            track = track_of.get(i)
            state = self._refined_eyes.get(track.track_id) if track is not None else None
            if state is None or frame_index - state.frame_index >= every or frame_index % every == state.phase:
                refine.append(i)
        out = list(detections)
        if refine:
            guided = []
            for i in refine:
                track = track_of.get(i)
                state = self._refined_eyes.get(track.track_id) if track is not None else None
                guided.append(dataclasses.replace(detections[i], eyes_px=state.eyes_px) if state else detections[i])
            for i, result in zip(refine, self.eye_locator.refine(image, guided), strict=True):
                # Where the model did not trust its answer, keep the detector's own eyes.
                out[i] = result if result.eyes_refined else detections[i]
                track = track_of.get(i)
                if track is None:
                    continue
                if result.eyes_refined:
                    previous = self._refined_eyes.get(track.track_id)
                    if previous is not None:
                        phase = previous.phase
                    else:  # tracks born together get different phases: the work is spread
                        phase = self._next_phase % every
                        self._next_phase += 1
                    self._refined_eyes[track.track_id] = _RefinedEyes(
                        result.eyes_px, np.asarray(detections[i].bbox_xyxy_px, dtype=np.float32), frame_index, phase
                    )
                else:
                    self._refined_eyes.pop(track.track_id, None)
        refined = set(refine)
        for i in range(len(detections)):
            if i not in refined:
                state = self._refined_eyes[track_of[i].track_id]
                out[i] = dataclasses.replace(
                    detections[i], eyes_px=state.follow(detections[i].bbox_xyxy_px), eyes_refined=True
                )
        return out

    @property
    def confirmed_track_ids(self) -> Tuple[str, ...]:
        """The tracker's live confirmed tracks (faces keep these ids through short misses)."""
        return self.tracker.confirmed_track_ids

    def retune(self, config: PipelineConfig) -> bool:
        """Apply new tuning settings in place: no model reloaded, no track dropped.

        Tuning is what a running robot may adjust (the node's live parameters): detection
        thresholds and scale, the landmark crop, alignment geometry, tracker thresholds and
        caps, sequence stride, flip averaging. Anything else differing from the current
        settings (models, backends, sizes), or a change the preallocated state cannot take
        (more tracks than the sequence buffers hold, a detection threshold below the one
        the face detector was created with), returns False and changes nothing: the caller
        builds a new pipeline instead.

        Raises:
            ConfigError: ``config`` is not valid.
        """
        config.validate()
        current = self.config
        if config.model != dataclasses.replace(current.model, flip_average=config.model.flip_average):
            return False
        if config.detector.model != current.detector.model or config.landmarks.enabled != current.landmarks.enabled:
            return False
        if config.landmarks.every_n_frames != current.landmarks.every_n_frames:
            return False
        if config.detector.min_score < getattr(self.detector, "created_min_score", config.detector.min_score):
            return False
        alignment = alignment_for_model(config.alignment, self.model)
        sequence = dataclasses.replace(config.sequence, length=current.sequence.length)
        config = dataclasses.replace(config, alignment=alignment, sequence=sequence)
        # last check, and the model's settings change only when it passes
        if self.model is not None and not self.model.retune(
            config.model.flip_average, config.sequence.stride, config.tracker.max_tracks
        ):
            return False
        self.detector.config = config.detector
        if self.eye_locator is not None:
            self.eye_locator.config = config.landmarks
        self.aligner.config = alignment
        self.tracker.config = config.tracker
        self.config = config
        return True

    def reset(self) -> None:
        """Forget all tracks and sequences (e.g. when a replay jumps back)."""
        self.tracker.reset()
        if self.model is not None:
            self.model.reset()
        self._refined_eyes.clear()

    def close(self) -> None:
        """Release the detector, landmark model and inference sessions (idempotent)."""
        for part in (self.detector, self.eye_locator, self.model):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> AffectPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def create_pipeline(config: PipelineConfig, tracker_seed: Optional[int] = None) -> AffectPipeline:
    """Build a pipeline: load every model and allocate every buffer now, not on the first frame.

    Args:
        config: validated settings (e.g. from :func:`ros2_affect.config.load_pipeline_config`).
        tracker_seed: seed of the track-id permutation (reproducible ids in replays and
            tests); None draws a fresh one.

    Raises:
        AssetMissingError, ModelLoadError, ModelContractError, BackendUnavailableError:
            a model cannot be loaded; the message names the file and the fix.
    """
    config.validate()
    model = create_affect_model(
        config.model,
        max_batch=config.detector.max_faces,
        stride=config.sequence.stride,
        max_tracks=config.tracker.max_tracks,
    )
    detector = None
    eye_locator = None
    try:
        alignment = alignment_for_model(config.alignment, model)
        sequence = config.sequence
        if isinstance(model, TemporalAffectModel) and model.sequence_length != sequence.length:
            LOG.info(
                "sequence.length follows model %s: %d (parameter file: %d)",
                model.model_id, model.sequence_length, sequence.length,
            )
            sequence = dataclasses.replace(sequence, length=model.sequence_length)
        config = dataclasses.replace(config, alignment=alignment, sequence=sequence)
        detector = create_detector(config.detector)
        eye_locator = create_eye_locator(config.landmarks)
        tracker = FaceTracker(config.tracker, seed=tracker_seed)
        pipeline = AffectPipeline(config, detector, eye_locator, FaceAligner(alignment), tracker, model)
    except BaseException:
        for part in (eye_locator, detector, model):
            close = getattr(part, "close", None)
            if close is not None:
                close()
        raise
    LOG.info(
        "pipeline ready: %s detector, eye refinement %s, %s",
        config.detector.model, "on" if eye_locator is not None else "off",
        model.describe() if model is not None else "no affect model (model.kind: none)",
    )
    return pipeline
