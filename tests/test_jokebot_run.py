"""`jokebot run` as a host runs it: a real process against a loopback Discord, then SIGTERM."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request

import pytest

from loopback_discord import (
    LoopbackDiscord,
    shard_for_guild,
)
from tests.helpers import (
    ADMIN,
    ROOT,
    TOKEN,
    corpus_lines,
    host_env,
    start_jokebot,
    stop_jokebot,
    wait_until_serving,
)


async def test_jokebot_run_end_to_end(tmp_path, tiny_model):
    data_dir = tmp_path / "data"
    async with LoopbackDiscord(token=TOKEN) as standin:
        process = await start_jokebot(standin, host_env(standin, data_dir, tiny_model))
        try:
            runner_url = json.loads((data_dir / "runner.json").read_text())["url"]
            for n, text in enumerate(corpus_lines(30), start=1):
                # 30 members, one joke each: one member would meet RATE_ADDJOKE_MEMBER
                member = {"user_id": 7000 + n}
                reply = await (
                    await standin.invoke("addjoke", {"text": text}, **member)
                ).wait_for_reply()
                assert reply.ephemeral and reply.content.startswith(f"Stored as #{n}")
            dup = await (
                await standin.invoke("addjoke", {"text": corpus_lines(1)[0]})
            ).wait_for_reply()
            assert dup.ephemeral and "duplicate" in dup.content
            joke = await (await standin.invoke("joke", {"prompt": "My dog"})).wait_for_reply(
                timeout=30
            )
            assert joke.content.startswith("My dog") and joke.mentions_disabled
            status = await (await standin.invoke("status")).wait_for_reply()
            assert "v0" in status.content

            retrain = await standin.invoke("retrain", permissions=ADMIN)
            final = await retrain.wait_for_reply(
                lambda m: "Training run #" in m.content, timeout=300
            )
            assert "v1" in final.content and "promoted" in final.content, final.content
            status = await (await standin.invoke("status")).wait_for_reply()
            assert "v1" in status.content
        finally:
            seconds = await stop_jokebot(process)
        assert seconds < 10
        assert not (data_dir / "runner.json").exists()
        with pytest.raises(urllib.error.URLError):  # the runner child is gone too
            urllib.request.urlopen(f"{runner_url}/health", timeout=2)

    async with LoopbackDiscord(token=TOKEN) as standin:
        process = await start_jokebot(standin, host_env(standin, data_dir, tiny_model))
        try:
            status = await (await standin.invoke("status")).wait_for_reply()
            assert "v1" in status.content and "Corpus: 30 jokes" in status.content
        finally:
            await stop_jokebot(process)


async def test_bad_token_is_one_clear_line(tmp_path, tiny_model):
    async with LoopbackDiscord(token=TOKEN) as standin:
        env = host_env(standin, tmp_path / "data", tiny_model)
        env["DISCORD_TOKEN"] = "not-the-token"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            env=env,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=180)
        assert process.returncode == 1
        assert "Discord refused DISCORD_TOKEN" in stderr.decode()
        assert "Traceback" not in stderr.decode()


async def _answered_through_owning_shards(standin: LoopbackDiscord, guilds, jokes) -> None:
    """/addjoke and /joke in each guild, each delivered on the socket of the guild's shard."""
    sessions = {e.shard: e.session_id for e in standin.gateway_events if e.event == "READY"}
    for n, (guild_id, text) in enumerate(zip(guilds, jokes, strict=True), start=1):
        shard = (shard_for_guild(guild_id, 2), 2)
        added = await standin.invoke("addjoke", {"text": text}, guild_id=guild_id)
        assert (await added.wait_for_reply()).content.startswith(f"Stored as #{n}")
        joke = await standin.invoke("joke", {"prompt": "My dog"}, guild_id=guild_id)
        assert (await joke.wait_for_reply(timeout=30)).content.startswith("My dog")
        assert added.shard == joke.shard == shard
    carried = [
        (e.session_id, e.guild_id) for e in standin.gateway_events
        if e.event == "INTERACTION_CREATE"
    ]  # fmt: skip
    expected = [(sessions[(shard_for_guild(g, 2), 2)], g) for g in guilds for _ in range(2)]
    assert carried == expected


async def test_jokebot_run_with_two_shards(tmp_path, tiny_model):
    """DISCORD_SHARD_COUNT=2: shards [0, 2] and [1, 2], each answering its own guilds."""
    async with LoopbackDiscord(token=TOKEN) as standin:
        on_1 = await standin.add_guild(shard=(1, 2))
        guilds = [standin.guild_id, on_1]
        assert [shard_for_guild(g, 2) for g in guilds] == [0, 1]
        env = host_env(standin, tmp_path / "data", tiny_model)
        env["DISCORD_SHARD_COUNT"] = "2"
        process = await start_jokebot(standin, env, shard_count=2)
        try:
            identified = sorted(e.shard for e in standin.gateway_events if e.event == "READY")
            assert identified == [(0, 2), (1, 2)] == standin.connected_shards
            await _answered_through_owning_shards(standin, guilds, corpus_lines(2))
            status = await (
                await standin.invoke("status", permissions=ADMIN, guild_id=on_1)
            ).wait_for_reply()
            assert "Gateway: 2 shards, this process runs 0, 1" in status.content
        finally:
            await stop_jokebot(process)


async def test_two_jokebot_processes_split_the_shards(tmp_path, tiny_model, shared_runner):
    """DISCORD_SHARD_IDS=0 and =1 in two processes: one data directory, one runner."""
    async with LoopbackDiscord(token=TOKEN) as standin:
        on_1 = await standin.add_guild(shard=(1, 2))
        processes = []
        for shard_id in ("0", "1"):
            env = host_env(standin, tmp_path / "data", tiny_model)
            env.update(
                DISCORD_SHARD_COUNT="2",
                DISCORD_SHARD_IDS=shard_id,
                RUNNER_URL=shared_runner,
                RUNNER_TOKEN="shared-secret",
            )
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot.cli", "run", env=env, cwd=ROOT
                )
            )
        try:
            await wait_until_serving(standin, processes, shard_count=2)
            readies = [e for e in standin.gateway_events if e.event == "READY"]
            assert sorted(e.shard for e in readies) == [(0, 2), (1, 2)]
            await _answered_through_owning_shards(
                standin, [standin.guild_id, on_1], corpus_lines(2)
            )
            dup = await standin.invoke("addjoke", {"text": corpus_lines(1)[0]}, guild_id=on_1)
            assert "duplicate" in (await dup.wait_for_reply()).content  # one database
        finally:
            for process in processes:
                await stop_jokebot(process)
