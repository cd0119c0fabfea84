"""Sans-I/O SMPP 3.4 ESME session (transceiver by default).

Theory of operation: the adapter feeds received bytes with
:meth:`SmppSession.receive_data` and writes out :meth:`data_to_send`; it
arms one timer at :meth:`get_timer` and calls :meth:`handle_timer` when it
fires.  The session never reads a clock or touches a socket.

States (table ``_ALLOWED_REQUESTS`` says which MC requests each accepts)::

    OPEN --bind()--> BINDING --bind_resp OK--> BOUND --unbind()--> UNBINDING
      any --bind refused / timeout, unbind either way, link dead, framing lost--> CLOSED

Every request we send is *outstanding* until its response (matched by
sequence number) or its response timeout.  Outstanding submit_sm count
against a window of ``settings.window``; a submit beyond it, or during a
pause after ESME_RTHROTTLED / ESME_RMSGQFUL (doubling while they repeat, up
to ``throttle_pause_max``), raises :class:`WindowFull` (queueing is the
caller's policy).  When the link has been quiet for
``enquire_link_interval`` we send enquire_link; if that goes unanswered the
link is declared dead.  A submit that times out is reported as
:class:`SubmitOutcomeUnknown` (the SMSC may have taken it) and the session
stays up: a late submit_sm_resp is then reported as a warning.
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import (
    CommandLengthError,
    SmppDecodeError,
    SmppStateError,
    UnknownCommandError,
    WindowFull,
)
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
    Unbind,
    UnbindResp,
    decode_pdu,
    encode_pdu,
    status_name,
)
from .events import (
    BindFailed,
    BindSucceeded,
    ProtocolWarning,
    SessionClosed,
    SmppEvent,
    SubmitAccepted,
    SubmitOutcomeUnknown,
    SubmitRejected,
    WindowOpen,
)
from .messages import classify

MAX_SEQUENCE = 0x7FFFFFFF  # SMPP 3.4 §5.1.4: 0x00000001 to 0x7FFFFFFF


class SessionState(enum.Enum):
    """Where the ESME session stands."""

    OPEN = "open"
    BINDING = "binding"
    BOUND = "bound"
    UNBINDING = "unbinding"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Tunables of one SMPP session (validated once, passed in)."""

    window: int = 10
    response_timeout: float = 10.0
    enquire_link_interval: float = 30.0
    throttle_pause: float = 1.0
    throttle_pause_max: float = 30.0
    max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH
    auto_ack: bool = True
    default_alphabet: str = "gsm7"

    def __post_init__(self) -> None:
        """Reject settings that would make the session misbehave."""
        if self.window < 1 or self.response_timeout <= 0 or self.enquire_link_interval <= 0 \
                or self.throttle_pause < 0 or self.throttle_pause_max < self.throttle_pause \
                or self.max_command_length < 16:
            raise ValueError(f"invalid SMPP session settings: {self}")
        if self.default_alphabet != "gsm7":
            codecs.lookup(self.default_alphabet)  # LookupError now, not mid-session


@dataclass(slots=True)
class _Outstanding:
    command_id: int
    deadline: float


_ALLOWED_REQUESTS: dict[SessionState, frozenset[int]] = {
    SessionState.OPEN: frozenset({CommandId.ENQUIRE_LINK}),
    SessionState.BINDING: frozenset({CommandId.ENQUIRE_LINK}),
    SessionState.BOUND: frozenset({CommandId.ENQUIRE_LINK, CommandId.DELIVER_SM,
                                   CommandId.DATA_SM, CommandId.UNBIND}),
    # After we asked to unbind the SMSC may still deliver what it had in flight.
    SessionState.UNBINDING: frozenset({CommandId.ENQUIRE_LINK, CommandId.DELIVER_SM,
                                       CommandId.DATA_SM, CommandId.UNBIND}),
    SessionState.CLOSED: frozenset(),
}

# Requests the MC may send that need no answer at all.
_IGNORED_REQUESTS = frozenset({CommandId.ALERT_NOTIFICATION, CommandId.OUTBIND})

_RESPONSES: dict[int, Callable[[int], Pdu]] = {
    CommandId.DELIVER_SM: lambda seq: DeliverSmResp(sequence_number=seq),
    CommandId.DATA_SM: lambda seq: DataSmResp(sequence_number=seq),
    CommandId.ENQUIRE_LINK: lambda seq: EnquireLinkResp(sequence_number=seq),
    CommandId.UNBIND: lambda seq: UnbindResp(sequence_number=seq),
}


