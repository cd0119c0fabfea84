"""Call takers' ACD state: persisted (survives a restart) and mirrored across nodes.

Decision: every node runs its own ACD engine over the same configured
queues and agents, and a *mirror* keeps their agent states in step through
the cluster's event bridge (PostgreSQL NOTIFY, a millisecond on a LAN), not a
row lock on the call path: taking a lock per offer would put a database round
trip between every caller and every agent.  When an agent rings, talks or
wraps up on node A, every other node holds that agent NOT_READY (reason
``cluster:…``) and frees them when A says READY again; logins and logouts are
mirrored the same way.  Changes made *by* the mirror carry the ``cluster:``
reason and are never mirrored back, so nothing ping-pongs.  The one race left
is two nodes offering the same agent in the same millisecond: the phone
answers the second INVITE 486 Busy, and that node's ACD re-queues the call to
the next agent — a caller is never lost, at worst rung a moment later.

A node that dies leaves agents held on the others; the cluster's takeover
hook frees them (their phones are still registered in the shared store).

Persistence: every change not made by the mirror is written (batched, off
the call path) to ``acd_agents``; a starting node logs in again every agent
stored as logged in, with their ready / not-ready choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from dispatch.events import Envelope
from dispatch.models import AcdAgentRow
from dispatch.storage import Database

log = logging.getLogger(__name__)

MIRROR = "cluster:"  # also known to dispatch.call_records (not audited)
TOPIC = "agent_state_changed"
_OFFERED = frozenset({"ringing", "busy", "wrap_up", "not_ready"})
WRITE_QUEUE = 10_000
FLUSH_S = 0.25
"""How long the writer gathers changes before a write: a call moves its agent through
ringing, busy, wrap-up and ready within seconds, and only the newest state is stored."""


class AcdCluster:
    """The ``acd_state`` service: restores agents at start, persists and mirrors changes.

    ``b2bua`` is the SIP side's B2BUA (``agent_action`` and ``acd``); ``bindings``
    the registrar's cached binding store (its entries are dropped when another
    node changes a registration).
    """

    name = "acd_state"

    def __init__(self, db: Database, b2bua: Any, node: str, clock: Callable[[], float],
                 bindings: Any = None, flush_s: float = FLUSH_S) -> None:
        """Keep the parts; nothing runs until :meth:`start`.

        ``flush_s`` is how long changes are gathered before they are written."""
        self.flush_s = flush_s
        self._stopping = asyncio.Event()
        self.db, self.b2bua, self.node, self.clock = db, b2bua, node, clock
        self.bindings = bindings
        self.held: dict[str, str] = {}  # agent id -> node whose call holds them here
        self._queue: asyncio.Queue[tuple[str, str, str] | None] = asyncio.Queue(WRITE_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self.written = self.mirrored = self.lost_writes = 0

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Log in again every agent stored as logged in, then start the writer."""
        restored = await self.restore()
        if restored:
            log.info("call takers restored from the database", extra={"agents": restored})
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="acd-state")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is not None:
            self._stopping.set()  # ends the writer's gathering at once
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3.0):
                    await self._task

    def health(self) -> dict[str, Any]:
        """Counters and how many agents are held for other nodes."""
        return {"written": self.written, "mirrored": self.mirrored, "held": len(self.held),
                "lost_writes": self.lost_writes}

    async def restore(self) -> int:
        """Log in every configured agent stored as logged in; returns how many."""
        async with self.db.session() as s:
            rows = [(r.agent_id, r.state) for r in await s.scalars(select(AcdAgentRow))]
        done = 0
        for agent_id, state in rows:
            if state == "logged_out" or not self._logged_out(agent_id):
                continue
            if self._act(agent_id, "login", "restored"):
                done += 1
                if state == "not_ready":
                    self._act(agent_id, "not_ready", "restored")
        return done

    # -- local changes: persist --------------------------------------------------

    def on_local(self, env: Envelope) -> None:
        """Hub listener: queue this node's own agent changes for the database."""
        if env.topic != TOPIC:
            return
        event = env.event
        reason = str(getattr(event, "reason", ""))
        if reason.startswith(MIRROR):
            return
        new = getattr(event, "new", None)
        state = str(getattr(new, "value", new))
        try:
            self._queue.put_nowait((str(getattr(event, "agent_id", "")), state, reason[:120]))
        except asyncio.QueueFull:
            self.lost_writes += 1

    async def _writer(self) -> None:
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is not None and self.flush_s > 0 and not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):  # gather the changes that follow
                    async with asyncio.timeout(self.flush_s):
                        await self._stopping.wait()
            batch: dict[str, tuple[str, str]] = {}
            while True:
                if item is None:
                    stop = True
                else:
                    batch[item[0]] = (item[1], item[2])  # the newest state of an agent wins
                if self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                try:
                    await self._write(batch)
                except Exception:  # a database outage: the next change rewrites the row
                    log.exception("could not store call takers' states")

    async def _write(self, batch: dict[str, tuple[str, str]]) -> None:
        now = self._now()
        rows = [{"agent_id": a, "state": st, "reason": why, "node": self.node,
                 "updated_at": now} for a, (st, why) in batch.items()]
        insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        stmt = insert(AcdAgentRow)
        stmt = stmt.on_conflict_do_update(
            index_elements=["agent_id"],
            set_={k: stmt.excluded[k] for k in ("state", "reason", "node", "updated_at")})
        async with self.db.transaction() as tx:  # Core: no ORM session per batch
            await tx.conn.execute(stmt, rows)
        self.written += len(rows)

    # -- other nodes' changes: mirror ---------------------------------------------

    @staticmethod
    def is_mirror(env: Envelope) -> bool:
        """True for a change the mirror made (the other nodes know it already)."""
        return env.topic == TOPIC and str(getattr(env.event, "reason", "")).startswith(MIRROR)

    def on_remote(self, node: str, topic: str, data: dict[str, Any]) -> None:
        """Cluster handler: mirror another node's agent change; drop stale bindings."""
        if topic in ("binding_added", "binding_removed", "binding_expired",
                     "binding_refreshed"):
            self._forget_binding(data)
            return
        if topic != TOPIC:
            return
        agent_id, new, old = data.get("agent_id"), data.get("new"), data.get("old")
        reason = str(data.get("reason", ""))
        if not isinstance(agent_id, str) or reason.startswith(MIRROR):
            return
        why = f"{MIRROR}{new} on {node}"
        if new == "logged_out":
            self.held.pop(agent_id, None)
            if not self._logged_out(agent_id):
                self._act(agent_id, "logout", why)
        elif old == "logged_out":
            # A login (a mirrored one included: the engine names it "login"): only a
            # node where the agent is logged out follows; the others keep their state.
            if self._logged_out(agent_id) and self._act(agent_id, "login", why) and (
                    new == "not_ready"):
                self._act(agent_id, "not_ready", why)
        elif new == "ready":
            if self.held.pop(agent_id, None) is not None or self._state(agent_id) == "not_ready":
                self._act(agent_id, "ready", why)
        elif new in _OFFERED and self._state(agent_id) == "ready":
            if new != "not_ready":
                self.held[agent_id] = node
            self._act(agent_id, "not_ready", why)

    def node_dead(self, node: str) -> None:
        """Takeover hook: agents held for a dead node's calls are free again."""
        for agent_id in [a for a, n in self.held.items() if n == node]:
            del self.held[agent_id]
            if self._state(agent_id) == "not_ready":
                self._act(agent_id, "ready", f"{MIRROR}{node} died")

    def _forget_binding(self, data: dict[str, Any]) -> None:
        binding = data.get("binding")
        cache = getattr(self.bindings, "_cache", None)
        if isinstance(binding, dict) and isinstance(binding.get("aor"), str) and cache:
            cache.pop(binding["aor"], None)

    def _state(self, agent_id: str) -> str | None:
        try:
            return str(self.b2bua.acd.agent_status(agent_id).state.value)
        except Exception:  # an agent this node's configuration does not know
            return None

    def _logged_out(self, agent_id: str) -> bool:
        return self._state(agent_id) == "logged_out"

    def _act(self, agent_id: str, action: str, reason: str) -> bool:
        try:
            self.b2bua.agent_action(agent_id, action, reason=reason)
        except Exception as exc:  # unknown agent, or a state the engine refuses
            log.info("cluster agent %s %s not applied: %s", agent_id, action, exc)
            return False
        self.mirrored += 1
        return True
