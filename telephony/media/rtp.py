"""RTP and RTCP (RFC 3550) packet codecs.

Theory of operation
-------------------
Parsers take one UDP datagram and return a frozen dataclass or raise a
:class:`~telephony.media.errors.MediaError`; builders are the exact inverse.
Every field is read through a bounds-checked :class:`Cursor`; a datagram
larger than ``max_size`` is refused before it is looked at.  Padding is
validated (RFC 3550 5.1: the last octet counts itself and may not exceed the
payload) and stripped, so ``build(parse(x))`` reproduces ``x`` when the sender
padded and ``padding`` is passed back in.

RTCP datagrams are compound (RFC 3550 6.1): :func:`parse_rtcp` returns every
packet in order; SR, RR and BYE are decoded, any other type is kept raw as
:class:`RtcpUnknown` so SDES/APP/feedback pass through untouched.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from telephony.media._cursor import Cursor
from telephony.media.errors import InvalidPacket, LimitExceeded, MediaError, Truncated

__all__ = [
    "MAX_DATAGRAM",
    "InvalidPacket",
    "LimitExceeded",
    "MediaError",
    "ReportBlock",
    "RtcpBye",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpSenderReport",
    "RtcpType",
    "RtcpUnknown",
    "RtpExtension",
    "RtpPacket",
    "Truncated",
    "build_rtcp",
    "build_rtp",
    "is_rtcp",
    "parse_rtcp",
    "parse_rtp",
]

MAX_DATAGRAM = 2048  # media over UDP without fragmentation; anything larger is hostile
RTP_VERSION = 2
_RTP_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The RFC 3550 5.3.1 header extension: a 16-bit profile word and 32-bit-aligned data."""

    profile: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet with padding removed."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0  # octets of padding the sender added (0 = no P bit)


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise InvalidPacket(f"{name}={value} does not fit in {bits} bits")


def parse_rtp(data: bytes, max_size: int = MAX_DATAGRAM) -> RtpPacket:
    """Decode one RTP datagram; raise a MediaError for anything malformed or oversized."""
    if len(data) > max_size:
        raise LimitExceeded(f"RTP datagram of {len(data)} bytes exceeds {max_size}")
    if len(data) >= 12 and data[0] == 0x80:
        # The common case (no padding, extension or CSRC): one unpack, no cursor.
        _, second, sequence, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
        return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, data[12:], bool(second & 0x80))
    cur = Cursor(data)
    first, second, sequence, timestamp, ssrc = cur.unpack(_RTP_HEADER, "RTP fixed header")
    if first >> 6 != RTP_VERSION:
        raise InvalidPacket(f"RTP version {first >> 6}")
    csrcs = tuple(cur.u32("RTP CSRC") for _ in range(first & 0x0F))
    extension = None
    if first & 0x10:
        profile = cur.u16("RTP extension profile")
        words = cur.u16("RTP extension length")
        extension = RtpExtension(profile, cur.take(4 * words, "RTP extension data"))
    body = cur.rest()
    padding = 0
    if first & 0x20:
        if not body or body[-1] == 0 or body[-1] > len(body):
            raise InvalidPacket("RTP padding count is zero or longer than the payload")
        padding = body[-1]
        body = body[:-padding]
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=body,
        marker=bool(second & 0x80),
        csrcs=csrcs,
        extension=extension,
        padding=padding,
    )


