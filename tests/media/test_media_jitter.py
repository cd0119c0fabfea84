"""Jitter buffer and RTP latching, driven by a stepped ``now``."""

from __future__ import annotations

import numpy as np
import pytest

from telephony.media.jitter import (
    Concealment,
    ConcealmentKind,
    Frame,
    JitterBuffer,
    JitterSettings,
    LatchSettings,
    LatchVerdict,
    RtpLatch,
    render_concealment,
)
from telephony.media.rtp import RtpPacket

TICK = 0.02


def pkt(i: int, seq0: int = 1000, ts0: int = 5000, ssrc: int = 1, marker: bool = False,
        ts_offset: int = 0) -> RtpPacket:
    return RtpPacket(0, (seq0 + i) & 0xFFFF, (ts0 + 160 * i + ts_offset) & 0xFFFFFFFF, ssrc,
                     bytes([i & 0xFF]) * 160, marker=marker)


def run(jb: JitterBuffer, arrivals: list[tuple[float, RtpPacket]], ticks: int,
        start: float = 0.0) -> list[int | str]:
    """Push each packet at its arrival time, pop at every tick; label the outputs."""
    pending = sorted(arrivals, key=lambda a: a[0])
    out: list[int | str] = []
    for k in range(ticks):
        now = start + k * TICK
        while pending and pending[0][0] <= now + 1e-9:
            jb.push(pending.pop(0)[1], now)
        got = jb.pop(now)
        if isinstance(got, Frame):
            out.append(got.packet.payload[0])
        elif got.kind is ConcealmentKind.REPEAT:
            out.append(f"R{got.gain}")
        else:
            out.append("-")
    return out


def steady(n: int, **kw: int) -> list[tuple[float, RtpPacket]]:
    return [(i * TICK, pkt(i, **kw)) for i in range(n)]


def test_in_order_stream_plays_after_min_delay() -> None:
    jb = JitterBuffer()
    out = run(jb, steady(5), 8)
    assert out == ["-", 0, 1, 2, 3, 4, "R1.0", "R0.7"]
    s = jb.stats()
    assert (s.received, s.lost, s.late, s.duplicate) == (5, 0, 0, 0)
    assert s.target_delay_ms == pytest.approx(20.0)


def test_reordering_and_duplicates() -> None:
    jb = JitterBuffer(JitterSettings(min_delay=0.04))
    order = [0, 2, 1, 1, 3, 5, 4, 0]
    arrivals = [(k * TICK, pkt(i)) for k, i in enumerate(order)]
    out = run(jb, arrivals, 9)
    assert out[2:8] == [0, 1, 2, 3, 4, 5]
    assert jb.stats().duplicate == 2


def test_loss_is_concealed_with_fade_then_silence() -> None:
    jb = JitterBuffer()
    arrivals = [a for a in steady(12) if a[1].payload[0] not in range(3, 10)]
    out = run(jb, arrivals, 13)
    assert out[1:] == [0, 1, 2, "R1.0", "R0.7", "R0.4", "R0.2", "-", "-", "-", 10, 11]
    s = jb.stats()
    assert (s.lost, s.concealed) == (7, 7)


def test_too_late_packet_is_dropped() -> None:
    jb = JitterBuffer()
    arrivals = [a for a in steady(6) if a[1].payload[0] != 2] + [(0.1, pkt(2))]
    out = run(jb, arrivals, 7)
    assert out[1:] == [0, 1, "R1.0", 3, 4, 5]
    s = jb.stats()
    assert (s.late, s.lost) == (1, 0)


@pytest.mark.parametrize(("seq0", "ts0"), [(65533, 0xFFFFFFFF - 320), (0xFFFF, 0xFFFFFF00)])
def test_sequence_and_timestamp_wraparound(seq0: int, ts0: int) -> None:
    jb = JitterBuffer()
    arrivals = [(k * TICK, pkt(i, seq0=seq0, ts0=ts0)) for k, i in enumerate([0, 1, 3, 2, 4, 5, 6])]
    assert run(jb, arrivals, 8)[1:] == [0, 1, 2, 3, 4, 5, 6]
    assert jb.stats().lost == 0


