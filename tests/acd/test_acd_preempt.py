"""Pre-emption in the ACD engine (sans-I/O, stepped ``now``): an urgent call takes the call
taker of a connected lower-priority call, which is re-queued at the head or finished."""

from __future__ import annotations

import pytest
from test_acd_engine import drain, engine, login

from telephony.acd import (
    AcdStateError,
    AgentState,
    AgentStateChanged,
    CallFinished,
    CallOutcome,
    CallQueued,
    Connect,
    PreemptionCandidate,
    PreemptionWanted,
    PreemptPolicy,
    QueueSettings,
    RingAgent,
    TimelineKind,
    load_acd_settings,
)
from telephony.acd.config import ConfigError


def busy_on_service() -> object:
    """Agent a (police and service queues) talks to a 12345 caller; others wait."""
    acd = engine(QueueSettings("police"), QueueSettings("service", wrap_up=30.0),
                 agents={"a": ["police", "service"]})
    login(acd, 0.0, "a")
    acd.call_arrived("gov", "1001", "12345", "service", 10, now=1.0)
    acd.agent_answered("gov", "a", now=2.0)
    acd.call_arrived("gov2", "1002", "12345", "service", 10, now=3.0)
    drain(acd)
    return acd


def test_requeue_puts_the_victim_at_the_head_and_rings_its_agent_for_the_urgent_call() -> None:
    acd = busy_on_service()
    acd.call_arrived("fire", "1003", "119", "police", 30, now=10.0)
    assert drain(acd, PreemptionWanted) == [PreemptionWanted(
        "fire", "police", 30, (PreemptionCandidate("gov", "a", 10, 2.0),))]
    assert acd.preempt("fire", "gov", now=11.0, requeue=True) == "a"
    events = drain(acd)
    assert [e for e in events if isinstance(e, CallQueued | RingAgent)] == [
        CallQueued("gov", "service", 1), RingAgent("fire", "a", "police", 15.0)]
    moves = [(e.old, e.new, e.reason) for e in events if isinstance(e, AgentStateChanged)]
    assert moves[0] == (AgentState.BUSY, AgentState.READY, "preempted")  # no wrap-up
    assert acd.waiting_calls("service") == ("gov", "gov2")  # ahead of a later arrival
    acd.agent_answered("fire", "a", now=12.0)
    acd.call_ended("fire", now=60.0)
    acd.handle_timer(70.0)  # police wrap-up (10 s) over: the re-queued caller comes first
    assert drain(acd, RingAgent) == [RingAgent("gov", "a", "service", 15.0)]
    acd.agent_answered("gov", "a", now=71.0)
    assert drain(acd, Connect) == [Connect("gov", "a", "service", 70.0)]
    record = acd.call_record("gov")
    kinds = [(t.kind, t.cause) for t in record.timeline]
    assert (TimelineKind.PREEMPTED, "for fire") in kinds
    assert kinds.index((TimelineKind.PREEMPTED, "for fire")) < len(kinds) - 1


def test_release_finishes_the_victim_with_cause_preempted() -> None:
    acd = busy_on_service()
    acd.call_arrived("fire", "1003", "119", "police", 30, now=10.0)
    acd.preempt("fire", "gov", now=11.0, requeue=False)
    finished = drain(acd, CallFinished, RingAgent)
    assert isinstance(finished[0], CallFinished)
    assert (finished[0].record.call_id, finished[0].record.outcome, finished[0].record.cause) == (
        "gov", CallOutcome.ANSWERED, "preempted")
    assert finished[1] == RingAgent("fire", "a", "police", 15.0)
    assert acd.waiting_calls("service") == ("gov2",)
    acd.call_ended("gov", now=12.0)  # the B2BUA's own release afterwards is ignored


def test_preempt_refuses_what_makes_no_sense() -> None:
    acd = busy_on_service()
    with pytest.raises(AcdStateError, match="not of lower priority"):
        acd.preempt("gov2", "gov", now=5.0, requeue=True)  # gov2 waits but is not urgent
    acd.call_arrived("fire", "1003", "119", "police", 30, now=10.0)
    with pytest.raises(AcdStateError, match="not connected"):
        acd.preempt("fire", "gov2", now=11.0, requeue=True)
    acd.agent_answered("gov", "a", now=11.0)  # stale: ignored by the engine
    acd.preempt("fire", "gov", now=12.0, requeue=True)
    with pytest.raises(AcdStateError, match="not waiting"):
        acd.preempt("fire", "gov", now=13.0, requeue=True)  # fire is ringing now


def test_never_policy_and_leaving_agents_are_no_candidates() -> None:
    acd = engine(QueueSettings("police"), QueueSettings("vip", preempt=PreemptPolicy.NEVER),
                 QueueSettings("service"), agents={"a": ["police", "vip"],
                                                   "b": ["police", "service"]})
    login(acd, 0.0, "a", "b")
    acd.call_arrived("v", "1", "12345", "vip", 10, now=1.0)
    acd.agent_answered("v", "a", now=2.0)
    acd.call_arrived("s", "2", "12345", "service", 10, now=3.0)
    acd.agent_answered("s", "b", now=4.0)
    acd.agent_logout("b", now=5.0)  # leaves when the call ends: pre-empting frees nobody
    drain(acd)
    acd.call_arrived("fire", "3", "119", "police", 30, now=6.0)
    assert drain(acd, PreemptionWanted) == []


def test_queue_config_for_announcements_and_preemption() -> None:
    base = {"name": "q"}
    q = load_acd_settings({"queues": [base]}).queues[0]
    assert (q.announce, q.announce_every, q.language.value, q.preempt.value) == (
        True, 30.0, "zh", "requeue")
    q = load_acd_settings({"queues": [{**base, "announce": False, "announce_every": 0,
                                       "language": "en", "preempt": "release"}]}).queues[0]
    assert (q.announce, q.announce_every, q.language.value, q.preempt.value) == (
        False, 0.0, "en", "release")
    for bad, message in (({"announce_every": 5}, "announce_every: must be 0"),
                         ({"announce_every": -1}, "announce_every: must be >= 0"),
                         ({"language": "fr"}, "language: must be one of 'zh', 'en'"),
                         ({"preempt": "always"}, "preempt: must be one of"),
                         ({"announce": "yes"}, "announce: must be true or false")):
        with pytest.raises(ConfigError, match=message):
            load_acd_settings({"queues": [{**base, **bad}]})
