"""Constants, errors and the records (messages, interactions) of the loopback Discord."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# --- permission bits (https://discord.com/developers/docs/topics/permissions) ---------------
CREATE_INSTANT_INVITE = 1 << 0
KICK_MEMBERS = 1 << 1
BAN_MEMBERS = 1 << 2
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
STREAM = 1 << 9
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
USE_VAD = 1 << 25
CHANGE_NICKNAME = 1 << 26
MANAGE_ROLES = 1 << 28
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
USE_EXTERNAL_STICKERS = 1 << 37
SEND_MESSAGES_IN_THREADS = 1 << 38
#: Every permission bit, as ``discord.Permissions.all()`` in discord.py 2.7 (what Discord
#: reports for an administrator).
ALL_PERMISSIONS = 0x1F7FFFFFFFFFFF

#: What a plain member of a typical server may do (the ``@everyone`` role here).
DEFAULT_MEMBER_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | STREAM
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | USE_VAD
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | USE_EXTERNAL_STICKERS
    | SEND_MESSAGES_IN_THREADS
)
#: The bot's own permissions in the loopback guild (its managed role).
BOT_PERMISSIONS = DEFAULT_MEMBER_PERMISSIONS | MANAGE_MESSAGES

# --- message flags and limits -------------------------------------------------------------
SUPPRESS_EMBEDS = 1 << 2
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15
MAX_CONTENT_LENGTH = 2000
#: Seconds Discord gives a bot to acknowledge an interaction (respond or defer).
ACK_TIMEOUT = 3.0

DISCORD_EPOCH_MS = 1_420_070_400_000


class LoopbackError(Exception):
    """Base class of the errors the stand-in raises to the test (not to the bot)."""


class CommandHidden(LoopbackError):
    """Discord would not show or deliver this command to that member.

    Raised by :meth:`LoopbackDiscord.invoke` when the command's ``default_member_permissions``
    are not all held by the invoking member (and the member is no administrator).
    """


class UnknownCommand(LoopbackError, LookupError):
    """No command of that name was registered (synced) by the bot."""


class InvalidOptions(LoopbackError, ValueError):
    """Options that Discord's client would not let a user send (unknown, missing, out of range)."""


class UnknownComponent(LoopbackError, LookupError):
    """The message has no (enabled) button matching what the test or sandbox asked to press."""


class NotConnected(LoopbackError, RuntimeError):
    """No bot is connected to the gateway, so nothing can be delivered."""


class BotFailure(AssertionError):
    """The bot under test crashed or logged an error (reported by the harness)."""


