"""DTMF: RFC 4733 telephone-events and an in-band Goertzel detector.

Theory of operation
-------------------
A sender repeats the same event many times: one RTP packet per 50 ms or so
with a growing duration, then the end bit three times, possibly with
redundancy.  Every packet of one event carries the same RTP timestamp (the
event's start), which is the event's identity.  :class:`DtmfReceiver` keeps
a short memory of (SSRC, timestamp) pairs it has already reported and emits
one :class:`DtmfDigit` per new identity, whatever arrives later: updates,
retransmitted ends, reordered stragglers.  An event longer than the 16-bit
duration field is sent as segments whose timestamps advance (RFC 4733
2.5.2.3); a segment that continues an unfinished event of the same digit is
not a new key press.  Events carried with RFC 2198 redundancy (RFC 4733 2.6)
are unpacked by :func:`parse_red`; each block is judged as if it had arrived
alone with timestamp ``packet.timestamp - offset``, so a press whose own
packets were all lost is still reported once, from a later packet's copy.

:class:`InbandDtmfDetector` is the fallback for peers that send tones in the
audio.  Each 20 ms frame (160 samples at 8 kHz) is projected on the eight
DTMF frequencies with one matrix product; that single-bin DFT at an exact
frequency is the Goertzel algorithm's output, computed without a per-sample
Python loop.  A digit needs one strong row and column tone, each at least
6 dB above its group's others, a twist within limits, most of the frame's
energy in the two tones, and two consecutive frames in agreement (40 ms).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from telephony.media._cursor import Cursor
from telephony.media.errors import InvalidPacket, Truncated
from telephony.media.rtp import RtpPacket

__all__ = [
    "DIGITS",
    "DtmfDigit",
    "DtmfReceiver",
    "InbandDtmfDetector",
    "RedundantBlock",
    "TelephoneEvent",
    "build_red",
    "build_telephone_event",
    "dtmf_candidates",
    "parse_red",
    "parse_telephone_event",
]

DIGITS = "0123456789*#ABCD"  # RFC 4733 event codes 0..15
SAMPLE_RATE = 8000
FRAME = 160
_LOW = (697.0, 770.0, 852.0, 941.0)
_HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
_MAX_SEGMENT = 0xFFFF


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The 4-octet RFC 4733 payload."""

    event: int
    end: bool = False
    volume: int = 10  # -dBm0, 0..63
    duration: int = 0  # timestamp units


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Decode a telephone-event payload (exactly one 4-octet event)."""
    cur = Cursor(payload)
    event = cur.u8("event code")
    flags = cur.u8("E/R/volume")
    duration = cur.u16("duration")
    if cur.remaining:
        raise InvalidPacket(f"telephone-event payload has {cur.remaining} extra octets")
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def build_telephone_event(ev: TelephoneEvent) -> bytes:
    """Encode a telephone-event payload; raise InvalidPacket on out-of-range fields."""
    if not (0 <= ev.event <= 255 and 0 <= ev.volume <= 63 and 0 <= ev.duration <= 0xFFFF):
        raise InvalidPacket(f"telephone-event field out of range: {ev}")
    return bytes((ev.event, (0x80 if ev.end else 0) | ev.volume)) + ev.duration.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class RedundantBlock:
    """One block of an RFC 2198 payload; the primary block has offset 0."""

    payload_type: int
    timestamp_offset: int
    data: bytes


MAX_RED_BLOCKS = 16


def parse_red(payload: bytes) -> tuple[RedundantBlock, ...]:
    """Split an RFC 2198 payload into its blocks, oldest first, primary last."""
    cur = Cursor(payload)
    headers: list[tuple[int, int, int]] = []
    while True:
        first = cur.u8("RED block header")
        if not first & 0x80:
            headers.append((first & 0x7F, 0, -1))  # primary: the rest of the payload
            break
        if len(headers) >= MAX_RED_BLOCKS:
            raise InvalidPacket(f"more than {MAX_RED_BLOCKS} redundant blocks")
        word = int.from_bytes(bytes((first,)) + cur.take(3, "RED block header"), "big")
        headers.append(((word >> 24) & 0x7F, (word >> 10) & 0x3FFF, word & 0x3FF))
    blocks = [RedundantBlock(pt, off, cur.take(n, "RED block") if n >= 0 else cur.rest())
              for pt, off, n in headers]
    return tuple(blocks)


def build_red(blocks: tuple[RedundantBlock, ...] | list[RedundantBlock]) -> bytes:
    """Encode RFC 2198 blocks (the last one is the primary)."""
    if not blocks:
        raise InvalidPacket("RED needs a primary block")
    head, body = bytearray(), bytearray()
    for b in blocks[:-1]:
        if not (0 <= b.payload_type < 128 and 0 <= b.timestamp_offset < 1 << 14
                and len(b.data) < 1 << 10):
            raise InvalidPacket(f"RED block field out of range: {b}")
        head += (0x80000000 | b.payload_type << 24 | b.timestamp_offset << 10
                 | len(b.data)).to_bytes(4, "big")
        body += b.data
    if not 0 <= blocks[-1].payload_type < 128:
        raise InvalidPacket("primary payload type out of range")
    return bytes(head) + bytes((blocks[-1].payload_type,)) + bytes(body) + blocks[-1].data


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press, reported once."""

    digit: str
    ssrc: int
    timestamp: int  # RTP timestamp of the event start (0 for in-band)


