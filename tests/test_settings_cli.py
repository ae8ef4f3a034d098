"""Settings: one clear line and exit code 2 for a bad value; the CLI without Discord."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"


def jokebot(*args, env=None, cwd=None, timeout=120):
    merged = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNNER_"))}
    merged.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        env=merged,
        cwd=cwd,
        timeout=timeout,
    )


def test_comma_separated_ids_and_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("ADMIN_ROLE_IDS", "12, 34")
    monkeypatch.setenv("JOKEBOT_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.admin_role_ids == [12, 34]
    assert settings.data_dir == tmp_path
    assert settings.base_model_ref.endswith("SmolLM2-135M-Instruct")


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEVICE", "gpu"), ("RETRAIN_SCHEDULE", "every tuesday"), ("RUNNER_PORT", "99999")],
)
def test_invalid_value_names_the_setting(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_cli_exits_2_with_one_line(tmp_path):
    result = jokebot("models", env={"DEVICE": "gpu", "JOKEBOT_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "DEVICE" in result.stderr and "Traceback" not in result.stderr


def test_run_without_token_exits_2(tmp_path):
    result = jokebot("run", env={"JOKEBOT_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2
    assert "DISCORD_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_import_tutorial_csv_then_models_json(tmp_path):
    env = {"JOKEBOT_DATA_DIR": str(tmp_path)}
    first = jokebot("import", str(SHARED_CSV), env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # 3 exact and 6 near-copies (a word or two changed) of earlier lines are duplicates
    assert "added 2936, duplicates 9, rejected 5" in first.stdout
    assert "duplicates 6: near-copies of a stored joke" in first.stdout
    second = jokebot("import", str(SHARED_CSV), env=env, cwd=tmp_path)
    assert "added 0, duplicates 2945" in second.stdout
    listing = jokebot("models", "--json", env=env, cwd=tmp_path)
    versions = json.loads(listing.stdout)
    assert versions[0]["version"] == 0 and versions[0]["active"] is True
    assert set(versions[0]) >= {"version", "path", "created_at", "active", "metrics"}


def test_import_text_file_one_joke_per_line(tmp_path):
    jokes = tmp_path / "mine.txt"
    jokes.write_text("First joke is here\n\nSecond joke is here\nfirst JOKE is here!\nok\n")
    result = jokebot("import", str(jokes), env={"JOKEBOT_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert "read 4, added 2, duplicates 1, rejected 1" in result.stdout
    assert "too short" in result.stdout


def test_import_missing_file_is_a_clear_error(tmp_path):
    result = jokebot("import", "nope.csv", env={"JOKEBOT_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 2 and "cannot read nope.csv" in result.stderr


def test_env_example_documents_every_setting_and_parses(monkeypatch):
    from bot.settings import Settings

    text = (ROOT / ".env.example").read_text()
    documented = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line[:40]}
    documented = {name for name in documented if not name.startswith("#")}
    expected = {
        (field.validation_alias.choices[0] if field.validation_alias else name.upper())
        for name, field in Settings.model_fields.items()
    }
    assert expected == documented
    settings = Settings(_env_file=str(ROOT / ".env.example"))
    assert settings.discord_token is None and settings.model_base is None
    assert settings.retrain_schedule == "0 */6 * * *"


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
