"""TensorRT inference backend (Jetson / NVIDIA GPUs): engine building, caching and execution.

Nothing here imports TensorRT or a CUDA library at module import time, so the package and
its tests import everywhere; :meth:`TensorRTBackend.is_available` says why it cannot run.

Supported: TensorRT 8.6 (JetPack 6.0) and 10.x (JetPack 6.1/6.2 ship 10.3). Both have
the name-based tensor API used here (``num_io_tensors``/``get_tensor_name``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``, all since 8.5).
TensorRT 11 removed the weakly typed precision flags (``BuilderFlag.FP16``/``INT8``) and
the INT8 calibrators: there, only ``fp32`` builds from our FP32 ONNX files (see
docs/tensorrt.md). API references (NVIDIA TensorRT Python API):

- build: https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
  (``create_network``, ``create_optimization_profile``, ``build_serialized_network``),
  .../infer/Core/BuilderConfig.html (``set_memory_pool_limit``, ``set_flag``,
  ``add_optimization_profile``, ``int8_calibrator``, ``set_calibration_profile``),
  .../parsers/Onnx/pyOnnx.html (``OnnxParser.parse``, ``num_errors``, ``get_error``),
  .../infer/Int8/EntropyCalibrator2.html;
- run: .../infer/Core/Runtime.html (``deserialize_cuda_engine``), .../infer/Core/Engine.html
  (``get_tensor_mode``/``shape``/``dtype``, ``get_tensor_profile_shape``),
  .../infer/Core/ExecutionContext.html (``set_input_shape``, ``set_tensor_address``,
  ``execute_async_v3``); the buffer handling follows NVIDIA's
  ``samples/python/common_runtime.py``.

Device memory comes from ``cuda-python`` (``cuda.bindings.runtime`` / ``cuda.cudart``)
when installed, else from torch CUDA tensors; one of them is needed (JetPack:
``pip install cuda-python``). Only GPU 0 is used.

**This path is written to NVIDIA's documented API and was not run on a GPU in this
repository's CI** (no GPU, no TensorRT there); ``tests/backends/test_tensorrt_backend.py``
has a GPU round-trip test that runs where TensorRT is installed.
"""

from __future__ import annotations

import ctypes
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ros2_affect.backends import BACKENDS
from ros2_affect.backends.base import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    InferenceBackend,
    InferenceSession,
    ModelMetadata,
    check_io_names,
    check_role,
    read_onnx_metadata,
)
from ros2_affect.backends.engine_cache import (
    ENGINE_SUFFIXES,
    PRECISIONS,
    EngineCache,
    EngineKey,
    EngineSidecar,
    _atomic_write,
    calibration_path,
    make_key,
    read_sidecar,
    write_sidecar,
)
from ros2_affect.backends.preprocess import to_model_input
from ros2_affect.errors import (
    AssetMissingError,
    BackendUnavailableError,
    ConfigError,
    ModelContractError,
    ModelLoadError,
)

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MB = 1024
MODEL_PATH_HINT = "check model.frame_model / model.encoder_model / model.sequence_model"
#: Image files used for INT8 calibration.
CALIBRATION_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm")
DEFAULT_CALIBRATION_IMAGES = 512
TRT_INSTALL_HINT = (
    "on a Jetson it comes with JetPack (python3-libnvinfer; in a venv use --system-site-packages); "
    "on x86 `pip install tensorrt` from NVIDIA"
)


# -- pure helpers (no TensorRT needed; tested everywhere) ----------------------------------------


def opt_batch(max_batch: int) -> int:
    """The batch size TensorRT tunes kernels for: ``min(4, max_batch)``."""
    return min(4, max_batch)


def input_shape(meta: ModelMetadata, batch: int) -> Tuple[int, ...]:
    """Shape of the graph's input for ``batch`` faces: ``[N, C, S, S]`` or ``[N, T, D]``."""
    if meta.role == "sequence":
        return (batch, meta.sequence_length, meta.feature_dim)
    return (batch, meta.channels, meta.input_size, meta.input_size)


