"""What the commands need, bundled once by `jokebot run` (and by the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from bot.community_store import CommunityStore
from bot.database import Database
from bot.runner_client import RunnerClient
from bot.settings import Settings
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

    @cached_property
    def community(self) -> CommunityStore:
        """Votes, reports, moderation and deletion, on the same database connection."""
        return CommunityStore(
            self.db,
            promote_at=self.settings.community_min_score,
            reports_to_hide=self.settings.reports_to_hide,
            moderation=self.settings.moderation,
        )
