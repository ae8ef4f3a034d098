"""`/joke` and `/addjoke`: what every member of a server can do."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.checks import is_admin
from bot.commands.throttle import refuse_when_rate_limited
from bot.commands.votes import send_generated_joke
from bot.discord_replies import NO_MENTIONS, reply_error
from bot.joke_teller import MAX_PROMPT_CHARS
from bot.jokes import check_joke
from bot.moderation import initial_status
from bot.services import Services
from bot.submissions import duplicate_message, find_near_copy

log = logging.getLogger(__name__)


class JokeCommands(commands.Cog):
    def __init__(self, services: Services) -> None:
        self.services = services

    @app_commands.command(name="joke", description="Tell a joke written by the bot's model")
    @app_commands.describe(prompt="How the joke should start (optional)")
    async def joke(self, interaction: discord.Interaction, prompt: str | None = None) -> None:
        if await refuse_when_rate_limited(interaction, self.services, "joke"):
            return
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
        if self.services.content_policy.flags(prompt):
            await reply_error(interaction, "That prompt is against this server's content policy.")
            return
        await send_generated_joke(self.services, interaction, prompt)

    @app_commands.command(name="addjoke", description="Teach the bot a joke")
    @app_commands.describe(text="The joke, as you would tell it (up to 280 characters)")
    async def addjoke(self, interaction: discord.Interaction, text: str) -> None:
        if await refuse_when_rate_limited(interaction, self.services, "addjoke"):
            return
        check = check_joke(text)
        if not check.ok:
            await reply_error(interaction, f"Not stored: {check.reason}")
            return
        index = self.services.near_duplicates
        if copy := await find_near_copy(self.services.db, index, check.key):
            await reply_error(interaction, duplicate_message(copy.id, copy.text))
            return
        flag = self.services.content_policy.flags(check.text)
        settings = self.services.settings
        status = initial_status(
            mode=settings.moderation,
            source="user",
            author_is_admin=is_admin(interaction),
            approved_by_author=await self.services.community.approved_count_by(interaction.user.id),
            new_member_jokes=settings.moderation_new_member_jokes,
            flagged=flag is not None,
        )
        result = await self.services.db.add_joke(
            check.text,
            check.key,
            source="user",
            author_id=interaction.user.id,
            guild_id=interaction.guild_id,
            status=status,
        )  # committed before we answer
        if result.created:
            index.add(result.id, check.key)
        if result.created and status == "pending":
            log.info("/addjoke: #%d held for review (%s)", result.id, flag or settings.moderation)
            message = f"Stored as #{result.id}, waiting for review."
        elif result.created:
            message = f"Stored as #{result.id}. Thanks! It will be part of the next training."
        else:
            message = duplicate_message(result.id, await self.services.db.joke_text(result.id))
        await interaction.response.send_message(
            message, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