def output_shapes(meta: ModelMetadata) -> Dict[str, Tuple[int, ...]]:
    """Expected output shapes, ``-1`` for the face axis."""
    if meta.role == "encoder":
        return {"features": (-1, meta.feature_dim)}
    return {"logits": (-1, len(meta.class_names)), "valence_arousal": (-1, 2)}


@dataclass(frozen=True)
class TensorInfo:
    """One I/O tensor of an engine, as TensorRT reports it (shape ``-1`` = dynamic)."""

    name: str
    is_input: bool
    shape: Tuple[int, ...]
    dtype: str  #: numpy dtype name, e.g. "float32"
    profile_max: Tuple[int, ...] = ()  #: inputs: the optimisation profile's max shape


def check_engine_io(io: Sequence[TensorInfo], meta: ModelMetadata, max_batch: int, source: str) -> None:
    """Check an engine's I/O tensors against the model metadata (names, shapes, dtypes, batch).

    Raises:
        ModelContractError: naming the tensor, the engine's value and the expected one.
    """
    inputs = [t for t in io if t.is_input]
    outputs = [t for t in io if not t.is_input]
    check_io_names([t.name for t in inputs], [t.name for t in outputs], meta.role, source)
    rebuild = "rebuild the engine from the model's ONNX file with `ros2-affect build-engine`"
    want_in = input_shape(meta, -1)
    tensor = inputs[0]
    if len(tensor.shape) != len(want_in) or any(w != -1 and g != w for g, w in zip(tensor.shape, want_in, strict=True)):
        raise ModelContractError(
            f"{source}: input {tensor.name!r} has shape {list(tensor.shape)}, the metadata says {list(want_in)} "
            f"(-1: faces); the engine was built from another model than its sidecar describes; {rebuild}"
        )
    if tensor.shape[0] != -1:
        raise ModelContractError(
            f"{source}: input {tensor.name!r} has a fixed batch of {tensor.shape[0]}; engines need a dynamic face axis "
            f"(trtexec --minShapes/--optShapes/--maxShapes, see docs/tensorrt.md); {rebuild}"
        )
    if tensor.profile_max and tensor.profile_max[0] < max_batch:
        raise ModelContractError(
            f"{source}: the engine accepts at most {tensor.profile_max[0]} faces per batch, {max_batch} were "
            f"configured (detector.max_faces); rebuild it with `ros2-affect build-engine --max-faces {max_batch}` "
            "or lower max_faces"
        )
    wanted_out = output_shapes(meta)
    for out in outputs:
        want = wanted_out.get(out.name)
        if want is None:
            continue
        if len(out.shape) != len(want) or any(w != -1 and g != w for g, w in zip(out.shape, want, strict=True)):
            raise ModelContractError(
                f"{source}: output {out.name!r} has shape {list(out.shape)}, expected {list(want)} from the metadata "
                f"({len(meta.class_names)} classes, feature_dim {meta.feature_dim}); {rebuild}"
            )
    for t in io:
        if t.dtype != "float32":
            raise ModelContractError(
                f"{source}: tensor {t.name!r} is {t.dtype}; engine inputs and outputs must stay float32 "
                "(do not pass --inputIOFormats/--outputIOFormats to trtexec)"
            )


def shape_spec(meta: ModelMetadata, batch: int) -> str:
    """trtexec shape spec, e.g. ``image:4x1x48x48``."""
    return f"{INPUT_NAMES[meta.role]}:" + "x".join(str(d) for d in input_shape(meta, batch))


