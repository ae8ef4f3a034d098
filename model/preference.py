"""The preference phase: after the corpus phase, the model learns the community's 👍 and 👎.

Each voted joke of the preference snapshot (`model.contracts.preferences`) is one unpaired
example for TRL's `KTOTrainer`: the prompt as the runner got it in the `plain` layout (the
start token, then what the member typed; every trained version serves that layout), the
model's completion, desirable when its net score is positive, undesirable when negative or
reported; ties teach nothing and are left out. A stable slice (by a hash of the joke's key) is
held out for the gate (`model.preference_eval`), and kept out of the corpus phase too.

- Reference: the model as the corpus phase left it. A full fine-tune precomputes the
  reference log-probabilities before the first step (no second model in memory); with LoRA,
  TRL freezes a copy of the corpus phase's adapter as the reference, so the version's adapter
  still applies to its base (`adapter/` for engines that load adapters).
- Loss (`preference_loss=auto`): `kto` when at least half the examples have a prompt; else
  `apo_zero_unpaired`. TRL estimates KTO's KL term by pairing each completion with another
  example's prompt; when prompts are empty that pair is just another example as it was shown,
  so the "KL" would be the batch's mean reward, not a divergence. The unpaired APO-zero loss
  has no such term (beta and its saturating sigmoid bound each example's pull; the gate's NLL,
  one-joke and diversity checks bound the drift), and is half the compute.
- Imbalance: the smaller class is weighted up so that weighted liked : disliked = 1 (KTO
  paper, eq. 8, asks for 1 to 4/3).
- Loss terms: KTO's (or APO-zero's) plus the liked jokes' own NLL (`model.votes_trainer`).
- Sample checks (`model.sample_check`): six times in the phase it samples as the gate does and
  ends on the weights of the last check whose jokes were still varied and whole.
- Time: the phase gets what the corpus phase left of `max_minutes` (the corpus phase ran with
  `preference_time_share` less); out of time it stops and keeps its weights, as the corpus
  phase does. Cancelling (SIGTERM) and SIGKILL leave no version, as ever (`model.cancellation`).
- Several processes: every rank trains (DDP); rank 0 writes the examples (a datasets folder
  inside the version's temporary folder) before the others read them.
"""

from __future__ import annotations

import gc
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.contracts.preferences import VotedJoke, is_held_out, read_preferences
from model.contracts.training_events import VotesEvent
from model.contracts.training_job import TrainJob
from model.event_writer import TrainingEvents
from model.sample_check import SampleCheck
from model.time_budget import TimeBudget

if TYPE_CHECKING:
    from model.cancellation import RunState
    from model.distributed import World
    from model.event_writer import EventWriter

log = logging.getLogger(__name__)

REFERENCE_ADAPTER = "ref"  # the frozen copy TRL makes of a LoRA adapter
MIN_PHASE_SECONDS = 1.0  # less left of the budget than this: the phase is skipped


@dataclass
class Votes:
    """The labelled voted jokes of a run, split for training and for the gate."""

    train: list[VotedJoke]
    held_out: list[VotedJoke]
    phase: dict[str, Any] = field(default_factory=dict)  # what the phase did (for the metrics)

    @property
    def held_out_keys(self) -> frozenset[str]:
        return frozenset(joke.key for joke in self.held_out)


def load_votes(job: TrainJob) -> Votes | None:
    """The job's voted jokes (ties dropped), split by key; None when the job has none."""
    if not job.preferences:
        return None
    labelled = [joke for joke in read_preferences(job.preferences) if joke.label is not None]
    held_out = [joke for joke in labelled if is_held_out(joke, job.preference_holdout)]
    train = [joke for joke in labelled if not is_held_out(joke, job.preference_holdout)]
    log.info("voted jokes: %d to learn from, %d held out", len(train), len(held_out))
    return Votes(train=train, held_out=held_out)


def choose_loss(job: TrainJob, examples: list[VotedJoke]) -> str:
    """`kto` when most examples have a prompt (its KL estimate needs them), else unpaired."""
    if job.preference_loss != "auto":
        return job.preference_loss
    prompted = sum(1 for joke in examples if joke.prompt)
    return "kto" if 2 * prompted >= len(examples) else "apo_zero_unpaired"


def class_weights(liked: int, disliked: int) -> tuple[float, float]:
    """(desirable, undesirable) weights that balance the two classes."""
    if liked == 0 or disliked == 0:
        return 1.0, 1.0
    if liked >= disliked:
        return 1.0, liked / disliked
    return disliked / liked, 1.0


def prompt_text(tokenizer, prompt: str) -> str:
    """The prompt in the `plain` layout as text for TRL, which tokenises it with the tokenizer's
    own special tokens: a tokenizer that starts every text with the start token gets it once."""
    from model.textformat import start_token_id

    start = start_token_id(tokenizer)
    if tokenizer(text="").input_ids == [start]:
        return prompt
    return tokenizer.convert_ids_to_tokens(start) + prompt


