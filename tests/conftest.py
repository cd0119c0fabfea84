"""Shared fixtures: the Twisted reactor on the test loop, databases, daemons.

Every async test runs on one session-wide asyncio loop with Twisted's asyncio
reactor installed on it, as in the daemon.  Storage tests run twice, on
SQLite and on a private PostgreSQL server (see ``pgserver.py``); a machine
without PostgreSQL fails them rather than skipping, unless
``DISPATCHD_TEST_SKIP_PG=1`` says so explicitly.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pgserver
import pytest
import pytest_asyncio


@pytest_asyncio.fixture(scope="session", autouse=True, loop_scope="session")
async def reactor() -> Any:
    """Twisted's asyncio reactor on the session loop (installed once)."""
    from dispatch.daemon import install_reactor

    return install_reactor(asyncio.get_running_loop())


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PgServer | str]:
    """A PostgreSQL server for the session (or the URL given in the environment)."""
    if os.environ.get(pgserver.ENV_URL):
        yield os.environ[pgserver.ENV_URL]
        return
    if os.environ.get("DISPATCHD_TEST_SKIP_PG") == "1":
        pytest.skip("DISPATCHD_TEST_SKIP_PG=1: PostgreSQL tests skipped on request")
    server = pgserver.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dispatchd.db'}"
    return pgserver.fresh_pg_url(request.getfixturevalue("pg_server"))


@pytest_asyncio.fixture(loop_scope="session")
async def database(db_url: str) -> AsyncIterator[Any]:
    """A migrated :class:`~dispatch.storage.Database` on each backend."""
    from dispatch.storage import Database

    db = Database(db_url)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


@pytest_asyncio.fixture(loop_scope="session")
async def daemon(db_url: str, tmp_path: Path, reactor: Any) -> AsyncIterator[Any]:
    """A started in-process daemon on port 0, on each database backend."""
    from dispatch.config import parse_settings
    from dispatch.daemon import Daemon

    settings = parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": db_url, "auto_migrate": True},
        "http": {"port": 0},
        "ssh": {"port": 0},
        "auth": {"max_failures": 3},
        "console": {"districts_geojson": str(Path(__file__).resolve().parent.parent / "conf"
                                             / "sms" / "districts.geojson")},
    }, "test")
    d = Daemon(settings, reactor=reactor)
    await d.start()
    assert d.http.bound is not None
    d.base_url = f"http://127.0.0.1:{d.http.bound[1]}"  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        await d.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many tests ran on each database backend, so a skipped one is visible."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            test = getattr(report, "nodeid", "").rsplit("::", 1)[-1]
            for backend in ("sqlite", "postgresql"):
                if backend in test:
                    per = counts.setdefault(backend, {})
                    if report.when == "call" or outcome in ("error", "skipped"):
                        per[outcome] = per.get(outcome, 0) + 1
    if counts:
        terminalreporter.section("database backends")
        for backend, per in sorted(counts.items()):
            summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(per.items()))
            terminalreporter.write_line(f"{backend}: {summary}")
