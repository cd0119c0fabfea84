#!/usr/bin/env python3
"""RoIP keying and audio delay over real SIP/RTP on 127.0.0.1 (issue 7's RoIP gateway).

1. **Key access**: a dispatcher presses PTT on the RoIP gateway's floor; timed
   from ``request_ptt`` until the emulated box has decoded the key signal off
   its UDP socket (RFC 4733 digit, or the INFO with ``--ptt info``); released
   (unkey seen) before the next press.  ``--presses`` of them.
2. **Added audio delay**: a loud frame handed to the gateway's ``transmit``
   (the media engine's call) until the box has decoded it from RTP.

Both ends share one process and loop, so the figures include the emulator's work.

    python bench/roip_ptt.py [--presses 1000] [--frames 500] [--ptt dtmf|info]

Last line: ``roip_key_p95_ms=X roip_audio_p95_ms=Y``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hardware.emulators.roip import RoipDevice  # noqa: E402
from radio.floor import FloorSettings, Priority  # noqa: E402
from radio.roip import RoipGateway, RoipSettings  # noqa: E402


def p95(values: list[float]) -> float:
    """The 95th percentile in ms."""
    return statistics.quantiles(values, n=20)[-1] * 1000 if len(values) > 1 else values[0] * 1000


async def wait(condition: object, loop: asyncio.AbstractEventLoop) -> None:
    """Spin the loop until ``condition()`` holds (bounded)."""
    deadline = loop.time() + 5.0
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise RuntimeError("the box did not see it")
        await asyncio.sleep(0)


async def run(presses: int, frames: int, ptt: str) -> tuple[list[float], list[float]]:
    """Both measurements; the raw samples in seconds."""
    loop = asyncio.get_running_loop()
    box = RoipDevice(ptt=ptt, cos="vox")  # type: ignore[arg-type]
    await box.start()
    gw = RoipGateway(RoipSettings("bench", "1", uri=box.uri, ptt=ptt,  # type: ignore[arg-type]
                                  keepalive_s=60.0,
                                  floor=FloorSettings(hang_time_s=0.0, tx_timeout_s=3600.0)),
                     lambda event: None)
    await gw.start()
    await wait(lambda: ("unkey", ptt) in box.log, loop)
    keys: list[float] = []
    for _ in range(presses):
        start = loop.time()
        gw.request_ptt("1", "disp", Priority.DISPATCHER)
        await wait(lambda: box.keyed, loop)
        keys.append(loop.time() - start)
        gw.release_ptt("1", "disp")
        await wait(lambda: not box.keyed, loop)
    gw.request_ptt("1", "disp", Priority.DISPATCHER)
    await wait(lambda: box.keyed, loop)
    loud = np.full(160, 8000, dtype="<i2").tobytes()
    audio: list[float] = []
    for _ in range(frames):
        count = len(box.heard)
        start = loop.time()
        gw.transmit(loud)
        await wait(lambda count=count: len(box.heard) > count, loop)  # type: ignore[misc]
        audio.append(loop.time() - start)
    await gw.stop()
    box.close()
    return keys, audio


def main() -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--ptt", choices=("dtmf", "info"), default="dtmf")
    args = parser.parse_args()
    keys, audio = asyncio.run(run(args.presses, args.frames, args.ptt))
    print(f"key access ({args.ptt}): median {statistics.median(keys) * 1000:.2f} ms, "
          f"max {max(keys) * 1000:.2f} ms over {len(keys)} presses")
    print(f"audio: median {statistics.median(audio) * 1000:.2f} ms over {len(audio)} frames")
    print(f"roip_key_p95_ms={p95(keys):.2f} roip_audio_p95_ms={p95(audio):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
