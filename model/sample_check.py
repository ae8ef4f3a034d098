"""The preference phase ends on the last point where its jokes were still varied, whole jokes.

Pulled hard by a few liked jokes, a small model can start telling one of them again and again
(distinct-2 falls) or drift into text that never ends (the one-joke rate falls); the gate then
refuses the whole version and the community's votes are lost until the next retrain. So
`CHECKS` times in the phase (evenly spaced, the last at its end) it samples as the gate does
(same count, seed, temperature and length) and compares with the model it started from. The
phase ends on the weights of the last check whose samples held up (the start's when none did).
The phase can then take a step large enough for the communities whose liked jokes are rare,
without losing those where the same step goes too far.

Rank 0 samples and decides; every rank restores the same weights (`share_from_main`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from model.contracts.training_job import TrainJob
from model.contracts.votes import share_difference_noise

if TYPE_CHECKING:
    from model.distributed import World

log = logging.getLogger(__name__)

# Thresholds against the model the phase started from, measured on as many samples as the
# gate's. Distinct-2 a little stricter than the gate's 80% of the serving model's, so that what
# the phase keeps also passes the gate; the one-joke rate as the gate judges it: a drop beyond
# PROMOTE_MAX_ONE_JOKE_DROP's default and the sampling noise.
MIN_VARIETY = 0.85  # distinct-2 at least this share of the starting model's
MAX_ONE_JOKE_DROP = 0.05
CHECKS = 6  # sample checks in a phase; each costs one gate's sampling (~7 s on 2 CPU cores)


@dataclass
class SampleFigures:
    """What the samples look like at one step of the phase."""

    step: int
    epoch: float
    distinct_2: float
    one_joke_rate: float
    seconds: float
    samples: int

    def holds_up_against(self, start: SampleFigures) -> bool:
        noise = share_difference_noise(
            (self.one_joke_rate, self.samples), (start.one_joke_rate, start.samples)
        )
        return (
            self.distinct_2 >= MIN_VARIETY * start.distinct_2
            and self.one_joke_rate >= start.one_joke_rate - max(MAX_ONE_JOKE_DROP, noise)
        )


def measure_samples(model, tokenizer, device, job: TrainJob, state) -> SampleFigures:
    """Distinct-2 and one-joke rate of `job.eval_samples` samples of `model` (in eval mode for
    the while), drawn as the gate draws them."""
    from model.evaluate import one_joke_rate, sample_jokes
    from model.loading import LoadedModel
    from model.preference_eval import distinct_n
    from model.textformat import PLAIN

    began = time.monotonic()
    was_training = model.training
    model.eval()
    try:
        samples = sample_jokes(
            LoadedModel(model=model, tokenizer=tokenizer, device=device, ref="training"),
            job.eval_samples,
            max_new_tokens=job.sample_max_tokens,
            seed=job.seed,
            temperature=job.sample_temperature,
            top_p=job.sample_top_p,
            layout=PLAIN,
        )
    finally:
        model.train(was_training)
    return SampleFigures(
        step=state.global_step,
        epoch=round(state.epoch or 0.0, 3),
        distinct_2=round(distinct_n([sample.text for sample in samples]), 4),
        one_joke_rate=round(one_joke_rate(samples), 4),
        seconds=round(time.monotonic() - began, 1),
        samples=len(samples),
    )


class SampleCheck(TrainerCallback):
    """Samples at the start and `CHECKS` times in the phase; when training ends, the weights of
    the last check whose samples held up come back (the start's when none did). Training goes
    on after a bad check: a hard pull can spoil the samples for a while and mend them later.
    `kept` (the step), `figures` and `reason` tell what happened."""

    def __init__(self, job: TrainJob, model, tokenizer, device, world: World):
        self.job, self.model, self.tokenizer, self.device, self.world = (
            job, model, tokenizer, device, world,
        )  # fmt: skip
        self.figures: list[SampleFigures] = []
        self.kept = 0  # the step whose weights the phase ends with (0: the start)
        self.reason = ""
        self._every = 1
        self._good: dict[str, Any] | None = None  # the last good check's, when not the last
        self._last_holds = True

    def on_train_begin(self, args, state, control, **kwargs):
        self._every = max(1, math.ceil(state.max_steps / CHECKS))
        self.figures = [self._measure(state)]
        self._good = self._weights()

    def on_step_end(self, args, state, control, **kwargs):
        ending = control.should_training_stop or state.global_step >= state.max_steps
        if ending or state.global_step % self._every == 0:
            self._check(state, ending)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._last_holds or self._good is None:  # kept its last step (or never began)
            return control
        self._restore(self._good)
        last, start = self.figures[-1], self.figures[0]
        self.reason = (
            f"step {last.step}: distinct-2 {last.distinct_2:.2f}, one-joke "
            f"{last.one_joke_rate:.0%} against {start.distinct_2:.2f} and "
            f"{start.one_joke_rate:.0%} at the start; ended on step {self.kept}'s weights"
        )
        log.info("preference phase: %s", self.reason)
        return control

    def summary(self) -> dict[str, Any]:
        return {
            "kept_step": self.kept,
            "rolled_back": self.reason,
            "sample_checks": [asdict(figures) for figures in self.figures],
        }

    def _check(self, state, ending: bool) -> None:
        from model.distributed import share_from_main

        figures = self._measure(state)
        self.figures.append(figures)
        self._last_holds = share_from_main(figures.holds_up_against(self.figures[0]), self.world)
        if self._last_holds:
            self.kept = state.global_step
            self._good = None if ending else self._weights()  # the model as it is, if last

    def _measure(self, state) -> SampleFigures:
        if not self.world.is_main:  # rank 0's decision is the one used
            return SampleFigures(state.global_step, 0.0, 0.0, 0.0, 0.0, 0)
        figures = measure_samples(self.model, self.tokenizer, self.device, self.job, state)
        log.info("preference phase samples: %s", figures)
        return figures

    def _weights(self) -> dict[str, Any]:
        """A CPU copy of the trained parameters (the adapter's alone with LoRA)."""
        return {
            name: param.detach().to("cpu", copy=True)
            for name, param in self.model.named_parameters()
            if param.requires_grad
        }

    def _restore(self, weights: dict[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in weights:
                    param.copy_(weights[name].to(param.device))
