"""Several dispatchd nodes sharing one PostgreSQL: events, heartbeats, leases, takeover.

Theory of operation.

*Events.*  Every event this node publishes on its hub is also sent to the
other nodes with PostgreSQL ``NOTIFY`` on one channel.  A NOTIFY payload is
limited to 8000 bytes, so events are batched (``batch_ms``) into compact JSON
payloads of at most :data:`PAYLOAD_LIMIT` bytes; an event too large on its
own is cut down to its scalar fields (ids, states, names) with
``"truncated": true`` — a console fetches the rest over the API by id.  A
payload names its node, so a node drops its own (PostgreSQL delivers a
NOTIFY to every listener, the sender included).  Remote events reach the
consoles' subscriptions only (:meth:`EventHub.deliver_remote`), never the
in-process listeners, so one event never triggers a plan or a campaign on two
nodes; a few named handlers (the ACD mirror) see them through
:meth:`ClusterService.on_remote`.  The listening connection is watched: when
it drops, the bridge reconnects with back-off; events published meanwhile are
kept in a bounded buffer (the oldest are dropped, with a count — consoles
reload on reconnect anyway).

*Nodes.*  Each node upserts its row in ``cluster_nodes`` and refreshes
``heartbeat_at`` every ``heartbeat_s``.  A node whose heartbeat is older than
``dead_after_s`` is dead.  The first survivor to flip its ``alive`` flag
(a conditional UPDATE: exactly one wins) takes over in the same transaction:
campaign recipients the dead node was submitting go back to the queue with
``resend_replace`` (the SMSC replaces rather than duplicates, as after a
restart), and its leases are released.  Time comes from the injected clock.

*Leases.*  ``cluster_leases`` rows name a resource held by one node until
``expires_at``; the holder renews them with its heartbeat.  The radio
gateways of a cluster are one lease (:class:`LeasedService`, in
dispatch/cluster_lease.py): one node drives them, a survivor takes them over
when the lease expires, and a node that lost it stands by to take it again.

*Fencing* (see dispatch/fencing.py).  A node that stalls past
``dead_after_s`` (SIGSTOP, GC pause, starvation) is taken over while it still
lives.  Node rows and lease rows carry a ``generation`` (fencing token): a
node's goes up when it (re)announces itself and when a survivor takes it over;
a lease's goes up whenever it changes hands.  The heartbeat, lease renewals
and campaign claims match the token in the statement that acts, and the node
acts only within ``dead_after_s - heartbeat_s`` of its last committed
heartbeat (monotonic clock).  A node that wakes to find its row's generation
changed is *fenced off*: it drops every lease (the radio gateways stop, PTT
released first), abandons its in-flight campaign batch (a survivor owns those
rows now), and rejoins with a new generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url

from dispatch.audit import AuditTrail
from dispatch.cluster_lease import LeasedService as LeasedService
from dispatch.events import Envelope, to_jsonable
from dispatch.models import CampaignRecipientRow, ClusterLeaseRow, ClusterNodeRow
from dispatch.storage import Database

log = logging.getLogger(__name__)

#: PostgreSQL's NOTIFY payload limit is 8000 bytes; keep a margin.
PAYLOAD_LIMIT = 7900
#: Events kept while the bridge is disconnected (oldest dropped first).
BACKLOG_LIMIT = 10_000
#: Strings longer than this are dropped from a truncated event.
_SCALAR_MAX = 120
#: Call ids remembered with their owning node (for forwarding supervisor commands).
CALL_DIRECTORY_SIZE = 50_000

RemoteHandler = Callable[[str, str, dict[str, Any]], None]


class PayloadError(ValueError):
    """A NOTIFY payload that is not ours or is malformed (logged and dropped)."""


# ----------------------------------------------------------------- codec (pure)


def compact_event(data: Any, limit: int = PAYLOAD_LIMIT) -> Any:
    """The event's data, cut down to its short scalar fields if its JSON exceeds ``limit``."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(text.encode()) <= limit or not isinstance(data, dict):
        return data if len(text.encode()) <= limit else {"truncated": True}
    kept: dict[str, Any] = {"truncated": True}
    for key, value in data.items():
        if isinstance(value, bool | int | float) or value is None or (
                isinstance(value, str) and len(value) <= _SCALAR_MAX):
            kept[key] = value
    return kept


