"""The `jokebot` command: run, runner, sandbox, import, train, models, rollback.

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
            version=version or "v0",
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
