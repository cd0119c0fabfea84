"""Choosing GSM-7 or UCS-2 and cutting a text into concatenated SMS parts.

Theory of operation: :func:`choose_encoding` picks GSM-7 when every character
is in the TS 23.038 default alphabet or its extension table, otherwise UCS-2
(sent as UTF-16BE, so a character outside the BMP is a surrogate pair and
costs two units).  :func:`segment` then measures the text in *units* (septets
or UTF-16 code units).  If it fits one SMS (160 septets / 70 units) it is one
part without a header; otherwise every part carries a concatenation User Data
Header (TS 23.040 §9.2.3.24.1 IEI 0x00 with an 8-bit reference, or §9.2.3.24.8
IEI 0x08 with a 16-bit one), which leaves 153/67 units per part with the 8-bit
reference and 152/66 with the 16-bit one.  Parts are cut on character
boundaries only, so an ESC pair or a surrogate pair is never split.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Literal

from . import gsm7
from .errors import EncodingError, TooManyParts

# TS 23.040 §9.2.3.16 / §9.2.3.24: 140 octets of user data per SMS.
MAX_USER_DATA_OCTETS = 140
MAX_SINGLE_GSM7_SEPTETS = 160
MAX_SINGLE_UCS2_UNITS = 70
# A concatenated message has at most 255 parts (the part counter is one octet).
SPEC_MAX_PARTS = 255
DEFAULT_MAX_PARTS = 10

IEI_CONCAT_8BIT = 0x00
IEI_CONCAT_16BIT = 0x08

RefBits = Literal[8, 16]

# C0 controls other than LF and CR have no place in a broadcast text and would
# be dangerous on a command channel (STYLE habit 8); DEL likewise.  Lone
# surrogates cannot be encoded as UTF-16 at all.
_FORBIDDEN = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class Encoding(enum.Enum):
    """The two alphabets we send with; ``dcs`` is the TP-DCS / SMPP data_coding value."""

    GSM7 = "gsm7"
    UCS2 = "ucs2"

    @property
    def dcs(self) -> int:
        """TP-DCS general data coding value (no message class): 0x00 or 0x08."""
        return 0x00 if self is Encoding.GSM7 else 0x08


def check_text(text: str) -> None:
    """Raise :class:`EncodingError` for control characters or lone surrogates in ``text``."""
    bad = _FORBIDDEN.search(text)
    if bad is None:
        return
    code = ord(bad.group())
    if 0xD800 <= code <= 0xDFFF:
        raise EncodingError(f"lone surrogate U+{code:04X} cannot be sent")
    raise EncodingError(f"control character U+{code:04X} is not allowed in SMS text")


def choose_encoding(text: str) -> Encoding:
    """GSM-7 if every character of ``text`` is in the default alphabet or extension, else UCS-2."""
    return Encoding.GSM7 if gsm7.is_gsm7(text) else Encoding.UCS2


def ucs2_units(text: str) -> int:
    """UTF-16 code units ``text`` needs (a non-BMP character counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def concat_udh(ref: int, total: int, seq: int, ref_bits: RefBits = 8) -> bytes:
    """The User Data Header (UDHL included) for part ``seq`` of ``total`` with reference ``ref``."""
    if not 1 <= total <= SPEC_MAX_PARTS or not 1 <= seq <= total:
        raise EncodingError(f"part {seq} of {total} is out of range")
    if ref_bits == 8:
        if not 0 <= ref <= 0xFF:
            raise EncodingError(f"8-bit reference {ref} out of range")
        return bytes((5, IEI_CONCAT_8BIT, 3, ref, total, seq))
    if ref_bits == 16:
        if not 0 <= ref <= 0xFFFF:
            raise EncodingError(f"16-bit reference {ref} out of range")
        return bytes((6, IEI_CONCAT_16BIT, 4, ref >> 8, ref & 0xFF, total, seq))
    raise EncodingError(f"reference width must be 8 or 16 bits, got {ref_bits}")


def udh_length(ref_bits: RefBits) -> int:
    """Octets taken by a concatenation UDH, UDHL included (6 or 7)."""
    return 6 if ref_bits == 8 else 7


def part_capacity(encoding: Encoding, udh_octets: int) -> int:
    """Units (septets or UTF-16 units) that fit in one SMS after ``udh_octets`` of header."""
    if encoding is Encoding.GSM7:
        return (MAX_USER_DATA_OCTETS * 8 - udh_octets * 8 - gsm7.fill_bits_for_udh(udh_octets)) // 7
    return (MAX_USER_DATA_OCTETS - udh_octets) // 2


@dataclass(frozen=True, slots=True)
class Segment:
    """One part's text and its encoded (unpacked) payload.

    ``payload`` is unpacked septets (one per octet) for GSM-7 and UTF-16BE for
    UCS-2; ``units`` is its length in septets or UTF-16 code units.
    """

    text: str
    payload: bytes
    units: int


@dataclass(frozen=True, slots=True)
class SegmentedMessage:
    """A text cut into parts ready for a TPDU or submit_sm.

    ``ref`` is None for a single-part message (no UDH is needed).
    """

    encoding: Encoding
    segments: tuple[Segment, ...]
    ref: int | None
    ref_bits: RefBits

    @property
    def total(self) -> int:
        """Number of parts."""
        return len(self.segments)

    def udh(self, index: int) -> bytes:
        """The UDH for part ``index`` (0-based); empty for a single-part message."""
        if self.ref is None:
            return b""
        return concat_udh(self.ref, self.total, index + 1, self.ref_bits)

    def fill_bits(self, index: int) -> int:
        """Fill bits between the UDH and packed GSM-7 text of part ``index``."""
        if self.encoding is not Encoding.GSM7:
            return 0
        return gsm7.fill_bits_for_udh(len(self.udh(index)))


def _cut(text: str, costs: list[int], capacity: int) -> list[tuple[int, int, int]]:
    """Greedy cut into (start, end, units) spans of at most ``capacity`` units."""
    spans: list[tuple[int, int, int]] = []
    start = 0
    used = 0
    for i, cost in enumerate(costs):
        if used + cost > capacity:
            spans.append((start, i, used))
            start, used = i, 0
        used += cost
    spans.append((start, len(text), used))
    return spans


def segment(text: str, *, encoding: Encoding | None = None, max_parts: int = DEFAULT_MAX_PARTS,
            ref: int = 0, ref_bits: RefBits = 8) -> SegmentedMessage:
    """Cut ``text`` into SMS parts.

    ``encoding`` defaults to :func:`choose_encoding`; forcing GSM-7 on text it
    cannot hold raises :class:`EncodingError`.  ``ref`` is the concatenation
    reference used when more than one part is needed.  Raises
    :class:`TooManyParts` when more than ``max_parts`` (at most 255) are needed.
    """
    if not 1 <= max_parts <= SPEC_MAX_PARTS:
        raise EncodingError(f"max_parts must be 1..{SPEC_MAX_PARTS}, got {max_parts}")
    if len(text) > MAX_SINGLE_GSM7_SEPTETS and len(text) > max_parts * 153:
        # Every character costs at least one unit and no part holds more than
        # 153 of them: refuse huge input before scanning it.
        raise TooManyParts(-(-len(text) // 153), max_parts)
    check_text(text)
    enc = choose_encoding(text) if encoding is None else encoding
    costs = _costs(text, enc)
    total_units = len(text) if costs is None else sum(costs)
    single = MAX_SINGLE_GSM7_SEPTETS if enc is Encoding.GSM7 else MAX_SINGLE_UCS2_UNITS
    if total_units <= single:
        spans = [(0, len(text), total_units)]
        msg_ref: int | None = None
    else:
        capacity = part_capacity(enc, udh_length(ref_bits))
        if costs is None:  # every character costs one unit: plain slicing
            spans = [(i, min(i + capacity, len(text)), min(capacity, len(text) - i))
                     for i in range(0, len(text), capacity)]
        else:
            spans = _cut(text, costs, capacity)
        msg_ref = ref
        if len(spans) > max_parts:
            raise TooManyParts(len(spans), max_parts)
        concat_udh(ref, len(spans), 1, ref_bits)  # validates ref and width early
    encode = gsm7.encode_septets if enc is Encoding.GSM7 else _utf16be
    segments = tuple(Segment(text[a:b], encode(text[a:b]), units) for a, b, units in spans)
    return SegmentedMessage(enc, segments, msg_ref, ref_bits)


def _costs(text: str, enc: Encoding) -> list[int] | None:
    """Units per character, or None when every character costs exactly one."""
    if enc is Encoding.GSM7:
        costs = gsm7.septet_costs(text)
        if 0 in costs:
            bad = text[costs.index(0)]
            raise EncodingError(f"character {bad!r} is not in the GSM 7-bit alphabet")
        return None if len(costs) == sum(costs) else costs
    if len(text.encode("utf-16-be")) == 2 * len(text):
        return None
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _utf16be(text: str) -> bytes:
    return text.encode("utf-16-be")


def count_parts(text: str, *, encoding: Encoding | None = None, ref_bits: RefBits = 8) -> int:
    """How many parts ``text`` needs (for previews); :class:`TooManyParts` past 255."""
    return segment(text, encoding=encoding, max_parts=SPEC_MAX_PARTS, ref_bits=ref_bits).total


class ReferenceAllocator:
    """Hands out concatenation reference numbers, wrapping within the chosen width.

    Sans-I/O and deterministic: seed it (e.g. from storage) so that references
    do not restart at the same value after a daemon restart.
    """

    def __init__(self, seed: int = 0) -> None:
        """Start counting from ``seed``."""
        self._next = seed & 0xFFFF

    def next(self, ref_bits: RefBits = 8) -> int:
        """Return the next reference number for a ``ref_bits``-wide IEI."""
        value = self._next
        self._next = (self._next + 1) & 0xFFFF
        return value & (0xFF if ref_bits == 8 else 0xFFFF)


def fit_text(text: str, max_parts: int = DEFAULT_MAX_PARTS, *, ellipsis: str | None = None) -> str:
    """``text`` shortened, if it must be, to fit in ``max_parts`` SMS parts.

    The last paragraph (after the last blank line: a link, how to answer) is kept
    whole and the text before it is cut, ending in ``ellipsis`` ("..." for text
    GSM-7 can hold, so the cut does not force UCS-2; "…" otherwise); a text with
    no paragraph break is cut at the end.  Text that fits is returned unchanged.
    Raises :class:`TooManyParts` only if the last paragraph alone does not fit.
    """
    def fits(candidate: str) -> bool:
        try:
            segment(candidate, max_parts=max_parts)
        except TooManyParts:
            return False
        return True

    if fits(text):
        return text
    head, sep, tail = text.rpartition("\n\n")
    if not sep:
        head, tail = text, ""
    if ellipsis is None:
        ellipsis = "..." if choose_encoding(text) is Encoding.GSM7 else "…"
    suffix = ellipsis + (sep + tail if sep else "")
    if not fits(suffix):
        raise TooManyParts(max_parts + 1, max_parts)
    lo, hi = 0, len(head)  # the longest prefix of head that still fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(head[:mid] + suffix):
            lo = mid
        else:
            hi = mid - 1
    return head[:lo] + suffix
