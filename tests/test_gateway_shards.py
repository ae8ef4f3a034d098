"""Gateway shards: settings, routing in the stand-in, and the real sharded discord.py client."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import pytest

from bot.app import backend
from bot.discord_app.client import JokeBot, ShardedJokeBot, make_bot
from bot.discord_app.shards import IdentifyLimiter, format_shards
from bot.settings import Settings, SettingsError, load_settings
from loopback_discord import (
    LoopbackDiscord,
    NotConnected,
    guild_id_on_shard,
    running_bot,
    shard_for_guild,
)
from tests.helpers import ADMIN, TOKEN, App, corpus_lines, wait_until

# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "ids", "expected"),
    [
        (None, None, (None, [])),
        ("auto", None, ("auto", [])),
        (" AUTO ", None, ("auto", [])),
        ("4", None, (4, [])),
        ("2", "1, 0", (2, [0, 1])),
        ("3", "2", (3, [2])),
    ],
)
def test_shard_settings_parse(count, ids, expected):
    values = {k: v for k, v in (("discord_shard_count", count), ("discord_shard_ids", ids)) if v}
    settings = load_settings(_env_file=None, **values)
    assert (settings.discord_shard_count, settings.discord_shard_ids) == expected


@pytest.mark.parametrize(
    ("count", "ids", "message"),
    [
        ("0", None, "DISCORD_SHARD_COUNT: .*at least 1 shard"),
        ("two", None, "DISCORD_SHARD_COUNT: .*auto or a whole number"),
        ("-2", None, "DISCORD_SHARD_COUNT: .*auto or a whole number"),
        ("2", "0,2", "DISCORD_SHARD_IDS: .*0 to 1 for DISCORD_SHARD_COUNT=2"),
        ("2", "1,1", "DISCORD_SHARD_IDS: .*listed twice"),
        ("auto", "0", "DISCORD_SHARD_IDS: .*needs DISCORD_SHARD_COUNT set to a number"),
        (None, "0", "DISCORD_SHARD_IDS: .*needs DISCORD_SHARD_COUNT set to a number"),
    ],
)
def test_bad_shard_settings_are_one_line(count, ids, message):
    values = {k: v for k, v in (("discord_shard_count", count), ("discord_shard_ids", ids)) if v}
    with pytest.raises(SettingsError, match=message) as error:
        load_settings(_env_file=None, **values)
    assert "\n" not in str(error.value)


def test_make_bot_picks_the_client_from_the_settings():
    def bot_for(**values):
        settings = Settings(_env_file=None, runner_url="http://127.0.0.1:1", **values)
        return make_bot(SimpleNamespace(settings=settings))

    assert type(bot_for()) is JokeBot  # the default: one plain connection
    auto = bot_for(discord_shard_count="auto")
    assert isinstance(auto, ShardedJokeBot) and auto.shard_count is None
    some = bot_for(discord_shard_count="3", discord_shard_ids="2")
    assert (some.shard_count, some.shard_ids) == (3, [2])


# --- pure parts -----------------------------------------------------------------------------


def test_shard_routing_follows_discords_formula():
    assert shard_for_guild(0, 1) == 0
    assert shard_for_guild(5 << 22, 3) == 2
    assert shard_for_guild((7 << 22) | 12345, 4) == 3  # the low 22 bits do not matter
    for count in (1, 2, 3, 5):
        for shard in range(count):
            gid = guild_id_on_shard(shard, count)
            assert shard_for_guild(gid, count) == shard and gid > 1 << 22
    with pytest.raises(ValueError):
        guild_id_on_shard(2, 2)
    with pytest.raises(ValueError):
        shard_for_guild(1, 0)


def test_identify_limiter_paces_each_bucket_by_five_seconds():
    now = [100.0]
    limiter = IdentifyLimiter(2, clock=lambda: now[0])
    assert [limiter.reserve(s) for s in (0, 1)] == [0.0, 0.0]  # two buckets start at once
    assert limiter.reserve(2) == 5.0  # bucket 0 again
    assert limiter.reserve(4) == 10.0
    now[0] += 12.0
    assert limiter.reserve(3) == 0.0  # bucket 1's slot is long free
    assert IdentifyLimiter(0).max_concurrency == 1


def test_format_shards_lines():
    lines = format_shards(4, [(3, 0.0123), (1, float("inf"))], {1: 1, 3: 2})
    assert lines == [
        "Gateway: 4 shards, this process runs 1, 3",
        "Shard 1: no heartbeat answered yet, 1 server",
        "Shard 3: 12 ms, 2 servers",
    ]


# --- the stand-in's gateway, spoken to directly ----------------------------------------------


async def _identify(session, standin, shard):
    ws = await session.ws_connect(standin.gateway_url)
    hello = await ws.receive_json()
    assert hello["op"] == 10
    d = {"token": TOKEN, "intents": 0, "properties": {}}
    if shard is not None:
        d["shard"] = shard
    await ws.send_json({"op": 2, "d": d})
    return ws


async def _events_until_closed_or(ws, count):
    events = []
    while len(events) < count:
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        events.append(json.loads(msg.data))
    return events


async def test_standin_routes_guilds_to_their_shards():
    async with LoopbackDiscord(token=TOKEN, recommended_shards=3, max_concurrency=2) as standin:
        on_1 = await standin.add_guild(shard=(1, 2), name="Shard one")
        assert shard_for_guild(standin.guild_id, 2) == 0 and shard_for_guild(on_1, 2) == 1
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bot {TOKEN}"}
            async with session.get(f"{standin.api_base}/gateway/bot", headers=headers) as r:
                assert r.headers["Content-Type"] == "application/json"
                body = await r.json()
            assert body["url"] == standin.gateway_url and body["shards"] == 3
            assert body["session_start_limit"]["max_concurrency"] == 2
            assert set(body["session_start_limit"]) == {
                "total",
                "remaining",
                "reset_after",
                "max_concurrency",
            }

            ws1 = await _identify(session, standin, [1, 2])
            ready, create = await _events_until_closed_or(ws1, 2)
            assert ready["t"] == "READY" and ready["d"]["shard"] == [1, 2]
            assert [g["id"] for g in ready["d"]["guilds"]] == [str(on_1)]
            assert create["t"] == "GUILD_CREATE" and create["d"]["id"] == str(on_1)
            assert create["d"]["name"] == "Shard one"
            everyone = [r for r in create["d"]["roles"] if r["name"] == "@everyone"]
            assert everyone[0]["id"] == str(on_1)

            ws0 = await _identify(session, standin, [0, 2])
            ready0, create0 = await _events_until_closed_or(ws0, 2)
            assert ready0["d"]["shard"] == [0, 2] and create0["d"]["id"] == str(standin.guild_id)
            assert standin.connected_shards == [(0, 2), (1, 2)]

            # a guild joining later arrives on its shard only
            on_0 = await standin.add_guild(shard=(0, 2))
            (joined,) = await _events_until_closed_or(ws0, 1)
            assert joined["t"] == "GUILD_CREATE" and joined["d"]["id"] == str(on_0)
            carried = {(e.shard, e.event, e.guild_id) for e in standin.gateway_events}
            assert ((0, 2), "GUILD_CREATE", on_0) in carried
            assert ((1, 2), "GUILD_CREATE", on_0) not in carried

            bad = await _identify(session, standin, [2, 2])
            assert (await bad.receive()).type == aiohttp.WSMsgType.CLOSE
            assert bad.close_code == 4010
            assert "invalid shard [2, 2]" in standin.shard_errors[-1]

            await ws1.close()
            standin.guild_commands["x"] = {"id": "1", "name": "x", "type": 1, "options": []}
            with pytest.raises(NotConnected, match=f"no connected shard owns guild {on_1}"):
                await standin.invoke("x", guild_id=on_1)
            assert f"guild {on_1} (its shard: 1 of 2)" in standin.shard_errors[-1]
            await ws0.close()


async def test_standin_can_enforce_the_identify_rate_limit():
    async with (
        LoopbackDiscord(token=TOKEN, max_concurrency=2, enforce_identify_limit=True) as standin,
        aiohttp.ClientSession() as session,
    ):
        first = await _identify(session, standin, [0, 4])
        other_bucket = await _identify(session, standin, [1, 4])
        same_bucket = await _identify(session, standin, [2, 4])
        assert (await _events_until_closed_or(first, 1))[0]["t"] == "READY"
        assert (await _events_until_closed_or(other_bucket, 1))[0]["t"] == "READY"
        assert (await same_bucket.receive_json()) == {"op": 9, "d": False, "s": None, "t": None}
        assert "shard [2, 4] too soon" in standin.shard_errors[-1]
        for ws in (first, other_bucket, same_bucket):
            await ws.close()


# --- the real discord.py client on several shards ------------------------------------------


@contextlib.asynccontextmanager
async def sharded_app(standin, settings, **shards) -> AsyncIterator[App]:
    """jokebot's backend and the client `make_bot` picks, with the given shard settings."""
    settings = settings.model_copy(update=shards)
    async with backend(settings) as started:
        bot = make_bot(started.services, guild_ready_timeout=0.05)
        async with running_bot(bot, standin, TOKEN, loggers=("discord", "bot")) as run:
            yield App(standin, started.services, run, started.runner_process)


