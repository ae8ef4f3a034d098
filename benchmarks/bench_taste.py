"""Does the bot learn its community's taste? A simulated community votes by a rule, a retrain
follows, and fresh /joke samples show whether the new version follows the votes (issue #16).

    python benchmarks/bench_taste.py [--quick] [--seeds 3] [--jokes 160] [--voters 5]
                                     [--rules number,person] [--mechanisms corpus,votes] [--json F]

On the embedded model (SmolLM2-135M) and the starter corpus, for each seed:

1. A fresh install (its own data directory, starter corpus, v0 serving through a real runner
   process) tells `--jokes` jokes, exactly as /joke does (`bot.runners.joke_teller.tell_joke`,
   in-context examples, content policy), stored as shown jokes.
2. For each rule, two communities vote on those same jokes: one likes the rule, one dislikes
   it. Each joke gets `--voters` votes through the store's `vote` (what a button press calls);
   each vote follows the community's taste with probability `--follow`, else it is the other
   button. Jokes voted up by COMMUNITY_MIN_SCORE join the corpus, as they always did.
3. Each community's install retrains twice from the same votes, through the coordinator, the
   trainer process, the gate and the hot swap: (a) today's mechanism only
   (`PREFERENCE_TRAINING=off`: the upvoted jokes join the corpus) and (b) with the preference
   phase (`auto`). Then the runner tells `--fresh` new jokes the same way.

Per rule it prints the rule's share among the jokes before (v0's shown jokes) and after, the
separation between the two communities' new versions (liked share - disliked share), and the
gate's own figures for each new version: distinct-2 of its samples as a share of the serving
model's, one-joke rate, held-out NLL, training time and the whole retrain's time; mean and
spread over seeds, and the issue's targets checked.

Every setting is jokebot's default (the environment may change them, as for `jokebot run`:
`PREFERENCE_BETA=0.3 python benchmarks/bench_taste.py`), except that the gate's thresholds
are opened so that every trained version is measured; the default gate's verdict on it is
reported beside the figures. `--min-steps N` shortens the corpus phase (TRAIN_MIN_STEPS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.common import add_data_dir_argument  # noqa: E402

console = Console(width=160)
IN_FLIGHT = 16  # /joke requests at once: the runner's batch
TRIES = 3  # a /joke that came up empty (or all refused) is asked again, as a member would
MECHANISMS = {"corpus": "off", "votes": "auto"}  # name -> PREFERENCE_TRAINING
MECHANISM_LABELS = {"corpus": "(a) corpus", "votes": "(b) + votes"}
MECHANISM_NAMES = {
    "corpus": "today's mechanism: upvoted jokes join the corpus (PREFERENCE_TRAINING=off)",
    "votes": "the same, then the preference phase (PREFERENCE_TRAINING=auto)",
}


# ---- the rules a community votes by ---------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    says: str  # what a joke that follows it is, for the table
    pattern: re.Pattern[str]

    def holds(self, text: str) -> bool:
        return bool(self.pattern.search(text))


PROGRAMMING = (
    "program|programs|programmer|programmers|programming|code|coding|coder|computer|computers"
    "|software|bug|bugs|java|javascript|python|sql|html|linux|windows|server|database|keyboard"
    "|compiler|compiles|developer|developers|api|git|byte|bytes|binary|algorithm|function"
    "|variable|array|cpu|ram|internet|browser|app|hacker|debug|debugging|stack|null|boolean"
)
RULES = {
    # about 13% of v0's jokes and 15% of the starter corpus: numbers, digits or years
    "number": Rule("number", "has a number in it", re.compile(r"\d")),
    # about 16% of v0's jokes and 14% of the starter corpus: a narrator, not a topic
    "person": Rule(
        "person",
        "is told in the first person",
        re.compile(r"\b(I|I'm|I've|I'll|I'd)\b|\b(me|my|mine|we|our|us)\b", re.IGNORECASE),
    ),
    # about 13% of v0's jokes but 53% of the starter corpus: the corpus phase alone pulls it up
    "programming": Rule(
        "programming", "mentions programming", re.compile(rf"\b({PROGRAMMING})\b", re.IGNORECASE)
    ),
}
DEFAULT_RULES = "number,person"


# ---- one install -----------------------------------------------------------------------------


@dataclass
class Options:
    data_dir: Path
    work_dir: Path
    jokes: int
    voters: int
    follow: float
    fresh: int
    seeds: int
    rules: list[str]
    min_steps: int | None
    keep: bool
    json: Path | None = None
    mechanisms: tuple[str, ...] = tuple(MECHANISMS)
    first_seed: int = 1


def bench_settings(data_dir: Path, base: Path, seed: int, mechanism: str, options: Options):
    """jokebot's defaults for a fresh install, with the gate opened (every version measured)."""
    from bot.settings import Settings

    values: dict[str, Any] = {
        "data_dir": data_dir,
        "model_base": str(base),  # the converted embedded model, shared by every install
        "device": "cpu",
        "runner_port": 0,
        "retrain_schedule": "off",
        "backup_schedule": "off",
        "rate_joke_member": "off",  # the simulated members ask many times a minute
        "rate_joke_server": "off",
        "starter_corpus": True,
        "train_seed": seed,
        "preference_training": MECHANISMS[mechanism],
        "promote_min_nll_gain": 0.0,
        "promote_max_one_joke_drop": 1.0,
        "promote_max_copy_rate": 1.0,
        "promote_max_separation_drop": 1.0,
        "promote_min_diversity": 0.0,
    }
    if options.min_steps is not None:
        values["train_min_steps"] = options.min_steps
    return Settings(_env_file=None, **values)


