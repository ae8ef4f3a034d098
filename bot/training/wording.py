"""How training and versions are worded for people: a run's result, the versions table, the
corpus line. Pure text, shared by Discord, the scheduler's announcements and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.store.database import ModelVersion
from bot.training.coordinator import TrainingOutcome
from bot.training.progress import format_duration
from model.contracts.votes import CommunityScore

_HEADLINES = {
    "promoted": "promoted: **v{version}** now serves",
    "rejected": "finished: v{version} was not better, **{serving}** keeps serving",
    "failed": "failed, **{serving}** keeps serving",
    "cancelled": "cancelled, **{serving}** keeps serving",
}


def _metrics_line(label: str, metrics: dict[str, Any]) -> str:
    return (
        f"{label}: NLL {metrics['nll']:.3f}/token, one-joke rate {metrics['one_joke_rate']:.0%}, "
        f"copies {metrics.get('copy_rate', 0):.0%}"
    )


def votes_learned(metrics: dict[str, Any] | None) -> str:
    """`learned from 40 votes (👍 25 / 👎 15), separates 80% of held-out pairs`, or ''."""
    if not metrics:
        return ""
    parts = []
    up, down = int(metrics.get("votes_up") or 0), int(metrics.get("votes_down") or 0)
    if up or down:
        parts.append(f"learned from {up + down} votes (👍 {up} / 👎 {down})")
    separation = metrics.get("vote_separation")
    if separation is not None:
        parts.append(f"separates {separation:.0%} of held-out 👍/👎 pairs")
    return ", ".join(parts)


def votes_rolled_back(metrics: dict[str, Any] | None) -> str:
    """When the votes phase ended on earlier weights (model.sample_check): which step, and how
    its later samples looked; '' when it kept its last step."""
    phase = (metrics or {}).get("preference") or {}
    checks = phase.get("sample_checks") or []
    if not phase.get("rolled_back") or len(checks) < 2:
        return ""
    start, last = checks[0], checks[-1]
    kept = phase.get("kept_step", 0)
    where = f"on step {kept} of {last['step']}" if kept else "where it began (nothing learned)"
    return (
        f"the votes phase ended {where}: later its jokes were less varied or less often whole "
        f"(distinct-2 {last['distinct_2']:.2f}, one-joke rate {last['one_joke_rate']:.0%}; "
        f"{start['distinct_2']:.2f} and {start['one_joke_rate']:.0%} when it began)"
    )


def training_result(outcome: TrainingOutcome) -> str:
    """The final message of a training run: verdict, metrics before and after, one sample each."""
    headline = _HEADLINES[outcome.status].format(version=outcome.version, serving=outcome.serving)
    lines = [f"Training run #{outcome.run_id} {headline} ({format_duration(outcome.seconds)})."]
    lines.append(outcome.message)
    if outcome.metrics:
        lines.append(_metrics_line("Before", outcome.metrics["serving"]))
        lines.append(_metrics_line("After", outcome.metrics["candidate"]))
        taste = votes_learned(outcome.metrics["candidate"])
        if taste:
            lines.append(f"Votes: v{outcome.version} {taste}.")
        rolled_back = votes_rolled_back(outcome.metrics["candidate"])
        if rolled_back:
            lines.append(f"Note: {rolled_back}.")
    for label, key in (("Sample before", "serving"), ("Sample after", "candidate")):
        sample = (outcome.samples or {}).get(key)
        if sample:
            lines.append(f"{label}: “{sample.strip()[:300]}”")
    return "\n".join(lines)


def when(timestamp: str | datetime | None) -> str:
    if timestamp is None:
        return "never"
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def corpus_summary(total: int, by_source: dict[str, int]) -> str:
    """`283 jokes (283 starter)`: how much of the corpus is the starter set that ships."""
    starter = by_source.get("starter", 0)
    return f"{total} jokes" + (f" ({starter} starter)" if starter else "")


def versions_table(
    versions: list[ModelVersion], scores: dict[int, CommunityScore] | None = None
) -> str:
    """`/models` and `jokebot models`: one line per version with its metrics (and, given
    `scores`, the community's votes on its jokes)."""
    lines = []
    for version in versions:
        marker = "▶" if version.active else " "
        metrics = version.metrics.get("candidate") if version.metrics else None
        figures = (
            f"NLL {metrics['nll']:.3f}, one-joke {metrics['one_joke_rate']:.0%}" if metrics else "—"
        )
        line = (
            f"{marker} {version.name:<4} {version.status:<9} {when(version.created_at)}  {figures}"
        )
        taste = votes_learned(metrics)
        if taste:
            line += f"  {taste}"
        if scores is not None:
            score = scores.get(version.version, CommunityScore())
            line += f"  community: {score.describe()}"
        lines.append(line)
    return "\n".join(lines)
