"""Which model version serves: promotion of a trained candidate, activation through the
runner, rollback and retention.

A trained candidate becomes a version once, with its final status: the gate decides, the
runner loads and smoke-tests a better one, and only then is the version recorded, promoted and
serving, or rejected (its weights deleted).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.runners.client import RunnerError
from bot.runners.pool import RunnerPool
from bot.store.database import Database, ModelVersion
from bot.training.gate import GatePolicy, decide
from model.contracts.manifest import VersionManifest, version_name

log = logging.getLogger(__name__)


class VersionError(Exception):
    """A version cannot be made to serve; the message says why, for an admin."""


@dataclass(frozen=True)
class Candidate:
    """What a finished training run left: a complete version folder not yet recorded."""

    number: int
    folder: Path
    parent: int
    metrics: dict[str, Any]  # `candidate` and `serving`, as the trainer measured them

    @property
    def name(self) -> str:
        return version_name(self.number)


@dataclass(frozen=True)
class Promotion:
    """The gate's verdict on a candidate, and why (for people)."""

    promoted: bool
    reason: str


async def promote(
    db: Database,
    runner: RunnerPool | None,
    candidate: Candidate,
    policy: GatePolicy,
    *,
    keep: int,
    before_loading: Callable[[], Awaitable[None]] | None = None,
) -> Promotion:
    """Gate, load, record, prune: the candidate serves only if it is measurably better and the
    runner accepted it; either way it is recorded once, with its final status and manifest.

    `before_loading` is told when a better candidate is about to be loaded (a progress line)."""
    decision = decide(candidate.metrics["candidate"], candidate.metrics["serving"], policy)
    promoted, reason = decision.promote, decision.reason
    if promoted:
        if before_loading is not None:
            await before_loading()
        try:
            await _load(runner, str(candidate.folder), candidate.number)
        except (RunnerError, VersionError) as error:
            promoted, reason = False, f"the runner refused {candidate.name}: {error}"
    manifest = VersionManifest.read(candidate.folder)
    await db.add_version(
        candidate.number,
        str(candidate.folder),
        parent_version=candidate.parent,
        status="promoted" if promoted else "rejected",
        metrics=candidate.metrics,
        manifest=manifest.model_dump(mode="json") if manifest else {},
    )
    if promoted:
        await db.set_active(candidate.number)
        log.info("%s now serves (%s)", candidate.name, candidate.folder)
    else:
        shutil.rmtree(candidate.folder, ignore_errors=True)
    await prune(db, keep)
    return Promotion(promoted, reason)


async def activate(db: Database, runner: RunnerPool | None, version: ModelVersion) -> None:
    """Make a recorded version serve: the runner loads and smoke-tests it first, then the
    database says so.

    With no runner (a CLI run while the bot is stopped) the database alone changes and the
    runner serves the version at its next start.
    """
    if version.status == "pruned" or (version.version != 0 and not Path(version.path).is_dir()):
        raise VersionError(f"{version.name}'s weights are no longer on disk")
    await _load(runner, version.path, version.version)
    await db.set_active(version.version)
    log.info("%s now serves (%s)", version.name, version.path)


async def _load(runner: RunnerPool | None, path: str, number: int) -> None:
    """Swap the version into every runner replica (none: it serves from the next start)."""
    if runner is not None:
        await runner.load(path, number)


async def rollback(
    db: Database, runner: RunnerPool | None, target: int | None = None
) -> ModelVersion:
    """Serve `target`, or else the newest earlier version that can still be loaded."""
    current = await db.active_version()
    if target is not None:
        chosen = await db.version(target)
        if chosen is None:
            raise VersionError(f"there is no version v{target}")
        if chosen.status not in ("base", "promoted"):
            raise VersionError(f"{chosen.name} was never promoted ({chosen.status})")
    else:
        earlier = [
            v
            for v in await db.versions()
            if v.version < current.version and v.status in ("base", "promoted")
        ]
        if not earlier:
            raise VersionError(f"{current.name} is the oldest version; nothing to roll back to")
        chosen = earlier[-1]
    if chosen.version == current.version:
        raise VersionError(f"{chosen.name} is already serving")
    await activate(db, runner, chosen)
    return chosen


async def prune(db: Database, keep: int) -> list[str]:
    """Delete the weights of old versions: keep the last `keep` promoted, the serving one and v0."""
    versions = await db.versions()
    promoted = [v for v in versions if v.status == "promoted"]
    keep_numbers = {v.version for v in promoted[-keep:]} | {0}
    keep_numbers |= {v.version for v in versions if v.active}
    removed = []
    for version in versions:
        if version.version in keep_numbers or version.status != "promoted":
            continue
        folder = Path(version.path)
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        await db.set_version_status(version.version, "pruned")
        removed.append(version.name)
    if removed:
        log.info("retention removed the weights of %s", ", ".join(removed))
    return removed


def remove_partial_outputs(models_dir: Path) -> list[Path]:
    """Delete `.tmp-*` folders a killed trainer left behind; they were never versions."""
    removed = []
    if models_dir.is_dir():
        for leftover in models_dir.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed
