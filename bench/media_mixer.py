"""How many anchored legs one core mixes per 20 ms tick.

Legs are paired into two-party calls (a conference of two legs each); every
fifth call also carries a supervisor in listen mode and every call is
recorded, which is the emergency-centre case.  Two figures per size:
``mix_us_per_tick`` is the mixer alone (``Mixer.mix_block``), and
``codec_us_per_tick`` adds G.711 decode of every leg's input and encode of
every leg's output, which is the work the media loop does around the mixer.
``pipeline_us_per_tick`` is the whole per-tick media work of the cores for
every leg: parse the RTP datagram, latch check, jitter buffer push and pop,
G.711 decode, mix, G.711 encode, build the outgoing RTP datagram (sockets
excluded).  The final lines read ``legs=N mix_us_per_tick=X`` for N = 300,
600, 1000.

Run: ``python bench/media_mixer.py [ticks]`` (default 200 ticks per size).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from telephony.media.g711 import ulaw_decode, ulaw_encode
from telephony.media.jitter import Frame, JitterBuffer, RtpLatch
from telephony.media.mixer import Channel, LegConfig, LegMode, Mixer
from telephony.media.rtp import RtpPacket, build_rtp, parse_rtp

TICK_US = 20_000.0


def build(legs: int) -> Mixer:
    """A mixer with ``legs`` call legs in two-party calls, 1 in 5 monitored, all recorded."""
    mixer = Mixer()
    for call in range(legs // 2):
        mixer.add_leg(("caller", call), LegConfig(call, channel=Channel.CALLER))
        mixer.add_leg(("taker", call), LegConfig(call, channel=Channel.CALL_TAKER))
        if call % 5 == 0:
            mixer.add_leg(("super", call), LegConfig(call, LegMode.LISTEN))
        mixer.set_recording(call, True)
    return mixer


def measure(legs: int, ticks: int) -> tuple[int, float, float, float]:
    """Median microseconds per tick for the mixer alone and with G.711 around it."""
    mixer = build(legs)
    rows = len(mixer.order)
    rng = np.random.default_rng(1)
    block = rng.integers(-8000, 8000, size=(rows, 160), dtype=np.int16)
    payloads = [ulaw_encode(row) for row in block]
    mixer.mix_block(block)  # build the layout outside the timing
    mix_times, codec_times = [], []
    for _ in range(ticks):
        t0 = time.perf_counter_ns()
        mixer.mix_block(block)
        t1 = time.perf_counter_ns()
        # Batch codec work: one table look-up for every leg's payload, then slices.
        decoded = ulaw_decode(b"".join(payloads)).reshape(rows, 160)
        out, _recs = mixer.mix_block(decoded)
        wire = ulaw_encode(out)
        [wire[i * 160 : (i + 1) * 160] for i in range(rows)]
        t2 = time.perf_counter_ns()
        mix_times.append((t1 - t0) / 1000)
        codec_times.append((t2 - t1) / 1000)
    mix = statistics.median(mix_times)
    p99 = sorted(mix_times)[int(0.99 * len(mix_times)) - 1]
    return rows, mix, p99, statistics.median(codec_times)


def pipeline(legs: int, ticks: int) -> float:
    """Median microseconds per tick for every core a leg's audio passes through."""
    mixer = build(legs)
    order = mixer.order
    rows = len(order)
    latches = [RtpLatch(("192.0.2.1", 4000 + i)) for i in range(rows)]
    buffers = [JitterBuffer() for _ in range(rows)]
    silence = b"\xff" * 160
    times = []
    for k in range(ticks + 5):
        now = k * 0.02
        wires = [build_rtp(RtpPacket(0, k, 160 * k, i, silence)) for i in range(rows)]
        t0 = time.perf_counter_ns()
        payloads = []
        for i, wire in enumerate(wires):
            packet = parse_rtp(wire)
            if latches[i].receive(("192.0.2.1", 4000 + i), packet, now).name == "ACCEPT":
                buffers[i].push(packet, now)
            got = buffers[i].pop(now)
            payloads.append(got.packet.payload if isinstance(got, Frame) else silence)
        decoded = ulaw_decode(b"".join(payloads)).reshape(rows, 160)
        out, _recs = mixer.mix_block(decoded)
        wire_out = ulaw_encode(out)
        for i in range(rows):
            build_rtp(RtpPacket(0, k, 160 * k, 7, wire_out[i * 160 : (i + 1) * 160]))
        if k >= 5:
            times.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(times)


def main() -> None:
    """Print one detail line per size, then the summary lines."""
    ticks = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    summary = []
    for legs in (300, 600, 1000):
        rows, mix, p99, codec = measure(legs, ticks)
        whole = pipeline(legs, max(20, ticks // 4))
        sys.stdout.write(
            f"calls={legs // 2} rows={rows} (incl. monitors) mix_median_us={mix:.0f} "
            f"mix_p99_us={p99:.0f} with_g711_us={codec:.0f} pipeline_us_per_tick={whole:.0f} "
            f"pipeline_share_of_tick={100 * whole / TICK_US:.1f}%\n")
        summary.append(f"legs={legs} mix_us_per_tick={mix:.0f}")
    sys.stdout.write("\n".join(summary) + "\n")


if __name__ == "__main__":
    main()
