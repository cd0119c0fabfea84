#!/usr/bin/env python3
"""PTT access time and the audio delay our radio path adds (issue 7's benchmark).

1. **PTT access** (3GPP MCPTT KPI 1): a dispatcher presses PTT through the HTTP
   API of a real in-process daemon; the floor is granted and the keying command
   (``ATD<gssi>`` or ``AT+CTXD``) is written to the TETRA PEI emulator's pty.
   Timed from the request until the emulator has read the command off the pty;
   released (``AT+CUTXC`` seen) before the next press.  ``--presses`` of them.
2. **Added latency** (our share of KPI 3, mouth-to-ear): a phone peer on a real
   UDP socket (its own thread and clock) sends paced 20 ms G.711 RTP to the
   media engine (its real 20 ms clock) with a loud frame every 10th packet; the
   talkgroup is a local leg of the same room, its sound-card gateway keyed.
   The measured talkspurt starts after a warm-up and a silence gap (with the
   RTP marker, as a phone with VAD sends it).  Timed from ``sendto`` of a loud
   packet until the gateway hands that audio to the sound card (jitter buffer,
   tick, mix, local leg, on-air gate).  The card's own buffer (one PortAudio
   period, hardware) is not included: this machine has no card.

Everything shares one process and loop, so the figures include the peers' work.

    python bench/ptt_latency.py [--presses 1000] [--bursts 200]

Last line: ``ptt_access_p95_ms=X added_latency_ms=Y`` (Y is the p95).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import httpx  # noqa: E402

from dispatch.auth import Role  # noqa: E402
from dispatch.config import parse_settings  # noqa: E402
from dispatch.daemon import Daemon, install_reactor  # noqa: E402
from hardware.emulators import TetraRadioEmulator  # noqa: E402
from radio.floor import FloorSettings, Priority  # noqa: E402
from radio.soundcard import SoundcardGateway, SoundcardSettings  # noqa: E402
from telephony.media.engine import EngineSettings, MediaEngine  # noqa: E402
from telephony.media.g711 import ulaw_encode  # noqa: E402
from telephony.media.rtp import RtpPacket, build_rtp  # noqa: E402

WARM_UP = 20


def pct(values: list[float], p: float) -> float:
    """The p-th percentile in milliseconds."""
    return round(1000.0 * float(np.percentile(np.array(values), p)), 2)


async def ptt_access(presses: int) -> list[float]:
    """Seconds from each API press to the keying command read by the emulator."""
    reactor = install_reactor(asyncio.get_running_loop())
    radio = TetraRadioEmulator()
    waiting: list[tuple[Callable[[str], bool], asyncio.Future[float]]] = []

    def seen(line: str) -> None:
        now = time.perf_counter()
        for item in list(waiting):
            if item[0](line) and not item[1].done():
                item[1].set_result(now)
                waiting.remove(item)

    def expect(match: Callable[[str], bool]) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiting.append((match, future))
        return future

    radio.on_command = seen
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = parse_settings({
            "node": {"data_dir": tmp}, "http": {"port": 0}, "ssh": {"enabled": False},
            "log": {"level": "warning"},
            "radio": {"gateways": [{"name": "tetra1", "kind": "tetra", "device": radio.open(),
                                    "hang_time_s": 0.0}],
                      "talkgroups": [{"name": "fire", "gssi": "9001", "gateway": "tetra1"}]},
        }, "bench")
        daemon = Daemon(settings, reactor=reactor)
        await daemon.start()
        assert daemon.http.bound is not None
        try:
            async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{daemon.http.bound[1]}") as client:
                await daemon.users.add_user("disp", Role.DISPATCHER, "disp-password",
                                            actor="bench")
                r = await client.post("/api/v1/auth/login",
                                      json={"username": "disp", "password": "disp-password"})
                headers = {"Authorization": f"Bearer {r.json()['token']}"}
                for i in range(presses + WARM_UP):
                    keyed = expect(lambda line: line.startswith(("AT+CTXD", "ATD")))
                    started = time.perf_counter()
                    r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=headers)
                    assert r.json()["events"][0]["event"] == "granted", r.text
                    at = await asyncio.wait_for(keyed, 5)
                    if i >= WARM_UP:
                        out.append(at - started)
                    ceased = expect(lambda line: line.startswith("AT+CUTXC"))
                    await client.delete("/api/v1/radio/talkgroups/fire/ptt", headers=headers)
                    await asyncio.wait_for(ceased, 5)
                    await asyncio.sleep(0.002)  # let the radio report the floor idle
        finally:
            await daemon.stop()
            radio.close()
    return out


class Card:
    """The sound card's end: when each loud frame is handed to it."""

    def __init__(self) -> None:
        self.loud_at: list[float] = []
        self._loud = False

    def open(self, on_frame: Callable[[bytes], None]) -> None:
        """Nothing to capture in this benchmark."""

    def write(self, frame: bytes) -> None:
        """A frame for the air: note when a loud burst starts."""
        loud = int(np.abs(np.frombuffer(frame, dtype="<i2")).max()) > 4000
        if loud and not self._loud:
            self.loud_at.append(time.perf_counter())
        self._loud = loud

    def close(self) -> None:
        """Nothing to close."""


