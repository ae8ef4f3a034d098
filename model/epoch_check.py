"""The preference phase keeps the last epoch whose jokes are still varied, well-formed jokes.

Pulled hard by a few liked jokes, a small model can start telling one of them again and again
(distinct-2 falls) or drift into text that never ends (the one-joke rate falls); the gate then
refuses the whole version and the community's votes are lost until the next retrain. So after
every epoch the phase samples as the gate does (same count, seed, temperature and length) and
compares with the model it started from. The phase ends on the weights of the last epoch whose
samples held up (the start's when none did). The phase can then take a step large enough for
the communities whose liked jokes are rare, without losing those where it goes too far.

Rank 0 samples and decides; every rank restores the same weights (`share_from_main`).
"""

from __future__ import annotations

import logging
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


@dataclass
class SampleFigures:
    """What one epoch's samples look like."""

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
        samples=len(samples),
    )


class EpochCheck(TrainerCallback):
    """Samples at the start and after every epoch; when training ends, the weights of the last
    epoch whose samples held up come back (the start's when none did). Training runs all its
    epochs either way: a hard pull can spoil the samples for an epoch and mend them the next.
    `kept`, `figures` and `reason` tell what happened."""

    def __init__(self, job: TrainJob, model, tokenizer, device, world: World):
        self.job, self.model, self.tokenizer, self.device, self.world = (
            job, model, tokenizer, device, world,
        )  # fmt: skip
        self.figures: list[SampleFigures] = []
        self.kept = 0.0  # the epoch whose weights the phase ends with (0: the start)
        self.reason = ""
        self._good: dict[str, Any] | None = None  # the last good epoch's, when not the last
        self._last_holds = True

    def on_train_begin(self, args, state, control, **kwargs):
        self.figures = [self._measure(0.0)]
        self._good = self._weights()

    def on_epoch_end(self, args, state, control, **kwargs):
        from model.distributed import share_from_main

        figures = self._measure(state.epoch or 0.0)
        self.figures.append(figures)
        self._last_holds = share_from_main(figures.holds_up_against(self.figures[0]), self.world)
        if self._last_holds:
            self.kept = figures.epoch
            ending = control.should_training_stop or state.global_step >= state.max_steps
            self._good = None if ending else self._weights()  # the model as it is, if last
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._last_holds or self._good is None:
            return control
        self._restore(self._good)
        last = self.figures[-1]
        self.reason = (
            f"epoch {last.epoch:g}: distinct-2 {last.distinct_2:.2f}, one-joke "
            f"{last.one_joke_rate:.0%} against {self.figures[0].distinct_2:.2f} and "
            f"{self.figures[0].one_joke_rate:.0%} at the start; kept epoch {self.kept:g}"
        )
        log.info("preference phase: %s", self.reason)
        return control

    def summary(self) -> dict[str, Any]:
        return {
            "epochs_kept": self.kept,
            "rolled_back": self.reason,
            "sample_checks": [asdict(figures) for figures in self.figures],
        }

    def _measure(self, epoch: float) -> SampleFigures:
        if not self.world.is_main:
            return SampleFigures(epoch, 0.0, 0.0, 0.0, 0)  # rank 0's decision is the one used
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
