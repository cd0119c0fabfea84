#!/usr/bin/env python3
"""AT round trips over a pty: ``AT`` -> ``OK`` through the whole stack.

The GSM modem emulator serves a pty; an :class:`~hardware.atport.AtDevice`
opens the slave through Twisted's ``SerialPort`` on the asyncio reactor (as
the daemon does) and sends ``AT`` one at a time.  Both ends share one process
and one loop, so the figure includes the emulator's work too.  Also prints the
sans-I/O engine's own rate with no I/O, for comparison.

    python bench/at_engine.py [--count 2000]

Last line: ``at_roundtrip_per_s=N p95_ms=M``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hardware.at import AtEngine  # noqa: E402
from hardware.atport import AtDevice  # noqa: E402
from hardware.emulators import GsmModemEmulator  # noqa: E402


def engine_only(count: int) -> float:
    """Round trips per second of the core alone (no I/O)."""
    engine = AtEngine()
    started = time.perf_counter()
    for i in range(count):
        engine.send("AT", float(i))
        engine.data_to_send()
        engine.receive_data(b"\r\nOK\r\n", float(i))
    return count / (time.perf_counter() - started)


async def over_pty(count: int, reactor: Any) -> list[float]:
    """Latency in seconds of ``count`` sequential ``AT`` round trips."""
    modem = GsmModemEmulator(echo=False)
    device = AtDevice("bench", modem.open(), reactor, baudrate=115200)
    await device.start()
    latencies: list[float] = []
    try:
        for _ in range(50):  # warm up
            await device.command("AT", timeout=5)
        for _ in range(count):
            started = time.perf_counter()
            await device.command("AT", timeout=5)
            latencies.append(time.perf_counter() - started)
    finally:
        await device.stop()
        modem.close()
    return latencies


async def run(count: int) -> list[float]:
    """Install Twisted's asyncio reactor on this loop and measure."""
    from twisted.internet import asyncioreactor

    asyncioreactor.install(asyncio.get_running_loop())  # type: ignore[no-untyped-call]
    from twisted.internet import reactor

    return await over_pty(count, reactor)


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    print(f"engine alone: {engine_only(50_000):.0f} round trips/s")
    latencies = asyncio.run(run(args.count))
    total = sum(latencies)
    p95 = statistics.quantiles(latencies, n=100)[94]
    median_ms = statistics.median(latencies) * 1000
    print(f"over pty: {args.count} round trips in {total:.2f} s, "
          f"median {median_ms:.3f} ms, max {max(latencies) * 1000:.3f} ms")
    print(f"at_roundtrip_per_s={args.count / total:.0f} p95_ms={p95 * 1000:.3f}")


if __name__ == "__main__":
    main()
