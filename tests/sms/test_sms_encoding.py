"""GSM-7 alphabet, septet packing, UCS-2 and segmentation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms import gsm7
from sms.encoding import (
    Encoding,
    ReferenceAllocator,
    choose_encoding,
    concat_udh,
    count_parts,
    fit_text,
    part_capacity,
    segment,
    ucs2_units,
)
from sms.errors import EncodingError, SmsError, TooManyParts

GSM_CHARS = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    "\f^{}\\[~]|€"
)


@pytest.mark.parametrize(("text", "packed_hex"), [
    # "hellohello", the classic TS 23.040 example (dreamfabric / turbocontrol write-ups).
    ("hellohello", "E8329BFD4697D9EC37"),
    # 8 septets fill exactly 7 octets.
    ("12345678", "31D98C56B3DD70"),
    ("", ""),
    ("@", "00"),
])
def test_pack_known_vectors(text: str, packed_hex: str) -> None:
    septets = gsm7.encode_septets(text)
    assert gsm7.pack_septets(septets).hex().upper() == packed_hex
    assert gsm7.decode_septets(gsm7.unpack_septets(bytes.fromhex(packed_hex), len(septets))) == text


@pytest.mark.parametrize(("char", "septets"), [
    ("€", b"\x1b\x65"), ("{", b"\x1b\x28"), ("}", b"\x1b\x29"), ("[", b"\x1b\x3c"),
    ("]", b"\x1b\x3e"), ("~", b"\x1b\x3d"), ("\\", b"\x1b\x2f"), ("|", b"\x1b\x40"),
    ("^", b"\x1b\x14"), ("\f", b"\x1b\x0a"), ("@", b"\x00"), ("¤", b"\x24"), ("§", b"\x5f"),
    ("à", b"\x7f"), ("Δ", b"\x10"), ("ñ", b"\x7d"),
])
def test_extension_and_specials(char: str, septets: bytes) -> None:
    assert gsm7.encode_septets(char) == septets
    assert gsm7.decode_septets(septets) == char
    assert gsm7.septet_length(char) == len(septets)


@pytest.mark.parametrize(("septets", "text"), [
    (b"\x1b\x41", "A"),   # escape to an undefined code shows the main-table character
    (b"\x1b\x1b", " "),   # reserved second extension table: a space
    (b"a\x1b", "a"),       # dangling final escape dropped
])
def test_decode_odd_escapes(septets: bytes, text: str) -> None:
    assert gsm7.decode_septets(septets) == text


def test_whole_alphabet_round_trip() -> None:
    assert gsm7.is_gsm7(GSM_CHARS)
    assert gsm7.decode_septets(gsm7.encode_septets(GSM_CHARS)) == GSM_CHARS


@pytest.mark.parametrize("text", ["中文", "ç", "`", "😀", "Ä€ü中"])
def test_not_gsm7(text: str) -> None:
    assert not gsm7.is_gsm7(text)
    assert choose_encoding(text) is Encoding.UCS2
    with pytest.raises(EncodingError):
        gsm7.encode_septets(text)
    with pytest.raises(EncodingError):
        segment(text, encoding=Encoding.GSM7)


@given(st.text(alphabet=GSM_CHARS, max_size=200), st.integers(0, 6))
def test_pack_unpack_property(text: str, fill: int) -> None:
    septets = gsm7.encode_septets(text)
    packed = gsm7.pack_septets(septets, fill)
    assert len(packed) == gsm7.packed_length(len(septets), fill)
    assert gsm7.unpack_septets(packed, len(septets), fill) == septets


def test_fill_bits_put_zero_bits_first() -> None:
    assert gsm7.pack_septets(b"\x7f", 1) == bytes([0xFE])
    assert gsm7.unpack_septets(bytes([0xFE]), 1, 1) == b"\x7f"
    assert gsm7.fill_bits_for_udh(6) == 1
    assert gsm7.fill_bits_for_udh(7) == 0


@pytest.mark.parametrize(("data", "count", "fill"), [(b"", 1, 0), (b"\x00", 2, 0), (b"\x00", 1, 7),
                                                      (b"\x00", -1, 0)])
def test_unpack_errors(data: bytes, count: int, fill: int) -> None:
    with pytest.raises(EncodingError):
        gsm7.unpack_septets(data, count, fill)


def test_pack_fill_error() -> None:
    with pytest.raises(EncodingError):
        gsm7.pack_septets(b"a", 7)


@pytest.mark.parametrize(("text", "encoding", "units"), [
    ("a" * 160, Encoding.GSM7, [160]),
    ("a" * 161, Encoding.GSM7, [153, 8]),
    ("a" * 306, Encoding.GSM7, [153, 153]),
    ("a" * 307, Encoding.GSM7, [153, 153, 1]),
    ("€" * 80, Encoding.GSM7, [160]),
    ("€" * 81, Encoding.GSM7, [152, 10]),          # 76 ESC pairs then 5: pair never split
    ("a" + "€" * 80, Encoding.GSM7, [153, 8]),     # 1 + 76*2 = 153 exactly
    ("中" * 70, Encoding.UCS2, [70]),
    ("中" * 71, Encoding.UCS2, [67, 4]),
    ("😀" * 35, Encoding.UCS2, [70]),
    ("😀" * 36, Encoding.UCS2, [66, 6]),           # 33 pairs; the 34th would straddle 67
    ("中" + "😀" * 35, Encoding.UCS2, [67, 4]),
])
def test_segmentation_table(text: str, encoding: Encoding, units: list[int]) -> None:
    msg = segment(text, ref=7)
    assert msg.encoding is encoding
    assert [s.units for s in msg.segments] == units
    assert "".join(s.text for s in msg.segments) == text
    for s in msg.segments:
        if encoding is Encoding.GSM7:
            assert len(s.payload) == s.units
            assert s.payload[-1:] != b"\x1b"
        else:
            assert len(s.payload) == 2 * s.units
            s.payload.decode("utf-16-be")  # never a split surrogate pair


def test_single_part_has_no_udh() -> None:
    msg = segment("evacuate now")
    assert msg.total == 1 and msg.ref is None and msg.udh(0) == b""


def test_udh_8_and_16_bit() -> None:
    msg = segment("x" * 200, ref=0xAB)
    assert msg.udh(0) == bytes.fromhex("050003AB0201")
    assert msg.udh(1) == bytes.fromhex("050003AB0202")
    assert msg.fill_bits(0) == 1
    msg16 = segment("x" * 200, ref=0x1234, ref_bits=16)
    assert [s.units for s in msg16.segments] == [152, 48]
    assert msg16.udh(1) == bytes.fromhex("0608041234" "0202")
    assert msg16.fill_bits(0) == 0
    assert [s.units for s in segment("中" * 100, ref=1, ref_bits=16).segments] == [66, 34]


def test_capacities() -> None:
    assert part_capacity(Encoding.GSM7, 6) == 153
    assert part_capacity(Encoding.GSM7, 7) == 152
    assert part_capacity(Encoding.UCS2, 6) == 67
    assert part_capacity(Encoding.UCS2, 7) == 66


def test_too_many_parts() -> None:
    with pytest.raises(TooManyParts) as info:
        segment("中" * (67 * 3 + 1), max_parts=3)
    assert info.value.parts_needed == 4 and info.value.max_parts == 3
    assert isinstance(info.value, SmsError)
    assert len(segment("中" * (67 * 3), max_parts=3).segments) == 3
    assert count_parts("中" * 1000) == 15


@pytest.mark.parametrize(("kwargs", "text"), [
    ({"ref": 256}, "x" * 200),
    ({"ref": -1}, "x" * 200),
    ({"ref": 70000, "ref_bits": 16}, "x" * 200),
    ({"max_parts": 0}, "x"),
    ({"max_parts": 256}, "x"),
    ({}, "bad\x00text"),
    ({}, "bell\x07"),
    ({}, "esc\x1b"),
    ({}, "lone \ud800"),
])
def test_segment_errors(kwargs: dict[str, int], text: str) -> None:
    with pytest.raises(EncodingError):
        segment(text, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("ref", "total", "seq", "bits"), [
    (1, 0, 1, 8), (1, 2, 0, 8), (1, 2, 3, 8), (1, 256, 1, 8), (1, 2, 1, 12)])
def test_concat_udh_errors(ref: int, total: int, seq: int, bits: int) -> None:
    with pytest.raises(EncodingError):
        concat_udh(ref, total, seq, bits)  # type: ignore[arg-type]


def test_newlines_allowed() -> None:
    assert segment("line1\nline2\r\n").total == 1


@given(st.text(max_size=600).filter(lambda t: all(
    (ord(c) >= 0x20 and ord(c) != 0x7F and not 0xD800 <= ord(c) <= 0xDFFF) or c in "\r\n"
    for c in t)))
def test_segment_property(text: str) -> None:
    msg = segment(text, max_parts=255, ref=3)
    assert "".join(s.text for s in msg.segments) == text
    limit = 160 if msg.encoding is Encoding.GSM7 else 70
    if msg.total > 1:
        limit = 153 if msg.encoding is Encoding.GSM7 else 67
    assert all(s.units <= limit for s in msg.segments)
    if msg.encoding is Encoding.UCS2:
        assert sum(s.units for s in msg.segments) == ucs2_units(text)


def test_reference_allocator_wraps() -> None:
    alloc = ReferenceAllocator(seed=0xFF)
    assert alloc.next(8) == 0xFF
    assert alloc.next(8) == 0x00
    alloc16 = ReferenceAllocator(seed=0xFFFF)
    assert alloc16.next(16) == 0xFFFF
    assert alloc16.next(16) == 0


def test_huge_text_refused_early() -> None:
    with pytest.raises(TooManyParts) as info:
        segment("a" * 1_000_000, max_parts=255)
    assert info.value.parts_needed >= 256
    assert segment("a" * 153 * 2, max_parts=2).total == 2


def test_fit_text_keeps_the_closing_paragraph_and_cuts_the_body() -> None:
    link = "Acknowledge: https://ecc.example/ack/0f3a.9b2c"
    body = "东城街道居民楼火灾，三人死亡，请立即到岗。" * 40
    fitted = fit_text(f"{body}\n\n{link}", max_parts=3)
    assert fitted.endswith("…\n\n" + link) and count_parts(fitted) <= 3
    assert fitted.startswith(body[:50])
    # The longest head that fits: one more character would not.
    head = fitted[: -len("…\n\n" + link)]
    with pytest.raises(TooManyParts):
        segment(body[: len(head) + 1] + "…\n\n" + link, max_parts=3)
    assert fit_text("short", max_parts=1) == "short"
    # No paragraph: cut at the end; GSM-7 text gets "..." so it stays GSM-7 (160 a part).
    assert fit_text("x" * 200, max_parts=1) == "x" * 157 + "..."
    with pytest.raises(TooManyParts):
        fit_text("head\n\n" + "链" * 200, max_parts=1)  # the link alone cannot fit