def encode_batch(node: str, items: Iterable[tuple[str, float, Any]],
                 limit: int = PAYLOAD_LIMIT) -> list[tuple[str, int]]:
    """Pack ``(topic, at, data)`` items into few payloads of at most ``limit`` bytes.

    Returns ``(payload, number of events in it)`` pairs, in order.
    """
    head = json.dumps({"n": node, "e": []}, separators=(",", ":"))
    budget = limit - len(head.encode())
    payloads: list[tuple[str, int]] = []
    current: list[str] = []
    size = 0
    for topic, at, data in items:
        piece = _piece(topic, at, data, budget - 200)
        cost = len(piece.encode()) + 1
        if current and size + cost > budget:
            payloads.append((_wrap(node, current), len(current)))
            current, size = [], 0
        current.append(piece)
        size += cost
    if current:
        payloads.append((_wrap(node, current), len(current)))
    return payloads


def _piece(topic: str, at: float, data: Any, limit: int) -> str:
    """``[topic, at, data]`` as compact JSON, the data serialised once (cut down if too big).

    The same text ``json.dumps([topic, at, compact_event(data, limit)])`` gives.
    """
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(text) * 4 > limit and len(text.encode()) > limit:  # UTF-8: at most 4 bytes a char
        text = json.dumps(compact_event(data, limit), separators=(",", ":"),
                          ensure_ascii=False, default=str)
    return "[" + json.dumps(topic, ensure_ascii=False) + "," + json.dumps(at) + "," + text + "]"


def _wrap(node: str, pieces: list[str]) -> str:
    return '{"n":' + json.dumps(node) + ',"e":[' + ",".join(pieces) + "]}"


def decode_payload(text: str, limit: int = 8000) -> tuple[str, list[tuple[str, float, Any]]]:
    """``(node, items)`` from a payload; :class:`PayloadError` if it is not a valid one."""
    if len(text.encode()) > limit:
        raise PayloadError("payload larger than a NOTIFY can carry")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("n"), str) or not isinstance(
            doc.get("e"), list):
        raise PayloadError("not an event batch")
    items: list[tuple[str, float, Any]] = []
    for entry in doc["e"]:
        if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                or not isinstance(entry[1], int | float) or len(entry[0]) > 100):
            raise PayloadError("bad event entry")
        items.append((entry[0], float(entry[1]), entry[2]))
    return doc["n"], items


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+asyncpg://``) as a plain libpq DSN for asyncpg."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError("the cluster needs PostgreSQL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def dead_nodes(rows: Iterable[tuple[str, dt.datetime, bool]], me: str, now: dt.datetime,
               dead_after_s: float) -> list[str]:
    """Nodes (other than ``me``) still marked alive whose heartbeat is too old."""
    cutoff = now - dt.timedelta(seconds=dead_after_s)
    return [node for node, beat, alive in rows if alive and node != me and beat < cutoff]


_NODE_ROWS = select(ClusterNodeRow.node_id, ClusterNodeRow.heartbeat_at, ClusterNodeRow.alive)


class CallDirectory:
    """Which node owns which live call, learnt from the nodes' call events (bounded)."""

    def __init__(self, size: int = CALL_DIRECTORY_SIZE) -> None:
        """An empty directory keeping at most ``size`` calls."""
        self.size = size
        self._calls: OrderedDict[str, str] = OrderedDict()

    def note(self, topic: str, node: str, data: Any) -> None:
        """Learn from one event: offered/answered calls are live, released ones are gone."""
        if not topic.startswith("call_") or not isinstance(data, dict):
            return
        call_id = data.get("call_id")
        if not isinstance(call_id, str):
            return
        if topic == "call_released":
            self._calls.pop(call_id, None)
            return
        self._calls[call_id] = node
        self._calls.move_to_end(call_id)
        while len(self._calls) > self.size:
            self._calls.popitem(last=False)

    def owner(self, call_id: str) -> str | None:
        """The node that owns ``call_id``, if another node announced it."""
        return self._calls.get(call_id)

    def forget_node(self, node: str) -> None:
        """A node died: its calls died with it."""
        for call_id in [c for c, n in self._calls.items() if n == node]:
            del self._calls[call_id]