async def test_two_shards_end_to_end(standin, shared_settings):
    on_1 = await standin.add_guild(shard=(1, 2))
    guilds = {0: standin.guild_id, 1: on_1}
    async with sharded_app(standin, shared_settings, discord_shard_count=2) as app:
        bot = app.run.bot
        assert isinstance(bot, ShardedJokeBot) and bot.shard_count == 2
        assert standin.connected_shards == [(0, 2), (1, 2)]
        assert {g.id: g.shard_id for g in bot.guilds} == {guilds[0]: 0, guilds[1]: 1}
        sessions = {e.shard[0]: e.session_id for e in standin.gateway_events if e.event == "READY"}
        for shard, guild_id in guilds.items():  # each guild's GUILD_CREATE came on its shard
            (create,) = [
                e
                for e in standin.gateway_events
                if e.event == "GUILD_CREATE" and e.guild_id == guild_id
            ]
            assert create.shard == (shard, 2) and create.session_id == sessions[shard]

        jokes = corpus_lines(2)
        for n, (shard, guild_id) in enumerate(guilds.items(), start=1):
            added = await standin.invoke("addjoke", {"text": jokes[shard]}, guild_id=guild_id)
            stored = await added.wait_for_reply()
            assert stored.ephemeral and stored.content.startswith(f"Stored as #{n}")
            joke = await standin.invoke("joke", {"prompt": "My cat"}, guild_id=guild_id)
            told = await joke.wait_for_reply(timeout=30)
            assert told.content.startswith("My cat") and told.mentions_disabled
            assert added.shard == joke.shard == (shard, 2)
        assert await app.db.joke_count() == 2
        carried = [
            (e.session_id, e.guild_id) for e in standin.gateway_events
            if e.event == "INTERACTION_CREATE"
        ]  # fmt: skip
        assert carried == [(sessions[0], guilds[0])] * 2 + [(sessions[1], guilds[1])] * 2

        admin = await (
            await standin.invoke("status", permissions=ADMIN, guild_id=on_1)
        ).wait_for_reply()
        lines = admin.content.splitlines()
        assert "Gateway: 2 shards, this process runs 0, 1" in lines
        for shard in (0, 1):
            (line,) = [x for x in lines if x.startswith(f"Shard {shard}: ")]
            assert line.endswith("ms, 1 server"), line  # a measured heartbeat latency
        member = await (await standin.invoke("status", guild_id=on_1)).wait_for_reply()
        assert "Corpus: 2 jokes" in member.content and "Gateway" not in member.content


