"""RTP/RTCP codecs: round trips, error tables, and any-bytes properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.media.errors import InvalidPacket, LimitExceeded, MediaError, Truncated
from telephony.media.rtp import (
    ReportBlock,
    RtcpBye,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpUnknown,
    RtpExtension,
    RtpPacket,
    build_rtcp,
    build_rtp,
    is_rtcp,
    parse_rtcp,
    parse_rtp,
)

ROUND_TRIPS = [
    RtpPacket(0, 0, 0, 0),
    RtpPacket(0, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"\xff" * 160, marker=True),
    RtpPacket(8, 1, 160, 7, b"abc", csrcs=(1, 2, 0xFFFFFFFF)),
    RtpPacket(101, 9, 9, 9, b"\x01\x8a\x03\x20", extension=RtpExtension(0xBEDE, b"\x10\xff\x00\x00")),
    RtpPacket(127, 2, 2, 2, b"xy", padding=6, csrcs=tuple(range(15)), extension=RtpExtension(1, b"")),
]


@pytest.mark.parametrize("packet", ROUND_TRIPS)
def test_rtp_round_trip(packet: RtpPacket) -> None:
    wire = build_rtp(packet)
    assert parse_rtp(wire) == packet
    assert build_rtp(parse_rtp(wire)) == wire


def test_rtp_known_bytes() -> None:
    wire = bytes.fromhex("80e0 0001 000000a0 11223344".replace(" ", "")) + b"\xd5" * 4
    assert parse_rtp(wire) == RtpPacket(96, 1, 160, 0x11223344, b"\xd5" * 4, marker=True)


RTP_ERRORS = [
    (b"", Truncated),
    (b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00", Truncated),  # 11-byte header
    (b"\x40" + bytes(11), InvalidPacket),  # version 1
    (b"\x82" + bytes(11) + b"\x00\x00\x00\x01", Truncated),  # CC=2, one CSRC
    (b"\x90" + bytes(11) + b"\x00\x01\x00\x02\x00\x00\x00\x00", Truncated),  # ext says 2 words
    (b"\xa0" + bytes(11), InvalidPacket),  # P set, no payload
    (b"\xa0" + bytes(11) + b"ab\x00", InvalidPacket),  # padding count 0
    (b"\xa0" + bytes(11) + b"ab\x04", InvalidPacket),  # padding longer than payload
    (b"\x80" + bytes(11) + bytes(3000), LimitExceeded),
]


@pytest.mark.parametrize(("wire", "error"), RTP_ERRORS)
def test_rtp_errors(wire: bytes, error: type[MediaError]) -> None:
    with pytest.raises(error):
        parse_rtp(wire)


@pytest.mark.parametrize(
    "packet",
    [RtpPacket(128, 0, 0, 0), RtpPacket(0, 65536, 0, 0), RtpPacket(0, 0, 1 << 32, 0),
     RtpPacket(0, 0, 0, 0, csrcs=tuple(range(16))), RtpPacket(0, 0, 0, 0, padding=256),
     RtpPacket(0, 0, 0, 0, extension=RtpExtension(0, b"abc"))],
)
def test_rtp_build_refuses_out_of_range(packet: RtpPacket) -> None:
    with pytest.raises(InvalidPacket):
        build_rtp(packet)


BLOCK = ReportBlock(0x1234, 25, -3, (2 << 16) | 77, 80, 0xAABBCCDD, 65536)
COMPOUNDS = [
    (RtcpSenderReport(1, 0xE0000000_80000000, 160, 10, 1600, (BLOCK,)),),
    (RtcpReceiverReport(2, (BLOCK, BLOCK)), RtcpUnknown(202, 1, b"\x00\x00\x00\x02\x01\x03abc\x00\x00\x00"),
     RtcpBye((2, 3), b"hang up")),
    (RtcpReceiverReport(5),),
    (RtcpBye(()),),
    (RtcpSenderReport(9, 1, 2, 3, 4, (), b"\x00\x01\x02\x03"),),
]


@pytest.mark.parametrize("packets", COMPOUNDS)
def test_rtcp_round_trip(packets: tuple[object, ...]) -> None:
    wire = build_rtcp(packets)  # type: ignore[arg-type]
    assert parse_rtcp(wire) == packets
    assert is_rtcp(wire)


def test_rtcp_padding_on_last_packet_only() -> None:
    rr = build_rtcp([RtcpReceiverReport(5)])
    padded = bytes((rr[0] | 0x20, rr[1])) + (2).to_bytes(2, "big") + rr[4:] + b"\x00\x00\x00\x04"
    assert parse_rtcp(padded) == (RtcpReceiverReport(5),)
    with pytest.raises(InvalidPacket):
        parse_rtcp(padded + rr)


RTCP_ERRORS = [
    (b"", Truncated),
    (b"\x81\xc9\x00", Truncated),
    (b"\x81\xc9\x00\x07" + bytes(4), Truncated),  # length beyond the datagram
    (b"\x81\xc9\x00\x01" + bytes(4), Truncated),  # RC=1 but no block
    (b"\x41\xc9\x00\x00", InvalidPacket),
    (b"\x81\xcb\x00\x01\x00\x00\x00\x01", Truncated),  # BYE SC=1 ok, then second: see below
    (b"\x80\xc9" + bytes(2) + bytes(3000), LimitExceeded),
]


@pytest.mark.parametrize(("wire", "error"), RTCP_ERRORS[:5] + RTCP_ERRORS[6:])
def test_rtcp_errors(wire: bytes, error: type[MediaError]) -> None:
    with pytest.raises(error):
        parse_rtcp(wire)


def test_rtcp_bye_reason_truncated() -> None:
    with pytest.raises(Truncated):
        parse_rtcp(b"\x81\xcb\x00\x02\x00\x00\x00\x01\x09abc")


def test_demux() -> None:
    assert not is_rtcp(build_rtp(RtpPacket(0, 1, 2, 3)))
    assert not is_rtcp(b"\x80")


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_rtp(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except MediaError:
        return
    assert parse_rtp(build_rtp(packet)) == packet


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_rtcp(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except MediaError:
        return
    try:
        wire = build_rtcp(packets)
    except InvalidPacket:
        # Only a padded last packet can leave a body that is not whole words.
        assert any(isinstance(p, RtcpSenderReport | RtcpReceiverReport | RtcpUnknown) for p in packets)
        return
    assert parse_rtcp(wire) == packets


@given(st.binary(min_size=12, max_size=200))
def test_prefixes_raise_our_error_only(data: bytes) -> None:
    for end in range(len(data) + 1):
        try:
            parse_rtp(data[:end])
            parse_rtcp(data[:end])
        except MediaError:
            pass


rtcp_like = st.lists(
    st.tuples(st.integers(0, 31), st.sampled_from([200, 201, 202, 203, 204, 206]),
              st.integers(0, 12).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))),
    min_size=1, max_size=4,
).map(lambda packets: b"".join(bytes((0x80 | rc, pt)) + (len(body) // 4).to_bytes(2, "big") + body
                               for rc, pt, body in packets))


@given(rtcp_like)
def test_well_framed_rtcp_parses_or_raises_and_round_trips(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except MediaError:
        return
    assert parse_rtcp(build_rtcp(packets)) == packets
