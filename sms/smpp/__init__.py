"""SMPP 3.4 for an ESME: PDU codec, delivery receipts and the sans-I/O session.

``from sms.smpp import SmppSession, build_submits`` is the usual entry point;
the submodules hold the details (:mod:`.codec`, :mod:`.session`,
:mod:`.messages`, :mod:`.receipt`, :mod:`.events`).
"""

from .codec import (
    DEFAULT_MAX_COMMAND_LENGTH,
    TEMPORARY_STATUSES,
    Bind,
    BindMode,
    BindResp,
    CommandId,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    PduReader,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Tlv,
    Unbind,
    UnbindResp,
    decode_pdu,
    encode_pdu,
    status_name,
)
from .events import (
    BindFailed,
    BindSucceeded,
    DeliveryReceipt,
    MessageReceived,
    ProtocolWarning,
    SessionClosed,
    SmppEvent,
    SubmitAccepted,
    SubmitOutcomeUnknown,
    SubmitRejected,
    WindowOpen,
)
from .messages import ConcatMode, address, build_submits, classify, decode_text, relative_time
from .receipt import MessageState, ReceiptText, message_id_variants, parse_receipt_text
from .session import SessionSettings, SessionState, SmppSession

__all__ = [
    "DEFAULT_MAX_COMMAND_LENGTH", "TEMPORARY_STATUSES", "Bind", "BindFailed", "BindMode",
    "BindResp", "BindSucceeded", "CommandId", "CommandStatus", "ConcatMode", "DataSm",
    "DataSmResp", "DeliverSm", "DeliverSmResp", "DeliveryReceipt", "EnquireLink",
    "EnquireLinkResp", "GenericNack", "MessageReceived", "MessageState", "Pdu", "PduReader",
    "ProtocolWarning", "ReceiptText", "SessionClosed", "SessionSettings", "SessionState",
    "SmppEvent", "SmppSession", "SubmitAccepted", "SubmitOutcomeUnknown", "SubmitRejected",
    "SubmitSm", "SubmitSmResp", "Tag", "Tlv", "Unbind", "UnbindResp", "WindowOpen", "address",
    "build_submits", "classify", "decode_pdu", "decode_text", "encode_pdu", "message_id_variants",
    "parse_receipt_text",
    "relative_time", "status_name",
]
