"""The training process: `python -m model.train --job JOB.json`.

The bot starts one process per fine-tune run (a crash or an out-of-memory here never touches
serving) and reads its stdout, which carries one JSON event a line and nothing else:

    {"event": "start", "train_jokes", "validation_jokes", "total_steps", "device"}
    {"event": "progress", "step", "total_steps", "epoch", "loss", "eval_loss", "eta_seconds"}
    {"event": "evaluating", "model": "candidate" | "serving"}
    {"event": "done", "output", "metrics": {"candidate", "serving"}, "samples", "train_seconds",
     "steps", "stopped_early", "budget_hit", "duration_seconds"}
    {"event": "error", "message"}                      (then exit code 1; 143 after SIGTERM)

The new version is written into `<output's folder>/.tmp-<name>-<pid>` (Trainer checkpoints
included) and renamed to `output` only once weights, tokenizer, generation config, both
evaluations and manifest.json are complete, so a killed run never leaves a version: SIGKILL
leaves only the `.tmp-*` folder (the bot deletes those), SIGTERM removes it before exiting.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.progress import EventWriter

# Set before torch loads OpenMP: waiting threads sleep instead of spinning. On a 2-core host
# shared with the runner (or anything else busy), spinning made a training step 4-8x slower
# (measured: 4.4 s alone; 30-45 s beside one busy process; 7-10 s with PASSIVE).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("model.train")

TOKEN_LAYOUT = "start+joke+eos"  # model.textformat: example = start token, joke, eos
CANCELLED_EXIT_CODE = 128 + signal.SIGTERM
CANCEL_GRACE_SECONDS = 2.0  # time the training thread gets to stop by itself


class JobError(ValueError):
    """The job file asks for something impossible; the message says what."""


class Cancelled(BaseException):
    """SIGTERM (or SIGINT): stop now, leave no version. A BaseException so no library eats it."""


@dataclass
class TrainJob:
    """A training job as the bot writes it; every field but the first three has a default.

    The defaults are tuned for the embedded SmolLM2-135M on a 2-core CPU and the ~3K jokes of
    onelinefun.csv (benchmarks/bench_finetune.py measures them): one epoch at batch 16 is 165
    steps, ~54K tokens, 2.8-6 s a step on 2 cores, so it fits a 10-minute budget. The held-out
    NLL falls ~20% in the first 20-40 steps (the model learns where a joke ends) and slowly
    after; 2e-4 gave the same NLL as 1e-4 at equal tokens, so the gentler rate is kept (less
    forgetting), with 5% warm-up and cosine decay. Four evaluations per epoch (~15-30 s each
    on a CPU) feed early stopping and the best-checkpoint choice. `max_minutes` counts from
    the first training step; loading and the final evaluation (~1-2 minutes) come on top.
    """

    snapshot: str  # JSONL corpus snapshot: {"id", "text", "key"} per line
    base: str  # model to start from: folder or hub id
    output: str  # final version folder; must not exist yet
    serving: str = ""  # model the gate compares against; empty = `base`
    device: str = "auto"  # auto | cuda | mps | cpu
    seed: int = 42
    max_minutes: float = 10.0  # training time budget; then the best checkpoint so far is used
    epochs: float = 1.0
    min_steps: int = 30  # a small corpus still gets this many optimizer steps (more epochs)
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"  # any transformers scheduler name (linear, cosine, ...)
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_steps: int = 0  # 0 = about `evals_per_epoch` evaluations per epoch
    evals_per_epoch: int = 4
    early_stopping_patience: int = 3
    lora: bool = False  # peft LoRA adapters, merged into the weights before saving
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_learning_rate: float = 0.0  # 0 = 10 x learning_rate (adapters want a larger step)
    validation_fraction: float = 0.1
    eval_samples: int = 48  # unprompted samples per model for the one-joke and copy rates
    sample_max_tokens: int = 64
    sample_temperature: float = 0.9
    sample_top_p: float = 0.95
    few_shot_examples: int = 4  # in-context jokes when the serving model is `few-shot`
    max_example_tokens: int = 128
    manifest: dict = field(default_factory=dict)  # extra fields for manifest.json

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainJob:
        casts = {"int": int, "float": float, "str": str, "bool": _as_bool, "dict": dict}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            log.warning("ignoring unknown job fields: %s", ", ".join(unknown))
        values = {}
        for name, spec in known.items():
            if data.get(name) is None:
                continue
            try:
                values[name] = casts[str(spec.type)](data[name])
            except (TypeError, ValueError) as error:
                message = f"job field {name!r}: {data[name]!r} is not a {spec.type}"
                raise JobError(message) from error
        missing = [n for n in ("snapshot", "base", "output") if not values.get(n)]
        if missing:
            raise JobError(f"the job file lacks {', '.join(missing)}")
        job = cls(**values)
        job.check()
        return job

    def check(self) -> None:
        if not 0 < self.validation_fraction < 1:
            raise JobError("validation_fraction must be between 0 and 1")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs <= 0:
            raise JobError("batch_size and grad_accum must be at least 1, epochs above 0")
        if self.min_steps < 0 or self.few_shot_examples < 0:
            raise JobError("min_steps and few_shot_examples must not be negative")
        if self.learning_rate <= 0 or self.max_minutes <= 0:
            raise JobError("learning_rate and max_minutes must be above 0")
        if self.eval_samples < 1 or self.sample_max_tokens < 1:
            raise JobError("eval_samples and sample_max_tokens must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise JobError("warmup_ratio must be in [0, 1)")

    @property
    def serving_ref(self) -> str:
        return self.serving or self.base

    @property
    def effective_learning_rate(self) -> float:
        if not self.lora:
            return self.learning_rate
        return self.lora_learning_rate or 10 * self.learning_rate


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def temp_folder(output: Path) -> Path:
    """Where the version is built: a sibling of `output`, named `.tmp-<name>-<pid>`."""
    return output.parent / f".tmp-{output.name}-{os.getpid()}"


def run_job(job: TrainJob, events: EventWriter) -> dict[str, Any]:
    """Train, evaluate, save and publish one version; return the `done` event.

    On any failure (or Cancelled) the temporary folder is removed and the exception re-raised.
    """
    output = Path(job.output).absolute()
    if output.exists():
        raise JobError(f"the output folder {output} already exists")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(output)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        return _train_evaluate_publish(job, events, tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _train_evaluate_publish(
    job: TrainJob, events: EventWriter, tmp: Path, output: Path
) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import set_seed

    from model.data import (
        JokeDataset,
        encode_jokes,
        file_sha256,
        read_snapshot,
        split_jokes,
    )
    from model.devices import configure_cpu_threads, resolve_device
    from model.evaluate import measure, release, show_sample
    from model.loading import load_model_and_tokenizer, load_tokenizer
    from model.lora import merge_lora, save_adapter
    from model.progress import TimeBudget, TrainingEvents
    from model.textformat import PLAIN, start_token_id

    began = time.monotonic()
    device = resolve_device(job.device)
    if device.type == "cpu":
        configure_cpu_threads()
    set_seed(job.seed)

    jokes = read_snapshot(job.snapshot)
    train, validation = split_jokes(jokes, job.validation_fraction)
    train_keys = {j.key for j in train}
    train_texts = [j.text for j in train]  # in-context examples for a `few-shot` serving model
    validation_texts = [j.text for j in validation]
    log.info("%d jokes: %d for training, %d held out", len(jokes), len(train), len(validation))

    tokenizer = load_tokenizer(job.base)
    limit = job.max_example_tokens
    train_set = JokeDataset(encode_jokes(tokenizer, [j.text for j in train], limit))
    # sorted by length: evaluation batches then carry almost no padding
    eval_set = JokeDataset(sorted(encode_jokes(tokenizer, validation_texts, limit), key=len))

    model = load_training_model(job)
    budget = TimeBudget(job.max_minutes * 60)
    progress = TrainingEvents(
        events, train_jokes=len(train), validation_jokes=len(validation), device=device.type
    )
    progress.budget = budget
    trainer, settings = build_trainer(
        job,
        model=model,
        tokenizer=tokenizer,
        train_set=train_set,
        eval_set=eval_set,
        output_dir=tmp / "checkpoints",
        device=device,
        callbacks=[progress, budget, _cancel_check()],
    )

    train_began = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - train_began
    state = trainer.state
    steps = state.global_step
    stopped_early = not budget.hit and steps < state.max_steps
    training = {
        "steps": steps,
        "total_steps": state.max_steps,
        "epochs_done": round(state.epoch or 0.0, 3),
        "train_seconds": round(train_seconds, 1),
        "train_tokens": state.num_input_tokens_seen,  # padding not counted
        "best_eval_loss": state.best_metric,
        "best_step": state.best_global_step,
        "stopped_early": stopped_early,
        "budget_hit": budget.hit,
        "device": device.type,
        "precision": settings["precision"],
    }
    log.info("training ended after %d steps in %.0f s: %s", steps, train_seconds, training)

    if job.lora:
        save_adapter(trainer.model, tmp)  # unmerged too, for engines that load adapters
    final = merge_lora(trainer.model) if job.lora else trainer.model
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
    del trainer, model, final
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)

    results = {}
    for name, ref in (("candidate", str(tmp)), ("serving", job.serving_ref)):
        RUN.check()
        events.emit("evaluating", model=name)
        loaded = load_model_and_tokenizer(ref, device=device)
        try:
            results[name] = measure(
                loaded,
                validation_texts,
                train_keys,
                samples=job.eval_samples,
                max_new_tokens=job.sample_max_tokens,
                seed=job.seed,
                temperature=job.sample_temperature,
                top_p=job.sample_top_p,
                # each measured as it serves: the candidate is fine-tuned, the serving model
                # is `few-shot` when it never was (its manifest says)
                layout=PLAIN if name == "candidate" else loaded.prompt_layout,
                examples_pool=train_texts,
                shots=job.few_shot_examples,
            )
        finally:
            release(loaded)
        log.info("%s: %s", name, results[name].metrics)
    metrics = {name: r.metrics for name, r in results.items()}
    samples = {name: show_sample(r.samples) for name, r in results.items()}

    duration = time.monotonic() - began
    hyperparameters = {
        k: v
        for k, v in asdict(job).items()
        if k not in ("snapshot", "output", "manifest", "base", "serving")
    }
    hyperparameters.update(settings)
    manifest = {
        "format": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "token_layout": TOKEN_LAYOUT,
        "prompt_layout": PLAIN,  # fine-tuned on jokes: no in-context examples needed
        "start_token": tokenizer.convert_ids_to_tokens(start_token_id(tokenizer)),
        "eos_token": tokenizer.eos_token,
        "base_model": job.base,
        "parent_version": None,
        "trained_from": job.base,
        "compared_with": job.serving_ref,
        "corpus_hash": file_sha256(job.snapshot),
        "corpus_size": len(jokes),
        "snapshot_sha256": file_sha256(job.snapshot),
        "split": {
            "rule": "sha256(normalise_key(text)) as [0,1) < validation_fraction",
            "validation_fraction": job.validation_fraction,
            "train": len(train),
            "validation": len(validation),
        },
        "hyperparameters": hyperparameters,
        "training": training,
        "metrics": metrics,
        "samples": samples,
        "duration_seconds": round(duration, 1),
        "software": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    manifest.update(job.manifest)
    (tmp / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    _fsync_tree(tmp)
    RUN.publish(tmp, output)
    return {
        "output": str(output),
        "metrics": metrics,
        "samples": samples,
        "train_seconds": round(train_seconds, 1),
        "steps": steps,
        "stopped_early": stopped_early,
        "budget_hit": budget.hit,
        "duration_seconds": round(duration, 1),
    }


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
):
    """A Trainer for `job`, and the settings it derived (recorded in the manifest).

    AdamW with warm-up and `lr_scheduler` decay, gradient accumulation, bf16 (fp16 where the
    GPU lacks bf16) on CUDA, fp32 elsewhere; evaluation and checkpoints every `eval_steps`
    (checkpoints: weights only, inside `output_dir`), early stopping on the validation loss,
    the best checkpoint restored at the end. Batches group jokes of similar length.
    """
    import torch
    from transformers import (
        EarlyStoppingCallback,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    from model.data import JokeCollator

    steps_per_epoch = math.ceil(len(train_set) / (job.batch_size * job.grad_accum))
    epoch_steps = math.ceil(job.epochs * steps_per_epoch)
    if max_steps < 0 and epoch_steps < job.min_steps:
        # One step of a warm-up that starts at 0 moves nothing: a small corpus gets more epochs.
        max_steps = job.min_steps
    total_steps = max_steps if max_steps > 0 else epoch_steps
    # about `evals_per_epoch` evaluations per epoch, or per run when min_steps made it longer
    cadence = total_steps if max_steps == job.min_steps else min(steps_per_epoch, total_steps)
    eval_steps = job.eval_steps or max(1, round(cadence / job.evals_per_epoch))
    logging_steps = max(1, min(5, eval_steps))
    gpu = device.type == "cuda"
    bf16 = gpu and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=job.batch_size,
        per_device_eval_batch_size=max(job.batch_size, 32),
        gradient_accumulation_steps=job.grad_accum,
        num_train_epochs=job.epochs,
        max_steps=max_steps,
        learning_rate=job.effective_learning_rate,
        lr_scheduler_type=job.lr_scheduler,
        warmup_steps=job.warmup_ratio,  # below 1: a share of the total steps
        weight_decay=job.weight_decay,
        max_grad_norm=job.max_grad_norm,
        optim="adamw_torch_fused" if gpu else "adamw_torch",
        bf16=bf16,
        fp16=gpu and not bf16,
        use_cpu=device.type == "cpu",
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
        "precision": "bf16" if bf16 else "fp16" if gpu else "fp32",
    }
    return trainer, settings


class _RunState:
    """Cancel versus publish, decided once under a lock: a version is either renamed into place
    (after which SIGTERM no longer cancels) or cancelled (after which it is never renamed)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.published = False
        self.cancelled: str | None = None

    def cancel(self, reason: str) -> bool:
        """Mark the run cancelled; False when it is too late (the version is published)."""
        with self.lock:
            if self.published:
                return False
            self.cancelled = reason
            return True

    def check(self) -> None:
        """Raise Cancelled in the training thread once the run has been cancelled."""
        if self.cancelled:
            raise Cancelled(self.cancelled)

    def publish(self, tmp: Path, output: Path) -> None:
        with self.lock:
            self.check()
            os.replace(tmp, output)  # the version becomes visible only complete
            self.published = True


