"""Training configuration: dataclasses, YAML defaults, ``--set key=value`` overrides.

A run is configured by a YAML file (``config/train/*.yaml``) whose keys mirror the
dataclasses below (sections ``run``, ``data``, ``model``, ``optim``, ``augment``,
``sequence``, ``graph``), then dotted command-line overrides
(``--set optim.lr=0.05 --set model.kwargs.backbone=resnet18``). Unknown keys are rejected
with the closest valid key; values are parsed as YAML scalars and type-checked against
the dataclass field. ``model.kwargs`` is free-form (constructor arguments of the model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from ros2_affect.errors import ConfigError, did_you_mean
from training.augment import AugmentConfig
from training.sequences import SequenceAugmentConfig


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"  #: run folder name under out_dir.
    out_dir: str = "runs"  #: runs/<name>/ holds config.yaml, log.csv, tb/, last.pt, best.pt.
    seed: int = 0
    device: str = "cpu"  #: "cpu" or "cuda" (or "cuda:N").
    threads: int = 2  #: torch intra-op threads on CPU.
    bf16: bool = True  #: bfloat16 autocast (CPU with AVX512-BF16/AMX, or CUDA).
    channels_last: bool = True
    time_budget_min: float = 0.0  #: >0: shorten the schedule so training ends within this many minutes.
    progress: bool = True  #: tqdm progress bars.


#: ``data.dataset`` values: FER2013 alone, or FER2013 mixed with AffectNet (multi-task:
#: expression + real valence/arousal, :mod:`training.multitask`).
DATASETS = ("fer2013", "fer2013+affectnet")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fer2013"  #: "fer2013" or "fer2013+affectnet".
    path: str = "../shared/data/fer2013/fer2013-images.tar.gz"  #: folder, .tar.gz or fer2013.csv.
    #: fer2013+affectnet: affectnet-val-dev.tar.gz or its folder (labels.csv + images/).
    affectnet_path: str = "../shared/data/affectnet-val/affectnet-val-dev.tar.gz"
    affectnet_split_file: str = "training/splits/affectnet_val_dev.json"  #: train/val/test image ids.
    affectnet_ratio: float = 0.5  #: share of AffectNet samples in each training batch (0..1).
    affectnet_train_limit: int = 0  #: >0: only this many AffectNet training images (smoke tests).
    affectnet_val_limit: int = 0
    train_split: str = "Training"
    val_split: str = "PublicTest"
    train_subset: int = 0  #: >0: use only this many training images (smoke tests).
    val_subset: int = 0
    input_size: int = 48  #: model input side (images are resized to it when different).


@dataclass(frozen=True)
class ModelSection:
    name: str = "emotion_gcn"
    kwargs: Dict[str, Any] = field(default_factory=dict)
    #: checkpoint to start from: a model of the same name loads all its weights (fine-tuning);
    #: otherwise its backbone initialises this model's backbone/encoder (CNN-RNN from a frame model).
    init_from: str = ""
    freeze_encoder: bool = False  #: temporal model: keep the encoder fixed (train the sequence head only).
    mean: Tuple[float, ...] = (0.5,)  #: per-channel normalisation, pixels in 0..1.
    std: Tuple[float, ...] = (0.25,)


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"  #: "sgd" (momentum, nesterov below) or "adamw".
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  #: "cosine" or "constant".
    label_smoothing: float = 0.1
    class_weighting: str = "none"  #: "none" or "inverse" (w_i = f_min / f_i).
    va_loss_weight: float = 0.5  #: weight of the valence/arousal loss (regressed VA only).
    early_stopping: int = 0  #: >0: stop after this many epochs without a better val metric.
    #: "val_acc" or "val_acc_flip" (FER2013 PublicTest), or with fer2013+affectnet "val_score":
    #: the mean of PublicTest accuracy, AffectNet val accuracy and AffectNet val mean CCC.
    select_metric: str = "val_acc"
    steps_per_epoch: int = 0  #: >0: cap (smoke tests).
    #: >0: the last swa_epochs epochs run at the constant rate swa_lr and their end-of-epoch
    #: weights are averaged (SWA, Izmailov et al. 2018); the average, with batch-norm statistics
    #: recomputed, is what gets validated and saved.
    swa_epochs: int = 0
    swa_lr: float = 0.01


@dataclass(frozen=True)
class GraphConfig:
    """Emotion-GCN adjacency (training.label_embeddings.build_adjacency)."""

    #: 9-node graph (expressions + valence + arousal). FER2013 alone: VA targets derived from the
    #: labels; fer2013+affectnet: the real AffectNet valence/arousal (graph from their correlations).
    va_nodes: bool = True
    tau: float = 0.1
    p: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sequence: SequenceAugmentConfig = field(default_factory=SequenceAugmentConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)


def to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict (tuples as lists), YAML-serialisable."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def _coerce(key: str, value: Any, current: Any) -> Any:
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(value)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _merge(obj: Any, updates: Mapping[str, Any], prefix: str = "") -> Any:
    names = [f.name for f in dataclasses.fields(obj)]
    changes: Dict[str, Any] = {}
    for k, v in updates.items():
        key = f"{prefix}{k}"
        if k not in names:
            valid = ", ".join(prefix + n for n in names)
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {valid}{did_you_mean(k, names, prefix)}")
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key} is a section; give a mapping, got {v!r}")
            changes[k] = _merge(cur, v, key + ".")
        elif isinstance(cur, dict):
            merged = dict(cur)
            merged.update(_coerce(key, v, cur))
            changes[k] = merged
        else:
            changes[k] = _coerce(key, v, cur)
    return dataclasses.replace(obj, **changes)


def parse_override(item: str) -> Dict[str, Any]:
    """``"a.b.c=value"`` -> ``{"a": {"b": {"c": value}}}`` (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. optim.lr=0.05")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.strip().split(".")
    out: Dict[str, Any] = {}
    node = out
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _deep_update(base: Dict[str, Any], upd: Mapping[str, Any]) -> None:
    for k, v in upd.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v


def _read_yaml(p: Path, chain: Sequence[Path] = ()) -> Dict[str, Any]:
    """One config file as a nested dict; ``extends: other.yaml`` (next to it) is read first."""
    if not p.is_file():
        raise ConfigError(f"training config {p} not found; see config/train/*.yaml")
    if p.resolve() in chain:
        raise ConfigError(f"training config {p}: 'extends' loops back to itself")
    loaded = yaml.safe_load(p.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p} must hold a mapping of sections (run, data, model, optim, ...)")
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded
    raw = _read_yaml(p.parent / str(parent), (*chain, p.resolve()))
    _deep_update(raw, loaded)
    return raw


def load_train_config(
    path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (), base: Optional[TrainConfig] = None
) -> TrainConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, validated."""
    raw: Dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        _deep_update(raw, parse_override(item))
    cfg = _merge(base or TrainConfig(), raw)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    if cfg.optim.schedule not in ("cosine", "constant"):
        raise ConfigError(f"optim.schedule must be 'cosine' or 'constant', got {cfg.optim.schedule!r}")
    if cfg.optim.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"optim.optimizer must be 'sgd' or 'adamw', got {cfg.optim.optimizer!r}")
    if cfg.optim.class_weighting not in ("none", "inverse"):
        raise ConfigError(f"optim.class_weighting must be 'none' or 'inverse', got {cfg.optim.class_weighting!r}")
    if cfg.data.dataset not in DATASETS:
        raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)}, got {cfg.data.dataset!r}")
    metrics = ("val_acc", "val_acc_flip") + (("val_score",) if cfg.data.dataset == "fer2013+affectnet" else ())
    if cfg.optim.select_metric not in metrics:
        raise ConfigError(
            f"optim.select_metric must be one of {', '.join(metrics)} for data.dataset {cfg.data.dataset!r}, "
            f"got {cfg.optim.select_metric!r}"
        )
    if not 0.0 <= cfg.data.affectnet_ratio <= 1.0:
        raise ConfigError(f"data.affectnet_ratio must be in 0..1, got {cfg.data.affectnet_ratio}")
    if cfg.optim.epochs < 1 or cfg.optim.batch_size < 1:
        raise ConfigError("optim.epochs and optim.batch_size must be >= 1")
    if not 0 <= cfg.optim.swa_epochs <= cfg.optim.epochs or cfg.optim.swa_lr <= 0:
        raise ConfigError(
            f"optim.swa_epochs must be in 0..optim.epochs ({cfg.optim.epochs}) and optim.swa_lr > 0, "
            f"got {cfg.optim.swa_epochs} and {cfg.optim.swa_lr}"
        )
    if len(cfg.model.mean) != len(cfg.model.std):
        raise ConfigError(f"model.mean {cfg.model.mean} and model.std {cfg.model.std} need one value per channel")
    if not (cfg.run.device == "cpu" or cfg.run.device.startswith("cuda")):
        raise ConfigError(f"run.device must be 'cpu' or 'cuda[:N]', got {cfg.run.device!r}")


def dump_config(cfg: TrainConfig, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__: List[str] = ["TrainConfig", "load_train_config", "dump_config", "to_dict", "parse_override"]
