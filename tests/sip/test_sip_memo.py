"""The parse memo (telephony.sip.uri.memoised): a fast path that must never change an answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.sip.errors import SipParseError
from telephony.sip.headers import parse_cseq, parse_name_addr, parse_via
from telephony.sip.uri import MEMO_MAX_TEXT, memoised, parse_uri


def test_a_memoised_parser_answers_as_the_parser_and_remembers_only_good_short_text() -> None:
    calls: list[str] = []

    def parser(text: str) -> int:
        calls.append(text)
        if not text.isdigit():
            raise SipParseError(f"bad {text!r}")
        return int(text)

    parse = memoised(parser)
    assert parse("42") == 42 and parse("42") == 42
    assert calls == ["42"]  # the second answer came from the memo
    for _ in range(2):  # errors are raised every time, never remembered
        with pytest.raises(SipParseError):
            parse("x")
    assert calls == ["42", "x", "x"]
    long = "1" * (MEMO_MAX_TEXT + 1)
    assert parse(long) == int(long) and parse(long) == int(long)
    assert calls[-2:] == [long, long]  # too long to remember


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport",
    "SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK2;received=10.0.0.1",
])
def test_a_remembered_via_is_the_same_value_as_a_fresh_parse(text: str) -> None:
    assert parse_via(text) == parse_via.__wrapped__(text)  # type: ignore[attr-defined]
    assert parse_via(text) is parse_via(text)  # shared: the value is frozen


@given(st.text(max_size=80))
def test_memoised_parsers_agree_with_the_plain_parsers_on_any_text(text: str) -> None:
    for parse in (parse_uri, parse_via, parse_name_addr, parse_cseq):
        plain = parse.__wrapped__  # type: ignore[attr-defined]
        try:
            expected: object = plain(text)
        except SipParseError as exc:
            expected = type(exc)
        for _ in range(2):  # first parse, then the memo
            try:
                got: object = parse(text)
            except SipParseError as exc:
                got = type(exc)
            assert got == expected


@pytest.mark.parametrize(("transport", "host", "port", "rport"), [
    ("udp", "127.0.0.1", 5060, True),
    ("TCP", "2001:db8::1", 5061, False),
    ("TLS", "sip.example.org", None, True),
])
def test_a_via_we_build_is_primed_with_the_value_a_fresh_parse_gives(
    transport: str, host: str, port: int | None, rport: bool
) -> None:
    from telephony.sip.message import make_via, new_branch

    text = make_via(transport, host, port, new_branch(), rport=rport)
    plain = parse_via.__wrapped__(text)  # type: ignore[attr-defined]
    assert parse_via(text) == plain
    assert parse_via(text).branch == plain.branch and parse_via(text).rport is None


def test_the_via_priming_is_bounded() -> None:
    from telephony.sip import headers

    for n in range(headers._VIA_PRIMED_MAX + 10):
        headers.prime_via(f"SIP/2.0/UDP h:{n};branch=z9hG4bKp{n}",
                          headers.Via("UDP", "h", n, (("branch", f"z9hG4bKp{n}"),)))
    assert len(headers._VIA_PRIMED) == headers._VIA_PRIMED_MAX
    last = headers._VIA_PRIMED_MAX + 9
    assert parse_via(f"SIP/2.0/UDP h:{last};branch=z9hG4bKp{last}").port == last


def test_a_stamped_via_is_remembered_as_the_value_a_fresh_parse_gives() -> None:
    from telephony.sip.message import SipRequest, parse_message, stamp_via_received

    raw = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKs1;rport"
           b"\r\nFrom: <sip:b@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
           b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    request = parse_message(raw)
    assert isinstance(request, SipRequest)
    stamp_via_received(request, "192.0.2.7", 40000)
    text = request.headers.first_value("Via")
    assert text == "SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bKs1;rport=40000;received=192.0.2.7"
    assert request.top_via == parse_via.__wrapped__(text)  # type: ignore[attr-defined]
    assert request.top_via.rport == 40000 and request.top_via.received == "192.0.2.7"
