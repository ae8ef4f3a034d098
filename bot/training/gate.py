"""The promotion gate: a candidate replaces the serving model only if it is measurably better.

Better on held-out jokes (NLL), no worse at telling one complete joke (one-joke rate, within
its sampling noise), not a parrot (copy rate); and, where the community voted, no worse at
telling liked from disliked held-out jokes (vote separation, within its noise) and, when it
learned from votes, not much less varied (distinct-2) than the serving model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from model.contracts.votes import Z_95, share_difference_noise


@dataclass(frozen=True)
class GatePolicy:
    min_nll_gain: float  # relative: 0.01 = the candidate's NLL must be at least 1% lower
    max_one_joke_drop: float  # absolute drop in one-joke rate tolerated (at least the noise)
    max_copy_rate: float  # share of samples that copy a training joke verbatim
    max_separation_drop: float = 0.05  # vote separation may drop this much (or its noise)
    min_diversity: float = 0.8  # distinct-2 at least this share of the serving model's


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def one_joke_tolerance(candidate: dict[str, Any], serving: dict[str, Any], floor: float) -> float:
    """How far the one-joke rate may drop: `floor`, or the 95% noise of the difference of two
    rates measured on `n_samples` samples each, whichever is larger. With 16 samples one
    unlucky sample is a 6% drop; only a drop beyond the noise says the candidate is worse."""
    rates = [(float(m["one_joke_rate"]), m.get("n_samples") or 0) for m in (candidate, serving)]
    return max(floor, share_difference_noise(*rates))


def separation_tolerance(candidate: dict[str, Any], serving: dict[str, Any], floor: float) -> float:
    """How far the vote separation may drop: `floor`, or the 95% noise of the difference of the
    two figures (each a share of held-out pairs; `vote_separation_se`), whichever is larger.
    With 10 liked and 10 disliked held-out jokes the noise is about 0.37: only a large drop
    counts until more votes are held out."""
    noise = sum(float(m.get("vote_separation_se") or 0.0) ** 2 for m in (candidate, serving))
    return max(floor, Z_95 * math.sqrt(noise))


def learned_from_votes(metrics: dict[str, Any]) -> bool:
    return bool((metrics.get("preference") or {}).get("ran"))


def _vote_summary(candidate: dict[str, Any], serving: dict[str, Any]) -> str:
    parts = []
    new, old = candidate.get("vote_separation"), serving.get("vote_separation")
    if new is not None and old is not None:
        pairs = candidate.get("vote_pairs", 0)
        parts.append(f"votes separated {old:.0%} → {new:.0%} ({pairs} held-out pairs)")
    new, old = candidate.get("distinct_2"), serving.get("distinct_2")
    if new is not None and old is not None:
        parts.append(f"distinct-2 {old:.2f} → {new:.2f}")
    return "".join(f", {part}" for part in parts)


def decide(candidate: dict[str, Any], serving: dict[str, Any], policy: GatePolicy) -> GateDecision:
    """Compare validation metrics of the candidate and the serving model; explain the verdict."""
    new_nll, old_nll = float(candidate["nll"]), float(serving["nll"])
    gain = (old_nll - new_nll) / old_nll if old_nll > 0 else 0.0
    new_rate, old_rate = float(candidate["one_joke_rate"]), float(serving["one_joke_rate"])
    copy_rate = float(candidate.get("copy_rate", 0.0))
    summary = (
        f"NLL {old_nll:.3f} → {new_nll:.3f} ({gain:+.1%}), "
        f"one-joke rate {old_rate:.0%} → {new_rate:.0%}, copies {copy_rate:.0%}"
    ) + _vote_summary(candidate, serving)
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
    new_sep, old_sep = candidate.get("vote_separation"), serving.get("vote_separation")
    if new_sep is not None and old_sep is not None:
        tolerance = separation_tolerance(candidate, serving, policy.max_separation_drop)
        if new_sep < old_sep - tolerance:
            return GateDecision(
                False,
                f"follows the community's votes less than the serving model (drop beyond "
                f"{tolerance:.0%}); {summary}",
            )
    new_variety, old_variety = candidate.get("distinct_2"), serving.get("distinct_2")
    if (
        learned_from_votes(candidate)
        and new_variety is not None
        and old_variety
        and new_variety < policy.min_diversity * old_variety
    ):
        return GateDecision(
            False,
            f"less varied than the serving model (distinct-2 below "
            f"{policy.min_diversity:.0%} of its); {summary}",
        )
    return GateDecision(True, f"better: {summary}")
