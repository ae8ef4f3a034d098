"""The loopback Discord with the real discord.py client: a small bot logs in, syncs, answers."""

from __future__ import annotations

import asyncio
import io
import json
import time

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from loopback_discord import (
    ADMINISTRATOR,
    DEFAULT_MEMBER_PERMISSIONS,
    MANAGE_GUILD,
    BotFailure,
    CommandHidden,
    InvalidOptions,
    LoopbackDiscord,
    UnknownCommand,
    running_bot,
)
from tests.helpers import plain_bot, wait_until

NO_MENTIONS = discord.AllowedMentions.none()


def make_bot(standin: LoopbackDiscord, *, guild_commands: bool = False) -> commands.Bot:
    """A small bot: app commands covering responses, defers, followups, edits, channel posts."""
    bot = plain_bot(guild_id=standin.guild_id if guild_commands else None)
    bot.seen = []  # type: ignore[attr-defined]

    @bot.tree.command(description="Echo the options back")
    async def echo(
        interaction: discord.Interaction,
        text: str,
        times: int = 1,
        shout: bool = False,
        ratio: float = 1.0,
    ) -> None:
        bot.seen.append((text, times, shout, ratio))  # type: ignore[attr-defined]
        out = " ".join([text.upper() if shout else text] * times)
        await interaction.response.send_message(f"{out} x{ratio}", allowed_mentions=NO_MENTIONS)

    @bot.tree.command(description="Defer, then answer with followups")
    @app_commands.describe(ephemeral="Defer ephemerally", followup_ephemeral="Ask for ephemeral")
    async def slow(
        interaction: discord.Interaction, ephemeral: bool = False, followup_ephemeral: bool = False
    ) -> None:
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        await interaction.followup.send("first", ephemeral=followup_ephemeral)
        await interaction.followup.send("second", ephemeral=followup_ephemeral)

    @bot.tree.command(description="Answer ephemerally")
    async def secret(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("only you", ephemeral=True)

    @bot.tree.command(description="Defer and stream by editing the original")
    async def stream(interaction: discord.Interaction, words: int = 3) -> None:
        await interaction.response.defer(thinking=True)
        parts: list[str] = []
        for i in range(words):
            parts.append(f"w{i}")
            await interaction.edit_original_response(content=" ".join(parts))

    @bot.tree.command(description="Answer, then edit the answer")
    async def edit(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("draft")
        await interaction.edit_original_response(content="final")

    @bot.tree.command(description="Post to the channel and edit the post")
    async def announce(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("posting", ephemeral=True)
        assert interaction.channel is not None
        msg = await interaction.channel.send("announcement v1", allowed_mentions=NO_MENTIONS)
        await msg.edit(content="announcement v2", allowed_mentions=NO_MENTIONS)

    @bot.tree.command(description="Server managers only")
    @app_commands.default_permissions(manage_guild=True)
    async def admin(interaction: discord.Interaction) -> None:
        if not interaction.permissions.manage_guild:  # the bot checks for itself as well
            await interaction.response.send_message("not allowed", ephemeral=True)
            return
        await interaction.response.send_message("admin ok", ephemeral=True)

    @bot.tree.command(description="Take too long to answer")
    async def sleepy(interaction: discord.Interaction, delay: float = 0.3) -> None:
        await asyncio.sleep(delay)
        await interaction.response.send_message("too late")

    @bot.tree.command(description="Try to send too much")
    async def long(interaction: discord.Interaction, length: int = 2001) -> None:
        try:
            await interaction.response.send_message("x" * length)
        except discord.HTTPException as exc:
            bot.seen.append((exc.status, exc.code))  # type: ignore[attr-defined]
            await interaction.response.send_message(f"failed {exc.status} {exc.code}")

    @bot.tree.command(description="Mentions")
    async def ping(interaction: discord.Interaction, safe: bool = True) -> None:
        content = f"@everyone look, {interaction.user.mention}"
        if safe:
            await interaction.response.send_message(content, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(content)

    @bot.tree.command(description="Break")
    async def broken(interaction: discord.Interaction) -> None:
        raise RuntimeError("handler bug")

    @bot.tree.command(description="Who is that")
    async def whois(interaction: discord.Interaction, member: discord.Member) -> None:
        bot.seen.append(member)  # type: ignore[attr-defined]
        await interaction.response.send_message(f"that is {member.name}")

    @bot.tree.command(description="Upload a file")
    async def upload(interaction: discord.Interaction) -> None:
        file = discord.File(io.BytesIO(b"hello file"), filename="joke.txt", description="a joke")
        await interaction.response.send_message("here", file=file)

    @bot.tree.command(description="Fail after a public defer, as bot.discord_app.replies does")
    async def oops(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.delete_original_response()
        await interaction.followup.send("sorry", ephemeral=True)

    @bot.tree.command(description="Answer, then a followup that is too long")
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("one")
        try:
            await interaction.followup.send("x" * 2001)
        except discord.HTTPException as exc:
            await interaction.followup.send(f"followup failed {exc.code}")

    @bot.tree.command(description="Open a form")
    async def form(interaction: discord.Interaction) -> None:
        modal = discord.ui.Modal(title="Tell a joke", custom_id="joke-form")
        modal.add_item(discord.ui.TextInput(label="Joke", custom_id="text"))
        await interaction.response.send_modal(modal)

    @bot.tree.command(description="Pick a role and a channel")
    async def pick(
        interaction: discord.Interaction, role: discord.Role, channel: discord.TextChannel
    ) -> None:
        await interaction.response.send_message(f"{role.name} in #{channel.name}")

    group = app_commands.Group(name="config", description="Settings")

    @group.command(name="set", description="Set a value")
    @app_commands.describe(value="1 to 10")
    async def config_set(
        interaction: discord.Interaction, key: str, value: app_commands.Range[int, 1, 10]
    ) -> None:
        await interaction.response.send_message(f"{key}={value}")

    bot.tree.add_command(group)

    if guild_commands:

        @bot.tree.command(description="Guild only", guild=discord.Object(id=standin.guild_id))
        async def local(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"guild {interaction.guild_id}")

    return bot


@pytest.fixture
async def standin():
    async with LoopbackDiscord() as s:
        yield s


async def test_login_sync_and_guild(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        assert standin.connected_sessions == 1
        assert bot.user is not None and bot.user.id == standin.bot_user_id
        cmds = standin.registered_commands
        assert {"echo", "slow", "admin", "config"} <= set(cmds)
        assert cmds["echo"]["application_id"] == str(standin.application_id)
        assert cmds["echo"]["id"] and cmds["echo"]["version"]
        assert cmds["admin"]["default_member_permissions"] == str(MANAGE_GUILD)
        assert cmds["echo"]["default_member_permissions"] is None
        await asyncio.wait_for(bot.wait_until_ready(), 5)
        guild = bot.get_guild(standin.guild_id)
        assert guild is not None and guild.get_channel(standin.channel_id) is not None
        assert guild.get_role(standin.admin_role_id).permissions.administrator
        assert not guild.get_role(standin.member_role_id).permissions.administrator
        assert guild.me is not None
        fetched = await bot.tree.fetch_commands()
        assert {c.name for c in fetched} == set(cmds)
    assert standin.unhandled_routes == []
    assert bot.is_closed()


async def test_slash_command_with_options(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke(
            "echo", {"text": "hi", "times": 2, "shout": True, "ratio": 0.5}
        )
        reply = await inter.wait_for_reply()
        assert reply.content == "HI HI x0.5"
        assert reply.kind == "response" and not reply.ephemeral
        assert inter.ack_type == 4 and inter.ack_latency is not None
        assert inter.ack_latency < 1.0
        assert bot.seen == [("hi", 2, True, 0.5)]
        assert {o["name"]: o["type"] for o in inter.options} == {
            "text": 3,
            "times": 4,
            "shout": 5,
            "ratio": 10,
        }


async def test_option_validation(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        with pytest.raises(InvalidOptions):
            await standin.invoke("echo", {})  # text is required
        with pytest.raises(InvalidOptions):
            await standin.invoke("echo", {"text": "a", "nope": 1})
        with pytest.raises(InvalidOptions):
            await standin.invoke("config set", {"key": "k", "value": 11})  # Range[1, 10]
        with pytest.raises(UnknownCommand):
            await standin.invoke("nosuchcommand")
        with pytest.raises(UnknownCommand):
            await standin.invoke("config")  # a group needs a subcommand
        # strings are coerced to the declared type (the sandbox passes typed text)
        inter = await standin.invoke("config set", {"key": "k", "value": "7"})
        assert (await inter.wait_for_reply()).content == "k=7"
        assert inter.options == [
            {"type": 1, "name": "set", "options": [
                {"name": "key", "type": 3, "value": "k"},
                {"name": "value", "type": 4, "value": 7},
            ]}
        ]  # fmt: skip


async def test_user_option_is_resolved(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("whois", {"member": standin.bot_user_id})
        assert (await inter.wait_for_reply()).content == "that is jokebot"
        member = bot.seen[-1]
        assert isinstance(member, discord.Member) and member.id == standin.bot_user_id


async def test_defer_then_followups(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("slow")
        await inter.wait_for_reply(lambda m: m.content == "second")
        assert inter.ack_type == 5 and not inter.deferred_ephemeral
        first, second = inter.messages
        assert [m.kind for m in inter.messages] == ["followup", "followup"]
        # the first followup after a defer replaces the "thinking…" message
        assert first.id == inter.original_id and inter.original is first
        assert second.id != first.id


async def test_ephemeral_flags(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("secret")
        msg = await inter.wait_for_reply()
        assert msg.ephemeral and msg.flags & 64

        inter = await standin.invoke("slow", {"ephemeral": True})
        await inter.wait_for_reply(lambda m: m.content == "second")
        assert inter.deferred_ephemeral
        assert [m.ephemeral for m in inter.messages] == [True, False]

        # Discord: after a public defer the first followup is public whatever it asks for
        inter = await standin.invoke("slow", {"followup_ephemeral": True})
        await inter.wait_for_reply(lambda m: m.content == "second")
        assert [m.ephemeral for m in inter.messages] == [False, True]


async def test_edit_original_live(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("stream", {"words": 4})
        msg = await inter.wait_for_edit_count(4)
        assert msg.kind == "original" and msg.content == "w0 w1 w2 w3"
        assert msg.history == ["", "w0", "w0 w1", "w0 w1 w2"]
        assert inter.messages == [msg] and msg.id == inter.original_id

        inter = await standin.invoke("edit")
        msg = await inter.wait_for_edit_count(1)
        assert msg.kind == "response" and msg.content == "final" and msg.history == ["draft"]


async def test_channel_message_post_and_edit(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("announce")
        assert (await inter.wait_for_reply()).ephemeral
        msg = await standin.wait_for_channel_message(lambda m: m.content.endswith("v2"))
        assert msg.kind == "channel" and msg.history == ["announcement v1"]
        assert msg.mentions_disabled
        assert standin.channel_messages == [msg]


async def test_default_member_permissions_hide_command(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        with pytest.raises(CommandHidden):
            await standin.invoke("admin")
        # an admin role, the Manage Server bit, or ADMINISTRATOR make it visible
        inter = await standin.invoke("admin", roles=[standin.admin_role_id])
        assert (await inter.wait_for_reply()).content == "admin ok"
        assert int(inter.payload["member"]["permissions"]) & ADMINISTRATOR
        inter = await standin.invoke("admin", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
        assert (await inter.wait_for_reply()).content == "admin ok"
        # delivered anyway (stale client, misconfigured override): the bot must still refuse
        inter = await standin.invoke("admin", respect_default_permissions=False)
        assert (await inter.wait_for_reply()).content == "not allowed"


async def test_late_ack_is_unknown_interaction(standin: LoopbackDiscord) -> None:
    standin.ack_timeout = 0.2  # Discord's is 3 s; shorter keeps the test fast
    bot = make_bot(standin)
    async with running_bot(bot, standin, allow_errors=True) as run:
        inter = await standin.invoke("sleepy", {"delay": 0.3})
        await wait_until(lambda: inter.errors, what="refused: the late answer")
        assert inter.errors[0]["code"] == 10062
        assert inter.errors[0]["status"] == 404
        assert inter.ack_type is None and inter.late_ack_latency >= 0.2
        await wait_until(lambda: run.errors, what="logged: the command's exception")
        assert "Ignoring exception in command 'sleepy'" in run.errors[0]
        assert "10062" in run.errors[0]  # the traceback is part of the collected text


async def test_content_over_2000_chars_is_rejected(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("long", {"length": 2001})
        reply = await inter.wait_for_reply()
        assert reply.content == "failed 400 50035"
        assert inter.errors[0]["errors"] == {
            "data": {
                "content": {
                    "_errors": [
                        {
                            "code": "BASE_TYPE_MAX_LENGTH",
                            "message": "Must be 2000 or fewer in length.",
                        }
                    ]
                }
            }
        }
        inter = await standin.invoke("long", {"length": 2000})
        assert len((await inter.wait_for_reply()).content) == 2000


async def test_wrong_token_fails_login(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    with pytest.raises(discord.LoginFailure):
        async with running_bot(bot, standin, token="not-the-token", ready_timeout=5):
            pass
    assert standin.auth_failures == ["GET /users/@me"]
    assert discord.http.Route.BASE == "https://discord.com/api/v10"  # restored


async def test_wrong_token_at_gateway_closes_4004(standin: LoopbackDiscord) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(standin.gateway_url) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 0, "properties": {}}})
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4004


async def test_unhandled_route_is_recorded(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin, fail_on_unhandled_routes=False):
        route = discord.http.Route("GET", "/guilds/{guild_id}/bans", guild_id=standin.guild_id)
        with pytest.raises(discord.NotFound) as info:
            await bot.http.request(route)
        assert info.value.text == "404: Not Found"
    assert standin.unhandled_routes == [f"GET /guilds/{standin.guild_id}/bans"]


async def test_unhandled_route_fails_the_run(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    with pytest.raises(BotFailure, match="unhandled REST routes"):
        async with running_bot(bot, standin):
            with pytest.raises(discord.NotFound):
                await bot.http.request(discord.http.Route("GET", "/voice/regions"))


async def test_allowed_mentions_captured(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("ping")
        safe = await inter.wait_for_reply()
        assert safe.allowed_mentions == {"parse": []}
        assert safe.mentions_disabled and safe.pings == []
        inter = await standin.invoke("ping", {"safe": False})
        unsafe = await inter.wait_for_reply()
        assert not unsafe.mentions_disabled
        assert unsafe.pings == ["everyone", "user:1001"]


async def test_broken_handler_fails_fast(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    started = time.monotonic()
    with pytest.raises(BotFailure, match="handler bug"):
        async with running_bot(bot, standin):
            inter = await standin.invoke("broken")
            await inter.wait_for_reply(timeout=10)
    assert time.monotonic() - started < 3


async def test_guild_command_carries_guild_id(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin, guild_commands=True)
    async with running_bot(bot, standin):
        assert standin.guild_commands["local"]["guild_id"] == str(standin.guild_id)
        inter = await standin.invoke("local")
        assert inter.payload["data"]["guild_id"] == str(standin.guild_id)
        assert (await inter.wait_for_reply()).content == f"guild {standin.guild_id}"


async def test_gateway_reconnect_resumes(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        await standin.request_reconnect()
        await wait_until(
            lambda: standin.resume_count and standin.connected_sessions == 1, what="resumed"
        )
        assert standin.resume_count == 1 and standin.identify_count == 1
        inter = await standin.invoke("secret")
        assert (await inter.wait_for_reply()).content == "only you"


async def test_rest_details(standin: LoopbackDiscord) -> None:
    """Content-Type exactly application/json, 401 without the token, 404 JSON errors."""
    headers = {"Authorization": f"Bot {standin.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{standin.api_base}/users/@me", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["id"] == str(standin.bot_user_id)
        async with session.get(f"{standin.api_base}/users/@me") as resp:
            assert resp.status == 401
            assert json.loads(await resp.text()) == {"message": "401: Unauthorized", "code": 0}
        url = f"{standin.api_base}/webhooks/{standin.application_id}/nope/messages/@original"
        async with session.get(url) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == 50027
    assert standin.unhandled_routes == []


async def test_stop_closes_gateway_sockets() -> None:
    standin = LoopbackDiscord()
    await standin.start()
    bot = make_bot(standin)
    try:
        # the bot logs its reconnect attempts as errors: allowed here
        async with running_bot(bot, standin, allow_errors=True):
            assert standin.connected_sessions == 1
            await standin.stop()
            assert standin.connected_sessions == 0
    finally:
        await standin.stop()


async def test_file_upload_is_captured(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("upload")
        msg = await inter.wait_for_reply()
        assert msg.content == "here"
        [att] = msg.attachments
        assert (att.filename, att.data, att.description) == ("joke.txt", b"hello file", "a joke")
        # a public interaction message is in the channel too, with a link to the file
        channel = bot.get_partial_messageable(standin.channel_id)
        fetched = await channel.fetch_message(msg.id)
        assert fetched.content == "here"
        assert await fetched.attachments[0].read() == b"hello file"


async def test_delete_deferred_then_ephemeral_followup(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    events: list[str] = []
    standin.add_listener(lambda event, msg, inter: events.append(event))
    async with running_bot(bot, standin):
        inter = await standin.invoke("oops")
        msg = await inter.wait_for_reply()
        # the placeholder was deleted, so the followup is a new message and may be ephemeral
        assert msg.content == "sorry" and msg.ephemeral and msg.id != inter.original_id
        assert inter.original is not None and inter.original.deleted
        assert events == ["defer", "delete", "message"]


async def test_double_ack_and_followup_errors(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("twice")
        msg = await inter.wait_for_reply(lambda m: m.content.startswith("followup failed"))
        assert msg.content == "followup failed 50035"
        assert [e["code"] for e in inter.errors] == [50035]
        # and the server itself refuses a second acknowledgement
        url = f"{standin.api_base}/interactions/{inter.id}/{inter.token}/callback"
        body = {"type": 4, "data": {"content": "again"}}
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 40060


async def test_modal_is_recorded(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("form")
        assert await inter.wait_for_ack() == 9
        assert inter.modal is not None and inter.modal["custom_id"] == "joke-form"


async def test_role_and_channel_options(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke(
            "pick", {"role": standin.admin_role_id, "channel": f"<#{standin.channel_id}>"}
        )
        assert (await inter.wait_for_reply()).content == "Admin in #jokes"
        with pytest.raises(InvalidOptions):
            await standin.invoke("pick", {"role": 42, "channel": standin.channel_id})


async def test_member_without_app_command_permission(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        with pytest.raises(CommandHidden):
            await standin.invoke("secret", permissions=0)


async def test_wait_timeout_lists_what_was_received(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)
    async with running_bot(bot, standin):
        inter = await standin.invoke("slow")
        await inter.wait_for_reply(lambda m: m.content == "second")
        with pytest.raises(TimeoutError) as info:
            await inter.wait_for_reply(lambda m: m.content == "third", timeout=0.1)
        text = str(info.value)
        assert "'first'" in text and "'second'" in text and "ack_type=5" in text


async def test_failed_sync_stops_the_run(standin: LoopbackDiscord) -> None:
    bot = make_bot(standin)

    async def setup_hook() -> None:
        await bot.tree.sync(guild=discord.Object(id=123))  # a guild the bot is not in

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    with pytest.raises(discord.Forbidden):
        async with running_bot(bot, standin, ready_timeout=5):
            pass


async def test_a_run_that_ends_at_once_leaves_no_ready_dispatch_behind(
    standin: LoopbackDiscord,
) -> None:
    """discord.py's `Client.close` leaves its delayed READY dispatch running; a run that ends
    before it fires must let it finish first, or it later dies on the closed client (CI)."""
    bot = plain_bot(guild_ready_timeout=1.0)

    @bot.event
    async def on_ready() -> None:  # what jokebot has: 'ready' is dispatched to it
        pass

    async with running_bot(bot, standin):
        pending = bot._connection._ready_task  # READY waits guild_ready_timeout for more guilds
    assert pending is not None
    await asyncio.wait_for(pending, bot._connection.guild_ready_timeout + 5)
    assert pending.exception() is None
