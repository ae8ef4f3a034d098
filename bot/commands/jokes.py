"""`/joke` and `/addjoke`: what every member of a server can do."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.commands.throttle import refuse_when_rate_limited
from bot.discord_replies import NO_MENTIONS, reply_error
from bot.joke_teller import MAX_PROMPT_CHARS, EmptyJoke, NoCleanJoke, tell_joke
from bot.jokes import check_joke
from bot.runner_client import RunnerBusy, RunnerError, RunnerUnavailable
from bot.services import Services
from bot.submissions import duplicate_message, find_near_copy, held_status

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
        policy = self.services.content_policy
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
        if policy.flags(prompt):
            await reply_error(interaction, "That prompt is against this server's content policy.")
            return
        await interaction.response.defer(thinking=True)  # answers Discord within its 3 s
        try:
            text = await tell_joke(
                self.services.runner,
                self.services.settings,
                prompt,
                accept=lambda joke: policy.flags(joke) is None,
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
        except NoCleanJoke as error:
            log.info("/joke: %s", error)
            await reply_error(interaction, NO_CLEAN_JOKE)
            return
        except (RunnerError, EmptyJoke) as error:
            log.warning("/joke: %s", error)
            await reply_error(interaction, "The model could not come up with a joke; try again.")
            return
        await interaction.followup.send(text, allowed_mentions=NO_MENTIONS)

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
        result = await self.services.db.add_joke(
            check.text,
            check.key,
            source="user",
            author_id=interaction.user.id,
            guild_id=interaction.guild_id,
            status=held_status(flag),
        )  # committed before we answer
        if result.created:
            index.add(result.id, check.key)
        if result.created and flag:
            log.info("/addjoke: #%d held for review (%s)", result.id, flag)
            message = f"Stored as #{result.id}, waiting for review."
        elif result.created:
            message = f"Stored as #{result.id}. Thanks! It will be part of the next training."
        else:
            message = duplicate_message(result.id, await self.services.db.joke_text(result.id))
        await interaction.response.send_message(
            message, ephemeral=True, allowed_mentions=NO_MENTIONS
        )
