"""Between texts and SMPP short messages: building submit_sm, reading deliver_sm.

Outbound, :func:`build_submits` turns a text into submit_sm PDUs using one of
three ways to carry a long message (:class:`ConcatMode`): a UDH in the short
message (esm_class 0x40), the ``sar_*`` TLVs, or one ``message_payload`` TLV
that the SMSC segments itself.  Inbound, :func:`classify` turns a deliver_sm
or data_sm into a :class:`DeliveryReceipt` or a :class:`MessageReceived`.
"""

from __future__ import annotations

import contextlib
import enum
from datetime import timedelta
from typing import Any

from .._cursor import Cursor
from ..encoding import DEFAULT_MAX_PARTS, Encoding, RefBits, SegmentedMessage, segment
from ..errors import PduDecodeError, SmppDecodeError, SmppEncodeError
from ..gsm7 import decode_septets
from ..inbound import ConcatInfo, InboundPart
from ..pdu import Alphabet, decode_dcs, parse_udh
from .codec import DataSm, DeliverSm, SubmitSm, Tag, Tlv
from .events import DeliveryReceipt, MessageReceived
from .receipt import MessageState, parse_receipt_text

ESM_UDHI = 0x40
ESM_TYPE_MASK = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_INTERMEDIATE = 0x20

TON_UNKNOWN, TON_INTERNATIONAL, TON_ALPHANUMERIC = 0, 1, 5
NPI_UNKNOWN, NPI_ISDN = 0, 1

# SMPP 3.4 §5.2.19 data_coding values that name a character set directly.
_CHARSETS = {1: "ascii", 3: "latin-1", 6: "iso8859-5", 7: "iso8859-8"}


class ConcatMode(enum.Enum):
    """How a multi-part message travels over SMPP."""

    UDH = "udh"
    SAR = "sar"
    PAYLOAD = "payload"


def address(addr: str) -> tuple[int, int, str]:
    """(ton, npi, address) for an SMPP address: ``+digits``, digits or alphanumeric."""
    if addr.startswith("+") and addr[1:].isdigit():
        return TON_INTERNATIONAL, NPI_ISDN, addr[1:]
    if addr.isdigit() or not addr:
        return TON_UNKNOWN, NPI_ISDN if addr else NPI_UNKNOWN, addr
    if len(addr) > 11:
        raise SmppEncodeError(f"alphanumeric sender {addr!r} longer than 11 characters")
    return TON_ALPHANUMERIC, NPI_UNKNOWN, addr


def relative_time(period: timedelta) -> str:
    """SMPP 3.4 §7.1.1 relative time ``YYMMDDhhmmss000R`` (for validity_period)."""
    seconds = int(period.total_seconds())
    if seconds <= 0:
        raise SmppEncodeError("a relative validity period must be positive")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    years, days = divmod(days, 365)
    months, days = divmod(days, 30)
    if years > 99:
        raise SmppEncodeError("relative time longer than 99 years")
    return f"{years:02d}{months:02d}{days:02d}{hours:02d}{minutes:02d}{secs:02d}000R"


def build_submits(destination: str, message: SegmentedMessage | str, *, source: str = "",
                  concat: ConcatMode = ConcatMode.UDH, registered_delivery: bool = True,
                  validity: timedelta | None = None, service_type: str = "", priority: int = 0,
                  flash: bool = False, ref: int = 0, ref_bits: RefBits = 8,
                  max_parts: int = DEFAULT_MAX_PARTS,
                  replace_if_present: bool = False) -> list[SubmitSm]:
    """submit_sm PDUs (sequence numbers unset) that carry ``message`` to ``destination``.

    GSM-7 text is sent unpacked (one septet per octet) with data_coding 0, as
    SMSCs expect; UCS-2 as UTF-16BE with data_coding 8.  ``flash`` sets message
    class 0.  ``validity`` becomes a relative validity_period.  A text is
    segmented here with ``ref``/``ref_bits``/``max_parts``.  ``replace_if_present``
    asks the SMSC to replace a message it still holds for the same source,
    destination and ``service_type`` (SMPP 3.4 §5.2.18) instead of adding one.
    """
    if isinstance(message, str):
        if concat is ConcatMode.PAYLOAD:
            message = segment(message, max_parts=255, ref=ref, ref_bits=ref_bits)
        else:
            message = segment(message, max_parts=max_parts, ref=ref, ref_bits=ref_bits)
    src_ton, src_npi, src = address(source)
    dst_ton, dst_npi, dst = address(destination)
    coding = message.encoding.dcs | (0x10 if flash else 0)
    common: dict[str, Any] = {
        "service_type": service_type, "source_addr_ton": src_ton, "source_addr_npi": src_npi,
        "source_addr": src, "dest_addr_ton": dst_ton, "dest_addr_npi": dst_npi,
        "destination_addr": dst, "priority_flag": priority,
        "validity_period": "" if validity is None else relative_time(validity),
        "data_coding": coding,
        "registered_delivery": 1 if registered_delivery else 0,
        "replace_if_present_flag": 1 if replace_if_present else 0,
    }
    if concat is ConcatMode.PAYLOAD:
        payload = b"".join(s.payload for s in message.segments)
        return [SubmitSm(tlvs=(Tlv(Tag.MESSAGE_PAYLOAD, payload),), **common)]
    out: list[SubmitSm] = []
    for i, seg in enumerate(message.segments):
        if message.ref is None:
            out.append(SubmitSm(short_message=seg.payload, **common))
        elif concat is ConcatMode.UDH:
            out.append(SubmitSm(esm_class=ESM_UDHI, short_message=message.udh(i) + seg.payload,
                                **common))
        else:
            sar = (Tlv.u16(Tag.SAR_MSG_REF_NUM, message.ref),
                   Tlv.u8(Tag.SAR_TOTAL_SEGMENTS, message.total),
                   Tlv.u8(Tag.SAR_SEGMENT_SEQNUM, i + 1))
            out.append(SubmitSm(short_message=seg.payload, tlvs=sar, **common))
    return out


