"""The training time budget: stop the Trainer once its minutes are spent, on every rank alike."""

from __future__ import annotations

import time

from transformers import TrainerCallback


def any_rank(flag: bool, device) -> bool:
    """True on every training process when `flag` is true on at least one.

    Processes that stop at different steps deadlock in the next gradient all-reduce, so a
    decision each one takes from its own clock is taken together (one tiny all-reduce).
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    vote = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return bool(vote.item())


class TimeBudget(TrainerCallback):
    """Stops training once `seconds` have passed since training began.

    The step that crosses the budget is evaluated and saved, so the best checkpoint so far
    (which `load_best_model_at_end` restores) includes the latest weights. With several
    processes the first to run out stops them all at the same step.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = time.monotonic()
        self.hit = False

    def remaining(self) -> float:
        return max(0.0, self.seconds - (time.monotonic() - self.started))

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.hit or control.should_training_stop:
            return control
        if any_rank(self.remaining() <= 0, args.device):
            self.hit = True
            control.should_training_stop = True
            control.should_evaluate = True
            control.should_save = True
        return control
