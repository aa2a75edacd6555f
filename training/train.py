"""Train an affect model: ``python -m training.train --config config/train/X.yaml [--set k=v ...]``.

Data are held in memory as uint8 tensors and augmented per batch in torch
(:mod:`training.augment`, :mod:`training.sequences`), which keeps a 2-core CPU busy with
the network instead of with data loading.

Run folder ``<run.out_dir>/<run.name>/``: ``config.yaml`` (effective config), ``log.csv``
(one row per epoch), ``tb/`` (TensorBoard), ``last.pt`` (every epoch, for ``--resume``)
and ``best.pt`` (best ``optim.select_metric`` on the validation split). Checkpoint format:
:mod:`training.checkpoint`.

Models:
* frame models (``emotion_gcn``, ``compact_cnn``, ...): images -> (logits, valence/arousal);
  cross-entropy with label smoothing, plus (Emotion-GCN with ``graph.va_nodes``) a CCC
  loss on valence/arousal targets derived from the labels with the Russell & Mehrabian
  (1977) coordinates (:mod:`ros2_affect.core.valence_arousal`).
* multi-task (``data.dataset: fer2013+affectnet``, :mod:`training.multitask`): FER2013 and
  the AffectNet training part mixed in every batch (``data.affectnet_ratio``); the CCC loss
  on the real AffectNet valence/arousal, masked to the rows that have them (FER2013 has
  none); the 9-node graph from the correlations of the AffectNet training labels; validation
  on FER2013 PublicTest and the AffectNet ``val`` part (accuracy, valence/arousal CCC;
  ``optim.select_metric: val_score``); the checkpoint says ``va_mode: regressed``.
* temporal models (``cnn_rnn``): sequences made from stills (:mod:`training.sequences`);
  ``model.init_from`` copies a trained frame model's backbone into the encoder and
  ``model.freeze_encoder`` trains only the recurrent head.

Losses come from :mod:`training.losses` (``weighted_cross_entropy``, ``ccc_loss``,
``class_weights_from_counts``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ros2_affect.config import AlignmentConfig
from ros2_affect.core.types import CANONICAL_EXPRESSIONS
from ros2_affect.core.valence_arousal import check_mapping
from ros2_affect.errors import ConfigError
from training import distributed
from training.augment import augment_batch, normalize, to_float_batch
from training.checkpoint import FORMAT
from training.config import TrainConfig, dump_config, load_train_config, to_dict
from training.data.fer2013 import load_fer2013
from training.losses import ccc_loss, class_weights_from_counts, weighted_cross_entropy
from training.models import build_for_training
from training.sequences import make_sequences

#: Seed of the fixed validation sequences (temporal models), independent of run.seed.
VAL_SEQUENCE_SEED = 20131


# ----------------------------------------------------------------------------- data
def load_split(cfg: TrainConfig, split: str, subset: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """FER2013 ``split`` -> ``(images (N, 1, S, S) uint8, labels (N,) int64)``, S = data.input_size
    (the AffectNet part of a multi-task run is added by :class:`Trainer`)."""
    d = load_fer2013(cfg.data.path, split)
    images, labels = d.images, d.labels
    if subset and subset < len(labels):
        # Stratification is not needed for smoke tests; a seeded permutation keeps it reproducible.
        idx = np.random.default_rng(seed).permutation(len(labels))[:subset]
        images, labels = images[idx], labels[idx]
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    s = cfg.data.input_size
    if x.shape[-1] != s:
        x = F.interpolate(x.float(), size=(s, s), mode="area").round().clamp(0, 255).to(torch.uint8)
    return x, torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------- model
def build_model(
    cfg: TrainConfig, train_labels: np.ndarray, graph_table: Optional[np.ndarray] = None
) -> Tuple[nn.Module, Dict[str, Any], str]:
    """-> (model, model_kwargs for the checkpoint, va_mode).

    ``graph_table``: the Emotion-GCN label table with real valence/arousal columns
    (:func:`training.multitask.graph_label_table`); the graph is built from it and the
    valence/arousal output is ``regressed``. Without it, VA targets are derived from
    ``train_labels``. What each model adds to its arguments is its entry in
    :data:`training.models.MODELS` (:func:`training.models.build_for_training`)."""
    kwargs: Dict[str, Any] = {"num_classes": len(CANONICAL_EXPRESSIONS), "in_channels": len(cfg.model.mean)}
    kwargs.update(cfg.model.kwargs)
    model, va_mode = build_for_training(cfg.model.name, cfg, kwargs, train_labels, graph_table)
    return model, kwargs, va_mode


def init_from_checkpoint(model: nn.Module, model_name: str, path: str) -> None:
    """Same model name: load every weight (fine-tuning); otherwise copy the backbone into the encoder."""
    from training.checkpoint import load_checkpoint

    src, meta = load_checkpoint(path)
    if meta.get("model_name") == model_name:
        try:
            model.load_state_dict(meta["state_dict"])
        except RuntimeError as exc:
            raise ConfigError(f"model.init_from {path}: weights do not fit this {model_name!r} model ({exc})") from exc
        return
    backbone = getattr(src, "backbone", None) or getattr(src, "encoder", None)
    target = getattr(model, "encoder", None) or getattr(model, "backbone", None)
    if backbone is None or target is None:
        raise ConfigError(f"model.init_from {path}: no backbone/encoder to copy between these models")
    target.load_state_dict(backbone.state_dict())


# ----------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, warmup: int, base: float, schedule: str) -> float:
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    prog = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * 0.5 * (1.0 + math.cos(math.pi * prog))


# ----------------------------------------------------------------------------- evaluation
def _autocast(cfg: TrainConfig) -> Any:
    dev = "cuda" if cfg.run.device.startswith("cuda") else "cpu"
    return torch.autocast(dev, dtype=torch.bfloat16, enabled=cfg.run.bf16)


def _prep(x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    x = normalize(x, cfg.model.mean, cfg.model.std).to(cfg.run.device)
    if cfg.run.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def predict_frames(
    model: nn.Module, images: torch.Tensor, cfg: TrainConfig, batch: int = 512, flip: bool = False
) -> torch.Tensor:
    """Class probabilities (N, K) float32 of a frame model on un-augmented uint8 images."""
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch):
        x = _prep(to_float_batch(images[i : i + batch]), cfg)
        with _autocast(cfg):
            p = torch.softmax(model(x)[0].float(), 1)
            if flip:
                p = 0.5 * (p + torch.softmax(model(torch.flip(x, dims=[3]))[0].float(), 1))
        out.append(p.cpu())
    return torch.cat(out)


@torch.no_grad()
def predict_frames_va(
    model: nn.Module, images: torch.Tensor, cfg: TrainConfig, batch: int = 512
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities (N, K), valence_arousal (N, 2))`` float32 of a frame model on uint8 images."""
    model.eval()
    probs, vas = [], []
    for i in range(0, images.shape[0], batch):
        x = _prep(to_float_batch(images[i : i + batch]), cfg)
        with _autocast(cfg):
            logits, va = model(x)
        probs.append(torch.softmax(logits.float(), 1).cpu())
        vas.append(va.float().cpu())
    return torch.cat(probs), torch.cat(vas)


