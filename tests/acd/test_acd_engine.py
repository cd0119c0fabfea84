"""ACD engine scenarios with a stepped ``now`` and exact timer values."""

from __future__ import annotations

from typing import Any

import pytest

from telephony.acd import (
    Abandoned,
    AcdAction,
    AcdEngine,
    AcdSettings,
    AcdStateError,
    AgentMembership,
    AgentSettings,
    AgentState,
    AgentStateChanged,
    CallFinished,
    CallOutcome,
    CallQueued,
    Connect,
    FullAction,
    HangupAgentLeg,
    Overflowed,
    PreemptionCandidate,
    PreemptionWanted,
    QueueSettings,
    RejectCall,
    RingAgent,
    StopReason,
    StopRinging,
    Strategy,
    TimelineKind,
    UnknownCall,
    UnknownQueue,
)

READY, NOT_READY = AgentState.READY, AgentState.NOT_READY


def engine(*queues: QueueSettings, agents: dict[str, list[str | tuple[str, int]]]) -> AcdEngine:
    """An engine with the given queues and agents (queue name or (name, penalty))."""
    settings = AcdSettings(
        queues=queues,
        agents=tuple(
            AgentSettings(
                agent_id,
                queues=tuple(
                    AgentMembership(*m) if isinstance(m, tuple) else AgentMembership(m) for m in members
                ),
            )
            for agent_id, members in agents.items()
        ),
    )
    return AcdEngine(settings)


def drain(acd: AcdEngine, *kinds: type[Any]) -> list[AcdAction]:
    """Pending events, keeping only ``kinds`` when given (agent state changes are noisy)."""
    events = list(acd.events())
    return [e for e in events if not kinds or isinstance(e, kinds)]


CALL_ACTIONS = (RingAgent, StopRinging, Connect, HangupAgentLeg, CallQueued, Overflowed,
                RejectCall, Abandoned, PreemptionWanted)


def login(acd: AcdEngine, now: float, *agent_ids: str) -> None:
    for agent_id in agent_ids:
        acd.agent_login(agent_id, now)
    drain(acd)


def test_priority_first_then_first_come_first_served() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"]})
    acd.call_arrived("gov", "1001", "12345", "q", 10, now=0.0)
    acd.call_arrived("traffic", "1002", "122", "q", 20, now=1.0)
    acd.call_arrived("police", "1003", "110", "q", 30, now=2.0)
    acd.call_arrived("fire", "1004", "119", "q", 30, now=3.0)
    assert drain(acd, CallQueued) == [
        CallQueued("gov", "q", 1), CallQueued("traffic", "q", 1),
        CallQueued("police", "q", 1), CallQueued("fire", "q", 2),
    ]
    assert acd.waiting_calls("q") == ("police", "fire", "traffic", "gov")
    acd.agent_login("a", now=10.0)
    assert drain(acd, RingAgent) == [RingAgent("police", "a", "q", 15.0)]
    assert acd.get_timer() == 25.0


def test_longest_idle_agent_is_chosen() -> None:
    acd = engine(QueueSettings("q", wrap_up=0.0), agents={"a": ["q"], "b": ["q"], "c": ["q"]})
    for t, agent_id in enumerate("abc"):
        acd.agent_login(agent_id, now=float(t))
    acd.call_arrived("c1", "1", "110", "q", 30, now=5.0)
    assert drain(acd, RingAgent) == [RingAgent("c1", "a", "q", 15.0)]
    acd.agent_answered("c1", "a", now=6.0)
    acd.call_arrived("c2", "2", "110", "q", 30, now=7.0)
    assert drain(acd, RingAgent) == [RingAgent("c2", "b", "q", 15.0)]
    acd.agent_answered("c2", "b", now=8.0)
    acd.call_ended("c2", now=10.0)  # b idle since 10
    acd.call_ended("c1", now=20.0)  # a idle since 20, c since login at 2
    drain(acd)
    for n, expected in enumerate(["c", "b", "a"]):
        acd.call_arrived(f"d{n}", "3", "110", "q", 30, now=30.0 + n)
        assert drain(acd, RingAgent) == [RingAgent(f"d{n}", expected, "q", 15.0)]
        acd.agent_answered(f"d{n}", expected, now=30.5 + n)


