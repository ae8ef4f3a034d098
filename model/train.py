"""The training process: `python -m model.train --job JOB.json`, one version per run.

The bot starts it in a process of its own (a crash or an out-of-memory here never touches
serving), directly or, with TRAIN_PROCESSES=N, as N data-parallel processes through
`torchrun`. Its stdout carries the events of `model.contracts.training_events` and nothing
else; the job is `model.contracts.training_job.TrainJob`.

Read `run_job` from the top, like HF's `run_clm.py`: prepare the data, train (all ranks),
save, evaluate both models, write the manifest, publish (rank 0 alone). The version is built
in `<output's folder>/.tmp-<name>-<pid>` (Trainer checkpoints included) and renamed to
`output` only once weights, tokenizer, generation config, both evaluations and manifest.json
are complete, so a killed run never leaves a version: SIGKILL leaves only the `.tmp-*` folder
(the bot deletes those), SIGTERM removes it before exiting (`model.cancellation`).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.cancellation import (
    CANCELLED_EXIT_CODE,
    Cancelled,
    RunState,
    cancel_check,
    install_cancel_handlers,
    run_cancellable,
)
from model.contracts.corpus import corpus_hash
from model.contracts.manifest import VersionManifest
from model.contracts.training_events import DoneEvent, ErrorEvent, EvaluatingEvent
from model.contracts.training_job import JobError, TrainJob

if TYPE_CHECKING:
    from model.distributed import World
    from model.evaluate import Evaluation
    from model.event_writer import EventWriter
    from model.preference import Votes

# Set before torch loads OpenMP: waiting threads sleep instead of spinning. On a 2-core host
# shared with the runner (or anything else busy), spinning made a training step 4-8x slower
# (measured: 4.4 s alone; 30-45 s beside one busy process; 7-10 s with PASSIVE).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("model.train")

__all__ = ["Cancelled", "JobError", "TrainJob", "build_trainer", "main", "run_job"]

TOKEN_LAYOUT = "start+joke+eos"  # model.textformat: example = start token, joke, eos


def temp_folder(output: Path) -> Path:
    """Where the version is built: a sibling of `output`, named `.tmp-<name>-<pid>`."""
    return output.parent / f".tmp-{output.name}-{os.getpid()}"


@dataclass
class PreparedData:
    """The corpus split and tokenised, as every phase needs it."""

    jokes: list
    train_keys: set[str]
    train_texts: list[str]  # in-context examples for a `few-shot` serving model
    validation_texts: list[str]
    tokenizer: Any
    train_set: Any
    eval_set: Any


@dataclass
class TrainingResult:
    """What the training phase leaves: the final model and a summary for the manifest."""

    model: Any
    summary: dict[str, Any]  # steps, timings, best checkpoint, device, precision, world size
    settings: dict[str, Any]  # what build_trainer derived from the job


def run_job(
    job: TrainJob, events: EventWriter, run: RunState | None = None
) -> dict[str, Any] | None:
    """Train, save, evaluate, write the manifest and publish one version.

    Returns the `done` event's fields on rank 0 (None on the other ranks, which only train).
    On any failure (or Cancelled) the temporary folder is removed and the exception re-raised.
    """
    from model import distributed
    from model.preference import load_votes, train_on_votes

    run = run or RunState()
    began = time.monotonic()
    output = Path(job.output).absolute()
    try:
        world, device = join_training(job)
        try:
            folder = new_version_folder(output, run) if world.is_main else None
            tmp = distributed.share_from_main(folder, world)  # checkpoints: one place for all
            votes = load_votes(job)  # held-out voted jokes stay out of the corpus phase too
            data = prepare_data(job, exclude=votes.held_out_keys if votes else frozenset())
            training = train(job, data, tmp, device, world, events, run)
            train_on_votes(job, votes, training, data.tokenizer, tmp, device, world, events, run)
        finally:
            distributed.stop()  # every rank has trained; rank 0 goes on alone
        if not world.is_main:
            return None
        save_version(job, training, data.tokenizer, tmp, device)
        results = evaluate_models(job, data, tmp, device, events, run, votes)
        manifest = write_manifest(job, data, training, results, tmp, time.monotonic() - began)
        publish(tmp, output, run)
    except BaseException:
        run.discard()
        raise
    return done_fields(output, training, manifest, time.monotonic() - began)


def join_training(job: TrainJob) -> tuple[World, Any]:
    """This process's rank and device; joins the process group when there are several."""
    from transformers import set_seed

    from model import distributed
    from model.devices import configure_cpu_threads, resolve_device

    world = distributed.World.from_env()
    device = distributed.rank_device(resolve_device(job.device), world)
    if device.type == "cpu":
        configure_cpu_threads(world.local_world_size)
    distributed.start(world, device)
    set_seed(job.seed)
    return world, device


