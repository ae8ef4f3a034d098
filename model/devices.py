"""Pick the torch device a host asked for (`DEVICE=auto|cuda|mps|cpu`), and the dtype and
mixed precision that need no measuring (`model.precision` measures the rest)."""

from __future__ import annotations

import os

import torch

from model.precision import untimed_dtype, untimed_training_precision

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` prefers cuda, then mps, then cpu; an explicit device that is missing is an error."""
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES:
        raise ValueError(f"DEVICE must be one of {', '.join(DEVICE_CHOICES)}, not {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("DEVICE=cuda but torch sees no CUDA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("DEVICE=mps but torch sees no Apple GPU")
    return torch.device(name)


def serving_dtype(device: torch.device) -> torch.dtype:
    """The dtype without measuring: bf16 on GPUs that support it, else fp16; fp32 on the CPU.
    (`DTYPE=auto` times the CPU candidates: `model.precision.ServingPrecision`.)"""
    untimed = untimed_dtype(device)
    return untimed[0] if untimed else torch.float32


def training_precision(device: torch.device) -> str:
    """Mixed precision without measuring: bf16 where the GPU has it, else fp16; fp32 off CUDA.
    (`TRAIN_PRECISION=auto` times the CPU: `model.precision.choose_training_precision`.)"""
    untimed = untimed_training_precision(device)
    return untimed[0] if untimed else "fp32"


def optimizer_name(device: torch.device) -> str:
    """The Trainer's AdamW for `device`: the fused one (one kernel over all the weights) on
    CUDA and CPUs; on a 2-core CPU 0.08 s a step for SmolLM2 against 0.32 s for the
    per-tensor loop."""
    return "adamw_torch_fused" if device.type in ("cuda", "cpu") else "adamw_torch"


def configure_cpu_threads(processes: int = 1) -> int:
    """Share the cores this process may run on (cgroup/affinity aware) among `processes`
    training processes on this machine, not the host's total; return this one's threads."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, processes))
    torch.set_num_threads(threads)
    return threads
