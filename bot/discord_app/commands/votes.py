"""The buttons under every /joke answer: 👍 👎 🚩 and "Another one".

The buttons are `DynamicItem`s whose custom id carries the generated joke's id
(`jokebot:joke:up:42`), registered at start-up, so a press on a message sent before a restart
still reaches the bot. A vote edits the message in place with the new counts once it is
committed: in the answer itself (response type 7) when the store takes less than
`ANSWER_WITHIN`, else (a burst of presses queued on the store) after a deferred update
(type 6), so that Discord always gets its answer within 3 s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord

from bot.discord_app.commands.throttle import refuse_when_rate_limited
from bot.discord_app.replies import NO_MENTIONS, STORE_UNAVAILABLE, reply_error
from bot.services import Services
from bot.store.backends import StoreUnavailable
from bot.store.community import VoteOutcome
from model.contracts.votes import VoteCounts

log = logging.getLogger(__name__)
ANSWER_WITHIN = 2.0  # seconds the vote may take before the press is deferred (Discord: 3 s)
BUTTONS = {  # action: (emoji, label, style)
    "up": ("👍", "Upvote", discord.ButtonStyle.secondary),
    "down": ("👎", "Downvote", discord.ButtonStyle.secondary),
    "report": ("🚩", "Report", discord.ButtonStyle.secondary),
    "more": ("🔁", "Another one", discord.ButtonStyle.primary),
}
_VOTE_REPLIES = {
    "added": "You voted {emoji}. Press it again to withdraw your vote.",
    "changed": "You changed your vote to {emoji}. Press it again to withdraw it.",
    "withdrawn": "Your vote was withdrawn.",
}


class JokeButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"jokebot:joke:(?P<action>up|down|report|more):(?P<id>\d+)",
):
    """One of the four buttons under a generated joke."""

    def __init__(self, action: str, generated_id: int, count: int | None = None) -> None:
        emoji, label, style = BUTTONS[action]
        if count:
            label = f"{label} · {count}"
        super().__init__(
            discord.ui.Button(
                style=style,
                label=label,
                emoji=emoji,
                custom_id=f"jokebot:joke:{action}:{generated_id}",
            )
        )
        self.action = action
        self.generated_id = generated_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any
    ) -> JokeButton:
        return cls(match["action"], int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        services: Services = interaction.client.services  # type: ignore[attr-defined]
        try:
            if self.action in ("up", "down"):
                await _vote(services, interaction, self.generated_id, self.action)
            elif self.action == "report":
                await _report(services, interaction, self.generated_id)
            else:
                if await refuse_when_rate_limited(interaction, services, "joke"):
                    return
                joke = await services.community.generated(self.generated_id)
                # /joke's own path (its cog), with the same prompt: no import runs back to it
                tell = interaction.client.get_cog("JokeCommands").send_generated_joke
                await tell(interaction, joke.prompt if joke else "")
        except StoreUnavailable as error:
            log.warning("the %s button on joke %d: %s", self.action, self.generated_id, error)
            await reply_error(interaction, STORE_UNAVAILABLE)
        except Exception:
            log.exception("the %s button on joke %d failed", self.action, self.generated_id)
            await reply_error(
                interaction, "Sorry, something went wrong with that button; it was logged."
            )


def vote_view(generated_id: int, counts: VoteCounts | None = None) -> discord.ui.View:
    """The buttons under a generated joke, with its vote counts on 👍 and 👎."""
    counts = counts or VoteCounts()
    view = discord.ui.View(timeout=None)
    view.add_item(JokeButton("up", generated_id, counts.up))
    view.add_item(JokeButton("down", generated_id, counts.down))
    view.add_item(JokeButton("report", generated_id))
    view.add_item(JokeButton("more", generated_id))
    return view


async def _vote(
    services: Services, interaction: discord.Interaction, generated_id: int, action: str
) -> None:
    value = 1 if action == "up" else -1
    recording = asyncio.create_task(
        _record_vote(services, generated_id, interaction.user.id, value)
    )
    done, _ = await asyncio.wait({recording}, timeout=ANSWER_WITHIN)
    if not done:  # a burst of presses queues on the store: answer Discord in time (type 6)
        try:
            await interaction.response.defer()
        except discord.HTTPException:  # too late already: the vote still counts
            log.warning("could not defer a vote on joke %d in time", generated_id)
    outcome = await recording
    if outcome is None:
        await reply_error(interaction, "This joke is no longer stored, so it cannot be voted on.")
        return
    view = vote_view(generated_id, outcome.counts)
    if interaction.response.is_done():
        await interaction.edit_original_response(view=view)
    else:
        await interaction.response.edit_message(view=view)  # type 7: counts and answer in one
    emoji = BUTTONS[action][0]
    await interaction.followup.send(
        _VOTE_REPLIES[outcome.change].format(emoji=emoji),
        ephemeral=True,
        allowed_mentions=NO_MENTIONS,
    )


async def _record_vote(
    services: Services, generated_id: int, member: int, value: int
) -> VoteOutcome | None:
    """The member's vote, committed; None when the joke is no longer stored."""
    if await services.community.generated(generated_id) is None:
        return None
    return await services.community.vote(generated_id, member, value)


async def _report(services: Services, interaction: discord.Interaction, generated_id: int) -> None:
    if await services.community.generated(generated_id) is None:
        await reply_error(interaction, "This joke is no longer stored.")
        return
    outcome = await services.community.report_generated(generated_id, interaction.user.id)
    if outcome.new:
        message = "Thanks for the report: this joke will never be used to train the bot."
    else:
        message = "You already reported this joke; thanks."
    await interaction.response.send_message(message, ephemeral=True, allowed_mentions=NO_MENTIONS)