def new_version_folder(output: Path, run: RunState) -> Path:
    """Refuse an existing `output`; create (and remember) the temporary folder beside it."""
    if output.exists():
        raise JobError(f"the output folder {output} already exists")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(output)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    run.folder = tmp
    return tmp


def prepare_data(job: TrainJob, exclude: frozenset[str] = frozenset()) -> PreparedData:
    """Split the snapshot (held-out jokes by a hash of their key) and tokenise both parts;
    jokes whose key is in `exclude` (held-out voted jokes) are not trained on."""
    from model.contracts.corpus import read_snapshot
    from model.data import JokeDataset, encode_jokes, split_jokes
    from model.loading import load_tokenizer

    jokes = read_snapshot(job.snapshot)
    train_jokes, validation = split_jokes(jokes, job.validation_fraction)
    train_jokes = [j for j in train_jokes if j.key not in exclude] or train_jokes
    log.info(
        "%d jokes: %d for training, %d held out", len(jokes), len(train_jokes), len(validation)
    )
    tokenizer = load_tokenizer(job.base)
    limit = job.max_example_tokens
    train_texts = [j.text for j in train_jokes]
    validation_texts = [j.text for j in validation]
    return PreparedData(
        jokes=jokes,
        train_keys={j.key for j in train_jokes},
        train_texts=train_texts,
        validation_texts=validation_texts,
        tokenizer=tokenizer,
        train_set=JokeDataset(encode_jokes(tokenizer, train_texts, limit)),
        # sorted by length: evaluation batches then carry almost no padding
        eval_set=JokeDataset(sorted(encode_jokes(tokenizer, validation_texts, limit), key=len)),
    )


def train(
    job: TrainJob,
    data: PreparedData,
    tmp: Path,
    device,
    world: World,
    events: EventWriter,
    run: RunState,
) -> TrainingResult:
    """Fine-tune with the Trainer (every rank); the best checkpoint is restored at the end."""
    from model.event_writer import TrainingEvents
    from model.time_budget import TimeBudget

    budget = TimeBudget(job.corpus_seconds)
    progress = TrainingEvents(
        events,
        train_jokes=len(data.train_texts),
        validation_jokes=len(data.validation_texts),
        device=device.type,
        world_size=world.world_size,
    )
    progress.budget = budget
    model = load_training_model(job)
    precision = training_precision_for(job, model, data, device, world)
    trainer, settings = build_trainer(
        job,
        model=model,
        tokenizer=data.tokenizer,
        train_set=data.train_set,
        eval_set=data.eval_set,
        output_dir=tmp / "checkpoints",
        device=device,
        callbacks=[progress, budget, cancel_check(run)],
        world_size=world.world_size,
        precision=precision.dtype,
    )
    began = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - began
    state = trainer.state
    summary = {
        "steps": state.global_step,
        "total_steps": state.max_steps,
        "epochs_done": round(state.epoch or 0.0, 3),
        "train_seconds": round(seconds, 1),
        "train_tokens": state.num_input_tokens_seen,  # padding not counted, all ranks
        "best_eval_loss": state.best_metric,
        "best_step": state.best_global_step,
        "stopped_early": not budget.hit and state.global_step < state.max_steps,
        "budget_hit": budget.hit,
        "device": device.type,
        "precision": settings["precision"],
        "precision_choice": precision.as_dict(),  # how TRAIN_PRECISION chose it, with figures
        "world_size": world.world_size,
    }
    log.info("training ended after %d steps in %.0f s: %s", state.global_step, seconds, summary)
    return TrainingResult(model=trainer.model, summary=summary, settings=settings)


