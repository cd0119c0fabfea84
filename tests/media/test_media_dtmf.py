"""RFC 4733 telephone-events, the DTMF receiver, and the in-band detector."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.media.dtmf import (
    DtmfDigit,
    DtmfReceiver,
    InbandDtmfDetector,
    TelephoneEvent,
    build_telephone_event,
    parse_telephone_event,
)
from telephony.media.errors import InvalidPacket, MediaError, Truncated
from telephony.media.rtp import RtpPacket

PT = 101


def ev_packet(seq: int, ts: int, event: int, duration: int, end: bool = False, ssrc: int = 7) -> RtpPacket:
    payload = build_telephone_event(TelephoneEvent(event, end, 10, duration))
    return RtpPacket(PT, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, marker=duration == 160)


@pytest.mark.parametrize("ev", [TelephoneEvent(0), TelephoneEvent(11, True, 63, 65535), TelephoneEvent(255, False, 0, 1)])
def test_event_round_trip(ev: TelephoneEvent) -> None:
    assert parse_telephone_event(build_telephone_event(ev)) == ev


def test_event_known_bytes() -> None:
    assert parse_telephone_event(b"\x05\x8a\x03\x20") == TelephoneEvent(5, True, 10, 800)


@pytest.mark.parametrize(("payload", "error"), [(b"", Truncated), (b"\x01\x02\x03", Truncated), (b"\x01\x02\x03\x04\x05", InvalidPacket)])
def test_event_errors(payload: bytes, error: type[MediaError]) -> None:
    with pytest.raises(error):
        parse_telephone_event(payload)


@given(st.binary(max_size=8))
def test_event_any_bytes(data: bytes) -> None:
    try:
        ev = parse_telephone_event(data)
    except MediaError:
        return
    # The R bit is reserved: ignored on receipt, sent as zero.
    assert build_telephone_event(ev) == data[:1] + bytes((data[1] & 0xBF,)) + data[2:]


def key_press(seq: int, ts: int, event: int, updates: int = 4) -> list[RtpPacket]:
    """What a typical sender emits: growing durations, then three end packets."""
    packets = [ev_packet(seq + i, ts, event, 160 * (i + 1)) for i in range(updates)]
    end = 160 * updates
    packets += [ev_packet(seq + updates + i, ts, event, end, end=True) for i in range(3)]
    return packets


def digits(receiver: DtmfReceiver, packets: list[RtpPacket]) -> str:
    return "".join(d.digit for p in packets if (d := receiver.receive(p)) is not None)


def test_one_digit_per_press_despite_repeats_and_retransmitted_ends() -> None:
    rx = DtmfReceiver(PT)
    stream = key_press(1, 1000, 1) + key_press(8, 3000, 1) + key_press(15, 5000, 11)
    assert digits(rx, stream) == "11#"


def test_reordering_stragglers_and_redelivery() -> None:
    rx = DtmfReceiver(PT)
    first, second = key_press(1, 1000, 5), key_press(8, 3000, 6)
    stream = second[:2] + first[3:] + second[2:] + first  # old event arrives late, then all again
    assert digits(rx, stream) == "65"
    assert digits(rx, first + second) == ""


def test_lost_start_still_reports_on_end_packet() -> None:
    rx = DtmfReceiver(PT)
    assert rx.receive(ev_packet(9, 4000, 9, 800, end=True)) == DtmfDigit("9", 7, 4000)


def test_long_event_segments_are_one_press() -> None:
    rx = DtmfReceiver(PT)
    seg1 = [ev_packet(1, 0xFFFFFF00, 0, 160), ev_packet(2, 0xFFFFFF00, 0, 0xFFFF)]
    seg2 = [ev_packet(3, 0xFFFFFF00 + 0xFFFF, 0, 160), ev_packet(4, 0xFFFFFF00 + 0xFFFF, 0, 400, end=True)]
    assert digits(rx, seg1 + seg2) == "0"


def test_other_payloads_and_malformed_are_ignored() -> None:
    rx = DtmfReceiver(PT)
    assert rx.receive(RtpPacket(0, 1, 1, 7, b"\xff" * 160)) is None
    assert rx.receive(RtpPacket(PT, 2, 2, 7, b"\x01")) is None
    assert rx.malformed == 1
    assert rx.receive(ev_packet(3, 3, 16, 160)) is None  # flash and other events: not digits


def test_ssrc_distinguishes_streams() -> None:
    rx = DtmfReceiver(PT)
    assert digits(rx, [ev_packet(1, 100, 2, 160, ssrc=1), ev_packet(1, 100, 2, 160, ssrc=2)]) == "22"


LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")


def tone(freqs: tuple[float, ...], amps: tuple[float, ...], frame: int = 0) -> np.ndarray:
    t = (np.arange(160) + 160 * frame) / 8000
    x = sum(a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amps, strict=True))
    return np.asarray(x).astype(np.int16)


@pytest.mark.parametrize("row", range(4))
@pytest.mark.parametrize("col", range(4))
def test_inband_every_key(row: int, col: int) -> None:
    det = InbandDtmfDetector()
    f = (LOW[row], HIGH[col])
    out = [det.feed(tone(f, (4000, 4000), i)) for i in range(5)]
    assert [d.digit for d in out if d] == [KEYPAD[row][col]]


@pytest.mark.parametrize(
    ("amps", "expected"),
    [((4000, 4000 * 10 ** (-7 / 20)), "5"),  # 7 dB normal twist: accepted
     ((4000, 4000 * 10 ** (-10 / 20)), None),  # 10 dB: rejected
     ((4000 * 10 ** (-3 / 20), 4000), "5"),  # 3 dB reverse twist: accepted
     ((4000 * 10 ** (-6 / 20), 4000), None),  # 6 dB reverse: rejected
     ((100, 100), None)],  # below the level floor
)
def test_inband_twist_and_level(amps: tuple[float, float], expected: str | None) -> None:
    det = InbandDtmfDetector()
    assert det.classify(tone((770.0, 1336.0), amps)) == expected


def test_inband_rejects_single_tone_noise_and_speechlike() -> None:
    det = InbandDtmfDetector()
    rng = np.random.default_rng(1)
    assert det.classify(tone((1000.0,), (8000,))) is None
    assert det.classify(rng.normal(0, 3000, 160).astype(np.int16)) is None
    # Two DTMF tones buried in strong noise lack the purity.
    noisy = tone((770.0, 1336.0), (2000, 2000)).astype(np.int32) + rng.normal(0, 4000, 160).astype(np.int32)
    assert det.classify(np.clip(noisy, -32768, 32767).astype(np.int16)) is None


def test_inband_needs_two_frames_and_rearms_after_a_gap() -> None:
    det = InbandDtmfDetector()
    key = tone((852.0, 1477.0), (4000, 4000))
    silence = np.zeros(160, dtype=np.int16)
    seq = [key, silence, key, key, key, silence, key, key]
    out = [det.feed(f) for f in seq]
    assert [d.digit if d else None for d in out] == [None, None, None, "9", None, None, None, "9"]


from telephony.media.dtmf import RedundantBlock, build_red, parse_red  # noqa: E402

RED = 100


def test_red_round_trip_and_known_layout() -> None:
    blocks = (RedundantBlock(PT, 320, b"\x01\x8a\x03\x20"), RedundantBlock(PT, 160, b"\x02\x0a\x00\xa0"),
              RedundantBlock(PT, 0, b"\x03\x0a\x00\xa0"))
    wire = build_red(blocks)
    assert wire[:4] == bytes.fromhex("e5050004") and wire[8] == PT
    assert parse_red(wire) == blocks
    assert parse_red(bytes((PT,)) + b"abcd") == (RedundantBlock(PT, 0, b"abcd"),)


@pytest.mark.parametrize(("wire", "error"), [(b"", Truncated), (b"\xe5\x05\x00", Truncated),
                                             (b"\xe5\x05\x00\x08\x65abc", Truncated),
                                             (b"\xe5\x05\x00\x00" * 17 + b"\x65", InvalidPacket)])
def test_red_errors(wire: bytes, error: type[MediaError]) -> None:
    with pytest.raises(error):
        parse_red(wire)


@given(st.binary(max_size=64))
def test_red_any_bytes(data: bytes) -> None:
    try:
        blocks = parse_red(data)
    except MediaError:
        return
    assert build_red(blocks) == data


def test_receiver_recovers_a_lost_press_from_redundancy() -> None:
    rx = DtmfReceiver(PT, red_payload_type=RED)
    one = build_telephone_event(TelephoneEvent(1, True, 10, 800))
    two = build_telephone_event(TelephoneEvent(2, False, 10, 160))
    # Every packet of "1" (ts 1000) was lost; the first packet of "2" (ts 2000) carries a copy.
    wire = build_red([RedundantBlock(PT, 1000, one), RedundantBlock(PT, 0, two)])
    packet = RtpPacket(RED, 50, 2000, 7, wire)
    assert [d.digit for d in rx.receive_all(packet)] == ["1", "2"]
    assert rx.receive_all(packet) == []  # the same copy again
    assert [d.digit for d in rx.receive_all(ev_packet(51, 3000, 3, 160))] == ["3"]  # plain still works
    assert rx.receive_all(RtpPacket(RED, 52, 3000, 7, b"\xe5")) == [] and rx.malformed == 1
