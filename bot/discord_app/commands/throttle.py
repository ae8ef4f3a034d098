"""Rate limits as a member meets them: "Slow down, try again in N s", ephemeral; admins exempt."""

from __future__ import annotations

import discord

from bot.discord_app.checks import is_admin
from bot.discord_app.replies import reply_error
from bot.services import Services


async def refuse_when_rate_limited(
    interaction: discord.Interaction, services: Services, command: str
) -> bool:
    """Count this use of `command`; True (and the member told) when a limit refuses it."""
    limiter = services.rate_limiter
    if limiter is None or is_admin(interaction):
        return False
    wait = await limiter.retry_after(command, interaction.user.id, interaction.guild_id)
    if wait is None:
        return False
    await reply_error(interaction, f"Slow down, try again in {wait} s.")
    return True