def default_gate():
    """The gate a host has: the default settings' thresholds (environment included)."""
    from bot.settings import Settings
    from bot.training.coordinator import TrainingCoordinator

    return TrainingCoordinator(Settings(_env_file=None), db=None, runner=None)._policy()


async def tell_jokes(services, n: int) -> list[Any]:
    """`n` jokes told exactly as /joke tells them (ToldJoke), `IN_FLIGHT` at a time."""
    from bot.runners.joke_teller import EmptyJoke, tell_joke

    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one():
        async with gate:
            for attempt in range(1, TRIES + 1):  # as a member presses /joke again
                try:
                    return await tell_joke(
                        services.runner,
                        services.settings,
                        "",
                        examples=services.examples,
                        accept=lambda joke: services.content_policy.flags(joke) is None,
                    )
                except EmptyJoke:  # NoCleanJoke too: all refused by the content policy
                    if attempt == TRIES:
                        raise

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def show_jokes(settings, n: int) -> list[tuple[int, str]]:
    """A fresh install tells `n` jokes and stores them as shown; (generated id, text) each."""
    from bot.app import backend
    from bot.discord_app.text_limits import fit_message
    from model.contracts.jokes import normalise_key

    shown = []
    async with backend(settings) as started:
        services = started.services
        for number, told in enumerate(await tell_jokes(services, n)):
            text = fit_message(told.text)
            generated = await services.community.record_shown(
                text,
                normalise_key(text),
                prompt="",
                model_version=told.version if told.version is not None else 0,
                guild_id=1,
                channel_id=1,
                completion=told.completion,
                requested_by=10_000 + number,
            )
            shown.append((generated, text))
    return shown


def ballots(
    shown: Sequence[tuple[int, str]], rule: Rule, likes: bool, options: Options, seed: int
) -> list[tuple[int, int, int]]:
    """(generated id, member, +1/-1): each voter follows the taste with probability `follow`."""
    rng = random.Random(f"{seed}-{rule.name}-{likes}")
    cast = []
    for generated, text in shown:
        liked = rule.holds(text) == likes
        for voter in range(options.voters):
            agrees = rng.random() < options.follow
            cast.append((generated, 20_000 + voter, 1 if liked == agrees else -1))
    return cast


