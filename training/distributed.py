"""Distributed data-parallel training under ``torchrun`` (one process per device).

``torchrun --nproc_per_node N -m training.train --config ...`` starts N processes and sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each;
:func:`setup` reads them and joins the process group: backend ``gloo`` when the run's
device is the CPU, ``nccl`` on CUDA (each process then uses ``cuda:LOCAL_RANK``). Without
those variables (a plain ``python -m training.train``) nothing is set up and training runs
exactly as a single process always has.

What :class:`training.train.Trainer` does with it (see DEVELOPERS.md, "Training on
several processes or machines"):

- the model is wrapped in :class:`torch.nn.parallel.DistributedDataParallel`, so the
  gradients of every step are averaged over the ranks;
- FER2013-only runs draw each rank's share of the data with a
  :class:`torch.utils.data.DistributedSampler` (``set_epoch`` every epoch); each rank's
  batch is ``optim.batch_size / WORLD_SIZE``, so ``optim.batch_size`` stays the global
  batch; multi-task runs split every mixed global batch between the ranks;
- training loss and accuracy are summed over the ranks (``all_reduce``); validation runs on
  rank 0 only and its result is broadcast, so all ranks take the same decisions (best
  epoch, early stopping, time-budget re-planning);
- only rank 0 writes (run folder, ``config.yaml``, ``log.csv``, TensorBoard, checkpoints),
  with a barrier after each checkpoint write; on ``--resume`` every rank loads the same
  checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

from ros2_affect.errors import ConfigError

#: Variables torchrun sets in every process it starts.
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run.

    Attributes:
        enabled: started by torchrun (a process group exists), even with one process.
        rank: this process's index, 0..world_size-1.
        local_rank: its index on this machine (the CUDA device it uses).
        world_size: number of processes.
        backend: ``gloo`` or ``nccl`` (``""`` when not enabled).
    """

    enabled: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: List[float]) -> List[float]:
        """Element-wise sum of ``values`` over all ranks (float64; unchanged when not enabled)."""
        if not self.enabled:
            return list(values)
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARS)


def setup(device: str) -> DistContext:
    """Join the process group when started by torchrun; a no-op context otherwise.

    Raises:
        ConfigError: a CUDA run with more processes on this machine than CUDA devices.
    """
    if not launched_by_torchrun():
        return DistContext()
    rank, local_rank, world = (int(os.environ[v]) for v in TORCHRUN_VARS)
    cuda = device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ConfigError(
                f"run.device={device!r} with LOCAL_RANK {local_rank}, but this machine has {count} CUDA device(s); "
                f"start at most {count} processes per node (torchrun --nproc_per_node {max(count, 1)})"
            )
        torch.cuda.set_device(local_rank)  # "cuda" now means this process's device
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(True, rank, local_rank, world, backend)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (idempotent)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
