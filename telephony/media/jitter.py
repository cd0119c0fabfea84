"""A sans-I/O jitter buffer per leg, and symmetric-RTP latching.

Theory of operation
-------------------
The adapter calls :meth:`JitterBuffer.push` for every RTP packet of the leg
and :meth:`JitterBuffer.pop` on the mixer's steady 20 ms tick; both take
``now`` in seconds.  Playout runs on a grid of RTP timestamps: ``pop`` plays
the packet whose timestamp is the next slot, or returns a
:class:`Concealment` for that slot and moves on.  Packets for slots already
played are late and dropped; duplicates (same extended sequence number) are
dropped; timestamps and sequence numbers are compared modulo 2**32 / 2**16,
so wraparound is invisible.

The playout delay adapts only where it is inaudible: at the first packet, at
a talkspurt start (marker bit after silence) and at a resync (SSRC change,
sequence or timestamp jump).  There the first slot is scheduled at
``arrival + target``, with ``target = jitter_factor * J`` clamped between
``min_delay`` and ``max_delay``, where J is the RFC 3550 6.4.1 interarrival
jitter.  If the buffered span grows past ``max_delay`` (a peer whose clock
runs fast) the oldest slot is skipped.

Concealment repeats the last frame, fading (``fade_gains``), then gives comfort
silence; :func:`render_concealment` applies it to PCM.

:class:`RtpLatch` decides where to send a leg's media (symmetric RTP behind
NAT): it latches to the source of ``probation`` consecutive valid packets and
refuses to move while that source is alive, so a stranger spraying packets at
the port cannot take the call over.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from telephony.media.rtp import RtpPacket

__all__ = [
    "Address",
    "Concealment",
    "ConcealmentKind",
    "Frame",
    "JitterBuffer",
    "JitterSettings",
    "JitterStats",
    "LatchSettings",
    "LatchVerdict",
    "RtpLatch",
    "render_concealment",
]

MAX_DROPOUT = 3000  # RFC 3550 A.1: a sequence jump beyond this is a restart, not loss
MAX_MISORDER = 100


def ts_diff(a: int, b: int) -> int:
    """Signed ``a - b`` for 32-bit RTP timestamps."""
    return ((a - b + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@dataclass(frozen=True, slots=True)
class JitterSettings:
    """Per-leg jitter buffer tuning; delays in seconds."""

    clock_rate: int = 8000
    frame_samples: int = 160
    min_delay: float = 0.02
    max_delay: float = 0.2
    jitter_factor: float = 3.0
    capacity: int = 64  # packets held at most; a flood beyond this is dropped
    fade_gains: tuple[float, ...] = (1.0, 0.7, 0.4, 0.2)


@dataclass(frozen=True, slots=True)
class Frame:
    """The packet to play in this slot."""

    packet: RtpPacket


class ConcealmentKind(enum.Enum):
    """What to play in place of a missing frame."""

    REPEAT = "repeat last frame"
    SILENCE = "comfort silence"


@dataclass(frozen=True, slots=True)
class Concealment:
    """No packet for this slot; ``gain`` applies to the repeated frame."""

    kind: ConcealmentKind
    gain: float = 0.0


SILENCE = Concealment(ConcealmentKind.SILENCE)


@dataclass(frozen=True, slots=True)
class JitterStats:
    """Counters since the leg started (RFC 3550 style loss is per SSRC run)."""

    received: int
    lost: int
    late: int
    duplicate: int
    concealed: int
    overflow: int
    resyncs: int
    jitter_ms: float
    target_delay_ms: float


def render_concealment(conceal: Concealment, last: npt.NDArray[np.int16] | None,
                       frame_samples: int = 160) -> npt.NDArray[np.int16]:
    """PCM for a concealed slot: the last frame scaled by ``gain``, or silence."""
    if conceal.kind is ConcealmentKind.SILENCE or last is None:
        return np.zeros(frame_samples, dtype=np.int16)
    return (last.astype(np.float32) * conceal.gain).astype(np.int16)


@dataclass
class _Counters:
    received: int = 0
    late: int = 0
    duplicate: int = 0
    concealed: int = 0
    overflow: int = 0
    resyncs: int = 0
    lost_before: int = 0  # loss of earlier SSRC runs


class JitterBuffer:
    """Reorders one leg's packets and plays them out at a steady frame clock."""

    def __init__(self, settings: JitterSettings | None = None) -> None:
        self.settings = settings or JitterSettings()
        self._c = _Counters()
        self._jitter = 0.0  # timestamp units, RFC 3550 J
        self._last_transit: float | None = None
        self._reset_stream(None)

    def _reset_stream(self, ssrc: int | None) -> None:
        self._ssrc = ssrc
        self._buffer: dict[int, RtpPacket] = {}  # extended sequence -> packet
        self._max_ext: int | None = None
        self._base_ext = 0
        self._unique = 0
        self._probe: int | None = None
        self._seen: deque[int] = deque(maxlen=MAX_MISORDER)  # recent extended sequences
        self._next_ts: int | None = None
        self._play_at = 0.0
        self._spurt: tuple[int, float] | None = None  # (timestamp, due time)
        self._missing = 0
        self._last_transit = None

    @property
    def target_delay(self) -> float:
        """The playout delay a new talkspurt would get, in seconds."""
        s = self.settings
        wanted = s.jitter_factor * self._jitter / s.clock_rate
        return min(s.max_delay, max(s.min_delay, wanted))

    def stats(self) -> JitterStats:
        """A snapshot of the counters."""
        c = self._c
        lost_now = 0
        if self._max_ext is not None:
            lost_now = max(0, self._max_ext - self._base_ext + 1 - self._unique)
        return JitterStats(
            received=c.received, lost=c.lost_before + lost_now, late=c.late,
            duplicate=c.duplicate, concealed=c.concealed, overflow=c.overflow,
            resyncs=c.resyncs, jitter_ms=1000.0 * self._jitter / self.settings.clock_rate,
            target_delay_ms=1000.0 * self.target_delay,
        )

    def _resync(self, packet: RtpPacket) -> None:
        if self._max_ext is not None:
            self._c.lost_before += max(0, self._max_ext - self._base_ext + 1 - self._unique)
        self._c.resyncs += 1
        self._reset_stream(packet.ssrc)

    def _extend(self, seq: int) -> int:
        assert self._max_ext is not None
        ext = (self._max_ext & ~0xFFFF) | seq
        if ext - self._max_ext > 0x8000:
            ext -= 0x10000
        elif self._max_ext - ext > 0x8000:
            ext += 0x10000
        return ext

    def _update_jitter(self, packet: RtpPacket, now: float) -> None:
        transit = now * self.settings.clock_rate - packet.timestamp
        if self._last_transit is not None:
            d = transit - self._last_transit
            d = abs(((d + 2**31) % 2**32) - 2**31)  # timestamp wrap between packets
            self._jitter += (d - self._jitter) / 16.0
        self._last_transit = transit

    def push(self, packet: RtpPacket, now: float) -> None:
        """Accept one packet of this leg arriving at ``now``."""
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            self._resync(packet)
        self._ssrc = packet.ssrc
        if self._max_ext is None:
            self._start(packet, packet.sequence, now)
            return
        ext = self._extend(packet.sequence)
        if abs(ext - self._max_ext) > MAX_DROPOUT:
            # A restart of the sender's numbering: believe it after two in a row.
            if self._probe is not None and ext == self._probe + 1:
                self._resync(packet)
                self._start(packet, packet.sequence, now)
            else:
                self._probe = ext
            return
        self._probe = None
        if ext in self._seen:
            self._c.duplicate += 1
            return
        self._seen.append(ext)
        self._c.received += 1
        self._unique += 1
        self._update_jitter(packet, now)
        self._max_ext = max(self._max_ext, ext)
        assert self._next_ts is not None
        late = ts_diff(packet.timestamp, self._next_ts) < 0
        if late and self._spurt is not None:
            late = ts_diff(packet.timestamp, self._spurt[0]) < 0
        if late:
            self._c.late += 1
            return
        if len(self._buffer) >= self.settings.capacity:
            self._c.overflow += 1
            return
        self._buffer[ext] = packet
        if packet.marker and self._opens_talkspurt(packet):
            self._spurt = (packet.timestamp, now + self.target_delay)

    def _opens_talkspurt(self, packet: RtpPacket) -> bool:
        # A marker starts a new talkspurt only after the previous one has drained;
        # with old frames still queued the grid simply plays through.
        return all(ts_diff(p.timestamp, packet.timestamp) >= 0 for p in self._buffer.values())

    def _start(self, packet: RtpPacket, ext: int, now: float) -> None:
        self._max_ext = ext
        self._base_ext = ext
        self._unique = 1
        self._c.received += 1
        self._update_jitter(packet, now)
        self._buffer = {ext: packet}
        self._seen.append(ext)
        self._next_ts = packet.timestamp
        self._play_at = now + self.target_delay

    def _earliest(self) -> tuple[int, RtpPacket] | None:
        if not self._buffer:
            return None
        ext = min(self._buffer)
        return ext, self._buffer[ext]

    def _drop_before(self, ts: int) -> None:
        if not self._buffer:
            return
        for ext in [e for e, p in self._buffer.items() if ts_diff(p.timestamp, ts) < 0]:
            del self._buffer[ext]
            self._c.late += 1

    def pop(self, now: float) -> Frame | Concealment:
        """What to play for the slot due at ``now`` (call once per frame period)."""
        if self._next_ts is None or now + 1e-9 < self._play_at:
            return SILENCE  # not started: nothing to conceal yet
        s = self.settings
        if self._spurt is not None and now + 1e-9 >= self._spurt[1]:
            self._next_ts = self._spurt[0]
            self._spurt = None
        elif self._spurt is None:
            self._drop_before(self._next_ts)
        self._skip_overflow()
        slot = self._next_ts
        found = next((e for e, p in self._buffer.items() if p.timestamp == slot), None)
        if found is None and self._spurt is None:
            first = self._earliest()
            if first is not None and ts_diff(first[1].timestamp, slot) > s.max_delay * s.clock_rate:
                slot = first[1].timestamp  # a timestamp jump without a marker: follow it
                found = first[0]
        self._next_ts = (slot + s.frame_samples) & 0xFFFFFFFF
        if found is not None:
            self._missing = 0
            return Frame(self._buffer.pop(found))
        self._missing += 1
        self._c.concealed += 1
        if self._missing <= len(s.fade_gains):
            return Concealment(ConcealmentKind.REPEAT, s.fade_gains[self._missing - 1])
        return SILENCE

    def _skip_overflow(self) -> None:
        # A sender whose clock runs fast fills the buffer past max_delay: skip one slot
        # per tick until it is back in bounds (a jump of more than twice max_delay is a
        # timestamp jump, handled in pop, not drift).
        s = self.settings
        slot = self._next_ts
        assert slot is not None
        if self._spurt is not None or len(self._buffer) < 2:
            return  # a lone packet far ahead is a gap or a jump, not drift
        span = max(ts_diff(p.timestamp, slot) for p in self._buffer.values())
        if s.max_delay * s.clock_rate < span <= 2 * s.max_delay * s.clock_rate:
            for ext in [e for e, p in self._buffer.items() if p.timestamp == slot]:
                del self._buffer[ext]
                self._c.overflow += 1
            self._next_ts = (slot + s.frame_samples) & 0xFFFFFFFF


Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class LatchSettings:
    """Symmetric RTP latching rules; times in seconds."""

    payload_types: frozenset[int] = frozenset({0, 8, 101})
    probation: int = 2  # consecutive packets from one source before latching
    relatch_silence: float = 0.5  # latched source silent this long: another may take over
    foreign_ssrc_silence: float = 5.0  # ...and this long if the newcomer has another SSRC


