"""Events an :class:`~sms.smpp.session.SmppSession` reports (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..inbound import InboundPart
from .receipt import MessageState


@dataclass(frozen=True, slots=True)
class BindSucceeded:
    """The SMSC accepted our bind; submits may start."""

    system_id: str


@dataclass(frozen=True, slots=True)
class BindFailed:
    """The bind was refused (``status``) or timed out (``status`` None); the session closes."""

    status: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SubmitAccepted:
    """submit_sm ``seq`` was accepted; receipts will name ``message_id``."""

    seq: int
    message_id: str


@dataclass(frozen=True, slots=True)
class SubmitRejected:
    """submit_sm ``seq`` was refused; ``temporary`` means resubmit later (throttled, queue full)."""

    seq: int
    status: int
    temporary: bool


@dataclass(frozen=True, slots=True)
class SubmitOutcomeUnknown:
    """No answer for submit_sm ``seq`` (timeout or lost link): it may or may not have been sent."""

    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """An SMSC delivery receipt for a message we submitted.

    ``seq`` is that of the deliver_sm/data_sm carrying it (for manual acks).
    ``state`` is None when the SMSC gave neither a TLV nor a known ``stat:``.
    """

    seq: int
    message_id: str
    state: MessageState | None
    error: str | None
    network_error: bytes | None
    recipient: str
    done_date: datetime | None
    text: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A mobile-originated SMS (one part; feed ``part`` to :class:`~sms.inbound.Reassembler`)."""

    seq: int
    part: InboundPart
    destination: str


@dataclass(frozen=True, slots=True)
class WindowOpen:
    """The submit window has room again (after being full or throttled)."""

    free: int


@dataclass(frozen=True, slots=True)
class ProtocolWarning:
    """Something odd was received and dropped or tolerated; log it with the peer."""

    reason: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session is over: flush :meth:`data_to_send`, then close the socket."""

    reason: str


SmppEvent = (BindSucceeded | BindFailed | SubmitAccepted | SubmitRejected | SubmitOutcomeUnknown
             | DeliveryReceipt | MessageReceived | WindowOpen | ProtocolWarning | SessionClosed)