@dataclass(slots=True)
class _Open:
    ssrc: int
    timestamp: int
    event: int
    duration: int
    ended: bool


class DtmfReceiver:
    """Turns a stream of RFC 4733 packets into single :class:`DtmfDigit` events."""

    def __init__(
        self, payload_type: int, memory: int = 64, red_payload_type: int | None = None
    ) -> None:
        self.payload_type = payload_type
        self.red_payload_type = red_payload_type
        self._seen: deque[tuple[int, int]] = deque(maxlen=memory)
        self._last: _Open | None = None
        self.malformed = 0

    def receive_all(self, packet: RtpPacket) -> list[DtmfDigit]:
        """Feed one RTP packet, RED-wrapped or plain; return every new digit (oldest first)."""
        if self.red_payload_type is None or packet.payload_type != self.red_payload_type:
            digit = self.receive(packet)
            return [digit] if digit is not None else []
        try:
            blocks = parse_red(packet.payload)
        except (InvalidPacket, Truncated):
            self.malformed += 1
            return []
        digits = []
        for block in blocks:
            ts = (packet.timestamp - block.timestamp_offset) & 0xFFFFFFFF
            inner = RtpPacket(block.payload_type, packet.sequence, ts, packet.ssrc, block.data)
            digit = self.receive(inner)
            if digit is not None:
                digits.append(digit)
        return digits

    def receive(self, packet: RtpPacket) -> DtmfDigit | None:
        """Feed one plain RTP packet (other payload types are ignored); a new digit or None."""
        if packet.payload_type != self.payload_type:
            return None
        try:
            ev = parse_telephone_event(packet.payload)
        except (InvalidPacket, Truncated):
            self.malformed += 1
            return None
        return self._judge(packet.ssrc, packet.timestamp, ev)

    def _judge(self, ssrc: int, timestamp: int, ev: TelephoneEvent) -> DtmfDigit | None:
        key = (ssrc, timestamp)
        last = self._last
        if last is not None and (last.ssrc, last.timestamp) == key:
            last.duration = max(last.duration, ev.duration)
            last.ended = last.ended or ev.end
            return None
        if key in self._seen:
            return None  # a straggler from an event already reported
        self._seen.append(key)
        continuing = (
            last is not None
            and not last.ended
            and last.ssrc == ssrc
            and last.event == ev.event
            and (timestamp - last.timestamp) & 0xFFFFFFFF == last.duration
            and last.duration >= _MAX_SEGMENT - FRAME  # only a full segment rolls over
        )
        self._last = _Open(ssrc, timestamp, ev.event, ev.duration, ev.end)
        if continuing or ev.event >= len(DIGITS):
            return None
        return DtmfDigit(DIGITS[ev.event], ssrc, timestamp)


