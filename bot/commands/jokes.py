"""`/joke` and `/addjoke`: what every member of a server can do."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import is_admin
from bot.commands.votes import send_generated_joke
from bot.discord_replies import NO_MENTIONS, reply_error
from bot.joke_teller import MAX_PROMPT_CHARS
from bot.jokes import check_joke
from bot.moderation import initial_status
from bot.services import Services

log = logging.getLogger(__name__)


class JokeCommands(commands.Cog):
    def __init__(self, services: Services) -> None:
        self.services = services

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
        await send_generated_joke(self.services, interaction, prompt)

    @app_commands.command(name="addjoke", description="Teach the bot a joke")
    @app_commands.describe(text="The joke, as you would tell it (up to 280 characters)")
    async def addjoke(self, interaction: discord.Interaction, text: str) -> None:
        check = check_joke(text)
        if not check.ok:
            await reply_error(interaction, f"Not stored: {check.reason}")
            return
        settings = self.services.settings
        status = initial_status(
            mode=settings.moderation,
            source="user",
            author_is_admin=is_admin(interaction),
            approved_by_author=await self.services.community.approved_count_by(interaction.user.id),
            new_member_jokes=settings.moderation_new_member_jokes,
            flagged=False,  # the content policy's verdict on check.text goes here
        )
        result = await self.services.db.add_joke(
            check.text,
            check.key,
            source="user",
            author_id=interaction.user.id,
            guild_id=interaction.guild_id,
            status=status,
        )  # committed before we answer
        if result.created and status == "pending":
            message = f"Stored as #{result.id}, waiting for review."
        elif result.created:
            message = f"Stored as #{result.id}. Thanks! It will be part of the next training."
        else:
            message = f"Not stored: that joke is a duplicate of #{result.id}."
        await interaction.response.send_message(
            message, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