async def test_auto_asks_gateway_bot_but_connects_to_the_configured_gateway(
    standin, shared_settings
):
    standin.recommended_shards = 3
    # what Discord answers even behind a gateway proxy; the bot must keep DISCORD_GATEWAY_URL
    standin.advertised_gateway_url = "ws://127.0.0.1:9/not-the-gateway"
    async with sharded_app(standin, shared_settings, discord_shard_count="auto") as app:
        assert app.run.bot.shard_count == 3
        assert standin.connected_shards == [(0, 3), (1, 3), (2, 3)]
        assert "GET /gateway/bot" in standin.requests
        assert standin.shard_errors == []
        reply = await (await standin.invoke("joke")).wait_for_reply(timeout=30)
        assert reply.content


async def test_unsharded_admin_status_shows_the_one_connection(standin, shared_settings):
    async with sharded_app(standin, shared_settings) as app:
        assert type(app.run.bot) is JokeBot and standin.connected_shards == [(0, 1)]
        status = await (await standin.invoke("status", permissions=ADMIN)).wait_for_reply()
        assert "Gateway: one connection (no shards), " in status.content
        assert status.content.rstrip().endswith("ms")


async def test_two_clients_split_the_shards_over_one_database(standin, shared_settings):
    on_1 = await standin.add_guild(shard=(1, 2))
    async with (
        sharded_app(standin, shared_settings, discord_shard_count=2, discord_shard_ids=[0]) as a,
        sharded_app(standin, shared_settings, discord_shard_count=2, discord_shard_ids=[1]) as b,
    ):
        assert [g.id for g in a.run.bot.guilds] == [standin.guild_id]
        assert [g.id for g in b.run.bot.guilds] == [on_1]
        assert standin.connected_shards == [(0, 2), (1, 2)]
        joke = corpus_lines(1)[0]
        first = await standin.invoke("addjoke", {"text": joke})
        assert (await first.wait_for_reply()).content.startswith("Stored as #1")
        again = await standin.invoke("addjoke", {"text": joke}, guild_id=on_1)
        assert "duplicate" in (await again.wait_for_reply()).content  # the same database
        assert (first.shard, again.shard) == ((0, 2), (1, 2))
        assert await b.db.joke_count() == 1
        told = await (await standin.invoke("joke", guild_id=on_1)).wait_for_reply(timeout=30)
        assert told.content
        status = await (
            await standin.invoke("status", permissions=ADMIN, guild_id=on_1)
        ).wait_for_reply()
        assert "Gateway: 2 shards, this process runs 1" in status.content
        assert "Shard 0" not in status.content


