"""Which model version serves: activation through the runner, rollback and retention."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from bot.runners.pool import RunnerPool
from bot.store.database import Database, ModelVersion

log = logging.getLogger(__name__)


class VersionError(Exception):
    """A version cannot be made to serve; the message says why, for an admin."""


async def activate(db: Database, runner: RunnerPool | None, version: ModelVersion) -> None:
    """Make `version` serve: the runner loads and smoke-tests it first, then the database says so.

    With no runner (a CLI run while the bot is stopped) the database alone changes and the
    runner serves the version at its next start.
    """
    if version.status == "pruned" or (version.version != 0 and not Path(version.path).is_dir()):
        raise VersionError(f"{version.name}'s weights are no longer on disk")
    if runner is not None:
        await runner.load(version.path, version.name)
    await db.set_active(version.version)
    log.info("%s now serves (%s)", version.name, version.path)


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
            raise VersionError(f"v{target} was never promoted ({chosen.status})")
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
