"""The four RFC 3261 section 17 transaction state machines, sans-I/O.

Theory of operation
-------------------
A transaction is a state machine fed by three kinds of input: messages from
the network (``receive_request``/``receive_response``), responses from the
transaction user (``send_response``) and timer expiries (``handle_timer``).
Every method takes ``now`` (seconds, any monotonic origin); nothing here
reads a clock.  Outputs are queued as frozen-dataclass events and drained
with :meth:`next_event`: :class:`SendMessage` for the transport,
:class:`DeliverRequest`/:class:`DeliverResponse` for the TU, and
:class:`TransactionTimeout`, :class:`TransportError`, :class:`Terminated`.
:meth:`get_timer` gives the earliest pending deadline for the adapter to arm.

Each class's transitions are one table ``(State, Input) -> (next State,
action)``.  Network inputs without an entry are absorbed silently (that is
how retransmissions and late provisionals are discarded); TU inputs without
an entry raise :class:`TransactionStateError`, because they are bugs.

Timers are named after the spec (``TimerName.A`` ...).  On reliable
transports A, E and G are never started and D, I, J, K are zero, which here
means "fire now": the transition to Terminated happens in the same call.

INVITE transactions follow RFC 6026: a 2xx moves both sides to Accepted
(timers L and M, both 64*T1) instead of Terminated, so retransmitted 2xx
responses still reach the TU and retransmitted INVITEs are absorbed.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from telephony.sip.events import (
    DEFAULT_TIMERS,
    DeliverRequest,
    DeliverResponse,
    SendMessage,
    StrayResponse,
    Terminated,
    TimerName,
    TimerSettings,
    TransactionEvent,
    TransactionKey,
    TransactionTimeout,
    TransportError,
    client_key,
    server_key,
)
from telephony.sip.message import (
    Destination,
    SipMessage,
    SipRequest,
    SipResponse,
    build_ack_for_failure,
    build_response,
    response_destination,
    stamp_via_received,
)

__all__ = [
    "DEFAULT_TIMERS",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "DeliverRequest",
    "DeliverResponse",
    "Input",
    "SendMessage",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "State",
    "StrayResponse",
    "Terminated",
    "TimerName",
    "TimerSettings",
    "TransactionEvent",
    "TransactionKey",
    "TransactionLayer",
    "TransactionStateError",
    "TransactionTimeout",
    "TransportError",
    "client_key",
    "server_key",
]

MAGIC_COOKIE = "z9hG4bK"


class TransactionStateError(RuntimeError):
    """The TU asked for something the transaction's state forbids (a bug)."""


