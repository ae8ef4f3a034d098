"""`jokebot run`: database, model runner, scheduler and the Discord client, started and stopped
together. SIGTERM or SIGINT stop everything (training included) within 10 seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import discord
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.community.content_policy import ContentPolicy
from bot.community.rate_limits import RateLimiter
from bot.community.starter import seed_starter_corpus
from bot.community.submissions import load_near_duplicates
from bot.discord_app.charts import versions_chart_file
from bot.discord_app.client import JokeBot, make_bot
from bot.discord_app.replies import NO_MENTIONS
from bot.discord_app.text_limits import fit_message
from bot.runners.client import RunnerUnavailable
from bot.runners.kinds import settings_problem
from bot.runners.pool import RunnerPool
from bot.runners.process import RunnerProcess
from bot.services import Services
from bot.settings import Settings
from bot.store import backup as backups
from bot.store.backends import DatabaseUrlError, StoreUnavailable
from bot.store.database import Database
from bot.store.leader import LockHeld, cluster_lock, leadership_for
from bot.store.notify import listener_for
from bot.training import versions
from bot.training.coordinator import (
    TrainingBusy,
    TrainingCoordinator,
    TrainingOutcome,
    host_training_lock,
)
from bot.training.schedule import RetrainScheduler
from bot.training.wording import training_result
from loopback_discord.hosts import point_discord_at  # the one place that moves discord.py's hosts

log = logging.getLogger(__name__)
RUNNER_START_TIMEOUT = 900  # the first start may convert the embedded model
BACKUP_JOB_ID = "backup"


class StartupError(Exception):
    """jokebot cannot start; the message says what to fix."""


@dataclass
class Backend:
    """Everything but Discord: what `run`, the sandbox and the tests share."""

    services: Services
    runner_process: RunnerProcess | None


async def open_database(settings: Settings) -> Database:
    """Open (and migrate) the database, and tidy what an earlier crash left behind."""
    try:
        db = await Database.connect(
            settings.database_url_text,
            pool_size=settings.database_pool_size,
            timeout=settings.database_timeout,
        )
    except DatabaseUrlError as error:
        raise StartupError(f"DATABASE_URL: {error}") from None
    try:  # processes that split the gateway shards share the data: leave a live training alone
        with host_training_lock(settings.data_dir):
            async with cluster_lock(db.backend, "training"):  # processes on other machines
                interrupted = await db.fail_interrupted_runs()
                if interrupted:
                    log.warning("%d training run(s) were interrupted by the last stop", interrupted)
                versions.remove_partial_outputs(settings.models_dir)
    except (TrainingBusy, LockHeld):
        log.info("another jokebot process is training on this data; its run is left alone")
    await db.ensure_base_version(settings.base_model_ref)
    return db


@contextlib.asynccontextmanager
async def backend(settings: Settings) -> AsyncIterator[Backend]:
    """Database + runner (a child process unless RUNNER_URL names one) + training coordinator,
    with the data directory held for their whole life so that `jokebot restore` refuses."""
    try:
        with backups.data_dir_in_use(settings.data_dir):
            async with _started_backend(settings) as started:
                yield started
    except backups.DataDirInUse as error:
        raise StartupError(str(error)) from None


@contextlib.asynccontextmanager
async def _started_backend(settings: Settings) -> AsyncIterator[Backend]:
    problem = settings_problem(
        settings.runner_kind, train_lora=settings.train_lora, retrain_from=settings.retrain_from
    )
    if problem is None and settings.runner_kind != "jokebot" and not settings.runner_url:
        problem = f"RUNNER_KIND={settings.runner_kind} needs RUNNER_URL (the engine's address)"
    if problem is not None:
        raise StartupError(problem)
    db = await open_database(settings)
    runner_process: RunnerProcess | None = None
    try:
        await seed_starter_corpus(db, settings)  # a fresh install has jokes from the start
        if settings.runner_url:
            url = ",".join(settings.runner_urls)
            token = settings.runner_admin_token()
        else:
            active = await db.active_version()
            runner_process = own_runner(settings, active.path, active.name)
            await runner_process.start()
            url, token = runner_process.url, runner_process.admin_token
        runner = RunnerPool(
            url, admin_token=token, kind=settings.runner_kind,
            reconcile_every=settings.runner_reconcile_seconds,
        )  # fmt: skip
        try:
            health = await runner.wait_until_ready(
                RUNNER_START_TIMEOUT,
                is_alive=runner_process.is_alive if runner_process else None,
            )
        except RunnerUnavailable as error:
            await runner.close()
            raise StartupError(f"the model runner at {url} did not become ready: {error}") from None
        log.info("model runner ready at %s, serving %s", url, health.get("version"))
        active = await db.active_version()
        runner.serve(active.path, active.version)
        await runner.reconcile()  # replicas that serve another version catch up now
        runner.start()
        training = TrainingCoordinator(settings, db, runner)
        # with PostgreSQL, processes on other machines share the database: one leads the
        # schedule, and a version one of them promotes is served by all (bot.store.leader/notify)
        leadership = leadership_for(db.backend, retry_seconds=settings.leader_retry_seconds)
        leadership.start()
        listener = listener_for(db.backend, lambda: follow_serving_version(db, runner))
        if listener is not None:
            listener.start()
        services = Services(
            settings=settings,
            db=db,
            runner=runner,
            training=training,
            scheduler=RetrainScheduler(settings, training, leadership),  # started by run_bot
            near_duplicates=await load_near_duplicates(settings, db),
            rate_limiter=RateLimiter.from_settings(settings),
            content_policy=ContentPolicy.from_settings(settings),
        )
        runner_file = write_runner_file(settings, url, token)
        supervisor = None
        if runner_process is not None:

            async def serving_version() -> tuple[str, str]:
                try:
                    active = await db.active_version()
                except StoreUnavailable:  # restart with what it served; the listener catches up
                    return runner_process.model_ref, runner_process.version
                return active.path, active.name

            supervisor = asyncio.create_task(runner_process.keep_alive(serving_version))
        try:
            yield Backend(services=services, runner_process=runner_process)
        finally:
            if supervisor is not None:
                supervisor.cancel()
            if listener is not None:
                await listener.stop()
            await leadership.stop()
            remove_runner_file(runner_file)
            if training.busy:
                await training.cancel()
                for _ in range(40):  # up to 4 s for the trainer to clean up
                    if not training.busy:
                        break
                    await asyncio.sleep(0.1)
            await runner.close()
    finally:
        if runner_process is not None:
            await runner_process.stop(timeout=5)  # all within the 10 s a host allows
        await db.close()


async def follow_serving_version(db: Database, runner: RunnerPool) -> None:
    """Another process changed the serving version (or we reconnected and may have missed it):
    serve what the database says, in every replica that does not yet."""
    active = await db.active_version()
    target = runner.target
    if target is None or target.name != active.name or target.path != active.path:
        log.info("%s serves now (changed by another jokebot process)", active.name)
    runner.serve(active.path, active.version)
    await runner.check_health()  # a shared runner may have swapped already
    await runner.reconcile()


def own_runner(settings: Settings, model_ref: str, version: str) -> RunnerProcess:
    """The runner child this process starts (not yet started), its port bound.

    A second `jokebot run` on this host (another set of gateway shards) finds the default port
    taken by the first one's runner; it then takes a free port rather than talking to a runner
    it does not own. A RUNNER_PORT the host chose is kept, or startup stops and says why."""

    def on_port(port: int) -> RunnerProcess:
        return RunnerProcess(
            model_ref=model_ref,
            version=version,
            host=settings.runner_host,
            port=port,
            admin_token=settings.runner_admin_token(),
        )

    port, host = settings.runner_port, settings.runner_host
    try:
        return on_port(port)
    except OSError as error:
        if port == 0 or "runner_port" in settings.model_fields_set:
            raise StartupError(
                f"the model runner cannot listen on {host}:{port} ({error.strerror}). Choose"
                " another RUNNER_PORT (0: any free one), or RUNNER_URL to share one runner"
            ) from None
    log.warning("port %d is in use (another jokebot run?); the runner takes a free port", port)
    return on_port(0)


def runner_file_path(settings: Settings) -> Path:
    return settings.data_dir / "runner.json"


def write_runner_file(settings: Settings, url: str, token: str | None) -> Path:
    """Tell CLI commands on this host (`jokebot train`, `rollback`) how to reach our runner.

    Several `jokebot run` processes may share a data directory (one per gateway shard), so each
    writes through its own temporary file: the file is always one process's whole record."""
    path = runner_file_path(settings)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": url, "token": token, "pid": os.getpid()}), encoding="utf-8")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return path


