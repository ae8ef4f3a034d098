"""The dtype a model serves in and the precision it trains in, chosen by measuring this machine.

No fixed choice is right on a CPU: with AMX-BF16 a batched bf16 forward of SmolLM2-135M runs
~3x faster than float32 (#18), while on an AVX2-only CPU bf16 is slower, or refused by some
kernels (SDPA raises "pack_vnni2 is only supported when avx512 is supported"), and float32 is
exact. So on `auto`:

- serving (`DTYPE`): CUDA serves bf16 where the GPU supports it, else fp16, and MPS fp16, both
  without timing (as before). On a CPU the runner times what it does all day on the model it
  loads: a batched prefill (16 prompts x 64 tokens, some left-padded) and a few decode steps
  through `model.batch.RunningBatch`, in float32 and in every lower precision the CPU's oneDNN
  claims, interleaved (a shared machine slows all candidates alike), best of a few after a
  warm-up. A candidate that fails or yields non-finite logits is out. The fastest serves if it
  beats float32 by `MIN_GAIN`; otherwise, and for models so small that a forward takes under
  `SERVING_MIN_SECONDS` (per-step Python work dominates there), exact float32 serves. An x86
  CPU without AVX-512 has no candidate but float32 (`wide_vectors`): it serves float32 untimed.
  `ServingPrecision` decides once, at the first load, and every later load (a swap, an adapter)
  uses the same dtype without measuring again.
- training (`TRAIN_PRECISION`): CUDA keeps bf16 (fp16 without bf16) autocast as before. On a CPU
  with bf16 candidates the trainer times a few forward+backward passes of the real model on a
  real batch of training jokes, in float32 and under bf16 autocast (what the Trainer's
  `bf16=True` does there), and uses autocast only if it measured `MIN_GAIN` faster. Elsewhere
  float32.

`choose_fastest` is the decision, a pure function of the timings (tests give it timings).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
TRAIN_PRECISION_CHOICES = ("auto", "fp32", "bf16")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

MIN_GAIN = 0.10  # a lower precision must be at least 10% faster than float32 to be chosen
SERVING_MIN_SECONDS = 0.1  # float32 probe faster than this: nothing to gain (tiny models)
TRAINING_MIN_SECONDS = 0.1
PROBE_ROWS = 16  # the serving probe: a batch-16 prefill of 64 tokens, then decode steps
PROBE_TOKENS = 64
PROBE_DECODE_STEPS = 4
TRAIN_PROBE_ROWS = 8  # the training probe: forward+backward of 8 training jokes
ROUNDS = 3  # timed rounds after the warm-up, fewer when BUDGET_SECONDS is spent
BUDGET_SECONDS = 20.0
ONLY_FLOAT32 = "this CPU has no faster precision to try (no AVX-512 or no bf16/fp16 support)"
DROP_FACTOR = 2.0  # a candidate twice as slow as a round's fastest is timed no further


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `bfloat16`."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a `DTYPE` value; None for `auto`; ValueError for anything else."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return None
    if name not in DTYPES:
        raise ValueError(f"DTYPE must be one of {', '.join(DTYPE_CHOICES)}, not {name!r}")
    return DTYPES[name]


# ----------------------------------------------------------------------------- the decision
def choose_fastest(
    seconds: Mapping[str, float],
    *,
    baseline: str,
    min_gain: float = MIN_GAIN,
    min_seconds: float = 0.0,
) -> tuple[str, str]:
    """(choice, reason) from the best time of each candidate that ran (failed ones absent).

    The baseline (exact float32) is kept unless another candidate is `min_gain` faster; it is
    also kept when its own time is under `min_seconds`: then a difference is noise.
    """
    if baseline not in seconds:
        if not seconds:
            return baseline, f"no candidate could be timed; {baseline} as the default"
        best = min(seconds, key=seconds.__getitem__)
        return best, f"{baseline} failed; {best} was the fastest that ran"
    base = seconds[baseline]
    if base < min_seconds:
        return baseline, (
            f"{baseline} takes {base * 1000:.1f} ms (under {min_seconds * 1000:.0f} ms): "
            "too small a model for another precision to gain"
        )
    best = min(seconds, key=seconds.__getitem__)
    if best != baseline and seconds[best] <= base * (1 - min_gain):
        return best, f"{best} measured {base / seconds[best]:.2f}x faster than {baseline}"
    return baseline, f"nothing measured at least {min_gain:.0%} faster than {baseline}"


def best_times(
    runs: Mapping[str, Callable[[], None]],
    *,
    rounds: int = ROUNDS,
    budget: float = BUDGET_SECONDS,
) -> tuple[dict[str, float], dict[str, str]]:
    """Best wall time of each run after a warm-up, runs interleaved; and why any failed.

    A run that raises is out (its error kept). After every timed round a candidate
    `DROP_FACTOR` times slower than that round's fastest is timed no further (the ranking is
    clear); rounds stop early when one candidate is left or `budget` seconds are spent (after
    at least one timed round).
    """
    failed: dict[str, str] = {}
    best: dict[str, float] = {}
    live = dict(runs)
    began = time.perf_counter()
    for round_number in range(rounds + 1):  # round 0 is the warm-up (first-call costs)
        timed: dict[str, float] = {}
        for name, run in list(live.items()):
            start = time.perf_counter()
            try:
                run()
            except Exception as exc:  # a kernel this CPU lacks, non-finite output, ...
                failed[name] = f"{type(exc).__name__}: {exc}"[:300]
                del live[name]
                continue
            timed[name] = time.perf_counter() - start
        if round_number == 0:
            continue
        for name, seconds in timed.items():
            best[name] = min(seconds, best.get(name, seconds))
        fastest = min(timed.values(), default=0.0)
        for name in [n for n in live if timed[n] > DROP_FACTOR * fastest]:
            del live[name]  # its best stays: it cannot win, or cannot lose its place
        if len(live) < 2 or time.perf_counter() - began > budget:
            break
    return best, failed


# ----------------------------------------------------------------------------- serving
@dataclass
class PrecisionChoice:
    """What was chosen, why, and the figures it was chosen on (log, /health, /metrics)."""

    dtype: str  # float32 | bfloat16 | float16 (serving); fp32 | bf16 | fp16 (training)
    requested: str  # the setting: auto or an explicit value
    reason: str
    device: str
    probe: str = ""  # what was timed
    seconds: dict[str, float] = field(default_factory=dict)  # best time per candidate
    failed: dict[str, str] = field(default_factory=dict)  # candidate -> why it could not run
    measure_seconds: float = 0.0  # how long choosing took

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        data["measure_seconds"] = round(self.measure_seconds, 2)
        return data

    def describe(self) -> str:
        """One line: the choice, why, and the figures."""
        figures = [f"{k} {v:.3f} s" for k, v in self.seconds.items()]
        figures += [f"{k} failed ({v.split(':')[0]})" for k, v in self.failed.items()]
        timed = f"; {self.probe}: {', '.join(figures)}" if figures else ""
        return f"{self.dtype} on {self.device} ({self.requested}: {self.reason}{timed})"


def wide_vectors() -> bool:
    """Whether ATen may use bf16/fp16 kernels here: an x86 CPU needs AVX-512 (with AVX2 only
    they are slower, and SDPA refuses bf16 outright); elsewhere oneDNN's word stands."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


