"""A private PostgreSQL server for the tests, on loopback, in a temporary directory.

If ``DISPATCHD_TEST_PG_URL`` is set, that server is used instead.  Otherwise
the Debian PostgreSQL binaries (installed by ``scripts/test``) start a fresh
cluster; as root, the server runs as the ``postgres`` system user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

ENV_URL = "DISPATCHD_TEST_PG_URL"


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl live (newest Debian version first)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if Path(directory, "initdb").exists():
            return Path(directory)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running private server; :meth:`stop` removes it."""

    bindir: Path
    root: Path
    port: int
    as_user: str | None

    @property
    def url(self) -> str:
        """The server's URL (trust authentication on loopback)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *args: str) -> list[str]:
        if self.as_user:
            return ["runuser", "-u", self.as_user, "--", *args]
        return list(args)

    def run(self, *args: str) -> None:
        """Run a PostgreSQL tool as the server's user."""
        subprocess.run(self._cmd(*args), check=True, capture_output=True, timeout=60)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        self.run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server and delete its files."""
        subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"),
                      "-m", "immediate", "stop"),
            capture_output=True, timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> PgServer:
    """Initialise and start a cluster listening on 127.0.0.1 only."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: run scripts/test, which installs it")
    root = Path(tempfile.mkdtemp(prefix="dispatchd-pg-"))
    as_user = None
    if os.geteuid() == 0:
        as_user = "postgres"
        entry = pwd.getpwnam(as_user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PgServer(bindir, root, _free_port(), as_user)
    server.run(str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
               "--auth=trust", "--encoding=UTF8", "--no-sync")
    options = (f"-c listen_addresses=127.0.0.1 -c port={server.port} "
               f"-c unix_socket_directories={root} -c fsync=off -c max_connections=200")
    server.run(str(bindir / "pg_ctl"), "-D", str(root / "data"), "-o", options,
               "-l", str(root / "log"), "-w", "-t", "60", "start")
    return server


def fresh_pg_url(server: PgServer | str) -> str:
    """A new, empty database on the session's server (or the given URL as is)."""
    if isinstance(server, str):
        return server
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")
