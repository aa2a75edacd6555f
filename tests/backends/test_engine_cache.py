"""The TensorRT engine cache: keys, paths, sidecars, lookup and pruning (pure Python)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from ros2_affect.backends.engine_cache import (
    EngineCache,
    EngineKey,
    EngineSidecar,
    calibration_path,
    default_cache_dir,
    engine_path_for,
    make_key,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from ros2_affect.errors import ConfigError, ModelLoadError
from tests.backends.affect_graphs import graph_metadata, write_graph

PLATFORM = ("10.3.0", "Orin", "8.7")


@pytest.fixture()
def onnx_path(tmp_path: Path) -> Path:
    return write_graph(tmp_path / "frame.onnx", "frame")


def _key(onnx_path: Path, precision: str = "fp16", max_batch: int = 8) -> EngineKey:
    return make_key(onnx_path, *PLATFORM, precision, max_batch)


def test_key_hashes_the_onnx_file(onnx_path: Path) -> None:
    import hashlib

    assert _key(onnx_path).onnx_sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "field, value",
    [
        ("onnx_sha256", "0" * 64),
        ("trt_version", "8.6.2"),
        ("gpu_name", "NVIDIA GeForce RTX 3060"),
        ("compute_capability", "8.6"),
        ("precision", "fp32"),
        ("max_batch", 4),
    ],
)
def test_every_key_field_changes_the_digest_and_the_path(onnx_path: Path, tmp_path: Path, field: str,
                                                         value: object) -> None:
    key = _key(onnx_path)
    other = dataclasses.replace(key, **{field: value})
    cache = EngineCache(tmp_path / "cache")
    assert other.digest != key.digest
    assert cache.path_for(other, "frame") != cache.path_for(key, "frame")
    assert key.mismatches(other) == [f"{field}: {getattr(key, field)!r} != {value!r}"]


def test_digest_is_stable(onnx_path: Path) -> None:
    assert _key(onnx_path).digest == _key(onnx_path).digest
    assert len(_key(onnx_path).digest) == 64


def test_changed_onnx_file_gets_another_engine_path(onnx_path: Path, tmp_path: Path) -> None:
    first = engine_path_for(onnx_path, *PLATFORM, "fp16", 8, cache_dir=tmp_path)
    write_graph(onnx_path, "frame", seed=1)  # a re-exported model
    second = engine_path_for(onnx_path, *PLATFORM, "fp16", 8, cache_dir=tmp_path)
    assert first != second
    assert first.parent == second.parent == tmp_path
    assert first.name.startswith("frame-fp16-b8-") and first.suffix == ".engine"


def test_key_rejects_bad_precision_and_batch(onnx_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"engine precision 'bf16' is not accepted; choose one of fp32, fp16, int8"):
        _key(onnx_path, precision="bf16")
    with pytest.raises(ConfigError, match=r"engine max_batch = 0; expected an integer in \[1, 64\]"):
        _key(onnx_path, max_batch=0)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "ros2_affect" / "engines"
    assert default_cache_dir("/data/engines") == Path("/data/engines")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "ros2_affect" / "engines"


def test_sidecar_round_trip(onnx_path: Path, tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    props = graph_metadata("frame").to_props()
    written = write_sidecar(engine, EngineSidecar(_key(onnx_path), props, str(onnx_path), 1234.5))
    assert written == sidecar_path(engine) == tmp_path / "m.engine.json"
    back = read_sidecar(engine)
    assert back.key == _key(onnx_path)
    assert back.metadata_props == props
    assert back.onnx_path == str(onnx_path) and back.created_unix == 1234.5
    assert not list(tmp_path.glob("*.part"))  # atomic write leaves no temp file


def test_sidecar_errors_say_how_to_fix(onnx_path: Path, tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    with pytest.raises(ModelLoadError, match=r"no metadata sidecar m\.engine\.json beside the engine; .*metadata-only"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"unreadable engine sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "other-1"}))
    with pytest.raises(ModelLoadError, match=r"sidecar format 'other-1', expected 'ros2_affect-engine-1'"):
        read_sidecar(engine)
    good = json.loads(EngineSidecar(_key(onnx_path), {}, "").to_json())
    del good["key"]["precision"]
    sidecar_path(engine).write_text(json.dumps(good))
    with pytest.raises(ModelLoadError, match=r"engine sidecar lacks key fields \['precision'\]"):
        read_sidecar(engine)


def test_store_then_lookup_hits_only_the_same_key(onnx_path: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    key = _key(onnx_path)
    assert cache.lookup(key, "frame") is None
    props = graph_metadata("frame").to_props()
    path = cache.store(b"engine-bytes", key, "frame", props, str(onnx_path))
    assert path.read_bytes() == b"engine-bytes"
    assert cache.lookup(key, "frame") == path
    assert read_sidecar(path).metadata_props == props
    # same file name, sidecar of another key (e.g. written by hand): a miss, not a wrong engine
    other = dataclasses.replace(key, trt_version="8.6.2")
    write_sidecar(path, EngineSidecar(other, props))
    assert cache.lookup(key, "frame") is None
    # a corrupt sidecar is a miss too
    sidecar_path(path).write_text("garbage")
    assert cache.lookup(key, "frame") is None


def test_lookup_marks_the_entry_used(onnx_path: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    path = cache.store(b"x", _key(onnx_path), "frame", {})
    os.utime(path, (1000, 1000))
    assert cache.lookup(_key(onnx_path), "frame") == path
    assert path.stat().st_mtime > 1000


def test_prune_keeps_the_most_recently_used(onnx_path: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, keep=3)
    paths = []
    for i in range(5):
        key = _key(onnx_path, max_batch=i + 1)
        path = cache.store(b"x", key, "frame", {})
        os.utime(path, (1000 + i, 1000 + i))  # stored in order: batch 1 oldest
        paths.append(path)
    assert len(cache.entries()) == 3  # pruned while storing
    os.utime(paths[2], (5000, 5000))  # batch 3 used most recently
    newest = cache.store(b"y", _key(onnx_path, max_batch=6), "frame", {})
    kept = set(cache.entries())
    assert kept == {newest, paths[2], paths[4]}
    for gone in (paths[0], paths[1], paths[3]):
        assert not gone.exists() and not sidecar_path(gone).exists()


def test_prune_never_removes_the_protected_entry_and_cleans_orphans(onnx_path: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path, keep=1)
    old = cache.store(b"x", _key(onnx_path, max_batch=1), "frame", {})
    os.utime(old, (10, 10))
    orphan = tmp_path / "lost.engine.json"
    orphan.write_text("{}")
    assert cache.prune(protect=old) == []
    assert old.exists() and not orphan.exists()
    with pytest.raises(ConfigError, match="engine cache keep = 0; expected at least 1"):
        EngineCache(tmp_path, keep=0)


def test_remove_and_empty_cache(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "absent")
    assert cache.entries() == [] and cache.prune() == []
    cache.remove(tmp_path / "absent" / "x.engine")  # missing files are fine


def test_remove_deletes_the_calibration_cache_unless_kept(onnx_path: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    path = cache.store(b"x", _key(onnx_path, precision="int8"), "frame", {})
    calibration_path(path).write_bytes(b"scales")
    assert calibration_path(path) == tmp_path / (path.name + ".calib")
    cache.remove(path, keep_calibration=True)  # stale engine rebuilt from the same scales
    assert not path.exists() and calibration_path(path).exists()
    cache.remove(path)
    assert not calibration_path(path).exists()
