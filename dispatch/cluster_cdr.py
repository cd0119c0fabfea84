"""A survivor completes a dead node's call records from the events it saw.

A node writes its CDRs in batches off the call path, so under load its writer
runs seconds behind the calls; a SIGKILL loses what was still queued.  But
every node's call events (offered, answered, released) already reached the
other nodes over the cluster's event bridge within milliseconds.  Each node
keeps a bounded shadow of the other nodes' recent calls; the survivor that
takes a dead node over writes, for each of them, what the database lacks:
the row itself if it was never inserted, and ``answered_at`` / agent,
``released_at`` / cause where they are still empty (it never overwrites a
value the dead node did store).  A call still live at the death is closed
with cause ``node_died``: answered ones as answered, the others as
abandoned — so the voice report asks for a call back.  Then the record
writer's ``refile`` files the voice reports those calls are owed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from dispatch.audit import AuditTrail
from dispatch.models import CallRecordRow
from dispatch.storage import Database

log = logging.getLogger(__name__)

#: Recent calls remembered per other node.
SHADOW_SIZE = 20_000
_TOPICS = ("call_offered", "call_answered", "call_released")


def _ts(value: Any) -> dt.datetime | None:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    return None


def _text(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    return str(value)[:limit] if value is not None else ""


class CallShadow:
    """Other nodes' recent calls, as their events told; repairs a dead node's CDRs."""

    def __init__(self, db: Database, audit: AuditTrail, clock: Callable[[], float],
                 refile: Callable[[], Awaitable[int]] | None = None,
                 size: int = SHADOW_SIZE) -> None:
        """``refile`` files the voice reports owed (the record writer's ``refile``)."""
        self.db, self.audit, self.clock, self.refile = db, audit, clock, refile
        self.size = size
        self._calls: dict[str, OrderedDict[str, dict[str, dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[int]] = set()
        self.repaired = 0

    def note(self, node: str, topic: str, data: dict[str, Any]) -> None:
        """Cluster handler: remember a call event of another node."""
        if topic not in _TOPICS or not isinstance(data.get("call_id"), str):
            return
        calls = self._calls.setdefault(node, OrderedDict())
        entry = calls.setdefault(data["call_id"], {})
        entry[topic] = data
        calls.move_to_end(data["call_id"])
        while len(calls) > self.size:
            calls.popitem(last=False)

    def node_dead(self, node: str) -> None:
        """Takeover hook: repair the dead node's CDRs in the background."""
        task = asyncio.get_running_loop().create_task(self.repair(node))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def repair(self, node: str) -> int:
        """Write what the database lacks of ``node``'s calls; returns rows changed."""
        calls = self._calls.pop(node, OrderedDict())
        died = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        changed = 0
        try:
            for call_id, events in calls.items():
                try:
                    changed += await self._repair_one(call_id, events, died)
                except Exception:  # one bad call must not stop the others
                    log.exception("could not repair the CDR of call %s", call_id)
            if changed:
                async with self.db.session() as s:
                    self.audit.record(s, actor="system", action="cluster.cdrs_repaired",
                                      subject=f"node:{node}",
                                      details={"calls": changed, "seen": len(calls)})
                log.warning("call records of a dead node completed from its events",
                            extra={"dead_node": node, "calls": changed})
            if self.refile is not None:
                await self.refile()
        except Exception:
            log.exception("repairing the dead node %s's call records failed", node)
        self.repaired += changed
        return changed

    async def _repair_one(self, call_id: str, events: dict[str, dict[str, Any]],
                          died: dt.datetime) -> int:
        offered, answered = events.get("call_offered"), events.get("call_answered")
        released = events.get("call_released")
        async with self.db.session() as s:
            row = await s.get(CallRecordRow, call_id, with_for_update=True)
            if row is None:
                if offered is None:
                    return 0
                row = CallRecordRow(
                    id=call_id, sip_call_id=_text(offered, "sip_call_id", 200),
                    caller=_text(offered, "caller", 64), called=_text(offered, "called", 64),
                    hotline=_text(offered, "hotline", 16), queue=_text(offered, "queue", 64),
                    trunk=_text(offered, "trunk", 64),
                    priority=int(offered.get("priority") or 0), agent_id="", outcome=None,
                    cause="", released_by="", offered_at=_ts(offered.get("at")) or died,
                    timeline=[])
                s.add(row)
            before = (row.answered_at, row.released_at, row.outcome)
            if answered is not None and row.answered_at is None:
                row.answered_at = _ts(answered.get("at")) or died
                row.agent_id = row.agent_id or _text(answered, "agent_id", 64)
            if row.released_at is None:
                if released is not None:
                    row.released_at = _ts(released.get("at")) or died
                    row.cause = row.cause or _text(released, "cause", 64)
                    row.released_by = row.released_by or _text(released, "by", 64)
                else:
                    row.released_at, row.cause, row.released_by = died, "node_died", "system"
            if row.outcome is None:
                row.outcome = "answered" if row.answered_at is not None else "abandoned"
            return 1 if (row.answered_at, row.released_at, row.outcome) != before else 0
