"""What the commands need, bundled once by `jokebot run` (and by the tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.content_policy import ContentPolicy
from bot.database import Database
from bot.rate_limits import RateLimiter
from bot.runner_client import RunnerClient
from bot.settings import Settings
from bot.similarity import NearDuplicateIndex
from bot.training import TrainingCoordinator

if TYPE_CHECKING:
    from bot.scheduler import RetrainScheduler


@dataclass
class Services:
    settings: Settings
    db: Database
    runner: RunnerClient
    training: TrainingCoordinator
    scheduler: RetrainScheduler | None = None
    near_duplicates: NearDuplicateIndex = field(default_factory=NearDuplicateIndex)
    rate_limiter: RateLimiter | None = None  # None: no limits
    content_policy: ContentPolicy = field(default_factory=lambda: ContentPolicy("off"))
