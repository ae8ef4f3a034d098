"""Pick the torch device and dtype a host asked for (`DEVICE=auto|cuda|mps|cpu`)."""

from __future__ import annotations

import os

import torch

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
    """bf16 on GPUs that support it, else fp16; fp32 on the CPU (fastest and exact there)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def training_precision(device: torch.device) -> str:
    """Mixed precision of the Trainer: bf16 where the GPU has it, else fp16; fp32 off CUDA."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


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