def trtexec_command(
    onnx_path: Union[str, Path],
    engine_path: Union[str, Path],
    meta: ModelMetadata,
    precision: str = "fp16",
    max_batch: int = 8,
    calibration_cache: Union[str, Path, None] = None,
    workspace_mb: Optional[int] = None,
) -> List[str]:
    """The ``trtexec`` command line that builds the same engine as :func:`build_engine`.

    trtexec cannot calibrate from images: for ``int8`` pass the calibration cache that
    ``ros2-affect build-engine --precision int8 --calib DIR`` wrote (without one, trtexec
    uses placeholder scales and the engine's accuracy is meaningless).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not accepted; choose one of {', '.join(PRECISIONS)}")
    cmd = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={shape_spec(meta, 1)}",
        f"--optShapes={shape_spec(meta, opt_batch(max_batch))}",
        f"--maxShapes={shape_spec(meta, max_batch)}",
    ]
    if precision == "int8" and meta.role == "sequence":
        precision = "fp16"  # see build_engine: only image graphs are calibrated
    if precision in ("fp16", "int8"):
        cmd.append("--fp16")
    if precision == "int8":
        cmd.append("--int8")
        if calibration_cache is not None:
            cmd.append(f"--calib={calibration_cache}")
    if workspace_mb is not None:
        cmd.append(f"--memPoolSize=workspace:{int(workspace_mb)}")
    return cmd


def format_command(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def load_calibration_images(
    directory: Union[str, Path], meta: ModelMetadata, max_images: int = DEFAULT_CALIBRATION_IMAGES
) -> np.ndarray:
    """Preprocessed calibration inputs from a folder of face crops.

    The images should be aligned face crops like the ones the pipeline feeds the model
    (e.g. FER2013-style 48x48 crops, or crops saved from ``ros2-affect run``); they are
    converted to the model's channels, resized to its input size and normalised with
    :func:`ros2_affect.backends.preprocess.to_model_input` and the model's mean/std.

    Returns:
        ``[N, C, S, S]`` float32, N = min(number of images, ``max_images``), in sorted
        file order (deterministic).

    Raises:
        ConfigError: the folder is missing or holds no readable image.
    """
    import cv2

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"calibration folder {directory} does not exist; pass --calib DIR with face crops")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in CALIBRATION_SUFFIXES and p.is_file())
    size = meta.input_size
    crops: List[np.ndarray] = []
    for path in files:
        if len(crops) >= max_images:
            break
        flag = cv2.IMREAD_GRAYSCALE if meta.channels == 1 else cv2.IMREAD_COLOR
        image = cv2.imread(str(path), flag)
        if image is None:
            log.warning("skipping unreadable calibration image %s", path)
            continue
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        crops.append(image[:, :, None] if meta.channels == 1 else image[:, :, ::-1])
    if not crops:
        raise ConfigError(
            f"calibration folder {directory} holds no readable image ({', '.join(CALIBRATION_SUFFIXES)}); "
            "INT8 calibration needs a few hundred face crops"
        )
    return to_model_input(np.stack(crops), meta.mean, meta.std)


# -- TensorRT / CUDA access (lazy) ----------------------------------------------------------------


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(f"tensorrt is not installed: {exc}; {TRT_INSTALL_HINT}") from None
    return trt


def _trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


class _Cuda:
    """The few CUDA runtime calls the backend needs, from cuda-python or torch."""

    def __init__(self) -> None:
        self.kind = ""
        self._cudart: Any = None
        self._torch: Any = None
        try:
            try:
                from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
            except ImportError:
                from cuda import cudart  # older cuda-python
            self._cudart, self.kind = cudart, "cuda-python"
        except ImportError:
            try:
                import torch
            except ImportError:
                raise BackendUnavailableError(
                    "no CUDA library for device memory: install cuda-python (`pip install cuda-python` matching "
                    "your CUDA major version) or a CUDA build of torch"
                ) from None
            if not torch.cuda.is_available():
                raise BackendUnavailableError("no CUDA GPU: torch.cuda.is_available() is False") from None
            self._torch, self.kind = torch, "torch"
        if self._cudart is not None:
            count = self._check(self._cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
            if count < 1:
                raise BackendUnavailableError("no CUDA GPU: cudaGetDeviceCount() returned 0")

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        code: Any = getattr(err, "value", err)
        if int(code) != 0:  # cudaError_t; 0 is cudaSuccess
            raise BackendUnavailableError(f"no CUDA GPU usable: {what} returned {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device(self) -> Tuple[str, str]:
        """(GPU 0 name, compute capability "major.minor")."""
        if self._torch is not None:
            major, minor = self._torch.cuda.get_device_capability(0)
            return str(self._torch.cuda.get_device_name(0)), f"{major}.{minor}"
        prop = self._check(self._cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
        return name, f"{prop.major}.{prop.minor}"

    def stream(self) -> Any:
        if self._torch is not None:
            return self._torch.cuda.Stream()
        return self._check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")

    @staticmethod
    def stream_handle(stream: Any) -> int:
        return int(stream.cuda_stream) if hasattr(stream, "cuda_stream") else int(stream)

    def buffer(self, shape: Tuple[int, ...]) -> _Buffer:
        return _Buffer(self, shape)

    def synchronize(self, stream: Any) -> None:
        if self._torch is not None:
            stream.synchronize()
        else:
            self._check(self._cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def destroy_stream(self, stream: Any) -> None:
        if self._cudart is not None and stream is not None:
            self._cudart.cudaStreamDestroy(stream)


class _Buffer:
    """A float32 device buffer with a pinned host mirror of the same (max) shape."""

    def __init__(self, cuda: _Cuda, shape: Tuple[int, ...]) -> None:
        self._cuda = cuda
        self.shape = shape
        self.nbytes = int(np.prod(shape)) * 4
        self._host_ptr: Any = None
        self._device_ptr: Any = None
        self._tensors: Tuple[Any, ...] = ()
        if cuda.kind == "torch":
            torch = cuda._torch
            host_t = torch.empty(shape, dtype=torch.float32, pin_memory=True)
            device_t = torch.empty(shape, dtype=torch.float32, device="cuda:0")
            self._tensors = (host_t, device_t)
            self.host = host_t.numpy()
            self.device_ptr = int(device_t.data_ptr())
        else:
            cudart = cuda._cudart
            self._host_ptr = cuda._check(cudart.cudaMallocHost(self.nbytes), "cudaMallocHost")
            self._device_ptr = cuda._check(cudart.cudaMalloc(self.nbytes), "cudaMalloc")
            flat = np.ctypeslib.as_array(
                ctypes.cast(int(self._host_ptr), ctypes.POINTER(ctypes.c_float)), (int(np.prod(shape)),)
            )
            self.host = flat.reshape(shape)
            self.device_ptr = int(self._device_ptr)

    def upload(self, rows: int, stream: Any) -> None:
        nbytes = self.nbytes // self.shape[0] * rows
        if self._tensors:
            host_t, device_t = self._tensors
            with self._cuda._torch.cuda.stream(stream):
                device_t[:rows].copy_(host_t[:rows], non_blocking=True)
        else:
            cudart = self._cuda._cudart
            self._cuda._check(
                cudart.cudaMemcpyAsync(self.device_ptr, int(self._host_ptr), nbytes,
                                       cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                "cudaMemcpyAsync",
            )

    def download(self, rows: int, stream: Any) -> None:
        nbytes = self.nbytes // self.shape[0] * rows
        if self._tensors:
            host_t, device_t = self._tensors
            with self._cuda._torch.cuda.stream(stream):
                host_t[:rows].copy_(device_t[:rows], non_blocking=True)
        else:
            cudart = self._cuda._cudart
            self._cuda._check(
                cudart.cudaMemcpyAsync(int(self._host_ptr), self.device_ptr, nbytes,
                                       cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                "cudaMemcpyAsync",
            )

    def free(self) -> None:
        self._tensors = ()
        if self._cuda._cudart is not None:
            if self._device_ptr is not None:
                self._cuda._cudart.cudaFree(self._device_ptr)
                self._device_ptr = None
            if self._host_ptr is not None:
                self._cuda._cudart.cudaFreeHost(self._host_ptr)
                self._host_ptr = None


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to Python logging and remembers the errors
    (so a failed build or deserialisation can say why)."""

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def platform_info() -> Tuple[str, str, str]:
    """(TensorRT version, GPU 0 name, compute capability).

    Raises:
        BackendUnavailableError: TensorRT or a CUDA GPU is missing.
    """
    trt = _import_tensorrt()
    name, capability = _Cuda().device()
    return str(trt.__version__), name, capability