def remove_runner_file(path: Path) -> None:
    """Remove the runner file if it is still ours; another process's record stays."""
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


async def connect_runner(settings: Settings) -> RunnerPool | None:
    """A client for the runner a CLI command should use: RUNNER_URL, else the one `jokebot run`
    started on this data directory; None when no runner is up (the change applies at next start).
    """
    if settings.runner_url:
        token = settings.runner_admin_token()
        return RunnerPool(settings.runner_urls, admin_token=token, kind=settings.runner_kind)
    try:
        info = json.loads(runner_file_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    client = RunnerPool(info["url"], admin_token=info.get("token"), retries=0)
    try:
        await client.health()
    except RunnerUnavailable:
        await client.close()
        return None
    return client


async def run_bot(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    guild_ready_timeout: float = 2.0,
    install_signal_handlers: bool = True,
) -> int:
    """Run until `stop` is set, a signal arrives or Discord drops us; return the exit code."""
    token = settings.require_discord_token()
    stop = stop or asyncio.Event()
    if install_signal_handlers:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    async with backend(settings) as started:
        services = started.services
        bot = make_bot(services, guild_ready_timeout=guild_ready_timeout)
        scheduler = services.scheduler
        scheduler.start(announce=_announcer(bot, settings))
        backup_scheduler = schedule_backups(settings)
        bot_task = asyncio.create_task(bot.start(token), name="discord-client")
        stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
        try:
            await asyncio.wait({bot_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            scheduler.shutdown()
            if backup_scheduler is not None:
                backup_scheduler.shutdown(wait=False)
            stop_task.cancel()
            if not bot.is_closed():
                await bot.close()
        if bot_task.done() and not bot_task.cancelled() and bot_task.exception():
            error = bot_task.exception()
            if isinstance(error, discord.LoginFailure):
                raise StartupError("Discord refused DISCORD_TOKEN: check the bot token") from None
            raise StartupError(f"the Discord connection failed: {error}") from error
        log.info("stopping")
    return 0


def schedule_backups(settings: Settings) -> AsyncIOScheduler | None:
    """BACKUP_SCHEDULE (cron, UTC): an online backup of the database, the newest BACKUP_KEEP
    kept. None when the schedule is off."""
    if settings.backup_schedule == "off":
        log.info("scheduled backups are off")
        return None
    if settings.uses_postgresql:
        log.info("the database is PostgreSQL: back it up with its own tools (pg_dump, WAL)")
        return None
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        run_scheduled_backup,
        CronTrigger.from_crontab(settings.backup_schedule, timezone=UTC),
        args=[settings],
        id=BACKUP_JOB_ID,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
    )
    scheduler.start()
    log.info(
        "scheduled backups: %s (UTC) into %s, the newest %d kept",
        settings.backup_schedule, settings.backup_folder, settings.backup_keep,
    )  # fmt: skip
    return scheduler


async def run_scheduled_backup(
    settings: Settings, slot: datetime | None = None
) -> backups.DatabaseFacts | None:
    """One scheduled backup, copied in a thread so the bot keeps answering. A failure is
    logged and the bot goes on; the next scheduled time tries again."""
    try:
        made = await asyncio.to_thread(
            backups.scheduled_backup,
            settings.database_path,
            settings.backup_folder,
            settings.backup_keep,
            slot=slot,
        )
    except backups.BackupError as error:
        log.error("scheduled backup failed: %s", error)
        return None
    if made is None:
        log.info("another jokebot process on this data directory made this backup")
    else:
        log.info("backup written: %s (%d jokes)", made.path, made.row_counts.get("jokes", 0))
    return made


def _announcer(bot: JokeBot, settings: Settings):
    """Where scheduled training results go: ANNOUNCE_CHANNEL_ID, else only the log."""

    async def announce(outcome: TrainingOutcome) -> None:
        if settings.announce_channel_id is None:
            return
        text = training_result(outcome)
        try:
            channel = bot.get_partial_messageable(settings.announce_channel_id)
            chart = await versions_chart_file(bot.services) if outcome.version else None
            await channel.send(fit_message(text), file=chart, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:
            log.warning("could not announce in channel %s: %s", settings.announce_channel_id, error)

    return announce