def cpu_candidates() -> list[torch.dtype]:
    """float32, then each lower precision the CPU's oneDNN claims, on a CPU with wide enough
    vector units (`wide_vectors`); the probe has the last say."""
    found = [torch.float32]
    if not wide_vectors():
        return found
    mkldnn = torch.backends.mkldnn.is_available()
    if mkldnn and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        found.append(torch.bfloat16)
    if mkldnn and torch.ops.mkldnn._is_mkldnn_fp16_supported():
        found.append(torch.float16)
    return found


def untimed_dtype(device: torch.device) -> tuple[torch.dtype, str] | None:
    """The dtype `auto` serves without timing (GPUs), or None where it measures (CPU)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "CUDA GPU with bf16 support (not timed)"
        return torch.float16, "CUDA GPU without bf16 support (not timed)"
    if device.type == "mps":
        return torch.float16, "Apple GPU (not timed)"
    return None


class _ProbeRow:
    def __init__(self, ids: list[int]) -> None:
        self.prompt_ids = ids
        self.last_token = ids[-1]
        self.length = len(ids)


def serving_probe(model, pad_token_id: int) -> Callable[[], None]:
    """One batched prefill (16 x 64 tokens, half the rows left-padded) and a few decode steps
    through the runner's own `RunningBatch`; raises if the logits are not finite."""
    from model.batch import RunningBatch

    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(0, vocab, (PROBE_TOKENS - (i % 2) * PROBE_TOKENS // 4,), generator=generator)
        for i in range(PROBE_ROWS)
    ]

    def run() -> None:
        batch = RunningBatch(model, pad_token_id)
        rows = [_ProbeRow(p.tolist()) for p in prompts]
        with torch.inference_mode():
            logits = batch.prefill(rows)
            for _ in range(PROBE_DECODE_STEPS):
                for row, token in zip(rows, logits.argmax(dim=-1).tolist(), strict=True):
                    row.last_token, row.length = token, row.length + 1
                logits = batch.decode()
            if not torch.isfinite(logits).all():
                raise FloatingPointError("non-finite logits")
        batch.reset()

    return run


class ServingPrecision:
    """The dtype one runner serves in: decided at its first load, kept for every later load.

    `load_dtype` says what to load the weights in; `settle` decides (timing on `auto` on a CPU,
    with the loaded model in float32 as the master copy) and returns the model in the chosen
    dtype. `on_choice` is told the choice once (metrics).
    """

    def __init__(
        self,
        requested: str = "auto",
        on_choice: Callable[[PrecisionChoice], None] | None = None,
    ) -> None:
        self.requested = (requested or "auto").strip().lower()
        self.explicit = parse_dtype(self.requested)  # ValueError for an unknown name
        self.on_choice = on_choice
        self.choice: PrecisionChoice | None = None
        self._lock = threading.Lock()

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.choice.dtype] if self.choice else None

    def load_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype to load weights in: the choice once made; float32 before a measurement."""
        if self.choice is not None:
            return DTYPES[self.choice.dtype]
        if self.explicit is not None:
            return self.explicit
        untimed = untimed_dtype(device)
        return untimed[0] if untimed else torch.float32

    def settle(self, model, device: torch.device, pad_token_id: int):
        """`model` in the chosen dtype, choosing first if nothing was chosen yet."""
        with self._lock:
            if self.choice is None:
                model, self.choice = self._choose(model, device, pad_token_id)
                log.info("serving dtype: %s", self.choice.describe())
                if self.on_choice is not None:
                    self.on_choice(self.choice)
        target = DTYPES[self.choice.dtype]
        if model.dtype != target:
            model = model.to(target)
        return model

    def health_fields(self) -> dict[str, Any]:
        """For the runner's `/health`: the dtype and how it was chosen (None before a load)."""
        choice = self.choice
        return {"dtype": choice.dtype if choice else None,
                "precision": choice.as_dict() if choice else None}  # fmt: skip

    def _choose(self, model, device: torch.device, pad_token_id: int):
        where = device.type
        if self.explicit is not None:
            name = dtype_name(self.explicit)
            if where == "cpu" and self.explicit not in cpu_candidates():
                raise ValueError(
                    f"DTYPE={name}, but this CPU has no {name} kernels (x86 needs AVX-512); "
                    "use DTYPE=auto or float32"
                )
            return model, PrecisionChoice(name, self.requested, "set by DTYPE", where)
        untimed = untimed_dtype(device)
        if untimed is not None:
            return model, PrecisionChoice(dtype_name(untimed[0]), "auto", untimed[1], where)
        if cpu_candidates() == [torch.float32]:
            return model, PrecisionChoice("float32", "auto", ONLY_FLOAT32, where)
        return measure_serving_dtype(model, device, pad_token_id)


