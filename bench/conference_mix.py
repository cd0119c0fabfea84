"""What conferences of several legs cost the mixer per 20 ms tick, beside two-party calls.

Rooms of ``size`` legs (every one talking, one muted and one deafened per room,
each room recorded), for sizes 3, 8 and 32, at about 300 legs in total; the
mixer alone (``Mixer.mix_block``) and with the G.711 decode/encode of every
leg around it.  A tick has 20,000 us; the last line reads ``legs=N rooms=R
size=K mix_us_p99=X codec_us_p99=Y`` for the largest size.

Run: ``PYTHONPATH=. python bench/conference_mix.py [ticks]`` (default 300 ticks per size).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from telephony.media.g711 import ulaw_decode, ulaw_encode
from telephony.media.mixer import Channel, LegConfig, Mixer

LEGS = 300


def build(size: int) -> Mixer:
    """``LEGS // size`` recorded rooms of ``size`` legs; leg 1 muted, leg 2 deafened."""
    mixer = Mixer()
    for room in range(LEGS // size):
        for i in range(size):
            channel = Channel.CALLER if i == 0 else Channel.CALL_TAKER
            mixer.add_leg((room, i), LegConfig(room, channel=channel))
        mixer.update((room, 1), muted=True)
        mixer.update((room, 2), deaf=True)
        mixer.set_recording(room, True)
    return mixer


def p99(values: list[float]) -> float:
    """99th percentile."""
    return statistics.quantiles(values, n=100)[98]


def run(size: int, ticks: int) -> tuple[int, int, float, float]:
    """(legs, rooms, mix p99 us, mix + codec p99 us) for rooms of ``size``."""
    mixer = build(size)
    legs = len(mixer.order)
    rng = np.random.default_rng(size)
    payload = ulaw_encode(rng.integers(-8000, 8000, (legs, 160), dtype=np.int16))
    mix, codec = [], []
    for _ in range(ticks):
        started = time.perf_counter()
        block = ulaw_decode(payload).reshape(legs, 160)
        t0 = time.perf_counter()
        out, _ = mixer.mix_block(block)
        t1 = time.perf_counter()
        ulaw_encode(out)
        ended = time.perf_counter()
        mix.append(1e6 * (t1 - t0))
        codec.append(1e6 * (ended - started))
    return legs, legs // size, p99(mix), p99(codec)


def main() -> None:
    """Print one line per room size."""
    ticks = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for size in (3, 8, 32):
        legs, rooms, mix, codec = run(size, ticks)
        print(f"legs={legs} rooms={rooms} size={size} mix_us_p99={mix:.0f} "
              f"codec_us_p99={codec:.0f}")


if __name__ == "__main__":
    main()