RUN = _RunState()


def _cancel_check():
    """A callback that stops the Trainer between (micro-)steps once the run is cancelled."""
    from transformers import TrainerCallback

    class CancelCheck(TrainerCallback):
        def on_substep_end(self, args, state, control, **kwargs):
            RUN.check()

        def on_step_end(self, args, state, control, **kwargs):
            RUN.check()

        def on_evaluate(self, args, state, control, **kwargs):
            RUN.check()

    return CancelCheck()


def _fsync_tree(folder: Path) -> None:
    """Flush the version's files to disk before the rename makes it visible."""
    for path in folder.iterdir():
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _install_cancel_handlers() -> None:
    def cancel(signum, _frame):
        name = signal.Signals(signum).name
        if not RUN.cancel(name):  # too late to cancel: the version is complete and visible
            log.warning("%s after the version was published; finishing", name)
            return
        raise Cancelled(name)

    signal.signal(signal.SIGTERM, cancel)
    signal.signal(signal.SIGINT, cancel)


def _run_in_thread(job: TrainJob, events: EventWriter) -> dict[str, Any]:
    """Run the job in a worker thread so that the main thread answers signals at once.

    Python runs signal handlers in the main thread only between bytecodes; a training step
    on a busy CPU can spend many seconds inside one torch call. Here the main thread waits in
    short joins and reacts within a fraction of a second.
    """
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["done"] = run_job(job, events)
        except BaseException as error:
            result["error"] = error

    worker = threading.Thread(target=work, name="training", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except Cancelled:
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        while worker.is_alive() and time.monotonic() < deadline:
            worker.join(0.1)  # the worker stops at its next check and removes its folder
        shutil.rmtree(temp_folder(Path(job.output).absolute()), ignore_errors=True)
        raise
    if "error" in result:
        raise result["error"]
    return result["done"]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune a jokebot model version.")
    parser.add_argument("--job", required=True, help="job file (JSON)")
    options = parser.parse_args(argv)

    from model.progress import EventWriter, claim_stdout

    events = EventWriter(claim_stdout())
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _install_cancel_handlers()
    try:
        _quiet_libraries()
        try:
            data = json.loads(Path(options.job).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise JobError(f"cannot read the job file {options.job}: {error}") from error
        job = TrainJob.from_dict(data)
        done = _run_in_thread(job, events)
    except Cancelled as cancel:
        log.warning("cancelled by %s; no version was written", cancel)
        events.emit("error", final=True, message=f"cancelled ({cancel}); no version was written")
        _exit_now(CANCELLED_EXIT_CODE)
    except Exception as error:
        if _is_out_of_memory(error):
            message = (
                f"out of memory while training: {error}. Lower TRAIN_BATCH_SIZE (and raise "
                "TRAIN_GRAD_ACCUM), or use LoRA"
            )
        elif isinstance(error, JobError):
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}"
        log.error("training failed: %s", message, exc_info=not isinstance(error, JobError))
        events.emit("error", final=True, message=message)
        return 1
    events.emit("done", final=True, **done)
    return 0


def _exit_now(code: int) -> None:
    """Exit without waiting for a training thread stuck in a long torch call."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
