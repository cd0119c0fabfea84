"""Fixtures of the loopback cluster tests: a cluster factory and the SMSC simulator."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pgserver
import pytest
import pytest_asyncio
from clusterpeer import Cluster, free_port, load_script, need
from smscpeer import PASSWORD, SCRIPT, SYSTEM_ID, WAIT, SmscSim


@pytest_asyncio.fixture
async def cluster_factory(pg_server: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """Start a two-node cluster behind Kamailio (``agents`` call takers, ``extra`` TOML,
    ``ssh`` consoles)."""
    need("kamailio", "kamailio kamailio-postgres-modules")
    need("sipp", "sip-tester")
    script = load_script()
    made: list[Cluster] = []

    async def start(agents: list[str], extra: str = "", ssh: bool = False) -> Cluster:
        """``extra`` may name the node as ``{node}``; ``ssh`` gives each node a console."""
        url = pgserver.fresh_pg_url(pg_server)
        layout = script.Layout(tmp_path / "cluster", pg_port=0, kam_port=free_port(),
                               nodes=[("n1", free_port(), free_port(socket.SOCK_STREAM)),
                                      ("n2", free_port(), free_port(socket.SOCK_STREAM))],
                               agents=agents, heartbeat_s=0.5, dead_after_s=3.0, extra=extra,
                               media_base=40000 + 2000 * (free_port() % 10))
        layout.database = url
        if ssh:
            layout.ssh_ports = {n: free_port(socket.SOCK_STREAM) for n in ("n1", "n2")}
        await script.prepare_db(layout, "agent-password-1")
        cluster = Cluster(script, layout)
        made.append(cluster)
        for name in ("n1", "n2"):
            await asyncio.to_thread(cluster.start_node, name)
        cluster.kamailio = await asyncio.to_thread(script.start_kamailio, layout)
        return cluster

    yield start
    for cluster in made:
        if cluster.kamailio is not None:
            cluster.kamailio.terminate()
            await asyncio.to_thread(cluster.kamailio.wait, 20)
        for proc in cluster.nodes.values():
            await asyncio.to_thread(proc.kill)


@pytest.fixture(scope="session")
def smsc_venv_ready() -> None:
    """The SMSC simulator's venv (created once); fail clearly if it cannot be."""
    result = subprocess.run([str(SCRIPT), "--setup"], capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(f"cannot set up the SMSC simulator ({SCRIPT} --setup):\n{result.stderr}",
                    pytrace=False)


@pytest_asyncio.fixture
async def smsc_sim(smsc_venv_ready: None) -> AsyncIterator[Callable[..., Any]]:
    """Start the SMSC simulator with flags; stopped afterwards."""
    sims: list[SmscSim] = []

    async def start(*flags: str) -> SmscSim:
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPT), "--system-id", SYSTEM_ID, "--password", PASSWORD, *flags,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        if not line:
            pytest.fail("the SMSC simulator exited before listening", pytrace=False)
        sim = SmscSim(proc, int(json.loads(line)["port"]))
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        await sim.close()
