"""`/retrain`, `/cancel`, `/rollback`, `/models`: for server admins only (`admin_only`)."""

from __future__ import annotations

import asyncio
import logging
import time

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.charts import chart_file, versions_chart_file
from bot.discord_app.checks import admin_only
from bot.discord_app.replies import NO_MENTIONS, reply_error
from bot.discord_app.text_limits import MESSAGE_LIMIT, fit_message
from bot.runners.client import RunnerError
from bot.services import Services
from bot.training import versions
from bot.training.coordinator import CorpusTooSmall, TrainingBusy
from bot.training.progress import TrainingProgress, describe
from bot.training.wording import corpus_summary, training_result, versions_table

log = logging.getLogger(__name__)
EDIT_INTERVAL_SECONDS = 3.0


class LiveMessage:
    """Edits one Discord message with training progress, at most every few seconds."""

    def __init__(self, message: discord.InteractionMessage, header: str) -> None:
        self.message = message
        self.header = header
        self._last_edit = 0.0
        self._last_phase = ""

    async def update(self, progress: TrainingProgress) -> None:
        now = time.monotonic()
        phase_changed = progress.phase != self._last_phase
        if not phase_changed and now - self._last_edit < EDIT_INTERVAL_SECONDS:
            return
        self._last_edit, self._last_phase = now, progress.phase
        await self.edit(f"{self.header}\n{describe(progress)}")

    async def edit(self, content: str) -> None:
        try:
            await self.message.edit(content=fit_message(content), allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:  # e.g. the interaction token expired (15 min)
            log.info("could not edit the training message: %s", error)


class AdminCommands(commands.Cog):
    def __init__(self, services: Services) -> None:
        self.services = services
        self._background: set[asyncio.Task] = set()

    @app_commands.command(name="retrain", description="Fine-tune the model on the jokes now")
    @admin_only()
    async def retrain(self, interaction: discord.Interaction) -> None:
        training = self.services.training
        refusal = await training.corpus_refusal()
        if refusal:
            await reply_error(interaction, refusal)
            return
        if training.busy:
            progress = describe(training.progress) if training.progress else ""
            await reply_error(interaction, f"A training run is already under way. {progress}")
            return
        header = f"Training requested by {interaction.user.display_name}."
        await interaction.response.send_message(
            f"{header}\nPreparing…", allowed_mentions=NO_MENTIONS
        )
        live = LiveMessage(await interaction.original_response(), header)
        task = asyncio.create_task(self._train_and_report(interaction, live))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _train_and_report(self, interaction: discord.Interaction, live: LiveMessage) -> None:
        try:
            outcome = await self.services.training.train(
                "admin", requested_by=interaction.user.id, on_progress=live.update
            )
        except TrainingBusy:
            await live.edit("A training run is already under way.")
            return
        except CorpusTooSmall as refusal:
            await live.edit(str(refusal))
            return
        except Exception:
            log.exception("background training failed")
            await live.edit("Training failed unexpectedly; the error was logged for the host.")
            return
        report = training_result(outcome)
        await live.edit(f"{live.header}\n{report}")
        channel = interaction.channel
        if outcome.status == "promoted" and channel is not None:
            try:
                await channel.send(
                    f"New jokes incoming: **v{outcome.version}** now serves /joke.",
                    file=await versions_chart_file(self.services),
                    allowed_mentions=NO_MENTIONS,
                )
            except discord.HTTPException as error:
                log.info("could not announce the new version in the channel: %s", error)

    @app_commands.command(name="cancel", description="Cancel the training run under way")
    @admin_only()
    async def cancel(self, interaction: discord.Interaction) -> None:
        if await self.services.training.cancel():
            message = "Cancelling the training run; the serving model is untouched."
        else:
            message = "No training run is under way."
        await interaction.response.send_message(
            message, ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(name="rollback", description="Serve an earlier model version again")
    @app_commands.describe(version="Version number to serve (default: the one before)")
    @admin_only()
    async def rollback(
        self, interaction: discord.Interaction, version: app_commands.Range[int, 0] | None = None
    ) -> None:
        if self.services.training.busy:
            await reply_error(interaction, "A training run is under way; try after it ends.")
            return
        await interaction.response.defer(thinking=True)
        try:
            chosen = await versions.rollback(self.services.db, self.services.runner, version)
        except (versions.VersionError, RunnerError) as error:
            await reply_error(interaction, f"Rollback refused: {error}")
            return
        await interaction.followup.send(
            f"Rolled back: **{chosen.name}** serves /joke again.", allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(name="models", description="List model versions and their metrics")
    @admin_only()
    async def models(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the chart takes a moment
        db = self.services.db
        found, scores = await db.versions(), await self.services.community.version_scores()
        table = versions_table(found, scores)
        corpus = corpus_summary(await db.joke_count(), await db.corpus_by_source())
        await interaction.followup.send(
            f"```\n{table[: MESSAGE_LIMIT - 150]}\n```Corpus: {corpus}",
            file=await chart_file(found, scores),
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )
