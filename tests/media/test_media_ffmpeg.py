"""The media engine against a real RTP peer: ffmpeg sends G.711 RTP from a WAV into each
leg and receives what the leg hears into a WAV through an SDP file.

ffmpeg sends from one socket and receives on another, so these engines run with
``symmetric_rtp = false`` (media goes to the SDP address); symmetric latching
is proved with UDP peers in test_media_engine.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from enginepeers import assert_hears, until

from telephony.media.anchor import DeadMedia, DtmfReceived, MediaEvent, RecordingFinished
from telephony.media.engine import EngineSettings, MediaEngine

RATE = 8000


def ffmpeg() -> str:
    """The ffmpeg binary, or a failure saying how to install it."""
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.fail("ffmpeg is required: apt-get install ffmpeg (scripts/test installs it)")
    return path


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def sine(freq: float, seconds: float, amplitude: float = 6000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def free_pair() -> int:
    """An even UDP port whose odd neighbour is also free (ffmpeg binds RTP and RTCP)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port % 2 or port > 65000:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port


def sdp(port: int, dtmf: bool = True) -> str:
    fmts = "0 101" if dtmf else "0"
    return ("v=0\r\no=ffmpeg 1 1 IN IP4 127.0.0.1\r\ns=peer\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {fmts}\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n")


def answer_port(answer: str) -> int:
    line = next(x for x in answer.split("\r\n") if x.startswith("m=audio"))
    return int(line.split()[1])


class FfmpegPeer:
    """One phone played by two ffmpeg processes: a sender and a receiver."""

    def __init__(self, tmp: Path, name: str, samples: np.ndarray) -> None:
        self.name = name
        self.wav = write_wav(tmp / f"{name}-in.wav", samples)
        self.out = tmp / f"{name}-out.wav"
        self.recv_port = free_pair()
        self.sdp_file = tmp / f"{name}.sdp"
        self.sdp_file.write_text(sdp(self.recv_port))
        self.procs: list[asyncio.subprocess.Process] = []

    async def send(self, engine_port: int) -> asyncio.subprocess.Process:
        """Play the WAV as 20 ms G.711 RTP packets in real time."""
        proc = await asyncio.create_subprocess_exec(
            ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(self.wav),
            "-af", "asetnsamples=n=160,arealtime", "-c:a", "pcm_mulaw", "-f", "rtp",
            "-sdp_file", str(self.sdp_file.with_suffix(".out.sdp")),
            "-pkt_size", "172", f"rtp://127.0.0.1:{engine_port}")
        self.procs.append(proc)
        return proc

    async def receive(self, seconds: float) -> asyncio.subprocess.Process:
        """Record what the engine sends to this peer for ``seconds``."""
        proc = await asyncio.create_subprocess_exec(
            ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin",
            "-protocol_whitelist", "file,udp,rtp", "-analyzeduration", "0", "-probesize", "32",
            "-i", str(self.sdp_file), "-t", str(seconds), "-y", str(self.out))
        self.procs.append(proc)
        return proc

    def heard(self) -> np.ndarray:
        with wave.open(str(self.out)) as w:
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


@pytest_asyncio.fixture(loop_scope="session")
async def engine(tmp_path: Path) -> AsyncIterator[tuple[MediaEngine, list[MediaEvent]]]:
    ffmpeg()
    settings = EngineSettings(port_min=41000, port_max=41999, symmetric_rtp=False,
                              dead_media_s=1.0, recordings_dir=tmp_path / "rec")
    eng = MediaEngine(settings)
    events: list[MediaEvent] = []
    eng.subscribe(events.append)
    await eng.start()
    yield eng, events
    await eng.stop()


