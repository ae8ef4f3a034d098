"""The discord.py client: connection settings, command registration, and the error safety net."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.checks import NotBotAdmin
from bot.discord_app.replies import NO_MENTIONS, STORE_UNAVAILABLE, reply_error
from bot.discord_app.shards import IdentifyLimiter
from bot.services import Services
from bot.store.backends import StoreUnavailable

log = logging.getLogger(__name__)


# jokebot never joins voice channels: skip discord.py's start-up warnings about voice libraries.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


class JokeBot(commands.Bot):
    """jokebot's Discord client; slash commands only, every message sent with mentions off."""

    def __init__(
        self, services: Services, *, guild_ready_timeout: float = 2.0, **client_options: Any
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            allowed_mentions=NO_MENTIONS,
            help_command=None,
            guild_ready_timeout=guild_ready_timeout,
            **client_options,
        )
        self.services = services

    async def setup_hook(self) -> None:
        from bot.discord_app.commands.admin import AdminCommands
        from bot.discord_app.commands.jokes import JokeCommands
        from bot.discord_app.commands.moderation import (
            CommunityCommands,
            ForgetMeButton,
            ReviewButton,
        )
        from bot.discord_app.commands.status import StatusCommands
        from bot.discord_app.commands.votes import JokeButton

        await self.add_cog(JokeCommands(self.services))
        await self.add_cog(StatusCommands(self.services))
        await self.add_cog(AdminCommands(self.services))
        await self.add_cog(CommunityCommands(self.services))
        # Buttons of messages sent before a restart: matched by custom id, not by message.
        self.add_dynamic_items(JokeButton, ReviewButton, ForgetMeButton)
        self.tree.on_error = self.on_app_command_error
        guild_ids = self.services.settings.discord_guild_ids
        if guild_ids:  # guild commands appear at once; global ones can take a while
            for guild_id in guild_ids:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        log.info("slash commands synced: %s", ", ".join(c.name for c in self.tree.get_commands()))

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s (%s guilds)", self.user, len(self.guilds))

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """A refused check or any failure inside a command: a polite ephemeral message (and,
        for a failure, a logged traceback)."""
        name = interaction.command.name if interaction.command else "?"
        if isinstance(error, NotBotAdmin):
            log.info("/%s refused to %s: not an admin", name, interaction.user.id)
            await reply_error(interaction, str(error))
            return
        if isinstance(error, app_commands.NoPrivateMessage):
            await reply_error(interaction, "This command works only in a server.")
            return
        if isinstance(getattr(error, "original", error), StoreUnavailable):
            log.warning("/%s: %s", name, getattr(error, "original", error))
            await reply_error(interaction, STORE_UNAVAILABLE)
            return
        log.error("/%s failed", name, exc_info=error)
        await reply_error(
            interaction,
            "Sorry, something went wrong while handling that command. "
            "The error was logged for the bot's host; please try again later.",
        )


class ShardedJokeBot(JokeBot, commands.AutoShardedBot):
    """jokebot on several gateway connections (discord.py's AutoShardedBot), one per shard.

    discord.py's AutoShardedClient takes the gateway URL from `GET /gateway/bot` when it asks for
    the shard count; this one asks for the count and the IDENTIFY concurrency only, and always
    connects to DISCORD_GATEWAY_URL (`DiscordWebSocket.DEFAULT_GATEWAY`), so a gateway proxy or
    the loopback stand-in keeps working with `auto`.
    """

    def __init__(
        self,
        services: Services,
        *,
        shard_count: int | None,
        shard_ids: list[int] | None = None,
        guild_ready_timeout: float = 2.0,
    ) -> None:
        super().__init__(
            services,
            guild_ready_timeout=guild_ready_timeout,
            shard_count=shard_count,
            shard_ids=shard_ids,
        )
        self.identify_limiter = IdentifyLimiter()

    async def launch_shards(self) -> None:
        if self.is_closed():
            return
        try:
            recommended, _url, limits = await self.http.get_bot_gateway()
        except discord.GatewayNotFound:
            if self.shard_count is None:
                raise
            recommended, limits = None, {}
        if self.shard_count is None:
            self.shard_count = recommended
        elif recommended is not None and self.shard_count < recommended:
            log.warning(
                "DISCORD_SHARD_COUNT=%d is below the %d shards Discord recommends",
                self.shard_count,
                recommended,
            )
        self.identify_limiter = IdentifyLimiter(limits.get("max_concurrency", 1))
        ids = self.shard_ids or list(range(self.shard_count))
        remaining = limits.get("remaining")
        if remaining is not None and remaining < len(ids):
            log.warning("Discord allows only %s more session starts today", remaining)
        log.info(
            "gateway: %d shard(s), this process runs %s, up to %d IDENTIFYs at once",
            self.shard_count,
            ", ".join(map(str, ids)),
            self.identify_limiter.max_concurrency,
        )
        await super().launch_shards()  # shard_count is set: connects to DEFAULT_GATEWAY

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait only as long as Discord's session start limit requires (not 5 s per shard)."""
        await self.identify_limiter.wait(shard_id or 0)


def make_bot(services: Services, *, guild_ready_timeout: float = 2.0) -> JokeBot:
    """The client DISCORD_SHARD_COUNT asks for: one plain connection, or the sharded client."""
    settings = services.settings
    count = settings.discord_shard_count
    if count is None:
        return JokeBot(services, guild_ready_timeout=guild_ready_timeout)
    if settings.discord_shard_ids and not settings.runner_url:
        log.warning(
            "DISCORD_SHARD_IDS without RUNNER_URL: this process starts its own model runner, and "
            "a version promoted by another process reaches it only at its next start; point "
            "every process at one runner (README, 'Gateway shards')"
        )
    return ShardedJokeBot(
        services,
        shard_count=None if count == "auto" else count,
        shard_ids=settings.discord_shard_ids or None,
        guild_ready_timeout=guild_ready_timeout,
    )
