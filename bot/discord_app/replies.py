"""Sending replies the safe way: mentions off, ephemeral errors, within Discord's limits."""

from __future__ import annotations

import logging

import discord

log = logging.getLogger(__name__)
NO_MENTIONS = discord.AllowedMentions.none()
# A command met a database that cannot be reached (PostgreSQL restarting, a network cut)
STORE_UNAVAILABLE = (
    "The database is not reachable right now (it may be restarting), so nothing was changed. "
    "Please try again in a few seconds."
)


async def reply_error(interaction: discord.Interaction, message: str) -> None:
    """An ephemeral error, whether or not the interaction was already answered or deferred."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(
                message, ephemeral=True, allowed_mentions=NO_MENTIONS
            )
            return
        if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
            # A deferred public "thinking…" message cannot become ephemeral: replace it.
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                log.debug("could not delete the deferred response", exc_info=True)
        await interaction.followup.send(message, ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException:
        log.exception("could not tell the user about an error")
