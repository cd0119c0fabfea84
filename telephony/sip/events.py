"""Timers, keys and events shared by the transaction layer and its users.

Kept apart from :mod:`telephony.sip.transaction` so adapters and the TU can
import the vocabulary without the state machines.  Events are frozen
dataclasses; the messages inside them are the parsed objects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from telephony.sip.message import Destination, SipMessage, SipRequest, SipResponse

__all__ = [
    "DEFAULT_TIMERS",
    "TimerName",
    "TimerSettings",
    "DeliverRequest",
    "DeliverResponse",
    "SendMessage",
    "StrayResponse",
    "Terminated",
    "TransactionEvent",
    "TransactionKey",
    "TransactionTimeout",
    "TransportError",
    "client_key",
    "server_key",
]


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """RFC 3261 timer base values in seconds (section 17.1.1.1, table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0:
            raise ValueError(f"bad SIP timer settings {self}")


DEFAULT_TIMERS = TimerSettings()
"""The RFC 3261 defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s."""


class TimerName(enum.Enum):
    """The transaction timers of RFC 3261 table 4 plus L and M of RFC 6026."""

    A = "A"  # INVITE request retransmit (client, unreliable)
    B = "B"  # INVITE transaction timeout (client)
    D = "D"  # wait for response retransmits (client INVITE)
    E = "E"  # non-INVITE request retransmit (client, unreliable)
    F = "F"  # non-INVITE transaction timeout (client)
    G = "G"  # INVITE final response retransmit (server, unreliable)
    H = "H"  # wait for ACK (server INVITE)
    I = "I"  # noqa: E741 - the spec's name; wait for ACK retransmits
    J = "J"  # wait for non-INVITE request retransmits (server)
    K = "K"  # wait for response retransmits (client non-INVITE)
    L = "L"  # wait for INVITE retransmits after 2xx (server, RFC 6026)
    M = "M"  # wait for 2xx retransmits (client, RFC 6026)


@dataclass(frozen=True, slots=True)
class TransactionKey:
    """Matches messages to a transaction (RFC 3261 17.1.3 and 17.2.3).

    Client keys are (branch, method); server keys add the top Via sent-by.
    ACK's server key uses method INVITE, so it finds the INVITE transaction.
    """

    branch: str
    method: str
    sent_by: str = ""
    server: bool = False


def client_key(message: SipMessage) -> TransactionKey:
    """The client transaction a request or response belongs to."""
    return TransactionKey(message.top_via.branch or "", message.cseq.method)


def server_key(message: SipMessage) -> TransactionKey:
    """The server transaction a request (or the TU's response) belongs to."""
    via = message.top_via
    method = message.cseq.method
    method = "INVITE" if method == "ACK" else method
    return TransactionKey(via.branch or "", method, via.sent_by, True)


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Hand ``message`` to the transport for ``destination``."""

    key: TransactionKey | None
    message: SipMessage
    destination: Destination


@dataclass(frozen=True, slots=True)
class DeliverRequest:
    """A new request (or an ACK for a 2xx) for the TU.

    ``key`` is None for an ACK that matched no transaction (ACK for 2xx goes
    to the dialog).  For CANCEL, ``cancels`` names the INVITE server
    transaction it targets, or is None if there is none (answer 481).
    """

    key: TransactionKey | None
    request: SipRequest
    source: Destination
    cancels: TransactionKey | None = None


@dataclass(frozen=True, slots=True)
class DeliverResponse:
    """A response for the TU, in the order received; retransmissions removed."""

    key: TransactionKey
    response: SipResponse


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction (e.g. a late 2xx): TU decides."""

    response: SipResponse


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F or H fired: the TU treats it as a 408 / failed ACK wait."""

    key: TransactionKey
    timer: TimerName


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport could not send for this transaction."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is gone; its key may be reused."""

    key: TransactionKey


TransactionEvent = (
    SendMessage
    | DeliverRequest
    | DeliverResponse
    | StrayResponse
    | TransactionTimeout
    | TransportError
    | Terminated
)