class State(enum.Enum):
    """Transaction states (RFC 3261 figures 5-8, RFC 6026 Accepted)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class Input(enum.Enum):
    """What can happen to a transaction."""

    RESPONSE_1XX = "1xx"
    RESPONSE_2XX = "2xx"
    RESPONSE_FINAL = "3xx-6xx"
    REQUEST = "request retransmission"
    ACK = "ACK"
    TU_1XX = "TU 1xx"
    TU_2XX = "TU 2xx"
    TU_FINAL = "TU 3xx-6xx"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = TimerName.A
    TIMER_B = TimerName.B
    TIMER_D = TimerName.D
    TIMER_E = TimerName.E
    TIMER_F = TimerName.F
    TIMER_G = TimerName.G
    TIMER_H = TimerName.H
    TIMER_I = TimerName.I
    TIMER_J = TimerName.J
    TIMER_K = TimerName.K
    TIMER_L = TimerName.L
    TIMER_M = TimerName.M


_TU_INPUTS = frozenset({Input.TU_1XX, Input.TU_2XX, Input.TU_FINAL})


def _response_input(status: int) -> Input:
    if status < 200:
        return Input.RESPONSE_1XX
    return Input.RESPONSE_2XX if status < 300 else Input.RESPONSE_FINAL


def _tu_input(status: int) -> Input:
    if status < 200:
        return Input.TU_1XX
    return Input.TU_2XX if status < 300 else Input.TU_FINAL


# Actions are methods of the concrete class, so the first argument is Any.
Action = Callable[[Any, float, SipMessage | None], None]
Table = dict[tuple[State, Input], tuple[State, Action]]


class _Transaction:
    """Timers, event queue and the table-driven transition engine."""

    TABLE: ClassVar[Table] = {}

    def __init__(self, key: TransactionKey, timers: TimerSettings, reliable: bool) -> None:
        self.key = key
        self.timers = timers
        self.reliable = reliable
        self.state = State.TRYING
        self._deadlines: dict[TimerName, float] = {}
        self._intervals: dict[TimerName, float] = {}
        self._immediate: list[TimerName] = []
        self._events: deque[TransactionEvent] = deque()

    @property
    def terminated(self) -> bool:
        """True once the transaction reached Terminated."""
        return self.state is State.TERMINATED

    def next_event(self) -> TransactionEvent | None:
        """Pop the oldest queued event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest pending timer deadline, or None."""
        return min(self._deadlines.values(), default=None)

    def timer_deadline(self, name: TimerName) -> float | None:
        """The deadline of one named timer (for tests and diagnostics)."""
        return self._deadlines.get(name)

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while self._deadlines:
            name = min(self._deadlines, key=self._deadlines.__getitem__)
            if self._deadlines[name] > now:
                return
            del self._deadlines[name]
            self._input(Input(name), now, None)

    def transport_error(self, now: float) -> None:
        """The transport failed to send for this transaction."""
        self._input(Input.TRANSPORT_ERROR, now, None)

    def _input(self, inp: Input, now: float, message: SipMessage | None) -> None:
        entry = self.TABLE.get((self.state, inp))
        if entry is None:
            if inp in _TU_INPUTS:
                raise TransactionStateError(f"{inp.value} not allowed in {self.state.value}")
            return
        next_state, action = entry
        self.state = next_state
        action(self, now, message)
        if next_state is State.TERMINATED:
            self._deadlines.clear()
            self._immediate.clear()
            self._events.append(Terminated(self.key))
            return
        while self._immediate and not self.terminated:
            self._input(Input(self._immediate.pop(0)), now, None)

    def _start(self, name: TimerName, now: float, interval: float) -> None:
        """Arm ``name``; a zero interval fires once the current transition is done."""
        self._intervals[name] = interval
        if interval <= 0:
            self._immediate.append(name)
        else:
            self._deadlines[name] = now + interval

    def _stop(self, *names: TimerName) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _nothing(self, now: float, message: SipMessage | None) -> None:
        """Absorb the input (retransmissions, late responses)."""

    def _transport_failed(self, now: float, message: SipMessage | None) -> None:
        self._events.append(TransportError(self.key))


class _ClientTransaction(_Transaction):
    """Shared by both client transactions: the request and where it goes."""

    def __init__(
        self, request: SipRequest, destination: Destination, timers: TimerSettings
    ) -> None:
        super().__init__(client_key(request), timers, destination.reliable)
        self.request = request
        self.destination = destination

    def receive_response(self, response: SipResponse, now: float) -> None:
        """Feed a response whose key matched this transaction."""
        self._input(_response_input(response.status), now, response)

    def _send_request(self) -> None:
        self._events.append(SendMessage(self.key, self.request, self.destination))

    def _deliver(self, now: float, message: SipMessage | None) -> None:
        assert isinstance(message, SipResponse)
        self._events.append(DeliverResponse(self.key, message))


class ClientInviteTransaction(_ClientTransaction):
    """RFC 3261 17.1.1 (figure 5) with the RFC 6026 Accepted state."""

    def __init__(
        self,
        request: SipRequest,
        destination: Destination,
        now: float,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        super().__init__(request, destination, timers)
        self.state = State.CALLING
        self._send_request()
        if not self.reliable:
            self._start(TimerName.A, now, timers.t1)
        self._start(TimerName.B, now, 64 * timers.t1)

    def _retransmit_a(self, now: float, message: SipMessage | None) -> None:
        self._send_request()
        self._start(TimerName.A, now, 2 * self._intervals[TimerName.A])

    def _timeout_b(self, now: float, message: SipMessage | None) -> None:
        self._events.append(TransactionTimeout(self.key, TimerName.B))

    def cancel_sent(self, now: float) -> None:
        """The TU sent a CANCEL for this INVITE.  RFC 3261 9.1: if no final response
        arrives within 64*T1 of it, the INVITE is considered cancelled and the
        transaction destroyed.  In Proceeding (where figure 5 has no timer, so a peer
        that never answers the CANCEL would keep it for ever) Timer B is re-armed for
        that; it ends the transaction with a :class:`TransactionTimeout` as in Calling."""
        if self.state is State.PROCEEDING and TimerName.B not in self._deadlines:
            self._start(TimerName.B, now, 64 * self.timers.t1)

    def _first_provisional(self, now: float, message: SipMessage | None) -> None:
        self._stop(TimerName.A, TimerName.B)
        self._deliver(now, message)

    def _accepted(self, now: float, message: SipMessage | None) -> None:
        self._stop(TimerName.A, TimerName.B)
        self._deliver(now, message)
        self._start(TimerName.M, now, 64 * self.timers.t1)

    def _failed(self, now: float, message: SipMessage | None) -> None:
        self._stop(TimerName.A, TimerName.B)
        self._deliver(now, message)
        self._send_ack(now, message)
        self._start(TimerName.D, now, 0 if self.reliable else 32.0)

    def _send_ack(self, now: float, message: SipMessage | None) -> None:
        assert isinstance(message, SipResponse)
        ack = build_ack_for_failure(self.request, message)
        self._events.append(SendMessage(self.key, ack, self.destination))

    _S, _I = State, Input
    TABLE: ClassVar[Table] = {
        (_S.CALLING, _I.TIMER_A): (_S.CALLING, _retransmit_a),
        (_S.CALLING, _I.TIMER_B): (_S.TERMINATED, _timeout_b),
        (_S.CALLING, _I.RESPONSE_1XX): (_S.PROCEEDING, _first_provisional),
        (_S.CALLING, _I.RESPONSE_2XX): (_S.ACCEPTED, _accepted),
        (_S.CALLING, _I.RESPONSE_FINAL): (_S.COMPLETED, _failed),
        (_S.CALLING, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
        (_S.PROCEEDING, _I.RESPONSE_1XX): (_S.PROCEEDING, _ClientTransaction._deliver),
        (_S.PROCEEDING, _I.RESPONSE_2XX): (_S.ACCEPTED, _accepted),
        (_S.PROCEEDING, _I.RESPONSE_FINAL): (_S.COMPLETED, _failed),
        (_S.PROCEEDING, _I.TIMER_B): (_S.TERMINATED, _timeout_b),  # only after a CANCEL
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
        (_S.COMPLETED, _I.RESPONSE_FINAL): (_S.COMPLETED, _send_ack),
        (_S.COMPLETED, _I.RESPONSE_1XX): (_S.COMPLETED, _Transaction._nothing),
        (_S.COMPLETED, _I.TIMER_D): (_S.TERMINATED, _Transaction._nothing),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
        (_S.ACCEPTED, _I.RESPONSE_2XX): (_S.ACCEPTED, _ClientTransaction._deliver),
        (_S.ACCEPTED, _I.RESPONSE_1XX): (_S.ACCEPTED, _Transaction._nothing),
        (_S.ACCEPTED, _I.TIMER_M): (_S.TERMINATED, _Transaction._nothing),
    }
    del _S, _I


class ClientNonInviteTransaction(_ClientTransaction):
    """RFC 3261 17.1.2 (figure 6)."""

    def __init__(
        self,
        request: SipRequest,
        destination: Destination,
        now: float,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} does not use a non-INVITE transaction")
        super().__init__(request, destination, timers)
        self.state = State.TRYING
        self._send_request()
        if not self.reliable:
            self._start(TimerName.E, now, timers.t1)
        self._start(TimerName.F, now, 64 * timers.t1)

    def _retransmit_trying(self, now: float, message: SipMessage | None) -> None:
        self._send_request()
        self._start(TimerName.E, now, min(2 * self._intervals[TimerName.E], self.timers.t2))

    def _retransmit_proceeding(self, now: float, message: SipMessage | None) -> None:
        self._send_request()
        self._start(TimerName.E, now, self.timers.t2)

    def _timeout_f(self, now: float, message: SipMessage | None) -> None:
        self._events.append(TransactionTimeout(self.key, TimerName.F))

    def _final(self, now: float, message: SipMessage | None) -> None:
        self._stop(TimerName.E, TimerName.F)
        self._deliver(now, message)
        self._start(TimerName.K, now, 0 if self.reliable else self.timers.t4)

    _S, _I = State, Input
    TABLE: ClassVar[Table] = {
        (_S.TRYING, _I.TIMER_E): (_S.TRYING, _retransmit_trying),
        (_S.TRYING, _I.TIMER_F): (_S.TERMINATED, _timeout_f),
        (_S.TRYING, _I.RESPONSE_1XX): (_S.PROCEEDING, _ClientTransaction._deliver),
        (_S.TRYING, _I.RESPONSE_2XX): (_S.COMPLETED, _final),
        (_S.TRYING, _I.RESPONSE_FINAL): (_S.COMPLETED, _final),
        (_S.TRYING, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
        (_S.PROCEEDING, _I.TIMER_E): (_S.PROCEEDING, _retransmit_proceeding),
        (_S.PROCEEDING, _I.TIMER_F): (_S.TERMINATED, _timeout_f),
        (_S.PROCEEDING, _I.RESPONSE_1XX): (_S.PROCEEDING, _ClientTransaction._deliver),
        (_S.PROCEEDING, _I.RESPONSE_2XX): (_S.COMPLETED, _final),
        (_S.PROCEEDING, _I.RESPONSE_FINAL): (_S.COMPLETED, _final),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
        (_S.COMPLETED, _I.RESPONSE_1XX): (_S.COMPLETED, _Transaction._nothing),
        (_S.COMPLETED, _I.RESPONSE_2XX): (_S.COMPLETED, _Transaction._nothing),
        (_S.COMPLETED, _I.RESPONSE_FINAL): (_S.COMPLETED, _Transaction._nothing),
        (_S.COMPLETED, _I.TIMER_K): (_S.TERMINATED, _Transaction._nothing),
    }
    del _S, _I


class _ServerTransaction(_Transaction):
    """Shared by both server transactions: where to answer and the last response.

    The request itself is not kept: the TU has it (DeliverRequest), and a
    finished transaction lingers 32 s over UDP only to absorb retransmissions
    (memory the garbage collector would otherwise walk again and again).
    """

    def __init__(self, request: SipRequest, source: Destination, timers: TimerSettings) -> None:
        super().__init__(server_key(request), timers, source.reliable)
        self.source = source
        self.destination = response_destination(request.top_via, source)
        self.last_response: SipResponse | None = None

    def receive_request(self, request: SipRequest, now: float) -> None:
        """Feed a retransmitted request (or the ACK) that matched this transaction."""
        self._input(Input.ACK if request.method == "ACK" else Input.REQUEST, now, request)

    def send_response(self, response: SipResponse, now: float) -> None:
        """The TU's response; raises :class:`TransactionStateError` if out of order."""
        self._input(_tu_input(response.status), now, response)

    def _send(self, now: float, message: SipMessage | None) -> None:
        assert isinstance(message, SipResponse)
        self.last_response = message
        self._events.append(SendMessage(self.key, message, self.destination))

    def _resend(self, now: float, message: SipMessage | None) -> None:
        if self.last_response is not None:
            self._events.append(SendMessage(self.key, self.last_response, self.destination))