def build_rtp(packet: RtpPacket) -> bytes:
    """Encode ``packet``; raise InvalidPacket if a field does not fit its width."""
    if not (0 <= packet.payload_type < 128 and 0 <= packet.sequence < 1 << 16
            and 0 <= packet.timestamp < 1 << 32 and 0 <= packet.ssrc < 1 << 32
            and 0 <= packet.padding < 256):
        # The slow path only to name the offending field.
        for name, value, bits in (("payload_type", packet.payload_type, 7),
                                  ("sequence", packet.sequence, 16),
                                  ("timestamp", packet.timestamp, 32),
                                  ("ssrc", packet.ssrc, 32), ("padding", packet.padding, 8)):
            _check_range(name, value, bits)
    if len(packet.csrcs) > 15:
        raise InvalidPacket("at most 15 CSRCs")
    first = RTP_VERSION << 6 | len(packet.csrcs)
    first |= 0x20 if packet.padding else 0
    first |= 0x10 if packet.extension is not None else 0
    second = packet.payload_type | (0x80 if packet.marker else 0)
    out = bytearray(_RTP_HEADER.pack(first, second, packet.sequence, packet.timestamp, packet.ssrc))
    for csrc in packet.csrcs:
        _check_range("csrc", csrc, 32)
        out += csrc.to_bytes(4, "big")
    if packet.extension is not None:
        ext = packet.extension
        _check_range("extension profile", ext.profile, 16)
        if len(ext.data) % 4 or len(ext.data) // 4 > 0xFFFF:
            raise InvalidPacket("extension data must be whole 32-bit words")
        out += ext.profile.to_bytes(2, "big") + (len(ext.data) // 4).to_bytes(2, "big")
        out += ext.data
    out += packet.payload
    if packet.padding:
        out += bytes(packet.padding - 1) + bytes((packet.padding,))
    return bytes(out)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: second octet 192..223 means RTCP on a shared port."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class RtcpType(enum.IntEnum):
    """RTCP packet types decoded here (others pass through as RtcpUnknown)."""

    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point, lost/expected * 256
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended: cycles << 16 | seq
    jitter: int  # timestamp units
    last_sr: int  # middle 32 bits of the NTP timestamp of the last SR
    delay_since_last_sr: int  # 1/65536 s


@dataclass(frozen=True, slots=True)
class RtcpSenderReport:
    """SR: sender info plus reception reports."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class RtcpReceiverReport:
    """RR: reception reports from a participant that did not send."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class RtcpBye:
    """BYE: these sources are leaving, with an optional reason."""

    sources: tuple[int, ...]
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """Any other RTCP packet, kept whole for pass-through."""

    packet_type: int
    count: int
    body: bytes = field(default=b"")


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpBye | RtcpUnknown


def _parse_blocks(cur: Cursor, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for _ in range(count):
        ssrc = cur.u32("report SSRC")
        lost_word = cur.u32("report loss")
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(
            ReportBlock(
                ssrc=ssrc,
                fraction_lost=lost_word >> 24,
                cumulative_lost=cumulative,
                highest_sequence=cur.u32("report highest sequence"),
                jitter=cur.u32("report jitter"),
                last_sr=cur.u32("report LSR"),
                delay_since_last_sr=cur.u32("report DLSR"),
            )
        )
    return tuple(blocks)


def _parse_one(ptype: int, count: int, cur: Cursor) -> RtcpPacket:
    if ptype == RtcpType.SR:
        ssrc = cur.u32("SR SSRC")
        ntp = cur.u32("SR NTP high") << 32 | cur.u32("SR NTP low")
        rtp_ts, packets, octets = cur.u32("SR RTP ts"), cur.u32("SR packets"), cur.u32("SR octets")
        blocks = _parse_blocks(cur, count)
        return RtcpSenderReport(ssrc, ntp, rtp_ts, packets, octets, blocks, cur.rest())
    if ptype == RtcpType.RR:
        ssrc = cur.u32("RR SSRC")
        return RtcpReceiverReport(ssrc, _parse_blocks(cur, count), cur.rest())
    if ptype == RtcpType.BYE:
        sources = tuple(cur.u32("BYE SSRC") for _ in range(count))
        reason = b""
        if cur.remaining:
            reason = cur.take(cur.u8("BYE reason length"), "BYE reason")
        return RtcpBye(sources, reason)
    return RtcpUnknown(ptype, count, cur.rest())


def parse_rtcp(data: bytes, max_size: int = MAX_DATAGRAM) -> tuple[RtcpPacket, ...]:
    """Decode a compound RTCP datagram into its packets, in order."""
    if len(data) > max_size:
        raise LimitExceeded(f"RTCP datagram of {len(data)} bytes exceeds {max_size}")
    if not data:
        raise Truncated("empty RTCP datagram")
    cur = Cursor(data)
    packets: list[RtcpPacket] = []
    while cur.remaining:
        first = cur.u8("RTCP first octet")
        if first >> 6 != RTP_VERSION:
            raise InvalidPacket(f"RTCP version {first >> 6}")
        ptype = cur.u8("RTCP packet type")
        length = 4 * cur.u16("RTCP length")
        body = cur.take(length, "RTCP packet body")
        if first & 0x20:
            # RFC 3550 6.4.1: only the last packet of a compound may be padded.
            if cur.remaining or not body or body[-1] == 0 or body[-1] > len(body):
                raise InvalidPacket("RTCP padding misplaced or inconsistent")
            body = body[: -body[-1]]
        packets.append(_parse_one(ptype, first & 0x1F, Cursor(body)))
    return tuple(packets)


def _build_blocks(blocks: tuple[ReportBlock, ...]) -> bytes:
    out = bytearray()
    for b in blocks:
        if not -(1 << 23) <= b.cumulative_lost < (1 << 23):
            raise InvalidPacket("cumulative_lost does not fit in 24 bits")
        _check_range("fraction_lost", b.fraction_lost, 8)
        for name, value in (("ssrc", b.ssrc), ("highest_sequence", b.highest_sequence),
                            ("jitter", b.jitter), ("last_sr", b.last_sr),
                            ("delay_since_last_sr", b.delay_since_last_sr)):
            _check_range(name, value, 32)
        loss = b.fraction_lost << 24 | (b.cumulative_lost & 0xFFFFFF)
        out += b"".join(v.to_bytes(4, "big") for v in (
            b.ssrc, loss, b.highest_sequence, b.jitter, b.last_sr, b.delay_since_last_sr))
    return bytes(out)


def _body(packet: RtcpPacket) -> tuple[int, int, bytes]:
    if isinstance(packet, RtcpSenderReport):
        _check_range("ntp_timestamp", packet.ntp_timestamp, 64)
        head = packet.ssrc.to_bytes(4, "big") + packet.ntp_timestamp.to_bytes(8, "big")
        head += b"".join(v.to_bytes(4, "big") for v in (
            packet.rtp_timestamp, packet.packet_count, packet.octet_count))
        body = head + _build_blocks(packet.reports) + packet.extension
        return RtcpType.SR, len(packet.reports), body
    if isinstance(packet, RtcpReceiverReport):
        body = packet.ssrc.to_bytes(4, "big") + _build_blocks(packet.reports) + packet.extension
        return RtcpType.RR, len(packet.reports), body
    if isinstance(packet, RtcpBye):
        if len(packet.reason) > 255:
            raise InvalidPacket("BYE reason longer than 255 octets")
        body = b"".join(s.to_bytes(4, "big") for s in packet.sources)
        if packet.reason:
            body += bytes((len(packet.reason),)) + packet.reason
            body += bytes(-len(body) % 4)  # RFC 3550 6.6: pad the reason with nulls
        return RtcpType.BYE, len(packet.sources), body
    return packet.packet_type, packet.count, packet.body


def build_rtcp(packets: tuple[RtcpPacket, ...] | list[RtcpPacket]) -> bytes:
    """Encode a compound RTCP datagram (no padding)."""
    out = bytearray()
    for packet in packets:
        ptype, count, body = _body(packet)
        _check_range("RTCP count", count, 5)
        _check_range("RTCP packet type", ptype, 8)
        if len(body) % 4 or len(body) // 4 > 0xFFFF:
            raise InvalidPacket("RTCP body must be whole 32-bit words")
        out += bytes((RTP_VERSION << 6 | count, ptype)) + (len(body) // 4).to_bytes(2, "big")
        out += body
    return bytes(out)
