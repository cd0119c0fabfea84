"""The media engine on real UDP sockets with a stepped clock: mixing, latching, hostile
peers, RFC 4733 DTMF, dead media, hold, recording and prompts."""

from __future__ import annotations

import hashlib
import socket
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from enginepeers import Peer, assert_hears, tone, until

from telephony.media.anchor import (
    DeadMedia,
    DtmfReceived,
    MediaAnchor,
    MediaEvent,
    PromptFinished,
    RecordingFailed,
    RecordingFinished,
)
from telephony.media.dtmf import TelephoneEvent, build_telephone_event
from telephony.media.engine import EngineSettings, MediaEngine, MediaUnavailable
from telephony.media.forcein import ModeKeys
from telephony.media.prompts import PromptError, hold_tone, load_prompt, write_prompt
from telephony.media.rtp import RtcpReceiverReport, RtcpSenderReport, RtpPacket, parse_rtcp
from telephony.media.sdp import SdpError

PROMPTS = Path(__file__).resolve().parents[2] / "conf" / "prompts"


class Clock:
    """A stepped clock for the engine."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Rig:
    """An engine without its ticker, a stepped clock and the events it published."""

    def __init__(self, engine: MediaEngine, clock: Clock) -> None:
        self.engine, self.clock = engine, clock
        self.events: list[MediaEvent] = []
        engine.subscribe(self.events.append)

    async def connect(self, leg: str, peer: Peer, **offer: object) -> None:
        peer.use_answer(await self.engine.answer(leg, peer.offer(**offer)))  # type: ignore[arg-type]

    def step(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            self.clock.t += 0.02
            self.engine.tick(self.clock.t)

    async def talk(self, frames: int, peers: dict[str, tuple[Peer, float]]) -> None:
        """Each peer sends ``frames`` packets of its tone, one per tick."""
        for _ in range(frames):
            for leg, (peer, freq) in peers.items():
                before = self.engine.leg_counters(leg)
                peer.send_audio(tone(freq, peer.seq))
                await until(lambda leg=leg, before=before: _seen(self.engine, leg) > _total(before),
                            f"packet on {leg}")
            self.step()


def _total(c: dict[str, int]) -> int:
    return sum(v for k, v in c.items() if k.startswith("rx"))


def _seen(engine: MediaEngine, leg: str) -> int:
    return _total(engine.leg_counters(leg))


_port_base = [40000]


@pytest_asyncio.fixture(loop_scope="session")
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    _port_base[0] += 100
    clock = Clock()
    settings = EngineSettings(port_min=_port_base[0], port_max=_port_base[0] + 99,
                              dead_media_s=2.0, recordings_dir=tmp_path / "rec",
                              prompts_dir=PROMPTS)
    engine = MediaEngine(settings, clock=clock, wallclock=lambda: 0.0)
    await engine.start(run_clock=False)
    yield Rig(engine, clock)
    await engine.stop()


def test_engine_satisfies_the_anchor_protocol(rig: Rig) -> None:
    anchor: MediaAnchor = rig.engine
    assert anchor is rig.engine


async def test_each_leg_hears_the_other_and_latches_behind_nat(rig: Rig) -> None:
    a, b = Peer(1), Peer(2)
    # A's SDP names a port nobody listens on (a NAT rewrote it): symmetric RTP must latch.
    await rig.connect("a", a, port=9)
    await rig.connect("b", b)
    await rig.engine.join("call", "a")
    await rig.engine.join("call", "b")
    await rig.talk(60, {"a": (a, 500.0), "b": (b, 1100.0)})
    assert_hears(a.heard(skip=20), [1100.0], [500.0])
    assert_hears(b.heard(skip=20), [500.0], [1100.0])
    assert rig.engine.health()["legs"] == 2 and rig.engine.rooms() == {"call": ("a", "b")}


async def test_hostile_packets_are_counted_and_dropped(rig: Rig) -> None:
    a, b, attacker = Peer(1), Peer(2), Peer(0xBAD)
    await rig.connect("a", a)
    await rig.connect("b", b)
    await rig.engine.join("call", "a")
    await rig.engine.join("call", "b")
    await rig.talk(10, {"a": (a, 500.0), "b": (b, 1100.0)})
    attacker.dest = a.dest
    attacker.sock.sendto(b"\x00garbage", a.dest)
    attacker.sock.sendto(b"\x80" * 3000, a.dest)
    for _ in range(200):  # a flood of valid RTP with another SSRC from another port
        attacker.send_audio(tone(2300.0, attacker.seq))
    a.send(RtpPacket(0, a.seq, 160 * a.seq, a.ssrc, b"\xff" * 400))  # wrong size
    a.send(RtpPacket(18, a.seq, 160 * a.seq, a.ssrc, b"\xff" * 20))  # not negotiated
    await until(lambda: _seen(rig.engine, "a") >= 10 + 204, "hostile packets")
    counters = rig.engine.leg_counters("a")
    assert counters["rx_bad"] == 2 and counters["rx_foreign"] == 200
    assert counters["rx_bad_size"] == 1 and counters["rx_ignored"] >= 1
    await rig.talk(40, {"a": (a, 500.0), "b": (b, 1100.0)})
    assert_hears(b.heard(skip=20), [500.0], [2300.0])
    assert attacker.drain() == []


async def test_rfc4733_digits_reported_once_each(rig: Rig) -> None:
    a = Peer(7)
    await rig.connect("a", a)
    for _ in range(3):
        a.send_audio(tone(500.0, a.seq))
    for event, ts in ((5, 8000), (11, 16000)):
        for n, end in ((1, False), (2, False), (3, False), (4, True), (4, True), (4, True)):
            payload = build_telephone_event(TelephoneEvent(event, end, 10, 160 * n))
            a.send(RtpPacket(101, a.seq & 0xFFFF, ts, a.ssrc, payload, marker=n == 1))
    await until(lambda: rig.engine.leg_counters("a")["rx"] == 2 + 12, "DTMF packets")
    assert [e for e in rig.events if isinstance(e, DtmfReceived)] == [
        DtmfReceived("a", "5", "rfc4733"), DtmfReceived("a", "#", "rfc4733")]


async def test_dead_media_fires_once_per_silence(rig: Rig) -> None:
    a = Peer(3)
    await rig.connect("a", a)
    await rig.talk(5, {"a": (a, 500.0)})
    rig.step(int(1.8 / 0.02))
    assert not [e for e in rig.events if isinstance(e, DeadMedia)]
    rig.step(int(1.0 / 0.02))
    rig.step(200)
    dead = [e for e in rig.events if isinstance(e, DeadMedia)]
    assert len(dead) == 1 and dead[0].leg_id == "a" and dead[0].silent_s >= 2.0
    await rig.talk(3, {"a": (a, 500.0)})
    rig.step(200)
    assert len([e for e in rig.events if isinstance(e, DeadMedia)]) == 2


async def test_hold_stops_sending_and_silences_the_dead_media_check(rig: Rig) -> None:
    a = Peer(4)
    await rig.connect("a", a)
    rig.step(5)
    await until(lambda: len(a.drain()) > 0 or bool(a.received), "media before hold")
    await rig.connect("a", a, direction="inactive")
    a.drain()
    rig.step(300)
    assert a.drain() == [] and not [e for e in rig.events if isinstance(e, DeadMedia)]
    await rig.connect("a", a, direction="sendrecv")
    rig.step(3)
    await until(lambda: len(a.drain()) > 0, "media after resume")


async def test_listen_whisper_barge_switch_mid_call(rig: Rig) -> None:
    caller, taker, boss = Peer(1), Peer(2), Peer(3)
    for leg, peer in (("caller", caller), ("taker", taker), ("boss", boss)):
        await rig.connect(leg, peer)
        await rig.engine.join("call", leg, "listen" if leg == "boss" else "talk")
    tones = {"caller": (caller, 500.0), "taker": (taker, 1100.0), "boss": (boss, 1700.0)}
    await rig.talk(40, tones)
    assert_hears(caller.heard(skip=20), [1100.0], [1700.0])
    assert_hears(taker.heard(skip=20), [500.0], [1700.0])
    assert_hears(boss.heard(skip=20), [500.0, 1100.0], [1700.0])
    rig.engine.set_mode("boss", "whisper:taker")
    mark = {p: len(p.received) + len(p.drain()) for p in (caller, taker)}
    await rig.talk(40, tones)
    assert_hears(caller.heard(skip=mark[caller] + 5), [1100.0], [1700.0])
    assert_hears(taker.heard(skip=mark[taker] + 5), [500.0, 1700.0], [])
    rig.engine.set_mode("boss", "barge")
    mark = {p: len(p.received) + len(p.drain()) for p in (caller, taker)}
    await rig.talk(40, tones)
    assert_hears(caller.heard(skip=mark[caller] + 5), [1100.0, 1700.0], [500.0])


async def test_recording_is_sealed_with_its_sha256(rig: Rig) -> None:
    a, b, boss = Peer(1), Peer(2), Peer(3)
    for leg, peer in (("a", a), ("b", b), ("boss", boss)):
        await rig.connect(leg, peer)
        await rig.engine.join("call-1", leg, "listen" if leg == "boss" else "talk")
    await rig.talk(50, {"a": (a, 500.0), "b": (b, 1100.0), "boss": (boss, 1700.0)})
    for leg in ("a", "b", "boss"):
        await rig.engine.release(leg)
    await rig.engine.drain()
    done = [e for e in rig.events if isinstance(e, RecordingFinished)]
    assert len(done) == 1 and done[0].room == "call-1"
    path = Path(done[0].path)
    assert path.parent.name == "1970-01-01" and path.name.startswith("call-1-")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == done[0].sha256
    assert (path.parent / (path.name + ".sha256")).read_text() == f"{done[0].sha256}  {path.name}\n"
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert done[0].duration_s == pytest.approx(len(pcm) / 8000)
    assert_hears(pcm[800:, 0], [500.0], [1100.0, 1700.0])
    assert_hears(pcm[800:, 1], [1100.0], [500.0, 1700.0])


async def test_recording_failure_raises_an_alarm_and_the_call_goes_on(rig: Rig) -> None:
    assert rig.engine.settings.recordings_dir is not None
    (rig.engine.settings.recordings_dir / "1970-01-01").write_text("not a directory")
    a, b = Peer(1), Peer(2)
    await rig.connect("a", a)
    await rig.connect("b", b)
    await rig.engine.join("call", "a")
    await rig.engine.join("call", "b")
    failed = [e for e in rig.events if isinstance(e, RecordingFailed)]
    assert len(failed) == 1 and failed[0].room == "call"
    await rig.talk(40, {"a": (a, 500.0), "b": (b, 1100.0)})
    assert_hears(b.heard(skip=20), [500.0], [1100.0])


async def test_prompts_loop_for_hold_and_report_their_end(rig: Rig, tmp_path: Path) -> None:
    a = Peer(5)
    await rig.connect("a", a)
    rig.engine.play_to_leg("a", "hold", loop=True)
    for _ in range(30):  # six seconds: longer than the four-second prompt
        rig.step(10)
        await until(lambda: len(a.drain()) > 0 or len(a.received) % 10 == 0, "hold prompt")
    await until(lambda: len(a.received) + len(a.drain()) >= 300, "hold prompt")
    heard = a.heard()
    assert_hears(heard[:8000], [392.0, 523.25], [1000.0])
    assert len(heard) == 48000
    assert_hears(heard[32000:40000], [392.0, 523.25], [1000.0])  # looped past the end
    assert not [e for e in rig.events if isinstance(e, PromptFinished)]
    await rig.engine.join("q", "a")
    rig.engine.play_to_room("q", "hold")
    rig.step(250)
    assert PromptFinished("q", "hold", stopped=False) in rig.events
    with pytest.raises(PromptError, match="must be 1..64"):
        rig.engine.play_to_leg("a", "../../etc/passwd")
    with pytest.raises(PromptError, match="cannot read"):
        rig.engine.play_to_leg("a", "missing")


def test_prompt_files_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "cd.wav"
    with wave.open(str(bad), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"\0" * 400)
    with pytest.raises(PromptError, match="mono 8000 Hz 16-bit"):
        load_prompt(bad)
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(PromptError, match="not a PCM WAV"):
        load_prompt(tmp_path / "junk.wav")
    good = tmp_path / "ok.wav"
    write_prompt(good, hold_tone())
    assert np.array_equal(load_prompt(good), load_prompt(PROMPTS / "hold.wav"))


async def test_bad_requests_raise_value_errors(rig: Rig) -> None:
    a = Peer(1)
    await rig.connect("a", a)
    with pytest.raises(ValueError, match="unknown leg"):
        rig.engine.set_mode("nobody", "listen")
    with pytest.raises(ValueError, match="room name"):
        await rig.engine.join("", "nobody")
    assert rig.engine.health()["legs"] == 1  # a refused join opens nothing
    with pytest.raises(ValueError, match="unknown mode"):
        await rig.engine.join("r", "a", "shout")
    with pytest.raises(ValueError, match="whisper target"):
        await rig.engine.join("r", "a", "whisper:a")
    with pytest.raises(SdpError, match="no acceptable audio"):
        await rig.engine.answer("new", a.offer(formats="9", dtmf=False))
    assert rig.engine.health()["legs"] == 1  # the refused leg gave its ports back
    with pytest.raises(SdpError, match="no offer outstanding"):
        await rig.engine.accept("a", a.offer())
    await rig.engine.release("a")
    await rig.engine.release("a")  # idempotent


async def test_a_leg_joined_before_its_sdp_is_opened_then_answered(rig: Rig) -> None:
    """The B2BUA joins a leg to its call's room before it answers or offers for it."""
    a, b = Peer(11), Peer(12)
    await rig.engine.join("call", "caller")
    await rig.engine.join("call", "agent")
    assert rig.engine.rooms() == {"call": ("caller", "agent")}
    assert rig.engine.health()["legs"] == 2
    a.use_answer(await rig.engine.answer("caller", a.offer()))
    b.use_answer(await rig.engine.offer("agent"))
    await rig.engine.accept("agent", b.offer())
    assert rig.engine.rooms() == {"call": ("caller", "agent")}  # answering kept the room
    await rig.talk(30, {"caller": (a, 700.0), "agent": (b, 1300.0)})
    await until(lambda: len(b.drain()) >= 25, "media to the agent")
    assert_hears(b.heard(skip=5), [700.0], [1300.0])


