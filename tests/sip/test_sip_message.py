"""Message parsing, limits, framing, build_response and Via stamping."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.sip.errors import (
    SipBodyTooLarge,
    SipError,
    SipFramingError,
    SipHeaderInjection,
    SipMessageTooLarge,
    SipParseError,
    SipUriTooLong,
)
from telephony.sip.headers import Headers, parse_name_addr, parse_via, split_list
from telephony.sip.message import (
    KEEPALIVE_PING,
    Destination,
    SipLimits,
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    make_via,
    new_branch,
    parse_message,
    response_destination,
    stamp_via_received,
)
from telephony.sip.uri import SipUri, TelUri, parse_uri

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
)
INVITE = (
    b"INVITE sip:110@dispatch.example.cn SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Hotline" <sip:110@dispatch.example.cn>\r\n'
    b'From: "\xe5\xbc\xa0\xe4\xb8\x89" <sip:13800000000@carrier.example.cn>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.example.cn\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:13800000000@192.0.2.10:5060>\r\n"
    b"Record-Route: <sip:proxy.example.cn;lr>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def request(data: bytes = INVITE) -> SipRequest:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def test_invite_fields() -> None:
    msg = request()
    assert msg.from_.display_name == "张三"
    assert msg.from_.tag == "1928301774"
    assert msg.to.tag is None
    assert msg.top_via.rport is None and msg.top_via.has_param("rport")
    assert msg.top_via.sent_by == "192.0.2.10:5060"
    assert msg.content_type is not None and msg.content_type.mime == "application/sdp"
    assert msg.body == SDP
    assert msg.record_routes[0].sip_uri.has_param("lr")


URI_CASES = [
    ("sip:alice@atlanta.com", SipUri("sip", "atlanta.com", "alice")),
    ("sips:alice:secretword@atlanta.com;transport=tcp",
     SipUri("sips", "atlanta.com", "alice", "secretword", None, (("transport", "tcp"),))),
    ("sip:+1-212-555-1212:1234@gateway.com;user=phone",
     SipUri("sip", "gateway.com", "+1-212-555-1212", "1234", None, (("user", "phone"),))),
    ("sip:alice@192.0.2.4:5070", SipUri("sip", "192.0.2.4", "alice", None, 5070)),
    ("sip:[2001:db8::10]:5060;lr",
     SipUri("sip", "2001:db8::10", None, None, 5060, (("lr", None),))),
    ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
     SipUri("sip", "atlanta.com", None, None, None, (("method", "REGISTER"),),
            (("to", "alice%40atlanta.com"),))),
    ("tel:+86-10-1234-5678;phone-context=example.cn",
     TelUri("+86-10-1234-5678", (("phone-context", "example.cn"),))),
]


@pytest.mark.parametrize(("text", "expected"), URI_CASES)
def test_uri_round_trip(text: str, expected: object) -> None:
    uri = parse_uri(text)
    assert uri == expected
    assert str(uri) == text


@pytest.mark.parametrize(
    "text",
    ["sip:", "sip:@host", "sip:user@", "sip:user@host:99999", "sip:user@[::1", "sip:a b@c",
     "sip:user@host;=x", "sip:user@-bad-.com", "sip:u@h?x", "tel:abc z", "1nvalid:x", "nocolon"],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_name_addr_forms() -> None:
    star = parse_name_addr("*")
    assert star.star and str(star) == "*"
    plain = parse_name_addr("sip:bob@biloxi.com;tag=a6c85cf;expires=60")
    assert plain.tag == "a6c85cf" and plain.expires == 60
    quoted = parse_name_addr('"A \\"B\\"" <sip:a@b>;tag=1')
    assert quoted.display_name == 'A "B"'
    assert parse_name_addr(str(quoted)) == quoted
    with pytest.raises(SipParseError):
        parse_name_addr("sip:a@b;expires=99999999999").expires  # noqa: B018


def test_via_forms() -> None:
    via = parse_via("SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKx;received=2001:db8::2")
    assert via.host == "2001:db8::1" and via.port == 5061 and via.received == "2001:db8::2"
    assert str(via) == "SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKx;received=2001:db8::2"
    for bad in ("SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP h;branch", "SIP/2.0/UDP h;rport=x"):
        with pytest.raises(SipParseError):
            parse_via(bad)


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z@w> ,') == [
        '"a, b" <sip:x@y;p=1,2>', "<sip:z@w>", ""
    ]


def test_comma_joined_and_separate_lines_give_the_same_values() -> None:
    joined = INVITE.replace(
        b"Record-Route: <sip:proxy.example.cn;lr>\r\n",
        b"Record-Route: <sip:p1.example.cn;lr>, <sip:p2.example.cn;lr>\r\n",
    )
    separate = INVITE.replace(
        b"Record-Route: <sip:proxy.example.cn;lr>\r\n",
        b"Record-Route: <sip:p1.example.cn;lr>\r\nRecord-Route: <sip:p2.example.cn;lr>\r\n",
    )
    assert request(joined).record_routes == request(separate).record_routes
    assert len(request(joined).record_routes) == 2


def test_compact_and_folded_headers() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"f: <sip:c@d>\r\n ;tag=9\r\n"
        b"t: sip:a@b\r\ni: x\r\nCSEQ: 1 OPTIONS\r\nk: path\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.from_.tag == "9"
    assert msg.headers.get("Supported") == "path"
    assert [n for n, _ in msg.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Supported", "Content-Length"
    ]


def test_headers_reject_injection() -> None:
    headers = Headers()
    for bad in ("a\r\nEvil: 1", "a\nb", "a\x00"):
        with pytest.raises(SipHeaderInjection):
            headers.add("Subject", bad)
    with pytest.raises(SipHeaderInjection):
        Headers([("X\r\nY", "1")])


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        (SipLimits(max_message=100), SipMessageTooLarge),
        (SipLimits(max_body=10), SipBodyTooLarge),
        (SipLimits(max_uri=10), SipUriTooLong),
        (SipLimits(max_headers=5), SipParseError),
        (SipLimits(max_line=40), SipParseError),
    ],
)
def test_limits(limits: SipLimits, error: type[SipError]) -> None:
    with pytest.raises(error) as info:
        parse_message(INVITE, limits)
    assert info.value.status == {
        SipMessageTooLarge: 513, SipBodyTooLarge: 413, SipUriTooLong: 414
    }.get(error, 400)
    # Headers were read for 413/414, so those can be answered; the others cannot.
    assert info.value.response_possible is (error in (SipBodyTooLarge, SipUriTooLong))


def test_build_response_copies_fields_and_adds_tag() -> None:
    req = request()
    trying = build_response(req, 100)
    assert trying.to.tag is None and trying.reason == "Trying"
    ringing = build_response(req, 180, to_tag="abc", extra_headers=[("Contact", "<sip:x@y>")])
    assert ringing.to.tag == "abc"
    assert ringing.headers.get_all("Via") == req.headers.get_all("Via")
    assert ringing.from_ == req.from_ and ringing.call_id == req.call_id
    assert ringing.cseq == req.cseq
    assert ringing.headers.get_all("Record-Route") == req.headers.get_all("Record-Route")
    busy = build_response(req, 486, tag_factory=lambda: "gen")
    assert busy.to.tag == "gen" and busy.headers.get("Record-Route") is None
    again = parse_message(busy.to_bytes())
    assert isinstance(again, SipResponse) and again.status == 486


def test_stamp_via_received_and_response_destination() -> None:
    req = request()
    stamp_via_received(req, "198.51.100.7", 40000)
    via = req.top_via
    assert via.received == "198.51.100.7" and via.rport == 40000
    udp = Destination("UDP", "198.51.100.7", 40000)
    assert response_destination(via, udp) == Destination("UDP", "198.51.100.7", 40000)
    plain = parse_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1")
    src = Destination("UDP", "192.0.2.1", 5062)
    assert response_destination(plain, src) == Destination("UDP", "192.0.2.1", 5060)
    tcp = Destination("TCP", "192.0.2.1", 33333)
    assert response_destination(plain, tcp) == tcp


def test_same_host_without_rport_gets_no_received() -> None:
    req = request(INVITE.replace(b";rport", b""))
    stamp_via_received(req, "192.0.2.10", 5060)
    assert req.top_via.received is None


def test_stream_framer_keepalive_and_split_reads() -> None:
    framer = StreamFramer()
    stream = b"\r\n\r\n" + INVITE + b"\r\n" + INVITE
    frames: list[bytes] = []
    for i in range(0, len(stream), 7):
        frames += framer.feed(stream[i : i + 7])
    assert frames == [KEEPALIVE_PING, INVITE, INVITE]
    assert framer.buffered == 0


@pytest.mark.parametrize(
    "bad",
    [b"Content-Length: -1", b"Content-Length: five", b"Content-Length: 1\r\nl: 2"],
)
def test_stream_framer_fatal_errors(bad: bytes) -> None:
    framer = StreamFramer()
    data = INVITE.replace(b"Content-Length: " + str(len(SDP)).encode(), bad)
    with pytest.raises(SipFramingError):
        framer.feed(data)
    assert framer.closed
    with pytest.raises(SipFramingError):
        framer.feed(b"x")


def test_stream_framer_size_limits() -> None:
    with pytest.raises(SipMessageTooLarge):
        StreamFramer(SipLimits(max_message=64)).feed(b"A" * 65)
    with pytest.raises(SipBodyTooLarge):
        StreamFramer(SipLimits(max_body=10)).feed(INVITE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_sip_error(data: bytes) -> None:
    with contextlib.suppress(SipError):
        parse_message(data)


def _mutations() -> st.SearchStrategy[bytes]:
    """Valid messages with random splices, so the parser gets deep, not just rejected early."""
    return st.builds(
        lambda pos, junk, cut: INVITE[:pos] + junk + INVITE[pos + cut :],
        st.integers(0, len(INVITE)),
        st.binary(max_size=8),
        st.integers(0, 8),
    )


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_mutated_messages_parse_or_raise_sip_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipError:
        return
    assert parse_message(msg.to_bytes()).to_bytes() == msg.to_bytes()


@settings(max_examples=150, deadline=None)
@given(st.one_of(_mutations(), st.binary(max_size=300)))
def test_stream_framer_one_byte_at_a_time(data: bytes) -> None:
    framer = StreamFramer()
    try:
        for i in range(len(data)):
            for frame in framer.feed(data[i : i + 1]):
                if frame != KEEPALIVE_PING:
                    with contextlib.suppress(SipError):
                        parse_message(frame)
    except SipError:
        assert framer.closed


def test_new_branch_and_make_via() -> None:
    branch = new_branch(lambda n: "ab" * n)
    assert branch == "z9hG4bK" + "ab" * 8
    value = make_via("udp", "2001:db8::5", 5060, branch)
    assert value == f"SIP/2.0/UDP [2001:db8::5]:5060;branch={branch};rport"
    via = parse_via(value)
    assert via.branch == branch and via.has_param("rport") and via.rport is None
    assert make_via("TCP", "h.example", None, branch, rport=False) == (
        f"SIP/2.0/TCP h.example;branch={branch}"
    )


def test_headers_editing() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2")])
    headers.prepend("Via", "SIP/2.0/UDP top;branch=z9hG4bK0")
    assert [v.split()[1].split(";")[0] for v in headers.values("Via")] == ["top", "a", "b"]
    assert headers.pop_first_value("Via") == "SIP/2.0/UDP top;branch=z9hG4bK0"
    assert headers.pop_first_value("via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert headers.get_all("Via") == ["SIP/2.0/UDP b;branch=z9hG4bK2"]
    headers.replace_first_value("Via", "SIP/2.0/TCP c;branch=z9hG4bK3")
    assert headers.get("VIA") == "SIP/2.0/TCP c;branch=z9hG4bK3"
    headers.add("X-Unit", "1")
    headers.add("x-unit", "2")
    assert headers.get_all("X-UNIT") == ["1", "2"] and headers.count("x-Unit") == 2
    headers.set("X-Unit", "3")
    assert headers.get_all("x-unit") == ["3"]
    headers.remove("X-UNIT")
    assert "X-Unit" not in headers and "Via" in headers
    with pytest.raises(KeyError):
        headers.replace_first_value("Route", "<sip:x>")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_uri_and_name_addr_parsers_only_raise_parse_errors(text: str) -> None:
    with contextlib.suppress(SipParseError):
        parse_uri(text)
    with contextlib.suppress(SipParseError):
        parse_name_addr(text)
    with contextlib.suppress(SipParseError):
        parse_via(text)


@pytest.mark.parametrize(
    "start",
    [b"SIP/2.0 200 OK\rInjected: 1", b"SIP/2.0 200 O\x00K", b"OPTIONS sip:a@b\x01 SIP/2.0"],
)
def test_control_characters_in_start_line_are_rejected(start: bytes) -> None:
    data = start + b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n" \
        b"To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
    with pytest.raises(SipParseError):
        parse_message(data)


def test_build_response_refuses_injected_reason() -> None:
    with pytest.raises(SipHeaderInjection):
        build_response(request(), 480, "Gone\r\nX-Evil: 1")


def test_binary_body_with_nul_and_blank_lines_frames_by_content_length() -> None:
    # In the spirit of RFC 4475 mpart01: a body holding NULs and CRLFCRLF.
    body = b"--b\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\r\n\r\n\xff\x00--b--\r\n"
    data = (
        b"MESSAGE sip:kumiko@example.org SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKm1\r\n"
        b"From: <sip:fluffy@example.com>;tag=2fb0dcc9\r\nTo: <sip:kumiko@example.org>\r\n"
        b"Call-ID: mp@x\r\nCSeq: 1 MESSAGE\r\nContent-Type: multipart/mixed;boundary=b\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    frames = StreamFramer().feed(data + data)
    assert len(frames) == 2
    msg = parse_message(frames[1])
    assert msg.body == body
    assert msg.content_type is not None and msg.content_type.param("boundary") == "b"
