"""One picture of how the versions compare: the community's score and the held-out NLL.

`/models` and the announcement of a retrain attach it, so a host sees at a glance whether the
community likes the newer versions better. Drawn with matplotlib's object API (no pyplot, no
global state), so it is safe in a worker thread while the bot serves.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure

from bot.store.database import ModelVersion
from model.contracts.votes import CommunityScore

FILENAME = "versions.png"


def held_out_nll(version: ModelVersion, versions: Sequence[ModelVersion]) -> float | None:
    """The version's held-out NLL as its gate measured it; for a version that was never a
    candidate (v0), as measured while it served during its first child's gate."""
    candidate = (version.metrics or {}).get("candidate")
    if candidate and "nll" in candidate:
        return float(candidate["nll"])
    for child in versions:
        serving = (child.metrics or {}).get("serving")
        if child.parent_version == version.version and serving and "nll" in serving:
            return float(serving["nll"])
    return None


def versions_chart(versions: Sequence[ModelVersion], scores: dict[int, CommunityScore]) -> bytes:
    """A PNG: per version, the share of 👍 with its 95% interval (top) and held-out NLL
    (bottom). Versions the gate rejected are left out: they never served."""
    shown = [v for v in versions if v.status in ("base", "promoted", "pruned") or v.active]
    x = list(range(len(shown)))
    figure = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    score_axes, nll_axes = figure.subplots(2, 1, sharex=True)

    for i, version in enumerate(shown):
        score = scores.get(version.version, CommunityScore())
        if not score.votes:
            continue
        low, high = score.interval
        score_axes.errorbar(
            [i],
            [score.share],
            yerr=[[score.share - low], [high - score.share]],
            fmt="o",
            capsize=4,
            color="tab:green" if version.active else "tab:blue",
        )
        score_axes.annotate(
            f"{score.votes}",
            (i, high),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=8,
        )
    score_axes.set_ylim(0, 1.1)
    score_axes.set_ylabel("share upvoted")
    score_axes.set_title("Community score per version (number of votes above)")
    score_axes.grid(axis="y", alpha=0.3)

    nll = [held_out_nll(v, versions) for v in shown]
    measured = [(i, value) for i, value in enumerate(nll) if value is not None]
    if measured:
        nll_axes.plot([i for i, _ in measured], [v for _, v in measured], "o-", color="tab:red")
    nll_axes.set_ylabel("held-out NLL / token")
    nll_axes.set_title("Held-out NLL (lower is better)")
    nll_axes.grid(axis="y", alpha=0.3)
    nll_axes.set_xticks(x, [v.name + ("\n(serving)" if v.active else "") for v in shown])

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