def test_ssrc_change_resyncs() -> None:
    jb = JitterBuffer()
    arrivals = steady(3) + [(0.08 + k * TICK, pkt(k, seq0=7, ts0=99999, ssrc=2)) for k in range(3)]
    out = run(jb, arrivals, 8)
    # The new source is buffered afresh: one slot of silence while it fills.
    assert out == ["-", 0, 1, 2, "-", 0, 1, 2]
    assert jb.stats().resyncs == 1


def test_talkspurt_after_silence_restarts_with_target_delay() -> None:
    jb = JitterBuffer()
    first = steady(3)
    # 1 s of DTX: the sender's timestamps advance with real time; the marker opens the spurt.
    second = [(1.0 + k * TICK, pkt(50 + k, marker=k == 0)) for k in range(3)]
    out = run(jb, first + second, 56)
    assert out[49:54] == ["-", "-", 50, 51, 52]  # arrives at tick 50, plays 20 ms later
    assert jb.stats().lost == 47  # RFC 3550 counts sequence gaps


def test_timestamp_jump_without_marker_is_followed() -> None:
    jb = JitterBuffer()
    arrivals = steady(2) + [(0.04 + k * TICK, pkt(2 + k, ts_offset=8000 * 30)) for k in range(3)]
    out = run(jb, arrivals, 7)
    assert out[1:6] == [0, 1, 2, 3, 4]  # 30 s ahead, yet played straight on


def test_sequence_restart_is_believed_after_two_in_a_row() -> None:
    jb = JitterBuffer()
    arrivals = steady(2) + [(0.04 + k * TICK, pkt(k, seq0=40000, ts0=5000 + 320)) for k in range(4)]
    out = run(jb, arrivals, 8)
    # The first packet of the new numbering is held as a probe, the second confirms.
    assert out == ["-", 0, 1, "-", 1, 2, 3, "R1.0"]
    assert jb.stats().resyncs == 1


def test_jitter_estimate_raises_target_within_bounds() -> None:
    settings = JitterSettings(min_delay=0.02, max_delay=0.1)
    jb = JitterBuffer(settings)
    rng = np.random.default_rng(3)
    arrivals = [(i * TICK + float(rng.uniform(0, 0.06)), pkt(i)) for i in range(200)]
    for t, p in sorted(arrivals, key=lambda a: a[0]):
        jb.push(p, t)
    s = jb.stats()
    assert 10.0 < s.jitter_ms < 40.0  # uniform(0, 60 ms) arrivals: J about 20 ms
    assert 20.0 < s.target_delay_ms <= 100.0
    jb2 = JitterBuffer(settings)
    for i in range(200):
        jb2.push(pkt(i), i * TICK + (0.5 if i % 2 else 0.0))
    assert jb2.stats().target_delay_ms == pytest.approx(100.0)


def test_capacity_limits_a_flood() -> None:
    jb = JitterBuffer(JitterSettings(capacity=8))
    for i in range(20):
        jb.push(pkt(i), 0.0)
    assert jb.stats().overflow == 12


def test_render_concealment() -> None:
    last = np.full(160, 1000, dtype=np.int16)
    assert render_concealment(Concealment(ConcealmentKind.REPEAT, 0.5), last)[0] == 500
    assert not render_concealment(Concealment(ConcealmentKind.SILENCE), last).any()
    assert not render_concealment(Concealment(ConcealmentKind.REPEAT, 1.0), None).any()


PHONE = ("198.51.100.7", 40000)
NAT = ("203.0.113.9", 61000)
ATTACKER = ("192.0.2.66", 5004)


