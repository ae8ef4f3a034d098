"""The `jokebot` command: run, runner, sandbox, import, train, models, rollback, backup,
restore, db (status, copy).

Imports neither discord nor torch at module level: each subcommand loads what it needs, so
`jokebot run` never loads torch and `jokebot runner` never loads discord.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from bot.settings import Settings, SettingsError, load_settings

log = logging.getLogger("jokebot")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("discord").setLevel(max(logging.getLevelName(level), logging.INFO))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


# ---- subcommands ---------------------------------------------------------------------------


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import run_bot

    settings.require_discord_token()
    return asyncio.run(run_bot(settings))


def cmd_runner(settings: Settings, args: argparse.Namespace) -> int:
    from model.contracts.manifest import version_name
    from model.embedded import embedded_model_dir, ensure_embedded_model
    from model.runner import RunnerConfig, run_runner

    model_ref, version = args.model, args.version
    if model_ref is None:
        model_ref, version = asyncio.run(_active_version(settings))
    if Path(model_ref).resolve() == embedded_model_dir(settings.data_dir).resolve():
        ensure_embedded_model(settings.data_dir)  # the first start converts it (a minute)
    token = settings.runner_admin_token()
    run_runner(
        RunnerConfig(
            model_ref=model_ref,
            version=version or version_name(0),
            host=args.host or settings.runner_host,
            port=settings.runner_port if args.port is None else args.port,
            device=settings.device,
            dtype=args.dtype or settings.dtype,
            admin_token=token,
            max_queue=settings.runner_max_queue,
            max_batch=settings.runner_max_batch,
            compile=settings.runner_compile,
            default_max_tokens=settings.joke_max_tokens,
            listen_fd=args.listen_fd,
        )
    )
    return 0


async def _active_version(settings: Settings) -> tuple[str, str]:
    from bot.app import open_database

    db = await open_database(settings)
    try:
        active = await db.active_version()
        return active.path, active.name
    finally:
        await db.close()


def cmd_sandbox(settings: Settings, args: argparse.Namespace) -> int:
    from bot.sandbox import run_sandbox

    if "LOG_LEVEL" not in os.environ:  # keep the conversation readable; children inherit it
        os.environ["LOG_LEVEL"] = "WARNING"
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("discord").setLevel(logging.WARNING)
        # The loopback gateway answers heartbeats at once; on a busy CPU discord.py then warns
        # that it "can't keep up" although nothing is late. Not worth a sandbox user's attention.
        logging.getLogger("discord.gateway").setLevel(logging.ERROR)

    return asyncio.run(run_sandbox(settings, sys.stdin, echo=args.echo))


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from bot.app import open_database
    from bot.community.content_policy import ContentPolicy
    from bot.community.importer import import_jokes, parse_jokes, read_source
    from bot.community.submissions import load_near_duplicates

    try:
        jokes = parse_jokes(read_source(args.file), args.file)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise SettingsError(f"cannot read {args.file}: {error}") from None

    async def run() -> None:
        db = await open_database(settings)
        try:
            with Progress(transient=False) as progress:
                task = progress.add_task(f"importing {args.file}", total=len(jokes))
                summary = await import_jokes(
                    db,
                    jokes,
                    on_progress=lambda n: progress.advance(task, n),
                    near_duplicates=await load_near_duplicates(settings, db),
                    policy=ContentPolicy.from_settings(settings),
                )
            for line in summary.lines():
                print(line)
            print(f"corpus: {await db.joke_count()} jokes")
        finally:
            await db.close()

    asyncio.run(run())
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from bot.app import connect_runner, open_database
    from bot.community.starter import seed_starter_corpus
    from bot.training.coordinator import TrainingCoordinator
    from bot.training.progress import TrainingProgress, format_duration
    from bot.training.wording import training_result

    async def run() -> int:
        db = await open_database(settings)
        await seed_starter_corpus(db, settings)  # a fresh data directory trains on the starter
        coordinator = TrainingCoordinator(settings, db, None)
        refusal = await coordinator.corpus_refusal()
        if refusal:
            print(refusal)
            await db.close()
            return 1
        runner = await connect_runner(settings)
        if runner is None:
            print("no runner is up: a promoted version will serve from the next start")
        try:
            coordinator.runner = runner
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
            )
            with Progress(*columns) as progress:
                task = progress.add_task("training", total=None, info="preparing")

                async def show(state: TrainingProgress) -> None:
                    info = [f"loss {state.loss:.3f}" if state.loss is not None else ""]
                    if state.eval_loss is not None:
                        info.append(f"val {state.eval_loss:.3f}")
                    if state.eta_seconds is not None:
                        info.append(f"~{format_duration(state.eta_seconds)} left")
                    if state.phase != "training":
                        info.append(state.detail or state.phase)
                    progress.update(
                        task,
                        description=state.phase,
                        completed=state.step,
                        total=state.total_steps or None,
                        info=" ".join(part for part in info if part),
                    )

                outcome = await coordinator.train("cli", on_progress=show)
            print(training_result(outcome).replace("**", ""))
            return 0 if outcome.status in ("promoted", "rejected") else 1
        finally:
            if runner is not None:
                await runner.close()
            await db.close()

    return asyncio.run(run())


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import open_database
    from bot.store.community import CommunityStore
    from bot.training.wording import corpus_summary, versions_table
    from model.contracts.votes import CommunityScore

    async def run() -> int:
        db = await open_database(settings)
        try:
            found = await db.versions()
            total, by_source = await db.joke_count(), await db.corpus_by_source()
            scores = await CommunityStore(db).version_scores()
        finally:
            await db.close()
        if args.json:
            listing = [
                {**v.as_json(), "community": scores.get(v.version, CommunityScore()).as_json()}
                for v in found
            ]
            print(json.dumps(listing, indent=2))
        else:
            print(versions_table(found, scores))
            print(f"corpus: {corpus_summary(total, by_source)}")
        return 0

    return asyncio.run(run())


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import connect_runner, open_database
    from bot.runners.client import RunnerError
    from bot.training import versions

    async def run() -> int:
        db = await open_database(settings)
        runner = await connect_runner(settings)
        try:
            chosen = await versions.rollback(db, runner, args.version)
        except (versions.VersionError, RunnerError) as error:
            print(f"jokebot: rollback refused: {error}", file=sys.stderr)
            return 1
        finally:
            if runner is not None:
                await runner.close()
            await db.close()
        where = "now serves" if runner else "will serve from the next start"
        print(f"{chosen.name} {where}")
        return 0

    return asyncio.run(run())


def cmd_db_copy(settings: Settings, args: argparse.Namespace) -> int:
    from bot.store.backends import (
        DatabaseUrlError,
        PostgresBackend,
        SQLiteBackend,
        open_backend,
        redact_url,
        url_kind,
    )
    from bot.store.copy import CopyRefused, copy_database

    source_path = Path(args.source) if args.source else settings.database_path
    if not source_path.is_file():
        raise SettingsError(f"there is no SQLite database at {source_path} to copy")
    try:
        kind = url_kind(args.to)
    except DatabaseUrlError:
        kind = None
    if kind != "postgresql":
        raise SettingsError("--to must be a postgresql://user:password@host:port/database URL")

    async def run() -> int:
        source = await SQLiteBackend.open(source_path)
        try:
            await source.migrate()
            target = await open_backend(args.to, timeout=settings.database_timeout)
            assert isinstance(target, PostgresBackend)
            try:
                copied = await copy_database(source, target)
            finally:
                await target.close()
        except (CopyRefused, DatabaseUrlError) as error:
            print(f"jokebot: db copy refused: {error}", file=sys.stderr)
            return 1
        finally:
            await source.close()
        width = max(len(table.table) for table in copied)
        for table in copied:
            print(f"  {table.table:<{width}}  {table.rows:>9,} rows  sha256 {table.checksum[:16]}")
        print(
            f"copied {source_path} into {redact_url(args.to)}: every table verified"
            " (rows and checksum). Set DATABASE_URL to it to use it."
        )
        return 0

    return asyncio.run(run())


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    _refuse_on_postgresql(settings)
    from datetime import UTC, datetime

    from bot.store import backup as backups

    target = (
        Path(args.to)
        if args.to
        else settings.backup_folder / backups.backup_name(datetime.now(UTC))
    )
    try:
        made = backups.backup_database(settings.database_path, target)
    except backups.BackupError as error:
        print(f"jokebot: backup failed: {error}", file=sys.stderr)
        return 1
    print(f"backup written: {made.path} ({_contents(made)})")
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    _refuse_on_postgresql(settings)
    from bot.store import backup as backups

    try:
        restored = backups.restore_database(
            Path(args.file), settings.database_path, settings.data_dir
        )
    except backups.BackupError as error:
        print(f"jokebot: restore refused: {error}", file=sys.stderr)
        return 1
    print(f"restored {args.file} into {restored.facts.path} ({_contents(restored.facts)})")
    if restored.kept_aside is not None:
        print(f"the database before the restore is kept as {restored.kept_aside}")
    return 0


def cmd_db_status(settings: Settings, args: argparse.Namespace) -> int:
    from bot.store import backup as backups

    if settings.uses_postgresql:
        return _postgres_status(settings)
    path = settings.database_path.resolve()
    print(f"backend: sqlite {path}")
    if not path.is_file():
        print("no database yet: `jokebot run` (or any command that opens it) creates it")
        return 1
    try:
        facts = backups.inspect_database(path, check_integrity=args.check)
    except backups.BackupError as error:
        print(f"jokebot: {error}", file=sys.stderr)
        return 1
    latest = backups.latest_schema_version()
    behind = "" if facts.schema_version == latest else " (migrated at the next start)"
    print(f"schema version: {facts.schema_version} of {latest}{behind}")
    if args.check:
        print("integrity_check: ok")
    width = max(len(table) for table in facts.row_counts)
    print("rows:")
    for table, count in facts.row_counts.items():
        print(f"  {table:<{width}}  {count:>9,}")
    return 0


def _refuse_on_postgresql(settings: Settings) -> None:
    """`jokebot backup` and `restore` are for the SQLite file; PostgreSQL has its own tools."""
    if settings.uses_postgresql:
        raise SettingsError(
            "DATABASE_URL names a PostgreSQL database: back it up with pg_dump (or WAL"
            " archiving) and restore with pg_restore; jokebot backup/restore are for SQLite"
        )


def _postgres_status(settings: Settings) -> int:
    """`jokebot db status` for DATABASE_URL=postgresql://…: the same facts, without migrating."""
    from bot.store.backends import DatabaseUrlError, PostgresBackend, migrations

    async def run() -> int:
        try:
            backend = await PostgresBackend.open(
                settings.database_url_text, pool_size=1, timeout=settings.database_timeout
            )
        except DatabaseUrlError as error:
            raise SettingsError(f"DATABASE_URL: {error}") from None
        try:
            print(f"backend: {backend.description}")
            version, latest = await backend.schema_version(), len(migrations("postgresql"))
            behind = "" if version == latest else " (migrated at the next start)"
            print(f"schema version: {version} of {latest}{behind}")
            counts = await backend.row_counts()
        finally:
            await backend.close()
        width = max((len(table) for table in counts), default=0)
        print("rows:")
        for table, count in counts.items():
            print(f"  {table:<{width}}  {count:>9,}")
        return 0

    return asyncio.run(run())