# ----------------------------------------------------------------- the bridge


class EventBridge:
    """LISTEN/NOTIFY between nodes: sends this node's events, delivers the others'."""

    def __init__(self, dsn: str, node: str, channel: str,
                 deliver: Callable[[str, str, float, Any], None], *, batch_ms: int = 20,
                 connect: Callable[[str], Awaitable[Any]] | None = None) -> None:
        """``deliver(node, topic, at, data)`` is called for every remote event."""
        self.dsn, self.node, self.channel = dsn, node, channel
        self.deliver = deliver
        self.batch_s = batch_ms / 1000.0
        self._connect = connect or _asyncpg_connect
        self._conn: Any = None
        self._pending: deque[tuple[str, float, Any]] = deque()
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent = self.received = self.dropped = self.bad = self.reconnects = 0
        self.connected = False

    async def start(self) -> None:
        """Connect (raise if PostgreSQL is unreachable now) and start the sender."""
        await self._open()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-bridge")

    async def stop(self) -> None:
        """Send what is pending, then close."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3.0):
                    await self._task
        await self._close()

    def offer(self, env: Envelope, data: Any = None) -> None:
        """A hub listener: queue one local event for the other nodes (never blocks).

        ``data`` is the event as JSON data when the caller has it already."""
        if len(self._pending) >= BACKLOG_LIMIT:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append((env.topic, env.at,
                              to_jsonable(env.event) if data is None else data))
        if not self._wake.is_set():
            self._wake.set()

    async def _open(self) -> None:
        conn = await self._connect(self.dsn)
        self._lost.clear()
        conn.add_termination_listener(lambda _c: self._lost.set())
        await conn.add_listener(self.channel, self._on_notify)
        self._conn = conn
        self.connected = True

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.connected = False
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await conn.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            node, items = decode_payload(payload)
        except PayloadError as exc:
            self.bad += 1
            log.warning("dropped a bad cluster event payload: %s", exc)
            return
        if node == self.node:
            return  # our own NOTIFY comes back to us too
        for topic, at, data in items:
            self.received += 1
            try:
                self.deliver(node, topic, at, data)
            except Exception:  # a handler's bug must not stop the others
                log.exception("remote event handler failed", extra={"topic": topic})

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            if self._conn is None or self._lost.is_set():
                if self._stopping:
                    return
                await self._close()
                try:
                    await self._open()
                    self.reconnects += 1
                    backoff = 0.5
                    log.info("cluster event bridge reconnected")
                except Exception as exc:
                    log.warning("cluster event bridge cannot reconnect: %s", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                continue
            if self.batch_s and not self._stopping:
                await asyncio.sleep(self.batch_s)  # let a burst gather into few NOTIFYs
            await self._flush()

    async def _flush(self) -> None:
        items = list(self._pending)
        for payload, count in encode_batch(self.node, items):
            try:
                await self._conn.execute("SELECT pg_notify($1, $2)", self.channel, payload)
            except Exception as exc:
                log.warning("cluster event bridge lost its connection: %s", exc)
                self._lost.set()
                return  # what was not sent stays pending for the reconnect
            for _ in range(min(count, len(self._pending))):
                self._pending.popleft()
            self.sent += count

    def health(self) -> dict[str, Any]:
        """Counters for /health."""
        return {"connected": self.connected, "sent": self.sent, "received": self.received,
                "pending": len(self._pending), "dropped": self.dropped, "bad": self.bad,
                "reconnects": self.reconnects}


async def _asyncpg_connect(dsn: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    return await asyncpg.connect(dsn)


# ----------------------------------------------------------------- the service


@dataclass(frozen=True)
class NodeInfo:
    """A node of the cluster as the others see it."""

    node_id: str
    http_url: str
    alive: bool


class ClusterService:
    """The ``cluster`` service: heartbeat, event bridge, takeover of dead nodes, leases."""

    name = "cluster"

    def __init__(self, db: Database, audit: AuditTrail, clock: Callable[[], float], *,
                 node_id: str, lease_name: str, http_url: str, channel: str,
                 heartbeat_s: float, dead_after_s: float, batch_ms: int = 20,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """Keep the parts; nothing runs until :meth:`start`.

        ``lease_name`` is the name this node's campaign leases carry (``node.name``);
        ``monotonic`` times how long ago a heartbeat was committed (fencing).
        """
        self.db, self.audit, self.clock = db, audit, clock
        self.node_id, self.lease_name, self.http_url = node_id, lease_name, http_url
        self.heartbeat_s, self.dead_after_s = heartbeat_s, dead_after_s
        self.calls = CallDirectory()
        self.bridge = EventBridge(asyncpg_dsn(db.url), node_id, channel, self._deliver,
                                  batch_ms=batch_ms)
        self._remote: list[RemoteHandler] = []
        self._local_only: list[Callable[[Envelope], bool]] = []
        self._on_takeover: list[Callable[[str], None]] = []
        self._hub_deliver: Callable[[str, float, dict[str, Any]], object] | None = None
        self._leases: dict[str, float] = {}
        self._lost: dict[str, Callable[[], Awaitable[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.takeovers = 0
        self.monotonic = monotonic
        self._generation = 0
        self._confirmed_at: float | None = None  # monotonic time of the last good beat
        self._beat_lock = asyncio.Lock()
        self._confirming: asyncio.Task[bool] | None = None
        self._lease_gen: dict[str, int] = {}
        self._on_fenced: list[Callable[[], Awaitable[None]]] = []
        self.fenced = 0
        self._seen: list[tuple[str, dt.datetime, bool]] | None = None  # read by heartbeat

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    # -- wiring ------------------------------------------------------------------

    def attach_hub(self, listen: Callable[[Callable[[Envelope], None]], object],
                   deliver: Callable[[str, float, dict[str, Any]], object]) -> None:
        """Send the hub's events to the other nodes; deliver theirs to its subscribers."""
        listen(self._local)
        self._hub_deliver = deliver

    def on_remote(self, handler: RemoteHandler) -> None:
        """Call ``handler(node, topic, data)`` for every event of another node."""
        self._remote.append(handler)

    def on_takeover(self, handler: Callable[[str], None]) -> None:
        """Call ``handler(dead_node_id)`` after this node took a dead node's work over."""
        self._on_takeover.append(handler)

    def keep_local(self, predicate: Callable[[Envelope], bool]) -> None:
        """Events for which ``predicate`` is true are not sent to the other nodes."""
        self._local_only.append(predicate)

    def _local(self, env: Envelope) -> None:
        for keep in self._local_only:
            if keep(env):
                return
        data = to_jsonable(env.event)
        self.bridge.offer(env, data)
        if env.topic.startswith("call_"):
            self.calls.note(env.topic, self.node_id, data)

    def _deliver(self, node: str, topic: str, at: float, data: Any) -> None:
        payload = dict(data) if isinstance(data, dict) else {"value": data}
        payload["origin_node"] = node
        self.calls.note(topic, node, payload)
        if self._hub_deliver is not None:
            self._hub_deliver(topic, at, payload)
        for handler in list(self._remote):
            try:
                handler(node, topic, payload)
            except Exception:
                log.exception("cluster remote handler failed", extra={"topic": topic})

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Announce this node, connect the bridge, start the heartbeat."""
        await self._announce()
        await self.bridge.start()
        await self.sweep()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="cluster")
        log.info("cluster node up", extra={"node": self.node_id, "url": self.http_url})

    async def stop(self) -> None:
        """Stop beating, give up leases, leave the cluster cleanly (not dead: stopped)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.bridge.stop()
        with contextlib.suppress(Exception):
            async with self.db.session() as s:
                # The campaign sender stopped before us; what it could not settle goes
                # back to the queue now (to be replaced, not duplicated), so a survivor
                # sends it even if this node never comes back.
                await s.execute(
                    update(CampaignRecipientRow)
                    .where(CampaignRecipientRow.state == "submitting",
                           CampaignRecipientRow.lease_owner == self.lease_name)
                    .values(state="queued", resend_replace=True, lease_owner=None,
                            lease_gen=None, updated_at=self._now()))
                await s.execute(update(ClusterLeaseRow).where(
                    ClusterLeaseRow.owner == self.node_id).values(
                        expires_at=self._now() - dt.timedelta(seconds=1)))
                await s.execute(update(ClusterNodeRow).where(
                    ClusterNodeRow.node_id == self.node_id).values(alive=False))

    def health(self) -> dict[str, Any]:
        """This node's id, the bridge's counters, leases held and takeovers done."""
        return {"node": self.node_id, "bridge": self.bridge.health(),
                "leases": sorted(self._leases), "takeovers": self.takeovers,
                "generation": self._generation, "may_act": self.may_act(),
                "fenced": self.fenced}

    async def _announce(self) -> None:
        mono, now = self.monotonic(), self._now()
        values = {"node_id": self.node_id, "lease_name": self.lease_name,
                  "http_url": self.http_url, "pid": os.getpid(), "started_at": now,
                  "heartbeat_at": now, "alive": True}
        stmt = pg_insert(ClusterNodeRow).values(**values, generation=1)
        set_: dict[str, Any] = {k: stmt.excluded[k] for k in values if k != "node_id"}
        set_["generation"] = ClusterNodeRow.generation + 1
        async with self.db.session() as s:
            generation = (await s.execute(stmt.on_conflict_do_update(
                index_elements=["node_id"], set_=set_).returning(
                    ClusterNodeRow.generation))).scalar_one()
        self._generation, self._confirmed_at = int(generation), mono

    # -- fencing (dispatch.fencing.Fence) ------------------------------------------

    @property
    def generation(self) -> int:
        """This node's fencing token (its row's generation when it announced itself)."""
        return self._generation

    def may_act(self) -> bool:
        """True within ``dead_after_s - heartbeat_s`` of the last committed heartbeat."""
        return (self._confirmed_at is not None and self.monotonic() - self._confirmed_at
                < self.dead_after_s - self.heartbeat_s)

    async def confirm(self, generation: int) -> bool:
        """True if this node may act on what it claimed under ``generation``.

        When the local window has run out (a stall), one heartbeat (shared by every
        caller) settles it: a node taken over meanwhile rejoins with a new
        generation, so what it claimed before is no longer its own.
        """
        if generation != self._generation:
            return False
        if self.may_act():
            return True
        if self._confirming is None:
            self._confirming = asyncio.get_running_loop().create_task(self._confirm_now())
        return await asyncio.shield(self._confirming) and generation == self._generation

    async def _confirm_now(self) -> bool:
        try:
            await self.heartbeat()
        except Exception:
            log.exception("cluster heartbeat failed; this node does not act meanwhile")
        finally:
            self._confirming = None
        return self.may_act()

    def still_mine(self) -> ColumnElement[bool]:
        """SQL true only while this node's row is alive and carries its generation."""
        return exists().where(ClusterNodeRow.node_id == self.node_id,
                              ClusterNodeRow.generation == self._generation,
                              ClusterNodeRow.alive.is_(True))

    def on_fenced(self, handler: Callable[[], Awaitable[None]]) -> None:
        """Await ``handler()`` when this node finds it was taken over while it stalled."""
        self._on_fenced.append(handler)

    async def _fence_off(self) -> None:
        self._confirmed_at = None
        self.fenced += 1
        log.error("this node was declared dead while it stalled; it stops acting on what it "
                  "held and rejoins", extra={"generation": self._generation,
                                             "leases": sorted(self._leases)})
        for name in list(self._leases):
            self._leases.pop(name, None)
            self._lease_gen.pop(name, None)
            lost = self._lost.get(name)
            if lost is not None:
                await lost()
        for handler in list(self._on_fenced):
            try:
                await handler()
            except Exception:
                log.exception("fencing handler failed")
        await self._announce()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.heartbeat()
                rows, self._seen = self._seen, None
                await self.sweep(rows)
            except Exception:  # a database outage: keep beating when it is back
                log.exception("cluster heartbeat failed")

    async def heartbeat(self) -> None:
        """Refresh this node's heartbeat and renew its leases (fenced off if taken over)."""
        async with self._beat_lock:
            mono, now = self.monotonic(), self._now()
            # A Core transaction, not an ORM session: this runs every heartbeat_s on
            # every node, and the ORM's bulk-update bookkeeping is most of its cost.
            async with self.db.transaction() as tx:
                # Only while the row still carries our generation: a survivor that took
                # us over bumped it, and then nothing we held is ours any more.
                result = await tx.conn.execute(
                    update(ClusterNodeRow).where(ClusterNodeRow.node_id == self.node_id,
                                                 ClusterNodeRow.generation == self._generation,
                                                 ClusterNodeRow.alive.is_(True))
                    .values(heartbeat_at=now))
                # The nodes' rows for the sweep that follows: one transaction, not two.
                self._seen = [(r[0], r[1], r[2]) for r in await tx.conn.execute(
                    _NODE_ROWS)] if getattr(result, "rowcount", 0) else None
            if not getattr(result, "rowcount", 0):
                await self._fence_off()
                return
            self._confirmed_at = mono
            for name in list(self._leases):
                if not await self.acquire(name, self._leases[name]):
                    log.error("lost the cluster lease %s to another node", name)
                    self._leases.pop(name, None)
                    self._lease_gen.pop(name, None)
                    lost = self._lost.get(name)
                    if lost is not None:
                        await lost()

    def on_lease_lost(self, name: str, handler: Callable[[], Awaitable[None]]) -> None:
        """Await ``handler()`` when this node finds lease ``name`` taken by another."""
        self._lost[name] = handler

    async def sweep(self, rows: list[tuple[str, dt.datetime, bool]] | None = None
                    ) -> list[str]:
        """Take over every node found dead; returns the ones this node took over.

        ``rows`` are the nodes' ``(node_id, heartbeat_at, alive)`` if just read."""
        now = self._now()
        if rows is None:
            async with self.db.transaction() as tx:
                rows = [(r[0], r[1], r[2]) for r in await tx.conn.execute(_NODE_ROWS)]
        taken = []
        for node in dead_nodes(rows, self.node_id, now, self.dead_after_s):
            if await self._take_over(node, now):
                taken.append(node)
        return taken

    async def _take_over(self, node: str, now: dt.datetime) -> bool:
        cutoff = now - dt.timedelta(seconds=self.dead_after_s)
        async with self.db.session() as s:
            # Exactly one survivor wins this UPDATE; it does the takeover in the same
            # transaction, so a crash half-way leaves the node alive for the next sweep.
            # The generation goes up: whatever the node does if it was only stalled
            # is fenced off (its heartbeat, claims and renewals match the old one).
            won = await s.execute(
                update(ClusterNodeRow)
                .where(ClusterNodeRow.node_id == node, ClusterNodeRow.alive.is_(True),
                       ClusterNodeRow.heartbeat_at < cutoff)
                .values(alive=False, generation=ClusterNodeRow.generation + 1)
                .returning(ClusterNodeRow.lease_name))
            lease_name = won.scalar()
            if lease_name is None:
                return False
            requeued = await s.execute(
                update(CampaignRecipientRow)
                .where(CampaignRecipientRow.state == "submitting",
                       CampaignRecipientRow.lease_owner == lease_name)
                .values(state="queued", resend_replace=True, lease_owner=None,
                        lease_gen=None, updated_at=now))
            # Expired, not deleted: the next holder's generation continues from this one.
            released = await s.execute(update(ClusterLeaseRow).where(
                ClusterLeaseRow.owner == node).values(expires_at=now - dt.timedelta(
                    seconds=1)))
            details = {"by": self.node_id,
                       "campaign_recipients_requeued": int(getattr(requeued, "rowcount", 0) or 0),
                       "leases_released": int(getattr(released, "rowcount", 0) or 0)}
            self.audit.record(s, actor="system", action="cluster.node_dead",
                              subject=f"node:{node}", details=details)
        self.takeovers += 1
        self.calls.forget_node(node)
        log.warning("cluster node is dead; its work was taken over",
                    extra={"dead_node": node, **details})
        for handler in list(self._on_takeover):
            try:
                handler(node)
            except Exception:
                log.exception("takeover handler failed")
        return True

    # -- leases ------------------------------------------------------------------

    async def acquire(self, name: str, ttl_s: float) -> bool:
        """Take or renew lease ``name`` for ``ttl_s``; False while another node holds it.

        A renewal matches the lease's generation (fencing token); taking a lease
        over (expired, or this node's own from before a restart) bumps it.
        """
        now = self._now()
        expires = now + dt.timedelta(seconds=ttl_s)
        held = self._lease_gen.get(name)
        if held is not None:
            async with self.db.transaction() as tx:
                renewed = await tx.conn.execute(update(ClusterLeaseRow).where(
                    ClusterLeaseRow.name == name, ClusterLeaseRow.owner == self.node_id,
                    ClusterLeaseRow.generation == held).values(expires_at=expires))
            if getattr(renewed, "rowcount", 0):
                self._leases[name] = ttl_s
                return True
            return False
        async with self.db.session() as s:
            base = pg_insert(ClusterLeaseRow).values(
                name=name, owner=self.node_id, expires_at=expires, acquired_at=now,
                generation=1)
            stmt = base.on_conflict_do_update(
                index_elements=["name"],
                set_={"owner": base.excluded.owner, "expires_at": base.excluded.expires_at,
                      "acquired_at": base.excluded.acquired_at,
                      "generation": ClusterLeaseRow.generation + 1},
                where=(ClusterLeaseRow.owner == self.node_id) | (ClusterLeaseRow.expires_at < now),
            ).returning(ClusterLeaseRow.owner, ClusterLeaseRow.generation)
            row = (await s.execute(stmt)).first()
        if row is not None and row[0] == self.node_id:
            self._leases[name] = ttl_s
            self._lease_gen[name] = int(row[1])
            return True
        return False

    async def release(self, name: str) -> None:
        """Give lease ``name`` up (if this node holds it): it expires now."""
        self._leases.pop(name, None)
        self._lease_gen.pop(name, None)
        now = self._now()
        async with self.db.session() as s:
            await s.execute(update(ClusterLeaseRow).where(
                ClusterLeaseRow.name == name, ClusterLeaseRow.owner == self.node_id).values(
                    expires_at=now - dt.timedelta(seconds=1)))

    def holds(self, name: str) -> bool:
        """True while this node holds lease ``name``."""
        return name in self._leases

    def lease_generation(self, name: str) -> int | None:
        """The fencing token of lease ``name`` while this node holds it."""
        return self._lease_gen.get(name)

    async def nodes(self) -> list[NodeInfo]:
        """Every node the cluster has seen."""
        async with self.db.session() as s:
            return [NodeInfo(r.node_id, r.http_url, r.alive) for r in await s.scalars(
                select(ClusterNodeRow).order_by(ClusterNodeRow.node_id))]

    async def url_of(self, node: str) -> str | None:
        """The HTTP URL of a live node."""
        async with self.db.session() as s:
            row = await s.get(ClusterNodeRow, node)
        return row.http_url if row is not None and row.alive else None
