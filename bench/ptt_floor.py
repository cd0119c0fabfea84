#!/usr/bin/env python3
"""PTT access time: a dispatcher's press -> floor grant -> keying command at the radio.

A :class:`~radio.tetra.TetraGateway` opens the TETRA PEI emulator's pty
through Twisted's ``SerialPort`` on the asyncio reactor (as the daemon does).
The first press sets up the group call (``ATD``); each measured press then
runs :meth:`TetraGateway.request_ptt` (the floor core grants and emits
``Key``), the worker writes ``AT+CTXD=<cc>,0``, and the clock stops when the
emulator has read that line from the pty.  Each press is released and the
``+CDTXC`` awaited before the next.  Emulator and gateway share one process
and one loop, so the figure includes the emulator's work too.  Also prints
the floor core's own rate with no I/O.

    python bench/ptt_floor.py [--count 1000]

Last line: ``ptt_access_p95_ms=X``
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
from hardware.emulators import TetraRadioEmulator  # noqa: E402
from radio.floor import FloorControl, FloorSettings, Priority  # noqa: E402
from radio.tetra import RadioEvent, TalkerChanged, TetraGateway, TetraSettings  # noqa: E402


def core_only(count: int) -> float:
    """Press/release pairs per second through the floor core alone."""
    floor = FloorControl({"9001": "gw"}, FloorSettings(hang_time_s=0.0))
    started = time.perf_counter()
    for i in range(count):
        floor.request("9001", "disp1", Priority.DISPATCHER, float(i))
        floor.release("9001", "disp1", float(i))
    return count / (time.perf_counter() - started)


async def over_pty(count: int, reactor: Any) -> list[float]:
    """Seconds from ``request_ptt`` to the emulator reading the key command, per press."""
    loop = asyncio.get_running_loop()
    radio = TetraRadioEmulator()
    waiting: dict[str, asyncio.Future[None]] = {}
    events: asyncio.Queue[RadioEvent] = asyncio.Queue()

    def seen(command: str) -> None:
        future = waiting.pop(command, None)
        if future is not None and not future.done():
            future.set_result(None)

    def expect(command: str) -> asyncio.Future[None]:
        waiting[command] = loop.create_future()
        return waiting[command]

    async def released() -> None:
        while True:
            event = await asyncio.wait_for(events.get(), 5)
            if isinstance(event, TalkerChanged) and event.talker is None:
                return

    radio.on_command = seen
    gateway = TetraGateway(TetraSettings("bench", radio.open(), ("9001",),
                                         floor=FloorSettings(hang_time_s=0.0)),
                           reactor, events.put_nowait)
    await gateway.start()
    latencies: list[float] = []
    try:
        dialled = expect("ATD9001")
        gateway.request_ptt("9001", "disp1", Priority.DISPATCHER)
        await asyncio.wait_for(dialled, 5)
        for i in range(count + 50):
            gateway.release_ptt("9001", "disp1")
            await released()
            keyed = expect("AT+CTXD=1,0")
            started = time.perf_counter()
            gateway.request_ptt("9001", "disp1", Priority.DISPATCHER)
            await asyncio.wait_for(keyed, 5)
            if i >= 50:  # the first 50 warm up
                latencies.append(time.perf_counter() - started)
    finally:
        await gateway.stop()
        radio.close()
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
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    print(f"floor core alone: {core_only(50_000):.0f} press/release pairs/s")
    latencies = asyncio.run(run(args.count))
    p95 = statistics.quantiles(latencies, n=100)[94]
    print(f"over pty: {len(latencies)} presses, median "
          f"{statistics.median(latencies) * 1000:.3f} ms, max {max(latencies) * 1000:.3f} ms")
    print(f"ptt_access_p95_ms={p95 * 1000:.3f}")


if __name__ == "__main__":
    main()
