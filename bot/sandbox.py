"""`jokebot sandbox`: the real bot against the built-in loopback Discord, driven from a terminal.

Each input line is a slash command as Discord would send it (`/joke`, `/joke prompt: A horse`,
`/addjoke text: ...`, `/retrain`, `/status`); the bot's answers are printed. `:member` and
`:admin` switch who is typing (an admin by default); `:press 👍` (an emoji or a label) presses a
button on the latest message that has buttons. No Discord account, no internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr

from bot.app import RUNNER_START_TIMEOUT, run_bot
from bot.settings import Settings
from loopback_discord import (
    ADMINISTRATOR,
    DEFAULT_MEMBER_PERMISSIONS,
    CommandHidden,
    LoopbackDiscord,
    LoopbackError,
    Message,
    find_spec,
    shard_for_guild,
)

SANDBOX_TOKEN = "sandbox-token"
log = logging.getLogger(__name__)
TRAINING_TIMEOUT = 3600
HELP = """Type slash commands as in Discord, one per line, e.g.
  /addjoke text: I used to hate facial hair, but then it grew on me.
  /joke            /joke prompt: A horse walks into a bar
  /retrain         /status         /models        /rollback version: 0
  :press 👍         press a button (emoji or label) on the latest message with buttons
  :member / :admin  switch between a plain member and a server admin (default admin)
  :guilds / :guild N  list the servers (and their gateway shards) / type in server N
  :quit             leave (end of input does the same)"""
PRESS_FOLLOWUP_WAIT = 1.0  # seconds to wait for what a press answers after acknowledging
_OPTION_TYPES = {3: str, 4: int, 5: lambda v: v.lower() in {"1", "true", "yes"}, 10: float}


class SandboxInputError(ValueError):
    """The typed line is not a command the bot knows; the message says why."""


def parse_command(line: str, commands: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """`/name opt: value opt2: value` → (name, {opt: value}) typed by the registered command."""
    match = re.match(r"^/(\w+)\s*(.*)$", line.strip(), re.S)
    if not match:
        raise SandboxInputError("commands start with / (type :help for examples)")
    name, rest = match.group(1).lower(), match.group(2).strip()
    if name not in commands:
        raise SandboxInputError(f"unknown command /{name}; known: /{', /'.join(sorted(commands))}")
    declared = {opt["name"]: opt for opt in commands[name].get("options", [])}
    options: dict[str, Any] = {}
    if rest:
        names = "|".join(re.escape(n) for n in declared) or r"(?!)"
        parts = re.split(rf"(?:^|\s)({names}):\s*", rest)
        if parts[0].strip():
            if len(declared) != 1:
                raise SandboxInputError(f"write options as name: value ({', '.join(declared)})")
            parts = ["", next(iter(declared)), rest]  # `/joke A horse` means the only option
        for key, value in zip(parts[1::2], parts[2::2], strict=True):
            convert = _OPTION_TYPES.get(declared[key].get("type", 3), str)
            try:
                options[key] = convert(value.strip())
            except ValueError:
                raise SandboxInputError(f"{key} must be a number") from None
    for opt in declared.values():
        if opt.get("required") and opt["name"] not in options:
            raise SandboxInputError(f"/{name} needs {opt['name']}: ...")
    return name, options


class Sandbox:
    def __init__(self, standin: LoopbackDiscord, out: TextIO) -> None:
        self.standin = standin
        self.out = out
        self.admin = True
        self.guild_id = standin.guild_id
        self._printed_channel = 0
        self._with_buttons: Message | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _show(self, message: Any, prefix: str = "bot") -> None:
        note = " (only you can see this)" if message.ephemeral else ""
        self.say(f"[{prefix}]{note} {message.content}")
        if message.buttons:
            self._with_buttons = message
            self.say("  " + " ".join(_button_text(b) for b in message.buttons))

    @property
    def _permissions(self) -> int:
        return DEFAULT_MEMBER_PERMISSIONS | (ADMINISTRATOR if self.admin else 0)

    async def press(self, query: str) -> None:
        """`:press 👍`: press a button of the latest message that has buttons."""
        message = self._with_buttons
        if message is None or message.deleted:
            raise SandboxInputError("no message with buttons yet (try /joke)")
        try:
            interaction = await self.standin.press(
                message, query, user_id=1001, username="you", permissions=self._permissions
            )
        except LoopbackError as error:
            raise SandboxInputError(str(error)) from None
        kind = await interaction.wait_for_ack(timeout=10)
        if kind == 7:
            self._show(message, prefix="bot, edited")
        deadline = asyncio.get_running_loop().time() + (
            120 if kind in (4, 5) else PRESS_FOLLOWUP_WAIT
        )
        shown: set[int] = set()
        while True:  # a new message (4/5), or a followup after an edit (6/7)
            fresh = [m for m in interaction.messages if m.visible and m.id not in shown]
            for reply in fresh:
                shown.add(reply.id)
                self._show(reply)
            remaining = deadline - asyncio.get_running_loop().time()
            if (fresh and kind in (4, 5)) or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await interaction.wait_for_reply(
                    lambda m: m.visible and m.id not in shown, timeout=remaining
                )
        if kind == 6 and message.edit_count:
            self._show(message, prefix="bot, edited")

    async def handle(self, line: str) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        if line in (":admin", ":member"):
            self.admin = line == ":admin"
            self.say(f"(you are now a {'server admin' if self.admin else 'plain member'})")
            return
        if line in (":help", "help"):
            self.say(HELP)
            return
        if line == ":guilds" or line.startswith(":guild "):
            self._switch_guild(line.removeprefix(":guilds").removeprefix(":guild").strip())
            return
        if line.startswith(":press"):
            query = line.removeprefix(":press").strip()
            if not query:
                raise SandboxInputError("say which button, e.g. :press 👍")
            await self.press(query)
            self._show_channel_messages()
            return
        name, options = parse_command(line, self.standin.registered_commands)
        try:
            interaction = await self.standin.invoke(
                name,
                options,
                user_id=1001,
                username="you",
                permissions=self._permissions,
                guild_id=self.guild_id,
            )
        except CommandHidden:
            self.say(f"(Discord hides /{name} from members without the permission it needs)")
            return
        except LoopbackError as error:  # an option Discord's own client would not let through
            self.say(f"(sandbox) {error}")
            return
        reply = await interaction.wait_for_reply(timeout=120)
        self._show(reply)
        if name == "retrain" and not reply.ephemeral:
            await self._follow_training(reply)
        self._show_channel_messages()

    async def _follow_training(self, message: Any) -> None:
        """Print the live-edited training message until it reports the result."""
        seen = message.content
        deadline = asyncio.get_running_loop().time() + TRAINING_TIMEOUT
        while "Training run #" not in seen and "already" not in seen:
            if asyncio.get_running_loop().time() > deadline:
                self.say("(gave up waiting for the training run)")
                return
            await asyncio.sleep(0.5)
            if message.content != seen:
                seen = message.content
                finished = "Training run #" in seen
                self.say(f"[bot, edited] {seen if finished else seen.splitlines()[-1]}")

    def _guild_line(self, n: int, guild_id: int) -> str:
        name = self.standin.name_of_guild(guild_id)
        shard = self.standin.shard_of(guild_id)
        count = len(self.standin.connected_shards)
        where = f", gateway shard {shard}" if shard is not None and count > 1 else ""
        return f"{n}. {name} ({guild_id}{where})"

    def _switch_guild(self, choice: str) -> None:
        """`:guilds` lists the servers; `:guild N` makes the next commands come from server N."""
        guilds = self.standin.guild_ids
        if choice:
            if not choice.isdigit() or not 1 <= int(choice) <= len(guilds):
                raise SandboxInputError(f"pick a server from 1 to {len(guilds)} (see :guilds)")
            self.guild_id = guilds[int(choice) - 1]
            self.say(f"(you are now in {self._guild_line(int(choice), self.guild_id)})")
            return
        for n, guild_id in enumerate(guilds, start=1):
            marker = " <- you are here" if guild_id == self.guild_id else ""
            self.say(self._guild_line(n, guild_id) + marker)

    def _show_channel_messages(self) -> None:
        for message in self.standin.channel_messages[self._printed_channel :]:
            self._show(message, prefix="bot in #general")
        self._printed_channel = len(self.standin.channel_messages)


def _button_text(button: dict[str, Any]) -> str:
    emoji = (button.get("emoji") or {}).get("name") or ""
    return f"[{' '.join(part for part in (emoji, button.get('label') or '') if part)}]"


async def _read_lines(stream: TextIO):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, stream.readline)
        if not line:
            return
        yield line


def sandbox_openapi_spec() -> Path | None:
    """Discord's OpenAPI spec for checking the bot's requests, when it and jsonschema are here."""
    spec = find_spec()
    if spec is None:
        log.info("Discord's OpenAPI spec not found: the bot's requests are not checked against it")
    elif importlib.util.find_spec("jsonschema") is None:
        log.info("jsonschema is not installed: the bot's requests are not checked against %s", spec)
        spec = None
    return spec


async def run_sandbox(settings: Settings, stdin: TextIO, *, echo: bool = False) -> int:
    """Start the stand-in and the real bot (same code as `jokebot run`), then read commands."""
    shards = 1 if settings.discord_shard_count is None else settings.discord_shard_count
    shards = 2 if shards == "auto" else shards  # what the sandbox's GET /gateway/bot recommends
    spec = sandbox_openapi_spec()
    async with LoopbackDiscord(
        token=SANDBOX_TOKEN, recommended_shards=shards, openapi_spec=spec or False
    ) as standin:
        for shard_id in range(shards):  # one server on every shard, to type in with :guild N
            if all(shard_for_guild(g, shards) != shard_id for g in standin.guild_ids):
                await standin.add_guild(shard=(shard_id, shards))
        settings = settings.model_copy(
            update={
                "discord_token": SecretStr(SANDBOX_TOKEN),
                "discord_api_base": standin.api_base,
                "discord_gateway_url": standin.gateway_url,
                "discord_guild_ids": [],
            }
        )
        stop = asyncio.Event()
        bot = asyncio.create_task(
            run_bot(settings, stop=stop, guild_ready_timeout=0.1, install_signal_handlers=False)
        )
        sandbox = Sandbox(standin, sys.stdout)
        sandbox.say("starting the model runner and the bot (the first start converts the model)…")
        began = time.monotonic()
        if shards > 1 and not settings.discord_shard_ids:  # wait for every shard's socket
            waiting = standin.wait_for_shards(shards, timeout=RUNNER_START_TIMEOUT)
        else:
            waiting = standin.wait_until_ready(timeout=RUNNER_START_TIMEOUT)
        ready = asyncio.create_task(waiting)
        await asyncio.wait({bot, ready}, return_when=asyncio.FIRST_COMPLETED)
        if bot.done():
            ready.cancel()
            return await bot  # raises the start-up error
        await ready
        sandbox.say(f"ready after {time.monotonic() - began:.0f} s. {HELP}")
        try:
            async for line in _read_lines(stdin):
                if line.strip() in (":quit", ":q"):
                    break
                if echo and line.strip():
                    sandbox.say(f"> {line.strip()}")
                began = time.monotonic()
                try:
                    await sandbox.handle(line)
                    if echo and line.strip():
                        sandbox.say(f"  ({time.monotonic() - began:.1f} s)")
                except SandboxInputError as error:
                    sandbox.say(f"(sandbox) {error}")
                except TimeoutError as error:
                    sandbox.say(f"(sandbox) no answer: {error}")
                if bot.done():
                    break
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                code = await bot
        return code
