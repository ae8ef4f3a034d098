"""`/joke` and `/addjoke`: what every member of a server can do."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_replies import NO_MENTIONS, reply_error
from bot.joke_teller import MAX_PROMPT_CHARS, EmptyJoke, ExamplePool, tell_joke
from bot.jokes import check_joke
from bot.runner_client import RunnerBusy, RunnerError, RunnerUnavailable
from bot.services import Services

log = logging.getLogger(__name__)
UNAVAILABLE = "The joke machine is unavailable, try again shortly."


class JokeCommands(commands.Cog):
    def __init__(self, services: Services) -> None:
        self.services = services
        self.examples = ExamplePool(services.db, services.settings.few_shot_examples)

    @app_commands.command(name="joke", description="Tell a joke written by the bot's model")
    @app_commands.describe(prompt="How the joke should start (optional)")
    async def joke(self, interaction: discord.Interaction, prompt: str | None = None) -> None:
        prompt = (prompt or "").strip()
        if len(prompt) > MAX_PROMPT_CHARS:
            await reply_error(
                interaction,
                f"That prompt is {len(prompt)} characters; please keep it under "
                f"{MAX_PROMPT_CHARS}.",
            )
            return
        if any(ord(ch) < 32 for ch in prompt):
            await reply_error(interaction, "The prompt contains control characters.")
            return
        await interaction.response.defer(thinking=True)  # answers Discord within its 3 s
        try:
            text = await tell_joke(
                self.services.runner,
                self.services.settings,
                prompt,
                examples=await self.examples.pick(),
            )
        except RunnerBusy as busy:
            await reply_error(
                interaction,
                f"The joke machine is busy, try again in {busy.retry_after} s.",
            )
            return
        except RunnerUnavailable:
            log.warning("/joke: runner unavailable", exc_info=True)
            await reply_error(interaction, UNAVAILABLE)
            return
        except (RunnerError, EmptyJoke) as error:
            log.warning("/joke: %s", error)
            await reply_error(interaction, "The model could not come up with a joke; try again.")
            return
        await interaction.followup.send(text, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="addjoke", description="Teach the bot a joke")
    @app_commands.describe(text="The joke, as you would tell it (up to 280 characters)")
    async def addjoke(self, interaction: discord.Interaction, text: str) -> None:
        check = check_joke(text)
        if not check.ok:
            await reply_error(interaction, f"Not stored: {check.reason}")
            return
        result = await self.services.db.add_joke(
            check.text,
            check.key,
            source="user",
            author_id=interaction.user.id,
            guild_id=interaction.guild_id,
        )  # committed before we answer
        if result.created:
            message = f"Stored as #{result.id}. Thanks! It will be part of the next training."
        else:
            message = f"Not stored: that joke is a duplicate of #{result.id}."
        await interaction.response.send_message(
            message, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
