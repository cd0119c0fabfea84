"""A real dispatchd process with SIP enabled, and the peers the B2BUA tests drive."""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemonproc import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
SIPP_DIR = Path(__file__).parent / "sipp"
DOMAIN = "dispatch.test"
PASSWORD = "secret-pass-1"

BASE_TELEPHONY = """
[routing]
fallback = "12345"
[[hotlines]]
number = "110"
queue = "police"
[[hotlines]]
number = "119"
queue = "fire"
[[hotlines]]
number = "12345"
queue = "service"
[[queues]]
name = "police"
ring_timeout = 5
announce = false  # its callers hear the hold chime (test_b2bua_announce covers announcements)
[[queues]]
name = "fire"
[[queues]]
name = "service"
"""


def need(binary: str) -> str:
    """Path of a peer binary, or fail saying who installs it (never skip)."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed; scripts/test installs it "
                    "(apt-get install sip-tester sipvicious baresip)")
    return path


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port that was free a moment ago (for peers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env() -> dict[str, str]:
    """Run the worktree's code in the child, whatever the venv points at."""
    return {"PYTHONPATH": str(ROOT), "DISPATCHD_SIP_SECRET": "test-secret-0123456789"}


async def add_accounts(url: str, accounts: dict[str, str]) -> None:
    """Create SIP accounts straight in a (migrated) database, as the CLI would."""
    from dispatch.sip_store import SqlCredentialStore
    from dispatch.storage import Database

    db = Database(url)
    try:
        await db.upgrade()
        store = SqlCredentialStore(db, time.time)
        for user, password in accounts.items():
            await store.add(user, DOMAIN, password)
    finally:
        await db.close()


class SipDaemon:
    """``dispatchd run`` with ``[sip]`` on, its SIP port and its SQLite database."""

    def __init__(self, tmp: Path, *, agents: dict[str, list[str]],
                 trunks: str = "", extra_sip: str = "", telephony: str = BASE_TELEPHONY,
                 accounts: dict[str, str] | None = None, registrar: str = "",
                 media: str = "", ssh: bool = False, listen: str = "",
                 database: str = "") -> None:
        """Write the config, add the SIP accounts, start the daemon (``database``: a URL,
        else SQLite under ``tmp/var``; ``listen``: more listeners after the UDP one)."""
        self.tmp = tmp
        self.database = database
        self.db_path = tmp / "var" / "dispatchd.db"
        agent_text = "".join(
            f'[[agents]]\nid = "{a}"\nqueues = {qs!r}\n'.replace("'", '"')
            for a, qs in agents.items())
        self.config = tmp / "dispatchd.toml"
        self.config.write_text(
            f'[node]\ndata_dir = "{tmp / "var"}"\n[http]\nport = 0\n'
            + (f'[database]\nurl = "{database}"\nauto_migrate = true\n' if database else "")
            + f'[ssh]\nenabled = {"true" if ssh else "false"}\nport = 0\n'
            f'[log]\nlevel = "info"\n'
            f'[sip]\nenabled = true\ndomain = "{DOMAIN}"\nagent_login_on_register = true\n'
            f'listen = [{{transport = "udp", host = "127.0.0.1", port = 0}}{listen}]\n'
            f'{extra_sip or "session_expires = 90"}\n'
            f'[sip.registrar]\nrate = 1000.0\nburst = 1000.0\n{registrar}\n'
            f'{telephony}\n{agent_text}\n{trunks}\n{media}\n')
        wanted = {a: PASSWORD for a in agents} if accounts is None else accounts
        if len(wanted) > 5:  # many call takers: one process, not a CLI run each
            url = database or f"sqlite:///{self.db_path}"
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, add_accounts(url, wanted)).result()
        else:
            for user, password in wanted.items():
                self.cli("sip", "account", "add", user, stdin=password + "\n")
        self.proc = DaemonProcess(ROOT, self.config, env=env())
        self.proc.wait_ready()
        line = next(x for x in self.proc.lines if x.get("msg") == "sip listening")
        self.port = int(line["port"])
        self.token: str | None = None

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``dispatchd ARGS -c CONFIG`` to completion."""
        done = subprocess.run(
            [sys.executable, "-m", "dispatch.cli", *args, "-c", str(self.config)],
            input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60,
            env={**os.environ, **env()})
        return done

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Query the daemon's SQLite database (WAL: readers never block it)."""
        with sqlite3.connect(self.db_path) as db:
            return list(db.execute(sql, params))

    def api(self) -> httpx.Client:
        """An HTTP client logged in as a supervisor."""
        if self.token is None:
            pw = self.tmp / "pw"
            pw.write_text("supervisor-password-1\n")
            done = self.cli("user", "add", "sup", "--role", "supervisor",
                            "--password-file", str(pw))
            assert done.returncode == 0, done.stderr
            reply = httpx.post(f"{self.proc.url}/api/v1/auth/login",
                               json={"username": "sup", "password": "supervisor-password-1"})
            assert reply.status_code == 200, reply.text
            self.token = reply.json()["token"]
        return httpx.Client(base_url=self.proc.url,
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def stop(self) -> None:
        """SIGTERM, then make sure it is gone."""
        if self.proc.proc.poll() is None:
            self.proc.stop()
        self.proc.kill()


async def run_peer(*argv: str, timeout: float = 60.0, cwd: Path | None = None) -> tuple[int, str]:
    """Run a peer to completion (bounded in time); return (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL, cwd=str(cwd) if cwd else None)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -9, out.decode("utf-8", "replace")
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


class SippServer:
    """A SIPp UAS scenario in the background (an agent's phone), stopped by its pid."""

    def __init__(self, scenario: str, port: int, tmp: Path, *extra: str) -> None:
        self.tmp = tmp
        self.proc = subprocess.Popen(
            [need("sipp"), "-sf", str(SIPP_DIR / scenario), "-i", "127.0.0.1", "-p", str(port),
             "-mp", str(free_port()), "-nostdin", "-trace_err", "-trace_stat",
             "-stf", str(tmp / f"uas-{port}.csv"), "-fd", "1", *extra],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = port

    def stop(self) -> None:
        """Stop this SIPp (by its own pid)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def sipp_stats(path: Path) -> dict[str, int]:
    """The counters on the last row of a SIPp ``-stf`` file."""
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    return {k: int(last[header.index(k)])
            for k in ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)")}


async def register_agents(sip: SipDaemon, tmp: Path, agents: dict[str, int],
                          password: str = PASSWORD) -> tuple[int, str]:
    """Register each agent (digest) with its Contact at ``agents[name]`` (the UAS port)."""
    csv_path = tmp / "agents.csv"
    csv_path.write_text("SEQUENTIAL\n" + "".join(
        f"{a};[authentication username={a} password={password}];{port}\n"
        for a, port in agents.items()))
    return await run_peer(
        need("sipp"), f"127.0.0.1:{sip.port}", "-sf", str(SIPP_DIR / "register_agent.xml"),
        "-inf", str(csv_path), "-i", "127.0.0.1", "-p", str(free_port()),
        "-m", str(len(agents)), "-nostdin", "-trace_err", "-recv_timeout", "5000",
        timeout=60, cwd=tmp)


def errors(tmp: Path) -> str:
    """Every SIPp error log in ``tmp`` (for assertion messages)."""
    return "".join(p.read_text(errors="replace")[-3000:] for p in tmp.glob("*errors.log"))
