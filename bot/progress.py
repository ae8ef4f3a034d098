"""Training progress as the trainer reports it, and how a person sees it (Discord text, ETA)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainingProgress:
    """The latest state of a training run, updated from the trainer's JSON lines."""

    phase: str = "preparing"  # preparing, training, evaluating, loading, done
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eval_loss: float | None = None
    eta_seconds: float | None = None
    detail: str = ""

    def apply(self, event: dict) -> None:
        """Fold one trainer event into the state."""
        kind = event.get("event")
        if kind == "start":
            self.phase = "training"
            self.total_steps = int(event.get("total_steps") or 0)
            self.detail = (
                f"{event.get('train_jokes', '?')} training jokes, "
                f"{event.get('validation_jokes', '?')} held out, on {event.get('device', '?')}"
            )
        elif kind == "progress":
            self.phase = "training"
            self.step = int(event.get("step") or 0)
            self.total_steps = int(event.get("total_steps") or self.total_steps)
            if event.get("loss") is not None:
                self.loss = float(event["loss"])
            if event.get("eval_loss") is not None:
                self.eval_loss = float(event["eval_loss"])
            self.eta_seconds = event.get("eta_seconds")
        elif kind == "evaluating":
            self.phase = "evaluating"
            self.detail = f"measuring the {event.get('model', 'candidate')} model"
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
    parts.append(f"step {progress.step}/{progress.total_steps or '?'}")
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.3f}")
    if progress.eval_loss is not None:
        parts.append(f"val {progress.eval_loss:.3f}")
    if progress.eta_seconds is not None:
        parts.append(f"~{format_duration(progress.eta_seconds)} left")
    return " · ".join(parts)
