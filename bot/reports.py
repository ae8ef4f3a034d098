"""Plain-text reports shared by Discord, the scheduler's announcements and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.community import CommunityScore
from bot.database import ModelVersion, TrainingRun
from bot.progress import TrainingProgress, describe, format_duration
from bot.training import TrainingOutcome

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


def training_result(outcome: TrainingOutcome) -> str:
    """The final message of a training run: verdict, metrics before and after, one sample each."""
    headline = _HEADLINES[outcome.status].format(version=outcome.version, serving=outcome.serving)
    lines = [f"Training run #{outcome.run_id} {headline} ({format_duration(outcome.seconds)})."]
    lines.append(outcome.message)
    if outcome.metrics:
        lines.append(_metrics_line("Before", outcome.metrics["serving"]))
        lines.append(_metrics_line("After", outcome.metrics["candidate"]))
    for label, key in (("Sample before", "serving"), ("Sample after", "candidate")):
        sample = (outcome.samples or {}).get(key)
        if sample:
            lines.append(f"{label}: “{sample.strip()[:300]}”")
    return "\n".join(lines)


def _when(timestamp: str | datetime | None) -> str:
    if timestamp is None:
        return "never"
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class StatusFacts:
    """What `/status` reports, gathered by its caller (database, runner, training, scheduler)."""

    active: ModelVersion
    runner_health: dict[str, Any] | None  # None: the runner did not answer
    replicas: list[dict[str, Any]]
    corpus_total: int
    corpus_by_source: dict[str, int]
    new_jokes: int
    last_run: TrainingRun | None
    training_now: TrainingProgress | None
    next_run: datetime | None
    min_new_jokes: int
    community: CommunityScore | None = None


def status_report(facts: StatusFacts) -> str:
    """`/status`: what serves, how big the corpus is, the last and the next training."""
    active = facts.active
    lines = [f"Serving **{active.name}**" + (" (base model)" if active.version == 0 else "")]
    health = facts.runner_health
    if health is None:
        lines.append("Runner: unavailable")
    else:
        lines.append(
            f"Runner: serving {health.get('version', '?')}, queue "
            f"{health.get('queue_depth', '?')}/{health.get('max_queue', '?')}"
        )
    lines.extend(replica_lines(facts.replicas))
    lines.append(
        f"Corpus: {corpus_summary(facts.corpus_total, facts.corpus_by_source)}, "
        f"{facts.new_jokes} new since the last training"
    )
    last = facts.last_run
    if last is None:
        lines.append("Last training: never")
    else:
        version = f" v{last.candidate_version}" if last.candidate_version else ""
        lines.append(
            f"Last training: run #{last.id}{version} {last.status}, {_when(last.finished_at)}"
        )
    if facts.training_now is not None:
        lines.append(f"Training now: {describe(facts.training_now)}")
    if facts.next_run is None:
        lines.append("Next scheduled training: none (schedule off)")
    else:
        lines.append(
            f"Next scheduled training: {_when(facts.next_run)} "
            f"(if at least {facts.min_new_jokes} new jokes)"
        )
    if facts.community is not None:
        lines.append(f"Community score of {active.name}: {facts.community.describe()}")
    return "\n".join(lines)


def replica_lines(replicas: list[dict[str, Any]]) -> list[str]:
    """One line per runner replica (only when there are several): health and version."""
    if len(replicas) < 2:
        return []
    lines = []
    for r in replicas:
        if r["healthy"]:
            state = f"up, serving {r['version'] or '?'}, {r['in_flight']} in flight"
        else:
            state = f"down ({r['error'] or 'no answer'})"
        lines.append(f"Replica {r['url']}: {state}")
    return lines


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
            f"{marker} {version.name:<4} {version.status:<9} {_when(version.created_at)}  {figures}"
        )
        if scores is not None:
            score = scores.get(version.version, CommunityScore())
            line += f"  community: {score.describe()}"
        lines.append(line)
    return "\n".join(lines)
