"""The mixer's added delay (issue 4): tone in on one leg -> tone out on the other.

The engine runs in this process on its real 20 ms clock; two phones in a forked
process talk to it over real UDP on loopback (RTP both ways, G.711 µ-law), as in
``bench/media_mix.py``.  Phone A sends silence and, every ``period`` seconds, a
200 ms 1 kHz burst whose first sample starts a packet; phone B decodes what it
receives and finds each burst's onset (the first sample above a threshold after
silence).  Added delay of one burst = B's kernel receive time of the packet with
the onset + the onset's offset in that packet - A's send time of the burst's first
packet: jitter-buffer playout, waiting for the next tick, mixing and encoding.
Optional background calls (``load``) put the mixer under load at the same time.

Run: ``PYTHONPATH=. python bench/media_delay.py [bursts] [load_calls]``.  Last line:
``added_delay_ms=P50 p95_ms=X max_ms=Y bursts=N missed=M load_legs=L`` (target P50
and p95 <= 40 ms; a missed burst is one whose onset never arrived within 300 ms).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from media_mix import HEADER, SO_TIMESTAMPNS, offer  # noqa: E402

from telephony.media.engine import EngineSettings, MediaEngine  # noqa: E402
from telephony.media.g711 import ulaw_decode, ulaw_encode  # noqa: E402

FRAME = 160
PERIOD_S = 0.6
BURST_FRAMES = 10
THRESHOLD = 2000


def _send(s: socket.socket, dest: tuple[str, int], k: int, ssrc: int, payload: bytes) -> None:
    s.sendto(HEADER.pack(0x80, 0, k & 0xFFFF, (FRAME * k) & 0xFFFFFFFF, ssrc) + payload, dest)


def phones(a: socket.socket, b: socket.socket, dests: list[tuple[str, int]], bursts: int,
           out: multiprocessing.connection.Connection) -> None:
    """A sends bursts, B listens for their onsets; reports the delays in ms."""
    silence = ulaw_encode(np.zeros(FRAME, dtype=np.int16))
    t = np.arange(FRAME * BURST_FRAMES) / 8000
    tone = np.round(8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    burst = [ulaw_encode(tone[i * FRAME:(i + 1) * FRAME]) for i in range(BURST_FRAMES)]
    b.setblocking(False)
    b.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    every = round(PERIOD_S / 0.02)
    sent: list[float] = []
    onsets: list[float] = []
    quiet = True
    start = time.monotonic() + 0.2
    total = every * (bursts + 2)
    k = 0
    while k < total or time.monotonic() < start + (total + 25) * 0.02:
        now = time.monotonic()
        if k < total and now >= start + k * 0.02:
            phase = k % every
            in_burst = k >= 2 * every and phase < BURST_FRAMES
            if in_burst and phase == 0:
                sent.append(time.time())
            _send(a, dests[0], k, 1, burst[phase] if in_burst else silence)
            _send(b, dests[1], k, 2, silence)
            k += 1
        try:
            data, anc, _, _ = b.recvmsg(2048, 64)
        except BlockingIOError:
            time.sleep(0.0005)
            continue
        if len(data) < 12 + FRAME or not anc:
            continue
        sec, nsec = struct.unpack("qq", anc[0][2][:16])
        pcm = ulaw_decode(data[12:12 + FRAME])
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > THRESHOLD)
        if quiet and loud.size:
            onsets.append(sec + nsec * 1e-9 + loud[0] / 8000)
            quiet = False
        elif not loud.size:
            quiet = True
    delays = []
    for s in sent:  # each burst's onset: the first heard within half a period after it
        found = [o for o in onsets if s <= o < s + PERIOD_S / 2]
        if found:
            delays.append(1000 * (found[0] - s))
    out.send((delays, len(sent), len(onsets)))


def background(socks: list[socket.socket], dests: list[tuple[str, int]], seconds: float) -> None:
    """Load: every background leg sends a 20 ms packet of speech-level noise."""
    payload = ulaw_encode(np.round(np.random.default_rng(1).normal(0, 2000, FRAME)
                                   ).astype(np.int16))
    start = time.monotonic()
    k = 0
    while time.monotonic() < start + seconds:
        for i, s in enumerate(socks):
            _send(s, dests[i], k, 100 + i, payload)
        k += 1
        time.sleep(max(0.0, start + k * 0.02 - time.monotonic()))


async def leg(engine: MediaEngine, name: str, room: str) -> tuple[socket.socket, tuple[str, int]]:
    """A phone socket answered by the engine and joined to ``room``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    answer = await engine.answer(name, offer(s.getsockname()[1]))
    port = int(next(x for x in answer.split("\r\n") if x.startswith("m=")).split()[1])
    await engine.join(room, name)
    return s, ("127.0.0.1", port)


async def main() -> None:
    """Measure, print each burst summary, then the figures line."""
    bursts = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    load = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    engine = MediaEngine(EngineSettings(port_min=24000, port_max=32000, dead_media_s=60.0,
                                        max_legs=2 * load + 8))
    await engine.start()
    a, da = await leg(engine, "a", "probe")
    b, db = await leg(engine, "b", "probe")
    extra = [await leg(engine, f"bg{n}", f"bg{n // 2}") for n in range(2 * load)]
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=phones, args=(a, b, [da, db], bursts, child))
    seconds = (bursts + 4) * PERIOD_S
    bg = ctx.Process(target=background, args=([s for s, _ in extra], [d for _, d in extra],
                                              seconds)) if load else None
    if bg is not None:
        bg.start()
    proc.start()
    while not parent.poll():
        if not proc.is_alive() and not parent.poll():
            raise RuntimeError(f"the phones process died (exit {proc.exitcode})")
        await asyncio.sleep(0.1)
    delays, sent, heard = parent.recv()
    proc.join()
    if bg is not None:
        bg.join()
    await engine.stop()
    if not delays:
        print(f"bursts sent={sent} onsets heard={heard}: the measurement failed")
        print(f"added_delay_ms=nan p95_ms=nan max_ms=nan bursts=0 missed={sent} "
              f"load_legs={2 * load}")
        return
    d = np.array(delays)
    print(f"bursts={len(d)} min_ms={d.min():.1f} p50_ms={np.median(d):.1f} "
          f"p95_ms={np.percentile(d, 95):.1f} max_ms={d.max():.1f}")
    print(f"added_delay_ms={np.median(d):.1f} p95_ms={np.percentile(d, 95):.1f} "
          f"max_ms={d.max():.1f} bursts={len(d)} missed={sent - len(d)} load_legs={2 * load}")


if __name__ == "__main__":
    asyncio.run(main())
