"""The community tables on a real SQLite file and a real PostgreSQL database: upgrade in place
(SQLite), votes, reports, deletion (both)."""

from __future__ import annotations

import sqlite3

import pytest

from bot.store.community import CommunityStore
from bot.store.database import Database
from model.contracts.jokes import check_joke
from model.contracts.votes import CommunityScore, wilson_lower_bound
from tests.helpers import add_joke, database_at_schema


async def _store(database_url, **kw) -> CommunityStore:
    """A store on a fresh database: the SQLite file, then a PostgreSQL database."""
    db = await Database.connect(database_url)
    return CommunityStore(db, **kw)


async def _shown(store, text="Why did the cat sit on the computer? To keep an eye on the mouse."):
    check = check_joke(text)
    return await store.record_shown(
        check.text, check.key, prompt="", model_version=0, guild_id=1, channel_id=2
    )


def test_a_database_of_todays_schema_upgrades_in_place(tmp_path):
    path = tmp_path / "old.sqlite3"
    raw = database_at_schema(path, 1)
    raw.execute(
        "INSERT INTO jokes (text, norm_key, author_id, source) VALUES ('Old joke.', 'old joke', 7,"
        " 'user')"
    )
    raw.execute(
        "INSERT INTO model_versions (version, path, status, active) VALUES (0, 'b', 'base', 1)"
    )
    raw.execute("INSERT INTO training_runs (trigger, status) VALUES ('cli', 'rejected')")
    raw.commit()
    raw.close()

    async def upgrade():
        db = await Database.open(path)
        try:
            assert await db.schema_version() >= 3
            assert [j.text for j in await db.corpus()] == ["Old joke."]
            assert (await db.active_version()).version == 0
            assert (await db.last_finished_run()).status == "rejected"
            store = CommunityStore(db)
            gid = await _shown(store)
            assert (await store.vote(gid, 5, 1)).counts.up == 1
        finally:
            await db.close()

    import asyncio

    asyncio.run(upgrade())
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert {"generated_jokes", "votes", "reports", "reviews"} <= tables


async def test_one_vote_per_member_changed_or_withdrawn(database_url):
    store = await _store(database_url, promote_at=100)
    gid = await _shown(store)
    assert (await store.vote(gid, 1, 1)).change == "added"
    second = await store.vote(gid, 1, -1)
    assert (second.change, second.vote, second.counts) == ("changed", -1, second.counts)
    assert (second.counts.up, second.counts.down) == (0, 1)
    gone = await store.vote(gid, 1, -1)
    assert (gone.change, gone.vote, gone.counts.up, gone.counts.down) == ("withdrawn", 0, 0, 0)
    await store.vote(gid, 2, 1)
    await store.vote(gid, 3, 1)
    assert (await store.counts(gid)).up == 2
    await store.db.close()


async def test_upvoted_joke_joins_the_corpus_and_leaves_when_reported(database_url):
    store = await _store(database_url, promote_at=2, community_status="approved")
    gid = await _shown(store)
    await store.vote(gid, 1, 1)
    assert await store.db.joke_count() == 0
    await store.vote(gid, 2, 1)
    corpus = await store.db.corpus()
    assert [j.text for j in corpus] == [(await store.generated(gid)).text]
    row = await store.db.fetchone("SELECT source FROM jokes")
    assert tuple(row) == ("community",)
    await store.report_generated(gid, 3)
    assert await store.db.joke_count() == 0  # reported: never in the corpus
    await store.db.close()


async def test_downvoted_joke_never_joins(database_url):
    store = await _store(database_url, promote_at=1)
    gid = await _shown(store)
    await store.vote(gid, 1, -1)
    await store.vote(gid, 2, -1)
    assert await store.db.joke_count() == 0
    await store.db.close()


async def test_version_scores_with_wilson_bound(database_url):
    store = await _store(database_url, promote_at=100)
    gid = await _shown(store)
    for user in range(4):
        await store.vote(gid, user, 1)
    await store.vote(gid, 9, -1)
    scores = await store.version_scores()
    assert scores == {0: CommunityScore(up=4, down=1)}
    assert scores[0].share == pytest.approx(0.8)
    assert 0.37 < scores[0].lower_bound < 0.38  # Wilson 95% for 4/5
    assert "80% upvoted" in scores[0].describe() and "5 votes" in scores[0].describe()
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(80, 100) > wilson_lower_bound(3, 3)
    await store.db.close()


async def test_reports_hide_a_stored_joke_until_reviewed(database_url):
    store = await _store(database_url, reports_to_hide=2)
    joke = await add_joke(store.db, "A stored joke that people dislike.")
    assert not (await store.report_joke(joke.id, 1)).hidden
    assert not (await store.report_joke(joke.id, 1)).new  # once per member
    assert (await store.report_joke(joke.id, 2)).hidden
    assert await store.db.joke_count() == 0
    pending, left = await store.oldest_pending()
    assert pending.id == joke.id and left == 1
    assert await store.review(joke.id, 99, "approved")
    assert await store.db.joke_count() == 1
    assert not (await store.report_joke(joke.id, 3)).hidden  # reports before the review count not
    await store.db.close()


async def test_a_report_on_a_deleted_joke_leaves_no_report(database_url):
    store = await _store(database_url, reports_to_hide=1)
    try:
        joke = await add_joke(store.db, "A joke deleted before the report arrives.")
        assert await store.delete_joke(joke.id)
        outcome = await store.report_joke(joke.id, 1)
        assert (outcome.new, outcome.hidden) == (False, False)
        assert (await store.member_data(1)).reports == 0
    finally:
        await store.db.close()


async def test_forget_member_frees_the_text_and_erases_votes(database_url):
    store = await _store(database_url, promote_at=100)
    mine = await add_joke(store.db, "My own joke about the moon.", author_id=5)
    gid = await _shown(store)
    await store.vote(gid, 5, 1)
    await store.report_joke(mine.id, 5)
    assert await store.member_data(5) == (await store.forget_member(5))
    assert await store.member_data(5) == type(await store.member_data(5))(0, 0, 0)
    again = await add_joke(store.db, "My own joke about the moon.", author_id=6)
    assert again.created
    assert (await store.counts(gid)).up == 0
    await store.db.close()


async def test_deleted_joke_leaves_the_corpus_and_is_not_re_promoted(database_url):
    store = await _store(database_url, promote_at=1, community_status="approved")
    gid = await _shown(store)
    await store.vote(gid, 1, 1)
    (joke,) = await store.db.corpus()
    assert await store.delete_joke(joke.id)
    await store.vote(gid, 2, 1)
    assert await store.db.corpus() == []
    assert not await store.delete_joke(joke.id)
    await store.db.close()


async def test_a_delete_for_a_member_removes_only_that_members_joke(database_url):
    """/deljoke's ownership check is in the delete's own transaction: an id freed by a deletion
    goes to the next joke added, which may be someone else's."""
    store = await _store(database_url)
    try:
        joke = await add_joke(store.db, "A joke that only its author may delete.", author_id=1)
        assert not await store.delete_joke(joke.id, author_id=2)
        assert await store.joke(joke.id) is not None
        assert await store.delete_joke(joke.id, author_id=1)
        assert await store.joke(joke.id) is None
    finally:
        await store.db.close()
