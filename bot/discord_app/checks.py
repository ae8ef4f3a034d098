"""`admin_only()`: one decorator for every admin command (as RoboDanny's `checks.py`).

It hides the command from members without Manage Server (`default_permissions`; Discord
enforces that only in its client), keeps it out of DMs (`guild_only`), and checks again in the
bot with `is_bot_admin`. A refusal raises `NotBotAdmin`, answered once in the tree's error
handler (`JokeBot.on_app_command_error`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import discord
from discord import app_commands

from bot.discord_app.permissions import ADMIN_REFUSAL, is_bot_admin

T = TypeVar("T")


class NotBotAdmin(app_commands.CheckFailure):
    """The member may not use an admin command; the message is the polite refusal."""

    def __init__(self) -> None:
        super().__init__(ADMIN_REFUSAL)


def admin_role_ids(interaction: discord.Interaction) -> list[int]:
    """ADMIN_ROLE_IDS of the bot that received the interaction (none for a foreign client)."""
    services = getattr(interaction.client, "services", None)
    return list(services.settings.admin_role_ids) if services is not None else []


def is_admin(interaction: discord.Interaction) -> bool:
    """The bot's own admin rule for this interaction's member."""
    return is_bot_admin(interaction, admin_role_ids(interaction))


async def _require_admin(interaction: discord.Interaction) -> bool:
    if not is_admin(interaction):
        raise NotBotAdmin()
    return True


def admin_only() -> Callable[[T], T]:
    """Hidden from members by Discord, guild-only, and checked by the bot itself."""

    def decorator(func: T) -> T:
        func = app_commands.default_permissions(manage_guild=True)(func)
        func = app_commands.guild_only()(func)
        return app_commands.check(_require_admin)(func)

    return decorator
