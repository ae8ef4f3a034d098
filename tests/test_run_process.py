"""`jokebot run` as a host runs it: a real process against a loopback Discord, then SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.error
import urllib.request

import pytest

from bot.loopback_discord import ADMINISTRATOR, DEFAULT_MEMBER_PERMISSIONS, LoopbackDiscord
from tests.conftest import ROOT, TOKEN, corpus_lines, process_env

ADMIN = DEFAULT_MEMBER_PERMISSIONS | ADMINISTRATOR


def host_env(standin: LoopbackDiscord, data_dir, model) -> dict[str, str]:
    return process_env(
        data_dir,
        model,
        DISCORD_TOKEN=TOKEN,
        DISCORD_API_BASE=standin.api_base,
        DISCORD_GATEWAY_URL=standin.gateway_url,
    )


async def start_jokebot(standin: LoopbackDiscord, env: dict[str, str]):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", env=env, cwd=ROOT
    )
    ready = asyncio.create_task(standin.wait_until_ready(timeout=180))
    exited = asyncio.create_task(process.wait())
    await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
    if exited.done():
        ready.cancel()
        pytest.fail(f"jokebot run exited early with code {process.returncode}")
    exited.cancel()
    await ready
    return process


async def stop_jokebot(process) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), timeout=15)
    assert code == 0
    return time.monotonic() - started


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