@dataclass
class RunResult:
    seed: int
    rule: str
    community: str  # likes | dislikes
    mechanism: str  # corpus | votes
    before: float
    after: float
    status: str
    default_gate: str
    retrain_seconds: float
    train_seconds: float
    preference_seconds: float
    preference_steps: int
    kept_step: int  # the votes phase's weights at the end: this step's (model.sample_check)
    votes_learned: int
    joined_corpus: int
    nll: float
    serving_nll: float
    one_joke: float
    distinct_2: float
    serving_distinct_2: float
    vote_separation: float | None
    fresh_distinct_2: float
    samples: list[str] = field(default_factory=list)


async def retrain_and_tell(
    run_dir: Path,
    shown_db: Path,
    shown: Sequence[tuple[int, str]],
    rule: Rule,
    community: str,
    mechanism: str,
    base: Path,
    seed: int,
    options: Options,
) -> RunResult:
    """Copy the install that told the jokes, vote, retrain (coordinator -> trainer -> gate ->
    hot swap), then tell `fresh` jokes from the new version."""
    from bot.app import backend
    from bot.training.gate import decide
    from model.preference_eval import distinct_n

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    for part in shown_db.parent.glob(shown_db.name + "*"):  # the database, -wal and -shm
        shutil.copy2(part, run_dir / part.name)
    settings = bench_settings(run_dir, base, seed, mechanism, options)
    votes = ballots(shown, rule, community == "likes", options, seed)
    async with backend(settings) as started:
        services = started.services
        for generated, member, value in votes:
            await services.community.vote(generated, member, value)
        joined = await services.db.fetchone(
            "SELECT count(*) FROM generated_jokes WHERE corpus_joke_id IS NOT NULL"
        )
        outcome = await services.training.train("cli")
        if outcome.status != "promoted":
            raise RuntimeError(f"the retrain did not finish: {outcome.status}: {outcome.message}")
        told = [joke.text for joke in await tell_jokes(services, options.fresh)]
        version = await services.db.version(outcome.version)
    training = version.manifest.get("training", {}) if version else {}
    candidate, serving = outcome.metrics["candidate"], outcome.metrics["serving"]
    verdict = decide(candidate, serving, default_gate())
    phase = candidate.get("preference") or {}
    if not options.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return RunResult(
        seed=seed,
        rule=rule.name,
        community=community,
        mechanism=mechanism,
        before=share(rule, [text for _, text in shown]),
        after=share(rule, told),
        status=outcome.status,
        default_gate="promote" if verdict.promote else "refuse: " + verdict.reason.split(";")[0],
        retrain_seconds=outcome.seconds,
        train_seconds=float(training.get("train_seconds", 0.0)),
        preference_seconds=float(phase.get("seconds", 0.0)),
        preference_steps=int(phase.get("steps", 0)),
        kept_step=int(phase.get("kept_step", phase.get("steps", 0))),
        votes_learned=int(candidate.get("votes_up", 0)) + int(candidate.get("votes_down", 0)),
        joined_corpus=int(joined[0]),
        nll=float(candidate["nll"]),
        serving_nll=float(serving["nll"]),
        one_joke=float(candidate["one_joke_rate"]),
        distinct_2=float(candidate.get("distinct_2", 0.0)),
        serving_distinct_2=float(serving.get("distinct_2", 0.0)),
        vote_separation=candidate.get("vote_separation"),
        fresh_distinct_2=distinct_n(told),
        samples=told[:5],
    )


def share(rule: Rule, texts: Sequence[str]) -> float:
    return sum(rule.holds(text) for text in texts) / len(texts) if texts else 0.0


# ---- the whole benchmark --------------------------------------------------------------------


