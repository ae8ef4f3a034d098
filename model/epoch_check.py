"""The preference phase keeps the last epoch whose jokes are still varied, well-formed jokes.

Pulled hard by a few liked jokes, a small model can start telling one of them again and again
(distinct-2 falls) or drift into text that never ends (the one-joke rate falls); the gate then
refuses the whole version and the community's votes are lost until the next retrain. So after
every epoch the phase samples as the gate does (same count, seed, temperature and length) and
compares with the model it started from: while the samples hold up, the epoch's weights are
kept; when they do not, the weights of the last good epoch (or the start) come back and the
phase ends there. The phase can then take a step large enough for the communities whose
liked jokes are rare, without losing the ones where the same step goes too far.

Rank 0 samples and decides; every rank restores the same weights (`share_from_main`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from model.contracts.training_job import TrainJob

if TYPE_CHECKING:
    from model.distributed import World

log = logging.getLogger(__name__)

# Thresholds against the model the phase started from, measured on the same number of samples
# as the gate: a little stricter than the gate's own (distinct-2 >= 80% of the serving model's),
# so that what the phase keeps also passes the gate on its fresh samples.
MIN_VARIETY = 0.85  # distinct-2 at least this share of the starting model's
MAX_ONE_JOKE_DROP = 0.05  # one-joke rate at most this much below the starting model's


@dataclass
class SampleFigures:
    """What one epoch's samples look like."""

    epoch: float
    distinct_2: float
    one_joke_rate: float
    seconds: float

    def holds_up_against(self, start: SampleFigures) -> bool:
        return (
            self.distinct_2 >= MIN_VARIETY * start.distinct_2
            and self.one_joke_rate >= start.one_joke_rate - MAX_ONE_JOKE_DROP
        )


def measure_samples(model, tokenizer, device, job: TrainJob, epoch: float) -> SampleFigures:
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
        epoch=round(epoch, 3),
        distinct_2=round(distinct_n([sample.text for sample in samples]), 4),
        one_joke_rate=round(one_joke_rate(samples), 4),
        seconds=round(time.monotonic() - began, 1),
    )


class EpochCheck(TrainerCallback):
    """Samples at the start and after every epoch; ends the phase on the last good epoch's
    weights when an epoch's samples do not hold up (`kept`, `figures`, `reason` tell which)."""

    def __init__(self, job: TrainJob, model, tokenizer, device, world: World):
        self.job, self.model, self.tokenizer, self.device, self.world = (
            job, model, tokenizer, device, world,
        )  # fmt: skip
        self.figures: list[SampleFigures] = []
        self.kept = 0.0  # the epoch whose weights the phase ends with (0: the start)
        self.reason = ""
        self._good: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.figures = [self._measure(0.0)]
        self._good = self._weights()

    def on_epoch_end(self, args, state, control, **kwargs):
        from model.distributed import share_from_main

        figures = self._measure(state.epoch or 0.0)
        self.figures.append(figures)
        holds = share_from_main(figures.holds_up_against(self.figures[0]), self.world)
        if holds:
            self.kept = figures.epoch
            if state.global_step < state.max_steps:  # the last epoch's weights stay as they are
                self._good = self._weights()
            return control
        self._restore(self._good)
        self.reason = (
            f"epoch {figures.epoch:g}: distinct-2 {figures.distinct_2:.2f}, one-joke "
            f"{figures.one_joke_rate:.0%} against {self.figures[0].distinct_2:.2f} and "
            f"{self.figures[0].one_joke_rate:.0%} at the start; kept epoch {self.kept:g}"
        )
        log.info("preference phase stops: %s", self.reason)
        control.should_training_stop = True
        return control

    def summary(self) -> dict[str, Any]:
        return {
            "epochs_kept": self.kept,
            "stopped_by_samples": self.reason,
            "sample_checks": [asdict(figures) for figures in self.figures],
        }

    def _measure(self, epoch: float) -> SampleFigures:
        if not self.world.is_main:
            return SampleFigures(epoch, 0.0, 0.0, 0.0)  # rank 0's decision is the one used
        figures = measure_samples(self.model, self.tokenizer, self.device, self.job, epoch)
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