def train_on_votes(
    job: TrainJob,
    votes: Votes | None,
    training,
    tokenizer,
    tmp: Path,
    device,
    world: World,
    events: EventWriter,
    run: RunState,
) -> None:
    """Run the preference phase on `training.model` (every rank) when the job asks for it;
    what it did goes to `votes.phase` and `training.summary["preference"]`."""
    from model.cancellation import cancel_check
    from model.distributed import per_process_batch, share_from_main

    if votes is None:
        return
    votes.phase = share_from_main(_skip_reason(job, votes, training), world)  # all ranks agree
    if not votes.phase:
        run.check()
        examples = list(votes.train)
        loss = choose_loss(job, examples)
        random.Random(job.seed).shuffle(examples)  # mixed batches: TRL's `kto` reads in order
        folder = tmp / "preference"
        data = share_from_main(
            _write_examples(examples, tokenizer, folder) if world.is_main else None, world
        )
        budget = _VotesBudget(_seconds_left(job, training))
        announce = _announcement(examples, votes, loss)
        progress = _VotesProgress(events, announce)
        progress.budget = budget
        process_batch = per_process_batch(job.batch_size, world.world_size)
        if loss == "kto":
            process_batch = max(2, process_batch)  # its KL estimate pairs examples in a batch
        weights = class_weights(announce.liked, announce.disliked)
        check = SampleCheck(job, training.model, tokenizer, device, world)
        trainer = _kto_trainer(
            job,
            training.model,
            tokenizer,
            data,
            folder / "checkpoints",
            device,
            world,
            loss=loss,
            process_batch=process_batch,
            weights=weights,
            callbacks=[progress, budget, check, cancel_check(run)],
        )
        began = time.monotonic()
        trainer.train()
        seconds = time.monotonic() - began
        state = trainer.state
        training.model = _without_reference(trainer.model)
        del trainer
        gc.collect()
        if world.is_main:
            shutil.rmtree(folder, ignore_errors=True)
        votes.phase = _phase_summary(job, announce, state, seconds, budget.hit, weights)
        votes.phase.update(check.summary())
    training.summary["preference"] = votes.phase
    log.info("preference phase: %s", votes.phase)


def _skip_reason(job: TrainJob, votes: Votes, training) -> dict[str, Any]:
    if not job.preference_phase:
        return {"ran": False, "reason": "not enough new votes, or PREFERENCE_TRAINING=off"}
    if not votes.train:
        return {"ran": False, "reason": "no voted joke to learn from besides the held-out ones"}
    if _seconds_left(job, training) < MIN_PHASE_SECONDS:
        return {"ran": False, "reason": "the corpus phase used the whole time budget"}
    return {}


def _seconds_left(job: TrainJob, training) -> float:
    return job.max_minutes * 60 - float(training.summary.get("train_seconds", 0.0))


def _announcement(examples: list[VotedJoke], votes: Votes, loss: str) -> VotesEvent:
    """The `votes` event that opens the phase: what it learns from."""
    return VotesEvent(
        liked=sum(1 for joke in examples if joke.label),
        disliked=sum(1 for joke in examples if not joke.label),
        up=sum(joke.up for joke in examples),
        down=sum(joke.down for joke in examples),
        held_out=len(votes.held_out),
        total_steps=0,
        loss=loss,
    )


def _without_reference(model):
    """The trained model without TRL's frozen reference adapter (LoRA): only the trained
    adapter is the version's."""
    if hasattr(model, "peft_config") and REFERENCE_ADAPTER in model.peft_config:
        model.set_adapter("default")
        model.delete_adapter(REFERENCE_ADAPTER)
    return model


def _phase_summary(
    job: TrainJob,
    announce: VotesEvent,
    state,
    seconds: float,
    budget_hit: bool,
    weights: tuple[float, float],
) -> dict[str, Any]:
    """What the phase did, for `votes.phase` and the manifest."""
    desirable, undesirable = weights
    return {
        "ran": True,
        "loss": announce.loss,
        "liked": announce.liked,
        "disliked": announce.disliked,
        "up": announce.up,
        "down": announce.down,
        "held_out": announce.held_out,
        "steps": state.global_step,
        "total_steps": state.max_steps,
        "seconds": round(seconds, 1),
        "budget_hit": budget_hit,
        "beta": job.preference_beta,
        "learning_rate": job.effective_preference_learning_rate,
        "sft_weight": job.preference_sft_weight,
        "desirable_weight": round(desirable, 4),
        "undesirable_weight": round(undesirable, 4),
    }


def _write_examples(examples: list[VotedJoke], tokenizer, folder: Path) -> str:
    """The examples as a datasets folder every rank can open (TRL caches its work beside it)."""
    from datasets import Dataset

    shutil.rmtree(folder, ignore_errors=True)
    rows = [
        {
            "prompt": prompt_text(tokenizer, joke.prompt),
            "completion": joke.completion,
            "label": bool(joke.label),
        }
        for joke in examples
    ]
    path = folder / "examples"
    Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


