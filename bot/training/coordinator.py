"""One training run, the same for `jokebot train`, `/retrain` and the scheduler.

Snapshot the corpus to a file, run `python -m model.train` in its own process group (one
process, or TRAIN_PROCESSES data-parallel ones through torchrun: `bot.training.trainer`; a
crash or an out-of-memory there never touches serving), follow its events, pass its metrics
through the promotion gate, and make the runner serve the new version only if it is better.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.runners.pool import RunnerPool
from bot.settings import Settings
from bot.store.community import CommunityStore
from bot.store.database import Database
from bot.store.leader import LockHeld, cluster_lock
from bot.training import versions
from bot.training.gate import GatePolicy, learned_from_votes
from bot.training.progress import TrainingProgress
from bot.training.trainer import (
    TrainerProcess,
    launcher_failure,
    resolve_train_processes,
    trainer_command,
)
from model.contracts.corpus import corpus_hash, write_snapshot
from model.contracts.manifest import VersionOrigin, version_name
from model.contracts.preferences import write_preferences
from model.contracts.training_events import DoneEvent, ErrorEvent, TrainerEvent
from model.contracts.training_job import TrainJob

log = logging.getLogger(__name__)
ProgressCallback = Callable[[TrainingProgress], Awaitable[None]]


class TrainingBusy(Exception):
    """A training run is already under way; only one runs at a time."""


class CorpusTooSmall(Exception):
    """Too few approved jokes to learn from (TRAIN_MIN_JOKES); the message says so plainly."""


@dataclass
class TrainingOutcome:
    """What happened, for the CLI, the Discord message and the logs."""

    run_id: int
    status: str  # promoted, rejected, failed, cancelled
    message: str
    version: int | None = None
    serving: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class TrainingCoordinator:
    """Runs at most one training at a time and remembers its live progress."""

    def __init__(self, settings: Settings, db: Database, runner: RunnerPool | None) -> None:
        self.settings = settings
        self.db = db
        self.runner = runner
        self.progress: TrainingProgress | None = None
        self.run_id: int | None = None
        self._lock = asyncio.Lock()
        self._process: TrainerProcess | None = None
        self._cancelled = False
        self._stopping: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def cancel(self) -> bool:
        """Stop the running training (SIGTERM to its process group); False if none runs."""
        if not self.busy:
            return False
        self._cancelled = True
        if self._process is not None and self._process.running and self._stopping is None:
            self._stopping = asyncio.create_task(self._process.stop())
        return True

    async def new_jokes_since_last_training(self) -> int:
        return await self.db.jokes_added_since(await self.db.last_trained_joke_id())

    async def corpus_refusal(self) -> str | None:
        """Why the corpus is too small to train on (a sentence for people), or None."""
        size, needed = await self.db.joke_count(), self.settings.train_min_jokes
        if size >= needed:
            return None
        return (
            f"Not enough jokes to learn from: the corpus has {size} approved "
            f"joke{'s' if size != 1 else ''}, training needs at least {needed} "
            "(TRAIN_MIN_JOKES). Add jokes with /addjoke or `jokebot import`."
        )

    async def train(
        self,
        trigger: str,
        requested_by: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> TrainingOutcome:
        refusal = await self.corpus_refusal()
        if refusal:
            raise CorpusTooSmall(refusal)
        # No await between this check and taking the lock (an unlocked asyncio.Lock is taken
        # without yielding): of two runs asked for at once, one runs and the other is refused.
        if self._lock.locked():
            raise TrainingBusy("a training run is already under way")
        async with self._lock, self._exclusive_training():
            self._cancelled = False
            self._stopping = None
            self.progress = TrainingProgress()
            started = time.monotonic()
            run_id = await self.db.start_run(trigger, requested_by)
            self.run_id = run_id
            try:
                outcome = await self._run(run_id, on_progress or _ignore)
            except asyncio.CancelledError:
                await self.db.update_run(
                    run_id, status="cancelled", finished=True, message="jokebot stopped"
                )
                raise
            except Exception as error:
                log.exception("training run #%d failed", run_id)
                outcome = TrainingOutcome(run_id, "failed", f"training failed: {error}")
            finally:
                self._process = None
                versions.remove_partial_outputs(self.settings.models_dir)
            outcome.seconds = time.monotonic() - started
            outcome.serving = (await self.db.active_version()).name
            if outcome.status in ("failed", "cancelled"):
                await self.db.update_run(
                    run_id, status=outcome.status, finished=True, message=outcome.message
                )
            self.progress.phase = "done"
            log.info("training run #%d: %s — %s", run_id, outcome.status, outcome.message)
            return outcome

    @contextlib.asynccontextmanager
    async def _exclusive_training(self) -> AsyncIterator[None]:
        """One training per data directory (a file lock: the bot and `jokebot train`) and, on
        PostgreSQL, one across every process sharing the database (an advisory lock)."""
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(host_training_lock(self.settings.data_dir))
            try:
                await stack.enter_async_context(cluster_lock(self.db.backend, "training"))
            except LockHeld:
                raise TrainingBusy("a training run is already under way elsewhere") from None
            yield

    async def _run(self, run_id: int, on_progress: ProgressCallback) -> TrainingOutcome:
        settings = self.settings
        corpus = await self.db.corpus()
        if len(corpus) < max(2, settings.train_min_jokes):  # shrank since train() checked
            return TrainingOutcome(run_id, "failed", await self.corpus_refusal() or "")
        await _convert_embedded_base_in_child(self.settings)
        serving = await self.db.active_version()
        base_ref = serving.path if settings.retrain_from == "serving" else settings.base_model_ref
        parent = serving.version if settings.retrain_from == "serving" else 0
        number = await self.db.next_version_number()
        output = settings.models_dir / version_name(number)
        shutil.rmtree(output, ignore_errors=True)  # a folder no database row names is garbage
        work = settings.data_dir / "runs" / f"run-{run_id}"
        work.mkdir(parents=True, exist_ok=True)
        snapshot = work / "snapshot.jsonl"
        write_snapshot(snapshot, corpus)
        await self.db.update_run(
            run_id,
            corpus_size=len(corpus),
            corpus_hash=corpus_hash(corpus),
            last_joke_id=corpus[-1].id,
        )
        votes = await self.export_votes(run_id, work)
        job = self._job(snapshot, base_ref, serving.path, output, number, parent, votes)
        job.eval_dtype = await self._gate_dtype()
        job_file = work / "job.json"
        job_file.write_text(job.file_text(), encoding="utf-8")

        done = await self._run_trainer(job_file, work / "train.log", on_progress)
        if self._cancelled:
            return TrainingOutcome(run_id, "cancelled", "cancelled by an admin")
        if not isinstance(done, DoneEvent):
            reason = done.message if isinstance(done, ErrorEvent) else ""
            return TrainingOutcome(run_id, "failed", reason or "the trainer ended without a result")

        candidate = versions.Candidate(number, output, parent, done.metrics)

        async def announce_loading() -> None:
            where = "into the runner" if self.runner else "as the serving version"
            self.progress.phase, self.progress.detail = "loading", f"{candidate.name} {where}"
            await on_progress(self.progress)

        promotion = await versions.promote(
            self.db,
            self.runner,
            candidate,
            self._policy(),
            keep=settings.keep_versions,
            before_loading=announce_loading,
        )
        status = "promoted" if promotion.promoted else "rejected"
        if promotion.promoted and learned_from_votes(done.metrics["candidate"]):
            await CommunityStore(self.db).mark_votes_learned(run_id)
        await self.db.update_run(
            run_id,
            status=status,
            finished=True,
            message=promotion.reason,
            metrics=done.metrics,
            candidate_version=number,
        )
        shutil.rmtree(work, ignore_errors=True)
        return TrainingOutcome(
            run_id,
            status,
            promotion.reason,
            version=number,
            metrics=done.metrics,
            samples=done.samples,
        )

    async def votes_to_learn(self) -> int:
        """Votes the serving version has not learned from (every vote with RETRAIN_FROM=base,
        where each run starts afresh); 0 with PREFERENCE_TRAINING=off."""
        if self.settings.preference_training == "off":
            return 0
        return await CommunityStore(self.db).new_votes(
            all_votes=self.settings.retrain_from == "base"
        )

    async def export_votes(self, run_id: int, work: Path) -> dict[str, Any]:
        """Write the preference snapshot (jokes and votes that may train) and return the job's
        preference fields: the gate measures on it, the phase trains on it when enough votes
        are new. Nothing with PREFERENCE_TRAINING=off or before any vote."""
        s = self.settings
        if s.preference_training == "off":
            return {}
        community = CommunityStore(self.db)
        jokes, votes_until = await community.voted_jokes()
        if not jokes:
            return {}
        path = work / "preferences.jsonl"
        write_preferences(path, jokes)
        fresh = await self.votes_to_learn()
        await community.record_vote_export(run_id, votes_until, len(jokes))
        log.info("run #%d: %d voted jokes exported, %d new votes", run_id, len(jokes), fresh)
        return {
            "preferences": str(path),
            "preference_phase": fresh >= s.preference_min_votes,
            "preference_beta": s.preference_beta,
            "preference_learning_rate": s.preference_learning_rate,
            "preference_epochs": s.preference_epochs,
            "preference_sft_weight": s.preference_sft_weight,
            "preference_loss": s.preference_loss,
            "preference_holdout": s.preference_holdout,
            "preference_time_share": s.preference_time_share,
            "vote_reference": s.base_model_ref,  # vote figures of every version are comparable
        }

    async def _gate_dtype(self) -> str:
        """The dtype the gate measures both models in: DTYPE; with `auto`, the one the runner
        chose (its /health says: the trainer need not time it again), else `auto`."""
        if self.settings.dtype != "auto" or self.runner is None:
            return self.settings.dtype
        try:
            health = await self.runner.health()
        except Exception:  # no runner answer: the trainer chooses by itself
            return "auto"
        dtype = health.get("dtype")
        return dtype if dtype in ("float32", "bfloat16", "float16") else "auto"

    def _policy(self) -> GatePolicy:
        return GatePolicy(
            min_nll_gain=self.settings.promote_min_nll_gain,
            max_one_joke_drop=self.settings.promote_max_one_joke_drop,
            max_copy_rate=self.settings.promote_max_copy_rate,
            max_separation_drop=self.settings.promote_max_separation_drop,
            min_diversity=self.settings.promote_min_diversity,
        )

    def _job(
        self,
        snapshot: Path,
        base_ref: str,
        serving_ref: str,
        output: Path,
        number: int,
        parent: int,
        votes: dict[str, Any],
    ) -> TrainJob:
        s = self.settings
        return TrainJob(
            **votes,
            snapshot=str(snapshot),
            base=base_ref,
            serving=serving_ref,
            output=str(output),
            device=s.device,
            seed=s.train_seed,
            max_minutes=s.retrain_max_minutes,
            epochs=s.train_epochs,
            min_steps=s.train_min_steps,
            learning_rate=s.train_learning_rate,
            batch_size=s.train_batch_size,  # over all TRAIN_PROCESSES together
            grad_accum=s.train_grad_accum,
            lora=s.train_lora,
            precision=s.train_precision,
            eval_samples=s.train_eval_samples,
            sample_max_tokens=s.joke_max_tokens,
            sample_temperature=s.joke_temperature,  # measure what /joke will serve
            sample_top_p=s.joke_top_p,
            few_shot_examples=s.few_shot_examples,  # how a `few-shot` v0 serves
            origin=VersionOrigin(
                version=number, parent_version=parent, base_model=s.base_model_ref
            ),
        )

    async def _run_trainer(
        self, job_file: Path, log_file: Path, on_progress: ProgressCallback
    ) -> TrainerEvent | None:
        """Run the trainer's process group, fold its events into `self.progress`; return the
        final event (an ErrorEvent saying why when the processes ended without one)."""
        processes = resolve_train_processes(self.settings.train_processes, self.settings.device)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        last: TrainerEvent | None = None
        async with TrainerProcess(trainer_command(job_file, processes), log_file, env) as trainer:
            self._process = trainer
            try:
                async for event in trainer.events():
                    last = event
                    self.progress.apply(event)
                    await on_progress(self.progress)
                code = await trainer.wait()
            except asyncio.CancelledError:
                await asyncio.shield(trainer.stop())
                raise
        if self._stopping is not None:
            await self._stopping
        if code == 0 and isinstance(last, DoneEvent):
            return last
        log_text = _read_text(log_file)
        failed = launcher_failure(log_text)  # with N processes: the rank that failed first
        if isinstance(last, ErrorEvent) and (failed is None or failed.rank == 0):
            return last  # rank 0 failed and said why
        if failed is not None:  # another rank failed; rank 0 was stopped or lost its peer
            return ErrorEvent(message=f"{failed.describe()}; the run was stopped")
        reason = f"the trainer exited with code {code}: {_tail(log_text)}"
        return ErrorEvent(message=reason)


@contextlib.contextmanager
def host_training_lock(data_dir: Path) -> Iterator[None]:
    """One training per data directory across processes (the bot and a CLI `jokebot train`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "training.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingBusy("another jokebot process is training on this data") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _convert_embedded_base_in_child(settings: Settings) -> None:
    """Have `model.embedded.ensure_embedded_model` convert the embedded base model, in a child
    process (it imports torch, the bot never does), when it is the base and not converted yet."""
    if settings.model_base or (Path(settings.base_model_ref) / "config.json").is_file():
        return
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "model.embedded", str(settings.data_dir)
    )
    if await process.wait() != 0:
        raise RuntimeError("converting the embedded model failed (see the log above)")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "no log"


async def _ignore(_: TrainingProgress) -> None:
    return None
