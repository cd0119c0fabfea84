"""SDP parsing limits and RFC 3264 offer/answer for G.711 and telephone-event."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.media.sdp import (
    PCMA,
    PCMU,
    Direction,
    LocalMedia,
    SdpError,
    accept_answer,
    answer_offer,
    build_sdp,
    make_offer,
    parse_sdp,
)

LOCAL = LocalMedia("192.0.2.10", 20000, 42)


def offer(formats: str = "0 8 101", extra: str = "", c: str = "IN IP4 198.51.100.7",
          port: int = 4000, proto: str = "RTP/AVP") -> str:
    return ("v=0\r\no=alice 2890844526 2890844526 IN IP4 198.51.100.7\r\ns=call\r\n"
            f"c={c}\r\nt=0 0\r\nm=audio {port} {proto} {formats}\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n" + extra)


def test_answer_takes_offerers_first_codec_and_telephone_event() -> None:
    sd, agreed = answer_offer(parse_sdp(offer("8 0 101")), LOCAL)
    assert agreed.codec == PCMA and agreed.payload_type == 8
    assert agreed.dtmf_payload_type == 101
    assert agreed.remote == ("198.51.100.7", 4000)
    assert agreed.direction is Direction.SENDRECV
    text = build_sdp(sd)
    assert "m=audio 20000 RTP/AVP 8 101\r\n" in text
    assert "c=IN IP4 192.0.2.10\r\n" in text and "a=ptime:20\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\n" in text


@pytest.mark.parametrize(("theirs", "ours"), [
    ("sendonly", Direction.RECVONLY), ("recvonly", Direction.SENDONLY),
    ("inactive", Direction.INACTIVE), ("sendrecv", Direction.SENDRECV)])
def test_directions_are_mirrored(theirs: str, ours: Direction) -> None:
    sd, agreed = answer_offer(parse_sdp(offer(extra=f"a={theirs}\r\n")), LOCAL)
    assert agreed.direction is ours
    assert f"a={ours.value}\r\n" in build_sdp(sd)


def test_old_style_hold_means_do_not_send() -> None:
    _, agreed = answer_offer(parse_sdp(offer(c="IN IP4 0.0.0.0")), LOCAL)
    assert agreed.remote is None and agreed.direction is Direction.RECVONLY


def test_ipv6_connection() -> None:
    _, agreed = answer_offer(parse_sdp(offer(c="IN IP6 2001:db8::7")),
                             LocalMedia("2001:db8::1", 20000, 1))
    assert agreed.remote == ("2001:db8::7", 4000)


def test_dynamic_payload_type_by_rtpmap() -> None:
    _, agreed = answer_offer(parse_sdp(offer("96 101", "a=rtpmap:96 pcmu/8000\r\n")), LOCAL)
    assert agreed.codec == PCMU and agreed.payload_type == 96


def test_video_and_second_audio_are_refused_with_port_zero() -> None:
    body = offer() + "m=video 5000 RTP/AVP 96\r\nm=audio 6000 RTP/AVP 0\r\n"
    sd, agreed = answer_offer(parse_sdp(body), LOCAL)
    assert [m.port for m in sd.media] == [20000, 0, 0]
    assert agreed.remote == ("198.51.100.7", 4000)


@pytest.mark.parametrize(("body", "message"), [
    (offer("9 18"), "no acceptable audio stream"),
    (offer(proto="RTP/SAVP"), "no acceptable audio stream"),
    (offer(port=0), "no acceptable audio stream"),
    (offer(c="IN IP4 example.com"), "not an IP address"),
    (offer(c="IN IP6 192.0.2.1"), "does not match"),
    ("v=0\r\ns=x\r\n", "must start with v=0"),
    ("", "empty SDP"),
    (offer() + "a=ptime:0\r\n", "ptime"),
    (offer() + "garbage\r\n", "not 'x=value'"),
    (offer() + "a=x\x01y\r\n", "control character"),
    (offer() + "a=x\r\n" * 300, "more than 256 lines"),
    (offer() + "a=" + "x" * 2000 + "\r\n", "longer than"),
    (offer() + ("a=" + "x" * 1000 + "\r\n") * 20, "larger than"),
    (offer("0 999"), None),
])
def test_errors_name_the_problem(body: str, message: str | None) -> None:
    if message is None:  # an unknown format beside a good one is simply ignored
        answer_offer(parse_sdp(body), LOCAL)
        return
    with pytest.raises(SdpError, match=message):
        answer_offer(parse_sdp(body), LOCAL)


def test_sdp_error_is_a_value_error_for_488() -> None:
    assert issubclass(SdpError, ValueError) and SdpError.status == 488


def test_offer_then_answer_round_trip() -> None:
    ours = make_offer(LOCAL)
    parsed = parse_sdp(build_sdp(ours))
    assert parsed == ours
    peer = LocalMedia("203.0.113.5", 7000, 9)
    their_sd, _ = answer_offer(parsed, peer)
    agreed = accept_answer(ours, parse_sdp(build_sdp(their_sd)))
    assert agreed.codec == PCMU and agreed.dtmf_payload_type == 101
    assert agreed.remote == ("203.0.113.5", 7000)


def test_answer_with_codec_not_offered_is_refused() -> None:
    ours = make_offer(LOCAL, codecs=(PCMU,))
    answer = offer("8")
    with pytest.raises(SdpError, match="no codec we offered"):
        accept_answer(ours, parse_sdp(answer))


@given(st.text(max_size=400))
def test_any_text_parses_or_raises_sdp_error(text: str) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(text)


@given(st.lists(st.sampled_from(["v=0", "o=a 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4",
                                 "t=0 0", "m=audio 1 RTP/AVP 0", "a=sendonly", "a=rtpmap:0 x",
                                 "a=rtpmap:8 PCMA/8000", "m=audio x", "a=ptime:20", "b=AS:64"]),
                max_size=20))
def test_shuffled_lines_parse_or_raise(lines: list[str]) -> None:
    try:
        sd = parse_sdp("\r\n".join(lines))
        answer_offer(sd, LOCAL)
    except SdpError:
        pass