async def run_benchmark(options: Options, base: Path) -> tuple[list[RunResult], dict[int, list]]:
    rules = [RULES[name] for name in options.rules]
    runs = [
        (rule, community, mechanism)
        for rule in rules
        for community in ("likes", "dislikes")
        for mechanism in options.mechanisms
    ]
    results: list[RunResult] = []
    shown_by_seed: dict[int, list] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("starting", total=options.seeds * (1 + len(runs)))
        for seed in range(options.first_seed, options.first_seed + options.seeds):
            seed_dir = options.work_dir / f"seed-{seed}"
            install = seed_dir / "shown"
            shutil.rmtree(install, ignore_errors=True)
            progress.update(task, description=f"seed {seed}: v0 tells {options.jokes} jokes")
            began = time.monotonic()
            settings = bench_settings(install, base, seed, "corpus", options)
            shown = await show_jokes(settings, options.jokes)
            shown_by_seed[seed] = shown
            progress.console.print(
                f"seed {seed}: v0 told {len(shown)} jokes in {time.monotonic() - began:.0f} s; "
                + ", ".join(
                    f"{rule.name} {share(rule, [t for _, t in shown]):.0%}" for rule in rules
                )
            )
            progress.advance(task)
            for rule, community, mechanism in runs:
                progress.update(
                    task,
                    description=f"seed {seed}: {rule.name}, community {community}, "
                    f"{MECHANISM_LABELS[mechanism]}",
                )
                result = await retrain_and_tell(
                    seed_dir / f"{rule.name}-{community}-{mechanism}",
                    settings.database_path,
                    shown,
                    rule,
                    community,
                    mechanism,
                    base,
                    seed,
                    options,
                )
                results.append(result)
                if options.json:  # after every run: an hour's benchmark keeps what it measured
                    options.json.write_text(
                        json.dumps([asdict(r) for r in results], indent=1), "utf-8"
                    )
                progress.console.print(
                    f"seed {seed}, {rule.name}, {community}, {mechanism}: "
                    f"{result.before:.0%} -> {result.after:.0%}, NLL {result.nll:.3f}, "
                    f"one-joke {result.one_joke:.0%}, retrain {result.retrain_seconds:.0f} s "
                    f"(votes phase {result.preference_seconds:.0f} s), "
                    f"default gate: {result.default_gate}"
                )
                progress.advance(task)
            if not options.keep:
                shutil.rmtree(seed_dir, ignore_errors=True)
    return results, shown_by_seed


# ---- the tables ------------------------------------------------------------------------------


def mean_sd(values: Sequence[float], scale: float = 100.0, digits: int = 0) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def diversity(result: RunResult) -> float:
    """The version's distinct-2 as a share of the serving model's (the gate's samples)."""
    return result.distinct_2 / result.serving_distinct_2 if result.serving_distinct_2 else 0.0


def pick(results, **where) -> list[RunResult]:
    return [r for r in results if all(getattr(r, k) == v for k, v in where.items())]


def separations(results, rule: str, mechanism: str) -> list[float]:
    """Per seed: liked community's share after - disliked community's share after."""
    liked = {
        r.seed: r.after for r in pick(results, rule=rule, mechanism=mechanism, community="likes")
    }
    disliked = {
        r.seed: r.after for r in pick(results, rule=rule, mechanism=mechanism, community="dislikes")
    }
    return [liked[s] - disliked[s] for s in sorted(liked) if s in disliked]


