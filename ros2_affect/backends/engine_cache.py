"""A cache of TensorRT engines built from the package's ONNX models.

A TensorRT engine is only valid for the TensorRT version and the GPU it was built on, and
it encodes the precision and the largest batch it accepts. So an engine is stored under a
key of everything it depends on:

    sha256(ONNX file) + TensorRT version + GPU name + compute capability + precision + max_batch

and a changed field (a re-exported model, a JetPack upgrade, another ``max_faces``) simply
misses the cache and a new engine is built. Every engine ``X.engine`` has a JSON sidecar
``X.engine.json`` holding the key fields and the ``ros2_affect.*`` metadata of the ONNX
file it was built from (an engine carries no metadata of its own, and the runtime needs
class names, input size, mean/std, ... to use it).

The cache directory is ``model.engine_cache_dir`` or, when that is empty,
``$XDG_CACHE_HOME/ros2_affect/engines`` (``~/.cache/ros2_affect/engines``). Only the
``keep`` most recently used engines are kept; older ones are deleted when a new one is
stored. This module is pure Python (no TensorRT) so it is tested everywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from ros2_affect.assets import sha256_of
from ros2_affect.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

#: Written into every sidecar; a sidecar of another format is not trusted.
SIDECAR_FORMAT = "ros2_affect-engine-1"
#: Engine files the runtime accepts as prebuilt engines.
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: Engines kept in a cache directory (3 graphs x a few precisions / batch sizes).
DEFAULT_KEEP = 12
PRECISIONS = ("fp32", "fp16", "int8")


def default_cache_dir(configured: str = "") -> Path:
    """``configured`` when set, else ``$XDG_CACHE_HOME/ros2_affect/engines``."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ros2_affect" / "engines"


