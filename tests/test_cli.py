"""The `jokebot` command without Discord: exit code 2 and one line for what a host must fix,
`import`, `models`, and `runner` converting the embedded model."""

import asyncio
import json

import pytest

from bot.store.community import CommunityStore
from bot.store.database import Database
from model.contracts.jokes import check_joke
from tests.helpers import SHARED_CSV, jokebot_cli


def test_cli_exits_2_with_one_line(tmp_path):
    result = jokebot_cli("models", env={"DEVICE": "gpu", "JOKEBOT_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "DEVICE" in result.stderr and "Traceback" not in result.stderr


def test_run_without_token_exits_2(tmp_path):
    result = jokebot_cli("run", env={"JOKEBOT_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_import_tutorial_csv_then_models_json(tmp_path):
    env = {"JOKEBOT_DATA_DIR": str(tmp_path)}
    first = jokebot_cli("import", str(SHARED_CSV), env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # 3 exact and 6 near-copies (a word or two changed) of earlier lines are duplicates
    assert "added 2936, duplicates 9, rejected 5" in first.stdout
    assert "duplicates 6: near-copies of a stored joke" in first.stdout
    second = jokebot_cli("import", str(SHARED_CSV), env=env, cwd=tmp_path)
    assert "added 0, duplicates 2945" in second.stdout
    listing = jokebot_cli("models", "--json", env=env, cwd=tmp_path)
    versions = json.loads(listing.stdout)
    assert versions[0]["version"] == 0 and versions[0]["active"] is True
    assert set(versions[0]) >= {"version", "path", "created_at", "active", "metrics"}


def test_import_text_file_one_joke_per_line(tmp_path):
    jokes = tmp_path / "mine.txt"
    jokes.write_text("First joke is here\n\nSecond joke is here\nfirst JOKE is here!\nok\n")
    result = jokebot_cli(
        "import", str(jokes), env={"JOKEBOT_DATA_DIR": str(tmp_path)}, cwd=tmp_path
    )
    assert "read 4, added 2, duplicates 1, rejected 1" in result.stdout
    assert "too short" in result.stdout


def test_import_missing_file_is_a_clear_error(tmp_path):
    result = jokebot_cli(
        "import", "nope.csv", env={"JOKEBOT_DATA_DIR": str(tmp_path)}, cwd=tmp_path
    )
    assert result.returncode == 2 and "cannot read nope.csv" in result.stderr


@pytest.mark.parametrize("given", ["none", "embedded path", "other model"])
def test_runner_converts_the_embedded_model_when_it_is_what_serves(
    monkeypatch, tmp_path, tiny_model, given
):
    """A fresh install's runner (started by `jokebot run` with `--model <embedded folder>`, or
    by a host with no `--model`) converts the embedded model first; another model never."""
    import model.embedded
    import model.runner
    from bot import cli

    data_dir = tmp_path / "data"
    monkeypatch.setenv("JOKEBOT_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MODEL_BASE", raising=False)
    converted, served = [], []
    monkeypatch.setattr(model.embedded, "ensure_embedded_model", converted.append)
    monkeypatch.setattr(model.runner, "run_runner", lambda config: served.append(config.model_ref))
    embedded = model.embedded.embedded_model_dir(data_dir)
    argv = {
        "none": [],
        "embedded path": ["--model", str(embedded)],
        "other model": ["--model", str(tiny_model)],
    }[given]
    assert cli.main(["runner", "--port", "0", *argv]) == 0
    expected = str(tiny_model) if given == "other model" else str(embedded)
    assert served == [expected]
    assert converted == ([] if given == "other model" else [data_dir])


def test_jokebot_models_shows_the_community_score(tmp_path, monkeypatch, capsys):
    from bot.cli import main

    data = tmp_path / "data"

    async def votes():
        db = await Database.open(data / "jokebot.sqlite3")
        store = CommunityStore(db, promote_at=100)
        check = check_joke("Why did the cat sit on the computer? To keep an eye on the mouse.")
        gid = await store.record_shown(
            check.text, check.key, prompt="", model_version=0, guild_id=1, channel_id=2
        )
        await store.vote(gid, 1, 1)
        await store.vote(gid, 2, -1)
        await db.close()

    asyncio.run(votes())
    monkeypatch.setenv("JOKEBOT_DATA_DIR", str(data))
    monkeypatch.setenv("MODEL_BASE", str(tmp_path / "base"))
    assert main(["models"]) == 0
    assert "community: 50% upvoted (≥ 9% at 95%), 2 votes" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    (v0,) = json.loads(capsys.readouterr().out)
    assert v0["community"]["votes"] == 2 and v0["community"]["share"] == 0.5