class Snowflakes:
    """Discord-style ids: milliseconds since 2015 in the high bits, strictly increasing."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now = ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (1 << 17)
        self._last = max(now, self._last + 1)
        return self._last


class Notifier:
    """Wakes every waiter whenever the stand-in's state changes; waiters re-check a condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.failures: list[str] = []

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self.notify()

    async def wait_for(
        self, check: Callable[[], T | None], timeout: float, describe: Callable[[], str]
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            if self.failures:
                raise BotFailure(
                    "the bot failed while the test waited for "
                    + describe()
                    + "\n--- failures ---\n"
                    + "\n".join(self.failures)
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {describe()}")
            event = self._event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_EVERYONE_MENTION = re.compile(r"@(?:everyone|here)\b")


@dataclass(eq=False)
class Attachment:
    """A file the bot uploaded with a message."""

    id: int
    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(eq=False)
class Message:
    """A message the bot sent: an interaction response, a followup, or a channel post.

    ``history`` holds the previous contents, one entry per edit (a deferred response's
    "thinking…" placeholder counts as the empty string ``""``).
    """

    id: int
    content: str = ""
    flags: int = 0
    allowed_mentions: dict[str, Any] | None = None
    embeds: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "response"  # "response" | "followup" | "original" | "channel"
    history: list[str] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    channel_id: int = 0
    interaction_id: int | None = None
    tts: bool = False
    deleted: bool = False
    created_at: float = field(default_factory=time.time)
    edited_at: float | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def edit_count(self) -> int:
        return len(self.history)

    @property
    def visible(self) -> bool:
        """Not deleted, and something to show (content, an embed or a file)."""
        return not self.deleted and bool(self.content or self.embeds or self.attachments)

    @property
    def text(self) -> str:
        """Content plus the text of the embeds (title, description, fields, footer)."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            for fld in embed.get("fields") or []:
                parts += [fld.get("name") or "", fld.get("value") or ""]
            parts.append((embed.get("footer") or {}).get("text") or "")
        return "\n".join(p for p in parts if p)

    @property
    def mentions_disabled(self) -> bool:
        """The bot sent ``allowed_mentions`` that lets nothing ping (``AllowedMentions.none()``)."""
        am = self.allowed_mentions
        if am is None:
            return False
        return (
            am.get("parse") == []
            and not am.get("users")
            and not am.get("roles")
            and not am.get("replied_user", False)
        )

    @property
    def pings(self) -> list[str]:
        """What the content would actually ping on Discord, given ``allowed_mentions``.

        Entries are ``"everyone"``, ``"user:<id>"`` and ``"role:<id>"``. Without
        ``allowed_mentions`` Discord parses every kind of mention.
        """
        am = self.allowed_mentions
        parse = {"everyone", "users", "roles"} if am is None else set(am.get("parse") or [])
        users = {str(u) for u in (am or {}).get("users") or []}
        roles = {str(r) for r in (am or {}).get("roles") or []}
        found: list[str] = []
        if "everyone" in parse and _EVERYONE_MENTION.search(self.content):
            found.append("everyone")
        for uid in dict.fromkeys(_USER_MENTION.findall(self.content)):
            if "users" in parse or uid in users:
                found.append(f"user:{uid}")
        for rid in dict.fromkeys(_ROLE_MENTION.findall(self.content)):
            if "roles" in parse or rid in roles:
                found.append(f"role:{rid}")
        return found

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every button of the message's action rows, in order."""
        found = []
        for row in self.components:
            for component in row.get("components") or []:
                if component.get("type") == 2:
                    found.append(component)
        return found

    def find_button(self, query: str) -> dict[str, Any]:
        """The enabled button whose custom id, emoji or label is ``query`` (case-insensitive;
        a label may be given by its start, e.g. ``"up"`` for "Upvote (2)")."""
        wanted = query.strip().casefold()

        def names(button: dict[str, Any]) -> list[str]:
            emoji = (button.get("emoji") or {}).get("name") or ""
            label = button.get("label") or ""
            return [button.get("custom_id") or "", emoji, label, f"{emoji} {label}".strip()]

        candidates = [b for b in self.buttons if b.get("custom_id") and not b.get("disabled")]
        for exact in (True, False):
            for button in candidates:
                for name in names(button):
                    name = name.casefold()
                    if name and (name == wanted if exact else name.startswith(wanted)):
                        return button
        shown = [" ".join(n for n in names(b)[1:3] if n) for b in self.buttons]
        raise UnknownComponent(f"no enabled button {query!r} on message {self.id}; it has {shown}")

    def summary(self) -> str:
        flags = " ephemeral" if self.ephemeral else ""
        gone = " deleted" if self.deleted else ""
        text = self.text
        if len(text) > 200:
            text = text[:200] + "…"
        return f"<{self.kind} {self.id}{flags}{gone} edits={self.edit_count} {text!r}>"


class Interaction:
    """One slash-command invocation or button press delivered to the bot, and its answers.

    ``messages`` lists, in order of creation, the type-4 response message, the followups, and
    the ``@original`` message of a deferred interaction once it was first edited.
    For a button press, ``message`` is the pressed message; a type-6/7 answer makes it the
    ``@original`` (type 7 edits it at once), and it stays out of ``messages``.
    ``ack_type`` (4 message, 5 deferred, 6 deferred update, 7 update, 9 modal) and
    ``ack_latency`` (seconds from delivery) are set by the accepted acknowledgement; a
    callback after the window leaves them ``None`` and sets ``late_ack_latency``. ``errors``
    lists every Discord error answered to the bot for this interaction (``{"route",
    "status", "code", "message", "errors"?}``). ``original_id`` is the id of the
    ``@original`` message (known from the defer on).
    """

    def __init__(
        self,
        *,
        id: int,
        token: str,
        name: str,
        payload: dict[str, Any],
        notifier: Notifier,
        describe_standin: Callable[[], str],
        message: Message | None = None,
    ) -> None:
        self.id = id
        self.token = token
        self.name = name
        self.payload = payload
        self.user_id = int(payload["member"]["user"]["id"])
        self.shard: tuple[int, int] | None = None  # (shard_id, count) of the delivering socket
        self.ack_type: int | None = None
        self.ack_latency: float | None = None
        self.late_ack_latency: float | None = None
        self.deferred_ephemeral = False
        self.messages: list[Message] = []
        self.modal: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self.created_at: float = 0.0  # event-loop time when the event was sent
        self.original_id: int | None = None
        self.original: Message | None = None
        #: The message whose button was pressed (MESSAGE_COMPONENT interactions only).
        self.message = message
        self._notifier = notifier
        self._describe_standin = describe_standin

    @property
    def acknowledged(self) -> bool:
        return self.ack_type is not None

    @property
    def is_component(self) -> bool:
        """A button press (type 3) rather than a slash command (type 2)."""
        return self.payload.get("type") == 3

    @property
    def options(self) -> list[dict[str, Any]]:
        return self.payload["data"].get("options", [])

    @property
    def followups(self) -> list[Message]:
        return [m for m in self.messages if m.kind == "followup"]

    def describe(self) -> str:
        lines = [
            f"/{self.name} (interaction {self.id}): ack_type={self.ack_type} "
            f"ack_latency={self.ack_latency} deferred_ephemeral={self.deferred_ephemeral}",
            "messages: " + (", ".join(m.summary() for m in self.messages) or "none"),
        ]
        if self.errors:
            lines.append(f"errors answered to the bot: {self.errors}")
        if self.modal is not None:
            lines.append(f"modal: {self.modal}")
        lines.append(self._describe_standin())
        return "\n".join(lines)

    async def wait_for_ack(self, timeout: float = 10) -> int:
        """Wait until the bot acknowledged (responded or deferred); returns the callback type."""
        return await self._notifier.wait_for(
            lambda: self.ack_type, timeout, lambda: f"an acknowledgement of {self.describe()}"
        )

    async def wait_for_reply(
        self, predicate: Callable[[Message], bool] | None = None, timeout: float = 10
    ) -> Message:
        """The first message (response, followup or edited original) with something to show
        (content, embed or file) that matches ``predicate``."""

        def check() -> Message | None:
            for msg in self.messages:
                if msg.visible and (predicate is None or predicate(msg)):
                    return msg
            return None

        return await self._notifier.wait_for(
            check, timeout, lambda: f"a reply{_pred(predicate)} to {self.describe()}"
        )

    async def wait_for_edit_count(
        self,
        n: int,
        timeout: float = 10,
        predicate: Callable[[Message], bool] | None = None,
    ) -> Message:
        """The first message of this interaction edited at least ``n`` times (and matching)."""

        def check() -> Message | None:
            for msg in self.messages:
                if msg.edit_count >= n and (predicate is None or predicate(msg)):
                    return msg
            return None

        return await self._notifier.wait_for(
            check,
            timeout,
            lambda: f"a message edited {n} times{_pred(predicate)} in {self.describe()}",
        )

    def __repr__(self) -> str:
        return (
            f"<Interaction /{self.name} id={self.id} ack_type={self.ack_type} "
            f"messages={len(self.messages)}>"
        )


def _pred(predicate: Callable[..., Any] | None) -> str:
    if predicate is None:
        return ""
    return f" matching {getattr(predicate, '__qualname__', predicate)!s}"
