"""`jokebot sandbox`: parsing typed commands, and a piped session like `make demo`'s."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.sandbox import SandboxInputError, parse_command
from tests.helpers import ROOT, process_env

COMMANDS = {
    "joke": {"options": [{"name": "prompt", "type": 3}]},
    "addjoke": {"options": [{"name": "text", "type": 3, "required": True}]},
    "rollback": {"options": [{"name": "version", "type": 4}]},
    "status": {},
}


def test_parse_options_by_name_and_type():
    assert parse_command("/joke", COMMANDS) == ("joke", {})
    assert parse_command("/joke prompt: A horse: walks in", COMMANDS) == (
        "joke",
        {"prompt": "A horse: walks in"},
    )
    assert parse_command("/addjoke text: I can't: stop", COMMANDS) == (
        "addjoke",
        {"text": "I can't: stop"},
    )
    assert parse_command("/joke A horse", COMMANDS) == ("joke", {"prompt": "A horse"})
    assert parse_command("/rollback version: 2", COMMANDS) == ("rollback", {"version": 2})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("joke", "start with /"),
        ("/nope", "unknown command"),
        ("/addjoke", "needs text"),
        ("/rollback version: two", "must be a number"),
    ],
)
def test_bad_lines_explain_themselves(line, message):
    with pytest.raises(SandboxInputError, match=message):
        parse_command(line, COMMANDS)


def test_piped_session(tmp_path, tiny_model):
    session = "\n".join(
        [
            "/addjoke text: I used to hate facial hair, but then it grew on me.",
            "/addjoke text: I used to hate facial hair but then it grew on me",
            "/addjoke text: Why did the scarecrow win an award? He was outstanding in his field.",
            "/addjoke text: I told my wife she drew her eyebrows too high. She looked surprised.",
            "/joke prompt: A horse walks into a bar",
            ":press 👍",
            ":member",
            "/retrain",
            ":admin",
            "/retrain",
            "/status",
            "/bogus",
        ]
    )
    env = process_env(tmp_path / "data", tiny_model)
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "sandbox", "--echo"],
        input=session,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[bot] (only you can see this) Stored as #1" in out
    assert "duplicate of #1" in out
    assert "Stored as #3" in out
    assert "[bot] A horse walks into a bar" in out
    assert "[bot, edited] A horse walks into a bar" in out and "[👍 Upvote · 1]" in out
    assert "Discord hides /retrain" in out
    assert "Training run #1" in out
    assert "Serving **v" in out
    assert "unknown command /bogus" in out


async def test_press_a_button_in_the_sandbox(app):
    import io

    from bot.sandbox import Sandbox

    out = io.StringIO()
    sandbox = Sandbox(app.standin, out)
    with pytest.raises(SandboxInputError, match="no message with buttons"):
        await sandbox.handle(":press 👍")
    await sandbox.handle("/joke prompt: Knock knock")
    assert "[👍 Upvote] [👎 Downvote] [🚩 Report] [🔁 Another one]" in out.getvalue()
    await sandbox.handle(":press 👍")
    assert "[bot, edited] Knock knock" in out.getvalue()
    assert "[👍 Upvote · 1]" in out.getvalue()
    assert "(only you can see this) You voted 👍" in out.getvalue()
    await sandbox.handle(":press upvote")  # by label: withdraws
    assert "Your vote was withdrawn." in out.getvalue()
    with pytest.raises(SandboxInputError, match="no enabled button 'nope'"):
        await sandbox.handle(":press nope")
    await sandbox.handle(":press Another one")
    assert out.getvalue().count("[bot] Knock knock") == 2
