"""Reliable provisional responses (RFC 3262, 100rel/PRACK) as sans-I/O cores.

Theory of operation
-------------------
*UAS side* (:class:`ReliableSender`, one per INVITE server transaction): a 18x
sent reliably carries ``Require: 100rel`` and ``RSeq: n`` (n starts random
below 2**31 and grows by one).  It is retransmitted at T1, 2·T1, 4·T1 ... (no
cap at T2, section 3) until a PRACK whose ``RAck: n cseq INVITE`` matches it
arrives; after 64·T1 unacknowledged the INVITE must be rejected (5xx).  Only
one reliable provisional may be unacknowledged at a time: a later one waits
in a queue, and the final response waits too when an offer in a reliable
18x is still unanswered (section 5).

*UAC side* (:class:`ReliableReceiver`, one per INVITE client transaction):
each 18x with ``Require: 100rel`` and an ``RSeq`` one above the last one is
*new* and gets a PRACK with ``RAck``; a retransmission (same RSeq) or one out
of order is ignored (its PRACK is already in its own transaction).

Every call takes ``now``; :meth:`ReliableSender.get_timer` is the next
deadline and events come out of :meth:`ReliableSender.next_event`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from telephony.sip.errors import SipParseError
from telephony.sip.events import DEFAULT_TIMERS, TimerSettings
from telephony.sip.message import SipResponse

__all__ = [
    "RAck",
    "ReliableFailed",
    "ReliableReceiver",
    "ReliableSender",
    "Retransmit",
    "SendReliable",
    "parse_rack",
    "wants_100rel",
]


_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() takes '¹' too


def wants_100rel(option_values: Iterable[str]) -> bool:
    """True when ``100rel`` is among the option tags of Supported/Require headers."""
    return any(tag.strip().lower() == "100rel"
               for value in option_values for tag in value.split(","))


@dataclass(frozen=True, slots=True)
class RAck:
    """A parsed ``RAck: rseq cseq method``."""

    rseq: int
    cseq: int
    method: str

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


def parse_rack(value: str) -> RAck:
    """Parse an RAck header; SipParseError (400) when malformed."""
    parts = value.split()
    if len(parts) != 3 or not _DIGITS.fullmatch(parts[0]) or not _DIGITS.fullmatch(parts[1]):
        raise SipParseError(f"malformed RAck: {value[:60]!r}")
    return RAck(int(parts[0]), int(parts[1]), parts[2].upper())


def parse_rseq(value: str | None) -> int | None:
    """The RSeq of a provisional response (None if absent or malformed)."""
    if value is None:
        return None
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class SendReliable:
    """Send this reliable provisional response now (first transmission)."""

    response: SipResponse


@dataclass(frozen=True, slots=True)
class Retransmit:
    """Send this reliable provisional response again (it is not PRACKed yet)."""

    response: SipResponse


@dataclass(frozen=True, slots=True)
class ReliableFailed:
    """No PRACK within 64·T1: reject the INVITE (RFC 3262 section 3: 5xx)."""

    rseq: int


@dataclass
class _Pending:
    response: SipResponse
    rseq: int
    sent_at: float = 0.0
    interval: float = 0.0
    next_at: float = 0.0


@dataclass
class ReliableSender:
    """Sends one INVITE transaction's 18x reliably (module docs)."""

    cseq: int
    timers: TimerSettings = DEFAULT_TIMERS
    rseq: int = field(default_factory=lambda: 1 + secrets.randbelow(2**31 - 1))
    _current: _Pending | None = None
    _queue: list[SipResponse] = field(default_factory=list)
    _events: list[SendReliable | Retransmit | ReliableFailed] = field(default_factory=list)
    failed: bool = False
    acked: int = 0

    def send(self, response: SipResponse, now: float) -> None:
        """Add RSeq and Require: 100rel to a 101-199 response and send it reliably
        (queued behind one still unacknowledged)."""
        if not 100 < response.status < 200:
            raise ValueError("only 101-199 responses are sent reliably")
        if self.failed:
            return
        if self._current is not None:
            self._queue.append(response)
            return
        self._start(response, now)

    def _start(self, response: SipResponse, now: float) -> None:
        self.rseq += 1
        response.headers.set("RSeq", str(self.rseq))
        if "100rel" not in ",".join(response.headers.get_all("Require")).lower():
            response.headers.add("Require", "100rel")
        t1 = self.timers.t1
        self._current = _Pending(response, self.rseq, now, t1, now + t1)
        self._events.append(SendReliable(response))

    @property
    def unacknowledged(self) -> bool:
        """A reliable provisional is still waiting for its PRACK."""
        return self._current is not None

    def prack(self, rack: RAck, now: float) -> bool:
        """A PRACK arrived: True when it acknowledges the pending response (answer 200),
        False when it matches nothing (answer 481)."""
        current = self._current
        if (current is None or rack.method != "INVITE" or rack.cseq != self.cseq
                or rack.rseq != current.rseq):
            # A retransmitted PRACK for one already acknowledged is answered 200 again.
            same = rack.method == "INVITE" and rack.cseq == self.cseq
            return same and 0 < rack.rseq <= self.acked
        self.acked = current.rseq
        self._current = None
        if self._queue:
            self._start(self._queue.pop(0), now)
        return True

    def get_timer(self) -> float | None:
        """When the pending response is due again (None if nothing is pending)."""
        return self._current.next_at if self._current is not None else None

    def handle_timer(self, now: float) -> None:
        """Retransmit (T1 doubling) or give up after 64·T1."""
        current = self._current
        if current is None or now < current.next_at:
            return
        if now - current.sent_at >= 64 * self.timers.t1:
            self.failed = True
            self._current = None
            self._queue.clear()
            self._events.append(ReliableFailed(current.rseq))
            return
        self._events.append(Retransmit(current.response))
        current.interval *= 2
        current.next_at = now + current.interval

    def stop(self) -> None:
        """The final response went out: nothing more to retransmit."""
        self._current = None
        self._queue.clear()

    def next_event(self) -> SendReliable | Retransmit | ReliableFailed | None:
        """The next action, oldest first."""
        return self._events.pop(0) if self._events else None


@dataclass
class ReliableReceiver:
    """Decides which received 18x need a PRACK (module docs)."""

    last_rseq: int | None = None

    def needs_prack(self, response: SipResponse) -> RAck | None:
        """The RAck to send for ``response``, or None (unreliable, retransmitted, out of order)."""
        if not 100 < response.status < 200:
            return None
        if not wants_100rel(response.headers.get_all("Require")):
            return None
        rseq = parse_rseq(response.headers.get("RSeq"))
        if rseq is None:
            return None
        if self.last_rseq is not None and rseq != self.last_rseq + 1:
            return None  # a retransmission, or one ahead of a lost one (section 4)
        self.last_rseq = rseq
        return RAck(rseq, response.cseq.number, response.cseq.method)