async def test_outbound_leg_offer_and_accept(rig: Rig) -> None:
    a = Peer(6)
    text = await rig.engine.offer("out")
    assert "m=audio" in text and "telephone-event/8000" in text
    a.use_answer(text)
    await rig.engine.accept("out", a.offer(formats="8 0"))
    rig.step(3)
    await until(lambda: len(a.drain()) > 0, "media to the answerer")
    assert a.received[0].payload_type == 8


async def test_port_range_exhaustion_is_media_unavailable(tmp_path: Path) -> None:
    engine = MediaEngine(EngineSettings(port_min=39990, port_max=39991), clock=Clock())
    await engine.start(run_clock=False)
    try:
        await engine.offer("one")
        with pytest.raises(MediaUnavailable, match="no free RTP port pair"):
            await engine.offer("two")
    finally:
        await engine.stop()


def send_digit(peer: Peer, event: int, ts: int) -> None:
    """One RFC 4733 key press: two updates and the end three times."""
    for n, end in ((1, False), (2, False), (3, True), (3, True), (3, True)):
        payload = build_telephone_event(TelephoneEvent(event, end, 10, 160 * n))
        peer.send(RtpPacket(101, peer.seq & 0xFFFF, ts, peer.ssrc, payload, marker=n == 1))


async def test_supervisor_switches_mode_by_dtmf(rig: Rig) -> None:
    caller, taker, boss = Peer(1), Peer(2), Peer(3)
    for leg, peer in (("caller", caller), ("taker", taker), ("boss", boss)):
        await rig.connect(leg, peer)
        await rig.engine.join("call", leg, "listen" if leg == "boss" else "talk")
    rig.engine.mode_keys("boss", whisper_to="taker")
    tones = {"caller": (caller, 500.0), "taker": (taker, 1100.0), "boss": (boss, 1700.0)}
    await rig.talk(10, tones)

    pressed = [0]

    async def press(keys: str) -> None:
        for key in keys:
            send_digit(boss, "0123456789*#".index(key), 160 * boss.seq)
        pressed[0] += len(keys)
        await until(lambda: len([e for e in rig.events if isinstance(e, DtmfReceived)])
                    == pressed[0], f"digits {keys}")

    await press("*2")
    mark = {p: len(p.received) + len(p.drain()) for p in (caller, taker)}
    await rig.talk(40, tones)
    assert_hears(caller.heard(skip=mark[caller] + 5), [1100.0], [1700.0])
    assert_hears(taker.heard(skip=mark[taker] + 5), [500.0, 1700.0], [])
    await press("2*3")  # a lone 2 changes nothing; *3 barges
    mark = {p: len(p.received) + len(p.drain()) for p in (caller, taker)}
    await rig.talk(40, tones)
    assert_hears(caller.heard(skip=mark[caller] + 5), [1100.0, 1700.0], [])
    await press("*1")
    mark = {p: len(p.received) + len(p.drain()) for p in (caller, taker)}
    await rig.talk(40, tones)
    assert_hears(caller.heard(skip=mark[caller] + 5), [1100.0], [1700.0])
    assert_hears(taker.heard(skip=mark[taker] + 5), [500.0], [1700.0])