def encode_frames(encoder: nn.Module, frames: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """frames (M, C, S, S) float 0..255 -> features (M, D) float32 (caller handles grad mode)."""
    with _autocast(cfg):
        return encoder(_prep(frames, cfg)).float()


@torch.no_grad()
def predict_sequences(model: nn.Module, seqs: torch.Tensor, cfg: TrainConfig, batch: int = 64) -> torch.Tensor:
    """Class probabilities (N, K) of a temporal model on sequences (N, T, C, S, S) float 0..255."""
    return predict_sequences_va(model, seqs, cfg, batch)[0]


@torch.no_grad()
def predict_sequences_va(
    model: nn.Module, seqs: torch.Tensor, cfg: TrainConfig, batch: int = 64
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities (N, K), valence_arousal (N, 2))`` of a temporal model on sequences
    (N, T, C, S, S) float 0..255."""
    model.eval()
    probs, vas = [], []
    for i in range(0, seqs.shape[0], batch):
        s = seqs[i : i + batch]
        n, t = s.shape[:2]
        f = encode_frames(model.encoder, s.reshape(n * t, *s.shape[2:]), cfg).reshape(n, t, -1)
        logits, va = model.sequence_head(f)
        probs.append(torch.softmax(logits.float(), 1).cpu())
        vas.append(va.float().cpu())
    return torch.cat(probs), torch.cat(vas)


def validation_sequences(images: torch.Tensor, cfg: TrainConfig, seed: int = VAL_SEQUENCE_SEED) -> torch.Tensor:
    """The fixed-seed validation sequences (N, T, C, S, S) float 0..255 built from stills."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([make_sequences(images[i : i + 256], cfg.sequence, g) for i in range(0, len(images), 256)])


def summarize(probs: torch.Tensor, labels: torch.Tensor, k: int) -> Dict[str, Any]:
    pred = probs.argmax(1)
    cm = torch.zeros(k, k, dtype=torch.int64)
    cm.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    recall = (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
    return {"acc": float((pred == labels).float().mean()), "per_class_recall": recall, "confusion": cm.tolist()}


# ----------------------------------------------------------------------------- training
class _TemporalStep(nn.Module):
    """A temporal model's training forward (encoder over ``n * t`` frames, then the sequence
    head) as one module, so that DistributedDataParallel sees the whole step."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, frames: torch.Tensor, n: int, t: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.model.freeze_encoder:
            with torch.no_grad():
                f = encode_frames(self.model.encoder, frames, self.cfg)
        else:
            f = encode_frames(self.model.encoder, frames, self.cfg)
        with _autocast(self.cfg):
            return self.model.sequence_head(f.reshape(n, t, -1))


class Trainer:
    """One training run. ``dist``: this process's place in a torchrun run
    (:mod:`training.distributed`); None or a disabled context: a single process."""

    def __init__(
        self, cfg: TrainConfig, resume: Optional[str] = None, dist: Optional[distributed.DistContext] = None
    ) -> None:
        self.cfg = cfg
        self.dist = dist if dist is not None else distributed.DistContext()
        self.run_dir = Path(cfg.run.out_dir) / cfg.run.name
        if self.dist.is_main:  # only rank 0 writes
            self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        random.seed(cfg.run.seed)
        self.gen = torch.Generator().manual_seed(cfg.run.seed)

        if self.dist.enabled and not self.dist.is_main:
            self.dist.barrier()  # rank 0 loads first: it alone extracts the datasets and writes their caches
        self.train_x, self.train_y = load_split(cfg, cfg.data.train_split, cfg.data.train_subset, cfg.run.seed)
        self.val_x, self.val_y = load_split(cfg, cfg.data.val_split, cfg.data.val_subset, cfg.run.seed + 1)
        self.k = len(CANONICAL_EXPRESSIONS)
        #: multi-task (fer2013+affectnet): VA targets (N, 2) of train_x (NaN: none), the batch sampler
        self.train_va: Optional[torch.Tensor] = None
        self.sampler: Any = None
        graph_table = self._load_affectnet() if cfg.data.dataset == "fer2013+affectnet" else None
        if self.dist.enabled and self.dist.is_main:
            self.dist.barrier()  # the caches are complete: the other ranks read them
        self.model, self.model_kwargs, self.va_mode = build_model(cfg, self.train_y.numpy(), graph_table)
        self.temporal = getattr(self.model, "role", "frame") == "temporal"
        if cfg.model.init_from:
            init_from_checkpoint(self.model, cfg.model.name, cfg.model.init_from)
        self.model.to(cfg.run.device)
        if cfg.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.temporal and cfg.model.freeze_encoder:
            for p in self.model.encoder.parameters():
                p.requires_grad_(False)
        self.va_table = torch.as_tensor(check_mapping(CANONICAL_EXPRESSIONS), dtype=torch.float32)
        # Emotion-GCN with valence/arousal nodes, or a temporal head trained on multi-task data
        self.regress_va = bool(getattr(self.model, "va_nodes", False)) or (self.temporal and self.train_va is not None)
        counts = np.bincount(self.train_y.numpy()[self.train_y.numpy() >= 0], minlength=self.k)
        self.class_weights = (
            class_weights_from_counts(counts).to(cfg.run.device) if cfg.optim.class_weighting == "inverse" else None
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optim.optimizer == "adamw":
            self.opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr)
        else:
            self.opt = torch.optim.SGD(
                groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov
            )
        n = self.train_x.shape[0]
        #: distributed: this rank's batch (optim.batch_size is the global one) and its sampler
        self.local_batch = cfg.optim.batch_size
        self.dist_sampler: Any = None
        if self.dist.enabled:
            self.local_batch = self._distributed_batch(n)
        if self.dist_sampler is not None:
            self.steps_per_epoch = max(1, len(self.dist_sampler) // self.local_batch)
        else:
            self.steps_per_epoch = len(self.sampler) if self.sampler is not None else max(1, n // cfg.optim.batch_size)
        if cfg.optim.steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.optim.steps_per_epoch)
        self.epoch = 0
        self.step = 0
        self.epochs_planned = cfg.optim.epochs
        self.best = -1.0
        self.best_epoch = -1
        self.elapsed_s = 0.0
        self.val_seqs: Optional[torch.Tensor] = None
        self.aff_val_seqs: Optional[torch.Tensor] = None
        self.swa_model: Optional[torch.optim.swa_utils.AveragedModel] = None
        if cfg.optim.swa_epochs:
            if self.temporal:
                raise ConfigError("optim.swa_epochs is for frame models; temporal models train a small head only")
            self.swa_model = torch.optim.swa_utils.AveragedModel(self.model)
        if resume:
            self._resume(resume)  # every rank loads the same checkpoint
        #: the model as DistributedDataParallel trains it (None: a single process)
        self.ddp: Optional[nn.Module] = None
        if self.dist.enabled:
            step_module = _TemporalStep(self.model, cfg) if self.temporal else self.model
            self.ddp = nn.parallel.DistributedDataParallel(
                step_module,
                device_ids=[self.dist.local_rank] if self.dist.backend == "nccl" else None,
                # every weight of the registered models takes part in the loss (checked: emotion_gcn with and
                # without valence/arousal nodes or loss, cnn_rnn with a frozen or trained encoder); a model with
                # unused weights stops at its first step with DDP's own message naming them
                find_unused_parameters=False,
            )
        if self.dist.is_main:
            dump_config(cfg, self.run_dir / "config.yaml")

    def _distributed_batch(self, n: int) -> int:
        """This rank's batch size; FER2013-only runs also get their DistributedSampler."""
        from torch.utils.data import DistributedSampler

        w, bs = self.dist.world_size, self.cfg.optim.batch_size
        if bs % w:
            raise ConfigError(
                f"optim.batch_size={bs} is the global batch of this {w}-process run and must split evenly between "
                f"the processes; set it to a multiple of {w} (e.g. {bs - bs % w or w})"
            )
        if self.sampler is None:
            self.dist_sampler = DistributedSampler(
                range(n), num_replicas=w, rank=self.dist.rank, shuffle=True, seed=self.cfg.run.seed, drop_last=True
            )
        return bs // w

    def _load_affectnet(self) -> np.ndarray:
        """Multi-task data: FER2013 (already loaded) + the AffectNet train part; returns the
        Emotion-GCN label table of the AffectNet training part."""
        from training.multitask import MixedBatches, fer_to_model, graph_label_table, load_affectnet_part

        cfg, d = self.cfg, self.cfg.data
        s, c = d.input_size, len(cfg.model.mean)
        ax, ay, ava = load_affectnet_part(d.affectnet_path, "train", s, c, d.affectnet_split_file,
                                          d.affectnet_train_limit)
        self.aff_val_x, self.aff_val_y, self.aff_val_va = load_affectnet_part(
            d.affectnet_path, "val", s, c, d.affectnet_split_file, d.affectnet_val_limit
        )
        fer_x = fer_to_model(self.train_x, s, c)
        self.n_fer = int(fer_x.shape[0])
        self.n_affectnet = int(ax.shape[0])
        self.train_x = torch.cat([fer_x, ax])
        self.train_y = torch.cat([self.train_y, ay])
        self.train_va = torch.cat([torch.full((self.n_fer, 2), float("nan")), ava])
        self.val_x = fer_to_model(self.val_x, s, c)
        self.sampler = MixedBatches(self.n_fer, self.n_affectnet, cfg.optim.batch_size, d.affectnet_ratio)
        return graph_label_table(ay.numpy(), ava.numpy())

    def _training_data(self) -> str:
        cfg = self.cfg
        if self.train_va is None:
            return f"{cfg.data.dataset} {cfg.data.train_split} ({self.train_x.shape[0]} images)"
        return (
            f"FER2013 {cfg.data.train_split} ({self.n_fer} images, research use) + AffectNet validation sample, "
            f"train part of {Path(cfg.data.affectnet_split_file).name} ({self.n_affectnet} images; AffectNet "
            "terms: research use only, no redistribution)"
        )

    # -- checkpoints
    def _state(self, metrics: Dict[str, Any], weights: nn.Module) -> Dict[str, Any]:
        """Checkpoint dict whose ``state_dict`` is ``weights`` (the live model, or the SWA average)."""
        cfg = self.cfg
        align = dataclasses.asdict(AlignmentConfig())
        align["output_size_px"] = cfg.data.input_size
        align["grayscale"] = len(cfg.model.mean) == 1
        sd = {k: v.detach().float().cpu().contiguous() for k, v in weights.state_dict().items()}
        return {
            "format": FORMAT,
            "model_name": cfg.model.name,
            "model_kwargs": self.model_kwargs,
            "state_dict": sd,
            "class_names": list(CANONICAL_EXPRESSIONS),
            "input_size": cfg.data.input_size,
            "channels": len(cfg.model.mean),
            "mean": list(cfg.model.mean),
            "std": list(cfg.model.std),
            "alignment": align,
            "sequence_length": int(getattr(self.model, "sequence_length", 1)),
            "va_mode": self.va_mode,
            "training_data": self._training_data(),
            "config": to_dict(cfg),
            "epoch": self.epoch,
            "metrics": metrics,
            "optimizer": self.opt.state_dict(),
            "scheduler": {
                "step": self.step,
                "epochs_planned": self.epochs_planned,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "elapsed_s": self.elapsed_s,
            },
            "rng": {"gen": self.gen.get_state(), "torch": torch.get_rng_state()},
            "swa_state": self.swa_model.state_dict() if self.swa_model is not None else None,
        }

    def _save(self, state: Dict[str, Any], name: str) -> None:
        tmp = self.run_dir / (name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.run_dir / name)  # atomic: a crash never leaves a half-written checkpoint

    def _resume(self, path: str) -> None:
        p = self.run_dir / "last.pt" if path == "auto" else Path(path)
        if not p.is_file():
            raise ConfigError(
                f"--resume: no checkpoint at {p}; give a last.pt path, or no value for {self.run_dir}/last.pt"
            )
        ck = torch.load(p, map_location="cpu", weights_only=False)
        if ck.get("format") != FORMAT or ck.get("model_name") != self.cfg.model.name:
            raise ConfigError(f"--resume: {p} is not a {self.cfg.model.name!r} checkpoint of this trainer")
        self.model.load_state_dict(ck["state_dict"])
        self.opt.load_state_dict(ck["optimizer"])
        self.epoch = int(ck["epoch"])
        s = ck["scheduler"]
        self.step = int(s["step"])
        # optim.epochs of this invocation wins (continue a finished run for longer); under a
        # time budget the saved plan is kept until the next epoch re-plans it.
        if self.cfg.run.time_budget_min > 0:
            self.epochs_planned = min(self.cfg.optim.epochs, int(s["epochs_planned"]))
        else:
            self.epochs_planned = self.cfg.optim.epochs
        self.best, self.best_epoch, self.elapsed_s = float(s["best"]), int(s["best_epoch"]), float(s["elapsed_s"])
        if self.swa_model is not None and ck.get("swa_state") is not None:
            self.swa_model.load_state_dict(ck["swa_state"])
        self.gen.set_state(ck["rng"]["gen"])
        torch.set_rng_state(ck["rng"]["torch"])

    # -- one epoch
    def _loss(
        self, logits: torch.Tensor, va: torch.Tensor, y: torch.Tensor, va_target: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Weighted CE (labels -1 ignored) + ``va_loss_weight`` x CCC loss. ``va_target``: real
        valence/arousal, NaN rows masked out (a batch without any adds 0); else derived from ``y``."""
        o = self.cfg.optim
        loss = weighted_cross_entropy(logits.float(), y, self.class_weights, o.label_smoothing)
        if self.regress_va and o.va_loss_weight > 0:
            target = va_target.to(y.device) if va_target is not None else self.va_table.to(y.device)[y]
            loss = loss + o.va_loss_weight * ccc_loss(va.float(), target)
        return loss

    def train_epoch(self) -> Dict[str, float]:
        cfg = self.cfg
        if self.ddp is not None:
            self.ddp.train()
        self.model.train()
        if self.temporal and cfg.model.freeze_encoder:
            self.model.encoder.eval()  # frozen BN statistics too
        batches = self.sampler.epoch(self.gen) if self.sampler is not None else None
        bs = cfg.optim.batch_size
        if self.dist_sampler is not None:  # distributed: this rank's share of a seeded permutation
            self.dist_sampler.set_epoch(self.epoch)
            perm = torch.as_tensor(list(iter(self.dist_sampler)), dtype=torch.int64)
            bs = self.local_batch
        else:
            perm = torch.randperm(self.train_x.shape[0], generator=self.gen) if batches is None else None
        rank, world = self.dist.rank, self.dist.world_size
        # The cosine (or constant) schedule covers the epochs before the SWA phase.
        total_steps = max(1, self.epochs_planned - cfg.optim.swa_epochs) * self.steps_per_epoch
        warm = int(cfg.optim.warmup_epochs * self.steps_per_epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        t0 = time.time()
        it: Any = range(self.steps_per_epoch)
        if cfg.run.progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"epoch {self.epoch + 1}/{self.epochs_planned}", mininterval=20, leave=False)
        for i in it:
            idx = batches[i] if batches is not None else perm[i * bs : (i + 1) * bs]
            if batches is not None and self.dist.enabled:
                idx = idx[rank::world]  # multi-task: each rank takes its share of the mixed global batch
            xb, y = self.train_x[idx], self.train_y[idx].to(cfg.run.device)
            if self.in_swa_phase():
                lr = cfg.optim.swa_lr
            else:
                lr = lr_at(self.step, total_steps, warm, cfg.optim.lr, cfg.optim.schedule)
            for grp in self.opt.param_groups:
                grp["lr"] = lr
            if self.temporal:
                seqs = make_sequences(xb, cfg.sequence, self.gen)
                n, t = seqs.shape[:2]
                frames = seqs.reshape(n * t, *seqs.shape[2:])
                if self.ddp is not None:
                    logits, va = self.ddp(frames, n, t)
                else:
                    if cfg.model.freeze_encoder:
                        with torch.no_grad():
                            f = encode_frames(self.model.encoder, frames, cfg)
                    else:
                        f = encode_frames(self.model.encoder, frames, cfg)
                    with _autocast(cfg):
                        logits, va = self.model.sequence_head(f.reshape(n, t, -1))
            else:
                x = _prep(augment_batch(xb, cfg.augment, self.gen), cfg)
                with _autocast(cfg):
                    logits, va = (self.ddp if self.ddp is not None else self.model)(x)
            loss = self._loss(logits, va, y, self.train_va[idx] if self.train_va is not None else None)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss is {loss.item()} at epoch {self.epoch + 1} step {i}; lower optim.lr "
                    f"(now {cfg.optim.lr}) or disable run.bf16"
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        dt = time.time() - t0
        if self.dist.enabled:  # the whole run's figures: summed over the ranks
            loss_sum, correct, seen = self.dist.sum([loss_sum, correct, seen])
            correct, seen = int(correct), int(seen)
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "train_s": dt, "img_s": seen / dt, "lr": lr}

    def in_swa_phase(self) -> bool:
        return self.swa_model is not None and self.epoch >= self.epochs_planned - self.cfg.optim.swa_epochs

    def update_swa(self) -> nn.Module:
        """Add this epoch's weights to the average and recompute its batch-norm statistics.

        The statistics come from one pass over the training images with the training
        augmentation (a fixed draw, so the result does not depend on when it runs).
        """
        assert self.swa_model is not None
        cfg = self.cfg
        self.swa_model.update_parameters(self.model)
        gen = torch.Generator().manual_seed(cfg.run.seed)
        bs = cfg.optim.batch_size

        def batches() -> Any:
            for i in range(0, self.train_x.shape[0], bs):
                yield _prep(augment_batch(self.train_x[i : i + bs], cfg.augment, gen), cfg)

        with torch.no_grad(), _autocast(cfg):
            torch.optim.swa_utils.update_bn(batches(), self.swa_model)
        return self.swa_model.module

    def validate(self, model: Optional[nn.Module] = None) -> Dict[str, Any]:
        cfg = self.cfg
        model = model if model is not None else self.model
        if self.temporal:
            if self.val_seqs is None:
                self.val_seqs = validation_sequences(self.val_x, cfg)
            probs = predict_sequences(model, self.val_seqs, cfg)
            s = summarize(probs, self.val_y, self.k)
            result = {"val_acc": s["acc"], "val_acc_flip": s["acc"], "per_class_recall": s["per_class_recall"]}
            if self.train_va is not None:
                result.update(self.validate_affectnet(model))
                result["val_score"] = (result["val_acc"] + result["aff_val_acc"] + result["aff_val_ccc"]) / 3
            return result
        probs = predict_frames(model, self.val_x, cfg)
        probs_f = predict_frames(model, self.val_x, cfg, flip=True)
        s, sf = summarize(probs, self.val_y, self.k), summarize(probs_f, self.val_y, self.k)
        result = {"val_acc": s["acc"], "val_acc_flip": sf["acc"], "per_class_recall": s["per_class_recall"]}
        if self.train_va is not None:
            result.update(self.validate_affectnet(model))
            result["val_score"] = (result["val_acc"] + result["aff_val_acc"] + result["aff_val_ccc"]) / 3
        return result

    def validate_affectnet(self, model: nn.Module) -> Dict[str, float]:
        """Accuracy (7 classes, contempt rows left out) and valence/arousal CCC on the AffectNet val part."""
        from training.multitask import va_metrics

        if self.temporal:
            if self.aff_val_seqs is None:
                self.aff_val_seqs = validation_sequences(self.aff_val_x, self.cfg)
            probs, va = predict_sequences_va(model, self.aff_val_seqs, self.cfg)
        else:
            probs, va = predict_frames_va(model, self.aff_val_x, self.cfg)
        labelled = self.aff_val_y >= 0
        acc = float((probs[labelled].argmax(1) == self.aff_val_y[labelled]).float().mean())
        m = va_metrics(va.numpy(), self.aff_val_va.numpy())
        return {"aff_val_acc": acc, "aff_val_ccc": m["ccc_mean"], "aff_val_ccc_v": m["ccc_valence"],
                "aff_val_ccc_a": m["ccc_arousal"]}

    # -- loop
    def fit(self) -> Dict[str, Any]:
        cfg = self.cfg
        log_path = self.run_dir / "log.csv"
        fields = ["epoch", "lr", "train_loss", "train_acc", "val_acc", "val_acc_flip", "img_s", "epoch_s", "elapsed_s"]
        if self.train_va is not None:
            fields += ["aff_val_acc", "aff_val_ccc_v", "aff_val_ccc_a", "val_score"]
        main = self.dist.is_main  # only rank 0 logs and writes
        if main and (not log_path.exists() or self.epoch == 0):
            with log_path.open("w", newline="") as fh:
                csv.writer(fh).writerow(fields)
        tb: Any = None
        if main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(self.run_dir / "tb"))
            except Exception:  # tensorboard is optional
                tb = None
        stale = 0
        recent: List[float] = []
        last: Dict[str, Any] = {}
        while self.epoch < self.epochs_planned:
            t0 = time.time()
            swa_epoch = self.in_swa_phase()
            tr = self.train_epoch()
            # distributed: SWA statistics and validation on rank 0 only; the others get its result
            evaluated = self.update_swa() if swa_epoch and main else self.model
            val = self.dist.broadcast(self.validate(evaluated) if main else None)
            self.epoch += 1
            epoch_s = time.time() - t0
            self.elapsed_s += epoch_s
            row = {**tr, **{k: v for k, v in val.items() if k != "per_class_recall"}}
            row.update(epoch=self.epoch, epoch_s=epoch_s, elapsed_s=self.elapsed_s)
            metric = float(val[cfg.optim.select_metric])
            improved = metric > self.best
            if improved:
                self.best, self.best_epoch, stale = metric, self.epoch, 0
            else:
                stale += 1
            recent.append(epoch_s)
            if cfg.run.time_budget_min > 0:
                # Re-plan the number of epochs from the recent epoch time (a shared machine's speed
                # changes), so the cosine schedule ends within the budget; never above optim.epochs.
                per_epoch = sum(recent[-3:]) / len(recent[-3:])
                left = cfg.run.time_budget_min * 60.0 - self.elapsed_s
                self.epochs_planned = max(self.epoch, min(cfg.optim.epochs, self.epoch + int(left // per_epoch)))
            # every rank runs the same number of epochs: rank 0's plan and clock
            self.epochs_planned, self.elapsed_s = self.dist.broadcast((self.epochs_planned, self.elapsed_s))
            if main:
                self._save(self._state(val, self.model), "last.pt")
                if improved:
                    self._save(self._state(val, evaluated), "best.pt")
            self.dist.barrier()  # the checkpoints are on disk before any rank goes on (or ends)
            if main:
                self._log_epoch(log_path, fields, row, tr, val, tb, epoch_s, swa_epoch)
            last = row
            if cfg.optim.early_stopping and stale >= cfg.optim.early_stopping:
                if main:
                    print(f"early stopping: no improvement for {stale} epochs", flush=True)
                break
        if tb is not None:
            tb.close()
        return {"best": self.best, "best_epoch": self.best_epoch, "last": last, "run_dir": str(self.run_dir)}

    def _log_epoch(
        self,
        log_path: Path,
        fields: List[str],
        row: Dict[str, Any],
        tr: Dict[str, float],
        val: Dict[str, Any],
        tb: Any,
        epoch_s: float,
        swa_epoch: bool,
    ) -> None:
        """One epoch's line in log.csv, TensorBoard and on stdout."""
        with log_path.open("a", newline="") as fh:
            csv.writer(fh).writerow([f"{row[k]:.5g}" if isinstance(row[k], float) else row[k] for k in fields])
        if tb is not None:
            for k in ("train_loss", "train_acc", "val_acc", "val_acc_flip", "lr", "img_s", *fields[9:]):
                tb.add_scalar(k, row[k], self.epoch)
            tb.flush()
        print(
            f"epoch {self.epoch}/{self.epochs_planned} loss {tr['train_loss']:.4f} train_acc {tr['train_acc']:.4f} "
            f"val_acc {val['val_acc']:.4f} flip {val['val_acc_flip']:.4f} lr {tr['lr']:.4g} "
            + (
                f"affectnet val acc {val['aff_val_acc']:.4f} ccc v {val['aff_val_ccc_v']:.3f} "
                f"a {val['aff_val_ccc_a']:.3f} score {val['val_score']:.4f} "
                if self.train_va is not None
                else ""
            )
            + f"{tr['img_s']:.0f} img/s {epoch_s:.0f}s best {self.best:.4f}@{self.best_epoch}"
            + (" (SWA average)" if swa_epoch else ""),
            flush=True,
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="YAML file (config/train/*.yaml); defaults when omitted")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optim.lr=0.05")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, help="continue from last.pt (or a path)")
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config, args.set)
    ctx = distributed.setup(cfg.run.device)  # torchrun: join the process group (gloo on CPU, nccl on CUDA)
    try:
        result = Trainer(cfg, resume=args.resume, dist=ctx).fit()
    finally:
        distributed.cleanup(ctx)
    if ctx.is_main:
        print(
            f"best {cfg.optim.select_metric} {result['best']:.4f} at epoch {result['best_epoch']} "
            f"in {result['run_dir']}"
            + (f" ({ctx.world_size} processes, {ctx.backend})" if ctx.enabled else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__: List[str] = ["Trainer", "main", "load_split", "build_model", "predict_frames", "predict_sequences"]
