"""SMPP 3.4 PDU codec: frozen dataclasses per PDU type, encode and decode.

Theory of operation: every PDU is a 16-octet header (command_length,
command_id, command_status, sequence_number; SMPP 3.4 §3.2) and a body.  Each
PDU class lists its mandatory body fields in ``_FIELDS`` as (name, kind)
pairs; one generic encoder and one generic decoder walk that table, so the
wire layout of each PDU is stated once.  Kinds are ``U8``, a C-octet string
with its maximum size *including* the NUL (SMPP 3.4 §5.2), or ``SM`` for the
sm_length/short_message pair.  Anything after the mandatory fields is TLVs.
Decoding goes through a bounds-checked cursor; malformed input raises
:class:`~sms.errors.SmppDecodeError` carrying the ``command_status`` to answer
with and, once the header is read, the offending sequence number.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from .._cursor import Cursor
from ..errors import (
    CommandLengthError,
    SmppDecodeError,
    SmppEncodeError,
    UnknownCommandError,
)

HEADER_SIZE = 16
DEFAULT_MAX_COMMAND_LENGTH = 64 * 1024
MAX_SHORT_MESSAGE = 254
INTERFACE_VERSION = 0x34


class CommandId(enum.IntEnum):
    """SMPP 3.4 §5.1.2 command ids."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


class CommandStatus(enum.IntEnum):
    """SMPP 3.4 §5.1.3 command_status values."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RCANCELFAIL = 0x11
    ESME_RREPLACEFAIL = 0x13
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVNUMDESTS = 0x33
    ESME_RINVDLNAME = 0x34
    ESME_RINVDESTFLAG = 0x40
    ESME_RINVSUBREP = 0x42
    ESME_RINVESMCLASS = 0x43
    ESME_RCNTSUBDL = 0x44
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RINVREPFLAG = 0x54
    ESME_RINVNUMMSGS = 0x55
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RINVDFTMSGID = 0x63
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_RQUERYFAIL = 0x67
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RMISSINGOPTPARAM = 0xC3
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RDELIVERYFAILURE = 0xFE
    ESME_RUNKNOWNERR = 0xFF


# Statuses after which the same submit_sm may succeed later: retry, don't fail the recipient.
TEMPORARY_STATUSES = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})


def status_name(status: int) -> str:
    """Symbolic name of a command_status, or its hex value for vendor codes."""
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


class Tag(enum.IntEnum):
    """SMPP 3.4 §5.3.2 TLV tags we read or write."""

    DEST_ADDR_SUBUNIT = 0x0005
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    USER_MESSAGE_REFERENCE = 0x0204
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427


@dataclass(frozen=True, slots=True)
class Tlv:
    """One optional parameter: tag and raw value."""

    tag: int
    value: bytes

    @classmethod
    def u8(cls, tag: int, value: int) -> Tlv:
        """A one-octet integer TLV."""
        return cls(tag, bytes((value & 0xFF,)))

    @classmethod
    def u16(cls, tag: int, value: int) -> Tlv:
        """A two-octet integer TLV."""
        return cls(tag, (value & 0xFFFF).to_bytes(2, "big"))


class BindMode(enum.Enum):
    """Which bind operation; the value is the request command id."""

    RECEIVER = CommandId.BIND_RECEIVER
    TRANSMITTER = CommandId.BIND_TRANSMITTER
    TRANSCEIVER = CommandId.BIND_TRANSCEIVER


# Field kinds for the layout tables.
U8 = "u8"
SM = "sm"


def cstr(max_size: int) -> int:
    """A C-octet string kind with ``max_size`` octets including the NUL."""
    return max_size


FieldKind = str | int


@dataclass(frozen=True, kw_only=True)
class Pdu:
    """Base of every PDU: header values and TLVs.

    ``command_id`` is a class constant except for binds, where it follows the mode.
    """

    sequence_number: int = 0
    command_status: int = 0
    tlvs: tuple[Tlv, ...] = ()

    COMMAND_ID: ClassVar[CommandId]
    _FIELDS: ClassVar[tuple[tuple[str, FieldKind], ...]] = ()
    # Responses may omit the body when command_status is non-zero (SMPP 3.4 §3.3).
    _BODY_OPTIONAL: ClassVar[bool] = False
    # ... but only bind_resp (§4.1.2) and submit_sm_resp (§4.4.2) are *sent* without one:
    # deliver_sm_resp keeps its NULL message_id, and MCs (smpp.twisted3) reject it bodyless.
    _OMIT_BODY_ON_ERROR: ClassVar[bool] = False
    _TLVS_ALLOWED: ClassVar[bool] = False

    @property
    def command_id(self) -> int:
        """This PDU's command_id."""
        return int(self.COMMAND_ID)

    def tlv(self, tag: int) -> bytes | None:
        """Value of the first TLV with ``tag``, or None."""
        for t in self.tlvs:
            if t.tag == tag:
                return t.value
        return None

    def tlv_int(self, tag: int) -> int | None:
        """A TLV read as a big-endian unsigned integer, or None if absent or empty."""
        value = self.tlv(tag)
        return int.from_bytes(value, "big") if value else None

    def tlv_str(self, tag: int) -> str | None:
        """A C-octet string TLV without its NUL, or None if absent."""
        value = self.tlv(tag)
        return None if value is None else value.split(b"\x00", 1)[0].decode("latin-1")


