"""3GPP TS 23.038 GSM 7-bit default alphabet, its extension table and septet packing.

Theory of operation: text is first mapped to *septets* (one ``int`` 0..127 per
septet, held in ``bytes``), where a character from the extension table costs
two septets (``ESC`` 0x1B then its code).  Septets are then *packed* LSB-first
into octets (TS 23.038 §6.1.2.1.1).  When a User Data Header precedes the text,
the text must start on a septet boundary counted from the start of the user
data, so ``fill_bits`` zero bits are put in front (TS 23.040 §9.2.3.24).
"""

from __future__ import annotations

from .errors import EncodingError

ESCAPE = 0x1B

# TS 23.038 §6.2.1, the default alphabet in code order; index == septet value.
# 0x1B is the escape to the extension table, held here as a placeholder.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

# TS 23.038 §6.2.1.1, extension table entries reached through ESC.
_EXTENSION = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}

_ENCODE_BASIC: dict[str, int] = {ch: i for i, ch in enumerate(_BASIC) if i != ESCAPE}
_ENCODE_EXT: dict[str, int] = {ch: code for code, ch in _EXTENSION.items()}
# Septet cost of every character we can encode, for fast segmentation.
_COST: dict[str, int] = {**{ch: 1 for ch in _ENCODE_BASIC}, **{ch: 2 for ch in _ENCODE_EXT}}
# Per character, the septet bytes it encodes to.
_ENCODE_BYTES: dict[str, bytes] = {
    **{ch: bytes((v,)) for ch, v in _ENCODE_BASIC.items()},
    **{ch: bytes((ESCAPE, v)) for ch, v in _ENCODE_EXT.items()},
}


def is_gsm7(text: str) -> bool:
    """Return True if every character of ``text`` is in the default alphabet or extension."""
    cost = _COST
    return all(ch in cost for ch in text)


def char_septets(ch: str) -> int:
    """Septets one character costs (1, or 2 for the extension table); 0 if not encodable."""
    return _COST.get(ch, 0)


def septet_costs(text: str) -> list[int]:
    """Septets each character costs (1 or 2), 0 for characters outside the alphabet."""
    get = _COST.get
    return [get(ch, 0) for ch in text]


def septet_length(text: str) -> int:
    """Number of septets ``text`` needs; raises :class:`EncodingError` if not encodable."""
    cost = _COST
    try:
        return sum(cost[ch] for ch in text)
    except KeyError as exc:
        raise EncodingError(f"character {exc.args[0]!r} is not in the GSM 7-bit alphabet") from None


def encode_septets(text: str) -> bytes:
    """Map ``text`` to unpacked septets, one per octet, extension chars as ESC pairs."""
    table = _ENCODE_BYTES
    try:
        return b"".join([table[ch] for ch in text])
    except KeyError as exc:
        raise EncodingError(f"character {exc.args[0]!r} is not in the GSM 7-bit alphabet") from None


def decode_septets(septets: bytes) -> str:
    """Map unpacked septets back to text.

    Per TS 23.038 §6.2.1.1 an escape followed by a code with no extension entry
    shows the default-alphabet character, ``ESC ESC`` (reserved for a further
    table) shows a space, and a dangling final escape is dropped.
    """
    out: list[str] = []
    basic = _BASIC
    i, n = 0, len(septets)
    while i < n:
        s = septets[i] & 0x7F
        if s != ESCAPE:
            out.append(basic[s])
            i += 1
            continue
        if i + 1 >= n:
            break
        nxt = septets[i + 1] & 0x7F
        if nxt == ESCAPE:
            out.append(" ")
        else:
            out.append(_EXTENSION.get(nxt, basic[nxt]))
        i += 2
    return "".join(out)


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets LSB-first into octets, after ``fill_bits`` (0..6) leading zero bits."""
    if not 0 <= fill_bits <= 6:
        raise EncodingError(f"fill_bits must be 0..6, got {fill_bits}")
    out = bytearray()
    acc = 0
    bits = fill_bits
    for s in septets:
        acc |= (s & 0x7F) << bits
        bits += 7
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits > 0:
        out.append(acc & 0xFF)
    return bytes(out)


def packed_length(septet_count: int, fill_bits: int = 0) -> int:
    """Octets needed to hold ``septet_count`` packed septets after ``fill_bits``."""
    return (septet_count * 7 + fill_bits + 7) // 8


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """Unpack ``count`` septets from ``data``, skipping ``fill_bits`` leading bits.

    Raises :class:`EncodingError` if ``data`` is too short to hold them.
    """
    if count < 0 or not 0 <= fill_bits <= 6:
        raise EncodingError(f"bad septet count {count} or fill bits {fill_bits}")
    if packed_length(count, fill_bits) > len(data):
        raise EncodingError(f"{len(data)} octets cannot hold {count} septets")
    out = bytearray(count)
    acc = 0
    bits = 0
    pos = 0
    skip = fill_bits
    for i in range(count):
        while bits < 7 + skip:
            acc |= data[pos] << bits
            pos += 1
            bits += 8
        acc >>= skip
        bits -= skip
        skip = 0
        out[i] = acc & 0x7F
        acc >>= 7
        bits -= 7
    return bytes(out)


def fill_bits_for_udh(udh_octets: int) -> int:
    """Fill bits that align text after a UDH of ``udh_octets`` (UDHL included) to a septet."""
    return (7 - (udh_octets * 8) % 7) % 7
