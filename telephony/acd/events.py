"""Vocabulary of the ACD core: settings, states, actions, events and records.

Kept apart from :mod:`telephony.acd.engine` so the B2BUA, the daemon and the
persistence layer can import what the engine emits without the engine.
Everything here is a frozen dataclass or an enum; times are seconds on the
caller's monotonic ``now`` scale.

Priorities: a larger integer is more urgent (110/119/120 = 30, 122 = 20,
12345 = 10 by default in :mod:`telephony.routing`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "AcdAction",
    "AcdSettings",
    "AgentMembership",
    "AgentSettings",
    "AgentState",
    "AgentStateChanged",
    "Abandoned",
    "CallFinished",
    "CallOutcome",
    "CallQueued",
    "CallRecord",
    "CallbackEntry",
    "Connect",
    "FullAction",
    "Language",
    "PreemptPolicy",
    "HangupAgentLeg",
    "Overflowed",
    "PreemptionCandidate",
    "PreemptionWanted",
    "QueueSettings",
    "QueueStats",
    "RejectCall",
    "RingAgent",
    "StopRinging",
    "StopReason",
    "Strategy",
    "TimelineEntry",
    "TimelineKind",
]


class Strategy(enum.Enum):
    """How a queue picks the agent(s) to offer a call to."""

    LONGEST_IDLE = "longest_idle"
    RING_ALL = "ring_all"


class FullAction(enum.Enum):
    """What happens to a call that finds its queue at ``max_length``."""

    OVERFLOW = "overflow"
    BUSY = "busy"


class AgentState(enum.Enum):
    """An agent's state; only READY agents are offered calls."""

    LOGGED_OUT = "logged_out"
    READY = "ready"
    NOT_READY = "not_ready"
    RINGING = "ringing"
    BUSY = "busy"
    WRAP_UP = "wrap_up"


class CallOutcome(enum.Enum):
    """How a call left the ACD (overflow is a step, not an outcome)."""

    ANSWERED = "answered"
    ABANDONED = "abandoned"
    BUSY = "busy"


class StopReason(enum.Enum):
    """Why ringing at an agent was stopped."""

    NO_ANSWER = "no_answer"
    ANSWERED_ELSEWHERE = "answered_elsewhere"
    CALLER_HUNG_UP = "caller_hung_up"
    AGENT_LEFT = "agent_left"
    OVERFLOW = "overflow"


class TimelineKind(enum.Enum):
    """The steps recorded in a call's timeline (its CDR)."""

    OFFERED = "offered"
    QUEUED = "queued"
    RINGING = "ringing"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    STOPPED = "stopped"
    ANSWERED = "answered"
    OVERFLOWED = "overflowed"
    ABANDONED = "abandoned"
    BUSY = "busy"
    RELEASED = "released"
    PREEMPTED = "preempted"  # its call taker was taken for a more urgent call
    REQUEUED = "requeued"  # its call taker's phone left it (after a failed transfer)


class Language(enum.Enum):
    """The languages of the shipped prompts."""

    ZH = "zh"
    EN = "en"


class PreemptPolicy(enum.Enum):
    """What becomes of a queue's connected call when an urgent call takes its call taker."""

    REQUEUE = "requeue"  # back at the head of its queue, hearing why
    RELEASE = "release"  # BYE with a Reason header
    NEVER = "never"  # this queue's calls are never pre-empted


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """One call-taker queue (``[[queues]]`` in dispatchd.toml)."""

    name: str
    strategy: Strategy = Strategy.LONGEST_IDLE
    ring_timeout: float = 15.0
    max_wait: float | None = None  # seconds in this queue before overflow
    overflow_queue: str | None = None
    max_length: int | None = None
    on_full: FullAction = FullAction.OVERFLOW
    wrap_up: float = 10.0
    no_answer_not_ready: bool = True  # a dead softphone must not eat calls
    announce: bool = True  # position / expected wait announcements, then music on hold
    announce_every: float = 30.0  # seconds between announcements (0: on entry only)
    language: Language = Language.ZH  # unless the hotline or trunk says otherwise
    preempt: PreemptPolicy = PreemptPolicy.REQUEUE  # what happens to ITS calls when pre-empted

    def __post_init__(self) -> None:
        if self.ring_timeout <= 0 or self.wrap_up < 0:
            raise ValueError(f"queue {self.name}: ring_timeout must be > 0, wrap_up >= 0")
        if self.max_wait is not None and self.max_wait <= 0:
            raise ValueError(f"queue {self.name}: max_wait must be > 0")
        if self.max_length is not None and self.max_length < 0:
            raise ValueError(f"queue {self.name}: max_length must be >= 0")