def test_mode_keys_need_star_within_the_timeout() -> None:
    keys = ModeKeys("taker", timeout_s=3.0)
    assert keys.feed("2", 0.0) is None
    assert keys.feed("*", 1.0) is None and keys.feed("2", 2.0) == "whisper:taker"
    assert keys.feed("*", 3.0) is None and keys.feed("3", 6.5) is None  # too late
    assert keys.feed("*", 7.0) is None and keys.feed("#", 7.1) is None
    assert keys.feed("1", 7.2) is None  # the # cancelled the star
    assert keys.feed("*", 8.0) is None and keys.feed("1", 8.1) == "listen"
    assert keys.feed("*", 9.0) is None and keys.feed("3", 9.1) == "barge"


async def test_ipv6_legs(tmp_path: Path) -> None:
    clock = Clock()
    engine = MediaEngine(EngineSettings(bind_address="::1", port_min=39000, port_max=39099),
                         clock=clock)
    rig = Rig(engine, clock)
    await engine.start(run_clock=False)
    a, b = Peer(1, host="::1"), Peer(2, host="::1")
    try:
        await rig.connect("a", a)
        answer = await engine.answer("b", b.offer())
        b.use_answer(answer)
        assert "c=IN IP6 ::1\r\n" in answer
        await engine.join("v6", "a")
        await engine.join("v6", "b")
        await rig.talk(40, {"a": (a, 500.0), "b": (b, 1100.0)})
        assert_hears(a.heard(skip=20), [1100.0], [500.0])
    finally:
        await engine.stop()


async def test_rtcp_reports_go_to_the_port_above(rig: Rig) -> None:
    while True:  # a peer whose RTP port has a free odd neighbour for its RTCP
        a = Peer(8)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind(("127.0.0.1", a.port + 1))
            break
        except OSError:
            rtcp.close()
            a.close()
    rtcp.setblocking(False)
    try:
        await rig.connect("a", a)
        await rig.talk(300, {"a": (a, 500.0)})  # past the 5 s report interval
        reports: list[object] = []
        await until(lambda: _read_rtcp(rtcp, reports) >= 2, "two RTCP compounds")
    finally:
        rtcp.close()
    first, second = reports[:2]
    assert isinstance(first[0], RtcpReceiverReport)  # type: ignore[index]
    sr = second[0]  # type: ignore[index]
    assert isinstance(sr, RtcpSenderReport) and sr.packet_count >= 200
    assert sr.reports and sr.reports[0].ssrc == a.ssrc
    assert second[1].packet_type == 202 and b"dispatchd@" in second[1].body  # type: ignore[index]


def _read_rtcp(sock: socket.socket, into: list[object]) -> int:
    while True:
        try:
            into.append(parse_rtcp(sock.recv(2048)))
        except BlockingIOError:
            return len(into)
