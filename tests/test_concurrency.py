"""Every vote and every submission counts exactly once, however many arrive at once.

On a real SQLite file and a real PostgreSQL database (except what is SQLite's own: its reuse
of ids). Store level (the busy server of issue #16: 160 jokes, five voters each,
eight presses in flight), and through the real discord.py client and the loopback Discord
(50 members on one button, 20 near-copies and 200 distinct jokes sent together).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from pydantic import SecretStr

from bot.community.importer import import_jokes
from bot.community.near_duplicates import NearDuplicateIndex
from bot.community.submissions import NearCopy, indexed, store_unless_near_copy
from bot.store.community import CommunityStore
from bot.store.database import Database
from model.contracts.jokes import check_joke
from tests.helpers import distinct_jokes, jokebot_app

NEAR = "I told my wife she was drawing her eyebrows too high, and she looked surprised."


async def _rows(db: Database, query: str, params=()) -> list[tuple]:
    """What the database holds, read through a connection of its own."""
    return [tuple(row) for row in await db.fetchall(query, params)]


def _near_copies(n: int) -> list[str]:
    """`n` texts with distinct keys, each a one-letter change of NEAR: near-copies of each other."""
    words = NEAR.split()
    copies = []
    for i in range(n):
        changed = list(words)
        position = i % len(words)
        changed[position] = changed[position] + "s" * (1 + i // len(words))
        copies.append(" ".join(changed))
    assert len({check_joke(t).key for t in copies}) == n
    return copies


async def _addjoke_at_once(
    standin, texts: list[str], first_member: int, timeout: float = 30
) -> tuple[list, list]:
    """/addjoke of each text by a member of its own, all sent at once: the interactions and
    the bot's replies, in the order of `texts`."""
    sent = await asyncio.gather(
        *(
            standin.invoke("addjoke", {"text": text}, user_id=first_member + n)
            for n, text in enumerate(texts)
        )
    )
    return sent, await asyncio.gather(*(s.wait_for_reply(timeout=timeout) for s in sent))


async def _shown(store: CommunityStore, n: int) -> list[int]:
    ids = []
    for number in range(n):
        check = check_joke(f"Generated joke number {number}: the punchline is {number * 7}.")
        ids.append(
            await store.record_shown(
                check.text, check.key, prompt="", model_version=0, guild_id=1, channel_id=2
            )
        )
    return ids


async def _in_flight(limit: int, calls) -> list:
    """Await every coroutine with at most `limit` in flight; exceptions are returned, not raised."""
    gate = asyncio.Semaphore(limit)

    async def one(call):
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


def _failures(results: list) -> list[BaseException]:
    return [r for r in results if isinstance(r, BaseException)]


# ---- the store: votes -------------------------------------------------------------------


async def test_160_jokes_5_voters_8_presses_at_a_time_every_vote_counted_once(
    tmp_path, database_url
):
    db = await Database.connect(database_url)
    store = CommunityStore(db, promote_at=3, community_status="approved")
    try:
        jokes = await _shown(store, 160)
        rng = random.Random(16)
        ballots = [(gid, voter, rng.choice((1, -1))) for gid in jokes for voter in range(5)]
        rng.shuffle(ballots)
        results = await _in_flight(8, [store.vote(g, v, value) for g, v, value in ballots])
        assert _failures(results) == []
        assert all(r.change == "added" for r in results)
        assert await _rows(db, "SELECT count(*) FROM votes") == [(800,)]
        expected_up = Counter(g for g, _, value in ballots if value == 1)
        for gid in jokes:
            counts = await store.counts(gid)
            assert (counts.up, counts.down) == (expected_up[gid], 5 - expected_up[gid])
        # the jokes voted up by net 3 or more, and only those, joined the corpus once each
        promoted = {g for g in jokes if 2 * expected_up[g] - 5 >= 3}
        in_corpus = await _rows(
            db, "SELECT id FROM generated_jokes WHERE corpus_joke_id IS NOT NULL"
        )
        assert {row[0] for row in in_corpus} == promoted
        assert await db.joke_count() == len(promoted)
    finally:
        await db.close()