@dataclass(frozen=True, kw_only=True)
class GenericNack(Pdu):
    """generic_nack (§4.3.1): header only."""

    COMMAND_ID = CommandId.GENERIC_NACK


@dataclass(frozen=True, kw_only=True)
class Bind(Pdu):
    """bind_transmitter / bind_receiver / bind_transceiver (§4.1.1-§4.1.5)."""

    mode: BindMode = BindMode.TRANSCEIVER
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    COMMAND_ID = CommandId.BIND_TRANSCEIVER
    _FIELDS = (("system_id", cstr(16)), ("password", cstr(9)), ("system_type", cstr(13)),
               ("interface_version", U8), ("addr_ton", U8), ("addr_npi", U8),
               ("address_range", cstr(41)))

    @property
    def command_id(self) -> int:
        """The bind command matching ``mode``."""
        return int(self.mode.value)


@dataclass(frozen=True, kw_only=True)
class BindResp(Pdu):
    """bind_*_resp: system_id and an optional sc_interface_version TLV."""

    mode: BindMode = BindMode.TRANSCEIVER
    system_id: str = ""

    COMMAND_ID = CommandId.BIND_TRANSCEIVER_RESP
    _FIELDS = (("system_id", cstr(16)),)
    _BODY_OPTIONAL = True
    _OMIT_BODY_ON_ERROR = True
    _TLVS_ALLOWED = True

    @property
    def command_id(self) -> int:
        """The bind response matching ``mode``."""
        return int(self.mode.value) | 0x80000000


@dataclass(frozen=True, kw_only=True)
class Unbind(Pdu):
    """unbind (§4.2.1)."""

    COMMAND_ID = CommandId.UNBIND


@dataclass(frozen=True, kw_only=True)
class UnbindResp(Pdu):
    """unbind_resp (§4.2.2)."""

    COMMAND_ID = CommandId.UNBIND_RESP


@dataclass(frozen=True, kw_only=True)
class EnquireLink(Pdu):
    """enquire_link (§4.11.1)."""

    COMMAND_ID = CommandId.ENQUIRE_LINK


@dataclass(frozen=True, kw_only=True)
class EnquireLinkResp(Pdu):
    """enquire_link_resp (§4.11.2)."""

    COMMAND_ID = CommandId.ENQUIRE_LINK_RESP


