"""The call-taker queue engine (ACD), sans-I/O.

Theory of operation
-------------------
The engine owns three kinds of object: queues, agents and calls.  The B2BUA
drives it with what happened (``call_arrived``, ``agent_answered``,
``call_abandoned``, ``agent_login`` ...), always passing ``now``; the engine
never reads a clock.  What the B2BUA must do, and what consoles and storage
want to know, is queued as frozen dataclasses (:mod:`telephony.acd.events`)
and drained with :meth:`AcdEngine.next_event`.  :meth:`AcdEngine.get_timer`
gives the earliest deadline; the adapter calls :meth:`AcdEngine.handle_timer`
when it passes.

A waiting call is kept in its queue's list sorted by (priority descending,
original arrival, arrival sequence), so the head is always the next call to
offer.  Because every call in a queue can be taken by the same agents, only
heads matter when looking for work: after any change the engine offers the
best head among the affected queues to a ready agent, and repeats until no
head can be placed.

A call is QUEUED, RINGING (offered to one agent, or to all for ``ring_all``),
CONNECTED or ended.  Agents follow the table in :data:`_AGENT_MOVES`; a move
not in the table is a bug in the engine and raises.  Timers are named after
what they guard (``ring``, ``overflow``, ``wrap_up``) and live in one heap
with lazy deletion: an entry counts only while its object still holds the
same deadline.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from telephony.acd.events import (
    Abandoned,
    AcdAction,
    AcdSettings,
    AgentSettings,
    AgentState,
    AgentStateChanged,
    CallbackEntry,
    CallFinished,
    CallOutcome,
    CallQueued,
    CallRecord,
    Connect,
    FullAction,
    HangupAgentLeg,
    Overflowed,
    PreemptionCandidate,
    PreemptionWanted,
    PreemptPolicy,
    QueueSettings,
    QueueStats,
    RejectCall,
    RingAgent,
    StopReason,
    StopRinging,
    Strategy,
    TimelineEntry,
    TimelineKind,
)
from telephony.acd.ready import ReadySet

__all__ = [
    "AcdEngine",
    "AcdError",
    "AcdStateError",
    "AgentStatus",
    "TimerKind",
    "UnknownAgent",
    "UnknownCall",
    "UnknownQueue",
]


class AcdError(Exception):
    """Base of the ACD's errors; ``status`` is what the B2BUA answers a caller with."""

    status = 500


class UnknownCall(AcdError):
    """No such call, live or recently ended (a bug in the caller)."""


class UnknownAgent(AcdError):
    """No such agent in the configuration."""

    status = 404


class UnknownQueue(AcdError):
    """No such queue in the configuration (routing and queues disagree)."""


class AcdStateError(AcdError):
    """The request makes no sense in the current state (e.g. duplicate call id)."""


class TimerKind(enum.Enum):
    """The engine's timers."""

    RING = "ring"  # offer to agent(s) expires
    OVERFLOW = "overflow"  # max_wait in the current queue reached
    WRAP_UP = "wrap_up"  # agent's after-call work ends


class _CallState(enum.Enum):
    NEW = "new"  # not yet in any queue
    QUEUED = "queued"
    RINGING = "ringing"
    CONNECTED = "connected"
    ENDED = "ended"