async def test_four_legs_talk_whisper_listen_and_the_recording(
        engine: tuple[MediaEngine, list[MediaEvent]], tmp_path: Path) -> None:
    eng, events = engine
    tones = {"caller": 500.0, "taker": 1100.0, "boss": 1700.0, "monitor": 2300.0}
    modes = {"caller": "talk", "taker": "talk", "boss": "whisper:taker", "monitor": "listen"}
    peers = {leg: FfmpegPeer(tmp_path, leg, sine(f, 12.0)) for leg, f in tones.items()}
    try:
        for leg, peer in peers.items():
            port = answer_port(await eng.answer(leg, peer.sdp_file.read_text()))
            await eng.join("call-42", leg, modes[leg])
            await peer.send(port)
        for leg in peers:
            await until(lambda leg=leg: eng.leg_counters(leg)["rx"] > 50, f"RTP from {leg}")
        receivers = [await p.receive(3.0) for p in peers.values()]
        for proc in receivers:
            assert await proc.wait() == 0
    finally:
        for peer in peers.values():
            await peer.stop()
    heard = {leg: p.heard()[1600:] for leg, p in peers.items()}
    assert_hears(heard["caller"], [1100.0], [500.0, 1700.0, 2300.0])
    assert_hears(heard["taker"], [500.0, 1700.0], [1100.0, 2300.0])
    assert_hears(heard["boss"], [500.0, 1100.0], [1700.0, 2300.0])
    assert_hears(heard["monitor"], [500.0, 1100.0], [1700.0, 2300.0])
    for leg in peers:
        await eng.release(leg)
    await eng.drain()
    (done,) = [e for e in events if isinstance(e, RecordingFinished)]
    path = Path(done.path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == done.sha256
    with wave.open(done.path) as w:
        rec = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert done.duration_s == pytest.approx(len(rec) / RATE) and done.duration_s > 3.0
    middle = rec[len(rec) // 4: 3 * len(rec) // 4]
    assert_hears(middle[:, 0], [500.0], [1100.0, 1700.0, 2300.0])
    assert_hears(middle[:, 1], [1100.0, 1700.0], [500.0, 2300.0])


async def test_dead_media_after_the_peer_stops(
        engine: tuple[MediaEngine, list[MediaEvent]], tmp_path: Path) -> None:
    eng, events = engine
    peer = FfmpegPeer(tmp_path, "short", sine(800.0, 1.5))
    port = answer_port(await eng.answer("short", peer.sdp_file.read_text()))
    got: list[tuple[DeadMedia, int]] = []
    eng.subscribe(lambda e: got.append((e, eng.leg_counters("short")["rx"]))
                  if isinstance(e, DeadMedia) else None)
    try:
        sender = await peer.send(port)
        assert await sender.wait() == 0
        await until(lambda: bool(got), "dead media", limit_s=30.0)
    finally:
        await peer.stop()
    event, received = got[0]
    assert event.leg_id == "short" and event.silent_s >= 1.0
    assert received >= 60  # it went dead after the audio, not before


async def test_inband_dtmf_from_ffmpeg(
        engine: tuple[MediaEngine, list[MediaEvent]], tmp_path: Path) -> None:
    eng, events = engine
    quiet = np.zeros(int(0.3 * RATE), dtype=np.int16)
    seven = sine(852.0, 0.2, 4000) + sine(1209.0, 0.2, 4000)
    pound = sine(941.0, 0.2, 4000) + sine(1477.0, 0.2, 4000)
    peer = FfmpegPeer(tmp_path, "keys", np.concatenate([quiet, seven, quiet, pound, quiet]))
    peer.sdp_file.write_text(sdp(peer.recv_port, dtmf=False))  # no telephone-event: in band
    port = answer_port(await eng.answer("keys", peer.sdp_file.read_text()))
    try:
        assert await (await peer.send(port)).wait() == 0
        await until(lambda: len([e for e in events if isinstance(e, DtmfReceived)]) >= 2,
                    "two digits")
    finally:
        await peer.stop()
    assert [e for e in events if isinstance(e, DtmfReceived)] == [
        DtmfReceived("keys", "7", "inband"), DtmfReceived("keys", "#", "inband")]
