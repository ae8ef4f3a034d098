"""`/status` for everyone: what serves, the corpus, training, and the community's score.

The cog gathers the facts (database, runner, training, scheduler); `status_text` words them.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.checks import is_admin
from bot.discord_app.replies import NO_MENTIONS
from bot.discord_app.shards import shard_status
from bot.discord_app.status_text import StatusFacts, precision_line, status_report
from bot.services import Services
from model.contracts.votes import CommunityScore


async def gather_status(services: Services) -> StatusFacts:
    """Everything `/status` shows, read now."""
    db, training = services.db, services.training
    active = await db.active_version()
    try:
        health = await services.runner.health()
    except Exception:  # /status answers whatever state the runner is in
        health = None
    scores = await services.community.version_scores()
    return StatusFacts(
        active=active,
        runner_health=health,
        replicas=services.runner.describe(),
        corpus_total=await db.joke_count(),
        corpus_by_source=await db.corpus_by_source(),
        new_jokes=await training.new_jokes_since_last_training(),
        last_run=await db.last_finished_run(),
        training_now=training.progress if training.busy else None,
        next_run=services.scheduler.next_run_time() if services.scheduler else None,
        min_new_jokes=services.settings.retrain_min_new_jokes,
        community=scores.get(active.version, CommunityScore()),
    )


class StatusCommands(commands.Cog):
    def __init__(self, services: Services) -> None:
        self.services = services

    @app_commands.command(name="status", description="Model version, corpus size and training")
    async def status(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        facts = await gather_status(self.services)
        report = status_report(facts)
        if is_admin(interaction):  # gateway shards and the dtype concern the host, not members
            dtype = precision_line(facts.runner_health)
            report += "\n" + (f"{dtype}\n" if dtype else "") + shard_status(interaction.client)
        await interaction.followup.send(report, ephemeral=True, allowed_mentions=NO_MENTIONS)
