"""`/joke` and `/addjoke`: what every member of a server can do.

A /joke answer is stored (committed) before it is posted, with the buttons of `votes`.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.community.moderation import initial_status
from bot.community.submissions import NearCopy, duplicate_message, store_unless_near_copy
from bot.discord_app.checks import is_admin
from bot.discord_app.commands.throttle import refuse_when_rate_limited
from bot.discord_app.commands.votes import vote_view
from bot.discord_app.replies import NO_MENTIONS, reply_error
from bot.discord_app.text_limits import fit_message
from bot.runners.client import RunnerBusy, RunnerError, RunnerUnavailable
from bot.runners.joke_teller import MAX_PROMPT_CHARS, EmptyJoke, NoCleanJoke, tell_joke
from bot.services import Services
from model.contracts.jokes import JokeStatus, check_joke, normalise_key

log = logging.getLogger(__name__)
UNAVAILABLE = "The joke machine is unavailable, try again shortly."
NO_CLEAN_JOKE = (
    "Sorry, the model did not come up with a joke fit for this server this time; try again."
)


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
        await self.send_generated_joke(interaction, prompt)

    @app_commands.command(name="addjoke", description="Teach the bot a joke")
    @app_commands.describe(text="The joke, as you would tell it (up to 280 characters)")
    async def addjoke(self, interaction: discord.Interaction, text: str) -> None:
        if await refuse_when_rate_limited(interaction, self.services, "addjoke"):
            return
        check = check_joke(text)
        if not check.ok:
            await reply_error(interaction, f"Not stored: {check.reason}")
            return
        # storing waits its turn behind other writes (a burst of /addjoke, votes): answer first
        await interaction.response.defer(ephemeral=True, thinking=True)
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
        # the near-copy check and the insert are one step: of copies sent at once, one is stored
        result = await store_unless_near_copy(
            self.services.db,
            self.services.near_duplicates,
            check.text,
            check.key,
            source="user",
            author_id=interaction.user.id,
            guild_id=interaction.guild_id,
            status=status,
        )  # committed before we answer
        if isinstance(result, NearCopy):
            message = duplicate_message(result.id, result.text)
        elif result.created and status == JokeStatus.PENDING:
            log.info("/addjoke: #%d held for review (%s)", result.id, flag or settings.moderation)
            message = f"Stored as #{result.id}, waiting for review."
        elif result.created:
            message = f"Stored as #{result.id}. Thanks! It will be part of the next training."
        else:
            message = duplicate_message(result.id, await self.services.db.joke_text(result.id))
        await interaction.followup.send(message, ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def send_generated_joke(self, interaction: discord.Interaction, prompt: str) -> None:
        """Defer, ask the model, store the joke (committed), then post it with its buttons."""
        services = self.services
        await interaction.response.defer(thinking=True)  # answers Discord within its 3 s
        try:
            told = await tell_joke(
                services.runner,
                services.settings,
                prompt,
                examples=services.examples,
                accept=lambda joke: services.content_policy.flags(joke) is None,
            )
        except RunnerBusy as busy:
            await reply_error(
                interaction, f"The joke machine is busy, try again in {busy.retry_after} s."
            )
            return
        except RunnerUnavailable:
            log.warning("/joke: runner unavailable", exc_info=True)
            await reply_error(interaction, UNAVAILABLE)
            return
        except NoCleanJoke as error:
            log.info("/joke: %s", error)
            await reply_error(interaction, NO_CLEAN_JOKE)
            return
        except (RunnerError, EmptyJoke) as error:
            log.warning("/joke: %s", error)
            await reply_error(interaction, "The model could not come up with a joke; try again.")
            return
        text = fit_message(told.text)  # within Discord's message size
        version = told.version
        if version is None:  # the runner pool could not tell: the version the database serves
            version = (await services.db.active_version()).version
        generated_id = await services.community.record_shown(
            text,
            normalise_key(text),
            prompt=prompt,
            model_version=version,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
        )
        message = await interaction.followup.send(
            text, view=vote_view(generated_id), allowed_mentions=NO_MENTIONS, wait=True
        )
        await services.community.set_message(generated_id, message.id)