class SmppSession:
    """One ESME-side SMPP 3.4 session over one TCP connection."""

    def __init__(self, settings: SessionSettings | None = None) -> None:
        """Start in OPEN, as after the TCP connect."""
        self.settings = settings or SessionSettings()
        self._state = SessionState.OPEN
        self._reader = PduReader(self.settings.max_command_length)
        self._out = bytearray()
        self._seq = 0
        self._outstanding: dict[int, _Outstanding] = {}
        self._submits = 0
        self._paused_until = 0.0
        self._window_was_closed = False
        self._throttle_streak = 0
        self._last_rx = 0.0
        self._unacked: dict[int, int] = {}
        self.bind_mode = BindMode.TRANSCEIVER

    # ------------------------------------------------------------ public API

    @property
    def state(self) -> SessionState:
        """Current state."""
        return self._state

    def window_free(self, now: float) -> int:
        """How many more submit_sm may be sent right now."""
        if self._state is not SessionState.BOUND or now < self._paused_until:
            return 0
        return max(0, self.settings.window - self._submits)

    def bind(self, system_id: str, password: str, system_type: str = "", *, now: float,
             mode: BindMode = BindMode.TRANSCEIVER, address_range: str = "") -> int:
        """Send a bind; returns its sequence number.  Only from OPEN."""
        self._require(SessionState.OPEN, "bind")
        pdu = Bind(mode=mode, system_id=system_id, password=password, system_type=system_type,
                   address_range=address_range)
        seq = self._request(pdu, now)
        self.bind_mode = mode
        self._state = SessionState.BINDING
        self._last_rx = now
        return seq

    def submit(self, sm: SubmitSm, now: float) -> int:
        """Send ``sm`` with a fresh sequence number, which is returned.

        Raises :class:`WindowFull` when the window is full or throttled, and
        :class:`SmppStateError` when not bound for sending.
        """
        self._require(SessionState.BOUND, "submit_sm")
        if self.bind_mode is BindMode.RECEIVER:
            raise SmppStateError("a receiver bind cannot submit")
        if now < self._paused_until:
            self._window_was_closed = True
            raise WindowFull("SMSC asked us to slow down", retry_at=self._paused_until)
        if self._submits >= self.settings.window:
            self._window_was_closed = True
            raise WindowFull(f"{self._submits} submit_sm already outstanding")
        seq = self._request(sm, now)
        self._submits += 1
        if self._submits >= self.settings.window:
            self._window_was_closed = True  # so the caller hears WindowOpen when a slot frees
        return seq

    def unbind(self, now: float) -> int:
        """Ask the SMSC to end the session; returns the unbind's sequence number."""
        self._require(SessionState.BOUND, "unbind")
        seq = self._request(Unbind(), now)
        self._state = SessionState.UNBINDING
        return seq

    def acknowledge(self, seq: int, status: int = CommandStatus.ESME_ROK) -> None:
        """Answer deliver_sm/data_sm ``seq`` (only with ``auto_ack`` off), e.g. once stored."""
        command = self._unacked.pop(seq, None)
        if command is None:
            raise SmppStateError(f"no unanswered deliver_sm with sequence {seq}")
        self._send(replace(_RESPONSES[command](seq), command_status=status))

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket (and forget)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def get_timer(self) -> float | None:
        """The next ``now`` at which :meth:`handle_timer` must run, or None."""
        if self._state is SessionState.CLOSED:
            return None
        times = [o.deadline for o in self._outstanding.values()]
        if self._state is SessionState.BOUND and not self._enquire_outstanding():
            times.append(self._last_rx + self.settings.enquire_link_interval)
        if self._window_was_closed and self._paused_until > 0:
            times.append(self._paused_until)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[SmppEvent]:
        """Expire response timeouts, send enquire_link when idle, end throttle pauses."""
        events: list[SmppEvent] = []
        for seq, out in list(self._outstanding.items()):
            if self._closed():
                break
            if out.deadline <= now:
                events += self._expire(seq, out, now)
        if (self._state is SessionState.BOUND and not self._enquire_outstanding()
                and now >= self._last_rx + self.settings.enquire_link_interval):
            self._request(EnquireLink(), now)
        events += self._check_window(now)
        return events

    def receive_data(self, data: bytes, now: float) -> list[SmppEvent]:
        """Feed received bytes; returns the events they cause."""
        if self._state is SessionState.CLOSED:
            return []
        events: list[SmppEvent] = []
        self._reader.feed(data)
        while not self._closed():
            try:
                frame = self._reader.next_frame()
            except CommandLengthError as exc:
                self._send(GenericNack(sequence_number=exc.sequence_number or 0,
                                       command_status=exc.command_status))
                return events + self._close(f"framing lost: {exc}")
            if frame is None:
                break
            self._last_rx = now
            events += self._handle_frame(frame, now)
        return events + self._check_window(now)

    def connection_lost(self, now: float) -> list[SmppEvent]:
        """The adapter lost the socket: settle everything outstanding."""
        if self._state is SessionState.CLOSED:
            return []
        return self._close("connection lost")

    # ------------------------------------------------------------ sending

    def _closed(self) -> bool:
        return self._state is SessionState.CLOSED

    def _require(self, state: SessionState, what: str) -> None:
        if self._state is not state:
            raise SmppStateError(f"cannot {what} in state {self._state.value}")

    def _next_seq(self) -> int:
        while True:
            self._seq = self._seq % MAX_SEQUENCE + 1
            if self._seq not in self._outstanding:
                return self._seq

    def _send(self, pdu: Pdu) -> None:
        self._out += encode_pdu(pdu, self.settings.max_command_length)

    def _request(self, pdu: Pdu, now: float) -> int:
        seq = self._next_seq()
        self._send(replace(pdu, sequence_number=seq))
        self._outstanding[seq] = _Outstanding(pdu.command_id,
                                              now + self.settings.response_timeout)
        return seq

    def _enquire_outstanding(self) -> bool:
        return any(o.command_id == CommandId.ENQUIRE_LINK for o in self._outstanding.values())

    # ------------------------------------------------------------ receiving

    def _handle_frame(self, frame: bytes, now: float) -> list[SmppEvent]:
        try:
            pdu = decode_pdu(frame, self.settings.max_command_length)
        except UnknownCommandError as exc:
            if exc.command_id in _IGNORED_REQUESTS:
                return [ProtocolWarning(f"ignored command 0x{exc.command_id:08X}")]
            if exc.command_id is not None and exc.command_id & 0x80000000:
                return [ProtocolWarning(str(exc))]
            self._send(GenericNack(sequence_number=exc.sequence_number or 0,
                                   command_status=exc.command_status))
            return [ProtocolWarning(str(exc))]
        except SmppDecodeError as exc:
            if exc.command_id is not None and exc.command_id & 0x80000000:
                # A garbled response: its request will time out as outcome unknown.
                return [ProtocolWarning(f"undecodable response: {exc}")]
            self._send(GenericNack(sequence_number=exc.sequence_number or 0,
                                   command_status=exc.command_status))
            return [ProtocolWarning(f"invalid PDU answered with generic_nack: {exc}")]
        if pdu.command_id & 0x80000000:
            return self._handle_response(pdu, now)
        return self._handle_request(pdu, now)

    def _handle_request(self, pdu: Pdu, now: float) -> list[SmppEvent]:
        cid = pdu.command_id
        seq = pdu.sequence_number
        if cid not in _RESPONSES:
            # An ESME is never sent submit_sm, bind, ...: "invalid command" for us.
            self._send(GenericNack(sequence_number=seq,
                                   command_status=CommandStatus.ESME_RINVCMDID))
            return [ProtocolWarning(f"unexpected request 0x{cid:08X} from the SMSC")]
        if cid not in _ALLOWED_REQUESTS[self._state]:
            self._send(replace(_RESPONSES[cid](seq),
                               command_status=CommandStatus.ESME_RINVBNDSTS))
            return [ProtocolWarning(f"request 0x{cid:08X} refused in state {self._state.value}")]
        if cid == CommandId.ENQUIRE_LINK:
            self._send(EnquireLinkResp(sequence_number=seq))
            return []
        if cid == CommandId.UNBIND:
            self._send(UnbindResp(sequence_number=seq))
            return self._close("unbound by the SMSC")
        assert isinstance(pdu, (DeliverSm, DataSm))
        return self._handle_delivery(pdu)

    def _handle_delivery(self, pdu: DeliverSm | DataSm) -> list[SmppEvent]:
        events: list[SmppEvent] = []
        try:
            events.append(classify(pdu, self.settings.default_alphabet))
        except SmppDecodeError as exc:
            # Acknowledge anyway: refusing would make the SMSC redeliver it forever.
            events.append(ProtocolWarning(f"unreadable deliver_sm {pdu.sequence_number}: {exc}"))
        if self.settings.auto_ack:
            self._send(_RESPONSES[pdu.command_id](pdu.sequence_number))
        else:
            self._unacked[pdu.sequence_number] = pdu.command_id
        return events

    def _handle_response(self, pdu: Pdu, now: float) -> list[SmppEvent]:
        seq = pdu.sequence_number
        out = self._outstanding.get(seq)
        if out is None:
            return [ProtocolWarning(f"response 0x{pdu.command_id:08X} for unknown sequence "
                                    f"{seq} (late or never sent)")]
        nack = isinstance(pdu, GenericNack)
        if not nack and pdu.command_id != out.command_id | 0x80000000:
            return [ProtocolWarning(f"response 0x{pdu.command_id:08X} does not match request "
                                    f"0x{out.command_id:08X} of sequence {seq}")]
        del self._outstanding[seq]
        status = pdu.command_status
        if out.command_id == CommandId.SUBMIT_SM:
            self._submits -= 1
            return self._submit_answered(seq, status, pdu, now)
        if out.command_id in (CommandId.BIND_TRANSCEIVER, CommandId.BIND_TRANSMITTER,
                              CommandId.BIND_RECEIVER):
            if status == CommandStatus.ESME_ROK and isinstance(pdu, BindResp):
                self._state = SessionState.BOUND
                return [BindSucceeded(pdu.system_id)]
            return [BindFailed(status, f"bind refused: {status_name(status)}"),
                    *self._close(f"bind refused: {status_name(status)}")]
        if out.command_id == CommandId.UNBIND:
            return self._close("unbound")
        return []  # enquire_link_resp: the link is alive, _last_rx already moved

    def _submit_answered(self, seq: int, status: int, pdu: Pdu, now: float) -> list[SmppEvent]:
        if status == CommandStatus.ESME_ROK and isinstance(pdu, SubmitSmResp):
            self._throttle_streak = 0
            return [SubmitAccepted(seq, pdu.message_id)]
        temporary = status in TEMPORARY_STATUSES
        if temporary:
            # Back off harder while the SMSC keeps pushing back; one success resets it.
            # The rest of a window refused in the same burst (answered during the
            # pause it started) is one push-back, not one each: otherwise a window
            # of 20 refused together would pause for 2**19 seconds (capped).
            if now >= self._paused_until:
                self._throttle_streak += 1
            pause = min(self.settings.throttle_pause * 2 ** (self._throttle_streak - 1),
                        self.settings.throttle_pause_max)
            self._paused_until = max(self._paused_until, now + pause)
            self._window_was_closed = True
        return [SubmitRejected(seq, status, temporary)]

    # ------------------------------------------------------------ timers and closing

    def _expire(self, seq: int, out: _Outstanding, now: float) -> list[SmppEvent]:
        del self._outstanding[seq]
        timeout = self.settings.response_timeout
        if out.command_id == CommandId.SUBMIT_SM:
            self._submits -= 1
            return [SubmitOutcomeUnknown(seq, f"no submit_sm_resp within {timeout}s")]
        if out.command_id == CommandId.ENQUIRE_LINK:
            return self._close(f"no enquire_link_resp within {timeout}s: link dead")
        if out.command_id == CommandId.UNBIND:
            return self._close("no unbind_resp; closing anyway")
        return [BindFailed(None, f"no bind response within {timeout}s"),
                *self._close("bind timed out")]

    def _check_window(self, now: float) -> list[SmppEvent]:
        if not self._window_was_closed:
            return []
        free = self.window_free(now)
        if free <= 0:
            return []
        self._window_was_closed = False
        self._paused_until = 0.0
        return [WindowOpen(free)]

    def _close(self, reason: str) -> list[SmppEvent]:
        self._state = SessionState.CLOSED
        events: list[SmppEvent] = [
            SubmitOutcomeUnknown(seq, reason)
            for seq, out in self._outstanding.items() if out.command_id == CommandId.SUBMIT_SM
        ]
        self._outstanding.clear()
        self._submits = 0
        events.append(SessionClosed(reason))
        return events
