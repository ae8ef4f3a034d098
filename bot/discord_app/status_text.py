"""`/status` in words: what serves, the runner and its replicas, the corpus, the last and next
training. Pure text from `StatusFacts`, which the status cog gathers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.store.database import ModelVersion, TrainingRun
from bot.training.progress import TrainingProgress, describe
from bot.training.wording import corpus_summary, when
from model.contracts.votes import CommunityScore


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
            f"Last training: run #{last.id}{version} {last.status}, {when(last.finished_at)}"
        )
    if facts.training_now is not None:
        lines.append(f"Training now: {describe(facts.training_now)}")
    if facts.next_run is None:
        lines.append("Next scheduled training: none (schedule off)")
    else:
        lines.append(
            f"Next scheduled training: {when(facts.next_run)} "
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


def precision_line(health: dict[str, Any] | None) -> str | None:
    """For admins: the dtype the runner serves in, how `DTYPE` chose it, and the timings."""
    if not health or not health.get("dtype"):
        return None
    precision = health.get("precision") or {}
    line = f"Runner dtype: {health['dtype']}"
    requested, reason = precision.get("requested"), precision.get("reason")
    if requested:
        line += f" (DTYPE={requested}" + (f": {reason}" if reason else "") + ")"
    seconds = precision.get("seconds") or {}
    if seconds:
        timings = ", ".join(f"{name} {value:.3f} s" for name, value in seconds.items())
        line += f"; {precision.get('probe') or 'timed'}: {timings}"
    failed = precision.get("failed") or {}
    if failed:
        line += "; could not run: " + ", ".join(sorted(failed))
    return line
