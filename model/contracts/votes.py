"""Community votes as figures: counts on a joke, and a model version's score. Pure, no I/O.

A version's score is the share of upvotes among its jokes' votes with the lower bound of the
Wilson score interval (95%), so three votes out of three (lower bound 44%) does not beat 80
out of 100 (lower bound 71%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959964


def wilson_interval(positive: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for `positive` out of `total` ((0, 0) when none)."""
    if total <= 0:
        return 0.0, 0.0
    share = positive / total
    denominator = 1 + z * z / total
    centre = share + z * z / (2 * total)
    margin = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    return max(0.0, (centre - margin) / denominator), min(1.0, (centre + margin) / denominator)


def share_difference_noise(*shares: tuple[float, int], z: float = Z_95) -> float:
    """The 95% noise of the difference of shares, each (share, samples it was measured on): a
    drop within it says nothing (48 samples at 90% each: 0.12). Shares without samples add 0."""
    return z * math.sqrt(sum(p * (1 - p) / n for p, n in shares if n))


def wilson_lower_bound(positive: int, total: int, z: float = Z_95) -> float:
    """Lower bound of the Wilson score interval for `positive` out of `total` (0 when none)."""
    return wilson_interval(positive, total, z)[0]


@dataclass(frozen=True)
class VoteCounts:
    """Upvotes and downvotes on one generated joke."""

    up: int = 0
    down: int = 0

    @property
    def net(self) -> int:
        return self.up - self.down


@dataclass(frozen=True)
class CommunityScore:
    """A model version's community score from the votes on its jokes."""

    up: int = 0
    down: int = 0

    @property
    def votes(self) -> int:
        return self.up + self.down

    @property
    def share(self) -> float:
        return self.up / self.votes if self.votes else 0.0

    @property
    def lower_bound(self) -> float:
        return wilson_lower_bound(self.up, self.votes)

    @property
    def interval(self) -> tuple[float, float]:
        """The share's 95% Wilson interval."""
        return wilson_interval(self.up, self.votes)

    def describe(self) -> str:
        """`67% upvoted (≥ 35% at 95%), 9 votes`, or `no votes yet`."""
        if not self.votes:
            return "no votes yet"
        noun = "vote" if self.votes == 1 else "votes"
        return f"{self.share:.0%} upvoted (≥ {self.lower_bound:.0%} at 95%), {self.votes} {noun}"

    def as_json(self) -> dict[str, float | int]:
        return {
            "up": self.up,
            "down": self.down,
            "votes": self.votes,
            "share": round(self.share, 4),
            "lower_bound": round(self.lower_bound, 4),
        }
