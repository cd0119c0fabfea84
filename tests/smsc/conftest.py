"""The SMSC simulator (tests/peers/smsc/smsc_sim.py, smpp.twisted3) as a pytest fixture.

``scripts/smsc-sim`` creates its venv on first use; if that fails the tests
fail with the script's message: a missing peer is a broken test machine, not
a reason to skip.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from smscpeer import PASSWORD, ROOT, SCRIPT, SYSTEM_ID, WAIT, SmscFactory, SmscSim


@pytest.fixture(scope="session")
def smsc_venv() -> Path:
    """Create the simulator's venv (once); fail clearly if it cannot be created."""
    result = subprocess.run([str(SCRIPT), "--setup"], capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(f"cannot set up the SMSC simulator ({SCRIPT} --setup):\n{result.stderr}",
                    pytrace=False)
    return ROOT / ".peers" / "smsc-venv"



@pytest_asyncio.fixture
async def smsc_factory(smsc_venv: Path) -> AsyncIterator[SmscFactory]:
    """Start simulators with extra command-line flags; all are stopped afterwards."""
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
        first = json.loads(line)
        sim = SmscSim(proc, int(first["port"]))
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        await sim.close()


@pytest_asyncio.fixture
async def smsc(smsc_factory: SmscFactory) -> SmscSim:
    """One simulator with delivery receipts on."""
    return await smsc_factory("--receipts")
