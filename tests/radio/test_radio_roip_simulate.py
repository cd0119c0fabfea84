"""``dispatchd run --simulate``: a real daemon process calls its emulated RoIP box (a real SIP
endpoint on 127.0.0.1), shows the talkgroup up in /health, and hangs up on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
from daemonproc import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


async def test_simulate_adds_a_roip_talkgroup_that_is_called(tmp_path: Path) -> None:
    config = tmp_path / "dispatchd.toml"
    config.write_text('[http]\nport = 0\n[ssh]\nenabled = false\n[log]\nlevel = "info"\n'
                      f'[node]\ndata_dir = "{tmp_path / "var"}"\n'
                      f'[database]\nurl = "sqlite:///{tmp_path / "d.db"}"\n')
    proc = DaemonProcess(tmp_path, config, env=ENV, extra=("--simulate",))
    try:
        await asyncio.to_thread(proc.wait_ready, 60.0)
        async with httpx.AsyncClient(base_url=proc.url) as client:
            deadline = time.monotonic() + 30
            while True:
                health = (await client.get("/health")).json()
                radio = health.get("services", {}).get("radio", {}).get("detail", {})
                gateway = radio.get("gateways", {}).get("sim-roip", {})
                if gateway.get("state") == "up" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert gateway.get("state") == "up", health
        assert gateway["kind"] == "roip" and gateway["call"] is True
        assert gateway["device"].startswith("sip:radio@127.0.0.1:")
        code, _ = await asyncio.to_thread(proc.stop, 20.0)
        assert code == 0
    finally:
        await asyncio.to_thread(proc.kill)
