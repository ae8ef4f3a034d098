"""`/report`, `/deljoke`, `/forgetme` for everyone and `/review` for admins.

Answers concern one member, so they are ephemeral. The Approve/Reject and "Erase my data"
buttons are `DynamicItem`s (the joke or member id is in the custom id): they keep working
after a restart, and the bot checks who pressed them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.checks import admin_only, is_admin
from bot.discord_app.permissions import ADMIN_REFUSAL
from bot.discord_app.replies import NO_MENTIONS, reply_error
from bot.services import Services
from bot.store.community import CommunityStore, StoredJoke
from model.contracts.jokes import JokeStatus

log = logging.getLogger(__name__)
KEEP_UNTIL_NEXT_TRAINING = (
    "Model versions already trained keep what they learnt until the next training."
)
NOTHING_PENDING = "Nothing waits for review."
_DECISIONS = f"{JokeStatus.APPROVED}|{JokeStatus.REJECTED}"  # what a review button may say


def _services(interaction: discord.Interaction) -> Services:
    return interaction.client.services  # type: ignore[attr-defined]


def _takes_joke_id(command: Callable[..., Any]) -> Callable[..., Any]:
    """The `joke_id` parameter as members see it: `id`, a joke's number."""
    described = app_commands.describe(joke_id="The joke's number, e.g. 42 for #42")(command)
    return app_commands.rename(joke_id="id")(described)


async def _stored_joke(
    interaction: discord.Interaction, store: CommunityStore, joke_id: int
) -> StoredJoke | None:
    """Joke #`joke_id`, or None after telling the member there is no such joke."""
    joke = await store.joke(joke_id)
    if joke is None:
        await reply_error(interaction, f"There is no joke #{joke_id}.")
    return joke


class ReviewButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=rf"jokebot:review:(?P<decision>{_DECISIONS}):(?P<id>\d+)",
):
    """Approve or Reject under the joke `/review` shows."""

    def __init__(self, decision: JokeStatus, joke_id: int) -> None:
        approve = decision == JokeStatus.APPROVED
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
                label="Approve" if approve else "Reject",
                emoji="✅" if approve else "🗑️",
                custom_id=f"jokebot:review:{decision}:{joke_id}",
            )
        )
        self.decision = decision
        self.joke_id = joke_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any
    ) -> ReviewButton:
        return cls(JokeStatus(match["decision"]), int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        if not is_admin(interaction):
            await reply_error(interaction, ADMIN_REFUSAL)
            return
        store = _services(interaction).community
        done = await store.review(self.joke_id, interaction.user.id, self.decision)
        verb = "Approved" if self.decision == JokeStatus.APPROVED else "Rejected"
        head = f"{verb} #{self.joke_id}." if done else f"#{self.joke_id} was already dealt with."
        content, view = await review_page(store, head)
        await interaction.response.edit_message(
            content=content, view=view, allowed_mentions=NO_MENTIONS
        )


class ForgetMeButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"jokebot:forgetme:(?P<user>\d+)"
):
    """The confirmation of `/forgetme`; only the member who asked may press it."""

    def __init__(self, user_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.danger,
                label="Erase my data",
                emoji="🧹",
                custom_id=f"jokebot:forgetme:{user_id}",
            )
        )
        self.user_id = user_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any
    ) -> ForgetMeButton:
        return cls(int(match["user"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        if interaction.user.id != self.user_id:
            await reply_error(interaction, "This button erases someone else's data; not yours.")
            return
        await interaction.response.defer()  # type 6: the edit below replaces the question
        erased = await _services(interaction).community.forget_member(self.user_id)
        await interaction.edit_original_response(
            content=(
                f"Done: erased {erased.jokes} jokes, {erased.votes} votes and {erased.reports} "
                f"reports of yours. {KEEP_UNTIL_NEXT_TRAINING}"
            ),
            view=None,
            allowed_mentions=NO_MENTIONS,
        )


def _review_text(joke: StoredJoke, left: int) -> str:
    who = "a member" if joke.author_id else joke.source
    more = f"{left - 1} more after this one" if left > 1 else "the last one"
    return f"Pending review: **#{joke.id}** (from {who}; {more}).\n> {joke.text}"


async def review_page(store: CommunityStore, head: str = "") -> tuple[str, discord.ui.View | None]:
    """The oldest pending joke with Approve/Reject buttons, or that nothing is pending."""
    joke, left = await store.oldest_pending()
    prefix = f"{head}\n" if head else ""
    if joke is None:
        return prefix + NOTHING_PENDING, None
    view = discord.ui.View(timeout=None)
    view.add_item(ReviewButton(JokeStatus.APPROVED, joke.id))
    view.add_item(ReviewButton(JokeStatus.REJECTED, joke.id))
    return prefix + _review_text(joke, left), view


class CommunityCommands(commands.Cog):
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _reply(self, interaction: discord.Interaction, message: str, **kw: Any) -> None:
        await interaction.response.send_message(
            message, ephemeral=True, allowed_mentions=NO_MENTIONS, **kw
        )

    @app_commands.command(name="report", description="Report a stored joke to the moderators")
    @_takes_joke_id
    async def report(
        self, interaction: discord.Interaction, joke_id: app_commands.Range[int, 1]
    ) -> None:
        store = self.services.community
        if await _stored_joke(interaction, store, joke_id) is None:
            return
        outcome = await store.report_joke(joke_id, interaction.user.id)
        if not outcome.new:
            message = f"You already reported #{joke_id}; thanks."
        elif outcome.hidden:
            message = f"Thanks: #{joke_id} is out of the training corpus until a moderator looks."
        else:
            message = f"Thanks: #{joke_id} was reported to the moderators."
        await self._reply(interaction, message)

    @app_commands.command(name="review", description="Approve or reject jokes waiting for review")
    @admin_only()
    async def review(self, interaction: discord.Interaction) -> None:
        content, view = await review_page(self.services.community)
        if view is None:
            await self._reply(interaction, content)
        else:
            await self._reply(interaction, content, view=view)

    @app_commands.command(name="deljoke", description="Delete a joke you added")
    @_takes_joke_id
    async def deljoke(
        self, interaction: discord.Interaction, joke_id: app_commands.Range[int, 1]
    ) -> None:
        store = self.services.community
        joke = await _stored_joke(interaction, store, joke_id)
        if joke is None:
            return
        if joke.author_id != interaction.user.id and not is_admin(interaction):
            await reply_error(
                interaction,
                f"Sorry, #{joke_id} is not yours: you can delete only the jokes you added "
                "(server admins can delete any).",
            )
            return
        owner = None if is_admin(interaction) else interaction.user.id
        if not await store.delete_joke(joke_id, author_id=owner):  # gone since the check
            await reply_error(interaction, f"#{joke_id} is no longer stored; nothing to delete.")
            return
        await self._reply(
            interaction,
            f"Deleted #{joke_id}; it will not be used again. {KEEP_UNTIL_NEXT_TRAINING}",
        )

    @app_commands.command(name="forgetme", description="Erase every joke and vote of yours")
    async def forgetme(self, interaction: discord.Interaction) -> None:
        held = await self.services.community.member_data(interaction.user.id)
        if not (held.jokes or held.votes or held.reports):
            await self._reply(interaction, "The bot stores no jokes, votes or reports of yours.")
            return
        view = discord.ui.View(timeout=None)
        view.add_item(ForgetMeButton(interaction.user.id))
        await self._reply(
            interaction,
            f"This erases your {held.jokes} jokes, {held.votes} votes and {held.reports} "
            f"reports for good. {KEEP_UNTIL_NEXT_TRAINING} Press the button to confirm.",
            view=view,
        )
