"""A bad DATABASE_URL stops `jokebot run` at start with one line naming the setting, and never
prints the password: a malformed URL, and a database that refuses the connection."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, TOKEN, process_env


def run_with(tmp_path, tiny_model, url: str) -> subprocess.CompletedProcess:
    env = process_env(tmp_path / "data", tiny_model, DISCORD_TOKEN=TOKEN, DATABASE_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_a_malformed_database_url_is_one_line(tmp_path, tiny_model):
    done = run_with(tmp_path, tiny_model, "mysql://jokebot:hunter2@db/jokebot")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("jokebot: DATABASE_URL: ") and "postgresql://" in line
    assert "hunter2" not in done.stderr


def test_a_database_that_refuses_is_one_line(tmp_path, tiny_model, postgres_url):
    wrong = postgres_url.replace(":jokebot-test@", ":hunter2@")
    done = run_with(tmp_path, tiny_model, wrong)
    assert done.returncode == 1
    (line,) = [x for x in done.stderr.strip().splitlines() if x.startswith("jokebot:")]
    assert line.startswith("jokebot: DATABASE_URL: cannot use the PostgreSQL database at ")
    assert "password authentication failed" in line
    assert "hunter2" not in done.stderr


def test_backup_and_restore_point_a_postgresql_host_to_its_own_tools(tmp_path):
    env = {"JOKEBOT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin",
           "DATABASE_URL": "postgresql://jokebot:hunter2@127.0.0.1:1/jokebot"}  # fmt: skip
    for args in (["backup"], ["restore", str(tmp_path / "x.sqlite3")]):
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli", *args], env=env, cwd=ROOT, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        assert "pg_dump" in done.stderr and "hunter2" not in done.stderr
