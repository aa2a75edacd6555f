"""The affect models: expression probabilities and valence/arousal from aligned face crops.

Two classes, one per kind of export, each with one :meth:`~AffectModel.estimate` that the
pipeline calls for the current frame's tracked faces:

- :class:`FrameAffectModel`: one *frame* graph, run on every crop.
- :class:`TemporalAffectModel`: an *encoder* (run once per new crop) and a *sequence* head
  (run over the last T encoder features of each track). It owns the per-track ring
  buffers of those features (:class:`~ros2_affect.core.sequence.SequenceBuffers`): the
  pipeline tells it which tracks ended (:meth:`~AffectModel.end_tracks`) and when time
  jumped (:meth:`~AffectModel.reset`).

Both share :class:`AffectModel` (class names, input settings, model_id, describe, and the
checks every estimate passes): softmax in float64 of the logits divided by the model's
calibration temperature (metadata ``temperature``, 1.0 when absent;
:mod:`ros2_affect.backends.base`), valence and arousal clipped to -1..1 (or derived from
the probabilities for ``va_mode = "derived"``), and any non-finite output turns that face's
estimate into ``None`` (counted in :attr:`AffectModel.rejected_outputs`) instead of being
published. Graphs are loaded through a backend from :mod:`ros2_affect.backends` by name
(:func:`create_affect_model`); this module never imports torch or a backend library.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ros2_affect.assets import (
    DEFAULT_ENCODER_MODEL,
    DEFAULT_FRAME_MODEL,
    DEFAULT_SEQUENCE_MODEL,
    bundled_model_path,
)
from ros2_affect.backends import create_backend_with_fallback
from ros2_affect.backends.base import InferenceSession, ModelMetadata
from ros2_affect.backends.preprocess import flip_horizontal, to_model_input
from ros2_affect.config import ModelConfig
from ros2_affect.core.sequence import SequenceBuffers
from ros2_affect.core.types import AffectEstimate
from ros2_affect.core.valence_arousal import check_mapping
from ros2_affect.errors import AssetMissingError, ModelContractError

LOG = logging.getLogger(__name__)

#: At most one "rejected output" warning per this many seconds (a broken model would
#: otherwise log once per face per frame).
REJECT_LOG_PERIOD_S = 10.0


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.max(z, axis=1, keepdims=True)
    e = np.exp(z)
    result: np.ndarray = e / np.sum(e, axis=1, keepdims=True)
    return result


def _parse_quantization(raw: Optional[str]) -> Optional[Dict[str, Any]]:
    """The ``ros2_affect.quantization`` metadata (JSON written by training.quantize), or None."""
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    return info if isinstance(info, dict) else {"description": raw}


def _check_pair(encoder: ModelMetadata, sequence: ModelMetadata, encoder_src: str, sequence_src: str) -> None:
    """An encoder and a sequence head must come from the same export."""
    pairs: List[Tuple[str, Any, Any]] = [
        ("model_id", encoder.model_id, sequence.model_id),
        ("feature_dim", encoder.feature_dim, sequence.feature_dim),
        ("input_size", encoder.input_size, sequence.input_size),
        ("channels", encoder.channels, sequence.channels),
        ("mean", list(encoder.mean), list(sequence.mean)),
        ("std", list(encoder.std), list(sequence.std)),
    ]
    if encoder.class_names:
        pairs.append(("class_names", list(encoder.class_names), list(sequence.class_names)))
    for key, enc_value, seq_value in pairs:
        if enc_value != seq_value:
            raise ModelContractError(
                f"encoder {encoder_src} and sequence head {sequence_src} do not belong together: {key} is "
                f"{enc_value!r} in the encoder but {seq_value!r} in the sequence head; configure the two files "
                "of one export (model.encoder_model and model.sequence_model)"
            )


class AffectModel:
    """What a frame model and a temporal model share; use one of the two subclasses.

    Args:
        input_session: the graph that takes the image crops (frame graph or encoder).
        head_session: the graph that outputs the logits (frame graph or sequence head).
        flip_average: also run the mirrored crops and average (see the subclasses).
        max_batch: inputs larger than this are run in chunks (backends with a fixed
            maximum batch, e.g. TensorRT profiles).

    Raises:
        ModelContractError: derived valence/arousal requested for classes without
            coordinates, or an invalid calibration temperature.
    """

    #: "frame" or "temporal" (descriptions and reports; the pipeline does not branch on it).
    kind: ClassVar[str] = ""
    #: the per-track sequence buffers (a temporal model's; None for a frame model).
    buffers: Optional[SequenceBuffers] = None

    def __init__(
        self,
        input_session: InferenceSession,
        head_session: InferenceSession,
        flip_average: bool = False,
        max_batch: int = 8,
    ) -> None:
        self._input, self._head = input_session, head_session
        self.flip_average = bool(flip_average)
        self.max_batch = max(int(max_batch), 1)
        head = head_session.metadata
        #: calibration temperature T of the head graph: probabilities are softmax(logits / T).
        self.temperature = head.temperature  # raises ModelContractError (a ModelLoadError) for T <= 0 / NaN
        self._va_coords: Optional[np.ndarray] = None
        if head.va_derived:
            try:
                self._va_coords = check_mapping(head.class_names)
            except ValueError as exc:
                raise ModelContractError(f"{head_session.path}: va_mode is 'derived' but {exc}") from None
        # Read once: model_id goes into every face's estimate, every frame.
        self._quantization = _parse_quantization(input_session.metadata.extra.get("quantization"))
        self._model_id = head.model_id + ("-int8" if self._quantization is not None else "")
        #: faces whose model output was not finite (their estimate was dropped).
        self.rejected_outputs = 0
        self._last_reject_log = -float("inf")

    # -- the pipeline's calls --------------------------------------------------------------

    def estimate(self, track_ids: Sequence[str], crops: np.ndarray) -> List[Optional[AffectEstimate]]:
        """One estimate per tracked face of the current frame (``None`` where rejected).

        Args:
            track_ids: the faces' track ids, one per crop.
            crops: ``(N, S, S, C)`` uint8 aligned crops, in the order of ``track_ids``.
        """
        raise NotImplementedError

    def estimate_stills(self, crops: np.ndarray) -> List[Optional[AffectEstimate]]:
        """One estimate per ``(N, S, S, C)`` uint8 still image, with no track state (evaluation)."""
        raise NotImplementedError

    def end_tracks(self, track_ids: Iterable[str]) -> None:
        """Forget the state of tracks that ended (the tracker's ``ended_track_ids``)."""

    def reset(self) -> None:
        """Forget the state of every track (e.g. time jumped back)."""

    def retune(self, flip_average: bool, stride: int, max_tracks: int) -> bool:
        """Apply live settings; False (nothing changed) when the loaded state cannot take them."""
        self.flip_average = bool(flip_average)
        return True

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    # -- description -----------------------------------------------------------------------

    @property
    def sessions(self) -> Tuple[InferenceSession, ...]:
        """The loaded graphs, the one that takes the crops first."""
        return (self._input,) if self._input is self._head else (self._input, self._head)

    @property
    def input_size(self) -> int:
        return self._input.metadata.input_size

    @property
    def channels(self) -> int:
        return self._input.metadata.channels

    @property
    def mean(self) -> Tuple[float, ...]:
        return self._input.metadata.mean

    @property
    def std(self) -> Tuple[float, ...]:
        return self._input.metadata.std

    @property
    def sequence_length(self) -> int:
        """T, the frames a temporal model's head reads (1 for a frame model)."""
        return self._head.metadata.sequence_length

    @property
    def feature_dim(self) -> int:
        return self._input.metadata.feature_dim

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self._head.metadata.class_names

    @property
    def quantization(self) -> Optional[Dict[str, Any]]:
        """How the graph that takes the crops was int8-quantised (``python -m training.quantize``:
        method, calibration, agreement with the float graph, the float file's SHA-256), or None."""
        return None if self._quantization is None else dict(self._quantization)

    @property
    def quantized(self) -> bool:
        return self._quantization is not None

    @property
    def model_id(self) -> str:
        """The export's id, with ``-int8`` when the quantised graph runs (published in messages)."""
        return self._model_id

    @property
    def va_derived(self) -> bool:
        """True: valence/arousal are derived from the class probabilities; False: regressed."""
        return self._head.metadata.va_derived

    @property
    def alignment(self) -> Dict[str, Any]:
        """The alignment settings the model was trained with (from its metadata)."""
        return dict(self._input.metadata.alignment)

    @property
    def backend_name(self) -> str:
        return self._input.backend_name

    @property
    def paths(self) -> Tuple[Path, ...]:
        return tuple(s.path for s in self.sessions)

    def describe(self) -> str:
        return (
            f"{self.kind} model {self.model_id} ({', '.join(p.name for p in self.paths)}; {self.channels}x"
            f"{self.input_size}x{self.input_size} input, classes {list(self.class_names)}, "
            f"valence/arousal {'derived' if self.va_derived else 'regressed'}"
            + self._describe_extra()
            + (f", calibration temperature {self.temperature:g}" if self.temperature != 1.0 else "")
            + f", backend {self.backend_name})"
        )

    def _describe_extra(self) -> str:
        return ""

    # -- shared steps ----------------------------------------------------------------------

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """``(N, S, S, C)`` uint8 crops -> ``(N, C, S, S)`` float32 model input."""
        return to_model_input(crops, self.mean, self.std)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities: ``softmax(logits / T)`` in float64 (derived
        valence/arousal are computed from these too)."""
        if self.temperature == 1.0:
            return softmax64(logits)
        return softmax64(np.asarray(logits, dtype=np.float64) / self.temperature)

    def _run(self, session: InferenceSession, x: np.ndarray) -> Dict[str, np.ndarray]:
        if len(x) <= self.max_batch:
            return session.run(np.ascontiguousarray(x, dtype=np.float32))
        parts = [
            session.run(np.ascontiguousarray(x[i : i + self.max_batch], dtype=np.float32))
            for i in range(0, len(x), self.max_batch)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _estimates(
        self, probs: np.ndarray, va: Optional[np.ndarray], frames_used: np.ndarray
    ) -> List[Optional[AffectEstimate]]:
        """Estimates from calibrated probabilities and the head's valence/arousal output:
        derived or regressed valence/arousal, clipped; non-finite rows rejected."""
        if self._va_coords is not None:
            va = probs @ self._va_coords  # NaN rows stay NaN and are rejected below
        elif va is None:
            raise ModelContractError(
                f"{self._head.path}: va_mode is 'regressed' but the graph returned no valence_arousal"
            )
        va = np.asarray(va, dtype=np.float64)
        finite = np.isfinite(probs).all(axis=1) & np.isfinite(va).all(axis=1)
        results: List[Optional[AffectEstimate]] = []
        for i in range(len(probs)):
            if not finite[i]:
                results.append(None)
                continue
            v, a = np.clip(va[i], -1.0, 1.0)
            results.append(
                AffectEstimate(
                    class_names=self.class_names,
                    probabilities=probs[i].astype(np.float32),
                    valence=float(v),
                    arousal=float(a),
                    va_derived=self.va_derived,
                    frames_used=int(frames_used[i]),
                    model_id=self.model_id,
                )
            )
        rejected = int(np.count_nonzero(~finite))
        if rejected:
            self.rejected_outputs += rejected
            now = time.monotonic()
            if now - self._last_reject_log >= REJECT_LOG_PERIOD_S:
                self._last_reject_log = now
                LOG.warning(
                    "model %s returned non-finite values for %d face(s) (%d in total); their estimates were "
                    "dropped. A model that does this often is broken: re-export or retrain it",
                    self.model_id,
                    rejected,
                    self.rejected_outputs,
                )
        return results


class FrameAffectModel(AffectModel):
    """A frame graph: each face's estimate comes from its current crop alone.

    Args:
        frame: a loaded ``frame`` graph.
        flip_average: also run the mirrored crops and average the probabilities and
            valence/arousal.
        max_batch: see :class:`AffectModel`.
    """

    kind = "frame"

    def __init__(self, frame: InferenceSession, flip_average: bool = False, max_batch: int = 8) -> None:
        super().__init__(frame, frame, flip_average, max_batch)

    def estimate(self, track_ids: Sequence[str], crops: np.ndarray) -> List[Optional[AffectEstimate]]:
        return self.predict_frames(crops)

    def estimate_stills(self, crops: np.ndarray) -> List[Optional[AffectEstimate]]:
        return self.predict_frames(crops)

    def predict_frames(self, crops: np.ndarray) -> List[Optional[AffectEstimate]]:
        """Estimates for ``(N, S, S, C)`` uint8 crops (one per crop)."""
        x = self.preprocess(crops)
        n = len(x)
        if self.flip_average:
            out = self._run(self._input, np.concatenate([x, flip_horizontal(x)]))
            probs = self.probabilities(out["logits"])
            probs = (probs[:n] + probs[n:]) / 2
            va = out.get("valence_arousal")
            va = None if va is None else (va[:n].astype(np.float64) + va[n:]) / 2
        else:
            out = self._run(self._input, x)
            probs = self.probabilities(out["logits"])
            va = out.get("valence_arousal")
        return self._estimates(probs, va, np.ones(n, dtype=np.int64))


class TemporalAffectModel(AffectModel):
    """An encoder and a sequence head of one export, with the per-track feature buffers.

    :meth:`estimate` encodes only the crops the buffers will keep (one encoder batch),
    pushes the features into each track's ring buffer, and runs the sequence head on every
    given track's last T features (one batch): each crop is encoded exactly once, however
    long the sequences.

    Args:
        encoder, sequence: a loaded ``encoder`` and ``sequence`` graph of one export.
        flip_average: also encode the mirrored crops and average the features.
        max_batch: see :class:`AffectModel`.
        stride: keep every ``stride``-th crop of a track (``sequence.stride``).
        max_tracks: the most tracks buffered at once (``tracker.max_tracks``); the
            buffers are allocated now, for that many.

    Raises:
        ModelContractError: the two graphs do not come from the same export (see also
            :class:`AffectModel`).
    """

    kind = "temporal"

    def __init__(
        self,
        encoder: InferenceSession,
        sequence: InferenceSession,
        flip_average: bool = False,
        max_batch: int = 8,
        stride: int = 1,
        max_tracks: int = 64,
    ) -> None:
        _check_pair(encoder.metadata, sequence.metadata, str(encoder.path), str(sequence.path))
        super().__init__(encoder, sequence, flip_average, max_batch)
        #: the last ``sequence_length`` encoder features of each live track.
        self.buffers: SequenceBuffers = SequenceBuffers(
            self.sequence_length, stride, (self.feature_dim,), np.float32, capacity=max_tracks
        )
        #: calls of the encoder graph (one per batch), for diagnostics and tests.
        self.encoder_runs = 0

    def estimate(self, track_ids: Sequence[str], crops: np.ndarray) -> List[Optional[AffectEstimate]]:
        ids = list(track_ids)
        # Encode only the crops the buffers will keep (stride), all in one batch.
        new = [i for i, track_id in enumerate(ids) if self.buffers.wants(track_id)]
        if new:
            features = self.encode(crops[new])
            for row, i in enumerate(new):
                self.buffers.push(ids[i], features[row])
        sequences, lengths = self.buffers.batch(ids)
        return self.predict_sequences(sequences, lengths)

    def estimate_stills(self, crops: np.ndarray) -> List[Optional[AffectEstimate]]:
        """Each still as a face that stood still for T frames: its features repeated T
        times, ``frames_used`` 1 (the buffers pad a new track the same way)."""
        features = self.encode(crops)
        window = np.repeat(features[:, None, :], self.sequence_length, axis=1)
        return self.predict_sequences(window, np.ones(len(crops), dtype=np.int64))

    def estimate_clips(self, frames: np.ndarray) -> List[Optional[AffectEstimate]]:
        """One estimate per ``(N, T, S, S, C)`` uint8 clip (oldest frame first), no track state."""
        n, t = frames.shape[:2]
        features = self.encode(frames.reshape(n * t, *frames.shape[2:])).reshape(n, t, -1)
        return self.predict_sequences(features, np.full(n, t, dtype=np.int64))

    def end_tracks(self, track_ids: Iterable[str]) -> None:
        self.buffers.drop(track_ids)

    def reset(self) -> None:
        self.buffers.clear()

    def retune(self, flip_average: bool, stride: int, max_tracks: int) -> bool:
        if max_tracks > self.buffers.capacity:
            return False
        self.buffers.stride = int(stride)
        self.flip_average = bool(flip_average)
        return True

    def encode(self, crops: np.ndarray) -> np.ndarray:
        """``(N, S, S, C)`` uint8 crops -> ``(N, D)`` float32 encoder features."""
        x = self.preprocess(crops)
        self.encoder_runs += 1
        if self.flip_average:
            n = len(x)
            features = self._run(self._input, np.concatenate([x, flip_horizontal(x)]))["features"]
            return np.ascontiguousarray((features[:n] + features[n:]) / 2, dtype=np.float32)
        return self._run(self._input, x)["features"]

    def predict_sequences(
        self, features: np.ndarray, lengths: Union[Sequence[int], np.ndarray]
    ) -> List[Optional[AffectEstimate]]:
        """Estimates for ``(N, T, D)`` feature sequences (oldest first).

        ``lengths`` (N) is the number of real frames in each sequence (reported as
        ``frames_used``).
        """
        out = self._run(self._head, features)
        return self._estimates(self.probabilities(out["logits"]), out.get("valence_arousal"), np.asarray(lengths))

    def _describe_extra(self) -> str:
        return f", T={self.sequence_length}"


def _model_path(configured: str, default_name: str, int8: bool = False) -> Path:
    if configured:
        path = Path(configured).expanduser()
        if path.name == configured and not path.exists():
            try:  # a bare file name of a model shipped in the package (e.g. the 1.1 models)
                return bundled_model_path(configured)
            except AssetMissingError:
                pass
        return path
    if int8:
        stem, _, suffix = default_name.rpartition(".")
        try:
            return bundled_model_path(f"{stem}_int8.{suffix}")
        except AssetMissingError as exc:
            LOG.warning("%s; using the float model %s instead (slower on the CPU)", exc, default_name)
    try:
        return bundled_model_path(default_name)
    except AssetMissingError as exc:
        raise AssetMissingError(
            f"{exc}. The bundled models are added by training (python -m training.export); until then run "
            "without affect estimation (model.kind: none, or `ros2-affect run ... --model-kind none`)"
        ) from None


def create_affect_model(
    config: ModelConfig, max_batch: int = 8, stride: int = 1, max_tracks: int = 64
) -> Optional[AffectModel]:
    """Load the model that ``config`` describes, through the configured backend.

    ``model.kind`` picks the class: a :class:`FrameAffectModel`, a
    :class:`TemporalAffectModel` (its buffers keep every ``stride``-th crop of up to
    ``max_tracks`` tracks), or ``None`` for ``kind: none``. Empty model paths mean the
    defaults bundled in ``ros2_affect/models``.

    Raises:
        AssetMissingError: a model file is missing (the message says how to run without one).
        ModelLoadError / ModelContractError: a file is not a valid contract model.
        BackendUnavailableError: neither the backend nor its fallback can run here.
    """
    config.validate()
    if config.kind == "none":
        return None
    backend = create_backend_with_fallback(
        config.backend,
        config.fallback_backend,
        config.device,
        config.threads,
        LOG,
        precision=config.engine_precision,
        engine_cache_dir=config.engine_cache_dir,
    )
    if config.precision == "fp16" and backend.name != "tensorrt":
        LOG.warning(
            "model.precision is fp16, but %s runs the model (fallback from %s): it runs the fp32 graphs",
            backend.name, config.backend,
        )
    int8 = config.bundled_int8(backend.name)
    if config.kind == "frame":
        frame = backend.load(_model_path(config.frame_model, DEFAULT_FRAME_MODEL, int8), "frame", max_batch)
        return FrameAffectModel(frame, flip_average=config.flip_average, max_batch=max_batch)
    encoder_path = _model_path(config.encoder_model, DEFAULT_ENCODER_MODEL, int8)
    sequence_path = _model_path(config.sequence_model, DEFAULT_SEQUENCE_MODEL)
    encoder = backend.load(encoder_path, "encoder", max_batch)
    sequence = backend.load(sequence_path, "sequence", max_batch)
    return TemporalAffectModel(
        encoder, sequence, flip_average=config.flip_average, max_batch=max_batch, stride=stride, max_tracks=max_tracks
    )
