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