def training_precision_for(job: TrainJob, model, data: PreparedData, device, world: World):
    """TRAIN_PRECISION for this job (timed on a real batch on `auto`); rank 0's on every rank."""
    from model import distributed
    from model.precision import measure_training_precision

    choice = measure_training_precision(
        job.precision, device, model, data.train_set.examples, data.tokenizer.pad_token_id,
        seed=job.seed,
    )  # fmt: skip
    choice = distributed.share_from_main(choice, world)
    log.info("training precision: %s", choice.describe())
    return choice


def save_version(job: TrainJob, training: TrainingResult, tokenizer, tmp: Path, device) -> None:
    """Weights (LoRA merged), tokenizer and the generation config /joke will sample with."""
    import torch

    from model.lora import merge_lora, save_adapter
    from model.textformat import start_token_id

    if job.lora:
        save_adapter(training.model, tmp)  # unmerged too, for engines that load adapters
    final = merge_lora(training.model) if job.lora else training.model
    final.config.use_cache = True
    final.generation_config.bos_token_id = start_token_id(tokenizer)
    final.generation_config.eos_token_id = tokenizer.eos_token_id
    final.generation_config.pad_token_id = tokenizer.pad_token_id
    final.generation_config.do_sample = True
    final.generation_config.temperature = job.sample_temperature
    final.generation_config.top_p = job.sample_top_p
    final.generation_config.top_k = 0
    final.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    training.model = None  # the Trainer and its optimizer went with `train`; now the weights
    del final
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)


def evaluate_models(
    job: TrainJob,
    data: PreparedData,
    tmp: Path,
    device,
    events: EventWriter,
    run: RunState,
    votes: Votes | None = None,
) -> dict[str, Evaluation]:
    """Measure the candidate and the serving model on the held-out jokes, each as it serves
    (and on the held-out voted jokes: `model.preference.vote_figures_of`, `gate_figures`)."""
    from model.evaluate import measure, release
    from model.loading import load_model_and_tokenizer
    from model.precision import gate_precision
    from model.preference import gate_figures, reference_scores, vote_figures_of
    from model.textformat import PLAIN

    reference = reference_scores(job, votes, device)
    results = {}
    # NLL in the dtype it always had (float32 on a CPU), samples in the serving dtype: the
    # same for both models, chosen at the candidate's measurement and kept
    same_dtype = gate_precision(job.eval_dtype, device)
    for name, ref in (("candidate", str(tmp)), ("serving", job.serving_ref)):
        run.check()
        events.emit(EvaluatingEvent(model=name))
        loaded = load_model_and_tokenizer(ref, device=device)
        try:
            # the held-out votes first, in the dtype the reference was scored in: `measure`
            # then settles the model in the serving dtype, whose rounding alone would move a
            # model's log-ratios to the reference (the base itself would not score 0.5)
            voted = vote_figures_of(loaded, votes, reference)
            results[name] = measure(
                loaded,
                data.validation_texts,
                data.train_keys,
                samples=job.eval_samples,
                max_new_tokens=job.sample_max_tokens,
                seed=job.seed,
                temperature=job.sample_temperature,
                top_p=job.sample_top_p,
                # each measured as it serves: the candidate is fine-tuned, the serving model
                # is `few-shot` when it never was (its manifest says)
                layout=PLAIN if name == "candidate" else loaded.prompt_layout,
                examples_pool=data.train_texts,
                shots=job.few_shot_examples,
                precision=same_dtype,
            )
            results[name].metrics.update(voted)
            results[name].metrics.update(
                gate_figures(votes, results[name].samples, candidate=name == "candidate")
            )
        finally:
            release(loaded)
        log.info("%s: %s", name, results[name].metrics)
    return results


