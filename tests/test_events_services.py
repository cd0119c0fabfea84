"""The event hub and the service manager."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

import pytest

from dispatch.events import EventHub, SubscriberOverflow, topic_of
from dispatch.services import RequiredServiceFailed, ServiceManager, State


@dataclass(frozen=True)
class CallOffered:
    topic: ClassVar[str] = "call.offered"
    caller: str


@dataclass(frozen=True)
class GradeRaised:
    incident: int


def test_topics() -> None:
    assert topic_of(CallOffered("110")) == "call.offered"
    assert topic_of(GradeRaised(1)) == "grade_raised"


async def test_fan_out_filters_and_orders() -> None:
    hub = EventHub(clock=lambda: 5.0, queue_size=10)
    calls = hub.subscribe(["call."])
    everything = hub.subscribe()
    seen: list[str] = []
    hub.listen(lambda env: seen.append(env.topic))
    hub.publish(CallOffered("13800138000"))
    hub.publish(GradeRaised(7))
    hub.close_all()
    got_calls = [env.to_json() async for env in calls]
    got_all = [env.topic async for env in everything]
    assert got_calls == [{"seq": 1, "at": 5.0, "topic": "call.offered",
                          "data": {"caller": "13800138000"}}]
    assert got_all == ["call.offered", "grade_raised"]
    assert seen == got_all and hub.published == {"call.offered": 1, "grade_raised": 1}


async def test_slow_subscriber_is_cut_off_not_buffered_forever() -> None:
    hub = EventHub(clock=lambda: 0.0, queue_size=4)
    slow = hub.subscribe()
    for i in range(10):
        hub.publish(GradeRaised(i))
    assert hub.subscriber_count == 0
    received = []
    with pytest.raises(SubscriberOverflow):
        async for env in slow:
            received.append(env.event)
    assert received == [GradeRaised(0), GradeRaised(1), GradeRaised(2)]


def test_a_failing_listener_does_not_stop_the_others() -> None:
    hub = EventHub(clock=lambda: 0.0)
    seen = []

    def broken(env: object) -> None:
        raise ValueError("bug in a listener")

    hub.listen(broken)
    hub.listen(seen.append)
    hub.publish(GradeRaised(1))
    assert len(seen) == 1


class FakeService:
    """A service whose start succeeds or fails as the test says."""

    def __init__(self, name: str, log: list[str], fail_times: int = 0) -> None:
        self.name = name
        self.log = log
        self.fail_times = fail_times

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail_times:
            self.fail_times -= 1
            raise OSError(f"/dev/{self.name}: no such device")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


async def test_start_in_order_stop_in_reverse() -> None:
    log: list[str] = []
    events: list[object] = []
    manager = ServiceManager(events.append, lambda: 0.0)
    for name in ("database", "sip", "http"):
        manager.add(FakeService(name, log), required=True)
    await manager.start_all()
    await manager.stop_all()
    assert log == ["start database", "start sip", "start http",
                   "stop http", "stop sip", "stop database"]
    assert manager.states() == {n: State.STOPPED for n in ("database", "sip", "http")}


async def test_optional_failure_is_reported_and_retried() -> None:
    log: list[str] = []
    back = asyncio.Event()

    def on_event(event: object) -> None:
        if getattr(event, "service", None) == "radio1" and getattr(event, "state", "") == "running":
            back.set()

    manager = ServiceManager(on_event, lambda: 0.0)
    manager.add(FakeService("database", log), required=True)
    manager.add(FakeService("radio1", log, fail_times=2), required=False, retry_s=0.01)
    await manager.start_all()
    health = manager.health()
    assert health["ready"] is True
    assert health["services"]["radio1"]["state"] == "failed"
    assert health["services"]["radio1"]["last_error"] == "/dev/radio1: no such device"
    # Retried in the background until the device is back.
    await asyncio.wait_for(back.wait(), 10)
    assert manager.states()["radio1"] is State.RUNNING
    assert log.count("start radio1") == 3
    await manager.stop_all()


async def test_required_failure_raises_with_the_reason() -> None:
    manager = ServiceManager(lambda e: None, lambda: 0.0)
    manager.add(FakeService("database", [], fail_times=1), required=True)
    with pytest.raises(RequiredServiceFailed,
                       match="required service database failed to start: /dev/database"):
        await manager.start_all()
    assert manager.health()["ready"] is False
