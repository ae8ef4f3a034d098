"""Who may run admin commands. Checked by the bot itself: Discord's hiding is not enforcement."""

from __future__ import annotations

import discord


def is_bot_admin(interaction: discord.Interaction, admin_role_ids: list[int]) -> bool:
    """Manage Server, Administrator, or one of the configured admin roles."""
    permissions = interaction.permissions
    if permissions.administrator or permissions.manage_guild:
        return True
    roles = getattr(interaction.user, "roles", [])
    return any(role.id in admin_role_ids for role in roles)


ADMIN_REFUSAL = (
    "Sorry, only server managers (Manage Server permission) or the bot's admin roles "
    "can use this command."
)