def _kto_trainer(
    job: TrainJob,
    model,
    tokenizer,
    data: str,
    output_dir: Path,
    device,
    world: World,
    *,
    loss: str,
    process_batch: int,
    weights: tuple[float, float],
    callbacks: list,
):
    """TRL's KTOTrainer with the corpus phase's optimiser settings and no checkpoints."""
    import datasets
    from transformers import PrinterCallback
    from trl import KTOConfig

    from model.devices import optimizer_name, training_precision
    from model.distributed import backend_for
    from model.votes_trainer import AnchoredKTOTrainer

    datasets.disable_progress_bars()
    precision = training_precision(device)
    args = KTOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=process_batch,
        gradient_accumulation_steps=job.grad_accum,
        num_train_epochs=job.preference_epochs,
        learning_rate=job.effective_preference_learning_rate,
        lr_scheduler_type=job.lr_scheduler,
        warmup_steps=job.warmup_ratio,
        weight_decay=job.weight_decay,
        max_grad_norm=job.max_grad_norm,
        optim=optimizer_name(device),
        bf16=precision == "bf16",  # KTOConfig would pick bf16 even on a CPU
        fp16=precision == "fp16",
        use_cpu=device.type == "cpu",
        ddp_backend=backend_for(device) if world.distributed else None,
        ddp_find_unused_parameters=False,
        gradient_checkpointing=False,  # jokes are short; recomputing costs more than it saves
        eval_strategy="no",
        save_strategy="no",  # the gate judges the end result; nothing to restore
        logging_strategy="steps",
        logging_steps=1,
        logging_first_step=True,
        report_to=[],
        disable_tqdm=True,
        seed=job.seed,
        data_seed=job.seed,
        dataloader_num_workers=0,
        beta=job.preference_beta,
        loss_type=loss,
        desirable_weight=weights[0],
        undesirable_weight=weights[1],
        precompute_ref_log_probs=True,  # the reference is the model as it is now
        precompute_ref_batch_size=max(job.batch_size, 32),
        max_length=2 * job.max_example_tokens,
        train_sampling_strategy="sequential" if loss == "kto" else "random",
    )
    trainer = AnchoredKTOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.load_from_disk(data),
        processing_class=tokenizer,
        callbacks=callbacks,
        sft_weight=job.preference_sft_weight,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


class _VotesProgress(TrainingEvents):
    """`votes` when the phase starts, then `progress` events of phase "votes"."""

    phase = "votes"

    def __init__(self, writer: EventWriter, announce: VotesEvent):
        super().__init__(writer, train_jokes=0, validation_jokes=0, device="")
        self.announce = announce

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        self.announce = self.announce.model_copy(update={"total_steps": state.max_steps})
        self.writer.emit(self.announce)


class _VotesBudget(TimeBudget):
    """Out of time, the phase stops and keeps its weights (there is nothing to evaluate or
    save on the way: the gate measures the result)."""

    def on_step_end(self, args, state, control, **kwargs):
        control = super().on_step_end(args, state, control, **kwargs)
        control.should_evaluate = False
        control.should_save = False
        return control


# ---- the gate's figures, measured where the corpus phase's metrics are -----------------------


def reference_scores(job: TrainJob, votes: Votes | None, device) -> list[float]:
    """The held-out voted jokes' scores under the reference model (the base by default)."""
    if votes is None or not votes.held_out:
        return []
    from model.evaluate import release
    from model.loading import load_model_and_tokenizer
    from model.preference_eval import completion_scores

    try:
        loaded = load_model_and_tokenizer(job.vote_reference or job.base, device=device)
    except OSError as error:  # e.g. a hub id not in the cache: the run's starting model then
        log.warning("cannot load the vote reference (%s); using %s", error, job.base)
        loaded = load_model_and_tokenizer(job.base, device=device)
    try:
        return completion_scores(loaded.model, loaded.tokenizer, votes.held_out)
    finally:
        release(loaded)


def vote_figures_of(loaded, votes: Votes | None, reference: list[float]) -> dict[str, Any]:
    """The vote separation of one model on the held-out voted jokes (nothing without votes);
    measured in the dtype the model was loaded in, as `reference` was."""
    from model.preference_eval import vote_figures

    if votes is None:
        return {}
    return vote_figures(loaded.model, loaded.tokenizer, votes.held_out, reference)


def gate_figures(votes: Votes | None, samples, *, candidate: bool) -> dict[str, Any]:
    """What the gate needs beyond the corpus metrics and the vote separation: distinct-2 of the
    samples always; for the candidate, what it learned from votes."""
    from model.preference_eval import distinct_n

    figures: dict[str, Any] = {"distinct_2": distinct_n([sample.text for sample in samples])}
    if votes is None:
        return figures
    if candidate:
        phase = votes.phase or {"ran": False}
        figures["votes_up"] = phase.get("up", 0) if phase.get("ran") else 0
        figures["votes_down"] = phase.get("down", 0) if phase.get("ran") else 0
        figures["preference"] = phase
    return figures