class LatchVerdict(enum.Enum):
    """What to do with a received packet."""

    ACCEPT = "accept"
    PROBATION = "source on probation"
    FOREIGN = "not the latched source"
    BAD_PAYLOAD = "payload type not negotiated"


@dataclass(slots=True)
class _Candidate:
    source: Address
    ssrc: int
    sequence: int
    count: int = 1


@dataclass
class RtpLatch:
    """Decides the remote address for one leg's outgoing RTP (symmetric RTP).

    Until latched, media goes to the SDP address.  A source is latched after
    ``probation`` consecutive packets in sequence with one SSRC and a negotiated
    payload type.  While the latched source keeps sending, nobody else is
    accepted; after ``relatch_silence`` of silence a newcomer with the same
    SSRC (the phone moved behind its NAT) can take over by the same probation,
    and one with a different SSRC only after ``foreign_ssrc_silence``.  A
    re-INVITE with new SDP calls :meth:`reset`.
    """

    sdp_address: Address
    settings: LatchSettings = field(default_factory=LatchSettings)
    latched: Address | None = None
    ssrc: int | None = None
    last_seen: float = 0.0
    rejected: int = 0
    _candidate: _Candidate | None = None

    @property
    def remote(self) -> Address:
        """Where to send this leg's media now."""
        return self.latched or self.sdp_address

    def reset(self, sdp_address: Address) -> None:
        """New SDP from the peer: forget the latch."""
        self.sdp_address = sdp_address
        self.latched = None
        self.ssrc = None
        self._candidate = None

    def receive(self, source: Address, packet: RtpPacket, now: float) -> LatchVerdict:
        """Judge one packet from ``source``; ACCEPT means feed it to the jitter buffer."""
        if packet.payload_type not in self.settings.payload_types:
            self.rejected += 1
            return LatchVerdict.BAD_PAYLOAD
        if self.latched == source and packet.ssrc == self.ssrc:
            self.last_seen = now
            self._candidate = None
            return LatchVerdict.ACCEPT
        if self.latched is not None and not self._may_relatch(packet, now):
            self.rejected += 1
            return LatchVerdict.FOREIGN
        return self._probation(source, packet, now)

    def _may_relatch(self, packet: RtpPacket, now: float) -> bool:
        silent = now - self.last_seen
        if packet.ssrc == self.ssrc:
            return silent >= self.settings.relatch_silence
        return silent >= self.settings.foreign_ssrc_silence

    def _probation(self, source: Address, packet: RtpPacket, now: float) -> LatchVerdict:
        cand = self._candidate
        if (cand is not None and cand.source == source and cand.ssrc == packet.ssrc
                and packet.sequence == (cand.sequence + 1) & 0xFFFF):
            cand.sequence = packet.sequence
            cand.count += 1
        else:
            cand = self._candidate = _Candidate(source, packet.ssrc, packet.sequence)
        if cand.count < self.settings.probation:
            return LatchVerdict.PROBATION
        self.latched, self.ssrc, self.last_seen = source, packet.ssrc, now
        self._candidate = None
        return LatchVerdict.ACCEPT
