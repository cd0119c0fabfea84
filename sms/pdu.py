"""TS 23.040 TPDUs for PDU-mode modems (TS 27.005 ``AT+CMGS``, ``+CMT``, ``+CMGR``).

Theory of operation: :func:`encode_submit` builds SMS-SUBMIT TPDUs, one per
part of a :class:`~sms.encoding.SegmentedMessage`, and returns the hex string
to write after ``AT+CMGS=<n>`` together with ``n``, which TS 27.005 §3.5.1
defines as the TPDU length in octets *excluding* the SMSC address field.
:func:`decode_pdu` reads what a modem reports (SMSC address field first, as in
``+CMT``/``+CMGR``/``+CMGL`` PDU mode) into :class:`SmsDeliver`,
:class:`SmsStatusReport` or :class:`SmsSubmit` (a stored sent message).  All
reads go through a bounds-checked cursor; any malformed input raises
:class:`~sms.errors.PduDecodeError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import gsm7
from ._cursor import Cursor
from .encoding import Encoding, SegmentedMessage, segment
from .errors import EncodingError, PduDecodeError, PduEncodeError
from .inbound import ConcatInfo, InboundPart

# Largest SMS-SUBMIT: first octet, MR, 12-octet DA, PID, DCS, 7-octet VP, UDL, 140 of UD.
MAX_TPDU_OCTETS = 164
MAX_ADDRESS_DIGITS = 20

TOA_INTERNATIONAL = 0x91
TOA_UNKNOWN = 0x81
TOA_ALPHANUMERIC = 0xD0

_SEMI_TO_DIGIT = "0123456789*#abc"
# We only ever send digits, "*" and "#"; a/b/c exist in the spec but not in dial strings.
_DIGIT_TO_SEMI = {ch: i for i, ch in enumerate(_SEMI_TO_DIGIT[:12])}


class Alphabet(enum.Enum):
    """TP-DCS character set."""

    GSM7 = "gsm7"
    EIGHT_BIT = "8bit"
    UCS2 = "ucs2"


class MessageType(enum.IntEnum):
    """TP-MTI as seen by the MS (received direction, except SUBMIT for stored messages)."""

    DELIVER = 0
    SUBMIT = 1
    STATUS_REPORT = 2


@dataclass(frozen=True, slots=True)
class DataCoding:
    """A decoded TP-DCS (TS 23.038 §4)."""

    alphabet: Alphabet
    message_class: int | None = None
    compressed: bool = False


@dataclass(frozen=True, slots=True)
class SubmitPdu:
    """One SMS-SUBMIT ready for a modem: send ``AT+CMGS={tpdu_length}`` then ``hex`` + Ctrl-Z."""

    hex: str
    tpdu_length: int


@dataclass(frozen=True, slots=True)
class SmsDeliver:
    """A received SMS-DELIVER."""

    smsc: str | None
    sender: str
    timestamp: datetime
    dcs: DataCoding
    pid: int
    text: str
    user_data: bytes
    concat: ConcatInfo | None
    udh: tuple[tuple[int, bytes], ...]
    status_report_indicated: bool

    def as_part(self) -> InboundPart:
        """This message as a transport-neutral part for :class:`~sms.inbound.Reassembler`."""
        raw = self.user_data if self.dcs.alphabet is Alphabet.UCS2 else None
        return InboundPart(self.sender, self.text, self.concat, self.timestamp, raw)


@dataclass(frozen=True, slots=True)
class SmsStatusReport:
    """A received SMS-STATUS-REPORT (TS 23.040 §9.2.2.3)."""

    smsc: str | None
    message_ref: int
    recipient: str
    submitted: datetime
    discharged: datetime
    status: int

    @property
    def delivered(self) -> bool:
        """TP-ST 0x00-0x1F: the short message transaction completed."""
        return self.status < 0x20

    @property
    def final(self) -> bool:
        """False only while the SC is still trying (TP-ST 0x20-0x3F)."""
        return not 0x20 <= self.status < 0x40


@dataclass(frozen=True, slots=True)
class SmsSubmit:
    """A decoded SMS-SUBMIT (a stored outgoing message, or our own encoder's output)."""

    smsc: str | None
    message_ref: int
    destination: str
    dcs: DataCoding
    pid: int
    validity: bytes
    text: str
    user_data: bytes
    concat: ConcatInfo | None
    status_report_requested: bool


# ---------------------------------------------------------------- addresses

def _semi_octets(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    out = bytearray()
    for i in range(0, len(digits), 2):
        lo = _DIGIT_TO_SEMI.get(digits[i])
        hi = 0xF if digits[i + 1] == "F" else _DIGIT_TO_SEMI.get(digits[i + 1])
        if lo is None or hi is None:
            raise PduEncodeError(f"address {digits!r} has a character that is not a digit")
        out.append(lo | (hi << 4))
    return bytes(out)


def _read_semi_octets(data: bytes, count: int) -> str:
    out: list[str] = []
    for octet in data:
        for nib in (octet & 0x0F, octet >> 4):
            if len(out) < count and nib != 0xF:
                out.append(_SEMI_TO_DIGIT[nib])
    return "".join(out)


def _split_number(number: str) -> tuple[int, str]:
    if number.startswith("+"):
        return TOA_INTERNATIONAL, number[1:]
    return TOA_UNKNOWN, number


def encode_address(number: str) -> bytes:
    """TP-DA/TP-OA field: digit count, type of address, semi-octets (``+`` means international)."""
    toa, digits = _split_number(number)
    if not digits or len(digits) > MAX_ADDRESS_DIGITS:
        raise PduEncodeError(f"address {number!r} must have 1..{MAX_ADDRESS_DIGITS} digits")
    return bytes((len(digits), toa)) + _semi_octets(digits)


def encode_smsc(number: str | None) -> bytes:
    """RP SMSC address field as prefixed by TS 27.005: octet count (0 = use the modem's)."""
    if not number:
        return b"\x00"
    toa, digits = _split_number(number)
    if not digits or len(digits) > MAX_ADDRESS_DIGITS:
        raise PduEncodeError(f"SMSC {number!r} must have 1..{MAX_ADDRESS_DIGITS} digits")
    body = bytes((toa,)) + _semi_octets(digits)
    return bytes((len(body),)) + body


def _decode_number(toa: int, digits: str) -> str:
    return "+" + digits if (toa & 0x70) == 0x10 and digits else digits


def _read_address(cur: Cursor) -> str:
    """TP-OA/TP-DA/TP-RA: length in semi-octets, TOA, value (possibly alphanumeric)."""
    length = cur.u8("address length")
    if length > MAX_ADDRESS_DIGITS:
        raise PduDecodeError(f"address of {length} semi-octets is longer than allowed")
    toa = cur.u8("type of address")
    raw = cur.take((length + 1) // 2, "address")
    if (toa & 0x70) == 0x50:
        # TS 23.040 §9.1.2.5: alphanumeric, GSM-7 packed; length counts useful semi-octets.
        return gsm7.decode_septets(gsm7.unpack_septets(raw, length * 4 // 7))
    return _decode_number(toa, _read_semi_octets(raw, length))


def _read_smsc(cur: Cursor) -> str | None:
    length = cur.u8("SMSC length")
    if length == 0:
        return None
    if length > 12:
        raise PduDecodeError(f"SMSC address of {length} octets is longer than allowed")
    sub = cur.sub(length, "SMSC address")
    toa = sub.u8("SMSC type of address")
    return _decode_number(toa, _read_semi_octets(sub.rest(), 2 * (length - 1))) or None


# ---------------------------------------------------------------- timestamps

def _bcd(octet: int) -> int:
    lo, hi = octet & 0x0F, octet >> 4
    if lo > 9 or hi > 9:
        raise PduDecodeError(f"timestamp octet {octet:02X} is not BCD")
    return lo * 10 + hi


def _read_scts(cur: Cursor) -> datetime:
    """TS 23.040 §9.2.3.11: swapped BCD YYMMDDhhmmss and a time zone in quarter hours."""
    raw = cur.take(7, "timestamp")
    year, month, day, hour, minute, second = (_bcd(b) for b in raw[:6])
    tz = raw[6]
    quarters = (tz & 0x07) * 10 + (tz >> 4)
    if (tz >> 4) > 9 or quarters > 4 * 18:
        raise PduDecodeError(f"time zone octet {tz:02X} is invalid")
    offset = timedelta(minutes=15 * quarters) * (-1 if tz & 0x08 else 1)
    try:
        # Two-digit years: 80-99 are the 1900s (old captures), the rest this century.
        century = 1900 if year >= 80 else 2000
        return datetime(century + year, month, day, hour, minute, second,
                        tzinfo=timezone(offset))
    except ValueError as exc:
        raise PduDecodeError(f"invalid timestamp: {exc}") from None


def encode_scts(when: datetime) -> bytes:
    """Encode an aware datetime as a 7-octet TP-SCTS (years 2000-2079, see the decoder's pivot)."""
    if when.tzinfo is None or not 2000 <= when.year <= 2079:
        raise PduEncodeError("timestamp must be timezone-aware and in 2000-2079")
    offset = when.utcoffset() or timedelta(0)
    quarters, rest = divmod(abs(int(offset.total_seconds())), 900)
    if rest:
        raise PduEncodeError("time zone offset must be whole quarter hours")

    fields = (when.year - 2000, when.month, when.day, when.hour, when.minute, when.second)
    tz = _swap(quarters) | (0x08 if offset < timedelta(0) else 0)
    return bytes(_swap(v) for v in fields) + bytes((tz,))


def _swap(value: int) -> int:
    """Two decimal digits as a swapped BCD octet (tens in the low nibble)."""
    return (value // 10) | ((value % 10) << 4)


# ---------------------------------------------------------------- DCS and UDH

def decode_dcs(dcs: int) -> DataCoding:
    """Interpret TP-DCS per TS 23.038 §4; reserved groups read as GSM-7 as the spec asks."""
    group = dcs >> 4
    if group <= 0x7:  # general data coding (0xxx), bit 6 = automatic deletion
        alphabet = (Alphabet.GSM7, Alphabet.EIGHT_BIT, Alphabet.UCS2, Alphabet.GSM7)[(dcs >> 2) & 3]
        klass = dcs & 3 if dcs & 0x10 else None
        return DataCoding(alphabet, klass, bool(dcs & 0x20))
    if group in (0xC, 0xD):
        return DataCoding(Alphabet.GSM7)
    if group == 0xE:
        return DataCoding(Alphabet.UCS2)
    if group == 0xF:
        return DataCoding(Alphabet.EIGHT_BIT if dcs & 0x04 else Alphabet.GSM7, dcs & 3)
    return DataCoding(Alphabet.GSM7)


def parse_udh(udh: bytes) -> tuple[tuple[tuple[int, bytes], ...], ConcatInfo | None]:
    """Split a UDH body (without UDHL) into (IEI, data) pairs and find concatenation."""
    cur = Cursor(udh, PduDecodeError)
    elements: list[tuple[int, bytes]] = []
    concat: ConcatInfo | None = None
    while cur.remaining:
        iei = cur.u8("IEI")
        data = cur.take(cur.u8("IE length"), "information element")
        elements.append((iei, data))
        if iei == 0x00 and len(data) == 3:
            concat = ConcatInfo(data[0], data[1], data[2], 8)
        elif iei == 0x08 and len(data) == 4:
            concat = ConcatInfo((data[0] << 8) | data[1], data[2], data[3], 16)
    if concat is not None and not 1 <= concat.seq <= concat.total:
        concat = None  # TS 23.040 §9.2.3.24.1: ignore an IE with impossible numbers
    return tuple(elements), concat


def _read_user_data(cur: Cursor, dcs: DataCoding, udhi: bool
                    ) -> tuple[str, bytes, ConcatInfo | None, tuple[tuple[int, bytes], ...]]:
    """TP-UDL and TP-UD: returns (text, payload after the UDH, concat, UDH elements)."""
    udl = cur.u8("user data length")
    septets = dcs.alphabet is Alphabet.GSM7 and not dcs.compressed
    octets = gsm7.packed_length(udl) if septets else udl
    if octets > 140:
        raise PduDecodeError(f"user data length {udl} exceeds 140 octets")
    ud = cur.take(octets, "user data")
    udh_octets = 0
    elements: tuple[tuple[int, bytes], ...] = ()
    concat = None
    if udhi:
        udc = Cursor(ud, PduDecodeError)
        udhl = udc.u8("UDH length")
        elements, concat = parse_udh(udc.take(udhl, "user data header"))
        udh_octets = udhl + 1
    if septets:
        fill = gsm7.fill_bits_for_udh(udh_octets) if udh_octets else 0
        header_septets = (udh_octets * 8 + fill) // 7
        count = udl - header_septets
        if count < 0:
            raise PduDecodeError("user data header is longer than the user data")
        try:
            payload = gsm7.unpack_septets(ud[udh_octets:], count, fill)
        except EncodingError as exc:
            raise PduDecodeError(str(exc)) from None
        return gsm7.decode_septets(payload), payload, concat, elements
    payload = ud[udh_octets:]
    if dcs.alphabet is Alphabet.UCS2 and not dcs.compressed:
        return payload.decode("utf-16-be", errors="replace"), payload, concat, elements
    return "", payload, concat, elements


# ---------------------------------------------------------------- decoding

def decode_pdu(pdu: str | bytes, *, with_smsc: bool = True
               ) -> SmsDeliver | SmsStatusReport | SmsSubmit:
    """Decode a PDU as a modem reports it (hex or bytes; SMSC field first unless told not).

    Raises :class:`~sms.errors.PduDecodeError` for anything malformed.
    """
    if isinstance(pdu, str):
        try:
            data = bytes.fromhex(pdu.strip())
        except ValueError:
            raise PduDecodeError("PDU is not a hex string") from None
    else:
        data = bytes(pdu)
    if len(data) > MAX_TPDU_OCTETS + 13:  # plus a full SMSC address field
        raise PduDecodeError(f"PDU of {len(data)} octets is longer than any SMS")
    cur = Cursor(data, PduDecodeError)
    smsc = _read_smsc(cur) if with_smsc else None
    first = cur.u8("first octet")
    mti = first & 0x03
    if mti == MessageType.DELIVER:
        return _decode_deliver(cur, smsc, first)
    if mti == MessageType.STATUS_REPORT:
        return _decode_status_report(cur, smsc)
    if mti == MessageType.SUBMIT:
        return _decode_submit(cur, smsc, first)
    raise PduDecodeError("reserved message type indicator 3")


def _decode_deliver(cur: Cursor, smsc: str | None, first: int) -> SmsDeliver:
    sender = _read_address(cur)
    pid = cur.u8("TP-PID")
    dcs = decode_dcs(cur.u8("TP-DCS"))
    stamp = _read_scts(cur)
    text, payload, concat, elements = _read_user_data(cur, dcs, bool(first & 0x40))
    return SmsDeliver(smsc, sender, stamp, dcs, pid, text, payload, concat, elements,
                      bool(first & 0x20))


def _decode_status_report(cur: Cursor, smsc: str | None) -> SmsStatusReport:
    ref = cur.u8("TP-MR")
    recipient = _read_address(cur)
    submitted = _read_scts(cur)
    discharged = _read_scts(cur)
    status = cur.u8("TP-ST")
    # TP-PI and what follows are optional and not needed to track delivery.
    return SmsStatusReport(smsc, ref, recipient, submitted, discharged, status)


_VP_LENGTH = {0: 0, 2: 1, 1: 7, 3: 7}


def _decode_submit(cur: Cursor, smsc: str | None, first: int) -> SmsSubmit:
    ref = cur.u8("TP-MR")
    dest = _read_address(cur)
    pid = cur.u8("TP-PID")
    dcs = decode_dcs(cur.u8("TP-DCS"))
    validity = cur.take(_VP_LENGTH[(first >> 3) & 3], "TP-VP")
    text, payload, concat, _ = _read_user_data(cur, dcs, bool(first & 0x40))
    return SmsSubmit(smsc, ref, dest, dcs, pid, validity, text, payload, concat,
                     bool(first & 0x20))


# ---------------------------------------------------------------- encoding

def relative_validity(period: timedelta) -> int:
    """TP-VP relative format (TS 23.040 §9.2.3.12.1): the shortest code not below ``period``."""
    minutes = max(5, -(-int(period.total_seconds()) // 60))
    if minutes <= 720:
        return -(-minutes // 5) - 1
    if minutes <= 1440:
        return 143 + -(-(minutes - 720) // 30)
    days = -(-minutes // 1440)
    if days <= 30:
        return 166 + days
    return min(255, 192 + -(-days // 7))


def _user_data(message: SegmentedMessage, index: int) -> tuple[int, bytes]:
    seg = message.segments[index]
    udh = message.udh(index)
    if message.encoding is Encoding.GSM7:
        fill = message.fill_bits(index)
        udl = (len(udh) * 8 + fill) // 7 + seg.units
        return udl, udh + gsm7.pack_septets(seg.payload, fill)
    body = udh + seg.payload
    return len(body), body


def encode_submit(destination: str, message: SegmentedMessage | str, *, smsc: str | None = None,
                  status_report: bool = False, validity: timedelta | None = None,
                  message_ref: int = 0, flash: bool = False) -> list[SubmitPdu]:
    """SMS-SUBMIT TPDUs for every part of ``message`` (a text is segmented with defaults).

    ``destination`` is ``+`` and digits for an international number.  ``flash``
    sets message class 0 (shown at once, not stored).  ``message_ref`` 0 lets
    the modem choose TP-MR.
    """
    if isinstance(message, str):
        message = segment(message)
    if not 0 <= message_ref <= 255:
        raise PduEncodeError(f"message reference {message_ref} out of range")
    sca = encode_smsc(smsc)
    dest = encode_address(destination)
    dcs = message.encoding.dcs | (0x10 if flash else 0)
    vp = b"" if validity is None else bytes((relative_validity(validity),))
    out: list[SubmitPdu] = []
    for i in range(message.total):
        first = 0x01 | (0x10 if vp else 0) | (0x20 if status_report else 0)
        if message.ref is not None:
            first |= 0x40
        udl, ud = _user_data(message, i)
        tpdu = bytes((first, message_ref)) + dest + bytes((0x00, dcs)) + vp + bytes((udl,)) + ud
        out.append(SubmitPdu((sca + tpdu).hex().upper(), len(tpdu)))
    return out


def encode_deliver(sender: str, message: SegmentedMessage | str, timestamp: datetime, *,
                   smsc: str | None = None, index: int = 0) -> str:
    """One SMS-DELIVER as a modem would report it (for emulators and tests), as hex."""
    if isinstance(message, str):
        message = segment(message)
    first = 0x04 | (0x40 if message.ref is not None else 0)
    udl, ud = _user_data(message, index)
    tpdu = (bytes((first,)) + encode_address(sender) + bytes((0x00, message.encoding.dcs))
            + encode_scts(timestamp) + bytes((udl,)) + ud)
    return (encode_smsc(smsc) + tpdu).hex().upper()
