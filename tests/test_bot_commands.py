"""Every command path through the real discord.py client and the loopback Discord."""

from __future__ import annotations

import sqlite3

import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.runners.joke_teller import MAX_PROMPT_CHARS
from loopback_discord import CommandHidden
from model.contracts.jokes import MAX_JOKE_CHARS
from tests.helpers import ADMIN, free_port, jokebot_app


async def test_commands_are_registered_with_their_options(app):
    commands = app.standin.registered_commands
    assert {"joke", "addjoke", "status", "retrain", "rollback", "models", "cancel"} <= set(commands)
    (prompt,) = commands["joke"]["options"]
    assert prompt["name"] == "prompt" and not prompt.get("required", False)
    (text,) = commands["addjoke"]["options"]
    assert text["name"] == "text" and text["required"] is True
    assert int(commands["retrain"]["default_member_permissions"]) == 1 << 5  # Manage Server


async def test_joke_is_deferred_then_followed_up(app):
    interaction = await app.standin.invoke("joke")
    reply = await interaction.wait_for_reply(timeout=30)
    assert interaction.ack_type == 5  # deferred first: inside Discord's 3 s window
    assert interaction.ack_latency < 3
    assert reply.content.strip()
    assert len(reply.content) <= 2000
    assert not reply.ephemeral
    assert reply.mentions_disabled


async def test_joke_with_prompt_starts_with_the_prompt(app):
    interaction = await app.standin.invoke("joke", {"prompt": "A horse walks into a bar"})
    reply = await interaction.wait_for_reply(timeout=30)
    assert reply.content.startswith("A horse walks into a bar")


async def test_mentions_in_generated_text_never_ping(app):
    interaction = await app.standin.invoke("joke", {"prompt": "@everyone <@&42> <@1001>"})
    reply = await interaction.wait_for_reply(timeout=30)
    assert "@everyone" in reply.content
    assert reply.mentions_disabled


async def test_overlong_prompt_is_refused_politely(app):
    interaction = await app.standin.invoke("joke", {"prompt": "x" * (MAX_PROMPT_CHARS + 1)})
    reply = await interaction.wait_for_reply()
    assert reply.ephemeral and "keep it under" in reply.content


async def test_addjoke_stores_and_commits_before_replying(app):
    interaction = await app.standin.invoke(
        "addjoke", {"text": "I used to hate facial hair, but then it grew on me."}, user_id=4242
    )
    reply = await interaction.wait_for_reply()
    assert reply.ephemeral
    assert reply.content.startswith("Stored as #1")
    raw = sqlite3.connect(app.db.path)
    assert raw.execute("SELECT text, author_id, guild_id, source FROM jokes").fetchall() == [
        (
            "I used to hate facial hair, but then it grew on me.",
            4242,
            app.standin.guild_id,
            "user",
        )
    ]


async def test_duplicate_is_called_a_duplicate(app):
    first = await app.standin.invoke("addjoke", {"text": "Why did the chicken cross the road?"})
    assert "Stored as #1" in (await first.wait_for_reply()).content
    again = await app.standin.invoke("addjoke", {"text": "why did the CHICKEN cross the road!!"})
    reply = await again.wait_for_reply()
    assert reply.ephemeral
    assert "duplicate of #1" in reply.content
    assert await app.db.joke_count() == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("   ", "empty"),
        ("x" * (MAX_JOKE_CHARS + 1), "limit is 280"),
        ("<@123> @everyone https://example.com", "mentions, links or symbols"),
        ("tab\x07bell joke", "control characters"),
    ],
)
async def test_bad_jokes_are_refused_ephemerally_and_not_stored(app, text, expected):
    interaction = await app.standin.invoke("addjoke", {"text": text})
    reply = await interaction.wait_for_reply()
    assert reply.ephemeral
    assert expected in reply.content
    assert reply.content.startswith("Not stored")
    assert await app.db.joke_count() == 0


async def test_addjoke_reply_never_pings(app):
    interaction = await app.standin.invoke("addjoke", {"text": "@everyone knows this one, friends"})
    reply = await interaction.wait_for_reply()
    assert reply.mentions_disabled


