"""What the B2BUA reports to the daemon: call life-cycle events (frozen dataclasses).

ACD events (queued, overflowed, agent state, call finished ...) are passed
through as the engine emits them; these add the SIP side.  Times are wall
clock epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CallAnswered",
    "CallEvent",
    "CallMediaDead",
    "CallMonitor",
    "CallOffered",
    "CallPreempted",
    "CallRefused",
    "CallReleased",
    "CallTransferFailed",
    "CallRequeued",
    "CallTransferred",
    "LiveCall",
    "TrunkStatus",
]


@dataclass(frozen=True, slots=True)
class CallOffered:
    """An INVITE was accepted for queueing: who called which hotline through which trunk."""

    call_id: str
    sip_call_id: str
    caller: str
    called: str
    hotline: str
    queue: str
    priority: int
    trunk: str
    route: str  # hotline | ringdown | fallback
    at: float


@dataclass(frozen=True, slots=True)
class CallRefused:
    """An INVITE was answered with a failure before it reached a queue."""

    sip_call_id: str
    caller: str
    called: str
    trunk: str
    status: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A call taker's softphone answered and the legs are connected."""

    call_id: str
    agent_id: str
    queue: str
    wait: float
    at: float


@dataclass(frozen=True, slots=True)
class CallReleased:
    """A call ended; ``by`` is caller, agent, system or the operator who forced it."""

    call_id: str
    cause: str
    by: str
    at: float


@dataclass(frozen=True, slots=True)
class CallPreempted:
    """A lower-priority call gave up its call taker (or trunk line) to an urgent call.

    ``action`` is ``requeue`` (the caller waits at the head of its queue, hearing why)
    or ``release`` (BYE with an RFC 4411 Reason header); ``why`` says what the
    urgent call was waiting for: ``call_taker`` or ``trunk``.
    """

    call_id: str
    agent_id: str
    urgent_call_id: str
    urgent_hotline: str
    action: str
    why: str
    at: float


@dataclass(frozen=True, slots=True)
class CallMediaDead:
    """No RTP from a leg for ``silent_s`` seconds: the B2BUA released the call (or the
    supervisor's leg)."""

    call_id: str
    leg_id: str
    silent_s: float
    at: float


@dataclass(frozen=True, slots=True)
class CallMonitor:
    """A step of a supervisor's force-in (强插).

    ``step`` is ringing, joined, mode, left or failed; ``actor`` is the supervisor
    who forced in (or changed the mode), ``account`` the SIP account of their phone.
    """

    call_id: str
    leg_id: str
    account: str
    mode: str
    actor: str
    step: str
    detail: str
    at: float


@dataclass(frozen=True, slots=True)
class CallTransferred:
    """A connected call was blind-transferred (REFER) to ``target``."""

    call_id: str
    agent_id: str
    target: str
    at: float
    by: str = ""  # who asked: "agent:<id>" (REFER) or the API user


@dataclass(frozen=True, slots=True)
class CallTransferFailed:
    """A blind transfer's new leg failed: the caller stays with the call taker."""

    call_id: str
    agent_id: str
    target: str
    status: int
    at: float
    by: str = ""
    reason: str = ""
    """Why, in words (``target answered 486``, ``every trunk is at its call limit``)."""


@dataclass(frozen=True, slots=True)
class CallRequeued:
    """A call taker's phone left a call without ending it for the caller (it hung up
    right after a failed transfer): the caller is back at the head of the queue."""

    call_id: str
    agent_id: str
    why: str
    at: float


@dataclass(frozen=True, slots=True)
class TrunkStatus:
    """A trunk's reachability (OPTIONS) or registration changed."""

    trunk: str
    up: bool
    registered: bool
    detail: str
    at: float


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A snapshot of one live call for the API."""

    call_id: str
    sip_call_id: str
    state: str
    caller: str
    called: str
    hotline: str
    queue: str
    priority: int
    trunk: str
    agent_id: str
    offered_at: float
    answered_at: float | None
    ringing: tuple[str, ...]


CallEvent = (CallOffered | CallRefused | CallAnswered | CallReleased | CallTransferred
             | CallTransferFailed | CallRequeued | TrunkStatus | CallMediaDead | CallMonitor)