def _basis() -> npt.NDArray[np.complex128]:
    n = np.arange(FRAME)
    freqs = np.array(_LOW + _HIGH)
    return np.exp(-2j * np.pi * np.outer(freqs, n) / SAMPLE_RATE)


class InbandDtmfDetector:
    """Detects DTMF tones in 20 ms int16 frames at 8 kHz; one digit per key press."""

    def __init__(
        self,
        min_level: float = 200.0,  # per-tone amplitude, int16 units (about -44 dBm0)
        normal_twist_db: float = 8.0,  # column tone weaker than row tone by at most this
        reverse_twist_db: float = 4.0,  # column tone stronger by at most this
        group_margin_db: float = 6.0,
        purity: float = 0.7,  # share of frame energy that must be in the two tones
    ) -> None:
        self._basis = _basis()
        self._min_power = (min_level**2) * FRAME / 2
        self._normal = 10 ** (normal_twist_db / 10)
        self._reverse = 10 ** (reverse_twist_db / 10)
        self._margin = 10 ** (group_margin_db / 10)
        self._purity = purity
        self._candidate: str | None = None
        self._reported: str | None = None

    def classify(self, frame: npt.NDArray[np.int16]) -> str | None:
        """The digit present in one frame, or None (no hysteresis)."""
        if frame.shape != (FRAME,):
            raise ValueError(f"frames are {FRAME} samples")
        x = frame.astype(np.float64)
        power = np.abs(self._basis @ x) ** 2 * (2.0 / FRAME)
        low, high = power[:4], power[4:]
        r, c = int(np.argmax(low)), int(np.argmax(high))
        pl, ph = float(low[r]), float(high[c])
        if min(pl, ph) < self._min_power:
            return None
        if np.partition(low, -2)[-2] * self._margin > pl:
            return None
        if np.partition(high, -2)[-2] * self._margin > ph:
            return None
        if ph * self._normal < pl or pl * self._reverse < ph:
            return None
        if pl + ph < self._purity * float(x @ x):
            return None
        return _KEYPAD[r][c]

    def reset(self) -> None:
        """A frame with no tone energy (see :func:`dtmf_candidates`): the key is up."""
        self._candidate = None
        self._reported = None

    def feed(self, frame: npt.NDArray[np.int16]) -> DtmfDigit | None:
        """Feed one frame; a digit is reported on its second consecutive frame, once."""
        digit = self.classify(frame)
        confirmed = digit is not None and digit == self._candidate
        self._candidate = digit
        if digit is None:
            self._reported = None
            return None
        if confirmed and self._reported != digit:
            self._reported = digit
            return DtmfDigit(digit, 0, 0)
        return None


_BASIS = _basis()


def dtmf_candidates(frames: npt.NDArray[np.int16],
                    min_level: float = 200.0) -> npt.NDArray[np.bool_]:
    """For an (n, 160) block, which frames hold enough energy in a row and a column tone.

    One matrix product for every leg at once; only the frames it flags need the
    full per-leg :meth:`InbandDtmfDetector.feed` (the rest call ``reset``).
    """
    if frames.ndim != 2 or frames.shape[1] != FRAME:
        raise ValueError(f"frames must be (n, {FRAME})")
    power = np.abs(frames.astype(np.float64) @ _BASIS.T) ** 2 * (2.0 / FRAME)
    threshold = (min_level**2) * FRAME / 2
    result: npt.NDArray[np.bool_] = (power[:, :4].max(axis=1) >= threshold) & (
        power[:, 4:].max(axis=1) >= threshold)
    return result