@dataclass(frozen=True, slots=True)
class AgentMembership:
    """An agent's place in one queue; lower penalty is tried first."""

    queue: str
    penalty: int = 0


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """A call taker (``[[agents]]``) and the queues they may log in to."""

    agent_id: str
    name: str = ""
    queues: tuple[AgentMembership, ...] = ()


@dataclass(frozen=True, slots=True)
class AcdSettings:
    """Everything the engine needs, validated once (see :mod:`telephony.acd.config`)."""

    queues: tuple[QueueSettings, ...] = ()
    agents: tuple[AgentSettings, ...] = ()
    preempt_priority: int = 30  # waiting calls at or above this may pre-empt
    recent_ended_limit: int = 10_000  # ended call ids remembered for late answers


# --- actions for the B2BUA -------------------------------------------------


@dataclass(frozen=True, slots=True)
class RingAgent:
    """Offer the call to the agent: INVITE their softphone (caller hears ringback)."""

    call_id: str
    agent_id: str
    queue: str
    timeout: float


@dataclass(frozen=True, slots=True)
class StopRinging:
    """Cancel the offer to this agent (CANCEL the agent leg); the call lives on."""

    call_id: str
    agent_id: str
    reason: StopReason


@dataclass(frozen=True, slots=True)
class Connect:
    """The agent answered: bridge caller leg and agent leg, start recording."""

    call_id: str
    agent_id: str
    queue: str
    wait: float  # seconds from arrival to answer


@dataclass(frozen=True, slots=True)
class HangupAgentLeg:
    """An agent answered a call that is gone or was given to someone else: BYE them."""

    call_id: str
    agent_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CallQueued:
    """The call waits in ``queue`` at 1-based ``position``: answer caller, play queue prompt."""

    call_id: str
    queue: str
    position: int


@dataclass(frozen=True, slots=True)
class Overflowed:
    """The call moved queues; its original arrival time is kept."""

    call_id: str
    from_queue: str
    to_queue: str
    reason: str  # "max_wait" or "full"


@dataclass(frozen=True, slots=True)
class RejectCall:
    """The queue is full with nowhere to overflow: reject the caller (486 Busy Here)."""

    call_id: str
    queue: str


@dataclass(frozen=True, slots=True)
class CallbackEntry:
    """An abandoned call to call back."""

    call_id: str
    caller: str
    hotline: str
    queue: str
    priority: int
    arrived: float
    abandoned: float
    wait: float


@dataclass(frozen=True, slots=True)
class Abandoned:
    """The caller hung up before an agent answered; the entry is on the call-back list."""

    entry: CallbackEntry


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    """An agent changed state (for consoles, metrics and the audit trail)."""

    agent_id: str
    old: AgentState
    new: AgentState
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class PreemptionCandidate:
    """A connected lower-priority call whose release would free a suitable agent."""

    call_id: str
    agent_id: str
    priority: int
    connected_at: float


@dataclass(frozen=True, slots=True)
class PreemptionWanted:
    """An urgent call waits although lower-priority calls are connected.

    ``candidates`` are ordered lowest priority first, then longest connected.
    """

    call_id: str
    queue: str
    priority: int
    candidates: tuple[PreemptionCandidate, ...]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One step of a call's life."""

    at: float
    kind: TimelineKind
    queue: str = ""
    agent_id: str = ""
    cause: str = ""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call's CDR: who, where, how long, and every step."""

    call_id: str
    caller: str
    hotline: str
    priority: int
    arrived: float
    outcome: CallOutcome | None
    queue: str
    agent_id: str
    answered: float | None
    released: float | None
    cause: str
    timeline: tuple[TimelineEntry, ...]

    @property
    def wait(self) -> float | None:
        """Seconds from arrival to answer, abandon or rejection (None while live)."""
        end = self.answered
        if end is None and self.outcome is not None:
            end = self.released
        return None if end is None else end - self.arrived


@dataclass(frozen=True, slots=True)
class CallFinished:
    """The call left the ACD for good: persist the record."""

    record: CallRecord


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of one queue."""

    queue: str
    waiting: int
    ringing: int
    longest_wait: float
    agents: Mapping[AgentState, int] = field(default_factory=dict)
    answered: int = 0
    abandoned: int = 0
    overflowed: int = 0
    busy: int = 0
    average_answer_time: float | None = None


AcdAction = (
    RingAgent
    | StopRinging
    | Connect
    | HangupAgentLeg
    | CallQueued
    | Overflowed
    | RejectCall
    | Abandoned
    | AgentStateChanged
    | PreemptionWanted
    | CallFinished
)
