"""SDS text codec and the gateway's handling of unsolicited codes: tables and properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.at import Unsolicited
from hardware.emulators import decode_simple_text_sds, simple_text_sds
from radio.sds import MAX_SDS_OCTETS, SdsError, decode_text, encode_text
from radio.tetra import RadioEvent, TetraGateway, TetraSettings


@pytest.mark.parametrize(("text", "bits", "user_data"), [
    ("", 16, "0201"),
    ("OK", 32, "02014F4B"),
    ("火警", 48, "021A706B8B66"),
    ("Évacuez", 72, "0201C976616375657A"),
])
def test_encode_table(text: str, bits: int, user_data: str) -> None:
    assert encode_text(text) == (bits, user_data)
    assert decode_text(user_data, bits) == text


@pytest.mark.parametrize(("user_data", "bits", "text"), [
    ("8201", None, None),              # not simple text
    ("02", None, None),                # truncated
    ("021A706B8B", None, None),        # odd UCS-2
    ("0281AABBCC4F4B", None, "OK"),    # time stamp present, skipped
    ("zz", None, None),                # not hex
    ("02014F4B00", 32, "OK"),          # bit length trims padding
])
def test_decode_table(user_data: str, bits: int | None, text: str | None) -> None:
    assert decode_text(user_data, bits) == text


def test_encode_errors() -> None:
    with pytest.raises(SdsError):
        encode_text("line\nbreak")
    with pytest.raises(SdsError):
        encode_text("长" * MAX_SDS_OCTETS)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFFFF,
                             exclude_categories=["Cs"]).filter(lambda c: c != "\x7f"),
               max_size=120))
def test_text_round_trips_and_agrees_with_the_emulator(text: str) -> None:
    bits, user_data = encode_text(text)
    assert decode_text(user_data, bits) == text
    try:
        assert encode_text(text) == simple_text_sds(text)
        assert decode_simple_text_sds(user_data) == text
    except UnicodeEncodeError:
        pass  # beyond Latin-1: UCS-2, which the emulator's helper does not build


@given(st.text(max_size=600), st.none() | st.integers(-10, 5000))
def test_any_user_data_decodes_or_is_none(user_data: str, bits: int | None) -> None:
    result = decode_text(user_data, bits)
    assert result is None or isinstance(result, str)


NAMES = ["+CTCC", "+CTICN", "+CTXG", "+CDTXC", "+CTCR", "+CTSDSR", "+CTXI", "RING"]


@given(st.lists(st.tuples(st.sampled_from(NAMES), st.text(max_size=80),
                          st.lists(st.text(max_size=40), max_size=2)), max_size=20))
def test_any_unsolicited_code_is_handled_or_reported(
        codes: list[tuple[str, str, list[str]]]) -> None:
    # Nothing is keyed, so no code may need the loop: handling is pure bookkeeping.
    seen: list[RadioEvent] = []
    gw = TetraGateway(TetraSettings("t", "/dev/null", ("9001",)), object(), seen.append)
    for name, value, extra in codes:
        gw._on_urc(Unsolicited(name, value, tuple(extra)))
    assert gw.floor.keyed() == frozenset()


def test_incoming_call_fields() -> None:
    seen: list[Any] = []
    gw = TetraGateway(TetraSettings("t", "/dev/null", ("9001",)), object(), seen.append)
    gw._on_urc(Unsolicited("+CTICN", "5,0,0,0,2001,1,1,0,1,1,1,9001,0"))
    gw._on_urc(Unsolicited("+CTXG", "5,3,0,0,0,2001"))
    gw._on_urc(Unsolicited("+CTCR", "5,1"))
    gw._on_urc(Unsolicited("+CTXG", "x"))
    assert [type(e).__name__ for e in seen] == ["IncomingGroupCall", "TalkerChanged",
                                                "CallReleased", "GatewayFault"]