def sidecar_path(engine_path: Union[str, Path]) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def calibration_path(engine_path: Union[str, Path]) -> Path:
    """``model.engine`` -> ``model.engine.calib`` (default INT8 calibration cache)."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".calib")


@dataclass(frozen=True)
class EngineKey:
    """Everything a built engine depends on.

    ``trt_version``, ``gpu_name`` and ``compute_capability`` are empty for an engine whose
    sidecar was written without TensorRT (``build-engine --metadata-only`` next to an
    engine built by ``trtexec``): such an engine is trusted as it is.
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    max_batch: int

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"engine precision {self.precision!r} is not accepted; choose one of {', '.join(PRECISIONS)}"
            )
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or not 1 <= self.max_batch <= 64:
            raise ConfigError(
                f"engine max_batch = {self.max_batch!r}; expected an integer in [1, 64] (detector.max_faces)"
            )

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the key fields, stable across Python versions."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def platform_known(self) -> bool:
        return bool(self.trt_version and self.gpu_name)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str) -> EngineKey:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in values]
        if missing:
            raise ModelLoadError(f"{source}: engine sidecar lacks key fields {missing}; rebuild the engine with "
                                 "`ros2-affect build-engine`")
        try:
            return cls(
                onnx_sha256=str(values["onnx_sha256"]),
                trt_version=str(values["trt_version"]),
                gpu_name=str(values["gpu_name"]),
                compute_capability=str(values["compute_capability"]),
                precision=str(values["precision"]),
                max_batch=int(values["max_batch"]),
            )
        except (TypeError, ValueError, ConfigError) as exc:
            raise ModelLoadError(f"{source}: engine sidecar has an invalid key: {exc}") from None

    def mismatches(self, other: EngineKey) -> List[str]:
        """Human-readable ``field: ours != theirs`` for every differing field."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


def make_key(
    onnx_path: Union[str, Path],
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    precision: str,
    max_batch: int,
) -> EngineKey:
    """The key of an engine for ``onnx_path`` (hashes the file)."""
    return EngineKey(sha256_of(Path(onnx_path)), trt_version, gpu_name, compute_capability, precision, max_batch)


@dataclass(frozen=True)
class EngineSidecar:
    """The JSON file beside an engine."""

    key: EngineKey
    metadata_props: Dict[str, str]  #: the ONNX file's ``ros2_affect.*`` metadata_props
    onnx_path: str = ""  #: where the ONNX file was when the engine was built (informational)
    created_unix: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": SIDECAR_FORMAT,
                "key": self.key.to_dict(),
                "onnx_path": self.onnx_path,
                "created_unix": self.created_unix,
                "metadata_props": dict(sorted(self.metadata_props.items())),
            },
            indent=2,
        )


def write_sidecar(engine_path: Union[str, Path], sidecar: EngineSidecar) -> Path:
    """Write ``<engine>.json`` atomically; returns its path."""
    path = sidecar_path(engine_path)
    _atomic_write(path, sidecar.to_json().encode())
    return path


def read_sidecar(engine_path: Union[str, Path]) -> EngineSidecar:
    """Read the sidecar of ``engine_path``.

    Raises:
        ModelLoadError: it is missing or malformed; the message says how to (re)create it.
    """
    path = sidecar_path(engine_path)
    hint = (
        f"write it with `ros2-affect build-engine MODEL.onnx --out {engine_path} --metadata-only` "
        "(MODEL.onnx being the file the engine was built from), or rebuild with `ros2-affect build-engine`"
    )
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{engine_path}: no metadata sidecar {path.name} beside the engine; {hint}") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable engine sidecar ({exc}); {hint}") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ModelLoadError(f"{path}: sidecar format {found!r}, expected {SIDECAR_FORMAT!r}; {hint}")
    props = data.get("metadata_props")
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise ModelLoadError(f"{path}: sidecar metadata_props must be a mapping of strings; {hint}")
    key = data.get("key")
    if not isinstance(key, dict):
        raise ModelLoadError(f"{path}: sidecar has no key mapping; {hint}")
    try:
        created = float(data.get("created_unix", 0.0))
    except (TypeError, ValueError):
        created = 0.0
    return EngineSidecar(EngineKey.from_dict(key, str(path)), dict(props), str(data.get("onnx_path", "")), created)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:64] or "model"


def engine_path_for(
    onnx_path: Union[str, Path],
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    precision: str,
    max_batch: int,
    cache_dir: Union[str, Path, None] = None,
) -> Path:
    """Where the cache keeps the engine of ``onnx_path`` for this platform and settings."""
    key = make_key(onnx_path, trt_version, gpu_name, compute_capability, precision, max_batch)
    return EngineCache(cache_dir).path_for(key, Path(onnx_path).stem)


class EngineCache:
    """A directory of ``<stem>-<precision>-b<max_batch>-<digest16>.engine`` files + sidecars."""

    def __init__(self, cache_dir: Union[str, Path, None] = None, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ConfigError(f"engine cache keep = {keep}; expected at least 1")
        self.directory = default_cache_dir(str(cache_dir) if cache_dir else "")
        self.keep = keep

    def path_for(self, key: EngineKey, onnx_stem: str) -> Path:
        name = f"{_safe_stem(onnx_stem)}-{key.precision}-b{key.max_batch}-{key.digest[:16]}.engine"
        return self.directory / name

    def lookup(self, key: EngineKey, onnx_stem: str) -> Optional[Path]:
        """The cached engine for ``key``, or None (absent, no sidecar, or a sidecar of another key).

        A hit is marked as used (mtime), which is what pruning orders by.
        """
        path = self.path_for(key, onnx_stem)
        if not path.is_file():
            return None
        try:
            sidecar = read_sidecar(path)
        except ModelLoadError as exc:
            log.warning("ignoring cached engine %s: %s", path, exc)
            return None
        if sidecar.key != key:
            log.info("cached engine %s was built for another key (%s); rebuilding",
                     path, "; ".join(sidecar.key.mismatches(key)))
            return None
        now = time.time()
        os.utime(path, (now, now))
        return path

    def store(self, engine_bytes: bytes, key: EngineKey, onnx_stem: str, metadata_props: Mapping[str, str],
              onnx_path: str = "") -> Path:
        """Write an engine and its sidecar, then prune old entries; returns the engine path."""
        path = self.path_for(key, onnx_stem)
        _atomic_write(path, bytes(engine_bytes))
        write_sidecar(path, EngineSidecar(key, dict(metadata_props), onnx_path))
        self.prune(protect=path)
        return path

    def remove(self, engine_path: Union[str, Path], keep_calibration: bool = False) -> None:
        """Delete an engine, its sidecar and (unless ``keep_calibration``) its INT8
        calibration cache ``<engine>.calib`` (missing files are fine)."""
        engine_path = Path(engine_path)
        engine_path.unlink(missing_ok=True)
        sidecar_path(engine_path).unlink(missing_ok=True)
        if not keep_calibration:
            calibration_path(engine_path).unlink(missing_ok=True)

    def entries(self) -> List[Path]:
        """Engine files in the cache, most recently used first."""
        if not self.directory.is_dir():
            return []
        engines = [p for p in self.directory.iterdir() if p.suffix == ".engine" and p.is_file()]
        return sorted(engines, key=lambda p: p.stat().st_mtime, reverse=True)

    def prune(self, protect: Optional[Path] = None) -> List[Path]:
        """Delete all but the ``keep`` most recently used engines (never ``protect``), and
        sidecars whose engine is gone. Returns the deleted engine paths."""
        entries = self.entries()
        keep = [p for p in entries if p == protect]
        keep += [p for p in entries if p != protect][: self.keep - len(keep)]
        removed = [p for p in entries if p not in keep]
        for path in removed:
            self.remove(path)
        for orphan in self.directory.glob("*.engine.json") if self.directory.is_dir() else []:
            if not orphan.with_name(orphan.name[: -len(".json")]).exists():
                orphan.unlink(missing_ok=True)
        if removed:
            log.info("pruned %d old TensorRT engine(s) from %s", len(removed), self.directory)
        return removed
