"""Run a real discord.py bot against a :class:`LoopbackDiscord`, loudly.

``running_bot`` points discord.py at the stand-in, starts ``bot.start(token)`` as a task, waits
until the bot is logged in and has synced its commands, and on exit closes the bot and
restores discord.py's hosts. A crashed bot task, an ERROR record of the watched loggers, an
exception nobody retrieved, or a REST route the stand-in does not implement fails the run:
every ``wait_*`` of the stand-in raises :class:`BotFailure` at once (instead of timing out),
and leaving the ``async with`` block raises it too.

discord is imported inside the function, so importing this module does not need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from loopback_discord._models import BotFailure
from loopback_discord._server import LoopbackDiscord
from loopback_discord.hosts import point_discord_at


@dataclass
class BotRun:
    """What ``running_bot`` yields: the task running ``bot.start`` and what went wrong."""

    bot: Any
    standin: LoopbackDiscord
    task: asyncio.Task[None] | None = None
    errors: list[str] = field(default_factory=list)  # formatted ERROR records, tracebacks
    records: list[logging.LogRecord] = field(default_factory=list)

    def problems(self, *, errors: bool = True, unhandled_routes: bool = True) -> list[str]:
        """Collected errors, unhandled routes and the stand-in's own failures, as text."""
        found = list(self.errors) if errors else []
        if unhandled_routes and self.standin.unhandled_routes:
            found.append(f"unhandled REST routes: {self.standin.unhandled_routes}")
        if self.standin.server_errors:
            found.append(f"loopback Discord errors: {self.standin.server_errors}")
        return found


class _Collector(logging.Handler):
    def __init__(self, run: BotRun, fail_fast: bool) -> None:
        super().__init__(logging.ERROR)
        self.run = run
        self.fail_fast = fail_fast
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.run.records.append(record)
        self.run.errors.append(text)
        if self.fail_fast:
            self.run.standin.report_failure(text)


async def _wait_for_shards(
    bot: Any, task: asyncio.Task[None], standin: LoopbackDiscord, timeout: float
) -> None:
    ready = asyncio.create_task(bot.wait_until_ready())
    await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        if not task.done():
            raise TimeoutError(
                f"the sharded bot did not become ready in {timeout}s; " + standin.describe()
            )
        await task
        raise RuntimeError("bot.start() returned before all its shards were ready")


@contextlib.asynccontextmanager
async def running_bot(
    bot: Any,
    standin: LoopbackDiscord,
    token: str | None = None,
    *,
    ready_timeout: float = 15.0,
    allow_errors: bool = False,
    fail_on_unhandled_routes: bool = True,
    loggers: Sequence[str] = ("discord",),
    close_timeout: float = 10.0,
) -> AsyncIterator[BotRun]:
    """Start ``bot`` against ``standin``; yield a :class:`BotRun`; close and check.

    ``allow_errors=True`` collects ERROR records in ``run.errors`` without failing (for tests
    of error paths). ``loggers`` are watched for ERROR records (add your package's logger).
    Unhandled REST routes fail the run unless ``fail_on_unhandled_routes=False``; errors inside
    the stand-in itself always do. Raises the bot's own exception (e.g.
    ``discord.LoginFailure``) if it stops before it is ready. Patches discord.py's class-level
    hosts, so run one bot at a time per process.
    """
    from discord import AutoShardedClient

    hosts_before = point_discord_at(standin.api_base, standin.gateway_url)

    run = BotRun(bot=bot, standin=standin)
    collector = _Collector(run, fail_fast=not allow_errors)
    watched = [logging.getLogger(name) for name in loggers]
    for logger in watched:
        logger.addHandler(collector)
    loop = asyncio.get_running_loop()
    old_handler = loop.get_exception_handler()

    def on_loop_exception(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        text = f"unretrieved exception: {context.get('message')} {exc!r}"
        run.errors.append(text)
        if not allow_errors:
            standin.report_failure(text)
        if old_handler is not None:
            old_handler(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(on_loop_exception)

    def on_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            standin.report_failure(f"bot task crashed: {task.exception()!r}")

    failures_before = len(standin.failures)
    body_failed = False
    try:
        run.task = asyncio.create_task(bot.start(token or standin.token), name="loopback-bot")
        run.task.add_done_callback(on_done)
        ready = asyncio.create_task(standin.wait_until_ready(ready_timeout))
        await asyncio.wait({ready, run.task}, return_when=asyncio.FIRST_COMPLETED)
        if run.task.done():  # stopped before (or while) becoming ready: say why
            if not ready.done():
                ready.cancel()
            with contextlib.suppress(asyncio.CancelledError, BotFailure, TimeoutError):
                await ready
            await run.task  # re-raises the bot's own exception (LoginFailure, Forbidden, ...)
            raise RuntimeError("bot.start() returned before the bot was ready")
        ready.result()  # TimeoutError listing what the stand-in saw, or BotFailure
        if isinstance(bot, AutoShardedClient):
            # ready once all of its own shards are (another bot may have made the stand-in ready)
            await _wait_for_shards(bot, run.task, standin, ready_timeout)
        try:
            yield run
        except BaseException:
            body_failed = True
            raise
    finally:
        try:
            if not bot.is_closed():
                await _finish_pending_ready(bot, close_timeout)
                await asyncio.wait_for(bot.close(), close_timeout)
            if run.task is not None and not run.task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(run.task), close_timeout)
                except TimeoutError:
                    run.task.cancel()
        finally:
            point_discord_at(*hosts_before)
            for logger in watched:
                logger.removeHandler(collector)
            loop.set_exception_handler(old_handler)
            del standin.failures[failures_before:]  # later waits on the stand-in start clean
    if body_failed:
        return
    if run.task is not None and not run.task.cancelled() and run.task.exception() is not None:
        raise BotFailure(f"bot task crashed: {run.task.exception()!r}") from run.task.exception()
    problems = run.problems(errors=not allow_errors, unhandled_routes=fail_on_unhandled_routes)
    if problems:
        raise BotFailure("the bot run had problems:\n" + "\n".join(problems))


async def _finish_pending_ready(bot: Any, timeout: float) -> None:
    """Let discord.py's delayed READY dispatch finish before the bot closes: `Client.close`
    leaves `ConnectionState._delay_ready` running, and when a run ends within
    `guild_ready_timeout` of READY that task later dispatches 'ready' on the closed client
    (`self.loop` is MISSING) and dies with an AttributeError nobody retrieves. Cancelling it is
    not enough: on Python 3.11 its `wait_for` can turn the cancel into a timeout and dispatch."""
    state = bot._connection
    tasks = [getattr(state, "_ready_task", None), *getattr(state, "_ready_tasks", {}).values()]
    pending = {task for task in tasks if task is not None and not task.done()}
    if pending:
        await asyncio.wait(pending, timeout=timeout)
