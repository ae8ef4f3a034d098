"""RetrainScheduler.tick: skips while a run is under way or too few jokes came, else trains
(a real trainer process on the tiny GPT-2) and hands the outcome to the announcer."""

from __future__ import annotations

import asyncio

from bot.app import open_database
from bot.community.importer import import_jokes
from bot.training.coordinator import TrainingBusy, TrainingCoordinator, TrainingOutcome
from bot.training.schedule import RetrainScheduler
from bot.training.wording import training_result
from tests.helpers import corpus_lines, make_settings


async def test_tick_skips_then_trains_and_announces_the_outcome(tmp_path, tiny_model):
    settings = make_settings(
        tmp_path / "data", tiny_model, retrain_min_new_jokes=20, train_epochs=1, train_min_steps=2
    )
    db = await open_database(settings)
    announced: list[TrainingOutcome] = []

    async def announce(outcome: TrainingOutcome) -> None:
        announced.append(outcome)

    try:
        training = TrainingCoordinator(settings, db, runner=None)
        scheduler = RetrainScheduler(settings, training)
        scheduler.start(announce=announce)  # RETRAIN_SCHEDULE is off: only the announcer is set
        await import_jokes(db, corpus_lines(10))
        assert await scheduler.tick() is None  # 10 new jokes, 20 needed
        await import_jokes(db, corpus_lines(30))
        async with training._lock:  # a run (say an admin's /retrain) is under way
            assert await scheduler.tick() is None
        assert announced == [] and await db.last_finished_run() is None

        outcome = await scheduler.tick()
        assert outcome is not None and outcome.status in {"promoted", "rejected"}, outcome
        assert announced == [outcome]
        assert training_result(outcome).startswith(f"Training run #{outcome.run_id} ")
        run = await db.run(outcome.run_id)
        assert run.trigger == "schedule"
        assert await scheduler.tick() is None  # nothing new since that run
    finally:
        await db.close()


async def test_of_runs_asked_for_at_once_one_trains_and_the_others_are_refused(
    tmp_path, tiny_model
):
    """Eight /retrain (or schedule ticks) at the same moment: exactly one training run."""
    settings = make_settings(tmp_path / "data", tiny_model, train_epochs=1, train_min_steps=2)
    db = await open_database(settings)
    try:
        await import_jokes(db, corpus_lines(30))
        training = TrainingCoordinator(settings, db, runner=None)
        results = await asyncio.gather(
            *(training.train("admin", requested_by=n) for n in range(8)), return_exceptions=True
        )
        outcomes = [r for r in results if isinstance(r, TrainingOutcome)]
        refused = [r for r in results if isinstance(r, TrainingBusy)]
        assert len(outcomes) == 1 and len(refused) == 7, results
        assert outcomes[0].status in {"promoted", "rejected"}, outcomes[0]
        assert (await db.last_finished_run()).id == outcomes[0].run_id
        assert (await db.fetchone("SELECT count(*) FROM training_runs"))[0] == 1
        assert await db.next_version_number() <= 2  # one version at most was made
    finally:
        await db.close()
