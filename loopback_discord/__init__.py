"""A loopback Discord: REST + gateway on 127.0.0.1 that the real discord.py client talks to.

Used by the test suite and by ``jokebot sandbox``. Pure aiohttp and the standard library;
``running_bot`` (the test harness) imports discord only when called.

Typical test::

    async with LoopbackDiscord() as standin:
        async with running_bot(make_bot(), standin, loggers=("discord", "bot")):
            interaction = await standin.invoke("joke", {"prompt": "cats"})
            reply = await interaction.wait_for_reply()
            assert reply.mentions_disabled and not reply.ephemeral

Discord behaviour it reproduces (beyond the plain routes):

- ``invoke`` raises :class:`CommandHidden` when Discord would not deliver the command: the
  member lacks ``default_member_permissions`` (administrators see everything) or Use
  Application Commands. ``respect_default_permissions=False`` delivers it anyway.
- The first callback must arrive within ``ack_timeout`` (3 s), else 404 code 10062; a second
  one gets 400 code 40060. Followups before the first callback get 404 code 10015.
- After a defer, the first followup replaces the "thinking…" message (same id as
  ``@original``) and is ephemeral exactly when the defer was, whatever flags it asks for.
  If the deferred message was deleted first, the followup is a new message.
- Content over 2,000 characters, more than 10 embeds or embed limits: 400 code 50035 with
  Discord's error tree; an empty message: 400 code 50006.
- Options are typed from the registered command's schema (strings are coerced, so a
  sandbox can pass typed text), checked for required/unknown/choices/ranges
  (:class:`InvalidOptions`), and user/role/channel options are filled into ``resolved``.
- REST needs ``Authorization: Bot <token>`` (else 401), IDENTIFY/RESUME the token (else
  close 4004); every JSON answer has ``Content-Type: application/json`` exactly.
- Gateway shards: each websocket is one shard (IDENTIFY ``shard: [id, count]``, READY echoes
  it); a guild's GUILD_CREATE and INTERACTION_CREATE go on shard ``(guild_id >> 22) % count``
  (``add_guild(shard=(1, 2))`` adds a guild there; ``invoke(..., guild_id=...)`` types in it),
  ``Interaction.shard`` and ``gateway_events`` tell which socket carried what, and a guild no
  connected shard owns is a :class:`NotConnected` recorded in ``shard_errors``. ``GET
  /gateway/bot`` answers ``recommended_shards`` and ``session_start_limit``.
- ``press(message, "👍")`` delivers a button press (MESSAGE_COMPONENT, type 3) with the
  pressed message in the payload as Discord sends it; the bot may answer 4/5 (a new message),
  6 (deferred update: a later ``@original`` edit edits the pressed message) or 7 (edit the
  pressed message now). Buttons are found by custom id, emoji or label
  (:class:`UnknownComponent` if none). Types 6/7 answer slash commands with 400.
- ``Message.allowed_mentions`` is what the latest create/edit that set the content sent;
  ``Message.pings`` is what that content would actually ping.
"""

from loopback_discord._gateway_types import GatewayEvent
from loopback_discord._models import (
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
    UnknownComponent,
)
from loopback_discord._openapi import find_spec
from loopback_discord._server import LoopbackDiscord
from loopback_discord._shards import guild_id_on_shard, shard_for_guild
from loopback_discord.harness import BotRun, running_bot

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
    "GatewayEvent",
    "Interaction",
    "InvalidOptions",
    "LoopbackDiscord",
    "LoopbackError",
    "Message",
    "NotConnected",
    "UnknownCommand",
    "UnknownComponent",
    "find_spec",
    "guild_id_on_shard",
    "running_bot",
    "shard_for_guild",
]
