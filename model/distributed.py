"""Data-parallel training: which process this is, and the few collectives jokebot needs.

`TRAIN_PROCESSES=N` starts the trainer through `torchrun`, which sets RANK, LOCAL_RANK,
WORLD_SIZE and LOCAL_WORLD_SIZE in each process; a plain `python -m model.train` is a world of
one. The Trainer does the DDP work itself (gradient all-reduce, sharded batches, evaluation
losses gathered over all processes); this module starts the process group with the backend
the device wants (`nccl` for CUDA GPUs, `gloo` on CPUs), shares rank 0's decisions, and makes
a rank die with its launcher so a killed `torchrun` leaves no orphan.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 writes, the others help)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> World:
        env = os.environ if environ is None else environ
        world_size = int(env.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(env.get("RANK", "0")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            world_size=world_size,
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world_size))),
        )

    @property
    def is_main(self) -> bool:
        """Rank 0: the only writer of the version folder and of the events the bot reads."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def backend_for(device: torch.device) -> str:
    """`nccl` between CUDA GPUs, `gloo` for CPUs (and anything else gloo can carry)."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device this process trains on: its own GPU (`cuda:LOCAL_RANK`) when on CUDA."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def per_process_batch(batch_size: int, world_size: int) -> int:
    """Each process's share of the effective batch (at least one joke)."""
    share = max(1, batch_size // world_size)
    if share * world_size != batch_size:
        log.warning(
            "batch %d does not split evenly over %d processes: %d each, %d a micro-step in all",
            batch_size,
            world_size,
            share,
            share * world_size,
        )
    return share


def start(world: World, device: torch.device, timeout_minutes: float = 30) -> None:
    """Join the process group (nothing to do for a world of one)."""
    if not world.distributed or torch.distributed.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl and broadcast_object_list use the current GPU
    torch.distributed.init_process_group(
        backend=backend_for(device), timeout=timedelta(minutes=timeout_minutes)
    )
    log.info("rank %d of %d (%s)", world.rank, world.world_size, backend_for(device))


def share_from_main(value: T, world: World) -> T:
    """Rank 0's `value` on every rank (a path rank 0 chose, say)."""
    if not world.distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def stop() -> None:
    """Leave the process group; after this, rank 0 goes on alone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def die_with_launcher() -> None:
    """Ask Linux to SIGKILL this rank when its launcher dies.

    torchrun starts each rank in a session of its own, so killing the launcher's process group
    does not reach the ranks; without this a SIGKILLed `torchrun` would leave them running.
    """
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if getattr(libc, "prctl", None) is None:  # not Linux
        return
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return
    if os.getppid() == 1:  # the launcher died before the request took effect
        os._exit(1)
