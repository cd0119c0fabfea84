"""Fencing on a real PostgreSQL, in process, with stepped wall and monotonic clocks.

A node that stalls past ``dead_after_s`` is taken over while it lives; when it
wakes it must not send what it had claimed (the survivor sends it), must not
overwrite the survivor's rows, and must let go of the radios.  The same story
with a real stopped process and the SMSC simulator is
test_cluster_loopback.py::test_a_stalled_node_wakes_fenced_off.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pgserver
import pytest
import pytest_asyncio
from clusterpeer import until
from sqlalchemy import select

from dispatch.audit import AuditTrail
from dispatch.campaigns import CampaignService, RecipientIn
from dispatch.cluster import ClusterService, LeasedService
from dispatch.events import EventHub
from dispatch.models import CampaignRecipientRow, ClusterLeaseRow, ClusterNodeRow
from dispatch.services import ServiceManager, State
from dispatch.storage import Database


class Clock:
    """A stepped clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Handsets:
    """Records every submit (what the SMSC would have been sent), by number."""

    ready = True

    def __init__(self) -> None:
        self.got: Counter[str] = Counter()

    async def submit(self, msisdn: str, text: str, *, tag: str, replace: bool,
                     priority: int) -> list[str]:
        self.got[msisdn] += 1
        return [f"{msisdn}-{self.got[msisdn]}"]


class Gateways:
    """Records whether the radio gateways run (the real ones unkey on stop)."""

    name = "radio"

    def __init__(self) -> None:
        self.running = False
        self.starts = self.stops = 0

    async def start(self) -> None:
        self.running = True
        self.starts += 1

    async def stop(self) -> None:
        if self.running:
            self.stops += 1
        self.running = False


