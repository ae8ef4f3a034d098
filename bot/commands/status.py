"""`/status` for everyone: what serves, the corpus, training, and the community's score."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import is_admin
from bot.community import CommunityScore
from bot.discord_replies import NO_MENTIONS
from bot.gateway_shards import shard_status
from bot.reports import status_report
from bot.services import Services


class StatusCommands(commands.Cog):
    def __init__(self, services: Services) -> None:
        self.services = services

    @app_commands.command(name="status", description="Model version, corpus size and training")
    async def status(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await status_report(self.services)
        active = await self.services.db.active_version()
        scores = await self.services.community.version_scores()
        score = scores.get(active.version, CommunityScore())
        report += f"\nCommunity score of {active.name}: {score.describe()}"
        if is_admin(interaction):  # gateway shards concern the host, not the members
            report += "\n" + shard_status(interaction.client)
        await interaction.followup.send(report, ephemeral=True, allowed_mentions=NO_MENTIONS)
