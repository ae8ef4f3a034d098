"""The content policy: blocklist and word list, held submissions, and /joke writing again."""

from __future__ import annotations

import itertools
import sqlite3

import pytest

from bot.community.content_policy import ContentPolicy
from bot.discord_app.commands.jokes import NO_CLEAN_JOKE
from bot.runners.joke_teller import NoCleanJoke, tell_joke
from model.contracts.jokes import normalise_key
from tests.helpers import SHORT_JOKES, jokebot_app, say_addjoke


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
        reply = await say_addjoke(app, text)
        assert reply.ephemeral and reply.content == "Stored as #1, waiting for review."
        raw = sqlite3.connect(app.db.path)
        assert raw.execute("SELECT text, status FROM jokes").fetchall() == [(text, "pending")]
        assert await app.db.joke_count() == 0  # not in the training corpus
        assert (await say_addjoke(app, SHORT_JOKES[0])).content.startswith("Stored as #2. Thanks!")


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