def test_penalty_tiers() -> None:
    acd = engine(QueueSettings("q"), agents={"a": [("q", 1)], "b": [("q", 0)]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("c1", "1", "110", "q", 30, now=1.0)
    assert drain(acd, RingAgent) == [RingAgent("c1", "b", "q", 15.0)]
    acd.call_arrived("c2", "1", "110", "q", 30, now=2.0)
    assert drain(acd, RingAgent) == [RingAgent("c2", "a", "q", 15.0)]


def test_ring_timeout_moves_on_and_sets_agent_not_ready() -> None:
    acd = engine(QueueSettings("q", ring_timeout=15.0), agents={"a": ["q"], "b": ["q"]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("c1", "1", "110", "q", 30, now=10.0)
    assert drain(acd, RingAgent) == [RingAgent("c1", "a", "q", 15.0)]
    assert acd.get_timer() == 25.0
    acd.handle_timer(24.999)
    assert drain(acd) == []
    acd.handle_timer(25.0)
    events = drain(acd)
    assert [e for e in events if isinstance(e, (StopRinging, RingAgent))] == [
        StopRinging("c1", "a", StopReason.NO_ANSWER),
        RingAgent("c1", "b", "q", 15.0),
    ]
    assert AgentStateChanged("a", AgentState.RINGING, NOT_READY, 25.0, "no_answer") in events
    assert acd.agent_status("a").state is NOT_READY
    assert acd.get_timer() == 40.0
    acd.handle_timer(40.0)
    assert drain(acd, StopRinging, RingAgent, CallQueued) == [
        StopRinging("c1", "b", StopReason.NO_ANSWER), CallQueued("c1", "q", 1),
    ]
    assert acd.get_timer() is None  # nobody ready: the call just waits


def test_ring_timeout_without_not_ready_prefers_other_agents() -> None:
    acd = engine(QueueSettings("q", no_answer_not_ready=False), agents={"a": ["q"], "b": ["q"]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("c1", "1", "110", "q", 30, now=1.0)
    acd.handle_timer(16.0)
    assert drain(acd, RingAgent) == [RingAgent("c1", "a", "q", 15.0), RingAgent("c1", "b", "q", 15.0)]
    assert acd.agent_status("a").state is READY
    acd.handle_timer(31.0)
    assert drain(acd, RingAgent) == [RingAgent("c1", "a", "q", 15.0)]  # both declined: start over


def test_agent_rejected_tries_next() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"], "b": ["q"]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("c1", "1", "110", "q", 30, now=1.0)
    drain(acd)
    acd.agent_rejected("c1", "a", now=2.0, cause="480")
    assert drain(acd, RingAgent, StopRinging) == [RingAgent("c1", "b", "q", 15.0)]
    assert acd.agent_status("a").state is NOT_READY
    assert acd.get_timer() == 17.0
    acd.agent_rejected("c1", "a", now=3.0)  # stale: ignored
    assert drain(acd) == []


def test_ring_all_first_answer_wins() -> None:
    acd = engine(QueueSettings("q", strategy=Strategy.RING_ALL), agents={"a": ["q"], "b": ["q"], "c": ["q"]})
    login(acd, 0.0, "a", "b", "c")
    acd.call_arrived("c1", "1", "119", "q", 30, now=1.0)
    assert drain(acd, RingAgent) == [RingAgent("c1", x, "q", 15.0) for x in "abc"]
    acd.agent_answered("c1", "b", now=3.0)
    assert drain(acd, *CALL_ACTIONS) == [
        StopRinging("c1", "a", StopReason.ANSWERED_ELSEWHERE),
        StopRinging("c1", "c", StopReason.ANSWERED_ELSEWHERE),
        Connect("c1", "b", "q", 2.0),
    ]
    assert [acd.agent_status(x).state for x in "abc"] == [READY, AgentState.BUSY, READY]
    acd.agent_answered("c1", "a", now=3.01)  # 200 OK crossed our CANCEL
    assert drain(acd) == [HangupAgentLeg("c1", "a", "call not offered to agent")]
    assert acd.get_timer() is None


def test_overflow_after_max_wait_keeps_arrival_time() -> None:
    acd = engine(
        QueueSettings("police", max_wait=30.0, overflow_queue="backup"),
        QueueSettings("backup"),
        agents={"a": ["backup"]},
    )
    acd.call_arrived("early", "1", "110", "police", 30, now=0.0)
    acd.call_arrived("direct", "2", "110", "backup", 30, now=10.0)
    assert acd.get_timer() == 30.0
    drain(acd)
    acd.handle_timer(30.0)
    assert drain(acd, *CALL_ACTIONS) == [
        Overflowed("early", "police", "backup", "max_wait"), CallQueued("early", "backup", 1),
    ]
    assert acd.waiting_calls("backup") == ("early", "direct")
    assert acd.get_timer() is None  # backup has no max_wait
    acd.agent_login("a", now=40.0)
    acd.agent_answered("early", "a", now=41.0)
    assert drain(acd, Connect) == [Connect("early", "a", "backup", 41.0)]
    assert acd.call_record("early").arrived == 0.0


def test_overflow_due_while_ringing_waits_for_the_offer() -> None:
    acd = engine(
        QueueSettings("q", ring_timeout=20.0, max_wait=30.0, overflow_queue="o"),
        QueueSettings("o"),
        agents={"a": ["q"]},
    )
    acd.call_arrived("c1", "1", "110", "q", 30, now=0.0)
    acd.agent_login("a", now=25.0)
    drain(acd)
    assert acd.get_timer() == 30.0
    acd.handle_timer(30.0)
    assert drain(acd) == []  # still ringing a
    assert acd.get_timer() == 45.0
    acd.handle_timer(45.0)
    assert drain(acd, *CALL_ACTIONS) == [
        StopRinging("c1", "a", StopReason.NO_ANSWER),
        Overflowed("c1", "q", "o", "max_wait"),
        CallQueued("c1", "o", 1),
    ]


def test_full_queue_overflows_or_rejects() -> None:
    acd = engine(
        QueueSettings("q", max_length=1, overflow_queue="o"),
        QueueSettings("o", max_length=1, on_full=FullAction.BUSY),
        agents={},
    )
    acd.call_arrived("c1", "1", "12345", "q", 10, now=0.0)
    acd.call_arrived("c2", "2", "12345", "q", 10, now=1.0)
    acd.call_arrived("c3", "3", "12345", "q", 10, now=2.0)
    events = drain(acd, *CALL_ACTIONS, CallFinished)
    assert events[:5] == [
        CallQueued("c1", "q", 1),
        Overflowed("c2", "q", "o", "full"),
        CallQueued("c2", "o", 1),
        Overflowed("c3", "q", "o", "full"),
        RejectCall("c3", "o"),
    ]
    assert isinstance(events[5], CallFinished)
    assert events[5].record.outcome is CallOutcome.BUSY
    assert acd.queue_stats("q", now=2.0).overflowed == 2
    assert acd.queue_stats("o", now=2.0).busy == 1


def test_overflow_never_loops() -> None:
    acd = engine(
        QueueSettings("a", max_length=0, overflow_queue="b"),
        QueueSettings("b", max_length=0, overflow_queue="a"),
        agents={},
    )
    acd.call_arrived("c1", "1", "110", "a", 30, now=0.0)
    assert drain(acd, *CALL_ACTIONS) == [Overflowed("c1", "a", "b", "full"), RejectCall("c1", "b")]


def test_abandon_while_queued_goes_to_callback_list() -> None:
    acd = engine(QueueSettings("q"), agents={})
    acd.call_arrived("c1", "13800000000", "120", "q", 30, now=100.0)
    drain(acd)
    acd.call_abandoned("c1", now=142.5)
    events = drain(acd)
    assert isinstance(events[0], Abandoned)
    entry = events[0].entry
    assert (entry.caller, entry.hotline, entry.queue, entry.wait) == ("13800000000", "120", "q", 42.5)
    assert isinstance(events[1], CallFinished) and events[1].record.outcome is CallOutcome.ABANDONED
    assert acd.callbacks() == (entry,)
    assert acd.callback_done("c1") and acd.callbacks() == ()
    assert acd.waiting_calls("q") == ()
    acd.call_abandoned("c1", now=143.0)  # duplicate BYE: harmless
    with pytest.raises(UnknownCall):
        acd.call_abandoned("never", now=143.0)


def test_abandon_while_ringing_stops_ringing() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"]})
    login(acd, 0.0, "a")
    acd.call_arrived("c1", "1", "110", "q", 30, now=10.0)
    drain(acd)
    acd.call_abandoned("c1", now=13.0)
    events = drain(acd, StopRinging, Abandoned)
    assert events[0] == StopRinging("c1", "a", StopReason.CALLER_HUNG_UP)
    assert isinstance(events[1], Abandoned) and events[1].entry.wait == 3.0
    assert acd.agent_status("a").state is READY
    assert acd.get_timer() is None
    acd.agent_answered("c1", "a", now=13.1)  # answer raced the caller's BYE
    assert drain(acd) == [HangupAgentLeg("c1", "a", "call already ended")]


def test_wrap_up_then_ready_and_next_call() -> None:
    acd = engine(QueueSettings("q", wrap_up=10.0), agents={"a": ["q"]})
    login(acd, 0.0, "a")
    acd.call_arrived("c1", "1", "110", "q", 30, now=1.0)
    acd.agent_answered("c1", "a", now=2.0)
    acd.call_arrived("c2", "2", "110", "q", 30, now=3.0)
    drain(acd)
    acd.call_ended("c1", now=50.0)
    assert acd.agent_status("a").state is AgentState.WRAP_UP
    assert acd.get_timer() == 60.0
    acd.handle_timer(59.9)
    assert acd.agent_status("a").state is AgentState.WRAP_UP
    acd.handle_timer(60.0)
    assert drain(acd, RingAgent) == [RingAgent("c2", "a", "q", 15.0)]


def test_ready_during_wrap_up_ends_it_early() -> None:
    acd = engine(QueueSettings("q", wrap_up=10.0), agents={"a": ["q"]})
    login(acd, 0.0, "a")
    acd.call_arrived("c1", "1", "110", "q", 30, now=1.0)
    acd.agent_answered("c1", "a", now=2.0)
    acd.call_ended("c1", now=5.0)
    acd.agent_state("a", READY, now=7.0)
    assert acd.agent_status("a").state is READY
    assert acd.get_timer() is None


def test_logout_while_ringing_requeues_the_call() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"], "b": ["q"]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("c1", "1", "110", "q", 30, now=5.0)
    drain(acd)
    acd.agent_logout("a", now=6.0)
    assert drain(acd, StopRinging, RingAgent, CallQueued) == [
        StopRinging("c1", "a", StopReason.AGENT_LEFT),
        CallQueued("c1", "q", 1),
        RingAgent("c1", "b", "q", 15.0),
    ]
    assert acd.agent_status("a").state is AgentState.LOGGED_OUT
    assert acd.get_timer() == 21.0


def test_logout_and_not_ready_while_busy_apply_after_the_call() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"], "b": ["q"]})
    login(acd, 0.0, "a", "b")
    for call_id, agent_id in (("c1", "a"), ("c2", "b")):
        acd.call_arrived(call_id, "1", "110", "q", 30, now=1.0)
        acd.agent_answered(call_id, agent_id, now=2.0)
    acd.agent_logout("a", now=3.0)
    acd.agent_state("b", NOT_READY, now=3.0)
    assert acd.agent_status("a").state is AgentState.BUSY
    acd.call_ended("c1", now=9.0)
    acd.call_ended("c2", now=9.0)
    assert acd.agent_status("a").state is AgentState.LOGGED_OUT
    assert acd.agent_status("b").state is NOT_READY
    assert acd.get_timer() is None


def test_not_ready_while_ringing_offers_elsewhere() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"]})
    login(acd, 0.0, "a")
    acd.call_arrived("c1", "1", "110", "q", 30, now=1.0)
    drain(acd)
    acd.agent_state("a", NOT_READY, now=2.0, reason="*52")
    assert drain(acd, StopRinging, CallQueued) == [
        StopRinging("c1", "a", StopReason.AGENT_LEFT), CallQueued("c1", "q", 1),
    ]
    with pytest.raises(AcdStateError):
        acd.agent_state("a", AgentState.BUSY, now=3.0)


def test_preemption_wanted_when_urgent_call_waits_behind_connected_lower_calls() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"], "b": ["q"]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("gov", "1", "12345", "q", 10, now=1.0)
    acd.agent_answered("gov", "a", now=2.0)
    acd.call_arrived("traffic", "2", "122", "q", 20, now=3.0)
    acd.agent_answered("traffic", "b", now=4.0)
    acd.call_arrived("low", "3", "12345", "q", 10, now=5.0)
    assert drain(acd, PreemptionWanted) == []  # only urgent calls pre-empt
    acd.call_arrived("fire", "4", "119", "q", 30, now=6.0)
    assert drain(acd, PreemptionWanted) == [
        PreemptionWanted("fire", "q", 30, (
            PreemptionCandidate("gov", "a", 10, 2.0),
            PreemptionCandidate("traffic", "b", 20, 4.0),
        )),
    ]
    acd.call_ended("gov", now=7.0, cause="force_release")
    acd.handle_timer(17.0)  # wrap-up over
    assert drain(acd, RingAgent) == [RingAgent("fire", "a", "q", 15.0)]


def test_cdr_timeline() -> None:
    acd = engine(QueueSettings("q", wrap_up=0.0), agents={"a": ["q"], "b": ["q"]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("c1", "13900000000", "110", "q", 30, now=10.0)
    acd.handle_timer(25.0)
    acd.agent_answered("c1", "b", now=27.0)
    acd.call_ended("c1", now=90.0, cause="caller_bye")
    finished = [e for e in drain(acd) if isinstance(e, CallFinished)]
    record = finished[0].record
    assert (record.outcome, record.agent_id, record.answered, record.released, record.wait) == (
        CallOutcome.ANSWERED, "b", 27.0, 90.0, 17.0)
    assert [(e.at, e.kind, e.agent_id) for e in record.timeline] == [
        (10.0, TimelineKind.OFFERED, ""),
        (10.0, TimelineKind.QUEUED, ""),
        (10.0, TimelineKind.RINGING, "a"),
        (25.0, TimelineKind.NO_ANSWER, "a"),
        (25.0, TimelineKind.STOPPED, "a"),
        (25.0, TimelineKind.QUEUED, ""),
        (25.0, TimelineKind.RINGING, "b"),
        (27.0, TimelineKind.ANSWERED, "b"),
        (90.0, TimelineKind.RELEASED, "b"),
    ]
    assert record.timeline[-1].cause == "caller_bye"


def test_queue_stats_snapshot() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"], "b": ["q"], "c": ["q"]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("c1", "1", "110", "q", 30, now=0.0)
    acd.agent_answered("c1", "a", now=4.0)
    acd.call_arrived("c2", "1", "110", "q", 30, now=5.0)
    acd.agent_answered("c2", "b", now=7.0)
    acd.call_arrived("c3", "1", "110", "q", 30, now=8.0)
    acd.call_arrived("c4", "1", "110", "q", 30, now=9.0)
    acd.call_abandoned("c4", now=10.0)
    stats = acd.queue_stats("q", now=20.0)
    assert (stats.waiting, stats.ringing, stats.longest_wait) == (1, 0, 12.0)
    assert dict(stats.agents) == {AgentState.BUSY: 2}
    assert (stats.answered, stats.abandoned, stats.average_answer_time) == (2, 1, 3.0)


def test_errors() -> None:
    acd = engine(QueueSettings("q"), agents={"a": ["q"]})
    acd.call_arrived("c1", "1", "110", "q", 30, now=0.0)
    with pytest.raises(AcdStateError):
        acd.call_arrived("c1", "1", "110", "q", 30, now=0.0)
    with pytest.raises(UnknownQueue):
        acd.call_arrived("c2", "1", "110", "nowhere", 30, now=0.0)
    acd.agent_login("a", now=1.0)
    with pytest.raises(AcdStateError):
        acd.agent_login("a", now=1.0)
