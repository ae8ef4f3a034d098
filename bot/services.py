"""What the commands need, bundled once by `jokebot run` (and by the tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from bot.community.content_policy import ContentPolicy
from bot.community.moderation import initial_status
from bot.community.near_duplicates import NearDuplicateIndex
from bot.community.rate_limits import RateLimiter
from bot.runners.joke_teller import ExamplePool
from bot.runners.pool import RunnerPool
from bot.settings import Settings
from bot.store.community import CommunityStore
from bot.store.database import Database
from bot.training.coordinator import TrainingCoordinator
from bot.training.schedule import RetrainScheduler


@dataclass
class Services:
    settings: Settings
    db: Database
    runner: RunnerPool
    training: TrainingCoordinator
    scheduler: RetrainScheduler | None = None  # None: no scheduled retraining (tests, CLI)
    near_duplicates: NearDuplicateIndex = field(default_factory=NearDuplicateIndex)
    rate_limiter: RateLimiter | None = None  # None: no limits
    content_policy: ContentPolicy = field(default_factory=lambda: ContentPolicy("off"))

    @cached_property
    def community(self) -> CommunityStore:
        """Votes, reports, moderation and deletion, on the same database connection."""
        return CommunityStore(
            self.db,
            promote_at=self.settings.community_min_score,
            reports_to_hide=self.settings.reports_to_hide,
            community_status=initial_status(mode=self.settings.moderation, source="community"),
        )

    @cached_property
    def examples(self) -> ExamplePool:
        """In-context jokes for an untrained (few-shot) serving version, shared by every /joke."""
        return ExamplePool(self.db, self.settings.few_shot_examples)
