"""Driving the SMSC simulator (tests/peers/smsc/smsc_sim.py) from a test: :class:`SmscSim`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "smsc-sim"
SYSTEM_ID, PASSWORD = "dispatchd", "s3cret"
WAIT = 20.0  # upper bound for any one expected event; tests never sleep


class SmscSim:
    """A running simulator: send it commands, await what it reports."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.append(json.loads(line))
            self._changed.set()

    async def command(self, line: str) -> None:
        """Send one control line; returns once the simulator confirmed it."""
        assert self.proc.stdin is not None
        verb = line.split(" ", 1)[0]
        seen = len(self.events)
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        await self.wait_for(lambda e: e.get("event") == "ok" and e.get("command") == verb,
                            start=seen)

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], *, start: int = 0,
                       count: int = 1, timeout: float = WAIT) -> list[dict[str, Any]]:
        """The first ``count`` events from index ``start`` on that ``match``."""
        async def scan() -> list[dict[str, Any]]:
            while True:
                found = [e for e in self.events[start:] if match(e)]
                if len(found) >= count:
                    return found[:count]
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(scan(), timeout)

    async def stats(self) -> dict[str, Any]:
        """The simulator's counters (submits seen, accepted, throttled, duplicates, ...)."""
        seen = len(self.events)
        await self.command("stats")
        [stats] = await self.wait_for(lambda e: e.get("event") == "stats", start=seen)
        return stats

    async def close(self) -> None:
        """Stop the simulator."""
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


SmscFactory = Callable[..., Awaitable[SmscSim]]
