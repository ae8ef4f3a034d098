"""Near-duplicates, rate limits and the content policy, through the real discord.py client."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3

import pytest

from bot.community.content_policy import ContentPolicy
from bot.community.importer import import_jokes
from bot.community.near_duplicates import NearDuplicateIndex
from bot.community.rate_limits import CommandLimits, RateLimiter, parse_rates
from bot.discord_app.commands.jokes import NO_CLEAN_JOKE
from bot.runners.joke_teller import NoCleanJoke, tell_joke
from loopback_discord import ADMINISTRATOR, DEFAULT_MEMBER_PERMISSIONS
from model.contracts.jokes import normalise_key
from tests.helpers import corpus_lines, jokebot_app

ADMIN = DEFAULT_MEMBER_PERMISSIONS | ADMINISTRATOR
STORED = "I used to hate facial hair, but then it grew on me."


async def addjoke(app, text: str, **member) -> object:
    return await (await app.standin.invoke("addjoke", {"text": text}, **member)).wait_for_reply()


# ---- near-duplicates ---------------------------------------------------------------------


def test_index_finds_near_copies_and_forgets_removed_jokes():
    index = NearDuplicateIndex.from_keys([(1, normalise_key(STORED))], threshold=88)
    assert index.find(normalise_key("I used to hate facial hairs but then it grew on me")) == (
        1,
        pytest.approx(99, abs=1),
    )
    assert index.find(normalise_key("I used to hate facial hair, but then it grow on me."))
    assert index.find(normalise_key("I used to love my job, but then it grew on me.")) is None
    index.remove(1)
    assert index.find(normalise_key(STORED)) is None and len(index) == 0


async def test_near_duplicate_is_refused_with_the_stored_joke_quoted(app):
    assert (await addjoke(app, STORED)).content.startswith("Stored as #1")
    reply = await addjoke(app, "I used to hate my facial hair but then it grew on me!!")
    assert reply.ephemeral and reply.mentions_disabled
    assert reply.content == f"Not stored: that joke is a duplicate of #1:\n> {STORED}"
    assert await app.db.joke_count() == 1
    # a different joke on the same theme is stored
    assert (
        await addjoke(app, "I shaved my beard and now nobody recognises me.")
    ).content.startswith("Stored as #2")


async def test_import_counts_near_copies_as_duplicates(app):
    lines = [STORED, "I used to hate facial hairs but then it grew on me", "A different joke here"]
    summary = await import_jokes(app.db, lines, near_duplicates=app.services.near_duplicates)
    assert (summary.added, summary.duplicates, summary.near_copies) == (2, 1, 1)
    # the running bot's index knows the imported jokes, under their stored ids
    reply = await addjoke(app, "a different joke here!")
    assert "duplicate of #2" in reply.content


# ---- rate limits -------------------------------------------------------------------------


async def test_rate_limiter_keeps_members_apart_and_spares_the_server_allowance():
    limiter = RateLimiter(
        {"addjoke": CommandLimits(parse_rates("3/minute"), parse_rates("5/minute"))}
    )
    first = [await limiter.retry_after("addjoke", 1, 9) for _ in range(10)]
    assert first[:3] == [None] * 3 and all(55 <= wait <= 60 for wait in first[3:])
    # member 1's seven refusals used none of the server's allowance: 2 are left for member 2
    assert [await limiter.retry_after("addjoke", 2, 9) for _ in range(3)][:2] == [None, None]
    assert await limiter.retry_after("joke", 1, 9) is None  # other commands are not limited


async def test_25_quick_addjokes_meet_the_limit_while_another_member_passes(app):
    jokes = corpus_lines(26)
    pending = [
        await app.standin.invoke("addjoke", {"text": text}, user_id=5001) for text in jokes[:25]
    ]
    replies = [await interaction.wait_for_reply() for interaction in pending]
    stored = [r for r in replies if r.content.startswith("Stored as")]
    slowed = [r for r in replies if r.content.startswith("Slow down, try again in")]
    assert len(stored) == 5 and len(slowed) == 20  # RATE_ADDJOKE_MEMBER=5/minute;50/day
    assert all(r.ephemeral for r in replies)
    assert slowed[0].content.endswith(" s.")
    other = await addjoke(app, jokes[25], user_id=5002)
    assert other.ephemeral and other.content.startswith("Stored as #6")


async def test_admins_are_exempt_from_rate_limits(app):
    replies = [await addjoke(app, text, permissions=ADMIN) for text in corpus_lines(8)]
    assert all(r.content.startswith("Stored as") for r in replies)


async def test_joke_rate_limit_answers_before_the_model_runs(standin, shared_settings):
    settings = shared_settings.model_copy(update={"rate_joke_member": "1/minute"})
    async with jokebot_app(standin, settings):
        first = await standin.invoke("joke")
        assert not (await first.wait_for_reply(timeout=30)).ephemeral
        second = await standin.invoke("joke")
        reply = await second.wait_for_reply()
        assert second.ack_type == 4 and reply.ephemeral  # answered at once, no "thinking…"
        assert reply.content.startswith("Slow down, try again in")
        other = await standin.invoke("joke", user_id=5003)
        assert not (await other.wait_for_reply(timeout=30)).ephemeral


# ---- content policy ----------------------------------------------------------------------


def test_policy_modes_and_blocklist_file(tmp_path):
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("# one per line\nmad cow\n", encoding="utf-8")
    policy = ContentPolicy("blocklist", ["Scarecrow"], blocklist)
    assert policy.flags("Why the MAD-cow, though?") == "blocklist: 'mad cow'"
    assert policy.flags("The scarecrow won an award.") == "blocklist: 'scarecrow'"
    assert policy.flags("A madcow is not two words") is None
    assert policy.flags("What a sh1t day") is None  # the word list is only for strict
    blocklist.write_text("award\n", encoding="utf-8")  # edited by the host: read again
    assert policy.flags("He won an award") == "blocklist: 'award'"
    assert ContentPolicy("strict").flags("What a sh1t day") == "word list: 'sh1t'"
    assert ContentPolicy("strict").flags("My fat cat is ugly") is None  # not crude alone
    assert ContentPolicy("off", ["award"]).flags("He won an award") is None


async def test_flagged_submission_is_held_for_review(standin, shared_settings):
    settings = shared_settings.model_copy(update={"content_blocklist": "scarecrow, mad cow"})
    async with jokebot_app(standin, settings) as app:
        text = "Why did the scarecrow win an award? He was outstanding in his field."
        reply = await addjoke(app, text)
        assert reply.ephemeral and reply.content == "Stored as #1, waiting for review."
        raw = sqlite3.connect(app.db.path)
        assert raw.execute("SELECT text, status FROM jokes").fetchall() == [(text, "pending")]
        assert await app.db.joke_count() == 0  # not in the training corpus
        assert (await addjoke(app, STORED)).content.startswith("Stored as #2. Thanks!")


async def test_tell_joke_regenerates_until_the_policy_accepts(shared_settings, shared_runner):
    from bot.runners.client import RunnerClient

    runner = RunnerClient(shared_runner)
    try:
        calls = itertools.count()
        seen: list[str] = []

        def third_time_lucky(text: str) -> bool:
            seen.append(text)
            return next(calls) >= 2

        told = await tell_joke(runner, shared_settings, "My dog", accept=third_time_lucky)
        assert len(seen) == 3 and told.text == seen[-1]
        with pytest.raises(NoCleanJoke):
            await tell_joke(runner, shared_settings, "My dog", accept=lambda text: False)
    finally:
        await runner.close()


async def test_joke_apologises_when_no_clean_joke_comes(standin, shared_settings):
    settings = shared_settings.model_copy(update={"joke_temperature": 0.0})  # greedy: repeatable
    async with jokebot_app(standin, settings) as app:
        prompt = "My dog"
        sample = (await tell_joke(app.services.runner, settings, prompt)).text
        words = normalise_key(sample[len(prompt) :]).split()
        assert words, f"the tiny model wrote no word after the prompt: {sample!r}"
        blocked = max(words, key=len)  # a word the tiny model writes every time
        app.services.content_policy = ContentPolicy("blocklist", [blocked])
        interaction = await standin.invoke("joke", {"prompt": prompt})
        reply = await interaction.wait_for_reply(timeout=30)
        assert reply.ephemeral and reply.content == NO_CLEAN_JOKE
        assert blocked not in normalise_key(reply.content)
        refused = await (
            await standin.invoke("joke", {"prompt": f"{blocked} again"})
        ).wait_for_reply()
        assert refused.ephemeral and "content policy" in refused.content
        app.services.content_policy = ContentPolicy("blocklist", ["zzzunseen"])
        shown = await (await standin.invoke("joke", {"prompt": prompt})).wait_for_reply(timeout=30)
        assert not shown.ephemeral and shown.content == sample


async def test_concurrent_addjokes_of_one_member_are_counted_exactly(app):
    pending = await asyncio.gather(
        *(app.standin.invoke("addjoke", {"text": t}, user_id=5004) for t in corpus_lines(7))
    )
    replies = [await interaction.wait_for_reply() for interaction in pending]
    assert sum(r.content.startswith("Stored as") for r in replies) == 5


async def test_jokes_imported_by_another_process_are_caught_up(app):
    from bot.store.database import Database

    other = await Database.open(app.db.path)  # as `jokebot import` would, beside the bot
    try:
        await import_jokes(other, [STORED])
    finally:
        await other.close()
    reply = await addjoke(app, "I used to hate facial hairs but then it grew on me")
    assert reply.content.startswith("Not stored: that joke is a duplicate of #1:")
