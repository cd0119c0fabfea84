"""SIP dialogs (RFC 3261 section 12), sans-I/O.

A :class:`Dialog` is the state two user agents share after an INVITE (or
another dialog-creating request) got a tagged 1xx or a 2xx: its ID (Call-ID
plus both tags), the local and remote CSeq, the route set learnt from
Record-Route and the remote target learnt from Contact.  It builds in-dialog
requests (BYE, re-INVITE, INFO, ACK for 2xx) with the right Request-URI and
Route headers for loose and strict routers (12.2.1.1), and checks requests
from the peer for CSeq order (12.2.2).

The caller supplies the top Via (with a fresh branch) for every request it
builds, because choosing the transport and address is the adapter's job.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace

from telephony.sip.errors import SipError, SipParseError
from telephony.sip.headers import Headers, NameAddr
from telephony.sip.message import Destination, SipRequest, SipResponse
from telephony.sip.transaction import DEFAULT_TIMERS, SendMessage, TimerSettings
from telephony.sip.uri import SipUri, Uri

__all__ = [
    "AckTimeout",
    "AnswerRetransmitter",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogState",
    "TARGET_REFRESH_METHODS",
    "uac_dialog_id",
    "uas_dialog_id",
]

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogError(SipError):
    """An in-dialog request the dialog cannot accept; carries the status to answer."""

    default_status = 500
    default_reason = "Server Internal Error"


class DialogState(enum.Enum):
    """RFC 3261 12: early (tagged 1xx), confirmed (2xx), terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag and remote tag (12, "dialog ID")."""

    call_id: str
    local_tag: str
    remote_tag: str


def uas_dialog_id(request: SipRequest) -> DialogId:
    """The dialog an incoming request belongs to, from the UAS's point of view."""
    return DialogId(request.call_id, request.to.tag or "", request.from_.tag or "")


def uac_dialog_id(response: SipResponse) -> DialogId:
    """The dialog an incoming response belongs to, from the UAC's point of view."""
    return DialogId(response.call_id, response.from_.tag or "", response.to.tag or "")


def _remote_target(contacts: list[NameAddr]) -> Uri:
    if len(contacts) != 1 or contacts[0].uri is None:
        raise SipParseError("a dialog-creating message needs exactly one Contact URI")
    return contacts[0].uri


def _bare(addr: NameAddr) -> NameAddr:
    """A From/To value without its tag, for re-use with our own tag."""
    return replace(addr, params=tuple(p for p in addr.params if p[0].lower() != "tag"))


