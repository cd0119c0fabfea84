"""Re-queueing in the ACD engine (sans-I/O, stepped ``now``): a connected call whose call
taker's phone left it (after a failed transfer) goes back to the head of its queue, and
its call taker goes through wrap-up."""

from __future__ import annotations

import pytest
from test_acd_engine import drain, engine, login

from telephony.acd import (
    AcdStateError,
    AgentState,
    AgentStateChanged,
    CallQueued,
    Connect,
    QueueSettings,
    RingAgent,
    TimelineKind,
    UnknownCall,
)


def test_requeued_call_goes_first_and_rings_the_next_free_call_taker() -> None:
    acd = engine(QueueSettings("police", wrap_up=10.0), agents={"a": ["police"], "b": ["police"]})
    login(acd, 0.0, "a")
    acd.call_arrived("c1", "1001", "110", "police", 30, now=1.0)
    acd.agent_answered("c1", "a", now=2.0)
    login(acd, 3.0, "b")
    acd.agent_state("b", AgentState.NOT_READY, now=3.5, reason="break")
    acd.call_arrived("c2", "1002", "110", "police", 30, now=4.0)  # same priority, later
    drain(acd)
    assert acd.requeue("c1", now=5.0, reason="hung up after a failed transfer") == "a"
    events = drain(acd)
    assert [e for e in events if isinstance(e, CallQueued)] == [CallQueued("c1", "police", 1)]
    moves = [(e.agent_id, e.old, e.new) for e in events if isinstance(e, AgentStateChanged)]
    assert moves == [("a", AgentState.BUSY, AgentState.WRAP_UP)]
    assert acd.waiting_calls("police") == ("c1", "c2")  # ahead of the later arrival
    acd.agent_state("b", AgentState.READY, now=6.0, reason="back")
    assert drain(acd, RingAgent) == [RingAgent("c1", "b", "police", 15.0)]
    acd.agent_answered("c1", "b", now=7.0)
    assert drain(acd, Connect) == [Connect("c1", "b", "police", 6.0)]
    acd.handle_timer(15.0)  # a's wrap-up is over: the later caller rings a
    assert drain(acd, RingAgent) == [RingAgent("c2", "a", "police", 15.0)]
    kinds = [(t.kind, t.agent_id, t.cause) for t in acd.call_record("c1").timeline]
    assert (TimelineKind.REQUEUED, "a", "hung up after a failed transfer") in kinds
    assert kinds[-1][:2] == (TimelineKind.ANSWERED, "b")


def test_requeue_refuses_a_call_that_is_not_connected() -> None:
    acd = engine(QueueSettings("police"), agents={"a": ["police"]})
    acd.call_arrived("c1", "1001", "110", "police", 30, now=1.0)
    with pytest.raises(AcdStateError, match="not connected"):
        acd.requeue("c1", now=2.0, reason="x")
    with pytest.raises(UnknownCall):
        acd.requeue("nope", now=2.0, reason="x")
