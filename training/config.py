"""Training configuration: dataclasses, YAML defaults, ``--set key=value`` overrides.

A run is configured by a YAML file (``config/train/*.yaml``) whose keys mirror the
dataclasses below (sections ``run``, ``data``, ``model``, ``optim``, ``augment``,
``sequence``, ``graph``), then dotted command-line overrides
(``--set optim.lr=0.05 --set model.kwargs.backbone=resnet18``). Unknown keys are rejected
with the closest valid key; values are parsed as YAML scalars and type-checked against
the dataclass field. ``model.kwargs`` is free-form (constructor arguments of the model).

The settings are declared as the runtime's are (:func:`ros2_affect.settings.setting`: type,
default, range or choices, description) and merged and checked by the same code
(:func:`ros2_affect.settings.merge`, :func:`ros2_affect.settings.check`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from ros2_affect.errors import ConfigError, did_you_mean
from ros2_affect.settings import check, merge, section, setting
from ros2_affect.settings import parse_override as parse_setting_override
from training.augment import AugmentConfig
from training.sequences import SequenceAugmentConfig


@dataclass(frozen=True)
class RunConfig:
    name: str = setting("run", "run folder name under out_dir.")
    out_dir: str = setting("runs", "runs/<name>/ holds config.yaml, log.csv, tb/, last.pt, best.pt.")
    seed: int = 0
    device: str = setting("cpu", '"cpu" or "cuda" (or "cuda:N").')
    threads: int = setting(2, "torch intra-op threads on CPU.")
    bf16: bool = setting(True, "bfloat16 autocast (CPU with AVX512-BF16/AMX, or CUDA).")
    channels_last: bool = True
    time_budget_min: float = setting(0.0, ">0: shorten the schedule so training ends within this many minutes.")
    progress: bool = setting(True, "tqdm progress bars.")

    def cross_check(self) -> None:
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"run.device must be 'cpu' or 'cuda[:N]', got {self.device!r}")


#: ``data.dataset`` values: FER2013 alone, or FER2013 mixed with AffectNet (multi-task:
#: expression + real valence/arousal, :mod:`training.multitask`).
DATASETS = ("fer2013", "fer2013+affectnet")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = setting("fer2013", "FER2013 alone, or mixed with AffectNet.", choices=DATASETS)
    path: str = setting("../shared/data/fer2013/fer2013-images.tar.gz", "folder, .tar.gz or fer2013.csv.")
    affectnet_path: str = setting(
        "../shared/data/affectnet-val/affectnet-val-dev.tar.gz",
        "fer2013+affectnet: affectnet-val-dev.tar.gz or its folder (labels.csv + images/).",
    )
    affectnet_split_file: str = setting("training/splits/affectnet_val_dev.json", "train/val/test image ids.")
    affectnet_ratio: float = setting(
        0.5, "share of AffectNet samples in each training batch (0..1).", range=(0.0, 1.0)
    )
    affectnet_train_limit: int = setting(0, ">0: only this many AffectNet training images (smoke tests).")
    affectnet_val_limit: int = 0
    train_split: str = "Training"
    val_split: str = "PublicTest"
    train_subset: int = setting(0, ">0: use only this many training images (smoke tests).")
    val_subset: int = 0
    input_size: int = setting(48, "model input side (images are resized to it when different).")


@dataclass(frozen=True)
class ModelSection:
    name: str = "emotion_gcn"
    kwargs: Dict[str, Any] = setting({}, "constructor arguments of the model (free-form, merged key by key).")
    init_from: str = setting(
        "",
        "checkpoint to start from: a model of the same name loads all its weights (fine-tuning); "
        "otherwise its backbone initialises this model's backbone/encoder (CNN-RNN from a frame model).",
    )
    freeze_encoder: bool = setting(
        False, "temporal model: keep the encoder fixed (train the sequence head only)."
    )
    mean: Tuple[float, ...] = setting((0.5,), "per-channel normalisation, pixels in 0..1.")
    std: Tuple[float, ...] = (0.25,)

    def cross_check(self) -> None:
        if len(self.mean) != len(self.std):
            raise ConfigError(f"model.mean {self.mean} and model.std {self.std} need one value per channel")


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = setting("sgd", '"sgd" (momentum, nesterov below) or "adamw".', choices=("sgd", "adamw"))
    epochs: int = setting(60, range=(1, None))
    batch_size: int = setting(128, range=(1, None))
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = setting("cosine", choices=("cosine", "constant"))
    label_smoothing: float = 0.1
    class_weighting: str = setting("none", '"inverse": w_i = f_min / f_i.', choices=("none", "inverse"))
    va_loss_weight: float = setting(0.5, "weight of the valence/arousal loss (regressed VA only).")
    early_stopping: int = setting(0, ">0: stop after this many epochs without a better val metric.")
    select_metric: str = setting(
        "val_acc",
        '"val_acc" or "val_acc_flip" (FER2013 PublicTest), or with fer2013+affectnet "val_score": '
        "the mean of PublicTest accuracy, AffectNet val accuracy and AffectNet val mean CCC.",
    )
    steps_per_epoch: int = setting(0, ">0: cap (smoke tests).")
    swa_epochs: int = setting(
        0,
        ">0: the last swa_epochs epochs run at the constant rate swa_lr and their end-of-epoch "
        "weights are averaged (SWA, Izmailov et al. 2018); the average, with batch-norm statistics "
        "recomputed, is what gets validated and saved.",
    )
    swa_lr: float = 0.01

    def cross_check(self) -> None:
        if not 0 <= self.swa_epochs <= self.epochs or self.swa_lr <= 0:
            raise ConfigError(
                f"optim.swa_epochs must be in 0..optim.epochs ({self.epochs}) and optim.swa_lr > 0, "
                f"got {self.swa_epochs} and {self.swa_lr}"
            )


@dataclass(frozen=True)
class GraphConfig:
    """Emotion-GCN adjacency (training.label_embeddings.build_adjacency)."""

    va_nodes: bool = setting(
        True,
        "9-node graph (expressions + valence + arousal). FER2013 alone: VA targets derived from the "
        "labels; fer2013+affectnet: the real AffectNet valence/arousal (graph from their correlations).",
    )
    tau: float = 0.1
    p: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    run: RunConfig = section(RunConfig)
    data: DataConfig = section(DataConfig)
    model: ModelSection = section(ModelSection)
    optim: OptimConfig = section(OptimConfig)
    augment: AugmentConfig = section(AugmentConfig)
    sequence: SequenceAugmentConfig = section(SequenceAugmentConfig)
    graph: GraphConfig = section(GraphConfig)

    def cross_check(self) -> None:
        metrics = ("val_acc", "val_acc_flip") + (("val_score",) if self.data.dataset == "fer2013+affectnet" else ())
        if self.optim.select_metric not in metrics:
            raise ConfigError(
                f"optim.select_metric must be one of {', '.join(metrics)} for data.dataset {self.data.dataset!r}, "
                f"got {self.optim.select_metric!r}{did_you_mean(self.optim.select_metric, metrics)}"
            )


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


def parse_override(item: str) -> Dict[str, Any]:
    """``"a.b.c=value"`` -> ``{"a": {"b": {"c": value}}}`` (the runtime's ``--set`` parser)."""
    key, value = parse_setting_override(item)
    out: Dict[str, Any] = {}
    node = out
    parts = key.split(".")
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
    cfg = merge(base or TrainConfig(), raw)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> TrainConfig:
    """Every declared range and choice, and the rules between settings (:func:`ros2_affect.settings.check`).

    Raises:
        ConfigError: the first value that is not accepted, named with its dotted key.
    """
    return check(cfg)


def dump_config(cfg: TrainConfig, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__: List[str] = ["TrainConfig", "load_train_config", "dump_config", "to_dict", "parse_override"]
