"""Helpers for the loopback cluster tests: the layout of ``scripts/cluster``, ports, nodes.

The layout and the node configuration come from ``scripts/cluster`` (the same
file a newcomer runs), loaded as a module; ports are free ones, the database
a fresh one on the session's private PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.machinery
import importlib.util
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from daemonproc import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "smsc"))
from smscpeer import PASSWORD  # noqa: E402

SIPP_DIR = ROOT / "tests" / "b2bua" / "sipp"
ENV = {"PYTHONPATH": str(ROOT), "TEST_SMSC_PASSWORD": PASSWORD}


async def until(check: Any, what: Any, timeout: float = 90.0) -> Any:
    """Re-check ``check()`` (sync or async) every 0.2 s until it returns something true.

    ``what`` names it in the failure (a callable: called then, to show the state)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}"
                                 f"; last: {result!r}")
        await asyncio.sleep(0.2)


async def approved_campaign(url: str, sup: dict[str, str], cmd: dict[str, str],
                            prefix: str, recipients: int) -> str:
    """Create an evacuation campaign through ``url`` (a supervisor) to ``recipients``
    numbers ``+86<prefix><8 digits>`` and approve it (a commander); its id."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as h:
        body = {"title": "台风 紧急转移", "recipients": [
            {"msisdn": f"+86{prefix}{i:08d}", "text": f"【应急】台风来袭，请立即转移。编号{i}"}
            for i in range(recipients)]}
        r = await h.post("/api/v1/campaigns", json=body, headers=sup)
        assert r.status_code == 201, r.text
        cid = str(r.json()["id"])
        r = await h.post(f"/api/v1/campaigns/{cid}/approve", headers=cmd)
        assert r.status_code == 200, r.text
    return cid


def load_script() -> ModuleType:
    """``scripts/cluster`` as a module."""
    loader = importlib.machinery.SourceFileLoader("cluster_script", str(ROOT / "scripts" /
                                                                          "cluster"))
    spec = importlib.util.spec_from_loader("cluster_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cluster_script"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free a moment ago (UDP for SIP, TCP for HTTP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(tool: str, package: str) -> str:
    """The path of ``tool``; fail (never skip) with the install hint."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists()
                                  else None)
    if path is None:
        pytest.fail(f"{tool} is not installed: apt-get install -y {package} "
                    "(scripts/test installs it)", pytrace=False)
    return path


@dataclass
class Cluster:
    """A running loopback cluster."""

    script: ModuleType
    layout: Any
    nodes: dict[str, DaemonProcess] = field(default_factory=dict)
    kamailio: subprocess.Popen[bytes] | None = None

    def start_node(self, name: str) -> DaemonProcess:
        """Start node ``name`` as a real ``dispatchd run`` process; wait until it listens."""
        _, sip, http = next(n for n in self.layout.nodes if n[0] == name)
        config = self.script.node_config(self.layout, name, sip, http)
        proc = DaemonProcess(ROOT, config, ENV)
        self.nodes[name] = proc
        proc.wait_ready(90)
        if not any(e.get("msg") == "dispatchd ready" for e in proc.lines):
            proc.read_until(lambda e: e.get("msg") == "dispatchd ready", 60)
        return proc

    async def taken_over(self, survivor: str, dead: str) -> None:
        """Wait until ``survivor`` logs that it declared ``dead`` dead and took its work over."""
        line = await asyncio.to_thread(
            self.nodes[survivor].read_until,
            lambda e: e.get("msg") == "cluster node is dead; its work was taken over", 60)
        assert line is not None and line["dead_node"] == dead, line

    def drain(self, name: str) -> None:
        """Keep reading a node's log in a thread, so a full pipe never stalls it.

        After this, read the node's lines from ``lines`` only (not ``read_until``).
        """
        proc = self.nodes[name]

        def read() -> None:
            with contextlib.suppress(Exception):
                proc.read_until(lambda _e: False, 3600)

        threading.Thread(target=read, daemon=True).start()

    def url(self, name: str) -> str:
        """A node's HTTP base URL."""
        return f"http://127.0.0.1:{next(h for n, _, h in self.layout.nodes if n == name)}"

    @property
    def sip_port(self) -> int:
        """Kamailio's port: where phones and trunks send everything."""
        return int(self.layout.kam_port)

    def cli(self, *args: str, stdin: str = "") -> str:
        """Run ``dispatchd`` against node n1's configuration (the database is shared)."""
        config = self.layout.run_dir / "n1" / "dispatchd.toml"
        run = subprocess.run([sys.executable, "-m", "dispatch.cli", *args, "-c", str(config)],
                             input=stdin, text=True, capture_output=True, cwd=ROOT,
                             timeout=120, env={**__import__("os").environ, **ENV})
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    def token(self, name: str, role: str) -> dict[str, str]:
        """A user of ``role`` and a bearer header for them (valid on every node)."""
        self.cli("user", "add", name, "--role", role, stdin=f"{name}-password-1\n")
        return {"Authorization": "Bearer " + self.cli("user", "token", name, "--label", "t")}