_SM_FIELDS: tuple[tuple[str, FieldKind], ...] = (
    ("service_type", cstr(6)), ("source_addr_ton", U8), ("source_addr_npi", U8),
    ("source_addr", cstr(21)), ("dest_addr_ton", U8), ("dest_addr_npi", U8),
    ("destination_addr", cstr(21)), ("esm_class", U8), ("protocol_id", U8),
    ("priority_flag", U8), ("schedule_delivery_time", cstr(17)),
    ("validity_period", cstr(17)), ("registered_delivery", U8),
    ("replace_if_present_flag", U8), ("data_coding", U8), ("sm_default_msg_id", U8),
    ("short_message", SM),
)


@dataclass(frozen=True, kw_only=True)
class _ShortMessage(Pdu):
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""

    _FIELDS = _SM_FIELDS
    _TLVS_ALLOWED = True


@dataclass(frozen=True, kw_only=True)
class SubmitSm(_ShortMessage):
    """submit_sm (§4.4.1)."""

    COMMAND_ID = CommandId.SUBMIT_SM


@dataclass(frozen=True, kw_only=True)
class DeliverSm(_ShortMessage):
    """deliver_sm (§4.6.1): mobile-originated messages and delivery receipts."""

    COMMAND_ID = CommandId.DELIVER_SM


@dataclass(frozen=True, kw_only=True)
class SubmitSmResp(Pdu):
    """submit_sm_resp (§4.4.2): the SMSC's message_id."""

    message_id: str = ""

    COMMAND_ID = CommandId.SUBMIT_SM_RESP
    _FIELDS = (("message_id", cstr(65)),)
    _BODY_OPTIONAL = True
    _OMIT_BODY_ON_ERROR = True


@dataclass(frozen=True, kw_only=True)
class DeliverSmResp(Pdu):
    """deliver_sm_resp (§4.6.2): message_id is unused and NULL."""

    message_id: str = ""

    COMMAND_ID = CommandId.DELIVER_SM_RESP
    _FIELDS = (("message_id", cstr(65)),)
    _BODY_OPTIONAL = True


