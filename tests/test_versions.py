"""Promotion of a trained candidate on a real database (and a real runner where it refuses):
gate, load, record once with the final status and the manifest, prune."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.runners.pool import RunnerPool
from bot.store.database import Database
from bot.training import versions
from bot.training.gate import GatePolicy
from model.contracts.manifest import VersionManifest

POLICY = GatePolicy(min_nll_gain=0.02, max_one_joke_drop=0.05, max_copy_rate=0.2)
SERVING = {"nll": 4.0, "one_joke_rate": 0.8, "copy_rate": 0.0}
BETTER = {"candidate": {"nll": 3.0, "one_joke_rate": 0.9, "copy_rate": 0.0}, "serving": SERVING}
WORSE = {"candidate": {"nll": 4.5, "one_joke_rate": 0.9, "copy_rate": 0.0}, "serving": SERVING}


def trained_folder(models: Path, number: int, metrics: dict) -> Path:
    """A version folder as the trainer leaves it (the manifest is what matters here)."""
    folder = models / f"v{number}"
    folder.mkdir(parents=True)
    VersionManifest(
        created="2025-01-01T00:00:00+00:00",
        version=number,
        parent_version=number - 1,
        base_model="base",
        trained_from="base",
        compared_with="base",
        corpus_hash="0" * 64,
        corpus_size=40,
        snapshot_sha256="1" * 64,
        token_layout="start+joke+eos",
        prompt_layout="plain",
        split={},
        hyperparameters={"learning_rate": 1e-4},
        training={"steps": 3},
        metrics=metrics,
        samples={"candidate": "A joke."},
        duration_seconds=1.0,
        software={},
    ).write(folder)
    return folder


@pytest.fixture
async def db(tmp_path):
    """A database whose every write of a version's status is recorded in `status_writes`."""
    opened = await Database.open(tmp_path / "jokebot.sqlite3")
    await opened.ensure_base_version(str(tmp_path / "base"))
    for statement in (
        "CREATE TEMP TABLE status_writes (version INTEGER, status TEXT)",
        "CREATE TEMP TRIGGER status_inserted AFTER INSERT ON main.model_versions"
        " BEGIN INSERT INTO status_writes VALUES (NEW.version, NEW.status); END",
        "CREATE TEMP TRIGGER status_updated AFTER UPDATE OF status ON main.model_versions"
        " BEGIN INSERT INTO status_writes VALUES (NEW.version, NEW.status); END",
    ):
        await opened.execute(statement)
    yield opened
    await opened.close()


async def status_writes(db: Database) -> list[tuple[int, str]]:
    return [tuple(row) for row in await db.fetchall("SELECT version, status FROM status_writes")]


async def test_a_better_candidate_is_recorded_once_promoted_and_serves(db, tmp_path):
    folder = trained_folder(tmp_path / "models", 1, BETTER)
    candidate = versions.Candidate(1, folder, 0, BETTER)
    announced = []

    async def before_loading() -> None:
        announced.append(True)

    promotion = await versions.promote(
        db, None, candidate, POLICY, keep=3, before_loading=before_loading
    )
    assert promotion.promoted and promotion.reason.startswith("better:")
    assert announced == [True]
    assert await status_writes(db) == [(1, "promoted")]  # written once, final
    active = await db.active_version()
    assert (active.version, active.status, active.parent_version) == (1, "promoted", 0)
    assert active.metrics == BETTER
    assert active.manifest == VersionManifest.read(folder).model_dump(mode="json")
    assert folder.is_dir()


async def test_a_candidate_the_gate_refuses_is_recorded_once_rejected(db, tmp_path):
    folder = trained_folder(tmp_path / "models", 1, WORSE)
    promotion = await versions.promote(
        db, None, versions.Candidate(1, folder, 0, WORSE), POLICY, keep=3
    )
    assert not promotion.promoted and promotion.reason.startswith("not better")
    assert await status_writes(db) == [(1, "rejected")]
    assert (await db.active_version()).version == 0
    (_, rejected) = await db.versions()
    assert rejected.status == "rejected" and rejected.manifest["version"] == 1
    assert not folder.exists()  # a rejected version's weights are not kept


async def test_a_candidate_the_runner_refuses_is_rejected_and_v0_keeps_serving(
    db, tmp_path, tiny_model, shared_runner
):
    folder = trained_folder(tmp_path / "models", 1, BETTER)  # a manifest, but no weights
    async with RunnerPool(shared_runner, admin_token="shared-secret") as runner:
        runner.serve(str(tiny_model), 0)
        promotion = await versions.promote(
            db, runner, versions.Candidate(1, folder, 0, BETTER), POLICY, keep=3
        )
        assert not promotion.promoted
        assert promotion.reason.startswith("the runner refused v1:"), promotion.reason
        assert (await runner.health())["version"] == "v0"
    assert await status_writes(db) == [(1, "rejected")]
    assert (await db.active_version()).version == 0 and not folder.exists()


async def test_promotion_prunes_all_but_the_last_kept_versions(db, tmp_path):
    folders = [trained_folder(tmp_path / "models", n, BETTER) for n in (1, 2, 3)]
    for number, folder in enumerate(folders, 1):
        candidate = versions.Candidate(number, folder, number - 1, BETTER)
        assert (await versions.promote(db, None, candidate, POLICY, keep=2)).promoted
    assert [(v.version, v.status) for v in await db.versions()] == [
        (0, "base"), (1, "pruned"), (2, "promoted"), (3, "promoted"),
    ]  # fmt: skip
    assert [f.exists() for f in folders] == [False, True, True]
    assert (await db.active_version()).version == 3
