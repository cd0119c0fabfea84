"""A real ``dispatchd run`` keying the TETRA emulator's pty: SIGTERM unkeys, SIGKILL reconciles.

The emulator serves its pty from the test's loop, so every blocking wait on
the daemon's process runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from daemonproc import DaemonProcess
from radioharness import Plugged

from hardware.emulators import TetraRadioEmulator

# The daemon must run this tree's code, not whatever is installed in the venv.
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}

CONFIG = """\
[http]
port = 0
[ssh]
enabled = false
[log]
level = "info"

[[radio.gateways]]
name = "tetra1"
kind = "tetra"
device = "{device}"
retry_s = 0.2
hang_time_s = 0.0

[[radio.talkgroups]]
name = "fire"
gssi = "9001"
gateway = "tetra1"
"""


def admin_token(cwd: Path, config: Path) -> str:
    """An admin and an API token, made with the CLI as an administrator would."""
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "user", "add", "admin", "--role",
                          "admin", "-c", str(config)], input="admin-password\n", text=True,
                         capture_output=True, cwd=cwd, timeout=60, env=ENV)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "user", "token", "admin",
                          "--label", "test", "-c", str(config)], text=True,
                         capture_output=True, cwd=cwd, timeout=60, env=ENV)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


class Rig:
    """The emulator, the config and the daemons started."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.tetra = Plugged(TetraRadioEmulator(), tmp_path / "ttyTETRA0")
        self.tetra.plug()
        self.config = tmp_path / "dispatchd.toml"
        self.config.write_text(CONFIG.format(device=self.tetra.link))
        self.procs: list[DaemonProcess] = []

    async def start(self) -> DaemonProcess:
        proc = DaemonProcess(self.tmp_path, self.config, env=ENV)
        self.procs.append(proc)
        await asyncio.to_thread(proc.wait_ready, 60.0)
        return proc

    async def close(self) -> None:
        for proc in self.procs:
            await asyncio.to_thread(proc.kill)
        self.tetra.emulator.close()


async def press(url: str, token: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.post("/api/v1/radio/talkgroups/fire/ptt",
                              headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert r.json()["events"][0]["event"] == "granted"


async def test_sigterm_unkeys_the_radio(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        token = await asyncio.to_thread(admin_token, tmp_path, rig.config)
        proc = await rig.start()
        await rig.tetra.command("AT+CTGS=1,9001")
        await press(proc.url, token)
        await rig.tetra.command("ATD9001")
        assert rig.tetra.emulator.calls[1].talker == "self"  # type: ignore[attr-defined]
        proc.signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.proc.wait, 30)
        assert code == 0
        assert rig.tetra.emulator.commands[-1] == "AT+CUTXC=1"
        assert rig.tetra.emulator.calls[1].talker is None  # type: ignore[attr-defined]
        await asyncio.to_thread(proc.read_until, lambda e: False, 10.0)
        stopped = [i for i, line in enumerate(proc.lines) if line.get("msg") == "dispatchd stopped"]
        assert stopped, proc.raw[-10:]
    finally:
        await rig.close()


async def test_sigkill_leaves_it_keyed_and_the_next_start_reconciles(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        token = await asyncio.to_thread(admin_token, tmp_path, rig.config)
        first = await rig.start()
        await rig.tetra.command("AT+CTGS=1,9001")
        await press(first.url, token)
        await rig.tetra.command("ATD9001")
        os.kill(first.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(first.proc.wait, 30)
        radio = rig.tetra.emulator
        assert radio.calls[1].talker == "self"  # type: ignore[attr-defined]
        before = len(radio.commands)
        rig.tetra.drain()
        second = await rig.start()
        await rig.tetra.command("AT+CTGS=1,9001")
        assert radio.commands[before] == "ATH"  # the first thing the new process writes
        assert radio.calls == {}  # type: ignore[attr-defined]
        async with httpx.AsyncClient(base_url=second.url) as client:
            r = await client.get("/api/v1/radio/talkgroups",
                                 headers={"Authorization": f"Bearer {token}"})
            fire = r.json()[0]
            assert (fire["talker"], fire["keyed"], fire["gateway_state"]) == (None, False, "up")
        await press(second.url, token)
        await rig.tetra.command("ATD9001")
        second.signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.proc.wait, 30) == 0
        assert radio.calls[2].talker is None  # type: ignore[attr-defined]
    finally:
        await rig.close()
