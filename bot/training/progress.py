"""Training progress as the trainer reports it, and how a person sees it (Discord text, ETA)."""

from __future__ import annotations

from dataclasses import dataclass

from model.contracts.training_events import (
    EvaluatingEvent,
    ProgressEvent,
    StartEvent,
    TrainerEvent,
    VotesEvent,
)


@dataclass
class TrainingProgress:
    """The latest state of a training run, updated from the trainer's events."""

    phase: str = "preparing"  # preparing, training, evaluating, loading, done
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eval_loss: float | None = None
    eta_seconds: float | None = None
    detail: str = ""
    learning_from_votes: bool = False  # the preference phase's steps (after the corpus's)

    def apply(self, event: TrainerEvent) -> None:
        """Fold one trainer event into the state."""
        if isinstance(event, StartEvent):
            self.phase = "training"
            self.total_steps = event.total_steps
            where = (
                event.device if event.world_size == 1 else f"{event.world_size} × {event.device}"
            )
            self.detail = (
                f"{event.train_jokes} training jokes, {event.validation_jokes} held out, on {where}"
            )
        elif isinstance(event, VotesEvent):
            self.phase, self.learning_from_votes = "training", True
            self.step, self.total_steps = 0, event.total_steps
            self.loss = self.eval_loss = self.eta_seconds = None
            self.detail = (
                f"learning from {event.up + event.down} votes (👍 {event.up} / 👎 {event.down}) "
                f"on {event.liked + event.disliked} jokes"
            )
        elif isinstance(event, ProgressEvent):
            self.phase = "training"
            self.step = event.step
            self.total_steps = event.total_steps or self.total_steps
            if event.loss is not None:
                self.loss = event.loss
            if event.eval_loss is not None:
                self.eval_loss = event.eval_loss
            self.eta_seconds = event.eta_seconds
        elif isinstance(event, EvaluatingEvent):
            self.phase = "evaluating"
            self.detail = f"measuring the {event.model} model"
            self.eta_seconds = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def describe(progress: TrainingProgress) -> str:
    """One or two lines for a Discord message or a log."""
    if progress.phase == "preparing":
        return "Preparing the corpus snapshot…"
    if progress.phase in ("evaluating", "loading"):
        return f"`{progress_bar(1.0)}` {progress.phase.capitalize()}: {progress.detail}"
    parts = [f"`{progress_bar(progress.fraction)}` {progress.fraction:.0%}"]
    if progress.learning_from_votes:  # "Learning from 40 votes (👍 25 / 👎 15) on 12 jokes:"
        parts.insert(0, f"{progress.detail[:1].upper()}{progress.detail[1:]}:")
    parts.append(f"step {progress.step}/{progress.total_steps or '?'}")
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.3f}")
    if progress.eval_loss is not None:
        parts.append(f"val {progress.eval_loss:.3f}")
    if progress.eta_seconds is not None:
        parts.append(f"~{format_duration(progress.eta_seconds)} left")
    return " · ".join(parts)
