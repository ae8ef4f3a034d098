"""What the commands need, bundled once by `jokebot run` (and by the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.database import Database
from bot.runner_pool import RunnerPool
from bot.settings import Settings
from bot.training import TrainingCoordinator

if TYPE_CHECKING:
    from bot.scheduler import RetrainScheduler


@dataclass
class Services:
    settings: Settings
    db: Database
    runner: RunnerPool
    training: TrainingCoordinator
    scheduler: RetrainScheduler | None = None