class ServerInviteTransaction(_ServerTransaction):
    """RFC 3261 17.2.1 (figure 7) with the RFC 6026 Accepted state.

    With ``auto_trying`` the 100 Trying is sent at once rather than after
    200 ms, which keeps the core deterministic and is allowed by 17.2.1.
    """

    def __init__(
        self,
        request: SipRequest,
        source: Destination,
        now: float,
        timers: TimerSettings = DEFAULT_TIMERS,
        *,
        auto_trying: bool = True,
    ) -> None:
        super().__init__(request, source, timers)
        self.state = State.PROCEEDING
        if auto_trying:
            self._send(now, build_response(request, 100))

    def _final(self, now: float, message: SipMessage | None) -> None:
        self._send(now, message)
        if not self.reliable:
            self._start(TimerName.G, now, self.timers.t1)
        self._start(TimerName.H, now, 64 * self.timers.t1)

    def _accepted(self, now: float, message: SipMessage | None) -> None:
        self._pass_2xx(now, message)
        self._start(TimerName.L, now, 64 * self.timers.t1)

    def _pass_2xx(self, now: float, message: SipMessage | None) -> None:
        """Send a 2xx without keeping it: the TU retransmits 2xx itself (RFC 6026),
        and nothing in Accepted resends the last response."""
        assert isinstance(message, SipResponse)
        self.last_response = None
        self._events.append(SendMessage(self.key, message, self.destination))

    def _retransmit_g(self, now: float, message: SipMessage | None) -> None:
        self._resend(now, message)
        self._start(TimerName.G, now, min(2 * self._intervals[TimerName.G], self.timers.t2))

    def _timeout_h(self, now: float, message: SipMessage | None) -> None:
        self._events.append(TransactionTimeout(self.key, TimerName.H))

    def _confirmed(self, now: float, message: SipMessage | None) -> None:
        self._stop(TimerName.G, TimerName.H)
        self._start(TimerName.I, now, 0 if self.reliable else self.timers.t4)

    def _ack_to_tu(self, now: float, message: SipMessage | None) -> None:
        assert isinstance(message, SipRequest)
        self._events.append(DeliverRequest(self.key, message, self.source))

    _S, _I = State, Input
    TABLE: ClassVar[Table] = {
        (_S.PROCEEDING, _I.REQUEST): (_S.PROCEEDING, _ServerTransaction._resend),
        (_S.PROCEEDING, _I.TU_1XX): (_S.PROCEEDING, _ServerTransaction._send),
        (_S.PROCEEDING, _I.TU_2XX): (_S.ACCEPTED, _accepted),
        (_S.PROCEEDING, _I.TU_FINAL): (_S.COMPLETED, _final),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
        (_S.COMPLETED, _I.REQUEST): (_S.COMPLETED, _ServerTransaction._resend),
        (_S.COMPLETED, _I.TIMER_G): (_S.COMPLETED, _retransmit_g),
        (_S.COMPLETED, _I.TIMER_H): (_S.TERMINATED, _timeout_h),
        (_S.COMPLETED, _I.ACK): (_S.CONFIRMED, _confirmed),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
        (_S.CONFIRMED, _I.ACK): (_S.CONFIRMED, _Transaction._nothing),
        (_S.CONFIRMED, _I.REQUEST): (_S.CONFIRMED, _Transaction._nothing),
        (_S.CONFIRMED, _I.TIMER_I): (_S.TERMINATED, _Transaction._nothing),
        (_S.ACCEPTED, _I.REQUEST): (_S.ACCEPTED, _Transaction._nothing),
        (_S.ACCEPTED, _I.ACK): (_S.ACCEPTED, _ack_to_tu),
        (_S.ACCEPTED, _I.TU_2XX): (_S.ACCEPTED, _pass_2xx),
        (_S.ACCEPTED, _I.TRANSPORT_ERROR): (_S.ACCEPTED, _Transaction._transport_failed),
        (_S.ACCEPTED, _I.TIMER_L): (_S.TERMINATED, _Transaction._nothing),
    }
    del _S, _I


