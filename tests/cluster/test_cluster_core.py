"""The cluster's parts on a real PostgreSQL, in process: NOTIFY bridge, takeover, leases, ACD.

Clocks are stepped; nothing sleeps to wait for something (events are awaited).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tomllib
from collections.abc import AsyncIterator
from typing import Any

import pgserver
import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from dispatch.acd_store import AcdCluster
from dispatch.audit import AuditTrail
from dispatch.campaigns import CampaignService, RecipientIn
from dispatch.cluster import (
    PAYLOAD_LIMIT,
    ClusterService,
    EventBridge,
    LeasedService,
    PayloadError,
    asyncpg_dsn,
    decode_payload,
    encode_batch,
)
from dispatch.cluster_cdr import CallShadow
from dispatch.config import ConfigError, parse_settings
from dispatch.events import Envelope, EventHub
from dispatch.models import AcdAgentRow, AuditEntry, CallRecordRow, CampaignRecipientRow
from dispatch.storage import Database
from telephony.acd.engine import AcdEngine
from telephony.acd.events import AgentState, AgentStateChanged
from telephony.b2bua.config import load_telephony

WAIT = 20.0


class Clock:
    """A stepped clock."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(loop_scope="session")
async def pg(pg_server: Any) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database of its own."""
    db = Database(pgserver.fresh_pg_url(pg_server))
    await db.upgrade()
    yield db
    await db.close()


# ------------------------------------------------------------------ codec


def test_a_batch_round_trips_in_payloads_under_the_notify_limit() -> None:
    items = [(f"topic_{i}", 1.5 + i, {"call_id": f"c{i}", "text": "报警" * 50})
             for i in range(200)]
    payloads = encode_batch("n1", items)
    assert len(payloads) > 1
    back: list[tuple[str, float, Any]] = []
    for payload, count in payloads:
        assert len(payload.encode()) <= PAYLOAD_LIMIT
        node, got = decode_payload(payload)
        assert node == "n1" and len(got) == count
        back += got
    assert back == items


def test_an_event_too_large_for_notify_keeps_its_ids_only() -> None:
    big = {"report_id": "r-1", "state": "new", "transcript": "x" * 20_000, "n": 3}
    [(payload, count)] = encode_batch("n2", [("report_received", 2.0, big)])
    assert count == 1
    assert len(payload.encode()) <= PAYLOAD_LIMIT
    _, [(topic, _, data)] = decode_payload(payload)
    assert topic == "report_received"
    assert data == {"truncated": True, "report_id": "r-1", "state": "new", "n": 3}


@pytest.mark.parametrize("data", [
    {"call_id": "c1", "caller": "13800000000", "at": 1.25, "text": "报警" * 10},
    {"report_id": "r-1", "transcript": "报" * 3000, "n": 3},  # > limit only as UTF-8
    {"big": "x" * 20_000, "ok": True}, ["x" * 9000], "short", 7, None,
])
def test_an_event_is_serialised_once_as_the_two_pass_codec_did(data: Any) -> None:
    from dispatch.cluster import _piece, compact_event

    limit = 7000
    expected = json.dumps(["call_offered", 12.5, compact_event(data, limit)],
                          separators=(",", ":"), ensure_ascii=False, default=str)
    assert _piece("call_offered", 12.5, data, limit) == expected


@pytest.mark.parametrize("payload", [
    "", "nope", "[]", '{"n": 1, "e": []}', '{"n": "a", "e": [["t", "x", 1]]}',
    '{"n": "a", "e": [["t", 1]]}', '{"n": "a", "e": {}}', "x" * 9000,
])
def test_bad_payloads_are_refused(payload: str) -> None:
    with pytest.raises(PayloadError):
        decode_payload(payload)


@given(st.text(max_size=300))
def test_any_text_decodes_or_raises_payload_error(payload: str) -> None:
    try:
        node, items = decode_payload(payload)
    except PayloadError:
        return
    assert isinstance(node, str) and isinstance(items, list)


def test_dsn_is_plain_libpq() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    with pytest.raises(ValueError):
        asyncpg_dsn("sqlite:///x.db")


# ------------------------------------------------------------------ bridge on PostgreSQL


@pytest.mark.usefixtures("reactor")
async def test_bridge_delivers_to_other_nodes_not_back_and_survives_a_dropped_link(
        pg: Database) -> None:
    got: dict[str, list[tuple[str, str, Any]]] = {"n1": [], "n2": []}
    arrived = asyncio.Event()

    def sink(me: str) -> Any:
        def deliver(node: str, topic: str, _at: float, data: Any) -> None:
            got[me].append((node, topic, data))
            arrived.set()
        return deliver

    dsn = asyncpg_dsn(pg.url)
    b1 = EventBridge(dsn, "n1", "t_events", sink("n1"), batch_ms=0)
    b2 = EventBridge(dsn, "n2", "t_events", sink("n2"), batch_ms=0)
    await b1.start()
    await b2.start()
    try:
        b1.offer(Envelope(1, 5.0, "duty_log_added", {"id": 7, "text": "flood at gate 3"}))
        await asyncio.wait_for(arrived.wait(), WAIT)
        assert got["n2"] == [("n1", "duty_log_added", {"id": 7, "text": "flood at gate 3"})]
        # n1's own NOTIFY came back to it too: a ping from n2 proves n1 saw its own and dropped it.
        arrived.clear()
        b2.offer(Envelope(1, 6.0, "ping", {}))
        await asyncio.wait_for(arrived.wait(), WAIT)
        assert got["n1"] == [("n2", "ping", {})]

        # PostgreSQL drops n2's listening connection: it reconnects and keeps receiving.
        pid = b2._conn.get_server_pid()
        async with pg.session() as s:
            await s.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        arrived.clear()
        for n in range(200):  # until n2 is back; each try is awaited, never slept on
            b1.offer(Envelope(2, 7.0, "call_offered", {"call_id": f"c{n}"}))
            try:
                await asyncio.wait_for(arrived.wait(), 0.5)
            except TimeoutError:
                continue
            if any(t == "call_offered" for _, t, _ in got["n2"]):
                break
        assert b2.reconnects >= 1
        assert any(t == "call_offered" for _, t, _ in got["n2"])
    finally:
        await b1.stop()
        await b2.stop()


# ------------------------------------------------------------------ takeover and leases


def _node(pg: Database, name: str, clock: Clock, hub: EventHub | None = None) -> ClusterService:
    hub = hub or EventHub(clock)
    node = ClusterService(pg, AuditTrail(hub.publish, clock), clock, node_id=name,
                          lease_name=name, http_url=f"http://{name}", channel="t_takeover",
                          heartbeat_s=1000.0, dead_after_s=10.0, batch_ms=0)
    node.attach_hub(hub.listen, hub.deliver_remote)
    return node


@pytest.mark.usefixtures("reactor")
async def test_a_dead_nodes_campaign_rows_are_requeued_once_by_one_survivor(
        pg: Database) -> None:
    clock = Clock()
    hub = EventHub(clock)
    campaigns = CampaignService(pg, AuditTrail(hub.publish, clock), hub.publish, clock, "n2",
                                None)
    cid = await campaigns.create("evacuate", [RecipientIn(f"+86138{i:08d}", "zh", "撤离")
                                              for i in range(10)], actor="cmd", public=False)
    async with pg.session() as s:  # n2 was submitting four of them when it died
        ids = list(await s.scalars(select(CampaignRecipientRow.id)
                                   .where(CampaignRecipientRow.campaign_id == cid)
                                   .order_by(CampaignRecipientRow.id).limit(4)))
        await s.execute(update(CampaignRecipientRow)
                        .where(CampaignRecipientRow.id.in_(ids))
                        .values(state="submitting", lease_owner="n2"))
    n1, n2, n3 = _node(pg, "n1", clock), _node(pg, "n2", clock), _node(pg, "n3", clock)
    for n in (n1, n2, n3):
        await n.start()
    try:
        assert await n2.acquire("radio", 10.0)
        assert not await n1.acquire("radio", 10.0)
        taken: list[str] = []
        n1.on_takeover(taken.append)
        assert await n1.sweep() == [] and await n3.sweep() == []  # everyone alive

        await n2.bridge.stop()  # SIGKILL: n2 beats no more
        assert n2._task is not None
        n2._task.cancel()
        clock.now += 11.0
        await n1.heartbeat()
        await n3.heartbeat()
        won = await asyncio.gather(n1.sweep(), n3.sweep())
        assert sorted(won, key=len) == [[], ["n2"]]  # exactly one survivor took over
        async with pg.session() as s:
            rows = list(await s.scalars(select(CampaignRecipientRow)
                                        .where(CampaignRecipientRow.id.in_(ids))))
            audit = list(await s.scalars(select(AuditEntry)
                                         .where(AuditEntry.action == "cluster.node_dead")))
        assert {(r.state, r.resend_replace, r.lease_owner) for r in rows} == {
            ("queued", True, None)}
        assert len(audit) == 1 and audit[0].details["campaign_recipients_requeued"] == 4
        assert await n1.sweep() == [] and await n3.sweep() == []  # never twice
        # n2's lease went with it: a survivor can take the radios now.
        assert await n1.acquire("radio", 10.0)
        assert not await n3.acquire("radio", 10.0)
        assert [n.alive for n in await n1.nodes()] == [True, False, True]
    finally:
        for n in (n1, n3):
            await n.stop()


@pytest.mark.usefixtures("reactor")
async def test_an_expired_lease_passes_to_another_node_and_the_old_holder_loses_it(
        pg: Database) -> None:
    clock = Clock()
    a, b = _node(pg, "la", clock), _node(pg, "lb", clock)
    assert await a.acquire("gateway:tetra1", 5.0)
    assert not await b.acquire("gateway:tetra1", 5.0)
    clock.now += 4.0
    assert await a.acquire("gateway:tetra1", 5.0)  # renewed: good until +9
    clock.now += 4.0
    assert not await b.acquire("gateway:tetra1", 5.0)
    clock.now += 2.0
    assert await b.acquire("gateway:tetra1", 5.0)
    assert a.holds("gateway:tetra1")
    assert not await a.acquire("gateway:tetra1", 5.0)


# ------------------------------------------------------------------ the ACD mirror


class _B2bua:
    """What the mirror drives: a real ACD engine and the B2BUA's agent_action."""

    def __init__(self, clock: Clock) -> None:
        settings = load_telephony({"queues": [{"name": "police"}], "agents": [
            {"id": "alice", "queues": ["police"]}, {"id": "bob", "queues": ["police"]}],
            "hotlines": [{"number": "110", "queue": "police"}], "routing": {"fallback": "110"}})
        self.acd = AcdEngine(settings.acd)
        self.clock = clock
        self.events: list[AgentStateChanged] = []

    def agent_action(self, agent_id: str, action: str, reason: str = "api") -> None:
        now = self.clock()
        if action == "login":
            self.acd.agent_login(agent_id, now)
        elif action == "logout":
            self.acd.agent_logout(agent_id, now, reason)
        else:
            self.acd.agent_state(agent_id, AgentState(action), now, reason)
        for event in self.acd.events():
            if isinstance(event, AgentStateChanged):
                self.events.append(event)

    def state(self, agent_id: str) -> str:
        return self.acd.agent_status(agent_id).state.value