def gate_precision(requested: str, device: torch.device) -> ServingPrecision:
    """The dtype the gate loads both models in: `requested` (DTYPE, or the dtype the runner
    chose, which the bot passes on) where this device can run it, else chosen as on `auto`
    (the runner may live on another machine)."""
    precision = ServingPrecision(requested)
    wanted = precision.explicit
    if wanted is not None and device.type == "cpu" and wanted not in cpu_candidates():
        log.warning("this CPU cannot run %s; the gate chooses its dtype itself", requested)
        return ServingPrecision("auto")
    return precision


def measure_serving_dtype(model, device: torch.device, pad_token_id: int):
    """(model in the fastest dtype, PrecisionChoice): `model` (float32) and a copy per other
    candidate are timed side by side; only the winner is kept."""
    began = time.perf_counter()
    variants = {"float32": model.float()}
    for dtype in cpu_candidates()[1:]:
        variants[dtype_name(dtype)] = copy.deepcopy(model).to(dtype)
    runs = {name: serving_probe(m, pad_token_id) for name, m in variants.items()}
    seconds, failed = best_times(runs)
    chosen, reason = choose_fastest(seconds, baseline="float32", min_seconds=SERVING_MIN_SECONDS)
    probe = (
        f"prefill {PROBE_ROWS}x{PROBE_TOKENS} tokens + {PROBE_DECODE_STEPS} decode steps, best of "
        f"up to {ROUNDS}"
    )
    choice = PrecisionChoice(
        chosen, "auto", reason, device.type, probe, seconds, failed,
        time.perf_counter() - began,
    )  # fmt: skip
    return variants[chosen], choice


