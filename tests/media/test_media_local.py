"""Local (in-process) legs in the media engine against real RTP peers on UDP sockets:
a radio's frames are mixed like a phone's (minus-self, modes, mute, recording)."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from enginepeers import Peer, assert_hears, tone, until

from telephony.media.engine import EngineSettings, MediaEngine
from telephony.media.local import FRAME_BYTES, TRIM_WINDOW, LocalPort


class Radio:
    """A local audio object: the test pushes received frames; transmitted frames are kept."""

    def __init__(self) -> None:
        self.on_frame: Callable[[bytes], None] | None = None
        self.sent: list[bytes] = []
        self.detached = 0

    def attach(self, on_frame: Callable[[bytes], None]) -> None:
        self.on_frame = on_frame

    def detach(self) -> None:
        self.on_frame = None
        self.detached += 1

    def transmit(self, frame: bytes) -> None:
        self.sent.append(frame)

    def hear(self, freq: float, k: int) -> None:
        assert self.on_frame is not None
        self.on_frame(tone(freq, k).astype("<i2").tobytes())

    def sent_pcm(self, skip: int = 0) -> np.ndarray:
        return np.frombuffer(b"".join(self.sent[skip:]), dtype="<i2").astype(np.int16)


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


_ports = [43000]


@pytest_asyncio.fixture(loop_scope="session")
async def engine(tmp_path: Path) -> AsyncIterator[tuple[MediaEngine, Clock]]:
    _ports[0] += 100
    clock = Clock()
    eng = MediaEngine(EngineSettings(port_min=_ports[0], port_max=_ports[0] + 99,
                                     recordings_dir=tmp_path / "rec"),
                      clock=clock, wallclock=lambda: 0.0)
    await eng.start(run_clock=False)
    yield eng, clock
    await eng.stop()


def _rx(eng: MediaEngine, leg: str) -> int:
    return sum(v for k, v in eng.leg_counters(leg).items() if k.startswith("rx"))


async def _talk(eng: MediaEngine, clock: Clock, frames: int, phone: Peer, freq: float,
                radio: Radio | None, radio_freq: float) -> None:
    for _ in range(frames):
        before = _rx(eng, "phone")
        phone.send_audio(tone(freq, phone.seq))
        await until(lambda before=before: _rx(eng, "phone") > before, "RTP from the phone")
        if radio is not None:
            radio.hear(radio_freq, len(radio.sent))
        clock.t += 0.02
        eng.tick(clock.t)


async def test_a_radio_leg_and_a_phone_hear_each_other_minus_self(
        engine: tuple[MediaEngine, Clock]) -> None:
    eng, clock = engine
    phone, radio = Peer(7), Radio()
    phone.use_answer(await eng.answer("phone", phone.offer()))
    await eng.join("call-1", "phone")
    eng.add_local("radio:fire", radio)
    await eng.join("call-1", "radio:fire")
    await _talk(eng, clock, 60, phone, 1000.0, radio, 600.0)
    assert_hears(phone.heard(skip=10), [600.0], [1000.0])
    assert_hears(radio.sent_pcm(skip=10), [1000.0], [600.0])
    counters = eng.leg_counters("radio:fire")
    assert counters["rx"] == 60 and counters["tx"] == 60
    assert eng.rooms() == {"call-1": ("phone", "radio:fire")}

    eng.mute("radio:fire")  # nobody hears the radio; the radio still hears the phone
    phone.drain()
    skip = len(phone.received)
    await _talk(eng, clock, 40, phone, 1000.0, radio, 600.0)
    heard = phone.heard(skip=skip + 5)
    assert float(np.abs(heard.astype(np.int32)).max()) < 50
    eng.mute("radio:fire", False)
    eng.set_mode("radio:fire", "listen")  # a monitored group: heard by none
    skip = len(phone.received)
    await _talk(eng, clock, 20, phone, 1000.0, radio, 600.0)
    assert float(np.abs(phone.heard(skip=skip + 5).astype(np.int32)).max()) < 50

    await eng.release("radio:fire")
    assert radio.detached == 1 and radio.on_frame is None
    assert eng.rooms() == {"call-1": ("phone",)}
    phone.close()


async def test_the_radio_is_recorded_on_the_caller_side(
        engine: tuple[MediaEngine, Clock], tmp_path: Path) -> None:
    eng, clock = engine
    caller, agent, radio = Peer(8), Peer(18), Radio()
    for leg, peer in (("caller", caller), ("agent", agent)):
        peer.use_answer(await eng.answer(leg, peer.offer()))
        await eng.join("call-9", leg)
    eng.add_local("radio:police", radio)  # patched in after the call taker answered
    await eng.join("call-9", "radio:police")
    for k in range(50):
        for leg, peer, freq in (("caller", caller, 1000.0), ("agent", agent, 1500.0)):
            before = _rx(eng, leg)
            peer.send_audio(tone(freq, peer.seq))
            await until(lambda leg=leg, before=before: _rx(eng, leg) > before, "RTP")
        radio.hear(600.0, k)
        clock.t += 0.02
        eng.tick(clock.t)
    assert_hears(radio.sent_pcm(skip=5), [1000.0, 1500.0], [600.0])
    for leg in ("radio:police", "caller", "agent"):
        await eng.release(leg)
    await eng.drain()
    files = list((tmp_path / "rec").rglob("*.wav"))
    assert len(files) == 1
    with wave.open(str(files[0])) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert_hears(data[400:, 0], [1000.0, 600.0], [1500.0])  # the far side: caller and radio
    assert_hears(data[400:, 1], [1500.0], [600.0, 1000.0])  # the call taker
    caller.close()
    agent.close()


def test_the_local_port_bounds_its_fifo_and_drops_wrong_sizes() -> None:
    radio = Radio()
    port = LocalPort(radio, depth=3)
    port.open()
    assert radio.on_frame is not None
    radio.on_frame(b"\x00" * 319)
    radio.on_frame(b"\x00" * 4000)
    for k in range(5):
        radio.on_frame(bytes([k]) * FRAME_BYTES)
    assert port.counters["rx_bad_size"] == 2 and port.counters["rx_overflow"] == 2
    got = [port.pop() for _ in range(4)]
    assert [int(g[0]) & 0xFF if g is not None else None for g in got] == [2, 3, 4, None]
    assert port.counters["rx_underrun"] == 1
    port.close()
    port.close()
    assert radio.detached == 1
    with pytest.raises(ValueError):
        LocalPort(radio, depth=0)


def test_a_burst_does_not_leave_a_standing_delay() -> None:
    """After a burst fills the FIFO, one frame in, one out per tick would keep the burst's
    frames standing for ever (40 ms more delay); the port sheds them, then leaves a steady
    source alone (and a source delivering two frames every other tick too)."""
    radio = Radio()
    port = LocalPort(radio, depth=3)
    port.open()
    assert radio.on_frame is not None
    for k in range(3):  # the burst
        radio.on_frame(bytes([k]) * FRAME_BYTES)
    depths = []
    for tick in range(4 * TRIM_WINDOW):
        radio.on_frame(bytes([(3 + tick) & 0xFF]) * FRAME_BYTES)  # steady: one per tick
        port.pop()
        depths.append(len(port._fifo))
    assert depths[0] == 2  # the burst stands behind every new frame
    # Each frame is now mixed on the tick after it arrived: the burst's 40 ms are gone.
    assert depths[-2 * TRIM_WINDOW:] == [0] * (2 * TRIM_WINDOW), depths
    assert port.counters["rx_trimmed"] == 2
    assert port.counters["rx_underrun"] == 0  # never trimmed into silence
    # Steady with no standing queue: nothing more is trimmed.
    for _tick in range(4 * TRIM_WINDOW):
        radio.on_frame(b"\x01" * FRAME_BYTES)
        assert port.pop() is not None
    for tick in range(4 * TRIM_WINDOW):  # PortAudio-style 40 ms callbacks: needed slack
        if tick % 2 == 0:
            radio.on_frame(b"\x01" * FRAME_BYTES)
            radio.on_frame(b"\x01" * FRAME_BYTES)
        assert port.pop() is not None
    assert port.counters["rx_trimmed"] == 2


async def test_a_failing_radio_never_stops_the_mix(engine: tuple[MediaEngine, Clock]) -> None:
    eng, clock = engine

    class Broken(Radio):
        def transmit(self, frame: bytes) -> None:
            raise OSError("sound card gone")

    phone, radio = Peer(9), Broken()
    phone.use_answer(await eng.answer("p", phone.offer()))
    await eng.join("r", "p")
    eng.add_local("radio:x", radio)
    await eng.join("r", "radio:x")
    with pytest.raises(ValueError, match="already exists"):
        eng.add_local("radio:x", radio)
    for _ in range(30):
        radio.hear(600.0, _)
        clock.t += 0.02
        eng.tick(clock.t)
    assert eng.leg_counters("radio:x")["tx_errors"] == 30
    await until(lambda: len(phone.drain()) > 0 or len(phone.received) >= 30, "RTP out")
    assert eng.stats["tick_errors"] == 0
    phone.close()
