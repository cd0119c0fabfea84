#!/usr/bin/env python3
"""TETRA terminal audio: how long from a dispatcher's PTT press to their voice on air,
and from the terminal's received audio to the room.

A real in-process daemon (media on) drives a TETRA PEI emulator over a real pty;
the terminal's sound card is a recording stand-in (this machine has none).  A
"dispatcher" is a local leg of the room that always speaks (a frame every tick).

1. **key to air**: ``PatchService.ptt(leg, "key")`` -> floor granted -> ``AT+CTXD``
   written to the pty -> the emulator grants (``+CTXG``) -> ``RadioKeyed`` opens the
   gate -> the next mixer tick plays the dispatcher's frame into the card.  Timed
   until that first frame; released (``AT+CUTXC``) before the next press.
2. **receive to room**: during a handset's over (``+CTICN``/``+CTXG``) the card
   delivers a frame every 20 ms (its own clock, not the engine's); every 10th is
   loud and is timed until the dispatcher's leg is handed the mix holding it
   (local-leg FIFO, engine tick, mixer).

    python bench/terminal_audio.py [--presses 200] [--frames 200]

Last line: ``tetra_key_to_air_p95_ms=X tetra_rx_to_room_p95_ms=Y``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dispatch import radio_audio  # noqa: E402
from dispatch.config import parse_settings  # noqa: E402
from dispatch.daemon import Daemon, install_reactor  # noqa: E402
from hardware.emulators import TetraRadioEmulator  # noqa: E402

FRAME = 320


def loud(k: int) -> bytes:
    """The k-th loud frame: its level says which it is (k < 200)."""
    return np.full(160, 4500 + 90 * k, dtype="<i2").tobytes()


QUIET = bytes(FRAME)


class Card:
    """A sound card that records when each frame is played (no hardware here)."""

    def __init__(self) -> None:
        self.on_frame: Callable[[bytes], None] | None = None
        self.played = asyncio.Event()

    def open(self, on_frame: Callable[[bytes], None]) -> None:
        """Start 'capturing'."""
        self.on_frame = on_frame

    def write(self, frame: bytes) -> None:
        """A frame reached the terminal's microphone input."""
        self.played.set()

    def close(self) -> None:
        """Stop."""
        self.on_frame = None


class Speaker:
    """The dispatcher: a local leg that says a frame every tick and notes loud mixes."""

    def __init__(self) -> None:
        self.listener: Callable[[bytes], None] | None = None
        self.loud_at: dict[int, float] = {}  # loud frame k -> loop time it was mixed to us

    def attach(self, on_frame: Callable[[bytes], None]) -> None:
        """The engine listens."""
        self.listener = on_frame

    def detach(self) -> None:
        """The engine stops listening."""
        self.listener = None

    def transmit(self, frame: bytes) -> None:
        """The room's mix for us; we answer with our next frame."""
        level = int(np.abs(np.frombuffer(frame, dtype="<i2")).max(initial=0))
        if level > 4000:
            self.loud_at.setdefault(round((level - 4500) / 90),
                                    asyncio.get_running_loop().time())
        if self.listener is not None:
            self.listener(QUIET[:-2] + b"\x10\x00")  # quiet but not silent


def pct(values: list[float], p: float) -> float:
    """The p-th percentile in milliseconds."""
    return round(1000.0 * float(np.percentile(np.array(values), p)), 2)


async def run(presses: int, frames: int) -> tuple[list[float], list[float]]:
    """Both measurements against one daemon."""
    loop = asyncio.get_running_loop()
    reactor = install_reactor(loop)
    card = Card()
    radio_audio.AUDIO_CARDS[:] = [lambda gw: card]
    emulator = TetraRadioEmulator()
    with tempfile.TemporaryDirectory() as tmp:
        settings = parse_settings({
            "node": {"data_dir": f"{tmp}/var"}, "http": {"port": 0}, "ssh": {"enabled": False},
            "log": {"level": "error"},
            "media": {"enabled": True, "port_min": 41000, "port_max": 41099,
                      "recordings_dir": f"{tmp}/rec", "record": False},
            "radio": {"gateways": [{"name": "tetra1", "kind": "tetra",
                                    "device": emulator.open(), "hang_time_s": 0.0,
                                    "audio": {"audio_rate": 8000}}],
                      "talkgroups": [{"name": "fire", "gssi": "9001", "gateway": "tetra1"}]},
        }, "bench")
        daemon = Daemon(settings, reactor=reactor)
        await daemon.start()
        try:
            return await _measure(daemon, emulator, card, presses, frames)
        finally:
            await daemon.stop()
            emulator.close()


async def _measure(daemon: Daemon, emulator: TetraRadioEmulator, card: Card, presses: int,
                   frames: int) -> tuple[list[float], list[float]]:
    loop = asyncio.get_running_loop()
    radio: Any = daemon.radio
    while radio.state["tetra1"] != "up":
        await asyncio.sleep(0.01)
    engine: Any = daemon.media.engine  # type: ignore[union-attr]
    speaker = Speaker()
    engine.add_local("dispatcher", speaker)
    await engine.join("ops", "dispatcher")
    await daemon.patches.patch("fire", "bench", room="ops")
    cc = emulator.inject_group_call("9001", "2001")
    emulator.inject_talk_end(cc)
    await asyncio.sleep(0.2)
    key_to_air: list[float] = []
    for _ in range(presses):
        card.played.clear()
        start = loop.time()
        daemon.patches.ptt("dispatcher", "key")
        await asyncio.wait_for(card.played.wait(), 5.0)
        key_to_air.append(loop.time() - start)
        daemon.patches.ptt("dispatcher", "unkey")
        while any(call.talker == "self" for call in emulator.calls.values()):
            await asyncio.sleep(0.002)
    emulator.inject_talk(cc, "2001")
    await asyncio.sleep(0.2)
    assert card.on_frame is not None
    # A card delivers a frame every 20 ms on its own clock; every 10th is loud.
    frames = min(frames, 200)
    sent: dict[int, float] = {}
    speaker.loud_at.clear()
    t0 = loop.time()
    for n in range(frames * 10):
        await asyncio.sleep(max(0.0, t0 + 0.02 * n - loop.time()))
        if n % 10 == 5:
            sent[n // 10] = loop.time()
            card.on_frame(loud(n // 10))
        else:
            card.on_frame(QUIET)
    await asyncio.sleep(0.2)
    rx_to_room = [speaker.loud_at[k] - at for k, at in sent.items() if k in speaker.loud_at]
    print(f"receive: {len(sent) - len(rx_to_room)} of {len(sent)} loud frames lost "
          "(a late card's burst overflowing the 60 ms local-leg FIFO)")
    return key_to_air, rx_to_room


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--frames", type=int, default=200, help="loud frames (at most 200)")
    args = parser.parse_args()
    key_to_air, rx_to_room = asyncio.run(run(args.presses, args.frames))
    print(f"key to air: {len(key_to_air)} presses, p50 {pct(key_to_air, 50)} ms, "
          f"p95 {pct(key_to_air, 95)} ms, max {pct(key_to_air, 100)} ms")
    print(f"receive to room: {len(rx_to_room)} frames, p50 {pct(rx_to_room, 50)} ms, "
          f"p95 {pct(rx_to_room, 95)} ms")
    print(f"tetra_key_to_air_p95_ms={pct(key_to_air, 95)} "
          f"tetra_rx_to_room_p95_ms={pct(rx_to_room, 95)}")


if __name__ == "__main__":
    main()