def write_manifest(
    job: TrainJob,
    data: PreparedData,
    training: TrainingResult,
    results: dict[str, Evaluation],
    tmp: Path,
    seconds: float,
) -> VersionManifest:
    """manifest.json, written once: where the version came from (the job's `origin` says what
    only the bot knows), how it was trained, how it measured."""
    import torch
    import transformers

    from model.data import file_sha256
    from model.evaluate import show_sample
    from model.textformat import PLAIN, start_token_id

    tokenizer = data.tokenizer
    manifest = VersionManifest(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        version=job.origin.version,
        parent_version=job.origin.parent_version,
        base_model=job.origin.base_model or job.base,
        trained_from=job.base,
        compared_with=job.serving_ref,
        corpus_hash=corpus_hash(data.jokes),
        corpus_size=len(data.jokes),
        snapshot_sha256=file_sha256(job.snapshot),
        token_layout=TOKEN_LAYOUT,
        prompt_layout=PLAIN,  # fine-tuned on jokes: no in-context examples needed
        start_token=tokenizer.convert_ids_to_tokens(start_token_id(tokenizer)),
        eos_token=tokenizer.eos_token,
        split={
            "rule": "sha256(normalise_key(text)) as [0,1) < validation_fraction",
            "validation_fraction": job.validation_fraction,
            "train": len(data.train_texts),
            "validation": len(data.validation_texts),
        },
        world_size=training.summary["world_size"],
        hyperparameters={**job.hyperparameters(), **training.settings},
        training=training.summary,
        metrics={name: r.metrics for name, r in results.items()},
        samples={name: show_sample(r.samples) for name, r in results.items()},
        duration_seconds=round(seconds, 1),
        software={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    manifest.write(tmp)
    return manifest


def done_fields(
    output: Path, training: TrainingResult, manifest: VersionManifest, seconds: float
) -> dict[str, Any]:
    """The `done` event's fields (see DoneEvent)."""
    summary = training.summary
    return {
        "output": str(output),
        "metrics": manifest.metrics,
        "samples": manifest.samples,
        "train_seconds": summary["train_seconds"],
        "steps": summary["steps"],
        "stopped_early": summary["stopped_early"],
        "budget_hit": summary["budget_hit"],
        "duration_seconds": round(seconds, 1),
    }


def publish(tmp: Path, output: Path, run: RunState) -> None:
    """Flush the version's files to disk, then rename the folder into place (unless cancelled)."""
    for path in tmp.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    run.publish(tmp, output)


def load_training_model(job: TrainJob):
    """The model to fine-tune, in float32 (mixed precision on GPUs is the Trainer's autocast)."""
    import torch
    from transformers import AutoModelForCausalLM

    from model.lora import add_lora

    model = AutoModelForCausalLM.from_pretrained(
        job.base, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.config.use_cache = False
    if getattr(model, "loss_type", None) is None:
        # transformers infers the loss from the class name; GPT2LMHeadModel matches nothing,
        # and the Trainer then counts each example's first label as a predicted token (its
        # losses come out ~5% low for jokes). It is a causal LM: say so.
        model.loss_type = "ForCausalLM"
    if job.lora:
        model = add_lora(model, r=job.lora_r, alpha=job.lora_alpha, dropout=job.lora_dropout)
    return model


def build_trainer(
    job: TrainJob,
    *,
    model,
    tokenizer,
    train_set,
    eval_set,
    output_dir: Path,
    device,
    callbacks=(),
    max_steps: int = -1,
    world_size: int = 1,
    precision: str | None = None,
):
    """A Trainer for `job`, and the settings it derived (recorded in the manifest).

    AdamW (fused on CUDA and CPUs) with warm-up and `lr_scheduler` decay, gradient
    accumulation, `precision` (fp32, bf16 or fp16 autocast; by default bf16, or fp16 where the
    GPU lacks bf16, on CUDA, else fp32); evaluation and checkpoints every `eval_steps`
    (checkpoints: weights only, inside `output_dir`), early stopping on the validation loss,
    the best checkpoint restored at the end. Batches group jokes of similar length. With
    `world_size` processes (DDP) each takes `batch_size // world_size` jokes a micro-step, so
    an optimizer step sees the job's batch whatever the number of processes.
    """
    from transformers import (
        EarlyStoppingCallback,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    from model.data import JokeCollator
    from model.devices import optimizer_name, training_precision
    from model.distributed import backend_for, per_process_batch

    process_batch = per_process_batch(job.batch_size, world_size)
    effective_batch = process_batch * world_size * job.grad_accum
    steps_per_epoch = math.ceil(len(train_set) / effective_batch)
    epoch_steps = math.ceil(job.epochs * steps_per_epoch)
    if max_steps < 0 and epoch_steps < job.min_steps:
        # One step of a warm-up that starts at 0 moves nothing: a small corpus gets more epochs.
        max_steps = job.min_steps
    total_steps = max_steps if max_steps > 0 else epoch_steps
    # about `evals_per_epoch` evaluations per epoch, or per run when min_steps made it longer
    cadence = total_steps if max_steps == job.min_steps else min(steps_per_epoch, total_steps)
    eval_steps = job.eval_steps or max(1, round(cadence / job.evals_per_epoch))
    logging_steps = max(1, min(5, eval_steps))
    precision = precision or training_precision(device)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=process_batch,
        per_device_eval_batch_size=max(job.batch_size, 32),
        gradient_accumulation_steps=job.grad_accum,
        num_train_epochs=job.epochs,
        max_steps=max_steps,
        learning_rate=job.effective_learning_rate,
        lr_scheduler_type=job.lr_scheduler,
        warmup_steps=job.warmup_ratio,  # below 1: a share of the total steps
        weight_decay=job.weight_decay,
        max_grad_norm=job.max_grad_norm,
        optim=optimizer_name(device),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        ddp_backend=backend_for(device) if world_size > 1 else None,
        ddp_find_unused_parameters=False,  # a causal LM uses every weight; no extra pass
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,  # the best checkpoint is kept besides the latest
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_strategy="steps",
        logging_steps=logging_steps,
        logging_first_step=True,
        prediction_loss_only=True,
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length",  # similar lengths per batch: little padding
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to=[],
        disable_tqdm=True,
        seed=job.seed,
        data_seed=job.seed,
    )
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=JokeCollator(pad_token_id=tokenizer.pad_token_id),
        train_dataset=train_set,
        eval_dataset=eval_set,
        callbacks=[
            *callbacks,
            EarlyStoppingCallback(early_stopping_patience=job.early_stopping_patience),
        ],
    )
    trainer.remove_callback(PrinterCallback)
    settings = {
        "effective_learning_rate": job.effective_learning_rate,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "eval_steps": eval_steps,
        "logging_steps": logging_steps,
        "optimizer": args.optim,
        "precision": precision,
        "per_process_batch_size": process_batch,
        "effective_batch_size": effective_batch,
    }
    return trainer, settings


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _failure_message(error: Exception) -> str:
    if _is_out_of_memory(error):
        return (
            f"out of memory while training: {error}. Lower TRAIN_BATCH_SIZE (and raise "
            "TRAIN_GRAD_ACCUM), or use LoRA"
        )
    if isinstance(error, JobError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune a jokebot model version.")
    parser.add_argument("--job", required=True, help="job file (JSON)")
    options = parser.parse_args(argv)

    from model.distributed import World, die_with_launcher
    from model.event_writer import EventWriter, claim_stdout

    world = World.from_env()
    if world.distributed:
        die_with_launcher()
    stdout = claim_stdout()  # every rank: stray prints go to stderr, never into the events
    events = EventWriter(stdout if world.is_main else None)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [rank {world.rank}] %(name)s: %(message)s",
    )
    run = RunState()
    install_cancel_handlers(run)
    try:
        _quiet_libraries()
        try:
            data = json.loads(Path(options.job).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise JobError(f"cannot read the job file {options.job}: {error}") from error
        job = TrainJob.from_dict(data)
        done = run_cancellable(lambda: run_job(job, events, run), run)
    except Cancelled as cancel:
        log.warning("cancelled by %s; no version was written", cancel)
        events.emit(ErrorEvent(message=f"cancelled ({cancel}); no version was written"))
        _exit_now(CANCELLED_EXIT_CODE)
    except Exception as error:
        message = _failure_message(error)
        log.error("training failed: %s", message, exc_info=not isinstance(error, JobError))
        events.emit(ErrorEvent(message=message))
        return 1
    if done is not None:  # rank 0; the other ranks only trained
        events.emit(DoneEvent(**done))
    return 0


def _exit_now(code: int) -> None:
    """Exit without waiting for a training thread stuck in a long torch call."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
