"""Votes as training data, on a real SQLite file: what the preference snapshot holds (and never
holds), the migration that stores completions, and which votes count as new."""

from __future__ import annotations

import asyncio
import sqlite3

from bot.store.community import CommunityStore
from bot.store.database import Database
from model.contracts.jokes import check_joke
from model.contracts.preferences import VotedJoke, read_preferences, write_preferences
from tests.helpers import database_at_schema


async def _store(tmp_path, **kw) -> CommunityStore:
    db = await Database.open(tmp_path / "j.sqlite3")
    return CommunityStore(db, **kw)


async def _shown(store, text, prompt="", completion=None, requested_by=None) -> int:
    check = check_joke(text)
    return await store.record_shown(
        check.text,
        check.key,
        prompt=prompt,
        model_version=0,
        guild_id=1,
        channel_id=2,
        completion=completion if completion is not None else text,
        requested_by=requested_by,
    )


def test_a_database_of_schema_3_upgrades_and_old_jokes_keep_their_completion(tmp_path):
    path = tmp_path / "old.sqlite3"
    raw = database_at_schema(path, 3)
    raw.execute(
        "INSERT INTO generated_jokes (id, text, norm_key, prompt) VALUES (1, 'Why did the duck"
        " cross? To quack.', 'why did the duck cross to quack', 'Why did  the\nduck')"
    )
    raw.execute("INSERT INTO votes (generated_id, user_id, value) VALUES (1, 5, 1)")
    raw.commit()
    raw.close()

    async def upgrade():
        db = await Database.open(path)
        try:
            assert await db.schema_version() >= 4
            (joke,), _ = await CommunityStore(db).voted_jokes()
            return joke
        finally:
            await db.close()

    joke = asyncio.run(upgrade())
    # the prompt as the runner got it (whitespace folded); the model's part after it
    assert (joke.prompt, joke.completion) == ("Why did the duck", " cross? To quack.")
    assert (joke.up, joke.down, joke.label) == (1, 0, True)
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "vote_exports" in tables


async def test_the_snapshot_labels_votes_and_never_holds_forgotten_or_deleted_jokes(tmp_path):
    store = await _store(tmp_path, promote_at=2)
    liked = await _shown(store, "A liked joke about ducks, quack quack.")
    disliked = await _shown(store, "A disliked joke about cows, moo moo.")
    tie = await _shown(store, "A joke half the room liked, meh.")
    reported = await _shown(store, "An upvoted joke somebody reported, hmm.")
    only_forgotten = await _shown(store, "A joke only the leaving member voted on.")
    asked_by_forgotten = await _shown(
        store,
        "Tell me about my cat Felix: he naps.",
        prompt="Tell me about my cat Felix:",
        completion=" he naps.",
        requested_by=9,
    )
    deleted = await _shown(store, "A joke that joined the corpus and was deleted.")
    await _shown(store, "A joke nobody voted on at all.")
    for user in (1, 2):
        await store.vote(liked, user, 1)
        await store.vote(disliked, user, -1)
        await store.vote(reported, user, 1)
        await store.vote(asked_by_forgotten, user, 1)
        await store.vote(deleted, user, 1)
    await store.vote(tie, 1, 1)
    await store.vote(tie, 2, -1)
    await store.report_generated(reported, 3)
    await store.vote(only_forgotten, 9, 1)
    await store.vote(liked, 9, 1)

    (corpus_copy,) = [j for j in await store.db.corpus() if "deleted" in j.text]
    assert await store.delete_joke(corpus_copy.id)
    await store.vote(deleted, 4, 1)  # a later vote does not bring it back
    await store.forget_member(9)

    jokes, until = await store.voted_jokes()
    by_id = {joke.id: joke for joke in jokes}
    assert set(by_id) == {liked, disliked, tie, reported}
    assert (by_id[liked].up, by_id[liked].label) == (2, True)  # member 9's vote is gone
    assert (by_id[disliked].down, by_id[disliked].label) == (2, False)
    assert by_id[tie].label is None  # a tie teaches nothing
    assert by_id[reported].reported and by_id[reported].label is False  # 🚩 beats 👍
    assert until  # the newest vote's time
    assert not any("Felix" in joke.prompt + joke.completion for joke in jokes)
    assert not any("Felix" in joke.text for joke in await store.db.corpus())

    path = tmp_path / "preferences.jsonl"
    assert write_preferences(path, jokes) == 4
    assert read_preferences(path) == jokes  # the file round-trips
    await store.db.close()


async def test_only_votes_after_the_last_learned_export_are_new(tmp_path):
    store = await _store(tmp_path, promote_at=100)
    first = await _shown(store, "Joke number one about a goose.")
    second = await _shown(store, "Joke number two about a goose.")
    for user in range(1, 4):
        await store.vote(first, user, 1)
    assert await store.new_votes() == 3

    _, until = await store.voted_jokes()
    rejected_run = await store.db.start_run("cli")
    await store.record_vote_export(rejected_run, until, 1)
    assert await store.new_votes() == 3  # not learned: the version was not promoted
    promoted_run = await store.db.start_run("cli")
    await store.record_vote_export(promoted_run, until, 1)
    await store.mark_votes_learned(promoted_run)
    assert await store.new_votes() == 0

    await asyncio.sleep(0.002)  # voted_at has millisecond resolution
    await store.vote(second, 1, -1)
    await store.vote(first, 2, -1)  # a changed vote is news too
    assert await store.new_votes() == 2
    assert await store.new_votes(all_votes=True) == 4
    await store.db.close()


def test_labels_of_voted_jokes():
    def joke(**kw):
        return VotedJoke(id=1, completion="x", key="x", **kw)

    assert joke(up=2, down=1).label is True
    assert joke(up=1, down=3).label is False
    assert joke(up=2, down=2).label is None and joke().label is None
    assert joke(up=5, reported=True).label is False


async def test_jokes_shown_at_once_are_all_exported_with_their_completion(tmp_path):
    store = await _store(tmp_path, promote_at=100)
    ids = await asyncio.gather(
        *(
            _shown(
                store,
                f"Why did goose {n} fly? Because.",
                prompt=f"Why did goose {n}",
                completion=" fly? Because.",
                requested_by=n,
            )
            for n in range(40)
        )
    )
    assert len(set(ids)) == 40
    for generated in ids:
        await store.vote(generated, 1, 1)
    jokes, _ = await store.voted_jokes()
    assert sorted(j.id for j in jokes) == sorted(ids)
    assert {j.completion for j in jokes} == {" fly? Because."}
    await store.db.close()