_S = AgentState
# Agent state table: allowed moves.  Everything the engine does goes through it.
_AGENT_MOVES: dict[AgentState, frozenset[AgentState]] = {
    _S.LOGGED_OUT: frozenset({_S.READY, _S.NOT_READY}),
    _S.READY: frozenset({_S.NOT_READY, _S.RINGING, _S.LOGGED_OUT}),
    _S.NOT_READY: frozenset({_S.READY, _S.LOGGED_OUT}),
    _S.RINGING: frozenset({_S.READY, _S.NOT_READY, _S.BUSY, _S.LOGGED_OUT}),
    _S.BUSY: frozenset({_S.WRAP_UP, _S.READY, _S.NOT_READY, _S.LOGGED_OUT}),
    _S.WRAP_UP: frozenset({_S.READY, _S.NOT_READY, _S.LOGGED_OUT}),
}


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of one agent."""

    agent_id: str
    state: AgentState
    since: float
    idle_since: float | None
    call_id: str | None
    queues: tuple[str, ...]


_SortKey = tuple[int, float, int, str]


@dataclass(slots=True)
class _Call:
    call_id: str
    caller: str
    hotline: str
    priority: int
    arrived: float
    seq: int
    queue: str = ""
    state: _CallState = _CallState.NEW
    overflow_at: float | None = None
    ring_until: float | None = None
    overflow_timer: int = -1  # sequence number of the live heap entry
    ring_timer: int = -1
    ringing: set[str] = field(default_factory=set)
    declined: set[str] = field(default_factory=set)
    visited: list[str] = field(default_factory=list)
    agent_id: str = ""
    answered: float | None = None
    preempt_reported: bool = False
    head: bool = False  # re-queued after a pre-emption: ahead of its priority's arrivals
    timeline: list[TimelineEntry] = field(default_factory=list)

    @property
    def key(self) -> _SortKey:
        return (-self.priority, float("-inf") if self.head else self.arrived, self.seq,
                self.call_id)


@dataclass(slots=True)
class _Agent:
    settings: AgentSettings
    state: AgentState = AgentState.LOGGED_OUT
    since: float = 0.0
    idle_since: float | None = None
    call_id: str | None = None
    queues: dict[str, int] = field(default_factory=dict)  # logged-in queue -> penalty
    wrap_until: float | None = None
    wrap_timer: int = -1
    after_call: AgentState | None = None  # NOT_READY or LOGGED_OUT asked for while busy


@dataclass(slots=True)
class _Queue:
    settings: QueueSettings
    waiting: list[_SortKey] = field(default_factory=list)
    members: set[str] = field(default_factory=set)
    ready: ReadySet = field(default_factory=ReadySet)  # members in READY, kept by _move
    answered: int = 0
    abandoned: int = 0
    overflowed: int = 0
    busy: int = 0
    answer_time_total: float = 0.0


class AcdEngine:
    """Queues, agents and calls; see the module docstring."""

    def __init__(self, settings: AcdSettings) -> None:
        """Build the engine from validated settings; all agents start logged out."""
        self._settings = settings
        self._queues = {q.name: _Queue(q) for q in settings.queues}
        self._agents = {a.agent_id: _Agent(a) for a in settings.agents}
        self._calls: dict[str, _Call] = {}
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()
        self._callbacks: dict[str, CallbackEntry] = {}
        self._events: deque[AcdAction] = deque()
        self._timers: list[tuple[float, int, TimerKind, str]] = []
        self._seq = itertools.count()

    # --- outputs ---------------------------------------------------------

    def next_event(self) -> AcdAction | None:
        """Pop the oldest pending action/event, or None."""
        return self._events.popleft() if self._events else None

    def events(self) -> Iterator[AcdAction]:
        """Drain pending actions/events in order."""
        while self._events:
            yield self._events.popleft()

    def get_timer(self) -> float | None:
        """The earliest live deadline, or None when nothing is timed."""
        while self._timers and not self._timer_live(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        """Fire every live timer whose deadline is at or before ``now``."""
        while self._timers and self._timers[0][0] <= now:
            entry = heapq.heappop(self._timers)
            if not self._timer_live(entry):
                continue
            _, _, kind, key = entry
            if kind is TimerKind.RING:
                self._ring_expired(self._calls[key], now)
            elif kind is TimerKind.OVERFLOW:
                self._overflow_due(self._calls[key], now)
            else:
                self._wrap_up_done(self._agents[key], now)

    def pending_timers(self) -> list[tuple[float, TimerKind, str]]:
        """Live timers as (deadline, kind, call or agent id), soonest first."""
        live = sorted(entry for entry in self._timers if self._timer_live(entry))
        return [(w, k, key) for w, _, k, key in live]

    # --- calls -----------------------------------------------------------

    def call_arrived(
        self, call_id: str, caller: str, hotline: str, queue: str, priority: int, now: float
    ) -> None:
        """A caller reached a hotline routed to ``queue``: queue and offer the call."""
        if call_id in self._calls or call_id in self._recent_set:
            raise AcdStateError(f"call {call_id} already known")
        if queue not in self._queues:
            raise UnknownQueue(f"queue {queue!r} (call {call_id})")
        call = _Call(call_id, caller, hotline, priority, now, next(self._seq))
        self._calls[call_id] = call
        self._note(call, now, TimelineKind.OFFERED, queue)
        self._enter_queue(call, queue, now)

    def call_abandoned(self, call_id: str, now: float, cause: str = "caller_hung_up") -> None:
        """The caller hung up; unanswered calls land on the call-back list."""
        call = self._live_call(call_id)
        if call is None:
            return  # already finished: the BYE crossed our own release
        if call.state is _CallState.CONNECTED:
            self.call_ended(call_id, now, cause)
            return
        queue = self._queues[call.queue]
        freed = self._stop_all_ringing(call, now, StopReason.CALLER_HUNG_UP, AgentState.READY)
        self._unwait(call)
        entry = CallbackEntry(
            call_id, call.caller, call.hotline, call.queue, call.priority,
            call.arrived, now, now - call.arrived,
        )
        self._callbacks[call_id] = entry
        queue.abandoned += 1
        self._note(call, now, TimelineKind.ABANDONED, call.queue, cause=cause)
        self._events.append(Abandoned(entry))
        self._finish(call, CallOutcome.ABANDONED, now, cause)
        self._dispatch(self._queues_of(freed), now)

    def call_ended(self, call_id: str, now: float, cause: str = "normal_clearing") -> None:
        """A connected call was released by either side (or force-released)."""
        call = self._live_call(call_id)
        if call is None:
            return
        if call.state is not _CallState.CONNECTED:
            self.call_abandoned(call_id, now, cause)
            return
        agent = self._agents[call.agent_id]
        agent.call_id = None
        agent.idle_since = now
        self._note(call, now, TimelineKind.RELEASED, call.queue, call.agent_id, cause)
        self._finish(call, CallOutcome.ANSWERED, now, cause)
        self._after_call(agent, now, self._queues[call.queue].settings.wrap_up)

    def agent_answered(self, call_id: str, agent_id: str, now: float) -> None:
        """The agent's softphone answered the offer: connect, or hang up a stale answer."""
        agent = self._agent(agent_id)
        call = self._live_call(call_id)
        if call is None:
            self._events.append(HangupAgentLeg(call_id, agent_id, "call already ended"))
            return
        if call.state is not _CallState.RINGING or agent_id not in call.ringing:
            self._events.append(HangupAgentLeg(call_id, agent_id, "call not offered to agent"))
            return
        call.ringing.discard(agent_id)
        freed = self._stop_all_ringing(call, now, StopReason.ANSWERED_ELSEWHERE, AgentState.READY)
        queue = self._queues[call.queue]
        call.state = _CallState.CONNECTED
        call.agent_id = agent_id
        call.answered = now
        call.ring_until = call.overflow_at = None
        agent.call_id = call_id
        self._move(agent, AgentState.BUSY, now, f"answered {call_id}")
        queue.answered += 1
        queue.answer_time_total += now - call.arrived
        self._note(call, now, TimelineKind.ANSWERED, call.queue, agent_id)
        self._events.append(Connect(call_id, agent_id, call.queue, now - call.arrived))
        self._dispatch(self._queues_of(freed), now)

    def preempt(self, call_id: str, victim_id: str, now: float, requeue: bool) -> str:
        """Take ``victim_id``'s call taker for the waiting urgent ``call_id``.

        The victim goes back to the head of its queue (``requeue``) or ends with cause
        ``preempted``; its call taker skips wrap-up and is offered the best waiting call
        (the urgent one).  Returns the call taker's id; AcdStateError if either call is
        not (any more) in a state where this makes sense.
        """
        urgent = self._live_call(call_id)
        victim = self._live_call(victim_id)
        if urgent is None or urgent.state is not _CallState.QUEUED:
            raise AcdStateError(f"call {call_id} is not waiting")
        if victim is None or victim.state is not _CallState.CONNECTED:
            raise AcdStateError(f"call {victim_id} is not connected")
        if victim.priority >= urgent.priority:
            raise AcdStateError(f"call {victim_id} is not of lower priority than {call_id}")
        agent = self._agents[victim.agent_id]
        agent_id = agent.settings.agent_id
        agent.call_id = None
        agent.idle_since = now
        self._note(victim, now, TimelineKind.PREEMPTED, victim.queue, agent_id,
                   f"for {call_id}")
        if requeue:
            self._back_to_head(victim, now)
        else:
            self._finish(victim, CallOutcome.ANSWERED, now, "preempted")
        wanted, agent.after_call = agent.after_call, None
        self._withdraw(agent, now, wanted or AgentState.READY, "preempted")
        self._dispatch([urgent.queue, victim.queue] if requeue else [urgent.queue], now)
        return agent_id

    def requeue(self, call_id: str, now: float, reason: str) -> str:
        """Put a connected call back at the head of its queue: its call taker's phone
        left it without ending it for the caller (hung up after a failed transfer).  The
        call taker goes to wrap-up as after any call.  Returns the call taker's id;
        AcdStateError if the call is not connected."""
        call = self._live_call(call_id)
        if call is None or call.state is not _CallState.CONNECTED:
            raise AcdStateError(f"call {call_id} is not connected")
        agent = self._agents[call.agent_id]
        agent_id = agent.settings.agent_id
        agent.call_id = None
        agent.idle_since = now
        self._note(call, now, TimelineKind.REQUEUED, call.queue, agent_id, reason)
        self._back_to_head(call, now)
        self._after_call(agent, now, self._queues[call.queue].settings.wrap_up)
        self._dispatch([call.queue], now)
        return agent_id

    def _back_to_head(self, call: _Call, now: float) -> None:
        """A connected call waits again, at the head of its queue (pre-empted or
        re-queued): it is offered before every call that was already waiting."""
        call.agent_id = ""
        call.head = True
        call.state = _CallState.QUEUED
        bisect.insort(self._queues[call.queue].waiting, call.key)
        self._note(call, now, TimelineKind.QUEUED, call.queue)
        self._events.append(CallQueued(call.call_id, call.queue, 1))

    def queue_settings(self, name: str) -> QueueSettings:
        """The settings of queue ``name`` (UnknownQueue if there is none)."""
        return self._queue(name).settings

    @property
    def preempt_priority(self) -> int:
        """Waiting calls at or above this priority may pre-empt lower ones."""
        return self._settings.preempt_priority

    def agent_rejected(
        self, call_id: str, agent_id: str, now: float, cause: str = "rejected"
    ) -> None:
        """The agent leg failed or was declined (486, 480, 408, 503 ...)."""
        agent = self._agent(agent_id)
        call = self._live_call(call_id)
        if call is None or call.state is not _CallState.RINGING or agent_id not in call.ringing:
            return  # stale: we already stopped ringing that agent
        policy = self._queues[call.queue].settings.no_answer_not_ready
        call.ringing.discard(agent_id)
        call.declined.add(agent_id)
        self._note(call, now, TimelineKind.REJECTED, call.queue, agent_id, cause)
        self._release_agent(agent, now, AgentState.NOT_READY if policy else AgentState.READY, cause)
        if not call.ringing:
            call.ring_until = None
            self._back_to_queue(call, now)
        self._dispatch(self._queues_of([agent]), now)

    # --- agents ----------------------------------------------------------

    def agent_login(
        self, agent_id: str, now: float, queues: Iterable[str] | None = None, ready: bool = True
    ) -> None:
        """Log an agent in to all configured queues, or the named subset."""
        agent = self._agent(agent_id)
        if agent.state is not AgentState.LOGGED_OUT:
            raise AcdStateError(f"agent {agent_id} already logged in")
        allowed = {m.queue: m.penalty for m in agent.settings.queues}
        wanted = list(allowed) if queues is None else list(queues)
        for name in wanted:
            if name not in allowed:
                raise AcdStateError(f"agent {agent_id} is not a member of queue {name!r}")
        agent.queues = {name: allowed[name] for name in wanted}
        for name in agent.queues:
            self._queues[name].members.add(agent_id)
        if agent.idle_since is None:
            agent.idle_since = now
        self._move(agent, AgentState.READY if ready else AgentState.NOT_READY, now, "login")
        self._dispatch(agent.queues, now)

    def agent_logout(self, agent_id: str, now: float, reason: str = "logout") -> None:
        """Log an agent out; a busy agent leaves when the call ends."""
        agent = self._agent(agent_id)
        if agent.state is AgentState.LOGGED_OUT:
            return
        if agent.state is AgentState.BUSY:
            agent.after_call = AgentState.LOGGED_OUT
            return
        self._withdraw(agent, now, AgentState.LOGGED_OUT, reason)

    def agent_state(
        self, agent_id: str, state: AgentState, now: float, reason: str = "api"
    ) -> None:
        """Set an agent READY or NOT_READY (console button or feature code)."""
        if state not in (AgentState.READY, AgentState.NOT_READY):
            raise AcdStateError(f"agents can only ask for ready/not_ready, not {state.value}")
        agent = self._agent(agent_id)
        if agent.state is AgentState.LOGGED_OUT:
            raise AcdStateError(f"agent {agent_id} is logged out")
        if agent.state is AgentState.BUSY:
            agent.after_call = None if state is AgentState.READY else state
            return
        if agent.state is state:
            return
        if agent.state is AgentState.RINGING and state is AgentState.READY:
            return
        self._withdraw(agent, now, state, reason)

    # --- queries ---------------------------------------------------------

    def agent_status(self, agent_id: str) -> AgentStatus:
        """A snapshot of one agent."""
        a = self._agent(agent_id)
        return AgentStatus(agent_id, a.state, a.since, a.idle_since, a.call_id, tuple(a.queues))

    def waiting_calls(self, queue: str) -> tuple[str, ...]:
        """Ids of the calls waiting in ``queue``, in the order they will be offered."""
        return tuple(key[3] for key in self._queue(queue).waiting)

    def live_calls(self) -> tuple[str, ...]:
        """Ids of every call still in the ACD (queued, ringing or connected)."""
        return tuple(self._calls)

    def call_record(self, call_id: str) -> CallRecord:
        """The CDR of a live call so far."""
        call = self._calls.get(call_id)
        if call is None:
            raise UnknownCall(call_id)
        return self._record(call, None, None, "")

    def callbacks(self) -> tuple[CallbackEntry, ...]:
        """The call-back list, oldest abandonment first."""
        return tuple(self._callbacks.values())

    def callback_done(self, call_id: str) -> bool:
        """Remove an entry once someone has called back; False if it was not there."""
        return self._callbacks.pop(call_id, None) is not None

    def queue_stats(self, queue: str, now: float) -> QueueStats:
        """A statistics snapshot of ``queue``."""
        q = self._queue(queue)
        ringing = sum(
            1 for c in self._calls.values() if c.queue == queue and c.state is _CallState.RINGING
        )
        waits = [now - self._calls[key[3]].arrived for key in q.waiting]
        agents: dict[AgentState, int] = {}
        for agent_id in q.members:
            state = self._agents[agent_id].state
            agents[state] = agents.get(state, 0) + 1
        average = q.answer_time_total / q.answered if q.answered else None
        return QueueStats(
            queue, len(q.waiting), ringing, max(waits, default=0.0), agents,
            q.answered, q.abandoned, q.overflowed, q.busy, average,
        )

    # --- internals: queues and offers -----------------------------------

    def _enter_queue(self, call: _Call, name: str, now: float) -> None:
        queue = self._queues[name]
        qs = queue.settings
        if qs.max_length is not None and len(queue.waiting) >= qs.max_length:
            target = qs.overflow_queue
            if qs.on_full is FullAction.OVERFLOW and target and target not in call.visited + [name]:
                self._overflow(call, name, target, "full", now)
            else:
                self._busy(call, name, now)
            return
        call.queue = name
        call.visited.append(name)
        call.state = _CallState.QUEUED
        call.preempt_reported = False
        call.overflow_at = None
        if qs.max_wait is not None and qs.overflow_queue and qs.overflow_queue not in call.visited:
            call.overflow_at = now + qs.max_wait
            call.overflow_timer = self._arm(call.overflow_at, TimerKind.OVERFLOW, call.call_id)
        self._wait(call, now)

    def _wait(self, call: _Call, now: float) -> None:
        """Put a call (new or back from ringing) in line, then look for an agent."""
        queue = self._queues[call.queue]
        call.state = _CallState.QUEUED
        bisect.insort(queue.waiting, call.key)
        position = bisect.bisect_left(queue.waiting, call.key) + 1
        self._note(call, now, TimelineKind.QUEUED, call.queue)
        self._events.append(CallQueued(call.call_id, call.queue, position))
        self._dispatch([call.queue], now)
        if call.state is _CallState.QUEUED:
            self._check_preemption(call)

    def _back_to_queue(self, call: _Call, now: float) -> None:
        if call.overflow_at is not None and now >= call.overflow_at:
            target = self._queues[call.queue].settings.overflow_queue
            assert target is not None
            self._overflow(call, call.queue, target, "max_wait", now)
        else:
            self._wait(call, now)

    def _unwait(self, call: _Call) -> None:
        if call.state is not _CallState.QUEUED:
            return
        waiting = self._queues[call.queue].waiting
        i = bisect.bisect_left(waiting, call.key)
        if i < len(waiting) and waiting[i] == call.key:
            del waiting[i]

    def _overflow(self, call: _Call, source: str, target: str, reason: str, now: float) -> None:
        self._unwait(call)
        self._queues[source].overflowed += 1
        if source not in call.visited:
            call.visited.append(source)
        self._note(call, now, TimelineKind.OVERFLOWED, target, cause=reason)
        self._events.append(Overflowed(call.call_id, source, target, reason))
        self._enter_queue(call, target, now)

    def _overflow_due(self, call: _Call, now: float) -> None:
        if call.state is _CallState.QUEUED:
            self._back_to_queue(call, now)
        # A ringing call keeps ringing; _back_to_queue overflows it if the offer fails.

    def _busy(self, call: _Call, name: str, now: float) -> None:
        self._unwait(call)
        call.queue = name
        self._queues[name].busy += 1
        self._note(call, now, TimelineKind.BUSY, name, cause="queue_full")
        self._events.append(RejectCall(call.call_id, name))
        self._finish(call, CallOutcome.BUSY, now, "queue_full")

    def _dispatch(self, names: Iterable[str], now: float) -> None:
        """Offer the best waiting heads among ``names`` until nobody can take one."""
        queues = [self._queues[n] for n in set(names)]
        while True:
            heads = sorted((q.waiting[0], q.settings.name) for q in queues if q.waiting)
            for key, name in heads:
                call = self._calls[key[3]]
                agents = self._pick_agents(self._queues[name], call)
                if agents:
                    self._offer(call, agents, now)
                    break
            else:
                return

    def _pick_agents(self, queue: _Queue, call: _Call) -> list[_Agent]:
        """Who to ring: ranked by (declined this call, penalty, idle since, id), the best
        one (longest idle) or every agent sharing the best's first two (ring all)."""
        if queue.settings.strategy is Strategy.LONGEST_IDLE:
            best = queue.ready.best(call.declined)
            return [] if best is None else [self._agents[best]]
        return [self._agents[a] for a in queue.ready.best_group(call.declined)]

    def _offer(self, call: _Call, agents: list[_Agent], now: float) -> None:
        self._unwait(call)
        qs = self._queues[call.queue].settings
        call.state = _CallState.RINGING
        call.ring_until = now + qs.ring_timeout
        call.ring_timer = self._arm(call.ring_until, TimerKind.RING, call.call_id)
        for agent in agents:
            agent_id = agent.settings.agent_id
            call.ringing.add(agent_id)
            agent.call_id = call.call_id
            self._move(agent, AgentState.RINGING, now, f"offered {call.call_id}")
            self._note(call, now, TimelineKind.RINGING, call.queue, agent_id)
            self._events.append(RingAgent(call.call_id, agent_id, call.queue, qs.ring_timeout))

    def _ring_expired(self, call: _Call, now: float) -> None:
        policy = self._queues[call.queue].settings.no_answer_not_ready
        after = AgentState.NOT_READY if policy else AgentState.READY
        for agent_id in sorted(call.ringing):
            self._note(call, now, TimelineKind.NO_ANSWER, call.queue, agent_id)
        call.declined |= call.ringing
        freed = self._stop_all_ringing(call, now, StopReason.NO_ANSWER, after)
        call.ring_until = None
        self._back_to_queue(call, now)
        self._dispatch(self._queues_of(freed), now)

    def _stop_all_ringing(
        self, call: _Call, now: float, reason: StopReason, after: AgentState
    ) -> list[_Agent]:
        """Cancel every outstanding offer of ``call``; returns the agents released."""
        freed = []
        for agent_id in sorted(call.ringing):
            agent = self._agents[agent_id]
            self._events.append(StopRinging(call.call_id, agent_id, reason))
            self._note(call, now, TimelineKind.STOPPED, call.queue, agent_id, reason.value)
            self._release_agent(agent, now, after, reason.value)
            freed.append(agent)
        call.ringing.clear()
        return freed

    def _release_agent(self, agent: _Agent, now: float, state: AgentState, reason: str) -> None:
        agent.call_id = None
        self._move(agent, state, now, reason)

    def _withdraw(self, agent: _Agent, now: float, state: AgentState, reason: str) -> None:
        """Move a non-busy agent to ready/not_ready/logged_out, cancelling any offer."""
        call = self._calls.get(agent.call_id) if agent.call_id else None
        agent_id = agent.settings.agent_id
        if agent.state is AgentState.RINGING and call is not None:
            call.ringing.discard(agent_id)
            self._events.append(StopRinging(call.call_id, agent_id, StopReason.AGENT_LEFT))
            self._note(call, now, TimelineKind.STOPPED, call.queue, agent_id, "agent_left")
        agent.call_id = None
        agent.wrap_until = None
        self._move(agent, state, now, reason)
        if state is AgentState.LOGGED_OUT:
            for name in agent.queues:
                self._queues[name].members.discard(agent.settings.agent_id)
            agent.queues = {}
            agent.after_call = None
        if call is not None and call.state is _CallState.RINGING and not call.ringing:
            call.ring_until = None
            self._back_to_queue(call, now)
        if state is AgentState.READY:
            self._dispatch(agent.queues, now)

    def _after_call(self, agent: _Agent, now: float, wrap: float) -> None:
        wanted, agent.after_call = agent.after_call, None
        if wanted is not None:
            self._withdraw(agent, now, wanted, "after call")
            return
        if wrap <= 0:
            self._withdraw(agent, now, AgentState.READY, "call ended")
            return
        agent.wrap_until = now + wrap
        self._move(agent, AgentState.WRAP_UP, now, "call ended")
        agent.wrap_timer = self._arm(agent.wrap_until, TimerKind.WRAP_UP, agent.settings.agent_id)

    def _wrap_up_done(self, agent: _Agent, now: float) -> None:
        self._withdraw(agent, now, AgentState.READY, "wrap-up over")

    def _check_preemption(self, call: _Call) -> None:
        if call.priority < self._settings.preempt_priority or call.preempt_reported:
            return
        candidates = []
        for agent_id in self._queues[call.queue].members:
            agent = self._agents[agent_id]
            if (agent.state is AgentState.BUSY and agent.call_id is not None
                    and agent.after_call is None):  # one leaving after this call frees nobody
                other = self._calls[agent.call_id]
                policy = self._queues[other.queue].settings.preempt
                if other.priority < call.priority and policy is not PreemptPolicy.NEVER:
                    assert other.answered is not None
                    candidates.append(
                        PreemptionCandidate(other.call_id, agent_id, other.priority, other.answered)
                    )
        if candidates:
            candidates.sort(key=lambda c: (c.priority, c.connected_at, c.agent_id))
            call.preempt_reported = True
            self._events.append(
                PreemptionWanted(call.call_id, call.queue, call.priority, tuple(candidates))
            )

    # --- internals: bookkeeping ------------------------------------------

    def _move(self, agent: _Agent, new: AgentState, now: float, reason: str) -> None:
        old = agent.state
        if old is new:
            return
        if new not in _AGENT_MOVES[old]:
            raise AcdStateError(f"agent {agent.settings.agent_id}: {old.value} -> {new.value}")
        agent.state = new
        agent.since = now
        if AgentState.READY in (old, new):
            agent_id = agent.settings.agent_id
            idle = agent.idle_since if agent.idle_since is not None else now
            for name, penalty in agent.queues.items():
                ready = self._queues[name].ready
                if new is AgentState.READY:
                    ready.add(agent_id, penalty, idle)
                else:
                    ready.discard(agent_id)
        self._events.append(AgentStateChanged(agent.settings.agent_id, old, new, now, reason))

    def _note(
        self, call: _Call, now: float, kind: TimelineKind, queue: str = "", agent: str = "",
        cause: str = "",
    ) -> None:
        call.timeline.append(TimelineEntry(now, kind, queue, agent, cause))

    def _finish(self, call: _Call, outcome: CallOutcome, now: float, cause: str) -> None:
        call.state = _CallState.ENDED
        call.overflow_at = call.ring_until = None
        del self._calls[call.call_id]
        self._recent.append(call.call_id)
        self._recent_set.add(call.call_id)
        while len(self._recent) > self._settings.recent_ended_limit:
            self._recent_set.discard(self._recent.popleft())
        self._events.append(CallFinished(self._record(call, outcome, now, cause)))

    def _record(
        self, call: _Call, outcome: CallOutcome | None, released: float | None, cause: str
    ) -> CallRecord:
        return CallRecord(
            call.call_id, call.caller, call.hotline, call.priority, call.arrived, outcome,
            call.queue, call.agent_id, call.answered, released, cause, tuple(call.timeline),
        )

    def _arm(self, when: float, kind: TimerKind, key: str) -> int:
        seq = next(self._seq)
        heapq.heappush(self._timers, (when, seq, kind, key))
        return seq

    def _timer_live(self, entry: tuple[float, int, TimerKind, str]) -> bool:
        _, seq, kind, key = entry
        if kind is TimerKind.WRAP_UP:
            agent = self._agents[key]
            return (
                agent.state is AgentState.WRAP_UP
                and agent.wrap_until is not None
                and agent.wrap_timer == seq
            )
        call = self._calls.get(key)
        if call is None:
            return False
        if kind is TimerKind.RING:
            return (
                call.state is _CallState.RINGING
                and call.ring_until is not None
                and call.ring_timer == seq
            )
        return (
            call.state in (_CallState.QUEUED, _CallState.RINGING)
            and call.overflow_at is not None
            and call.overflow_timer == seq
        )

    def _live_call(self, call_id: str) -> _Call | None:
        call = self._calls.get(call_id)
        if call is None and call_id not in self._recent_set:
            raise UnknownCall(call_id)
        return call

    def _agent(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise UnknownAgent(agent_id)
        return agent

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            raise UnknownQueue(name)
        return queue

    def _queues_of(self, agents: Iterable[_Agent]) -> set[str]:
        return {name for a in agents for name in a.queues}