@pytest_asyncio.fixture(loop_scope="session")
async def pg(pg_server: Any) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database of its own."""
    db = Database(pgserver.fresh_pg_url(pg_server))
    await db.upgrade()
    yield db
    await db.close()


def _node(pg: Database, name: str, wall: Clock, mono: Clock, hub: EventHub) -> ClusterService:
    return ClusterService(pg, AuditTrail(hub.publish, wall), wall, node_id=name,
                          lease_name=name, http_url=f"http://{name}", channel="t_fence",
                          heartbeat_s=1.0, dead_after_s=10.0, batch_ms=0, monotonic=mono)


@pytest.mark.usefixtures("reactor")
async def test_a_node_stalled_past_dead_after_wakes_fenced_off(pg: Database) -> None:
    wall, mono = Clock(1_800_000_000.0), Clock(1000.0)
    hub = EventHub(wall)
    n1, n2 = _node(pg, "f1", wall, mono, hub), _node(pg, "f2", wall, mono, hub)
    phones1, phones2 = Handsets(), Handsets()
    sms1 = CampaignService(pg, AuditTrail(hub.publish, wall), hub.publish, wall, "f1", phones1)
    sms2 = CampaignService(pg, AuditTrail(hub.publish, wall), hub.publish, wall, "f2", phones2)
    sms1.fence, sms2.fence = n1, n2
    radio1, radio2 = Gateways(), Gateways()
    lease1, lease2 = (LeasedService(radio1, n1, "radio", 10.0),
                      LeasedService(radio2, n2, "radio", 10.0))
    await n1.start()
    await n2.start()
    try:
        cid = await sms2.create("evacuate", [RecipientIn(f"+86138{i:08d}", "zh", "撤离")
                                             for i in range(10)], actor="cmd", public=False)
        await lease2.start()
        first_gen = n2.generation
        claimed = await sms2._claim()  # f2 marks the batch submitting...
        assert len(claimed) == 10 and {c.gen for c in claimed} == {first_gen}
        assert n2.may_act() and lease2.may_act()

        # ...and stops (SIGSTOP) for 12 s: its local window closes, f1 takes it over.
        wall.now += 12.0
        mono.now += 12.0
        assert not n2.may_act() and not lease2.may_act()
        await n1.heartbeat()
        assert await n1.sweep() == ["f2"]
        await lease1.start()  # f1's retry takes the radios (the lease had expired)
        assert radio1.running

        # f2 wakes and carries on with the batch it claimed: nothing goes out.
        await sms2._send(claimed)
        assert sum(phones2.got.values()) == 0 and sms2.fenced == 10
        assert n2.fenced == 1 and n2.generation == first_gen + 2  # taken over, rejoined
        assert not radio2.running and not lease2.may_act()  # let go of the radios

        # f1 sends every message exactly once; f2, rejoined, finds nothing left.
        while batch := await sms1._claim():
            await sms1._send(batch)
        assert await sms2._claim() == []
        assert phones1.got == Counter({f"+86138{i:08d}": 1 for i in range(10)})
        async with pg.session() as s:
            rows = list(await s.scalars(select(CampaignRecipientRow).where(
                CampaignRecipientRow.campaign_id == cid)))
            lease = await s.get(ClusterLeaseRow, "radio")
            f2 = await s.get(ClusterNodeRow, "f2")
        assert {(r.state, r.lease_owner, r.lease_gen) for r in rows} == {
            ("submitted", None, None)}
        assert lease is not None and lease.owner == "f1" and lease.generation == 2
        assert f2 is not None and f2.alive and f2.generation == first_gen + 2
        # f2's old renewal token is dead even if it tried.
        assert not await n2.acquire("radio", 10.0)
    finally:
        await lease1.stop()
        await n1.stop()
        await n2.stop()


@pytest.mark.usefixtures("reactor")
async def test_a_stale_batch_does_not_overwrite_the_survivors_rows(pg: Database) -> None:
    """f2 sent a batch before it stalled; its late outcomes change nothing f1 now owns."""
    wall, mono = Clock(1_800_000_000.0), Clock(1000.0)
    hub = EventHub(wall)
    n1, n2 = _node(pg, "s1", wall, mono, hub), _node(pg, "s2", wall, mono, hub)
    phones1, phones2 = Handsets(), Handsets()
    sms1 = CampaignService(pg, AuditTrail(hub.publish, wall), hub.publish, wall, "s1", phones1)
    sms2 = CampaignService(pg, AuditTrail(hub.publish, wall), hub.publish, wall, "s2", phones2)
    sms1.fence, sms2.fence = n1, n2
    await n1.start()
    await n2.start()
    try:
        cid = await sms2.create("evacuate", [RecipientIn(f"+86139{i:08d}", "zh", "撤离")
                                             for i in range(4)], actor="cmd", public=False)
        claimed = await sms2._claim()
        wall.now += 12.0
        mono.now += 12.0
        await n1.heartbeat()
        assert await n1.sweep() == ["s2"]
        batch = await sms1._claim()  # f1 claims the requeued rows (submitting, s1)
        assert len(batch) == 4
        await sms2._store([(c, "ok", ["stale"]) for c in claimed])
        async with pg.session() as s:
            rows = list(await s.scalars(select(CampaignRecipientRow).where(
                CampaignRecipientRow.campaign_id == cid)))
        assert {(r.state, r.lease_owner) for r in rows} == {("submitting", "s1")}
        await sms1._send(batch)
        async with pg.session() as s:
            rows = list(await s.scalars(select(CampaignRecipientRow).where(
                CampaignRecipientRow.campaign_id == cid)))
        assert {r.state for r in rows} == {"submitted"}
        assert all(r.message_ids[0].endswith("-1") for r in rows)
    finally:
        await n1.stop()
        await n2.stop()


@pytest.mark.usefixtures("reactor")
async def test_a_node_that_lost_the_radios_stands_by_and_takes_them_back(
        pg: Database) -> None:
    """Fenced off, a node's radio service is not stopped for good: the service manager
    retries it at the heartbeat pace and it drives the radios again when they are free.

    Each node has its own wall and monotonic clocks, so only the node meant to see the
    other as dead does (their background heartbeats run meanwhile).
    """
    w1, m1, w2, m2 = Clock(1_800_000_000.0), Clock(1000.0), Clock(1_800_000_000.0), Clock(50.0)
    hub = EventHub(w1)
    nodes, managers, gateways, leases = [], [], [], []
    for name, wall, mono in (("b1", w1, m1), ("b2", w2, m2)):
        node = ClusterService(pg, AuditTrail(hub.publish, wall), wall, node_id=name,
                              lease_name=name, http_url=f"http://{name}", channel="t_back",
                              heartbeat_s=0.2, dead_after_s=10.0, batch_ms=0, monotonic=mono)
        manager = ServiceManager(hub.publish, wall)
        radio = Gateways()
        leased = LeasedService(radio, node, "radio", 10.0)
        leased.on_standby = lambda why, m=manager, s=leased: m.standby(s.name, why)
        # retry_s is an hour: the lease poll (every heartbeat), not retry_s, paces a standby.
        manager.add(leased, required=False, retry_s=3600.0)
        nodes.append(node)
        managers.append(manager)
        gateways.append(radio)
        leases.append(leased)
    (n1, n2), (s1, s2), (g1, g2), (l1, l2) = nodes, managers, gateways, leases
    for node in nodes:
        await node.start()
    try:
        await s1.start_all()
        await s2.start_all()
        assert s1.states()["radio"] is State.RUNNING and g1.running
        assert s2.states()["radio"] is State.FAILED and not g2.running  # standing by

        # b1 stalls 12 s (its clocks stand still meanwhile): b2 takes it over, then the
        # radios, at its next look at the lease.  b1 wakes: its clocks catch up.
        w2.now += 12.0
        await n2.heartbeat()
        assert await n2.sweep() == ["b1"]
        w1.now += 12.0
        m1.now += 12.0
        await until(lambda: s2.states()["radio"] is State.RUNNING, "b2 to take the radios")
        assert g2.running and l2.may_act()

        # b1, woken: fenced off, it lets go of the radios and stands by (not stopped).
        await until(lambda: n1.fenced == 1 and n1.may_act(), "b1 to be fenced and rejoin")
        assert not g1.running and g1.stops == 1 and l1.lost == 1
        assert s1.states()["radio"] is State.FAILED
        assert "standing by" in (s1.health()["services"]["radio"]["last_error"] or "")
        assert not l1.may_act()

        # Now b2 dies: b1 takes it over and, standing by, drives the radios again.
        w1.now += 24.0
        await n1.heartbeat()
        assert await n1.sweep() == ["b2"]
        w2.now += 24.0
        m2.now += 24.0
        await until(lambda: s1.states()["radio"] is State.RUNNING, "b1 to take them back")
        assert g1.running and g1.starts == 2 and l1.may_act()
        async with pg.session() as s:
            lease = await s.get(ClusterLeaseRow, "radio")
        assert lease is not None and lease.owner == "b1" and lease.generation == 3
        # b2, if it was only stalled, finds out and lets go in turn: never two drivers.
        await until(lambda: not g2.running, "b2 to let go")
        assert s2.states()["radio"] is State.FAILED
    finally:
        for manager in managers:
            await manager.stop_all()
        for node in nodes:
            await node.stop()