async def test_mixed_votes_withdrawals_reports_deletes_keep_counts_consistent(
    tmp_path, database_url
):
    """Members vote, change, withdraw and report; a moderator deletes what reaches the corpus;
    one member is forgotten: at the end the tables say exactly what the members did."""
    db = await Database.connect(database_url)
    store = CommunityStore(db, promote_at=2, reports_to_hide=2, community_status="approved")
    try:
        jokes = await _shown(store, 12)
        rng = random.Random(7)
        expected_votes: dict[tuple[int, int], int] = {}
        expected_reports: set[tuple[int, int]] = set()
        scripts = []
        for member in range(1, 21):
            steps = []
            for _ in range(12):
                gid = rng.choice(jokes)
                if gid in jokes[:3] and rng.random() < 0.2:  # the others may reach the corpus
                    steps.append(("report", gid, 0))
                    expected_reports.add((member, gid))
                else:  # a vote, sometimes the same one again (withdrawn) or the other one
                    value = rng.choice((1, 1, -1))
                    steps.append(("vote", gid, value))
                    if expected_votes.get((gid, member)) == value:
                        del expected_votes[(gid, member)]
                    else:
                        expected_votes[(gid, member)] = value
            scripts.append((member, steps))
        forgotten = 20  # votes like everyone else, then uses /forgetme
        expected_votes = {k: v for k, v in expected_votes.items() if k[1] != forgotten}
        expected_reports = {r for r in expected_reports if r[0] != forgotten}

        async def member(user: int, steps) -> None:
            for action, gid, value in steps:
                if action == "vote":
                    await store.vote(gid, user, value)
                else:
                    await store.report_generated(gid, user)
                await asyncio.sleep(0)
            if user == forgotten:
                await store.forget_member(user)

        deleted: list[int] = []
        members_done = asyncio.Event()

        async def members() -> None:
            try:
                await asyncio.gather(*(member(user, steps) for user, steps in scripts))
            finally:
                members_done.set()

        async def moderator() -> None:
            while not members_done.is_set():
                for joke in await db.corpus():  # the jokes the community voted in
                    stored = await store.joke(joke.id)
                    if stored and stored.source == "community" and await store.delete_joke(joke.id):
                        deleted.append(joke.id)
                await asyncio.sleep(0.001)

        reported_joke = check_joke("A joke that members report.")
        user_joke = await db.add_joke(reported_joke.text, reported_joke.key, source="user")

        async def reporter(user: int) -> None:
            await store.report_joke(user_joke.id, user)

        results = await asyncio.gather(
            members(),
            moderator(),
            *(reporter(user) for user in range(100, 105)),
            return_exceptions=True,
        )
        assert _failures(results) == []

        votes = await _rows(db, "SELECT generated_id, user_id, value FROM votes")
        assert {(g, u): v for g, u, v in votes} == expected_votes
        reports = await _rows(db, "SELECT user_id, generated_id FROM reports WHERE joke_id IS NULL")
        assert set(reports) == expected_reports
        on_user_joke = (user_joke.id,)
        assert await _rows(db, "SELECT count(*) FROM reports WHERE joke_id = ?", on_user_joke) == [
            (5,)
        ]
        assert await _rows(db, "SELECT status FROM jokes WHERE id = ?", on_user_joke) == [
            ("pending",)
        ]
        reported = {g for _, g in expected_reports}
        for gid in jokes:
            counts = await store.counts(gid)
            up = sum(1 for (g, _), v in expected_votes.items() if g == gid and v == 1)
            down = sum(1 for (g, _), v in expected_votes.items() if g == gid and v == -1)
            assert (counts.up, counts.down) == (up, down)
            ((corpus_id, blocked),) = await _rows(
                db, "SELECT corpus_joke_id, blocked FROM generated_jokes WHERE id = ?", (gid,)
            )
            eligible = not blocked and gid not in reported and up - down >= 2
            assert (corpus_id is not None) == eligible, (gid, up, down, blocked)
        # every community joke in the corpus belongs to exactly one shown joke, and back
        community = await _rows(db, "SELECT id FROM jokes WHERE source = 'community'")
        linked = await _rows(
            db, "SELECT corpus_joke_id FROM generated_jokes WHERE corpus_joke_id IS NOT NULL"
        )
        assert sorted(community) == sorted(linked)
        assert not set(deleted) & {row[0] for row in community}
        # the moderator deleted some, and each deletion blocked its shown joke for good
        blocked = await _rows(db, "SELECT count(*) FROM generated_jokes WHERE blocked")
        assert deleted and blocked == [(len(deleted),)]
    finally:
        await db.close()


# ---- the store: near-copies from two processes ------------------------------------------


async def test_near_copies_imported_by_two_processes_at_once_store_one(database_url):
    """Two processes (gateway shards) share the database, each with its own index: the check
    runs again inside the write transaction against the rows its index had not seen."""
    first, second = await Database.connect(database_url), await Database.connect(database_url)
    try:
        indexes = [NearDuplicateIndex(), NearDuplicateIndex()]
        copies = _near_copies(10)
        results = await asyncio.gather(
            *(
                import_jokes(db, [text], near_duplicates=indexes[i % 2])
                for i, text in enumerate(copies)
                for db in [(first, second)[i % 2]]
            ),
            return_exceptions=True,
        )
        assert _failures(results) == []
        assert sum(r.added for r in results) == 1
        assert sum(r.duplicates for r in results) == 9
        assert await _rows(first, "SELECT count(*) FROM jokes") == [(1,)]
    finally:
        await first.close()
        await second.close()


