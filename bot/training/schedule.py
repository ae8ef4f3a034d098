"""Scheduled retraining with APScheduler 3.11: on the cron schedule, if enough new jokes (or
votes to learn from) came."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.settings import Settings
from bot.store.leader import Leadership
from bot.training.coordinator import (
    CorpusTooSmall,
    TrainingBusy,
    TrainingCoordinator,
    TrainingOutcome,
)

log = logging.getLogger(__name__)
JOB_ID = "retrain"


Announcer = Callable[[TrainingOutcome], Awaitable[None]]


class RetrainScheduler:
    """Starts a training run on `RETRAIN_SCHEDULE` when `RETRAIN_MIN_NEW_JOKES` have arrived.

    Each finished scheduled run goes to `announce` (given at `start`: where results are posted
    is known only once the Discord client exists), which words and posts it.

    Processes sharing a PostgreSQL database all keep the schedule, but only the one that
    `leadership` says leads acts on it (see `bot.store.leader`); when it dies, the next leader
    runs the next scheduled retrain."""

    def __init__(
        self,
        settings: Settings,
        training: TrainingCoordinator,
        leadership: Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.training = training
        self.leadership = leadership or Leadership()
        self.announce: Announcer | None = None
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def start(self, announce: Announcer | None = None) -> None:
        self.announce = announce
        if self.settings.retrain_schedule == "off":
            log.info("scheduled retraining is off")
            return
        self._scheduler.add_job(
            self.tick,
            CronTrigger.from_crontab(self.settings.retrain_schedule, timezone=UTC),
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=600,
        )
        self._scheduler.start()
        log.info("scheduled retraining: %s (UTC)", self.settings.retrain_schedule)

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def next_run_time(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID) if self._scheduler.running else None
        return job.next_run_time if job else None

    async def tick(self) -> TrainingOutcome | None:
        """One scheduled check; never starts a second training."""
        if not self.leadership.is_leader:
            log.info("scheduled retraining left to the leading jokebot process")
            return None
        if self.training.busy:
            log.info("scheduled retraining skipped: a training run is under way")
            return None
        fresh = await self.training.new_jokes_since_last_training()
        if fresh < self.settings.retrain_min_new_jokes:
            votes = await self.training.votes_to_learn()  # votes alone are reason enough
            if votes < self.settings.preference_min_votes:
                log.info(
                    "scheduled retraining skipped: %d new jokes, need %d (or %d new votes of %d)",
                    fresh,
                    self.settings.retrain_min_new_jokes,
                    votes,
                    self.settings.preference_min_votes,
                )
                return None
        try:
            outcome = await self.training.train("schedule")
        except TrainingBusy:
            return None
        except CorpusTooSmall as refusal:
            log.info("scheduled retraining skipped: %s", refusal)
            return None
        if self.announce is not None:
            await self.announce(outcome)
        return outcome