def _make_calibrator(trt: Any, cuda: _Cuda, batches: Optional[np.ndarray], batch: int, cache_path: Path) -> Any:
    """An IInt8EntropyCalibrator2 feeding ``batches`` ([N, C, S, S] float32) ``batch`` at a
    time from one device buffer, reading/writing the calibration cache at ``cache_path``
    (a present cache makes TensorRT skip the images entirely)."""

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.buffer = cuda.buffer((batch,) + tuple(batches.shape[1:])) if batches is not None else None

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            # Only full batches: the calibration profile fixes the shape to `batch`.
            if self.buffer is None or batches is None or self.index + batch > len(batches):
                return None
            self.buffer.host[...] = batches[self.index : self.index + batch]
            stream = cuda.stream()
            self.buffer.upload(batch, stream)
            cuda.synchronize(stream)
            cuda.destroy_stream(stream)
            self.index += batch
            return [self.buffer.device_ptr]

        def read_calibration_cache(self) -> Optional[bytes]:
            # Explicit images always recalibrate (and overwrite the cache); else reuse it.
            if batches is None and cache_path.is_file():
                log.info("using INT8 calibration cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            _atomic_write(cache_path, bytes(cache))
            log.info("wrote INT8 calibration cache %s", cache_path)

    return _EntropyCalibrator()


def build_engine(
    onnx_path: Union[str, Path],
    engine_path: Union[str, Path, None] = None,
    precision: str = "fp16",
    max_batch: int = 8,
    calibration_images: Union[str, Path, None] = None,
    calibration_cache: Union[str, Path, None] = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    cache: Optional[EngineCache] = None,
) -> Path:
    """Build a TensorRT engine from a contract-following ONNX model.

    The engine has one optimisation profile over the face axis: min 1, opt
    ``min(4, max_batch)``, max ``max_batch``. The sidecar JSON (key + ONNX metadata) is
    written beside it.

    Args:
        engine_path: where to write it; None: into ``cache`` (or the default cache dir)
            under the key of this ONNX file, platform, precision and max_batch.
        precision: "fp32"; "fp16" (used when the GPU has fast FP16, else fp32 with a
            warning); "int8" (calibrated with IInt8EntropyCalibrator2 over
            ``calibration_images``, FP16 allowed for the layers that stay in float; the
            ``sequence`` head is not calibrated and builds as fp16).
        calibration_cache: INT8 scale cache: read when present (the images are then not
            needed), written after calibration. Default: ``<engine>.calib``.

    Raises:
        BackendUnavailableError: TensorRT or a CUDA GPU is missing, or this TensorRT
            version lacks the requested precision (TensorRT 11: fp32 only).
        ConfigError: bad precision/max_batch, int8 without images or cache.
        ModelLoadError / ModelContractError: the ONNX file cannot be parsed or built.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not accepted; choose one of {', '.join(PRECISIONS)}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= 64:
        raise ConfigError(f"max_batch = {max_batch!r}; expected an integer in [1, 64]")
    onnx_path = Path(onnx_path)
    meta = read_onnx_metadata(onnx_path)
    trt = _import_tensorrt()
    cuda = _Cuda()
    gpu_name, capability = cuda.device()
    key = make_key(onnx_path, str(trt.__version__), gpu_name, capability, precision, max_batch)
    if engine_path is None:
        engine_path = (cache or EngineCache()).path_for(key, onnx_path.stem)
    engine_path = Path(engine_path)
    effective = precision
    if precision == "int8" and meta.role == "sequence":
        log.warning("%s: the sequence head takes features, not images: building it in fp16 instead of int8", onnx_path)
        effective = "fp16"
    if effective != "fp32" and not hasattr(trt.BuilderFlag, "FP16"):
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__} has no {effective} builder flag (TensorRT 11 builds strongly typed networks "
            f"only); build with --precision fp32, or convert the ONNX file to FP16 with NVIDIA ModelOpt AutoCast and "
            f"build that with --precision fp32 (see docs/tensorrt.md)"
        )
    calib_path = Path(calibration_cache) if calibration_cache else calibration_path(engine_path)
    batches: Optional[np.ndarray] = None
    if effective == "int8":
        if calibration_images is not None:
            batches = load_calibration_images(calibration_images, meta)
            if len(batches) < opt_batch(max_batch):
                raise ConfigError(f"{calibration_images}: {len(batches)} calibration images; need at least "
                                  f"{opt_batch(max_batch)} (a few hundred recommended)")
        elif not calib_path.is_file():
            raise ConfigError(
                f"int8 needs calibration data: pass --calib DIR (face crops) or an existing calibration cache "
                f"(--calib-cache FILE; {calib_path} does not exist)"
            )

    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    # TensorRT 8.x needs the EXPLICIT_BATCH flag; 10.x is always explicit-batch (flag deprecated).
    flags = 0
    if _trt_major(trt) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelLoadError(
            f"TensorRT {trt.__version__} cannot parse {onnx_path}: "
            + "; ".join(errors or logger.errors or ["(no details)"])
            + "; re-export the model (opset supported by this TensorRT) or use backend onnxruntime"
        )
    in_names = [network.get_input(i).name for i in range(network.num_inputs)]
    out_names = [network.get_output(i).name for i in range(network.num_outputs)]
    check_io_names(in_names, out_names, meta.role, str(onnx_path))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    name = INPUT_NAMES[meta.role]
    profile = builder.create_optimization_profile()
    profile.set_shape(name, input_shape(meta, 1), input_shape(meta, opt_batch(max_batch)), input_shape(meta, max_batch))
    config.add_optimization_profile(profile)
    if effective in ("fp16", "int8"):
        # platform_has_fast_fp16 is deprecated since 10.5 but still answers; absent -> assume yes.
        if getattr(builder, "platform_has_fast_fp16", True):
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            log.warning("this GPU has no fast FP16; %s builds in fp32", onnx_path.name)
    if effective == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            log.warning("this GPU has no fast INT8; TensorRT may choose float kernels anyway")
        config.set_flag(trt.BuilderFlag.INT8)
        calib_batch = opt_batch(max_batch)
        # Kept in a local until the build is done: the config does not own the Python object.
        calibrator = _make_calibrator(trt, cuda, batches, calib_batch, calib_path)
        config.int8_calibrator = calibrator
        # Calibration with dynamic shapes runs at one fixed shape: the calibration profile's.
        calib_profile = builder.create_optimization_profile()
        fixed = input_shape(meta, calib_batch)
        calib_profile.set_shape(name, fixed, fixed, fixed)
        config.set_calibration_profile(calib_profile)

    log.info("building TensorRT %s engine for %s (max %d faces); this takes a while",
             precision, onnx_path.name, max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(
            f"TensorRT {trt.__version__} failed to build an engine from {onnx_path}: "
            + "; ".join(logger.errors or ["(see the log)"])
            + f"; try --precision fp32 or a larger --workspace-mb than {workspace_mb}"
        )
    props = meta.to_props()
    _atomic_write(engine_path, bytes(serialized))
    write_sidecar(engine_path, EngineSidecar(key, props, str(onnx_path.resolve())))
    if cache is not None and engine_path.parent == cache.directory:
        cache.prune(protect=engine_path)
    log.info("wrote %s (%.1f MB)", engine_path, engine_path.stat().st_size / 1e6)
    return engine_path


# -- runtime -------------------------------------------------------------------------------------


class TensorRTSession(InferenceSession):
    """One deserialised engine, its execution context and buffers for ``max_batch`` faces."""

    backend_name = "tensorrt"

    def __init__(self, path: Path, metadata: ModelMetadata, trt: Any, engine: Any, runtime: Any,
                 cuda: _Cuda, max_batch: int, logger: Any = None) -> None:
        super().__init__(path, metadata)
        # The runtime must outlive its engine, and the Python logger the runtime calls into.
        self._trt, self._engine, self._runtime, self._cuda, self._logger = trt, engine, runtime, cuda, logger
        self.max_batch = max_batch
        self._input_name = INPUT_NAMES[metadata.role]
        self._input_tail = input_shape(metadata, 1)[1:]
        self._context = engine.create_execution_context()
        if self._context is None:
            raise ModelLoadError(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = cuda.stream()
        self._buffers: Dict[str, _Buffer] = {}
        for name in _io_names(engine):
            if name == self._input_name:
                shape = (max_batch,) + self._input_tail
            else:
                shape = (max_batch,) + tuple(int(d) for d in engine.get_tensor_shape(name))[1:]
            self._buffers[name] = cuda.buffer(shape)
            # Buffers never move, so their addresses are bound once.
            self._context.set_tensor_address(name, self._buffers[name].device_ptr)
        self._outputs = [n for n in self._buffers if n != self._input_name and n in OUTPUT_NAMES[metadata.role]]

    def run(self, inputs: np.ndarray) -> Dict[str, np.ndarray]:
        if self._context is None:
            raise RuntimeError(f"{self.path}: session is closed")
        inputs = np.asarray(inputs)
        if inputs.ndim != len(self._input_tail) + 1 or inputs.shape[1:] != self._input_tail or inputs.shape[0] < 1:
            raise ValueError(
                f"{self.path.name}: input shape {list(inputs.shape)}; expected "
                f"[N, {', '.join(map(str, self._input_tail))}] with N >= 1"
            )
        chunks = [self._run_chunk(inputs[i : i + self.max_batch]) for i in range(0, len(inputs), self.max_batch)]
        return {name: np.concatenate([c[name] for c in chunks]) for name in self._outputs}

    def _run_chunk(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        n = len(batch)
        self._buffers[self._input_name].host[:n] = batch  # casts to float32
        self._buffers[self._input_name].upload(n, self._stream)
        if not self._context.set_input_shape(self._input_name, (n,) + self._input_tail):
            raise ValueError(f"{self.path.name}: TensorRT rejected input shape {(n,) + self._input_tail}")
        if not self._context.execute_async_v3(self._cuda.stream_handle(self._stream)):
            raise ModelLoadError(f"{self.path.name}: TensorRT execution failed (see the TensorRT log)")
        for name in self._outputs:
            self._buffers[name].download(n, self._stream)
        self._cuda.synchronize(self._stream)
        return {name: self._buffers[name].host[:n].copy() for name in self._outputs}

    def close(self) -> None:
        if self._context is None:
            return
        self._context = None
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers = {}
        self._cuda.destroy_stream(self._stream)
        self._stream = None
        self._engine = None
        self._runtime = None
        self._logger = None


def _io_names(engine: Any) -> List[str]:
    return [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]


def _engine_io(trt: Any, engine: Any) -> List[TensorInfo]:
    infos = []
    for name in _io_names(engine):
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        try:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        except TypeError:  # no numpy equivalent (bf16, fp8, ...)
            dtype = str(engine.get_tensor_dtype(name))
        profile_max: Tuple[int, ...] = ()
        if is_input:
            profile_max = tuple(int(d) for d in engine.get_tensor_profile_shape(name, 0)[2])
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        infos.append(TensorInfo(name, is_input, shape, dtype, profile_max))
    return infos


@BACKENDS.register("tensorrt")
class TensorRTBackend(InferenceBackend):
    """Runs models as TensorRT engines on GPU 0.

    ``load(path)`` accepts:

    - an ONNX model: its engine is looked up in the engine cache (key: ONNX hash,
      TensorRT version, GPU, precision, max_batch) and built on a miss (fp32/fp16 at
      first use, minutes on a Jetson; int8 only ahead of time with ``build-engine``);
    - a prebuilt engine (``.engine``/``.plan``/``.trt``) with its ``.json`` sidecar
      (``ros2-affect build-engine ... --metadata-only`` writes one for trtexec engines).
    """

    name = "tensorrt"

    def __init__(self, device: str = "cuda", threads: int = 1, precision: str = "fp16",
                 engine_cache_dir: str = "", workspace_mb: int = DEFAULT_WORKSPACE_MB) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"model.precision = {precision!r} is not accepted; choose one of {', '.join(PRECISIONS)}")
        if device != "cuda":
            log.info("the tensorrt backend always runs on the GPU (model.device = %r ignored)", device)
        self.precision = precision
        self.cache = EngineCache(engine_cache_dir or None)
        self.workspace_mb = workspace_mb

    @classmethod
    def is_available(cls) -> Tuple[bool, str]:
        try:
            trt = _import_tensorrt()
            _Cuda()
        except BackendUnavailableError as exc:
            return False, str(exc)
        except Exception as exc:  # a broken CUDA install must not crash configuration
            return False, f"no CUDA GPU usable: {type(exc).__name__}: {exc}"
        if _trt_major(trt) < 8 or (_trt_major(trt) == 8 and not hasattr(trt.IExecutionContext, "execute_async_v3")):
            return False, f"tensorrt {trt.__version__} is too old; 8.6 or newer is needed (JetPack 6)"
        return True, ""

    def load(self, path: Path, expected_role: str, max_batch: int) -> InferenceSession:
        path = Path(path)
        if not path.is_file():
            raise AssetMissingError(f"model file {path} does not exist; {MODEL_PATH_HINT}")
        trt = _import_tensorrt()
        cuda = _Cuda()
        gpu_name, capability = cuda.device()
        if path.suffix.lower() in ENGINE_SUFFIXES:
            return self._load_engine(trt, cuda, path, expected_role, max_batch, from_cache=False)
        meta = read_onnx_metadata(path)
        check_role(meta, expected_role, str(path))
        key = make_key(path, str(trt.__version__), gpu_name, capability, self.precision, max_batch)
        engine_path = self.cache.lookup(key, path.stem)
        if engine_path is None:
            engine_path = self._build_into_cache(path, key, max_batch)
        try:
            return self._load_engine(trt, cuda, engine_path, expected_role, max_batch, from_cache=True)
        except _StaleEngine as exc:
            log.warning("cached engine %s is unusable (%s); rebuilding it", engine_path, exc)
            self.cache.remove(engine_path, keep_calibration=True)
            engine_path = self._build_into_cache(path, key, max_batch)
            return self._load_engine(trt, cuda, engine_path, expected_role, max_batch, from_cache=False)

    def _build_into_cache(self, onnx_path: Path, key: EngineKey, max_batch: int) -> Path:
        if self.precision == "int8" and read_onnx_metadata(onnx_path).role != "sequence":
            target = self.cache.path_for(key, onnx_path.stem)
            if not calibration_path(target).is_file():
                raise ModelLoadError(
                    f"no int8 engine for {onnx_path} in {self.cache.directory}; int8 engines need calibration images, "
                    f"so build it ahead: `ros2-affect build-engine {onnx_path} --precision int8 --calib DIR "
                    f"--max-faces {max_batch} --cache-dir {self.cache.directory}` (or set model.precision: fp16)"
                )
        return build_engine(onnx_path, None, self.precision, max_batch, workspace_mb=self.workspace_mb,
                            cache=self.cache)

    def _load_engine(self, trt: Any, cuda: _Cuda, engine_path: Path, expected_role: str, max_batch: int,
                     from_cache: bool) -> TensorRTSession:
        source = str(engine_path)
        sidecar = read_sidecar(engine_path)
        meta = ModelMetadata.from_props(sidecar.metadata_props, source)
        check_role(meta, expected_role, source)
        fix = (f"delete {engine_path} (and its .json) to rebuild it, or rebuild with `ros2-affect build-engine`")
        if sidecar.key.platform_known:
            gpu_name, capability = cuda.device()
            here = (str(trt.__version__), gpu_name, capability)
            built = (sidecar.key.trt_version, sidecar.key.gpu_name, sidecar.key.compute_capability)
            if here != built:
                message = (f"{source}: engine built with TensorRT {built[0]} for {built[1]} (sm {built[2]}), "
                           f"this is TensorRT {here[0]} on {here[1]} (sm {here[2]}); {fix}")
                if from_cache:
                    raise _StaleEngine(message)
                raise ModelLoadError(message)
        logger = _make_logger(trt)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            details = "; ".join(logger.errors) or "no details"
            message = (f"{source}: TensorRT {trt.__version__} cannot deserialize this engine ({details}); engines only "
                       f"load with the TensorRT version and GPU they were built with; {fix}")
            if from_cache:
                raise _StaleEngine(message)
            raise ModelLoadError(message)
        check_engine_io(_engine_io(trt, engine), meta, max_batch, source)
        session = TensorRTSession(engine_path, meta, trt, engine, runtime, cuda, max_batch, logger)
        log.info("loaded TensorRT engine %s (%s, max %d faces, memory via %s)", engine_path.name, meta.role,
                 max_batch, cuda.kind)
        return session


class _StaleEngine(ModelLoadError):
    """A cached engine that does not load here (rebuilt automatically)."""