class Lines:
    """Control lines that always work (the pty cannot carry RTS; see the report)."""

    def open(self) -> None:
        """Open."""

    def set_ptt(self, on: bool) -> None:
        """Key or unkey."""

    def cos(self) -> bool | None:
        """Squelch closed."""
        return False

    def close(self) -> None:
        """Close."""


async def added_latency(bursts: int) -> tuple[list[float], int]:
    """Seconds from a loud RTP packet's sendto to its audio reaching the sound card."""
    engine = MediaEngine(EngineSettings(port_min=47000, port_max=47099))
    await engine.start()
    card = Card()
    gateway = SoundcardGateway(SoundcardSettings("sc1", "1", floor=FloorSettings(0.0, 3600.0)),
                               card, Lines(), lambda event: None)
    await gateway.start()
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    port = phone.getsockname()[1]
    offer = ("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             f"m=audio {port} RTP/AVP 0\r\na=ptime:20\r\na=sendrecv\r\n")
    answer = await engine.answer("disp", offer)
    dest = ("127.0.0.1", int(answer.split("m=audio ")[1].split()[0]))
    await engine.join("call", "disp")
    engine.add_local("radio:fire", gateway)
    await engine.join("call", "radio:fire")
    gateway.request_ptt("1", "disp", Priority.DISPATCHER)
    t = np.arange(160) / 8000
    loud = ulaw_encode(np.round(12000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))
    quiet = ulaw_encode(np.zeros(160, dtype=np.int16))
    sent: list[float] = []
    total = 10 * (bursts + 5)

    def phone_thread() -> None:
        """The phone is its own device: paced on its own clock, not on our loop.

        One second of warm-up, 200 ms of silence suppression (no packets), then the
        measured talkspurt opens with a marker: the jitter buffer anchors its playout
        on a steady machine, not on a first packet delayed by start-up."""
        t0 = time.perf_counter()
        for slot in range(total):
            time.sleep(max(0.0, t0 + 0.02 * slot - time.perf_counter()))
            if 50 <= slot < 60:
                continue  # the gap: timestamps advance, nothing is sent
            seq = slot if slot < 50 else slot - 10
            is_loud = slot % 10 == 5 and slot >= 70
            packet = build_rtp(RtpPacket(0, seq, 160 * slot, 0x1234, loud if is_loud else quiet,
                                         marker=slot == 60))
            if is_loud:
                sent.append(time.perf_counter())
            phone.sendto(packet, dest)

    worker = threading.Thread(target=phone_thread)
    worker.start()
    await asyncio.get_running_loop().run_in_executor(None, worker.join)
    await asyncio.sleep(0.2)
    health = engine.health()
    print(f"engine: tick lateness p99={health['lateness_ms_p99']} ms, "
          f"overruns={health['overruns']}; the phone's jitter buffer ended at a target of "
          f"{round(engine._legs['disp'].jitter.stats().target_delay_ms, 1)} ms")
    gateway.release_ptt("1", "disp")
    await engine.stop()
    await gateway.stop()
    phone.close()
    # Pair each send with the first loud onset at the card within the next 190 ms (bursts
    # are 200 ms apart, so a burst the jitter buffer dropped cannot shift the pairing).
    onsets = np.array(card.loud_at)
    out: list[float] = []
    for at in sent:
        later = onsets[(onsets >= at) & (onsets < at + 0.19)]
        if later.size:
            out.append(float(later[0]) - at)
    if not out:
        raise SystemExit(f"none of {len(sent)} bursts reached the card")
    return out, len(sent) - len(out)


async def run(presses: int, bursts: int) -> tuple[list[float], list[float], int]:
    """Both measurements, one after the other (and how many bursts never arrived)."""
    access = await ptt_access(presses)
    added, lost = await added_latency(bursts)
    return access, added, lost


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=200)
    args = parser.parse_args()
    access, added, lost = asyncio.run(run(args.presses, args.bursts))
    print(f"ptt access over {len(access)} API presses: p50={pct(access, 50)} ms "
          f"p95={pct(access, 95)} ms max={pct(access, 100)} ms")
    print(f"added latency over {len(added)} bursts (RTP in -> sound card): "
          f"p50={pct(added, 50)} ms p95={pct(added, 95)} ms "
          f"mean={round(1000 * statistics.fmean(added), 2)} ms; {lost} bursts lost "
          "(late for the jitter buffer: a loaded machine)")
    print(f"ptt_access_p95_ms={pct(access, 95)} added_latency_ms={pct(added, 95)}")


if __name__ == "__main__":
    main()