def print_rule(results: list[RunResult], rule: Rule, max_minutes: float) -> None:
    table = Table(title=f"rule: {rule.says} ({rule.name}); mean ± sd over seeds")
    headers = {
        "mechanism": "left",
        "community": "left",
        "share before %": "right",
        "share after %": "right",
        "separation pts": "right",
        "distinct-2 / serving %": "right",
        "one-joke %": "right",
        "NLL": "right",
        "serving NLL": "right",
        "corpus phase s": "right",
        "votes phase s": "right",
        "retrain s": "right",
        "default gate promotes": "right",
    }
    for header, justify in headers.items():
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    refusals = []
    for mechanism in MECHANISMS:
        sep = separations(results, rule.name, mechanism)
        for community in ("likes", "dislikes"):
            rows = pick(results, rule=rule.name, mechanism=mechanism, community=community)
            if not rows:
                continue
            refusals += [
                f"{mechanism}/{community}/seed {r.seed}: {r.default_gate}"
                for r in rows
                if r.default_gate != "promote"
            ]
            table.add_row(
                MECHANISM_LABELS[mechanism] if community == "likes" else "",
                community,
                mean_sd([r.before for r in rows]),
                mean_sd([r.after for r in rows]),
                mean_sd(sep) if community == "likes" else "",
                mean_sd(
                    [r.distinct_2 / r.serving_distinct_2 for r in rows if r.serving_distinct_2]
                ),
                mean_sd([r.one_joke for r in rows]),
                mean_sd([r.nll for r in rows], 1, 3),
                mean_sd([r.serving_nll for r in rows], 1, 3),
                mean_sd([r.train_seconds for r in rows], 1),
                mean_sd([r.preference_seconds for r in rows], 1),
                mean_sd([r.retrain_seconds for r in rows], 1),
                f"{sum(r.default_gate == 'promote' for r in rows)}/{len(rows)}",
            )
    console.print(table)
    for mechanism, label in MECHANISM_LABELS.items():
        console.print(f"  {label}: {MECHANISM_NAMES[mechanism]}")
    for refusal in refusals:
        console.print(f"  default gate on {refusal}")
    for r in results:
        if r.rule == rule.name and r.kept_step < r.preference_steps:
            console.print(
                f"  seed {r.seed} {r.community}: the votes phase ended on step {r.kept_step} "
                f"of {r.preference_steps} (later samples less varied or less often whole)"
            )
    print_targets(results, rule, max_minutes)