def _contents(facts) -> str:
    """`schema 3, 120 jokes, 45 votes`: what a backup or restore holds, in one phrase."""
    counts = facts.row_counts
    return (
        f"schema {facts.schema_version}, {counts.get('jokes', 0)} jokes,"
        f" {counts.get('votes', 0)} votes"
    )


# ---- argument parsing ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jokebot",
        description="A Discord bot that tells jokes written by a language model.",
        epilog="Settings come from the environment and .env; see .env.example.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    add("run", cmd_run, "connect to Discord and serve (starts the model runner too)")
    runner = add("runner", cmd_runner, "run only the model runner (HTTP API; owns the GPU)")
    runner.add_argument("--host", help="bind address (default RUNNER_HOST, 127.0.0.1)")
    runner.add_argument("--port", type=int, help="port (default RUNNER_PORT, 8765)")
    runner.add_argument("--model", help="model folder or hub id (default: the active version)")
    runner.add_argument("--version", help="name to report for --model, e.g. v3")
    runner.add_argument(
        "--dtype", choices=("auto", "float32", "bfloat16", "float16"),
        help="weights' dtype (default DTYPE, auto: the fastest measured on this CPU)",
    )  # fmt: skip
    runner.add_argument(
        "--listen-fd", type=int, help="serve on this inherited listening socket (`jokebot run`)"
    )
    sandbox = add("sandbox", cmd_sandbox, "try the bot in a terminal, no Discord account needed")
    sandbox.add_argument("--echo", action="store_true", help="print each command as it is read")
    importer = add("import", cmd_import, "add jokes from a CSV (Joke column) or a text file")
    importer.add_argument("file", help="path (or http(s) URL) of a .csv or one-joke-per-line file")
    add("train", cmd_train, "fine-tune on the corpus now; promote the result if it is better")
    models = add("models", cmd_models, "list model versions (v0 is the base model)")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    rollback = add("rollback", cmd_rollback, "serve an earlier version again")
    rollback.add_argument("version", nargs="?", type=int, help="version number (default: previous)")
    backup = add("backup", cmd_backup, "copy the database now, online and checked (see BACKUP_DIR)")
    backup.add_argument(
        "--to", metavar="FILE", help="where (default: BACKUP_DIR/jokebot-TIME.sqlite3)"
    )
    restore = add("restore", cmd_restore, "replace the database with a backup (jokebot stopped)")
    restore.add_argument("file", help="a backup written by `jokebot backup` or the schedule")
    db = sub.add_parser("db", help="the database: status, copy", description="the database")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    status = db_sub.add_parser(
        "status", help="backend, schema version and rows per table",
        description="backend, schema version and rows per table",
    )  # fmt: skip
    status.set_defaults(handler=cmd_db_status)
    status.add_argument("--check", action="store_true", help="run PRAGMA integrity_check too")
    copy = db_sub.add_parser(
        "copy", help="copy the SQLite database into an empty PostgreSQL one, verified",
        description="copy the SQLite database into an empty PostgreSQL one, verified",
    )  # fmt: skip
    copy.set_defaults(handler=cmd_db_copy)
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://user:pw@host/db")
    copy.add_argument(
        "--from", dest="source", metavar="FILE", help="the SQLite file (default: the data dir's)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level)
        return args.handler(settings, args) or 0
    except SettingsError as error:
        print(f"jokebot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # StartupError and the like: one clear line, details in the log
        from bot.app import StartupError

        if isinstance(error, StartupError):
            print(f"jokebot: {error}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