async def test_the_index_follows_rolled_back_deleted_and_reused_ids(tmp_path):
    db = await Database.open(tmp_path / "j.sqlite3")
    store, index = CommunityStore(db), NearDuplicateIndex()
    a, b = (check_joke(text) for text in distinct_jokes(2))

    async def submit(text: str):
        check = check_joke(text)
        return await store_unless_near_copy(
            db, index, check.text, check.key, source="user", status="approved"
        )

    try:
        with pytest.raises(RuntimeError), indexed(index) as add_to_index:
            async with db.transaction():
                result = await db.add_joke(a.text, a.key, source="user")
                add_to_index(result.id, a.key)
                raise RuntimeError("rolled back")
        assert (len(index), index.highest_id) == (0, 0)  # no trace of the rolled-back joke
        stored = await submit(a.text)
        assert stored.created
        # the newest joke is deleted behind the index's back; SQLite gives its id again
        assert await store.delete_joke(stored.id)
        other = await db.add_joke(b.text, b.key, source="import")  # e.g. by another process
        assert other.id == stored.id
        refused = await submit(b.text[:-1] + "s" + b.text[-1])  # a near-copy of b
        assert isinstance(refused, NearCopy) and (refused.id, refused.text) == (other.id, b.text)
        assert (await submit(a.text)).created  # a was deleted: it may be stored again
    finally:
        await db.close()


# ---- through Discord --------------------------------------------------------------------


@pytest.fixture
def store_settings(shared_settings, database_url):
    """The shared settings on the SQLite file, then on a PostgreSQL database."""
    if database_url.startswith("sqlite"):
        return shared_settings
    return shared_settings.model_copy(update={"database_url": SecretStr(database_url)})


@pytest.fixture
def unlimited_settings(store_settings):
    """No rate limits: the tests send many commands at once on purpose."""
    return store_settings.model_copy(
        update={"rate_addjoke_member": "off", "rate_addjoke_server": "off"}
    )


async def test_50_members_press_the_same_button_at_once_all_counted(standin, store_settings):
    async with jokebot_app(standin, store_settings) as app:
        reply = await (await standin.invoke("joke", {})).wait_for_reply(timeout=30)
        edits_before = reply.edit_count
        presses = await asyncio.gather(
            *(standin.press(reply, "👍", user_id=5000 + n, username=f"m{n}") for n in range(50))
        )
        notes = await asyncio.gather(*(p.wait_for_reply(timeout=30) for p in presses))
        assert all(p.ack_type in (6, 7) and p.ack_latency < 3 for p in presses)  # 6: deferred
        assert all(n.ephemeral and n.content.startswith("You voted 👍") for n in notes)
        assert await _rows(app.db, "SELECT count(*), sum(value) FROM votes") == [(50, 50)]
        assert reply.edit_count - edits_before == 50  # each press edited the counts once
        last = await standin.press(reply, "👍", user_id=6000, username="late")
        await last.wait_for_reply(timeout=30)
        assert reply.buttons[0]["label"] == "Upvote · 51"


async def test_20_concurrent_near_copies_via_addjoke_store_one(standin, unlimited_settings):
    async with jokebot_app(standin, unlimited_settings) as app:
        _, replies = await _addjoke_at_once(standin, _near_copies(20), first_member=7000)
        assert all(r.ephemeral and r.mentions_disabled for r in replies)
        stored = [r for r in replies if r.content.startswith("Stored as #")]
        assert len(stored) == 1
        (row,) = await _rows(app.db, "SELECT id, text FROM jokes")
        refusal = f"Not stored: that joke is a duplicate of #{row[0]}:\n> {row[1]}"
        assert sorted(r.content for r in replies if r not in stored) == [refusal] * 19


async def test_200_concurrent_distinct_addjokes_all_stored_once(standin, unlimited_settings):
    async with jokebot_app(standin, unlimited_settings) as app:
        jokes = distinct_jokes(200)
        sent, replies = await _addjoke_at_once(standin, jokes, first_member=8000, timeout=60)
        assert all(s.ack_latency is not None and s.ack_latency < 3 for s in sent)
        assert all(r.content.startswith("Stored as #") for r in replies), Counter(
            r.content[:40] for r in replies
        )
        rows = await _rows(app.db, "SELECT id, text, author_id FROM jokes")
        assert len(rows) == 200
        assert sorted(text for _, text, _ in rows) == sorted(check_joke(t).text for t in jokes)
        ids = sorted(int(r.content.split("#")[1].split(".")[0]) for r in replies)
        assert ids == sorted(row[0] for row in rows)
