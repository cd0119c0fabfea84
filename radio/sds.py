"""TETRA Simple Text Messaging user data (EN 300 392-2 29.5.2), Latin-1 and UCS-2.

The user data is ``protocol identifier (0x02) | text coding scheme | text``.
The coding scheme's top bit says a time stamp follows (we never send one and
skip it on receipt); 0x01 is ISO 8859-1 and 0x1A is ISO/IEC 10646 UCS-2
(big-endian 16-bit), which carries Chinese.  On the PEI the user data is hex.
"""

from __future__ import annotations

__all__ = ["CODING_LATIN1", "CODING_UCS2", "MAX_SDS_OCTETS", "PID_SIMPLE_TEXT", "SdsError",
           "decode_text", "encode_text"]

PID_SIMPLE_TEXT = 0x02
CODING_LATIN1 = 0x01
CODING_UCS2 = 0x1A
_TIMESTAMP_FLAG = 0x80
_TIMESTAMP_OCTETS = 3
#: SDS type 4 carries at most 2047 bits of user data.
MAX_SDS_OCTETS = 2047 // 8


class SdsError(ValueError):
    """Text that cannot go out as one SDS (too long, control characters)."""


def encode_text(text: str) -> tuple[int, str]:
    """Simple Text Messaging user data for ``text``: (length in bits, upper-case hex).

    Latin-1 when every character fits (half the air time), UCS-2 otherwise.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise SdsError("control characters are not sent in an SDS")
    try:
        body = bytes([PID_SIMPLE_TEXT, CODING_LATIN1]) + text.encode("latin-1")
    except UnicodeEncodeError:
        body = bytes([PID_SIMPLE_TEXT, CODING_UCS2]) + text.encode("utf-16-be")
    if len(body) > MAX_SDS_OCTETS:
        raise SdsError(f"text needs {len(body)} octets, an SDS carries {MAX_SDS_OCTETS}")
    return len(body) * 8, body.hex().upper()


def decode_text(user_data: str, bits: int | None = None) -> str | None:
    """The text of Simple Text Messaging user data (hex), or ``None`` if it is not that."""
    if len(user_data) > 2 * MAX_SDS_OCTETS + 2:
        return None
    try:
        data = bytes.fromhex(user_data)
    except ValueError:
        return None
    if bits is not None and 0 < bits <= len(data) * 8:
        data = data[:(bits + 7) // 8]
    if len(data) < 2 or data[0] != PID_SIMPLE_TEXT:
        return None
    coding = data[1] & ~_TIMESTAMP_FLAG
    text = data[2 + (_TIMESTAMP_OCTETS if data[1] & _TIMESTAMP_FLAG else 0):]
    if coding == CODING_LATIN1:
        return text.decode("latin-1")
    if coding == CODING_UCS2 and len(text) % 2 == 0:
        return text.decode("utf-16-be", errors="replace")
    return None
