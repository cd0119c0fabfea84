"""Floor control core: tables of scenarios with a stepped ``now``, and a stateful property."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from radio.floor import (
    Event,
    FloorCancelled,
    FloorControl,
    FloorDenied,
    FloorError,
    FloorGranted,
    FloorPreempted,
    FloorQueued,
    FloorReleased,
    FloorRevoked,
    FloorSettings,
    FloorTimedOut,
    GroupState,
    Key,
    Priority,
    QueuePosition,
    Unkey,
)

P = Priority


def core(hang: float = 2.0, tx: float = 30.0, max_queue: int = 16) -> FloorControl:
    return FloorControl({"9001": "gw1", "9002": "gw1", "9100": "gw2"},
                        FloorSettings(hang_time_s=hang, tx_timeout_s=tx, max_queue=max_queue))


def test_grant_then_release_keys_and_unkeys() -> None:
    f = core()
    assert f.request("9001", "disp1", P.DISPATCHER, 0.0) == [
        FloorGranted("9001", "disp1", P.DISPATCHER, 0.0), Key("9001")]
    assert f.keyed() == {"9001"} and f.get_timer() == 30.0
    assert f.release("9001", "disp1", 1.0) == [FloorReleased("9001", "disp1", 1.0), Unkey("9001")]
    assert f.state("9001") is GroupState.HANG and f.get_timer() == 3.0
    assert f.handle_timer(3.0) == [] and f.state("9001") is GroupState.IDLE
    assert f.get_timer() is None


def test_three_talkers_commander_preempts_and_emergency_overrides() -> None:
    f = core()
    f.request("9001", "unit7", P.FIELD_UNIT, 0.0)
    assert f.request("9001", "disp1", P.DISPATCHER, 0.1) == [
        FloorPreempted("9001", "unit7", "disp1", 0.1, "dispatcher outranks field_unit"),
        Unkey("9001"),
        FloorGranted("9001", "disp1", P.DISPATCHER, 0.1, "pre-empted a lower priority"),
        Key("9001")]
    assert f.request("9001", "unit8", P.FIELD_UNIT, 0.2) == [
        FloorQueued("9001", "unit8", 1, 0.2, "disp1 is talking")]
    events = f.request("9001", "cmdr", P.COMMANDER, 0.3)
    assert [type(e) for e in events] == [FloorPreempted, Unkey, FloorGranted, Key]
    assert f.talker("9001") == "cmdr"
    events = f.request("9001", "handset42", P.EMERGENCY, 0.4)
    assert events[0] == FloorPreempted("9001", "cmdr", "handset42", 0.4,
                                       "emergency outranks commander")
    assert f.talker("9001") == "handset42" and f.queue("9001") == ("unit8",)
    assert f.request("9001", "cmdr", P.COMMANDER, 0.5) == [
        FloorQueued("9001", "cmdr", 1, 0.5, "handset42 is talking"),
        QueuePosition("9001", "unit8", 2, 0.5)]
    assert f.release("9001", "handset42", 1.0) == [
        FloorReleased("9001", "handset42", 1.0), Unkey("9001"),
        FloorGranted("9001", "cmdr", P.COMMANDER, 1.0, "next in queue"), Key("9001"),
        QueuePosition("9001", "unit8", 1, 1.0)]


def test_hang_time_reserves_the_group_for_the_previous_talker() -> None:
    f = core(hang=2.0)
    f.request("9001", "disp1", P.DISPATCHER, 0.0)
    f.release("9001", "disp1", 1.0)
    assert f.request("9001", "unit7", P.FIELD_UNIT, 1.5) == [
        FloorQueued("9001", "unit7", 1, 1.5, "hang time reserved for disp1")]
    assert f.request("9001", "disp1", P.DISPATCHER, 2.0)[0] == FloorGranted(
        "9001", "disp1", P.DISPATCHER, 2.0, "hang time reserved")
    f.release("9001", "disp1", 2.5)
    assert f.state("9001") is GroupState.TALKING and f.talker("9001") == "unit7"


def test_hang_expiry_serves_the_queue_and_commander_outranks_hang() -> None:
    f = core(hang=2.0)
    f.request("9001", "unit7", P.FIELD_UNIT, 0.0)
    f.release("9001", "unit7", 1.0)
    f.request("9001", "unit8", P.FIELD_UNIT, 1.2)
    assert f.handle_timer(3.0) == [
        FloorGranted("9001", "unit8", P.FIELD_UNIT, 3.0, "next in queue"), Key("9001")]
    f.release("9001", "unit8", 4.0)
    assert f.request("9001", "cmdr", P.COMMANDER, 4.5)[0].why == (  # type: ignore[union-attr]
        "outranks the hang-time reservation")


def test_transmit_timeout_cuts_the_talker_off() -> None:
    f = core(tx=10.0, hang=0.0)
    f.request("9001", "unit7", P.FIELD_UNIT, 0.0)
    f.request("9001", "unit8", P.FIELD_UNIT, 1.0)
    assert f.handle_timer(9.999) == []
    assert f.handle_timer(10.0) == [
        FloorTimedOut("9001", "unit7", 10.0, 10.0), Unkey("9001"),
        FloorGranted("9001", "unit8", P.FIELD_UNIT, 10.0, "next in queue"), Key("9001")]
    assert f.get_timer() == 20.0
    assert f.handle_timer(20.0)[:2] == [FloorTimedOut("9001", "unit8", 20.0, 10.0),
                                        Unkey("9001")]
    assert f.state("9001") is GroupState.IDLE and f.get_timer() is None


def test_cancel_and_positions() -> None:
    f = core()
    f.request("9001", "cmdr", P.COMMANDER, 0.0)
    f.request("9001", "a", P.FIELD_UNIT, 0.1)
    f.request("9001", "b", P.FIELD_UNIT, 0.2)
    assert f.request("9001", "d", P.DISPATCHER, 0.3) == [
        FloorQueued("9001", "d", 1, 0.3, "cmdr is talking"),
        QueuePosition("9001", "a", 2, 0.3), QueuePosition("9001", "b", 3, 0.3)]
    assert f.cancel("9001", "a", 0.4) == [FloorCancelled("9001", "a", 0.4),
                                          QueuePosition("9001", "b", 2, 0.4)]
    assert f.release("9001", "d", 0.5) == [FloorCancelled("9001", "d", 0.5),
                                           QueuePosition("9001", "b", 1, 0.5)]
    assert f.cancel("9001", "nobody", 0.6) == []


@pytest.mark.parametrize(("group", "max_queue", "why"), [
    ("7777", 16, "unknown talkgroup"),
    ("9001", 0, "queue full"),
])
def test_denials(group: str, max_queue: int, why: str) -> None:
    f = core(max_queue=max_queue)
    f.request("9001", "cmdr", P.COMMANDER, 0.0)
    assert f.request(group, "unit7", P.FIELD_UNIT, 1.0) == [FloorDenied(group, "unit7", 1.0, why)]


def test_gateway_lost_unkeys_and_refuses_until_restored() -> None:
    f = core()
    f.request("9001", "disp1", P.DISPATCHER, 0.0)
    f.request("9001", "unit7", P.FIELD_UNIT, 0.1)
    f.request("9100", "disp2", P.DISPATCHER, 0.2)
    assert f.lost("gw1", 1.0) == [FloorRevoked("9001", "disp1", 1.0, "gateway gw1 lost"),
                                  Unkey("9001"),
                                  FloorDenied("9001", "unit7", 1.0, "gateway gw1 lost")]
    assert f.keyed() == {"9100"}
    assert f.request("9001", "disp1", P.DISPATCHER, 2.0) == [
        FloorDenied("9001", "disp1", 2.0, "gateway gw1 is down")]
    f.restored("gw1")
    assert f.request("9001", "disp1", P.DISPATCHER, 3.0)[-1] == Key("9001")
    events = f.revoke_all("shutdown", 4.0)
    assert Unkey("9001") in events and Unkey("9100") in events
    assert f.keyed() == frozenset() and f.get_timer() is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(FloorError):
        FloorSettings(tx_timeout_s=0)


GROUPS = ("9001", "9002")
WHO = ("unit1", "unit2", "disp", "cmdr", "handset")


class FloorMachine(RuleBasedStateMachine):
    """Random presses, releases, cancels, timers, losses: the safety invariants hold."""

    def __init__(self) -> None:
        super().__init__()
        self.f = FloorControl({"9001": "gw1", "9002": "gw2"},
                              FloorSettings(hang_time_s=1.5, tx_timeout_s=5.0, max_queue=3))
        self.now = 0.0
        self.radio_keyed: dict[str, bool] = {g: False for g in GROUPS}
        self.holder: dict[str, str | None] = {g: None for g in GROUPS}

    def apply(self, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, Key):
                assert not self.radio_keyed[e.group], "Key twice without Unkey"
                self.radio_keyed[e.group] = True
            elif isinstance(e, Unkey):
                assert self.radio_keyed[e.group], "Unkey without Key"
                self.radio_keyed[e.group] = False
            elif isinstance(e, FloorGranted):
                self.holder[e.group] = e.who
            elif isinstance(e, FloorPreempted | FloorReleased | FloorTimedOut | FloorRevoked):
                assert self.holder[e.group] == e.who
                self.holder[e.group] = None
        # Every grant came with its key; nothing is keyed without a grant.
        for g in GROUPS:
            assert self.radio_keyed[g] == (self.holder[g] is not None)

    @rule(dt=st.floats(0, 3))
    def tick(self, dt: float) -> None:
        self.now += dt
        timer = self.f.get_timer()
        if timer is not None and timer <= self.now:
            self.apply(self.f.handle_timer(self.now))
            assert (self.f.get_timer() or self.now + 1) > self.now

    @rule(g=st.sampled_from(GROUPS), who=st.sampled_from(WHO[:4]),
          p=st.sampled_from([P.FIELD_UNIT, P.DISPATCHER, P.COMMANDER]))
    def press(self, g: str, who: str, p: Priority) -> None:
        self.apply(self.f.request(g, who, p, self.now))

    @rule(g=st.sampled_from(GROUPS), who=st.sampled_from(WHO))
    def emergency(self, g: str, who: str) -> None:
        talker_before = self.f.talker_priority(g)
        events = self.f.request(g, who, P.EMERGENCY, self.now)
        self.apply(events)
        if any(isinstance(e, FloorDenied) and "down" in e.why for e in events):
            return
        # Within one step the floor belongs to an emergency call: this one, or one that
        # already held it (two emergencies never pre-empt each other).
        assert self.f.talker_priority(g) is P.EMERGENCY
        if talker_before is not P.EMERGENCY:
            assert self.f.talker(g) == who

    @rule(g=st.sampled_from(GROUPS), who=st.sampled_from(WHO))
    def release(self, g: str, who: str) -> None:
        self.apply(self.f.release(g, who, self.now))

    @rule(g=st.sampled_from(GROUPS), who=st.sampled_from(WHO))
    def cancel(self, g: str, who: str) -> None:
        self.apply(self.f.cancel(g, who, self.now))

    @rule(gw=st.sampled_from(["gw1", "gw2"]))
    def lose(self, gw: str) -> None:
        self.apply(self.f.lost(gw, self.now))
        group = "9001" if gw == "gw1" else "9002"
        assert not self.radio_keyed[group]

    @rule(gw=st.sampled_from(["gw1", "gw2"]))
    def restore(self, gw: str) -> None:
        self.f.restored(gw)

    @precondition(lambda self: True)
    @rule()
    def revoke_all(self) -> None:
        self.apply(self.f.revoke_all("test", self.now))
        assert not any(self.radio_keyed.values()) and self.f.keyed() == frozenset()
        assert self.f.get_timer() is None, "a timer left behind after revoke_all"

    @invariant()
    def one_talker_and_consistent_timers(self) -> None:
        for g in GROUPS:
            state = self.f.state(g)
            assert (self.f.talker(g) is not None) == (state is GroupState.TALKING)
            assert self.f.talker(g) not in self.f.queue(g)
            assert len(set(self.f.queue(g))) == len(self.f.queue(g))
        if not self.f.keyed() and all(self.f.state(g) is GroupState.IDLE for g in GROUPS):
            assert self.f.get_timer() is None, "a timer left behind"


FloorMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                          deadline=None)
TestFloorMachine = FloorMachine.TestCase
