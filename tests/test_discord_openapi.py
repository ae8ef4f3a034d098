"""The loopback Discord checks the bot's requests against Discord's published OpenAPI spec."""

from __future__ import annotations

import pytest

from loopback_discord import ADMINISTRATOR, DEFAULT_MEMBER_PERMISSIONS, BotFailure
from loopback_discord._openapi import OpenAPISpec
from tests.helpers import DISCORD_OPENAPI, jokebot_app

pytestmark = pytest.mark.skipif(
    not DISCORD_OPENAPI.is_file(), reason="needs ../shared/discord-openapi.json"
)


@pytest.fixture(scope="module")
def spec() -> OpenAPISpec:
    return OpenAPISpec.load(DISCORD_OPENAPI)


def test_spec_is_built_once_per_process(spec):
    assert OpenAPISpec.load(DISCORD_OPENAPI) is spec


def test_literal_template_wins_over_a_parameter(spec):
    hook = "/webhooks/1/abc"
    assert spec.operation("PATCH", f"{hook}/messages/@original").template.endswith("@original")
    assert spec.operation("PATCH", f"{hook}/messages/42").template.endswith("{message_id}")


def test_bodies_and_queries_are_checked(spec):
    callback = "/interactions/1/token/callback"
    good = {"type": 4, "data": {"content": "hi", "allowed_mentions": {"parse": []}, "flags": 64}}
    assert spec.problems("POST", callback, {"with_response": "true"}, good) == []
    (problem,) = spec.problems("POST", callback, {}, {"type": 4, "data": {"content": 5}})
    assert "body at /data/content" in problem and "not of type" in problem
    (problem,) = spec.problems("POST", callback, {"with_respons": "true"}, None)
    assert "with_respons" in problem and "not a query parameter" in problem
    assert spec.problems("GET", "/channels/1/messages", {"limit": "500"}, None)
    assert spec.problems("GET", "/no/such/route", {}, None)
    # discord.py numbers new uploads 0, 1, ... as Discord documents; the spec wants snowflakes
    upload = {"content": "file", "attachments": [{"id": 0, "filename": "a.txt"}]}
    assert spec.problems("POST", "/webhooks/1/token", {"wait": "true"}, upload) == []


async def test_a_malformed_body_sent_by_the_bot_fails_the_run(standin, shared_settings):
    import discord

    assert standin.openapi is not None  # conftest turns the checks on for every stand-in
    with pytest.raises(BotFailure, match="OpenAPI mismatch"):
        async with jokebot_app(standin, shared_settings) as app:
            route = discord.http.Route(
                "POST", "/channels/{channel_id}/messages", channel_id=standin.channel_id
            )
            # the stand-in itself accepts this body (it reads tts as truthy); the spec does not
            await app.run.bot.http.request(route, json={"content": "hi", "tts": "yes"})
            (mismatch,) = standin.spec_mismatches
            assert "/channels/{channel_id}/messages" in mismatch and "body at /tts" in mismatch


async def test_a_whole_session_matches_the_spec(app):
    """Commands, button presses (answers 4, 7, followups) and ephemeral refusals alike."""
    for name, options in [("addjoke", {"text": "A joke that matches the spec"}), ("joke", None)]:
        await (await app.standin.invoke(name, options)).wait_for_reply(timeout=30)
    joke = await (await app.standin.invoke("joke")).wait_for_reply(timeout=30)
    for button in ("👍", "🚩", "🔁"):
        press = await app.standin.press(joke, button, user_id=2002, username="bob")
        await press.wait_for_reply(timeout=30)
    admin = DEFAULT_MEMBER_PERMISSIONS | ADMINISTRATOR
    for name, options in [("status", None), ("deljoke", {"id": 1}), ("review", None)]:
        interaction = await app.standin.invoke(name, options, permissions=admin)
        await interaction.wait_for_reply(timeout=30)
    assert app.standin.openapi is not None and app.standin.spec_mismatches == []
    assert any("callback" in request for request in app.standin.requests)