def test_latch_after_probation_and_ignore_hijacker() -> None:
    latch = RtpLatch(("10.0.0.5", 4000))
    assert latch.remote == ("10.0.0.5", 4000)
    assert latch.receive(NAT, pkt(0), 0.0) is LatchVerdict.PROBATION
    assert latch.receive(NAT, pkt(1), 0.02) is LatchVerdict.ACCEPT
    assert latch.remote == NAT
    for i in range(2, 50):  # the attacker sprays while the phone keeps talking
        assert latch.receive(ATTACKER, pkt(i + 100, ssrc=1), i * TICK) is LatchVerdict.FOREIGN
        assert latch.receive(NAT, pkt(i), i * TICK) is LatchVerdict.ACCEPT
    assert latch.remote == NAT


def test_relatch_after_silence_with_same_ssrc_only() -> None:
    latch = RtpLatch(PHONE)
    latch.receive(NAT, pkt(0), 0.0)
    latch.receive(NAT, pkt(1), 0.02)
    new_port = ("203.0.113.9", 61002)
    assert latch.receive(new_port, pkt(2), 0.1) is LatchVerdict.FOREIGN  # too soon
    assert latch.receive(ATTACKER, pkt(0, ssrc=9), 1.0) is LatchVerdict.FOREIGN  # other SSRC
    assert latch.receive(ATTACKER, pkt(1, ssrc=9), 1.02) is LatchVerdict.FOREIGN
    assert latch.receive(new_port, pkt(3), 1.0) is LatchVerdict.PROBATION
    assert latch.receive(new_port, pkt(4), 1.02) is LatchVerdict.ACCEPT
    assert latch.remote == new_port


def test_latch_rejects_payload_and_out_of_sequence_probation() -> None:
    latch = RtpLatch(PHONE, LatchSettings(payload_types=frozenset({0})))
    assert latch.receive(NAT, RtpPacket(8, 1, 1, 1), 0.0) is LatchVerdict.BAD_PAYLOAD
    assert latch.receive(NAT, pkt(0), 0.0) is LatchVerdict.PROBATION
    assert latch.receive(NAT, pkt(5), 0.02) is LatchVerdict.PROBATION  # not consecutive
    assert latch.receive(ATTACKER, pkt(6), 0.03) is LatchVerdict.PROBATION  # other source restarts
    assert latch.remote == PHONE
    latch.reset(("10.1.1.1", 9))
    assert latch.remote == ("10.1.1.1", 9)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

network = st.lists(st.tuples(st.integers(0, 80), st.floats(0.0, 0.15), st.booleans()), max_size=120)


@settings(max_examples=80, deadline=None)
@given(network, st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF))
def test_any_network_plays_in_order_once(events: list[tuple[int, float, bool]], seq0: int, ts0: int) -> None:
    """Loss, reordering, duplication and delay: frames come out in order, each at most once."""
    jb = JitterBuffer()
    arrivals = [(i * TICK + delay, pkt(i, seq0=seq0, ts0=ts0)) for i, delay, _ in events]
    arrivals += [(t + 0.01, p) for (t, p), (_, _, dup) in zip(arrivals, events, strict=True) if dup]
    out = run(jb, arrivals, 100)
    played = [x for x in out if isinstance(x, int)]
    indices = sorted({i for i, _, _ in events})
    assert played == sorted(played) and len(played) == len(set(played))
    assert set(played) <= {i & 0xFF for i in indices}
    s = jb.stats()
    assert s.received == len(indices)
    assert s.received == len(played) + s.late + s.overflow + len(jb._buffer)


def test_fast_sender_clock_is_trimmed_to_max_delay() -> None:
    jb = JitterBuffer(JitterSettings(max_delay=0.1))
    # The sender's clock runs 25 % fast: five frames every four ticks.
    arrivals = [(i * TICK * 0.8, pkt(i)) for i in range(200)]
    out = run(jb, arrivals, 160)
    played = [x for x in out if isinstance(x, int)]
    assert all((b - a) % 256 >= 1 for a, b in zip(played, played[1:], strict=False))
    s = jb.stats()
    assert s.overflow > 0 and s.concealed == 0
    assert len(jb._buffer) <= 0.1 / TICK + 2  # never more than max_delay queued
