"""The cores wired the way the adapter will: RTP bytes in, latch, jitter buffer, G.711,
mixer, G.711, RTP bytes out, with a supervisor forcing in and DTMF in band and out of band."""

from __future__ import annotations

import numpy as np

from telephony.media.dtmf import (
    DtmfReceiver,
    InbandDtmfDetector,
    TelephoneEvent,
    build_telephone_event,
)
from telephony.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from telephony.media.jitter import Frame, JitterBuffer, RtpLatch, render_concealment
from telephony.media.mixer import Channel, LegConfig, LegMode, Mixer
from telephony.media.rtp import RtpPacket, build_rtp, parse_rtp

TICK = 0.02
PEERS = {"caller": ("198.51.100.1", 4000), "taker": ("10.0.0.2", 5000), "super": ("10.0.0.3", 6000)}
FREQS = {"caller": 450.0, "taker": 1050.0, "super": 1650.0}


def tone(freq: float, k: int) -> np.ndarray:
    t = (np.arange(160) + 160 * k) / 8000
    return np.round(4000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def level(frame: np.ndarray, freq: float) -> float:
    spectrum = np.abs(np.fft.rfft(frame.astype(np.float64))) * 2 / 160
    return float(spectrum[int(freq / 50)])


def test_three_legs_through_every_core() -> None:
    mixer = Mixer()
    mixer.add_leg("caller", LegConfig("call", channel=Channel.CALLER))
    mixer.add_leg("taker", LegConfig("call", channel=Channel.CALL_TAKER))
    mixer.add_leg("super", LegConfig("call", LegMode.WHISPER, whisper_to="taker",
                                     channel=Channel.CALL_TAKER))
    mixer.set_recording("call", True)
    latches = {leg: RtpLatch(addr) for leg, addr in PEERS.items()}
    buffers = {leg: JitterBuffer() for leg in PEERS}
    last: dict[str, np.ndarray] = {}
    heard: dict[str, list[np.ndarray]] = {leg: [] for leg in PEERS}
    codec = {"caller": (ulaw_encode, ulaw_decode), "taker": (alaw_encode, alaw_decode),
             "super": (ulaw_encode, ulaw_decode)}
    for k in range(30):
        now = k * TICK
        for n, leg in enumerate(PEERS):
            # After latching, swap every pair of the caller's packets in flight.
            i = k ^ 1 if leg == "caller" and 4 <= k < 28 else k
            payload = codec[leg][0](tone(FREQS[leg], i))
            wire = build_rtp(RtpPacket(0 if leg != "taker" else 8, i, 160 * i, 100 + n, payload))
            packet = parse_rtp(wire)
            if latches[leg].receive(PEERS[leg], packet, now).name == "ACCEPT":
                buffers[leg].push(packet, now)
        frames = {}
        for leg in PEERS:
            got = buffers[leg].pop(now)
            if isinstance(got, Frame):
                pcm = codec[leg][1](got.packet.payload)
                last[leg] = pcm
            else:
                pcm = render_concealment(got, last.get(leg))
            frames[leg] = pcm
        result = mixer.mix(frames)
        for leg, out in result.outputs.items():
            heard[leg].append(codec[leg][1](codec[leg][0](out)))
    for leg in PEERS:
        stats = buffers[leg].stats()
        assert (stats.lost, stats.late, stats.duplicate) == (0, 0, 0)
    rec = result.recordings["call"]
    assert level(rec[:, 0], FREQS["caller"]) > 3000 and level(rec[:, 0], FREQS["taker"]) < 100
    assert level(rec[:, 1], FREQS["taker"]) > 3000 and level(rec[:, 1], FREQS["super"]) > 3000
    late = {leg: heard[leg][-1] for leg in PEERS}
    assert level(late["caller"], FREQS["taker"]) > 3000 and level(late["caller"], FREQS["super"]) < 100
    assert level(late["taker"], FREQS["caller"]) > 3000 and level(late["taker"], FREQS["super"]) > 3000
    assert level(late["super"], FREQS["caller"]) > 3000 and level(late["super"], FREQS["taker"]) > 3000


def test_dtmf_both_ways_through_g711() -> None:
    rx = DtmfReceiver(101)
    event = build_telephone_event(TelephoneEvent(11, False, 10, 160))
    assert rx.receive(parse_rtp(build_rtp(RtpPacket(101, 1, 800, 9, event, marker=True)))).digit == "#"
    det = InbandDtmfDetector()
    digits = []
    for k in range(4):
        t = (np.arange(160) + 160 * k) / 8000
        x = np.round(3000 * np.sin(2 * np.pi * 941 * t) + 3000 * np.sin(2 * np.pi * 1477 * t))
        decoded = alaw_decode(alaw_encode(x.astype(np.int16)))
        if (d := det.feed(decoded)) is not None:
            digits.append(d.digit)
    assert digits == ["#"]