async def test_retrain_is_hidden_from_members_by_discord(app):
    with pytest.raises(CommandHidden):
        await app.standin.invoke("retrain")


async def test_admin_commands_delivered_anyway_are_refused(app):
    for name in ("retrain", "rollback", "models", "cancel"):
        interaction = await app.standin.invoke(name, respect_default_permissions=False)
        reply = await interaction.wait_for_reply()
        assert reply.ephemeral, name
        assert "only server managers" in reply.content, name
    raw = sqlite3.connect(app.db.path)
    assert raw.execute("SELECT count(*) FROM training_runs").fetchone() == (0,)


async def test_configured_admin_role_may_list_models(standin, shared_settings):
    settings = shared_settings.model_copy(update={"admin_role_ids": [standin.admin_role_id]})
    async with jokebot_app(standin, settings) as running:
        interaction = await running.standin.invoke(
            "models", roles=[standin.admin_role_id], respect_default_permissions=False
        )
        reply = await interaction.wait_for_reply()
        assert "v0" in reply.content and "base" in reply.content


async def test_status_reports_version_and_corpus(app):
    await (
        await app.standin.invoke("addjoke", {"text": "A joke for the status test"})
    ).wait_for_reply()
    interaction = await app.standin.invoke("status")
    reply = await interaction.wait_for_reply()
    assert "**v0**" in reply.content
    assert "Corpus: 1 jokes, 1 new since the last training" in reply.content
    assert "Last training: never" in reply.content
    assert reply.ephemeral


async def test_runner_unavailable_is_a_polite_message(standin, shared_settings):
    dead = f"http://127.0.0.1:{free_port()}"
    async with jokebot_app(standin, shared_settings) as running:
        running.services.runner.replicas[0].client.base_url = dead
        running.services.runner.replicas[0].client._backoff = 0.01
        interaction = await standin.invoke("joke")
        reply = await interaction.wait_for_reply(timeout=30)
        assert reply.ephemeral
        assert reply.content == "The joke machine is unavailable, try again shortly."
        status = await (await standin.invoke("status")).wait_for_reply()
        assert "Runner: unavailable" in status.content


async def test_busy_runner_asks_to_retry_later(standin, shared_settings):
    async def busy(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"message": "queue full", "type": "overloaded"}},
            status=429,
            headers={"Retry-After": "7"},
        )

    server = web.Application()
    server.router.add_post("/v1/completions", busy)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with jokebot_app(standin, shared_settings) as running:
            running.services.runner.replicas[0].client.base_url = f"http://127.0.0.1:{port}"
            reply = await (await standin.invoke("joke")).wait_for_reply(timeout=30)
            assert reply.ephemeral
            assert reply.content == "The joke machine is busy, try again in 7 s."
    finally:
        await runner.cleanup()


async def test_error_inside_a_command_is_reported_and_the_bot_survives(standin, shared_settings):
    async with jokebot_app(standin, shared_settings, allow_errors=True) as running:

        async def broken(*args, **kwargs):
            raise RuntimeError("disk on fire")

        running.services.db.add_joke = broken
        reply = await (
            await standin.invoke("addjoke", {"text": "a perfectly fine joke"})
        ).wait_for_reply()
        assert reply.ephemeral and "something went wrong" in reply.content
        assert any("disk on fire" in str(r.exc_info) for r in running.run.records if r.exc_info)
        status = await (await standin.invoke("status")).wait_for_reply()
        assert "**v0**" in status.content  # still answering


async def test_rollback_with_nothing_earlier_is_refused(app):
    interaction = await app.standin.invoke("rollback", permissions=ADMIN)
    reply = await interaction.wait_for_reply(timeout=30)
    assert reply.ephemeral and "Rollback refused" in reply.content


async def test_remote_runner_token_is_used_for_admin_load(shared_settings):
    # A wrong token is refused by the runner; the bot reports it rather than crashing.
    from bot.runners.client import RunnerClient, RunnerError

    client = RunnerClient(shared_settings.runner_url, admin_token="wrong")
    with pytest.raises(RunnerError):
        await client.load(shared_settings.model_base, "v9")
    await client.close()
    assert isinstance(shared_settings.runner_token, SecretStr)