class ServerNonInviteTransaction(_ServerTransaction):
    """RFC 3261 17.2.2 (figure 8)."""

    def __init__(
        self,
        request: SipRequest,
        source: Destination,
        now: float,
        timers: TimerSettings = DEFAULT_TIMERS,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} does not use a non-INVITE transaction")
        super().__init__(request, source, timers)
        self.state = State.TRYING

    def _final(self, now: float, message: SipMessage | None) -> None:
        self._send(now, message)
        self._start(TimerName.J, now, 0 if self.reliable else 64 * self.timers.t1)

    _S, _I = State, Input
    TABLE: ClassVar[Table] = {
        (_S.TRYING, _I.REQUEST): (_S.TRYING, _Transaction._nothing),
        (_S.TRYING, _I.TU_1XX): (_S.PROCEEDING, _ServerTransaction._send),
        (_S.TRYING, _I.TU_2XX): (_S.COMPLETED, _final),
        (_S.TRYING, _I.TU_FINAL): (_S.COMPLETED, _final),
        (_S.PROCEEDING, _I.REQUEST): (_S.PROCEEDING, _ServerTransaction._resend),
        (_S.PROCEEDING, _I.TU_1XX): (_S.PROCEEDING, _ServerTransaction._send),
        (_S.PROCEEDING, _I.TU_2XX): (_S.COMPLETED, _final),
        (_S.PROCEEDING, _I.TU_FINAL): (_S.COMPLETED, _final),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
        (_S.COMPLETED, _I.REQUEST): (_S.COMPLETED, _ServerTransaction._resend),
        (_S.COMPLETED, _I.TIMER_J): (_S.TERMINATED, _Transaction._nothing),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): (_S.TERMINATED, _Transaction._transport_failed),
    }
    del _S, _I


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction


class TransactionLayer:
    """Matches messages to transactions and owns them (RFC 3261 17.1.3, 17.2.3).

    The transport adapter calls :meth:`receive` for every parsed message and
    :meth:`handle_timer` when :meth:`get_timer` is due; the TU calls
    :meth:`send_request` and :meth:`send_response`.  Every output, for the
    transport and for the TU alike, comes out of :meth:`next_event` in the
    order it happened, so responses are never reordered.

    Requests without an RFC 3261 branch (``z9hG4bK`` plus an identifier) are
    answered 400 statelessly: the RFC 2543 matching fallback is not offered.
    """

    def __init__(
        self, timers: TimerSettings = DEFAULT_TIMERS, *, auto_trying: bool = True
    ) -> None:
        self.timers = timers
        self.auto_trying = auto_trying
        self._clients: dict[TransactionKey, ClientTransaction] = {}
        self._servers: dict[TransactionKey, ServerTransaction] = {}
        self._events: deque[TransactionEvent] = deque()
        # A heap of (deadline, seq, key) with lazy deletion: an entry counts
        # only while _armed[key] still equals its deadline.
        self._heap: list[tuple[float, int, TransactionKey]] = []
        self._armed: dict[TransactionKey, float] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    def next_event(self) -> TransactionEvent | None:
        """Pop the oldest event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """Earliest deadline over all transactions, or None."""
        heap = self._heap
        while heap:
            deadline, _, key = heap[0]
            if self._armed.get(key) == deadline:
                return deadline
            heapq.heappop(heap)  # stale: the transaction re-armed or ended
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every due timer of every transaction."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if self._armed.get(key) != deadline:
                continue
            del self._armed[key]
            txn = self._servers.get(key) if key.server else self._clients.get(key)
            if txn is not None:
                txn.handle_timer(now)
                self._drain(txn)

    def receive(self, message: SipMessage, source: Destination, now: float) -> None:
        """Feed a parsed message that arrived from ``source``."""
        if isinstance(message, SipRequest):
            self._receive_request(message, source, now)
        elif isinstance(message, SipResponse):
            self._receive_response(message, now)

    def send_request(
        self, request: SipRequest, destination: Destination, now: float
    ) -> TransactionKey:
        """Start a client transaction for ``request`` (which carries its own top Via)."""
        branch = request.top_via.branch or ""
        if not _valid_branch(branch):
            raise ValueError(f"request needs an RFC 3261 branch, got {branch!r}")
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = ClientInviteTransaction(request, destination, now, self.timers)
        else:
            txn = ClientNonInviteTransaction(request, destination, now, self.timers)
        if txn.key in self._clients:
            raise ValueError(f"client transaction {txn.key} already exists")
        self._clients[txn.key] = txn
        self._drain(txn)
        if request.method == "CANCEL":
            invite = self._clients.get(TransactionKey(branch, "INVITE"))
            if isinstance(invite, ClientInviteTransaction):
                invite.cancel_sent(now)
                self._drain(invite)
        return txn.key

    def send_response(self, response: SipResponse, now: float) -> None:
        """Send the TU's response through its server transaction."""
        key = server_key(response)
        txn = self._servers.get(key)
        if txn is None:
            raise TransactionStateError(f"no server transaction {key}")
        try:
            txn.send_response(response, now)
        finally:
            self._drain(txn)

    def send_stateless(self, message: SipMessage, destination: Destination) -> None:
        """Send outside any transaction (ACK for 2xx, stateless replies)."""
        self._events.append(SendMessage(None, message, destination))

    def transport_error(self, key: TransactionKey, now: float) -> None:
        """The transport failed to deliver a message of transaction ``key``."""
        txn = self._servers.get(key) if key.server else self._clients.get(key)
        if txn is not None:
            txn.transport_error(now)
            self._drain(txn)

    def server_transaction(self, key: TransactionKey) -> ServerTransaction | None:
        """Look up a live server transaction."""
        return self._servers.get(key)

    def client_transaction(self, key: TransactionKey) -> ClientTransaction | None:
        """Look up a live client transaction."""
        return self._clients.get(key)

    def _drain(self, txn: _Transaction) -> None:
        """Collect the transaction's events, re-arm its timer, forget it if ended."""
        while (event := txn.next_event()) is not None:
            self._events.append(event)
        key = txn.key
        table: dict[TransactionKey, Any] = self._servers if key.server else self._clients
        if table.get(key) is not txn:
            return
        if txn.terminated:
            del table[key]
            self._armed.pop(key, None)
            return
        deadline = txn.get_timer()
        if deadline is None:
            self._armed.pop(key, None)
        elif self._armed.get(key) != deadline:
            self._armed[key] = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), key))

    def _receive_request(self, request: SipRequest, source: Destination, now: float) -> None:
        stamp_via_received(request, source.host, source.port)
        if not _valid_branch(request.top_via.branch or ""):
            if request.method != "ACK":
                reply = build_response(request, 400, "Missing RFC 3261 branch")
                self.send_stateless(reply, response_destination(request.top_via, source))
            return
        key = server_key(request)
        existing = self._servers.get(key)
        if existing is not None:
            existing.receive_request(request, now)
            self._drain(existing)
            return
        if request.method == "ACK":
            self._events.append(DeliverRequest(None, request, source))
            return
        txn: ServerTransaction
        if request.method == "INVITE":
            txn = ServerInviteTransaction(
                request, source, now, self.timers, auto_trying=self.auto_trying
            )
        else:
            txn = ServerNonInviteTransaction(request, source, now, self.timers)
        self._servers[key] = txn
        cancels = None
        if request.method == "CANCEL":
            target = TransactionKey(key.branch, "INVITE", key.sent_by, True)
            cancels = target if target in self._servers else None
        self._events.append(DeliverRequest(key, request, source, cancels))
        self._drain(txn)

    def _receive_response(self, response: SipResponse, now: float) -> None:
        txn = self._clients.get(client_key(response))
        if txn is None:
            self._events.append(StrayResponse(response))
            return
        txn.receive_response(response, now)
        self._drain(txn)


def _valid_branch(branch: str) -> bool:
    return branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)