def _remote(old: str, new: str, reason: str = "acd") -> dict[str, Any]:
    return {"agent_id": "alice", "old": old, "new": new, "at": 1.0, "reason": reason}


@pytest.mark.usefixtures("reactor")
async def test_agent_states_mirror_across_nodes_without_ping_pong(pg: Database) -> None:
    clock = Clock()
    b2 = _B2bua(clock)
    mirror = AcdCluster(pg, b2, "n2", clock)
    mirror.on_remote("n1", "agent_state_changed", _remote("logged_out", "ready", "registered"))
    assert b2.state("alice") == "ready"
    mirror.on_remote("n1", "agent_state_changed", _remote("ready", "ringing"))
    assert b2.state("alice") == "not_ready" and mirror.held == {"alice": "n1"}
    # What the mirror did is marked, so n1 ignores it when it comes back.
    assert b2.events[-1].reason.startswith("cluster:")
    mirror.on_remote("n2", "agent_state_changed",
                     _remote("ready", "not_ready", b2.events[-1].reason))
    mirror.on_remote("n1", "agent_state_changed", _remote("ringing", "busy"))
    assert b2.state("alice") == "not_ready"
    mirror.on_remote("n1", "agent_state_changed", _remote("busy", "ready"))
    assert b2.state("alice") == "ready" and mirror.held == {}
    # A remote login of an agent already logged in here changes nothing.
    b2.agent_action("alice", "not_ready", "api:alice")
    mirror.on_remote("n1", "agent_state_changed", _remote("logged_out", "ready", "login"))
    assert b2.state("alice") == "not_ready"
    b2.agent_action("alice", "ready", "api:alice")
    # n1 dies with alice on a call: the takeover frees her here.
    mirror.on_remote("n1", "agent_state_changed", _remote("ready", "busy"))
    assert b2.state("alice") == "not_ready"
    mirror.node_dead("n1")
    assert b2.state("alice") == "ready"
    mirror.on_remote("n1", "agent_state_changed", _remote("ready", "logged_out", "logout"))
    assert b2.state("alice") == "logged_out"


