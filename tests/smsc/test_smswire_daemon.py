"""The real daemon, the real SMSC simulator, SIGKILL mid-campaign: everyone exactly once.

The simulator (smpp.twisted3) *holds* every accepted message until the test
says ``flush`` (a busy SMSC whose queue has not drained), so a resend with
``replace_if_present`` after the restart replaces the copy it still holds,
and its own per-destination record, not the daemon's, is the proof: every
recipient got one message, nobody none.  Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from daemonproc import DaemonProcess
from smscpeer import PASSWORD, ROOT, SYSTEM_ID, SmscFactory, SmscSim

RECIPIENTS = 3000
KILL_AT = 1200  # accepted submits before the SIGKILL
# The daemon runs from this tree's code whatever the test's working directory.
ENV = {"PYTHONPATH": str(ROOT), "TEST_SMSC_PASSWORD": PASSWORD}


def write_config(path: Path, db_url: str, sim: SmscSim) -> Path:
    """A daemon configuration with one SMPP SMSC of two binds."""
    path.write_text(f"""
[http]
port = 0
[ssh]
enabled = false
[log]
level = "info"
[database]
url = "{db_url}"
auto_migrate = true
[sms]
sender_id = "12110"
[[sms.smpp]]
name = "sim"
host = "127.0.0.1"
port = {sim.port}
system_id = "{SYSTEM_ID}"
password_env = "TEST_SMSC_PASSWORD"
binds = 2
window = 20
receipt_ids = "hex-as-decimal"
""", encoding="utf-8")
    return path


def cli(cwd: Path, config: Path, *args: str, stdin: str = "") -> str:
    """Run ``dispatchd`` as an administrator would; return its stdout."""
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", *args, "-c", str(config)],
                         input=stdin, text=True, capture_output=True, cwd=cwd, timeout=120,
                         env={**os.environ, **ENV})
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def tokens(cwd: Path, config: Path) -> dict[str, dict[str, str]]:
    """A supervisor who creates the broadcast and a commander who approves it."""
    out = {}
    for name, role in (("sup", "supervisor"), ("cmd", "commander")):
        cli(cwd, config, "user", "add", name, "--role", role, stdin=f"{name}-password-1\n")
        token = cli(cwd, config, "user", "token", name, "--label", "test")
        out[name] = {"Authorization": f"Bearer {token}"}
    return out


def numbers() -> list[str]:
    """Recipients' numbers, E.164."""
    return [f"+86139{i:08d}" for i in range(RECIPIENTS)]


async def daemon(cwd: Path, config: Path) -> DaemonProcess:
    """Start a daemon process and wait for its HTTP port."""
    proc = await asyncio.to_thread(DaemonProcess, cwd, config, ENV)
    await asyncio.to_thread(proc.wait_ready, 60)
    return proc


def logged(proc: DaemonProcess, msg: str, timeout: float) -> dict[str, Any]:
    """One log line of the daemon: already read, or waited for (in a thread)."""
    for entry in proc.lines:
        if entry.get("msg") == msg:
            return entry
    line = proc.read_until(lambda e: e.get("msg") == msg, timeout)
    assert line is not None, f"daemon exited before logging {msg!r}: {proc.raw[-10:]}"
    return line


async def test_sigkill_mid_campaign_every_recipient_exactly_once(
        db_url: str, tmp_path: Path, smsc_factory: SmscFactory) -> None:
    sim = await smsc_factory("--receipts", "--hold", "-1", "--throttle", "400")
    config = write_config(tmp_path / "d.toml", db_url, sim)
    headers = await asyncio.to_thread(tokens, tmp_path, config)
    first = await daemon(tmp_path, config)
    procs = [first]
    try:
        await sim.command(f"notify-at {KILL_AT}")
        async with httpx.AsyncClient(base_url=first.url, timeout=60) as c:
            body = {"title": "东城区洪水 紧急撤离", "recipients": [
                {"msisdn": n, "text": f"【应急】东城区洪水，请立即撤离至高处。编号{i}"}
                for i, n in enumerate(numbers())]}
            r = await c.post("/api/v1/campaigns", json=body, headers=headers["sup"])
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            r = await c.post(f"/api/v1/campaigns/{cid}/approve", headers=headers["cmd"])
            assert r.status_code == 200, r.text
        await sim.wait_for(lambda e: e.get("event") == "reached", timeout=120)
        first.proc.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(first.proc.wait, 30) == -signal.SIGKILL
        before = await sim.stats()
        assert 0 < before["accepted"] < RECIPIENTS, "the kill landed mid-campaign"

        second = await daemon(tmp_path, config)
        procs.append(second)
        recovered = await asyncio.to_thread(
            logged, second, "campaign recipients in flight at the last stop will be resent "
            "with replace_if_present", 60)
        assert recovered["recipients"] > 0
        done = await asyncio.to_thread(logged, second, "campaign completed", 300)
        assert done["campaign"] == cid

        seen = len(sim.events)
        await sim.command("flush")
        await sim.wait_for(lambda e: e.get("event") == "receipts_idle", start=seen,
                           timeout=120)
        stats = await sim.stats()
        dump = tmp_path / "handsets.json"
        await sim.command(f"dump {dump}")
        per_number = json.loads(dump.read_text())
        # The simulator's own record: each number got exactly one message.
        assert set(per_number) == {n.lstrip("+") for n in numbers()}, "no one skipped"
        assert set(per_number.values()) == {1}, "no one texted twice"
        assert stats["per_dest"] == {"1": RECIPIENTS}
        assert stats["replaced"] > 0, "the in-flight batch was resent and replaced"
        assert stats.get("receipt_failed", 0) == 0

        async with httpx.AsyncClient(base_url=second.url, timeout=60) as c:
            r = await c.get(f"/api/v1/campaigns/{cid}", headers=headers["sup"])
        assert r.json()["status"] == "completed"
        assert r.json()["counts"] == {"delivered": RECIPIENTS}, "every receipt was matched"
        code, _ = await asyncio.to_thread(second.stop)
        assert code == 0
    finally:
        for p in procs:
            await asyncio.to_thread(p.kill)
    assert os.path.exists(config)
