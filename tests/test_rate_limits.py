"""Rate limits per member and per server, through the real discord.py client."""

from __future__ import annotations

import asyncio

from bot.community.rate_limits import CommandLimits, RateLimiter, parse_rates
from tests.helpers import ADMIN, corpus_lines, jokebot_app, say_addjoke


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
    other = await say_addjoke(app, jokes[25], user_id=5002)
    assert other.ephemeral and other.content.startswith("Stored as #6")


async def test_admins_are_exempt_from_rate_limits(app):
    replies = [await say_addjoke(app, text, permissions=ADMIN) for text in corpus_lines(8)]
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


async def test_concurrent_addjokes_of_one_member_are_counted_exactly(app):
    pending = await asyncio.gather(
        *(app.standin.invoke("addjoke", {"text": t}, user_id=5004) for t in corpus_lines(7))
    )
    replies = [await interaction.wait_for_reply() for interaction in pending]
    assert sum(r.content.startswith("Stored as") for r in replies) == 5
