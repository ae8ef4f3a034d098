"""A whole training run learns from votes: the bot exports them, the trainer (its own process)
runs the preference phase, the gate measures, the learned votes stop counting as new; and a
run below PREFERENCE_MIN_VOTES, or with PREFERENCE_TRAINING=off, learns nothing from them."""

from __future__ import annotations

from bot.app import open_database
from bot.community.importer import import_jokes
from bot.store.community import CommunityStore
from bot.training.coordinator import TrainingCoordinator
from bot.training.schedule import RetrainScheduler
from bot.training.wording import training_result, versions_table
from model.contracts.jokes import check_joke
from model.contracts.preferences import read_preferences
from tests.helpers import DISLIKED, LIKED, THINGS, corpus_lines, make_settings

VOTERS = (101, 102, 103)


async def shown_and_voted(community: CommunityStore) -> int:
    """/joke answers about animals; three members like the LIKED ones. Returns the votes."""
    votes = 0
    for animal in LIKED + DISLIKED:
        for thing in THINGS:
            check = check_joke(f"My {animal} likes the {thing}.")
            generated = await community.record_shown(
                check.text,
                check.key,
                prompt="",
                model_version=0,
                guild_id=1,
                channel_id=2,
                completion=check.text,
                requested_by=100,
            )
            for voter in VOTERS:
                await community.vote(generated, voter, 1 if animal in LIKED else -1)
                votes += 1
    return votes


def settings_for(tmp_path, tiny_model, **overrides):
    values = {
        "train_epochs": 2,
        "train_min_steps": 10,
        "train_learning_rate": 1e-2,
        "preference_learning_rate": 5e-3,
        "preference_beta": 0.5,
        "community_min_score": 100,  # votes alone here: no voted joke joins the corpus
        "promote_min_diversity": 0.0,  # a tiny model's samples say little about variety
    }
    values.update(overrides)
    return make_settings(tmp_path / "data", tiny_model, **values)


async def test_a_run_learns_from_votes_and_they_stop_being_new(tmp_path, tiny_model):
    settings = settings_for(tmp_path, tiny_model)
    db = await open_database(settings)
    try:
        await import_jokes(db, corpus_lines(40))
        community = CommunityStore(db, promote_at=settings.community_min_score)
        votes = await shown_and_voted(community)
        coordinator = TrainingCoordinator(settings, db, runner=None)
        assert await coordinator.votes_to_learn() == votes == 240

        outcome = await coordinator.train("cli")
        assert outcome.status == "promoted", outcome.message
        candidate = outcome.metrics["candidate"]
        assert candidate["preference"]["ran"]
        learned = candidate["votes_up"] + candidate["votes_down"]
        assert 0 < learned < votes  # the held-out jokes' votes are not learned from
        assert candidate["vote_separation"] > outcome.metrics["serving"]["vote_separation"]
        assert "votes separated" in outcome.message
        assert f"learned from {learned} votes" in training_result(outcome)
        assert f"learned from {learned} votes" in versions_table(await db.versions())

        assert await coordinator.votes_to_learn() == 0  # v1 learned them
        scheduler = RetrainScheduler(settings, coordinator)
        assert await scheduler.tick() is None  # no new jokes, no new votes: nothing to do
    finally:
        await db.close()


async def test_below_the_minimum_or_off_the_votes_only_reach_the_gate_or_nothing(
    tmp_path, tiny_model
):
    settings = settings_for(tmp_path, tiny_model, preference_min_votes=1000)
    db = await open_database(settings)
    try:
        await import_jokes(db, corpus_lines(40))
        await shown_and_voted(CommunityStore(db))
        work = tmp_path / "work"
        work.mkdir()
        coordinator = TrainingCoordinator(settings, db, runner=None)
        run_id = await db.start_run("cli")
        fields = await coordinator.export_votes(run_id, work)
        assert fields["preference_phase"] is False  # 240 new votes, 1000 needed: gate only
        assert len(read_preferences(fields["preferences"])) == 80

        off = TrainingCoordinator(
            settings.model_copy(update={"preference_training": "off"}), db, runner=None
        )
        assert await off.export_votes(run_id, work) == {}
        assert await off.votes_to_learn() == 0
    finally:
        await db.close()
