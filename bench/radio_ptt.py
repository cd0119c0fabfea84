#!/usr/bin/env python3
"""PTT request -> radio keyed, through the whole daemon, over a pty to the TETRA emulator.

A real :class:`~dispatch.daemon.Daemon` (SQLite in a temporary directory,
HTTP on 127.0.0.1, the radio service with its audit journal) opens the TETRA
PEI emulator's pty through Twisted's ``SerialPort``.  Each press is measured
from the moment it is issued until the radio *confirms* it is on air
(``+CTXG`` granted, published as ``radio.keyed``):

* ``api``: ``POST /api/v1/radio/talkgroups/fire/ptt`` from an HTTP client
  (auth, floor core, audit, AT command, radio's answer);
* ``service``: :meth:`RadioService.request_ptt` called on the loop (floor
  core, AT command, radio's answer).

Each press is released and the radio seen idle (``+CDTXC``) before the next.
Emulator, daemon and HTTP client share one process and one loop, so the
figures include the emulator's and the client's work too.

    python bench/radio_ptt.py [--count 500]

Last line: ``api_keyed_p50_ms=A api_keyed_p95_ms=B service_keyed_p50_ms=C service_keyed_p95_ms=D``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import httpx  # noqa: E402

from dispatch.auth import Role  # noqa: E402
from dispatch.config import parse_settings  # noqa: E402
from dispatch.daemon import Daemon, install_reactor  # noqa: E402
from dispatch.events import Envelope  # noqa: E402
from hardware.emulators import TetraRadioEmulator  # noqa: E402
from radio.floor import Priority  # noqa: E402

WARM_UP = 30


class Watch:
    """Futures resolved by the daemon's events."""

    def __init__(self) -> None:
        self.waiting: list[tuple[str, Callable[[Any], bool], asyncio.Future[None]]] = []

    def __call__(self, env: Envelope) -> None:
        for item in list(self.waiting):
            topic, where, future = item
            if env.topic == topic and where(env.event) and not future.done():
                future.set_result(None)
                self.waiting.remove(item)

    def expect(self, topic: str, where: Callable[[Any], bool]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((topic, where, future))
        return future


async def measure(count: int, press: Callable[[], Awaitable[Any]],
                  release: Callable[[], Awaitable[Any]], watch: Watch) -> list[float]:
    """Seconds from each press to ``radio.keyed``; released and idle between presses."""
    out: list[float] = []
    for i in range(count + WARM_UP):
        keyed = watch.expect("radio.keyed", lambda e: e.keyed)
        started = time.perf_counter()
        await press()
        await asyncio.wait_for(keyed, 5)
        if i >= WARM_UP:
            out.append(time.perf_counter() - started)
        idle = watch.expect("radio.talker", lambda e: e.talker is None)
        await release()
        await asyncio.wait_for(idle, 5)
    return out


async def run(count: int) -> tuple[list[float], list[float]]:
    """Start a daemon on the emulator and measure both paths."""
    reactor = install_reactor(asyncio.get_running_loop())
    radio = TetraRadioEmulator()
    with tempfile.TemporaryDirectory() as tmp:
        settings = parse_settings({
            "node": {"data_dir": tmp}, "http": {"port": 0}, "ssh": {"enabled": False},
            "log": {"level": "warning"},
            "radio": {"gateways": [{"name": "tetra1", "kind": "tetra", "device": radio.open(),
                                    "hang_time_s": 0.0}],
                      "talkgroups": [{"name": "fire", "gssi": "9001", "gateway": "tetra1"}]},
        }, "bench")
        daemon = Daemon(settings, reactor=reactor)
        watch = Watch()
        daemon.hub.listen(watch)
        await daemon.start()
        assert daemon.http.bound is not None and daemon.radio is not None
        service = daemon.radio
        try:
            async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{daemon.http.bound[1]}") as client:
                await daemon.users.add_user("disp", Role.DISPATCHER, "disp-password",
                                            actor="bench")
                r = await client.post("/api/v1/auth/login", json={"username": "disp",
                                                                  "password": "disp-password"})
                headers = {"Authorization": f"Bearer {r.json()['token']}"}

                async def api_press() -> None:
                    r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=headers)
                    assert r.json()["events"][0]["event"] == "granted", r.text

                async def api_release() -> None:
                    await client.delete("/api/v1/radio/talkgroups/fire/ptt", headers=headers)

                api = await measure(count, api_press, api_release, watch)

            async def press() -> None:
                service.request_ptt("fire", "disp", Priority.DISPATCHER)

            async def release() -> None:
                service.release_ptt("fire", "disp")

            direct = await measure(count, press, release, watch)
        finally:
            await daemon.stop()
            radio.close()
    return api, direct


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    api, direct = asyncio.run(run(args.count))
    figures: dict[str, float] = {}
    for name, values in (("api", api), ("service", direct)):
        p50 = statistics.median(values) * 1000
        p95 = statistics.quantiles(values, n=100)[94] * 1000
        figures[f"{name}_keyed_p50_ms"], figures[f"{name}_keyed_p95_ms"] = p50, p95
        print(f"{name}: {len(values)} presses, p50 {p50:.3f} ms, p95 {p95:.3f} ms, "
              f"max {max(values) * 1000:.3f} ms")
    print(" ".join(f"{k}={v:.3f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