def decode_text(data_coding: int, payload: bytes, default_alphabet: str = "gsm7"
                ) -> tuple[str, bytes | None]:
    """(text, raw UTF-16BE or None) for a short message body with ``data_coding``.

    data_coding 0 is "SMSC default alphabet": ``default_alphabet`` says what
    this SMSC means by it ("gsm7" unpacked septets, or a Python codec name).
    Values 0x01-0x0F are SMPP's own character sets (SMPP 3.4 §5.2.19); values
    from 0x10 up follow the TS 23.038 groups.  Binary codings give an empty
    text; the caller still has the bytes.
    """
    if data_coding == 0:
        if default_alphabet == "gsm7":
            return decode_septets(payload), None
        return payload.decode(default_alphabet, errors="replace"), None
    charset = _CHARSETS.get(data_coding)
    if charset is not None:
        return payload.decode(charset, errors="replace"), None
    if data_coding == 0x08:
        return payload.decode("utf-16-be", errors="replace"), payload
    if data_coding >= 0x10:
        dcs = decode_dcs(data_coding)
        if dcs.alphabet is Alphabet.UCS2 and not dcs.compressed:
            return payload.decode("utf-16-be", errors="replace"), payload
        if dcs.alphabet is Alphabet.GSM7 and not dcs.compressed:
            return decode_septets(payload), None
    return "", None


def _split_udh(esm_class: int, body: bytes) -> tuple[bytes, ConcatInfo | None]:
    if not esm_class & ESM_UDHI or not body:
        return body, None
    cur = Cursor(body, SmppDecodeError)
    udh = cur.take(cur.u8("UDH length"), "user data header")
    try:
        _, concat = parse_udh(udh)
    except PduDecodeError as exc:
        raise SmppDecodeError(f"bad UDH: {exc}") from None
    return cur.rest(), concat


def _sar(pdu: DeliverSm | DataSm) -> ConcatInfo | None:
    ref = pdu.tlv_int(Tag.SAR_MSG_REF_NUM)
    total = pdu.tlv_int(Tag.SAR_TOTAL_SEGMENTS)
    seq = pdu.tlv_int(Tag.SAR_SEGMENT_SEQNUM)
    if ref is None or total is None or seq is None or not 1 <= seq <= total:
        return None
    return ConcatInfo(ref, total, seq, 16)


def _number(ton: int, addr: str) -> str:
    return "+" + addr if ton == TON_INTERNATIONAL and addr.isdigit() else addr


def classify(pdu: DeliverSm | DataSm, default_alphabet: str = "gsm7"
             ) -> DeliveryReceipt | MessageReceived:
    """Read a deliver_sm / data_sm as a delivery receipt or a mobile-originated message.

    Raises :class:`~sms.errors.SmppDecodeError` for a receipt without a message id
    or a malformed UDH.
    """
    body = pdu.tlv(Tag.MESSAGE_PAYLOAD)
    if body is None:
        body = pdu.short_message if isinstance(pdu, DeliverSm) else b""
    kind = pdu.esm_class & ESM_TYPE_MASK
    if kind in (ESM_DELIVERY_RECEIPT, ESM_INTERMEDIATE):
        return _receipt(pdu, body)
    payload, concat = _split_udh(pdu.esm_class, body)
    text, raw = decode_text(pdu.data_coding, payload, default_alphabet)
    part = InboundPart(_number(pdu.source_addr_ton, pdu.source_addr), text,
                       concat or _sar(pdu), None, raw)
    return MessageReceived(pdu.sequence_number, part,
                           _number(pdu.dest_addr_ton, pdu.destination_addr))


def _receipt(pdu: DeliverSm | DataSm, body: bytes) -> DeliveryReceipt:
    text = body.decode("latin-1")
    tlv_id = pdu.tlv_str(Tag.RECEIPTED_MESSAGE_ID)
    tlv_state = pdu.tlv_int(Tag.MESSAGE_STATE)
    parsed = None
    try:
        parsed = parse_receipt_text(text)
    except SmppDecodeError:
        if not tlv_id:
            raise
    state: MessageState | None = parsed.state if parsed else None
    if tlv_state is not None:
        with contextlib.suppress(ValueError):  # a vendor state: keep what the text said
            state = MessageState(tlv_state)
    return DeliveryReceipt(
        seq=pdu.sequence_number,
        message_id=tlv_id or (parsed.message_id if parsed else ""),
        state=state,
        error=parsed.error if parsed else None,
        network_error=pdu.tlv(Tag.NETWORK_ERROR_CODE),
        # A receipt travels back: its source is the handset the message went to.
        recipient=_number(pdu.source_addr_ton, pdu.source_addr),
        done_date=parsed.done_date if parsed else None,
        text=parsed.text if parsed else "",
    )


__all__ = ["ConcatMode", "Encoding", "address", "build_submits", "classify", "decode_text",
           "relative_time"]
