"""``dispatchd run --simulate``: a real daemon process calls its emulated RoIP box (a real SIP
endpoint on 127.0.0.1) and opens its emulated TETRA terminal and satphone (ptys), shows all
three up in /health, keys the TETRA group and dials the satphone, and hangs up on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
from daemonproc import DaemonProcess
from test_radio_daemon_process import admin_token

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
                gateways = radio.get("gateways", {})
                gateway = gateways.get("sim-roip", {})
                states = [gateways.get(n, {}).get("state") for n in ("sim-roip", "sim-tetra",
                                                                      "sim-sat")]
                if states == ["up"] * 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert states == ["up"] * 3, health  # the RoIP box, the TETRA terminal, the satphone
        assert gateway["kind"] == "roip" and gateway["call"] is True
        assert gateway["device"].startswith("sip:radio@127.0.0.1:")

        # A newcomer keys the simulated TETRA group and calls the simulated satphone.
        token = await asyncio.to_thread(admin_token, tmp_path, config)
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=proc.url, headers=auth, timeout=30) as client:
            r = await client.post("/api/v1/radio/talkgroups/sim-tetra/ptt")
            assert r.status_code == 200, r.text
            assert r.json()["events"][0]["event"] == "granted"
            r = await client.post("/api/v1/satphones/sim-sat/dial",
                                  json={"number": "+8613800138000"})
            assert r.status_code == 200, r.text
            r = await client.post("/api/v1/satphones/sim-sat/hangup")
            assert r.status_code == 200, r.text
        code, _ = await asyncio.to_thread(proc.stop, 20.0)
        assert code == 0
    finally:
        await asyncio.to_thread(proc.kill)
