"""Settings: every one documented in .env.example, and one clear line for a bad value."""

import pytest

from bot.settings import SettingsError, load_settings
from tests.helpers import ROOT


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
