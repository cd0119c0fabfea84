"""Helpers for the media engine tests: UDP peers, tones, spectra, waiting on conditions."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import numpy as np

from telephony.media.g711 import ulaw_decode, ulaw_encode
from telephony.media.rtp import RtpPacket, build_rtp, is_rtcp, parse_rtp

RATE = 8000


def tone(freq: float, k: int, amplitude: float = 6000.0, n: int = 160) -> np.ndarray:
    """Frame ``k`` (of ``n`` samples) of a continuous sine."""
    t = (np.arange(n) + n * k) / RATE
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def level_db(samples: np.ndarray, freq: float) -> float:
    """Peak spectrum level (dB, arbitrary reference) within 15 Hz of ``freq``."""
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) + 1e-9
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    band = (freqs > freq - 15) & (freqs < freq + 15)
    return float(20 * np.log10(spectrum[band].max()))


def assert_hears(samples: np.ndarray, present: list[float], absent: list[float]) -> None:
    """Each present tone clearly there; each absent tone at least 30 dB below the weakest."""
    assert len(samples) >= 1600, f"only {len(samples)} samples heard"
    levels = {f: level_db(samples, f) for f in present + absent}
    floor = level_db(np.zeros(len(samples)) + 1e-3, 1000.0)
    weakest = min(levels[f] for f in present)
    assert weakest > floor + 40, f"expected tones missing: {levels}"
    for f in absent:
        assert levels[f] <= weakest - 30, f"{f} Hz should be inaudible: {levels}"


async def until(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Wait for a condition fed by real sockets (a bound, not a timed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.002)


class Peer:
    """A phone on a real UDP socket: sends RTP from its own port, collects what it gets."""

    def __init__(self, ssrc: int = 0x1234, host: str = "127.0.0.1") -> None:
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.ssrc = ssrc
        self.seq = 0
        self.received: list[RtpPacket] = []
        self.rtcp = 0
        self.dest: tuple[str, int] = (host, 0)

    def offer(self, port: int | None = None, dtmf: bool = True, direction: str = "sendrecv",
              formats: str = "0") -> str:
        """An SDP offer advertising ``port`` (default: the socket's real port)."""
        fmts = formats + (" 101" if dtmf else "")
        ip = "IP6" if ":" in self.host else "IP4"
        return (f"v=0\r\no=peer 1 1 IN {ip} {self.host}\r\ns=-\r\nc=IN {ip} {self.host}\r\n"
                "t=0 0\r\n"
                f"m=audio {port or self.port} RTP/AVP {fmts}\r\n"
                "a=rtpmap:101 telephone-event/8000\r\n"
                f"a=ptime:20\r\na={direction}\r\n")

    def use_answer(self, answer: str) -> None:
        """Send to the port the engine's answer names."""
        for line in answer.split("\r\n"):
            if line.startswith("m=audio"):
                self.dest = (self.host, int(line.split()[1]))

    def send_audio(self, pcm: np.ndarray, pt: int = 0) -> None:
        """One 20 ms packet of µ-law audio."""
        self.send(RtpPacket(pt, self.seq & 0xFFFF, (160 * self.seq) & 0xFFFFFFFF, self.ssrc,
                            ulaw_encode(pcm)))

    def send(self, packet: RtpPacket) -> None:
        """Send one packet and advance the sequence number."""
        self.sock.sendto(build_rtp(packet), self.dest)
        self.seq += 1

    def drain(self) -> list[RtpPacket]:
        """Every RTP packet received since the last drain."""
        got: list[RtpPacket] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            if is_rtcp(data):
                self.rtcp += 1
                continue
            got.append(parse_rtp(data))
        self.received += got
        return got

    def heard(self, skip: int = 0) -> np.ndarray:
        """Everything received, decoded, after ``skip`` packets."""
        self.drain()
        frames = [ulaw_decode(p.payload) for p in self.received[skip:]]
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