@dataclass(frozen=True, kw_only=True)
class DataSm(Pdu):
    """data_sm (§4.7.1): some SMSCs carry receipts and MO messages this way."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0

    COMMAND_ID = CommandId.DATA_SM
    _FIELDS = (("service_type", cstr(6)), ("source_addr_ton", U8), ("source_addr_npi", U8),
               ("source_addr", cstr(65)), ("dest_addr_ton", U8), ("dest_addr_npi", U8),
               ("destination_addr", cstr(65)), ("esm_class", U8),
               ("registered_delivery", U8), ("data_coding", U8))
    _TLVS_ALLOWED = True


@dataclass(frozen=True, kw_only=True)
class DataSmResp(Pdu):
    """data_sm_resp (§4.7.2)."""

    message_id: str = ""

    COMMAND_ID = CommandId.DATA_SM_RESP
    _FIELDS = (("message_id", cstr(65)),)
    _BODY_OPTIONAL = True
    _TLVS_ALLOWED = True


_BIND_MODES = {
    CommandId.BIND_RECEIVER: BindMode.RECEIVER,
    CommandId.BIND_TRANSMITTER: BindMode.TRANSMITTER,
    CommandId.BIND_TRANSCEIVER: BindMode.TRANSCEIVER,
}

# command_id -> (class, extra constructor arguments)
_DECODERS: dict[int, tuple[type[Pdu], dict[str, Any]]] = {
    CommandId.GENERIC_NACK: (GenericNack, {}),
    CommandId.UNBIND: (Unbind, {}),
    CommandId.UNBIND_RESP: (UnbindResp, {}),
    CommandId.ENQUIRE_LINK: (EnquireLink, {}),
    CommandId.ENQUIRE_LINK_RESP: (EnquireLinkResp, {}),
    CommandId.SUBMIT_SM: (SubmitSm, {}),
    CommandId.SUBMIT_SM_RESP: (SubmitSmResp, {}),
    CommandId.DELIVER_SM: (DeliverSm, {}),
    CommandId.DELIVER_SM_RESP: (DeliverSmResp, {}),
    CommandId.DATA_SM: (DataSm, {}),
    CommandId.DATA_SM_RESP: (DataSmResp, {}),
    **{int(cid): (Bind, {"mode": mode}) for cid, mode in _BIND_MODES.items()},
    **{int(cid) | 0x80000000: (BindResp, {"mode": mode}) for cid, mode in _BIND_MODES.items()},
}


# ---------------------------------------------------------------- encoding

def _put_cstr(out: bytearray, name: str, value: object, max_size: int) -> None:
    if not isinstance(value, str):
        raise SmppEncodeError(f"{name} must be a str")
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise SmppEncodeError(f"{name} must be ASCII: {value!r}") from None
    if len(raw) >= max_size:
        raise SmppEncodeError(f"{name} is {len(raw)} octets; at most {max_size - 1} allowed")
    if any(b < 0x20 or b == 0x7F for b in raw):
        raise SmppEncodeError(f"{name} contains a control character")
    out += raw
    out.append(0)


def _put_field(out: bytearray, pdu: Pdu, name: str, kind: FieldKind) -> None:
    value = getattr(pdu, name)
    if kind == U8:
        if not isinstance(value, int) or not 0 <= value <= 0xFF:
            raise SmppEncodeError(f"{name} must be an integer 0..255, got {value!r}")
        out.append(value)
    elif kind == SM:
        if len(value) > MAX_SHORT_MESSAGE:
            raise SmppEncodeError(f"short_message of {len(value)} octets; at most "
                                  f"{MAX_SHORT_MESSAGE} (use message_payload)")
        out.append(len(value))
        out += value
    else:
        assert isinstance(kind, int)
        _put_cstr(out, name, value, kind)


def encode_pdu(pdu: Pdu, max_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> bytes:
    """Encode ``pdu`` with its header; raises :class:`~sms.errors.SmppEncodeError`."""
    if not 0 <= pdu.sequence_number <= 0xFFFFFFFF or not 0 <= pdu.command_status <= 0xFFFFFFFF:
        raise SmppEncodeError("sequence_number and command_status must fit 32 bits")
    body = bytearray()
    # A failed response carries no body (SMPP 3.4 §3.3); the MC must cope either way.
    if not (pdu._OMIT_BODY_ON_ERROR and pdu.command_status != 0):
        for name, kind in pdu._FIELDS:
            _put_field(body, pdu, name, kind)
    if pdu.tlvs and not pdu._TLVS_ALLOWED:
        raise SmppEncodeError(f"{type(pdu).__name__} takes no TLVs")
    for tlv in pdu.tlvs:
        if not 0 <= tlv.tag <= 0xFFFF or len(tlv.value) > 0xFFFF:
            raise SmppEncodeError(f"TLV 0x{tlv.tag:04X} out of range")
        body += tlv.tag.to_bytes(2, "big") + len(tlv.value).to_bytes(2, "big") + tlv.value
    length = HEADER_SIZE + len(body)
    if length > max_length:
        raise SmppEncodeError(f"PDU of {length} octets exceeds the {max_length}-octet limit")
    header = (length.to_bytes(4, "big") + pdu.command_id.to_bytes(4, "big")
              + pdu.command_status.to_bytes(4, "big") + pdu.sequence_number.to_bytes(4, "big"))
    return header + bytes(body)


# ---------------------------------------------------------------- decoding

@dataclass(frozen=True, slots=True)
class Header:
    """A decoded PDU header."""

    command_length: int
    command_id: int
    command_status: int
    sequence_number: int


def decode_header(data: bytes, max_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> Header:
    """Read the 16-octet header; a bad ``command_length`` raises CommandLengthError."""
    cur = Cursor(data, SmppDecodeError)
    header = Header(cur.u32("command_length"), cur.u32("command_id"),
                    cur.u32("command_status"), cur.u32("sequence_number"))
    if not HEADER_SIZE <= header.command_length <= max_length:
        raise CommandLengthError(
            f"command_length {header.command_length} outside {HEADER_SIZE}..{max_length}",
            sequence_number=header.sequence_number, command_id=header.command_id)
    return header


def _read_body(cls: type[Pdu], cur: Cursor, header: Header) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if cls._BODY_OPTIONAL and cur.remaining == 0:
        return values
    for name, kind in cls._FIELDS:
        if kind == U8:
            values[name] = cur.u8(name)
        elif kind == SM:
            values[name] = cur.take(cur.u8("sm_length"), "short_message")
        else:
            assert isinstance(kind, int)
            values[name] = cur.c_string(kind, name).decode("latin-1")
    tlvs: list[Tlv] = []
    while cur.remaining:
        if not cls._TLVS_ALLOWED:
            raise SmppDecodeError(f"{len(tlvs)} unexpected octets after the body",
                                  command_status=CommandStatus.ESME_RINVCMDLEN)
        tag = cur.u16("TLV tag")
        tlvs.append(Tlv(tag, cur.take(cur.u16("TLV length"), f"TLV 0x{tag:04X}")))
    values["tlvs"] = tuple(tlvs)
    return values


def decode_pdu(data: bytes, max_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> Pdu:
    """Decode one complete PDU (exactly ``command_length`` octets)."""
    header = decode_header(data, max_length)
    if header.command_length != len(data):
        raise CommandLengthError(
            f"command_length {header.command_length} but {len(data)} octets given",
            sequence_number=header.sequence_number, command_id=header.command_id)
    entry = _DECODERS.get(header.command_id)
    if entry is None:
        raise UnknownCommandError(f"unknown command_id 0x{header.command_id:08X}",
                                  sequence_number=header.sequence_number,
                                  command_id=header.command_id)
    cls, extra = entry
    cur = Cursor(data, SmppDecodeError, HEADER_SIZE)
    try:
        values = _read_body(cls, cur, header)
    except SmppDecodeError as exc:
        exc.sequence_number = header.sequence_number
        exc.command_id = header.command_id
        raise
    return cls(sequence_number=header.sequence_number, command_status=header.command_status,
               **extra, **values)


class PduReader:
    """Splits a byte stream into PDUs; holds at most one PDU's worth of bytes.

    After a :class:`~sms.errors.CommandLengthError` the stream cannot be
    re-synchronised and the reader refuses further input.
    """

    def __init__(self, max_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        """``max_length`` bounds command_length (and so the buffer)."""
        self._buf = bytearray()
        self._max = max_length
        self._broken = False

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._broken:
            raise CommandLengthError("stream already lost framing")
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete PDU's bytes, or None if more data is needed."""
        if len(self._buf) < HEADER_SIZE:
            return None
        try:
            header = decode_header(bytes(self._buf[:HEADER_SIZE]), self._max)
        except CommandLengthError:
            self._broken = True
            raise
        if len(self._buf) < header.command_length:
            return None
        frame = bytes(self._buf[:header.command_length])
        del self._buf[:header.command_length]
        return frame

    @property
    def buffered(self) -> int:
        """Octets waiting for the rest of their PDU."""
        return len(self._buf)


__all__ = [
    "Bind", "BindMode", "BindResp", "CommandId", "CommandStatus", "DataSm", "DataSmResp",
    "DeliverSm", "DeliverSmResp", "EnquireLink", "EnquireLinkResp", "GenericNack", "Header",
    "Pdu", "PduReader", "SubmitSm", "SubmitSmResp", "TEMPORARY_STATUSES", "Tag", "Tlv",
    "Unbind", "UnbindResp", "decode_header", "decode_pdu", "encode_pdu", "status_name",
    "DEFAULT_MAX_COMMAND_LENGTH", "HEADER_SIZE",
]
