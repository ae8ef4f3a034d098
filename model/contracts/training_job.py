"""The training job: what the bot asks the trainer to do, as the JSON file `--job` names.

The bot builds a `TrainJob` from its settings and writes `job_file_text(job)`; the trainer
reads it back with `TrainJob.from_dict`. The same file serves one process, N processes on one
machine and several machines (`torchrun` starts `python -m model.train --job FILE` on each):
how many processes train is the launcher's business, not the job's.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.contracts.manifest import VersionOrigin
from model.contracts.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("snapshot", "base", "output")
# paths and the bot's part of the manifest: not what shapes training
NOT_HYPERPARAMETERS = {
    "snapshot",
    "output",
    "origin",
    "base",
    "serving",
    "preferences",
    "vote_reference",
}
PREFERENCE_LOSSES = ("auto", "kto", "apo_zero_unpaired")


class JobError(ValueError):
    """The job file asks for something impossible; the message says what."""


class TrainJob(BaseModel):
    """A training job as the bot writes it; every field but the first three has a default.

    The defaults are tuned for the embedded SmolLM2-135M on a 2-core CPU and the ~3K jokes of
    onelinefun.csv (benchmarks/bench_finetune.py measures them): one epoch at batch 16 is 165
    steps, ~54K tokens, 2.8-6 s a step on 2 cores, so it fits a 10-minute budget. The held-out
    NLL falls ~20% in the first 20-40 steps (the model learns where a joke ends) and slowly
    after; 2e-4 gave the same NLL as 1e-4 at equal tokens, so the gentler rate is kept (less
    forgetting), with 5% warm-up and cosine decay. Four evaluations per epoch (~15-30 s each
    on a CPU) feed early stopping and the best-checkpoint choice. `max_minutes` counts from
    the first training step; loading and the final evaluation (~1-2 minutes) come on top.

    `precision` is the Trainer's mixed precision (`auto`: bf16 autocast where it measured
    faster, see model.precision); `eval_dtype` the dtype the gate samples both models in (their
    NLL stays in the loading dtype, float32 on a CPU): the bot passes DTYPE, or on `auto` the
    dtype its runner chose; `auto` (no runner answer) times the candidate as a runner would.

    `batch_size` is the effective batch of one optimizer step over all training processes:
    with N processes each takes `batch_size // N` jokes a micro-step.
    """

    model_config = ConfigDict(extra="ignore")

    snapshot: str  # JSONL corpus snapshot: {"id", "text", "key"} per line
    base: str  # model to start from: folder or hub id
    output: str  # final version folder; must not exist yet
    serving: str = ""  # model the gate compares against; empty = `base`
    device: str = "auto"  # auto | cuda | mps | cpu
    seed: int = 42
    max_minutes: float = 10.0  # training time budget; then the best checkpoint so far is used
    epochs: float = 1.0
    min_steps: int = 45  # a small corpus still gets this many optimizer steps (more epochs)
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine"  # any transformers scheduler name (linear, cosine, ...)
    batch_size: int = 16  # effective batch over all processes (see above)
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_steps: int = 0  # 0 = about `evals_per_epoch` evaluations per epoch
    evals_per_epoch: int = 4
    early_stopping_patience: int = 3
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # TRAIN_PRECISION (model.precision)
    eval_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # the gate's, as DTYPE
    lora: bool = False  # peft LoRA adapters, merged into the weights before saving
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_learning_rate: float = 0.0  # 0 = 10 x learning_rate (adapters want a larger step)
    validation_fraction: float = 0.1
    eval_samples: int = 48  # unprompted samples per model for the one-joke and copy rates
    sample_max_tokens: int = 64
    sample_temperature: float = DEFAULT_TEMPERATURE
    sample_top_p: float = DEFAULT_TOP_P
    few_shot_examples: int = 4  # in-context jokes when the serving model is `few-shot`
    max_example_tokens: int = 128
    origin: VersionOrigin = Field(default_factory=VersionOrigin)  # the bot's part of the manifest
    # Learning from votes (model.preference): the preference snapshot the gate measures on, and
    # whether to train on it too (the bot decides: enough new votes, PREFERENCE_TRAINING=auto)
    preferences: str = ""  # JSONL of model.contracts.preferences.VotedJoke; '' = no votes
    preference_phase: bool = False
    preference_beta: float = 0.1  # KTO's beta: higher keeps the model closer to the SFT one
    preference_learning_rate: float = 2e-5  # LoRA: 10 x this (as for the corpus phase)
    preference_epochs: float = 3.0
    # the liked jokes' own NLL in the loss, times this (model.votes_trainer); 0 = plain KTO
    preference_sft_weight: float = 1.0
    preference_loss: str = "auto"  # auto | kto | apo_zero_unpaired (see model.preference)
    preference_holdout: float = 0.2  # share of voted jokes held out for the gate
    preference_time_share: float = 0.3  # of max_minutes, kept for the phase when it runs
    vote_reference: str = ""  # the gate's log-likelihood ratios are to this model; '' = base

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainJob:
        """Read a job file's JSON; a missing or impossible value is a JobError naming it."""
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            log.warning("ignoring unknown job fields: %s", ", ".join(unknown))
        values = {k: v for k, v in data.items() if k in cls.model_fields and v is not None}
        missing = [name for name in REQUIRED_FIELDS if not values.get(name)]
        if missing:
            raise JobError(f"the job file lacks {', '.join(missing)}")
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise JobError(_first_problem(error, values)) from None

    @model_validator(mode="after")
    def _possible(self) -> TrainJob:
        if not 0 < self.validation_fraction < 1:
            raise ValueError("validation_fraction must be between 0 and 1")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs <= 0:
            raise ValueError("batch_size and grad_accum must be at least 1, epochs above 0")
        if self.min_steps < 0 or self.few_shot_examples < 0:
            raise ValueError("min_steps and few_shot_examples must not be negative")
        if self.learning_rate <= 0 or self.max_minutes <= 0:
            raise ValueError("learning_rate and max_minutes must be above 0")
        if self.eval_samples < 1 or self.sample_max_tokens < 1:
            raise ValueError("eval_samples and sample_max_tokens must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if not 0 < self.preference_holdout < 1 or not 0 <= self.preference_time_share < 1:
            raise ValueError("preference_holdout must be in (0, 1), its time share in [0, 1)")
        if min(self.preference_beta, self.preference_learning_rate, self.preference_epochs) <= 0:
            raise ValueError("preference_beta, _learning_rate and _epochs must be above 0")
        if self.preference_sft_weight < 0:
            raise ValueError("preference_sft_weight must not be negative")
        if self.preference_loss not in PREFERENCE_LOSSES:
            raise ValueError(f"preference_loss must be one of {', '.join(PREFERENCE_LOSSES)}")
        return self

    @property
    def serving_ref(self) -> str:
        return self.serving or self.base

    @property
    def effective_learning_rate(self) -> float:
        if not self.lora:
            return self.learning_rate
        return self.lora_learning_rate or 10 * self.learning_rate

    @property
    def learns_from_votes(self) -> bool:
        """The preference phase runs after the corpus phase."""
        return bool(self.preferences) and self.preference_phase

    @property
    def corpus_seconds(self) -> float:
        """The corpus phase's time budget: all of max_minutes, less the preference phase's share
        when that runs (it gets what the corpus phase leaves)."""
        share = self.preference_time_share if self.learns_from_votes else 0.0
        return self.max_minutes * 60 * (1 - share)

    @property
    def effective_preference_learning_rate(self) -> float:
        return self.preference_learning_rate * (10 if self.lora else 1)

    def hyperparameters(self) -> dict[str, Any]:
        """The fields that shape training (for the manifest): no paths, not the origin."""
        return self.model_dump(exclude=NOT_HYPERPARAMETERS)

    def file_text(self) -> str:
        """The job file: the fields that were set, as the bot has always written them."""
        return self.model_dump_json(indent=2, exclude_unset=True)


def _first_problem(error: ValidationError, values: dict[str, Any]) -> str:
    """One sentence for the first thing pydantic refused."""
    first = error.errors()[0]
    if first["type"] == "value_error":  # a rule of `_possible`
        return str(first["ctx"]["error"])
    name = str(first["loc"][0]) if first["loc"] else "?"
    return f"job field {name!r}: {values.get(name)!r} is refused: {first['msg']}"