@dataclass
class Dialog:
    """One dialog; mutable because CSeq, target and state evolve."""

    id: DialogId
    state: DialogState
    local_party: NameAddr
    remote_party: NameAddr
    remote_target: Uri
    route_set: list[NameAddr] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    secure: bool = False
    invite_cseq: int | None = None

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """Create from our request and a tagged 1xx or a 2xx to it (12.1.2)."""
        tag = response.to.tag
        if tag is None or not 100 < response.status < 300:
            raise ValueError("only a tagged 101-199 or a 2xx creates a dialog")
        state = DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY
        return cls(
            id=DialogId(request.call_id, request.from_.tag or "", tag),
            state=state,
            local_party=_bare(request.from_),
            remote_party=_bare(response.to),
            remote_target=_remote_target(response.contacts),
            route_set=list(reversed(response.record_routes)),
            local_cseq=request.cseq.number,
            secure=isinstance(request.uri, SipUri) and request.uri.secure,
            invite_cseq=request.cseq.number if request.method == "INVITE" else None,
        )

    @classmethod
    def as_uas(cls, request: SipRequest, response: SipResponse, local_cseq: int = 0) -> Dialog:
        """Create from a received request and our tagged 1xx/2xx to it (12.1.1)."""
        tag = response.to.tag
        if tag is None or not 100 < response.status < 300:
            raise ValueError("only a tagged 101-199 or a 2xx creates a dialog")
        state = DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY
        return cls(
            id=DialogId(request.call_id, tag, request.from_.tag or ""),
            state=state,
            local_party=_bare(request.to),
            remote_party=_bare(request.from_),
            remote_target=_remote_target(request.contacts),
            route_set=list(request.record_routes),
            local_cseq=local_cseq,
            remote_cseq=request.cseq.number,
            secure=isinstance(request.uri, SipUri) and request.uri.secure,
        )

    def on_response(self, response: SipResponse) -> None:
        """Apply a response to a request we sent in this dialog."""
        if self.state is DialogState.TERMINATED:
            return
        method = response.cseq.method
        if 200 <= response.status < 300:
            if self.state is DialogState.EARLY:
                self.state = DialogState.CONFIRMED
            if method in TARGET_REFRESH_METHODS and response.contacts:
                self.remote_target = _remote_target(response.contacts)
            if method == "BYE":
                self.state = DialogState.TERMINATED
        elif response.status >= 300:
            if self.state is DialogState.EARLY and response.cseq.number == self.invite_cseq:
                self.state = DialogState.TERMINATED
            if response.status in (481, 408):
                # 12.2.1.2: the peer lost the dialog (or it timed out).
                self.state = DialogState.TERMINATED

    def on_request(self, request: SipRequest) -> None:
        """Check and apply a request from the peer (12.2.2); raises DialogError (500)."""
        if self.state is DialogState.TERMINATED:
            raise DialogError("dialog terminated", status=481,
                              reason="Call/Transaction Does Not Exist")
        number = request.cseq.number
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_cseq is not None and number <= self.remote_cseq:
                raise DialogError(f"CSeq {number} not above {self.remote_cseq}")
            self.remote_cseq = number
        if request.method in TARGET_REFRESH_METHODS and request.contacts:
            self.remote_target = _remote_target(request.contacts)
        if request.method == "BYE":
            self.state = DialogState.TERMINATED

    def _request_uri_and_routes(self) -> tuple[Uri, list[str]]:
        """Request-URI and Route values for loose or strict routing (12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if isinstance(first.uri, SipUri) and first.uri.has_param("lr"):
            return self.remote_target, [str(r) for r in self.route_set]
        if first.uri is None:
            raise SipParseError("route set entry without a URI")
        # Strict router: it becomes the Request-URI, the remote target the last Route.
        uri = first.uri.without_headers() if isinstance(first.uri, SipUri) else first.uri
        rest = [str(r) for r in self.route_set[1:]]
        return uri, [*rest, f"<{self.remote_target}>"]

    def create_request(
        self,
        method: str,
        via: str,
        *,
        contact: str | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> SipRequest:
        """Build an in-dialog request; CSeq is incremented except for ACK/CANCEL."""
        if self.state is DialogState.TERMINATED:
            raise DialogError("dialog terminated")
        if method == "ACK":
            raise ValueError("use create_ack for the ACK to a 2xx")
        self.local_cseq += 1
        if method == "INVITE":
            self.invite_cseq = self.local_cseq
        return self._build(method, self.local_cseq, via, contact, extra_headers, body)

    def create_ack(self, via: str, *, body: bytes = b"") -> SipRequest:
        """The ACK for a 2xx to our INVITE (13.2.2.4): INVITE's CSeq number, new branch."""
        if self.invite_cseq is None:
            raise ValueError("no INVITE to acknowledge")
        return self._build("ACK", self.invite_cseq, via, None, (), body)

    def _build(
        self,
        method: str,
        cseq: int,
        via: str,
        contact: str | None,
        extra_headers: tuple[tuple[str, str], ...],
        body: bytes,
    ) -> SipRequest:
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        for route in routes:
            headers.copy_in("Route", route)
        headers.copy_in("From", str(self.local_party.with_param("tag", self.id.local_tag)))
        remote = self.remote_party
        if self.id.remote_tag:
            remote = remote.with_param("tag", self.id.remote_tag)
        headers.copy_in("To", str(remote))
        headers.copy_in("Call-ID", self.id.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            headers.add("Contact", contact)
        for name, value in extra_headers:
            headers.add(name, value)
        return SipRequest(headers, body, method, uri)


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """No ACK for our 2xx within 64*T1: the UAS should confirm and then BYE (13.3.1.4)."""

    response: SipResponse


class AnswerRetransmitter:
    """The UAS core's 2xx retransmission until the ACK arrives (RFC 3261 13.3.1.4).

    Sans-I/O like the transactions: the 2xx itself is sent through the server
    transaction; this object then emits :class:`SendMessage` retransmissions
    at T1, 2*T1, ... capped at T2 (unreliable transports only) and
    :class:`AckTimeout` at 64*T1 unless :meth:`ack_received` is called first.
    """

    def __init__(
        self,
        response: SipResponse,
        destination: Destination,
        now: float,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        self.response = response
        self.destination = destination
        self._timers = timers
        self._interval = timers.t1
        self._next_send = None if destination.reliable else now + timers.t1
        self._give_up: float | None = now + 64 * timers.t1
        self._events: deque[SendMessage | AckTimeout] = deque()

    @property
    def done(self) -> bool:
        """True once acknowledged or timed out."""
        return self._give_up is None

    def ack_received(self, now: float) -> None:
        """The ACK for this 2xx arrived: stop retransmitting."""
        self._next_send = self._give_up = None

    def get_timer(self) -> float | None:
        """The next retransmission or the give-up deadline."""
        deadlines = [t for t in (self._next_send, self._give_up) if t is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Retransmit and/or give up as due at ``now``."""
        while self._next_send is not None and self._next_send <= now:
            if self._give_up is not None and self._give_up <= self._next_send:
                break
            self._events.append(SendMessage(None, self.response, self.destination))
            self._interval = min(2 * self._interval, self._timers.t2)
            self._next_send += self._interval
        if self._give_up is not None and self._give_up <= now:
            self._next_send = self._give_up = None
            self._events.append(AckTimeout(self.response))

    def next_event(self) -> SendMessage | AckTimeout | None:
        """Pop the oldest event, or None."""
        return self._events.popleft() if self._events else None