# ----------------------------------------------------------------------------- training
def untimed_training_precision(device: torch.device) -> tuple[str, str] | None:
    """The autocast `auto` trains with without timing, or None where it measures (CPU)."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "CUDA GPU with bf16 support (not timed)"
        return "fp16", "CUDA GPU without bf16 support (not timed)"
    if device.type != "cpu":
        return "fp32", f"{device.type}: float32 (not timed)"
    return None


def bf16_trainable(device: torch.device) -> bool:
    """Whether bf16 autocast can run here at all (whether it is faster is measured)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.bfloat16 in cpu_candidates()
    return True  # MPS and others: let the Trainer say


def training_probe(model, batch: Mapping[str, torch.Tensor], autocast: bool):
    """One forward+backward of `model` on `batch` (bf16 autocast if asked), gradients dropped."""
    device_type = next(model.parameters()).device.type

    def run() -> None:
        context = (
            torch.autocast(device_type=device_type, dtype=torch.bfloat16)
            if autocast
            else contextlib.nullcontext()
        )
        with context:
            loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise FloatingPointError("non-finite loss")
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def choose_training_precision(
    requested: str, device: torch.device, model, batch: Mapping[str, torch.Tensor]
) -> PrecisionChoice:
    """The Trainer's mixed precision for `requested` (`TRAIN_PRECISION`): explicit values as
    given, `auto` as the module docstring says (timing `model` on `batch` on a CPU)."""
    requested = (requested or "auto").strip().lower()
    if requested not in TRAIN_PRECISION_CHOICES:
        raise ValueError(
            f"TRAIN_PRECISION must be one of {', '.join(TRAIN_PRECISION_CHOICES)}, not "
            f"{requested!r}"
        )
    where = device.type
    if requested == "bf16" and not bf16_trainable(device):
        raise ValueError(f"TRAIN_PRECISION=bf16, but this {where} device has no bf16 support")
    if requested != "auto":
        return PrecisionChoice(requested, requested, "set by TRAIN_PRECISION", where)
    untimed = untimed_training_precision(device)
    if untimed is not None:
        return PrecisionChoice(untimed[0], "auto", untimed[1], where)
    if not bf16_trainable(device):
        return PrecisionChoice("fp32", "auto", ONLY_FLOAT32, where)
    began = time.perf_counter()
    runs = {
        "fp32": training_probe(model, batch, autocast=False),
        "bf16": training_probe(model, batch, autocast=True),
    }
    was_training = model.training
    model.train()
    try:
        seconds, failed = best_times(runs, rounds=2)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    chosen, reason = choose_fastest(seconds, baseline="fp32", min_seconds=TRAINING_MIN_SECONDS)
    rows, width = batch["input_ids"].shape
    probe = f"forward+backward of {rows}x{width} training tokens, best of up to 2"
    return PrecisionChoice(
        chosen, "auto", reason, where, probe, seconds, failed, time.perf_counter() - began
    )


def measure_training_precision(
    requested: str,
    device: torch.device,
    model,
    examples: Sequence[Sequence[int]],
    pad_token_id: int,
    seed: int = 0,
) -> PrecisionChoice:
    """`choose_training_precision` on a batch of `TRAIN_PROBE_ROWS` training examples drawn at
    random (padded as the Trainer's collator pads them), on `device`."""
    import random

    from model.data import JokeCollator

    untimed = untimed_training_precision(device) or not bf16_trainable(device)
    if (requested or "auto").strip().lower() != "auto" or untimed:
        return choose_training_precision(requested, device, model, {})  # nothing to time
    rows = random.Random(seed).sample(list(examples), min(TRAIN_PROBE_ROWS, len(examples)))
    batch = JokeCollator(pad_token_id=pad_token_id)([{"input_ids": r} for r in rows])
    model.to(device)
    batch = {k: v.to(device) for k, v in batch.items()}
    return choose_training_precision(requested, device, model, batch)
