"""/retrain end to end: real trainer process, gate, hot swap in the real runner, restart; and
a corpus too small to learn from, refused plainly."""

from __future__ import annotations

import asyncio
import sqlite3

from bot.community.importer import import_jokes
from loopback_discord import LoopbackDiscord
from model.contracts.manifest import VersionManifest
from tests.helpers import (
    ADMIN,
    ROOT,
    SHORT_JOKES,
    TOKEN,
    TRAINING_RESULT,
    corpus_lines,
    jokebot_app,
    jokebot_cli,
    make_settings,
    process_env,
    retrain,
    wait_until,
)


async def test_retrain_promotes_swaps_rolls_back_and_survives_restart(tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model)
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, settings) as app:
        await import_jokes(app.db, corpus_lines(60))
        _, final = await retrain(standin)
        assert "promoted: **v1** now serves" in final.content, final.content
        assert final.edit_count >= 2  # live progress edits before the result
        assert any("step" in old for old in final.history), final.history
        assert "Before: NLL" in final.content and "After: NLL" in final.content
        announcement = await standin.wait_for_channel_message(lambda m: "v1" in m.content)
        assert announcement.mentions_disabled
        assert [a.filename for a in announcement.attachments] == ["versions.png"]
        assert (await app.services.runner.health())["version"] == "v1"
        status = await (await standin.invoke("status")).wait_for_reply()
        assert "**v1**" in status.content and "run #1 v1 promoted" in status.content
        joke = await (await standin.invoke("joke")).wait_for_reply(timeout=30)
        assert joke.content.strip()
        shown = sqlite3.connect(app.db.path).execute("SELECT model_version FROM generated_jokes")
        assert shown.fetchall() == [(1,)]  # the number of the version that wrote it
        manifest = VersionManifest.read(tmp_path / "data" / "models" / "v1")
        run = await app.db.run(1)
        assert manifest.corpus_hash == run.corpus_hash and manifest.corpus_size == 60
        (v1,) = [v for v in await app.db.versions() if v.version == 1]
        assert v1.manifest == manifest.model_dump(mode="json")  # read back as it was written

        models = await (await standin.invoke("models", permissions=ADMIN)).wait_for_reply()
        assert "v1" in models.content and "promoted" in models.content

        back = await (await standin.invoke("rollback", permissions=ADMIN)).wait_for_reply(
            timeout=60
        )
        assert "**v0** serves" in back.content
        assert (await app.services.runner.health())["version"] == "v0"
        forward = await standin.invoke("rollback", {"version": 1}, permissions=ADMIN)
        assert "**v1** serves" in (await forward.wait_for_reply(timeout=60)).content

    # A restart on the same data directory keeps the jokes and the promoted version.
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, settings) as app:
        assert await app.db.joke_count() == 60
        assert (await app.services.runner.health())["version"] == "v1"
        status = await (await standin.invoke("status")).wait_for_reply()
        assert "**v1**" in status.content


async def test_gate_refuses_a_candidate_that_is_not_better(tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, promote_min_nll_gain=0.99)
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, settings) as app:
        await import_jokes(app.db, corpus_lines(20))
        _, final = await retrain(standin)
        assert "was not better, **v0** keeps serving" in final.content, final.content
        assert "below 99.0%" in final.content
        assert (await app.services.runner.health())["version"] == "v0"
        assert not (tmp_path / "data" / "models" / "v1").exists()
        (version,) = [v for v in await app.db.versions() if v.version == 1]
        assert version.status == "rejected" and version.metrics["candidate"]["nll"] > 0


async def test_cancel_stops_training_and_keeps_serving(tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, train_epochs=200)
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, settings) as app:
        await import_jokes(app.db, corpus_lines(60))
        interaction = await standin.invoke("retrain", permissions=ADMIN)
        await interaction.wait_for_reply(lambda m: "step" in m.content, timeout=120)
        cancel = await (await standin.invoke("cancel", permissions=ADMIN)).wait_for_reply()
        assert "Cancelling" in cancel.content
        final = await interaction.wait_for_reply(lambda m: TRAINING_RESULT in m.content, timeout=60)
        assert "cancelled, **v0** keeps serving" in final.content
        assert (await app.services.runner.health())["version"] == "v0"
        models_dir = tmp_path / "data" / "models"
        assert not any(models_dir.glob("v*")) and not any(models_dir.glob(".tmp-*"))
        again = await (await standin.invoke("cancel", permissions=ADMIN)).wait_for_reply()
        assert "No training run" in again.content


async def test_killed_trainer_leaves_no_version_and_is_recorded(tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, train_epochs=200)
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, settings) as app:
        await import_jokes(app.db, corpus_lines(60))
        training = app.services.training
        task = asyncio.create_task(training.train("cli"))
        await wait_until(
            lambda: training.progress and training.progress.step > 0, 60, what="a training step"
        )
        training._process.kill()  # SIGKILL, as the kernel's OOM killer would
        outcome = await task
        assert outcome.status == "failed"
        assert "code -9" in outcome.message
        run = await app.db.run(outcome.run_id)
        assert run.status == "failed" and run.finished_at
        models_dir = tmp_path / "data" / "models"
        assert not any(models_dir.glob("v*")) and not any(models_dir.glob(".tmp-*"))
        assert (await app.services.runner.health())["version"] == "v0"
        status = await (await standin.invoke("status")).wait_for_reply()
        assert f"run #{outcome.run_id} failed" in status.content


async def test_retrain_refuses_a_corpus_too_small_to_learn_from(standin, tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, train_min_jokes=30)
    async with jokebot_app(standin, settings) as app:
        await import_jokes(app.db, SHORT_JOKES)
        reply = await (await standin.invoke("retrain", permissions=ADMIN)).wait_for_reply()
        assert reply.ephemeral
        assert "Not enough jokes to learn from: the corpus has 2 approved jokes" in reply.content
        assert "at least 30" in reply.content
        assert await app.db.last_finished_run() is None  # no run was started
    env = process_env(tmp_path / "data", tiny_model, TRAIN_MIN_JOKES="30")
    done = jokebot_cli("train", env=env, cwd=ROOT)
    assert done.returncode == 1
    assert "Not enough jokes to learn from: the corpus has 2 approved jokes" in done.stdout
