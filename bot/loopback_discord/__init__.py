"""A loopback Discord: REST + gateway on 127.0.0.1 that the real discord.py client talks to.

Used by the test suite and by ``jokebot sandbox``. Pure aiohttp and the standard library;
``running_bot`` (the test harness) imports discord only when called.
"""

from bot.loopback_discord._models import (
    ACK_TIMEOUT,
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    BOT_PERMISSIONS,
    DEFAULT_MEMBER_PERMISSIONS,
    EPHEMERAL,
    MANAGE_GUILD,
    MAX_CONTENT_LENGTH,
    Attachment,
    BotFailure,
    CommandHidden,
    Interaction,
    InvalidOptions,
    LoopbackError,
    Message,
    NotConnected,
    UnknownCommand,
)
from bot.loopback_discord._server import LoopbackDiscord
from bot.loopback_discord.harness import BotRun, running_bot

__all__ = [
    "ACK_TIMEOUT",
    "ADMINISTRATOR",
    "ALL_PERMISSIONS",
    "BOT_PERMISSIONS",
    "DEFAULT_MEMBER_PERMISSIONS",
    "EPHEMERAL",
    "MANAGE_GUILD",
    "MAX_CONTENT_LENGTH",
    "Attachment",
    "BotFailure",
    "BotRun",
    "CommandHidden",
    "Interaction",
    "InvalidOptions",
    "LoopbackDiscord",
    "LoopbackError",
    "Message",
    "NotConnected",
    "UnknownCommand",
    "running_bot",
]
