"""The discord.py client: connection settings, command registration, and the error safety net."""

from __future__ import annotations

import logging

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.checks import NotBotAdmin
from bot.discord_replies import NO_MENTIONS, reply_error
from bot.services import Services

log = logging.getLogger(__name__)


def point_discord_at(api_base: str, gateway_url: str) -> None:
    """Use a REST/gateway proxy (or the loopback stand-in) instead of Discord's own hosts."""
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


# jokebot never joins voice channels: skip discord.py's start-up warnings about voice libraries.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


class JokeBot(commands.Bot):
    """jokebot's Discord client; slash commands only, every message sent with mentions off."""

    def __init__(self, services: Services, *, guild_ready_timeout: float = 2.0) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            allowed_mentions=NO_MENTIONS,
            help_command=None,
            guild_ready_timeout=guild_ready_timeout,
        )
        self.services = services

    async def setup_hook(self) -> None:
        from bot.commands.admin import AdminCommands
        from bot.commands.community import CommunityCommands, ForgetMeButton, ReviewButton
        from bot.commands.jokes import JokeCommands
        from bot.commands.status import StatusCommands
        from bot.commands.votes import JokeButton

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
        log.error("/%s failed", name, exc_info=error)
        await reply_error(
            interaction,
            "Sorry, something went wrong while handling that command. "
            "The error was logged for the bot's host; please try again later.",
        )
