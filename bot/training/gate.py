"""The promotion gate: a candidate replaces the serving model only if it is measurably better."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from model.contracts.votes import Z_95  # two-sided 95%: here the one-joke rate's sampling noise


@dataclass(frozen=True)
class GatePolicy:
    min_nll_gain: float  # relative: 0.01 = the candidate's NLL must be at least 1% lower
    max_one_joke_drop: float  # absolute drop in one-joke rate tolerated (at least the noise)
    max_copy_rate: float  # share of samples that copy a training joke verbatim


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def one_joke_tolerance(candidate: dict[str, Any], serving: dict[str, Any], floor: float) -> float:
    """How far the one-joke rate may drop: `floor`, or the 95% noise of the difference of two
    rates measured on `n_samples` samples each, whichever is larger. With 16 samples one
    unlucky sample is a 6% drop; only a drop beyond the noise says the candidate is worse."""
    noise = 0.0
    for metrics in (candidate, serving):
        n, p = metrics.get("n_samples"), float(metrics["one_joke_rate"])
        if n:
            noise += p * (1 - p) / n
    return max(floor, Z_95 * math.sqrt(noise))


def decide(candidate: dict[str, Any], serving: dict[str, Any], policy: GatePolicy) -> GateDecision:
    """Compare validation metrics of the candidate and the serving model; explain the verdict."""
    new_nll, old_nll = float(candidate["nll"]), float(serving["nll"])
    gain = (old_nll - new_nll) / old_nll if old_nll > 0 else 0.0
    new_rate, old_rate = float(candidate["one_joke_rate"]), float(serving["one_joke_rate"])
    copy_rate = float(candidate.get("copy_rate", 0.0))
    summary = (
        f"NLL {old_nll:.3f} → {new_nll:.3f} ({gain:+.1%}), "
        f"one-joke rate {old_rate:.0%} → {new_rate:.0%}, copies {copy_rate:.0%}"
    )
    if gain < policy.min_nll_gain:
        return GateDecision(
            False, f"not better: NLL gain {gain:+.1%} is below {policy.min_nll_gain:.1%}; {summary}"
        )
    if new_rate < old_rate - one_joke_tolerance(candidate, serving, policy.max_one_joke_drop):
        return GateDecision(
            False, f"fewer complete one-line jokes than the serving model; {summary}"
        )
    if copy_rate > policy.max_copy_rate:
        return GateDecision(
            False, f"copies training jokes too often (limit {policy.max_copy_rate:.0%}); {summary}"
        )
    return GateDecision(True, f"better: {summary}")
