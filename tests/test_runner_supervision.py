"""`jokebot run` keeps its runner alive: a crashed runner comes back with the serving version."""

from __future__ import annotations

import asyncio

from loopback_discord import LoopbackDiscord
from tests.helpers import TOKEN, jokebot_app, make_settings


async def test_a_killed_runner_is_restarted_and_jokes_resume(tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model)
    async with (
        LoopbackDiscord(token=TOKEN) as standin,
        jokebot_app(standin, settings, allow_errors=True) as app,  # the crash is logged: ERROR
    ):
        first = app.runner_process.process
        first.kill()  # as the OOM killer would
        await first.wait()
        reply = await (await standin.invoke("joke")).wait_for_reply(timeout=30)
        if reply.ephemeral:  # asked while the runner was still down: a polite refusal
            assert reply.content == "The joke machine is unavailable, try again shortly."
        for _ in range(300):
            if app.runner_process.process is not first and app.runner_process.is_alive():
                break
            await asyncio.sleep(0.1)
        health = await app.services.runner.wait_until_ready(60)
        assert health["version"] == "v0"
        reply = await (await standin.invoke("joke")).wait_for_reply(timeout=30)
        assert not reply.ephemeral and reply.content.strip()
        assert any("runner exited with code -9" in error for error in app.run.errors)
