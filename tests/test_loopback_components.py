"""Buttons on the loopback Discord with the real discord.py client: presses and answers 4-7."""

from __future__ import annotations

import aiohttp
import discord
import pytest
from discord.ext import commands

from loopback_discord import LoopbackDiscord, UnknownComponent, running_bot
from tests.helpers import plain_bot


class Counter(discord.ui.DynamicItem[discord.ui.Button], template=r"count:(?P<n>\d+)"):
    """A persistent button whose custom id carries its state (as jokebot's vote buttons do)."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Count {n}", emoji="➕", custom_id=f"count:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(Counter(self.n + 1))
        await interaction.response.edit_message(content=f"counted {self.n + 1}", view=view)


def make_bot() -> commands.Bot:
    bot = plain_bot(dynamic_items=(Counter,))

    @bot.tree.command(description="A message with buttons")
    async def buttons(interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(Counter(0))
        later = discord.ui.Button(label="Later", custom_id="later")
        new = discord.ui.Button(label="New", emoji="🆕", custom_id="new")

        async def deferred(press: discord.Interaction) -> None:
            await press.response.defer()  # type 6
            await press.edit_original_response(content="edited after a deferred update")
            await press.followup.send("done", ephemeral=True)

        async def fresh(press: discord.Interaction) -> None:
            await press.response.send_message(f"new message for {press.message.id}", ephemeral=True)

        later.callback, new.callback = deferred, fresh
        view.add_item(later)
        view.add_item(new)
        await interaction.response.send_message("press me", view=view)

    @bot.tree.command(description="Leaves the answer to the test")
    async def silent(interaction: discord.Interaction) -> None:
        return

    return bot


@pytest.fixture
async def bot_run():
    async with (
        LoopbackDiscord() as standin,
        running_bot(make_bot(), standin) as run,
    ):
        yield standin, run


async def test_press_type_7_edits_the_pressed_message(bot_run):
    standin, _ = bot_run
    command = await standin.invoke("buttons")
    message = await command.wait_for_reply()
    assert [b["label"] for b in message.buttons] == ["Count 0", "Later", "New"]
    press = await standin.press(message, "➕")
    assert await press.wait_for_ack() == 7
    assert press.ack_latency < 3
    assert press.payload["type"] == 3 and press.payload["message"]["id"] == str(message.id)
    assert press.payload["data"] == {"custom_id": "count:0", "component_type": 2}
    assert message.content == "counted 1" and message.edit_count == 1
    assert message.buttons[0]["custom_id"] == "count:1"  # components stored on the message
    again = await standin.press(message, "count")  # by the start of the label
    assert await again.wait_for_ack() == 7
    assert message.content == "counted 2"


async def test_press_type_6_then_edit_original_and_followup(bot_run):
    standin, _ = bot_run
    message = await (await standin.invoke("buttons")).wait_for_reply()
    press = await standin.press(message, "Later", user_id=2002)
    assert await press.wait_for_ack() == 6
    reply = await press.wait_for_reply()
    assert reply.content == "done" and reply.ephemeral
    assert message.content == "edited after a deferred update"


async def test_press_answered_with_a_new_message(bot_run):
    standin, _ = bot_run
    message = await (await standin.invoke("buttons")).wait_for_reply()
    press = await standin.press(message, "new")
    reply = await press.wait_for_reply()
    assert press.ack_type == 4 and reply.ephemeral
    assert reply.content == f"new message for {message.id}"
    assert message.content == "press me"


async def test_unknown_button_is_a_clear_error(bot_run):
    standin, _ = bot_run
    message = await (await standin.invoke("buttons")).wait_for_reply()
    with pytest.raises(UnknownComponent, match="Count 0"):
        await standin.press(message, "nope")
    assert message.find_button("🆕")["custom_id"] == "new"


async def test_update_types_are_refused_for_slash_commands():
    async with LoopbackDiscord() as standin:
        bot = make_bot()
        async with running_bot(bot, standin, allow_errors=True):
            interaction = await standin.invoke("silent")
            body = {"type": 7, "data": {"content": "x"}}
            # discord.py never sends 7 for a slash command; a raw callback shows Discord's answer
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{standin.api_base}/interactions/{interaction.id}/{interaction.token}"
                    "/callback",
                    json=body,
                ) as response,
            ):
                assert response.status == 400
                assert "not valid for an application command" in await response.text()
            assert not interaction.acknowledged