async def test_sandbox_serves_a_server_on_each_shard(shared_settings, capsys, monkeypatch):
    import discord

    from bot.sandbox import run_sandbox

    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)  # run_bot sets it
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket,
        "DEFAULT_GATEWAY",
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
    )
    joke = corpus_lines(1)[0]
    typed = [":guilds", f"/addjoke text: {joke}", ":guild 2", f"/addjoke text: {joke}"]
    typed += ["/status", ":guild 3"]
    settings = shared_settings.model_copy(update={"discord_shard_count": "auto"})
    code = await run_sandbox(settings, io.StringIO("\n".join(typed) + "\n"), echo=True)
    out = capsys.readouterr().out
    assert code == 0
    assert "1. Loopback Guild (1300000000000000100, gateway shard 0) <- you are here" in out
    assert "2. Loopback Guild 2 (" in out and ", gateway shard 1)" in out
    assert "(you are now in 2. Loopback Guild 2" in out
    assert "Stored as #1" in out and "duplicate of #1" in out  # both servers, one database
    assert "Gateway: 2 shards, this process runs 0, 1" in out
    assert "pick a server from 1 to 2" in out


async def test_each_shard_resumes_its_own_session(standin, shared_settings):
    on_1 = await standin.add_guild(shard=(1, 2))
    async with sharded_app(standin, shared_settings, discord_shard_count=2):
        sessions = {e.shard: e.session_id for e in standin.gateway_events if e.event == "READY"}
        await standin.disconnect_gateway(4000)  # resumable: both shards come back with RESUME
        await wait_until(
            lambda: standin.resume_count >= 2 and len(standin.connected_shards) >= 2,
            15,
            what="resumed: both shards",
        )
        assert standin.identify_count == 2 and standin.connected_shards == [(0, 2), (1, 2)]
        interaction = await standin.invoke("addjoke", {"text": corpus_lines(1)[0]}, guild_id=on_1)
        assert (await interaction.wait_for_reply()).content.startswith("Stored as #1")
        (event,) = [e for e in standin.gateway_events if e.event == "INTERACTION_CREATE"]
        assert interaction.shard == (1, 2) and event.session_id == sessions[(1, 2)]