@pytest.mark.usefixtures("reactor")
async def test_agent_states_survive_a_restart(pg: Database) -> None:
    clock = Clock()
    first = _B2bua(clock)
    store = AcdCluster(pg, first, "n1", clock)
    await store.start()
    first.agent_action("alice", "login")
    first.agent_action("bob", "login")
    first.agent_action("bob", "not_ready", "api:bob")
    for n, event in enumerate(first.events):
        store.on_local(Envelope(n, clock(), "agent_state_changed", event))
    await store.stop()
    async with pg.session() as s:
        rows = {r.agent_id: r.state for r in await s.scalars(select(AcdAgentRow))}
    assert rows == {"alice": "ready", "bob": "not_ready"}

    second = _B2bua(clock)  # the node restarts: a fresh engine, everyone logged out
    restored = AcdCluster(pg, second, "n1", clock)
    await restored.start()
    await restored.stop()
    assert (second.state("alice"), second.state("bob")) == ("ready", "not_ready")


def test_remote_events_reach_consoles_but_not_local_listeners() -> None:
    clock = Clock()
    hub = EventHub(clock)
    heard: list[str] = []
    hub.listen(lambda env: heard.append(env.topic))
    loop = asyncio.new_event_loop()
    try:
        sub = hub.subscribe(["call_"])
        hub.deliver_remote("call_offered", 3.0, {"call_id": "x", "origin_node": "n2"})
        hub.deliver_remote("duty_log_added", 3.0, {"id": 1})
        env = sub.queue.get_nowait()
        assert env is not None and env.to_json()["data"] == {"call_id": "x",
                                                             "origin_node": "n2"}
        assert sub.queue.empty() and heard == []
    finally:
        loop.close()


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(("text", "expected"), [
    ("[cluster]\nenabled = true",
     "f.toml: cluster.enabled: a cluster shares one PostgreSQL"),
    ('[database]\nurl = "postgresql://x@h/db"\n[cluster]\nenabled = true\nnode = "a"',
     "f.toml: cluster.node: unknown key"),
    ('[database]\nurl = "postgresql://x@h/db"\n[cluster]\nheartbeat_s = 5.0',
     "f.toml: cluster: dead_after_s must be at least 3 x heartbeat_s"),
    ('[cluster]\nchannel = "bad channel"', "f.toml: cluster.channel:"),
    ('[cluster]\nnode_id = "a b"', "f.toml: cluster.node_id:"),
])
def test_cluster_settings_are_checked(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(tomllib.loads(text), "f.toml")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(expected), err.value.problems


def test_a_postgresql_cluster_node_is_accepted() -> None:
    settings = parse_settings(tomllib.loads(
        '[database]\nurl = "postgresql://x@h/db"\n[cluster]\nenabled = true\nnode_id = "n7"'),
        "f.toml")
    assert settings.cluster.enabled and settings.cluster.node_id == "n7"


# ------------------------------------------------------------------ a dead node's CDRs


@pytest.mark.usefixtures("reactor")
async def test_a_survivor_completes_the_dead_nodes_cdrs_from_its_events(pg: Database) -> None:
    clock = Clock(1_800_000_100.0)
    hub = EventHub(clock)
    refiled: list[int] = []

    async def refile() -> int:
        refiled.append(1)
        return 0

    shadow = CallShadow(pg, AuditTrail(hub.publish, clock), clock, refile=refile)

    def offered(call_id: str) -> dict[str, Any]:
        return {"call_id": call_id, "sip_call_id": f"sip-{call_id}", "caller": "13800000001",
                "called": "110", "hotline": "110", "queue": "police", "priority": 10,
                "trunk": "carrier", "route": "hotline", "at": 1_800_000_000.0}

    # c1: the dead node stored only the offer; it was answered and then hung up.
    # c2: never reached the database at all; answered, still live at the death.
    # c3: waiting in the queue at the death.  c4: complete in the database already.
    async with pg.session() as s:
        for call_id in ("c1", "c3", "c4"):
            s.add(CallRecordRow(id=call_id, sip_call_id=f"sip-{call_id}", caller="1",
                                called="110", hotline="110", queue="police", trunk="carrier",
                                priority=10, agent_id="", outcome=None, cause="",
                                released_by="", offered_at=dt.datetime.fromtimestamp(
                                    1_800_000_000, dt.UTC), timeline=[]))
    async with pg.session() as s:
        row = await s.get(CallRecordRow, "c4")
        assert row is not None
        row.answered_at = row.released_at = dt.datetime.fromtimestamp(1_800_000_050, dt.UTC)
        row.agent_id, row.outcome, row.cause, row.report_id = "bob", "answered", "agent", "r4"
    for call_id in ("c1", "c2", "c3", "c4"):
        shadow.note("n2", "call_offered", offered(call_id))
    for call_id, agent in (("c1", "alice"), ("c2", "carol"), ("c4", "mallory")):
        shadow.note("n2", "call_answered", {"call_id": call_id, "agent_id": agent,
                                            "queue": "police", "wait": 2.0,
                                            "at": 1_800_000_010.0})
    shadow.note("n2", "call_released", {"call_id": "c1", "cause": "caller_hangup",
                                        "by": "caller", "at": 1_800_000_020.0})
    shadow.note("n1", "call_offered", offered("elsewhere"))
    shadow.note("n2", "report_received", {"call_id": "ignored"})

    assert await shadow.repair("n2") == 3
    async with pg.session() as s:
        rows = {r.id: r for r in await s.scalars(select(CallRecordRow))}
    assert "elsewhere" not in rows
    c1, c2, c3, c4 = rows["c1"], rows["c2"], rows["c3"], rows["c4"]
    assert (c1.agent_id, c1.outcome, c1.cause, c1.released_by) == (
        "alice", "answered", "caller_hangup", "caller")
    assert c1.released_at == dt.datetime.fromtimestamp(1_800_000_020, dt.UTC)
    assert (c2.sip_call_id, c2.agent_id, c2.outcome, c2.cause) == (
        "sip-c2", "carol", "answered", "node_died")
    assert c2.released_at == dt.datetime.fromtimestamp(1_800_000_100, dt.UTC)
    assert (c3.answered_at, c3.outcome, c3.cause) == (None, "abandoned", "node_died")
    assert (c4.agent_id, c4.cause) == ("bob", "agent")  # never overwritten
    assert refiled == [1]
    assert await shadow.repair("n2") == 0  # forgotten once repaired


# ------------------------------------------------------------------ the radio lease


class _Gateways:
    """A service that records whether it runs (the radio gateways' lifecycle)."""

    name = "radio"

    def __init__(self) -> None:
        self.running = False
        self.stops = 0

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False
        self.stops += 1


@pytest.mark.usefixtures("reactor")
async def test_one_node_drives_the_radios_and_a_survivor_takes_them_over(
        pg: Database) -> None:
    clock = Clock()
    n1, n2 = _node(pg, "r1", clock), _node(pg, "r2", clock)
    g1, g2 = _Gateways(), _Gateways()
    s1, s2 = LeasedService(g1, n1, "radio", 10.0), LeasedService(g2, n2, "radio", 10.0)
    await n1.start()
    await n2.start()
    try:
        await s1.start()
        with pytest.raises(RuntimeError, match="held by another node; standing by"):
            await s2.start()
        assert (g1.running, g2.running) == (True, False)
        assert s1.health()["lease_held"] and not s2.health()["lease_held"]

        # r1 stalls past its lease and r2's retry takes the radios over...
        clock.now += 11.0
        await s2.start()
        assert g2.running
        # ...and r1, beating again, finds the lease gone and lets go of its gateways.
        await n1.heartbeat()
        assert not g1.running and g1.stops == 1

        await s2.stop()  # a clean stop gives the lease back at once
        assert not g2.running
        await s1.start()
        assert g1.running
        await s1.stop()
    finally:
        await n1.stop()
        await n2.stop()


# ------------------------------------------------------------------ forwarding


async def test_call_commands_go_to_the_owning_node_once_and_never_bounce() -> None:
    import httpx
    from fastapi import FastAPI

    from dispatch.cluster_forward import ForwardCallCommands

    app = FastAPI()
    handled: list[str] = []

    @app.post("/api/v1/calls/{call_id}/release")
    async def release(call_id: str) -> dict[str, str]:
        handled.append(call_id)
        return {"here": call_id}

    async def url_of(node: str) -> str | None:
        return {"n2": "http://127.0.0.1:9"}.get(node)  # nothing listens on port 9

    app.add_middleware(ForwardCallCommands, node="n1",
                       owner={"c-b": "n2", "c-gone": "n3"}.get,
                       url_of=url_of, is_local=lambda call_id: call_id == "c-a")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://n1") as c:
        assert (await c.post("/api/v1/calls/c-a/release", json={})).json() == {"here": "c-a"}
        # Owned by n2, which does not answer: 502, not a silent local 404.
        r = await c.post("/api/v1/calls/c-b/release", json={"reason": "x"})
        assert r.status_code == 502 and "did not answer" in r.text
        # Already forwarded once: handled here whatever the directory says.
        r = await c.post("/api/v1/calls/c-b/release", json={},
                         headers={"X-Dispatchd-Forwarded": "n3"})
        assert r.json() == {"here": "c-b"}
        # A node that is gone (no URL): handled here (the route answers as on one node).
        assert (await c.post("/api/v1/calls/c-gone/release", json={})).json() == {
            "here": "c-gone"}
        r = await c.post("/api/v1/calls/c-b/release", content=b"x" * 70_000)
        assert r.status_code == 413
    assert handled == ["c-a", "c-b", "c-gone"]


async def test_radio_commands_go_to_the_lease_holder_once_and_only_when_not_local() -> None:
    import httpx
    from fastapi import FastAPI

    from dispatch.cluster_radio import ForwardRadioCommands

    app = FastAPI()
    handled: list[str] = []

    @app.post("/api/v1/radio/talkgroups/{name}/ptt")
    async def press(name: str) -> dict[str, str]:
        handled.append(name)
        return {"here": name}

    @app.post("/api/v1/calls/{call_id}/release")
    async def release(call_id: str) -> dict[str, str]:
        handled.append(call_id)
        return {"here": call_id}

    state: dict[str, Any] = {"local": False, "holder": ("n2", "http://127.0.0.1:9")}

    async def is_local() -> bool:
        return bool(state["local"])

    async def holder() -> tuple[str, str] | None:
        if isinstance(state["holder"], Exception):
            raise state["holder"]
        return state["holder"]  # type: ignore[no-any-return]

    app.add_middleware(ForwardRadioCommands, node="n1", is_local=is_local, holder=holder)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://n1") as c:
        # Held by n2, which does not answer (nothing listens on port 9): 502, not a refusal.
        r = await c.post("/api/v1/radio/talkgroups/fire/ptt")
        assert r.status_code == 502 and "drives the radio gateways did not answer" in r.text
        # Not a radio path: never forwarded by this middleware.
        assert (await c.post("/api/v1/calls/c1/release")).json() == {"here": "c1"}
        # Already forwarded once: handled here.
        r = await c.post("/api/v1/radio/talkgroups/a/ptt",
                         headers={"X-Dispatchd-Forwarded": "n2"})
        assert r.json() == {"here": "a"}
        # This node drives the radios, or holds the lease itself, or nobody does, or the
        # database cannot say: handled here (the guard refuses when it must).
        state["local"] = True
        assert (await c.post("/api/v1/radio/talkgroups/b/ptt")).json() == {"here": "b"}
        state["local"] = False
        for held in (("n1", "http://n1"), None, OSError("database down")):
            state["holder"] = held
            assert (await c.post("/api/v1/radio/talkgroups/c/ptt")).json() == {"here": "c"}
    assert handled == ["c1", "a", "b", "c", "c", "c"]
