"""Hypothesis stateful test: the ACD's invariants under any order of events."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from telephony.acd import (
    Abandoned,
    AcdEngine,
    AcdSettings,
    AgentMembership,
    AgentSettings,
    AgentState,
    CallFinished,
    CallOutcome,
    Connect,
    FullAction,
    HangupAgentLeg,
    Overflowed,
    QueueSettings,
    RejectCall,
    RingAgent,
    StopRinging,
    Strategy,
)

QUEUES = (
    QueueSettings("hi", ring_timeout=10.0, max_wait=20.0, overflow_queue="back", max_length=4, wrap_up=5.0),
    QueueSettings("back", strategy=Strategy.RING_ALL, ring_timeout=8.0, max_length=3,
                  on_full=FullAction.BUSY, wrap_up=0.0),
    QueueSettings("gov", ring_timeout=12.0, max_wait=30.0, overflow_queue="hi", wrap_up=3.0,
                  no_answer_not_ready=False),
)
MEMBERS = {
    "a0": ("hi",), "a1": ("hi", "back"), "a2": ("back",), "a3": ("back", "gov"), "a4": ("gov", "hi"),
}
AGENTS = tuple(MEMBERS)


class AcdMachine(RuleBasedStateMachine):
    """Drives one engine and checks every event against a small model."""

    def __init__(self) -> None:
        super().__init__()
        self.acd = AcdEngine(AcdSettings(QUEUES, tuple(
            AgentSettings(a, queues=tuple(AgentMembership(q, i % 2) for i, q in enumerate(qs)))
            for a, qs in MEMBERS.items()
        )))
        self.now = 0.0
        self.n = 0
        self.ringing: dict[str, str] = {}  # agent -> call offered
        self.connected: dict[str, str] = {}  # call -> agent
        self.finished: dict[str, CallOutcome] = {}
        self.overflowed: set[str] = set()
        self.priority: dict[str, int] = {}

    # --- model bookkeeping --------------------------------------------------

    def absorb(self) -> None:
        for event in self.acd.events():
            call_id = getattr(event, "call_id", None)
            if isinstance(event, RingAgent):
                assert event.agent_id not in self.ringing, "agent offered two calls at once"
                assert event.agent_id not in self.connected.values(), "busy agent offered a call"
                assert event.call_id not in self.connected
                self.ringing[event.agent_id] = event.call_id
            elif isinstance(event, StopRinging):
                assert self.ringing.pop(event.agent_id) == event.call_id
            elif isinstance(event, Connect):
                assert event.call_id not in self.connected, "call connected to two agents"
                assert self.ringing.pop(event.agent_id) == event.call_id
                assert not any(c == event.call_id for c in self.ringing.values())
                self.connected[event.call_id] = event.agent_id
            elif isinstance(event, Overflowed):
                self.overflowed.add(event.call_id)
            elif isinstance(event, CallFinished):
                record = event.record
                assert record.call_id not in self.finished, "call finished twice"
                assert record.outcome is not None
                if record.outcome is CallOutcome.ANSWERED:
                    assert self.connected.pop(record.call_id) == record.agent_id
                else:
                    assert record.call_id not in self.connected
                self.finished[record.call_id] = record.outcome
            if call_id is not None and not isinstance(event, (CallFinished, HangupAgentLeg)):
                assert call_id not in self.finished, f"{event} after the call finished"
            if isinstance(event, (Abandoned, RejectCall)):
                assert not any(c == event.call_id if isinstance(event, RejectCall)
                               else c == event.entry.call_id for c in self.ringing.values())

    def step(self, dt: float) -> None:
        self.now += dt
        while (deadline := self.acd.get_timer()) is not None and deadline <= self.now:
            self.acd.handle_timer(self.now)
            self.absorb()
        self.absorb()

    # --- rules -------------------------------------------------------------

    @rule(queue=st.sampled_from(["hi", "back", "gov"]), priority=st.sampled_from([10, 20, 30]),
          dt=st.sampled_from([0.0, 0.5, 3.0]))
    def arrive(self, queue: str, priority: int, dt: float) -> None:
        self.step(dt)
        self.n += 1
        call_id = f"c{self.n}"
        self.priority[call_id] = priority
        self.acd.call_arrived(call_id, "1380000", "110", queue, priority, self.now)
        self.absorb()

    @rule(dt=st.sampled_from([1.0, 5.0, 9.0, 25.0]))
    def wait(self, dt: float) -> None:
        self.step(dt)

    @rule(agent=st.sampled_from(AGENTS), ready=st.booleans())
    def login(self, agent: str, ready: bool) -> None:
        if self.acd.agent_status(agent).state is AgentState.LOGGED_OUT:
            self.acd.agent_login(agent, self.now, ready=ready)
            self.absorb()

    @rule(agent=st.sampled_from(AGENTS))
    def logout(self, agent: str) -> None:
        self.acd.agent_logout(agent, self.now)
        self.absorb()

    @rule(agent=st.sampled_from(AGENTS), ready=st.booleans())
    def set_state(self, agent: str, ready: bool) -> None:
        if self.acd.agent_status(agent).state is not AgentState.LOGGED_OUT:
            self.acd.agent_state(agent, AgentState.READY if ready else AgentState.NOT_READY, self.now)
            self.absorb()

    @precondition(lambda self: bool(self.ringing))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(sorted(self.ringing)))
        self.acd.agent_answered(self.ringing[agent], agent, self.now)
        self.absorb()

    @precondition(lambda self: bool(self.ringing))
    @rule(data=st.data())
    def reject(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from(sorted(self.ringing)))
        call_id = self.ringing.pop(agent)  # the leg failed: no StopRinging will come
        self.acd.agent_rejected(call_id, agent, self.now)
        self.absorb()

    @precondition(lambda self: self.n > 0)
    @rule(data=st.data(), agent=st.sampled_from(AGENTS))
    def stray_answer(self, data: st.DataObject, agent: str) -> None:
        """A late or crossed 200 OK: must connect only a real offer, else hang up."""
        call_id = f"c{data.draw(st.integers(1, self.n))}"
        if self.ringing.get(agent) == call_id:
            return
        self.acd.agent_answered(call_id, agent, self.now)
        events = list(self.acd.events())
        assert len(events) == 1 and isinstance(events[0], HangupAgentLeg)
        assert (events[0].call_id, events[0].agent_id) == (call_id, agent)

    @precondition(lambda self: self.n > 0)
    @rule(data=st.data())
    def caller_hangs_up(self, data: st.DataObject) -> None:
        self.acd.call_abandoned(f"c{data.draw(st.integers(1, self.n))}", self.now)
        self.absorb()

    @precondition(lambda self: bool(self.connected))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.acd.call_ended(data.draw(st.sampled_from(sorted(self.connected))), self.now)
        self.absorb()

    # --- invariants --------------------------------------------------------

    @invariant()
    def agents_match_model(self) -> None:
        for agent in AGENTS:
            status = self.acd.agent_status(agent)
            assert (status.state is AgentState.RINGING) == (agent in self.ringing)
            assert (status.state is AgentState.BUSY) == (agent in self.connected.values())

    @invariant()
    def no_timer_for_a_finished_call(self) -> None:
        live = set(self.acd.live_calls())
        for _, _, key in self.acd.pending_timers():
            assert key in live or key in MEMBERS
        timer = self.acd.get_timer()
        assert timer is None or timer > self.now

    @invariant()
    def queues_respect_priority_and_no_ready_agent_idles(self) -> None:
        for q in QUEUES:
            waiting = self.acd.waiting_calls(q.name)
            priorities = [self.priority[c] for c in waiting]
            assert priorities == sorted(priorities, reverse=True)
            for c in waiting:
                assert c not in self.finished and c not in self.connected
            if waiting:
                for agent in AGENTS:
                    status = self.acd.agent_status(agent)
                    assert not (status.state is AgentState.READY and q.name in status.queues)

    @invariant()
    def every_call_is_somewhere_exactly_once(self) -> None:
        live = set(self.acd.live_calls())
        assert live.isdisjoint(self.finished)
        assert live | set(self.finished) == {f"c{i}" for i in range(1, self.n + 1)}
        waiting = [c for q in QUEUES for c in self.acd.waiting_calls(q.name)]
        assert len(waiting) == len(set(waiting))


AcdMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestAcdStateful = AcdMachine.TestCase