def print_targets(results: list[RunResult], rule: Rule, max_minutes: float) -> None:
    """The issue's targets for the preference phase, on the means over seeds."""
    votes = pick(results, rule=rule.name, mechanism="votes")
    liked = pick(results, rule=rule.name, mechanism="votes", community="likes")
    disliked = pick(results, rule=rule.name, mechanism="votes", community="dislikes")
    if not (liked and disliked):
        return
    before = statistics.fmean(r.before for r in votes)
    up = statistics.fmean(r.after for r in liked)
    down = statistics.fmean(r.after for r in disliked)
    sep = statistics.fmean(separations(results, rule.name, "votes"))
    today = separations(results, rule.name, "corpus")
    today_sep = statistics.fmean(today) if today else math.nan
    checks = [
        ("serving share between 10% and 40%", 0.10 <= before <= 0.40, f"{before:.0%}"),
        ("the two communities differ by >= 50 points", sep >= 0.5, f"{sep * 100:.0f} pts"),
        ("liked: share at least doubles", up >= 2 * before, f"{before:.0%} -> {up:.0%}"),
        ("liked: gains >= 20 points", up - before >= 0.2, f"{(up - before) * 100:+.0f} pts"),
        ("disliked: share at least halves", down <= before / 2, f"{before:.0%} -> {down:.0%}"),
        (
            "separation >= 1.5 x today's mechanism",
            (today_sep > 0 and sep >= 1.5 * today_sep) or today_sep <= 0 < sep,
            f"{sep * 100:.0f} vs {today_sep * 100:.0f} pts",
        ),
        (
            "distinct-2 >= 80% of the serving model's",
            all(diversity(r) >= 0.8 for r in votes),
            f"lowest {min(diversity(r) for r in votes):.0%}",
        ),
        (
            "one-joke rate >= 90%",
            all(r.one_joke >= 0.9 for r in votes),
            f"lowest {min(r.one_joke for r in votes):.0%}",
        ),
        (
            f"whole retrain within RETRAIN_MAX_MINUTES ({max_minutes:g})",
            all(r.retrain_seconds <= max_minutes * 60 for r in votes),
            f"longest {max(r.retrain_seconds for r in votes) / 60:.1f} min",
        ),
    ]
    for what, ok, figure in checks:
        console.print(f"  {'[green]met[/]' if ok else '[red]NOT met[/]'}  {what}: {figure}")


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--work-dir", type=Path, help="for the installs (default: a temp dir)")
    parser.add_argument("--jokes", type=int, default=160, help="jokes shown and voted on")
    parser.add_argument("--voters", type=int, default=5, help="votes per joke")
    parser.add_argument("--follow", type=float, default=0.85, help="share of votes by the rule")
    parser.add_argument("--fresh", type=int, default=96, help="jokes told after the retrain")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1, help="e.g. to go on after a stop")
    parser.add_argument("--rules", default=DEFAULT_RULES, help=f"of {', '.join(RULES)}")
    parser.add_argument("--min-steps", type=int, help="TRAIN_MIN_STEPS (default: jokebot's)")
    parser.add_argument("--quick", action="store_true", help="one rule, one seed, 96 jokes")
    parser.add_argument("--keep", action="store_true", help="keep the installs' folders")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--mechanisms", default=",".join(MECHANISMS), help="which retrains (default: both)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.jokes, args.fresh = 1, min(args.jokes, 96), min(args.fresh, 64)
        args.rules = args.rules.split(",")[0]
    rules = [name.strip() for name in args.rules.split(",") if name.strip()]
    unknown = [name for name in rules if name not in RULES]
    if unknown:
        parser.error(f"unknown rule {', '.join(unknown)}; choose from {', '.join(RULES)}")
    mechanisms = tuple(name.strip() for name in args.mechanisms.split(",") if name.strip())
    if not mechanisms or set(mechanisms) - set(MECHANISMS):
        parser.error(f"--mechanisms: choose from {', '.join(MECHANISMS)}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="jokebot-taste-"))
    options = Options(
        args.data_dir, work, args.jokes, args.voters, args.follow, args.fresh, args.seeds,
        rules, args.min_steps, args.keep, args.json, mechanisms, args.first_seed,
    )  # fmt: skip
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from bot.settings import Settings
    from model.embedded import ensure_embedded_model

    base = ensure_embedded_model(options.data_dir)
    defaults = Settings(_env_file=None)
    steps = options.min_steps if options.min_steps is not None else defaults.train_min_steps
    console.print(
        f"bench_taste: {options.jokes} jokes x {options.voters} voters ({options.follow:.0%} by "
        f"the rule), {options.fresh} fresh jokes after, {options.seeds} seed(s), rules "
        f"{', '.join(options.rules)}; {os.cpu_count()} CPUs\n"
        f"PREFERENCE_BETA={defaults.preference_beta} "
        f"PREFERENCE_LEARNING_RATE={defaults.preference_learning_rate} "
        f"PREFERENCE_EPOCHS={defaults.preference_epochs} "
        f"PREFERENCE_SFT_WEIGHT={defaults.preference_sft_weight} "
        f"PREFERENCE_LOSS={defaults.preference_loss} TRAIN_MIN_STEPS={steps}"
    )
    began = time.monotonic()
    try:
        results, _ = asyncio.run(run_benchmark(options, base))
    finally:
        if not options.keep:
            shutil.rmtree(options.work_dir, ignore_errors=True)
    for name in options.rules:
        print_rule(results, RULES[name], defaults.retrain_max_minutes)
    console.print(f"whole benchmark: {(time.monotonic() - began) / 60:.1f} min")
    console.print("jokes the new versions told:")
    for r in results:
        console.print(f"  seed {r.seed} {r.rule}/{r.community}/{r.mechanism}: {r.samples[:2]}")
    if options.json:
        options.json.write_text(json.dumps([asdict(r) for r in results], indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
