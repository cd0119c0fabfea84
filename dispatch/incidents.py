"""The incident lifecycle (new → acknowledged → dispatched → on scene → contained → closed).

Theory of operation: an incident's ``status`` moves only along :data:`TRANSITIONS`, a table
keyed by (from, to) whose value is the permission the operator's role must hold.  Each step
writes an :class:`~dispatch.models.IncidentTransitionRow` (the times statistics use) and an
audit row in the same transaction, then publishes :class:`IncidentStatusChanged` after
commit.  Notes and typed links (calls, reports, recordings, broadcasts, conferences) are
stored the same way, and :meth:`IncidentService.timeline` merges audit rows, notes and links
of one incident in time order: the incident's 过程溯源.

Intake's correlation opens incidents in ``new`` and marks absorbed ones ``merged``; a merged
incident takes no further steps here.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.audit import AuditTrail
from dispatch.auth import Permission, Principal
from dispatch.models import (
    AuditEntry,
    IncidentLinkRow,
    IncidentNoteRow,
    IncidentRow,
    ReportRow,
)
from dispatch.models import IncidentTransitionRow as TransitionRow
from dispatch.storage import Database, after_commit

log = logging.getLogger(__name__)

MAX_NOTE = 4000
MAX_REASON = 512
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_REF = re.compile(r"^[\w.:@/+-]{1,160}$")


class Status(enum.StrEnum):
    """Where an incident is in its lifecycle."""

    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    ON_SCENE = "on_scene"
    CONTAINED = "contained"
    CLOSED = "closed"
    MERGED = "merged"


class LinkKind(enum.StrEnum):
    """What an incident may be linked to."""

    CALL = "call"
    REPORT = "report"
    RECORDING = "recording"
    BROADCAST = "broadcast"
    CONFERENCE = "conference"


S = Status
#: (from, to) → the permission a role needs to take that step.  Closing early (a false alarm
#: or a duplicate) and reopening are a shift lead's decision and need a reason.
TRANSITIONS: dict[tuple[Status, Status], Permission] = {
    (S.NEW, S.ACKNOWLEDGED): Permission.INCIDENTS_MANAGE,
    (S.NEW, S.DISPATCHED): Permission.UNITS_DISPATCH,
    (S.ACKNOWLEDGED, S.DISPATCHED): Permission.UNITS_DISPATCH,
    (S.DISPATCHED, S.ON_SCENE): Permission.UNITS_DISPATCH,
    (S.ON_SCENE, S.CONTAINED): Permission.UNITS_DISPATCH,
    (S.DISPATCHED, S.CONTAINED): Permission.UNITS_DISPATCH,
    (S.CONTAINED, S.CLOSED): Permission.INCIDENTS_CLOSE,
    (S.NEW, S.CLOSED): Permission.INCIDENTS_CLOSE,
    (S.ACKNOWLEDGED, S.CLOSED): Permission.INCIDENTS_CLOSE,
    (S.CLOSED, S.ACKNOWLEDGED): Permission.INCIDENTS_CLOSE,
}
#: Steps that must say why.
NEEDS_REASON = frozenset({(S.NEW, S.CLOSED), (S.ACKNOWLEDGED, S.CLOSED),
                          (S.CLOSED, S.ACKNOWLEDGED)})


class IncidentError(Exception):
    """A refused incident operation; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        """``status``: 404 unknown, 403 role, 409 state, 422 bad input."""
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class IncidentStatusChanged:
    """An incident took a lifecycle step."""

    topic: ClassVar[str] = "incident.status"
    incident_id: str
    from_status: str
    to_status: str
    actor: str
    reason: str
    at: dt.datetime


@dataclass(frozen=True)
class IncidentNoteAdded:
    """An operator wrote a note on an incident."""

    topic: ClassVar[str] = "incident.note"
    incident_id: str
    note_id: int
    author: str
    text: str
    at: dt.datetime


@dataclass(frozen=True)
class IncidentLinked:
    """A call, report, recording, broadcast or conference was linked to an incident."""

    topic: ClassVar[str] = "incident.linked"
    incident_id: str
    kind: str
    ref: str
    actor: str


def check_text(text: str, limit: int, what: str) -> str:
    """Operator text: bounded, no control characters (``IncidentError`` 422)."""
    if len(text) > limit:
        raise IncidentError(f"{what} longer than {limit} characters", 422)
    if _CONTROL.search(text):
        raise IncidentError(f"{what}: control characters are not allowed", 422)
    return text


class IncidentService:
    """Lifecycle steps, notes, links and the timeline of incidents."""

    def __init__(self, db: Database, audit: AuditTrail, publish: Callable[[object], object],
                 clock: Callable[[], float]) -> None:
        """Keep the database, audit trail, event publisher and clock."""
        self.db = db
        self.audit = audit
        self.publish = publish
        self.clock = clock

    def now(self) -> dt.datetime:
        """The injected clock's time as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def get(self, s: AsyncSession, incident_id: str, *, lock: bool = False) -> IncidentRow:
        """The incident row (``IncidentError`` 404 if unknown)."""
        stmt = select(IncidentRow).where(IncidentRow.id == incident_id)
        if lock:
            stmt = stmt.with_for_update()
        row = await s.scalar(stmt)
        if row is None:
            raise IncidentError(f"no incident {incident_id}", 404)
        return row

    async def transition(self, incident_id: str, to: Status, who: Principal,
                         reason: str = "") -> Status:
        """Move an incident to ``to`` if the table and ``who``'s role allow it."""
        async with self.db.session() as s:
            row = await self.get(s, incident_id, lock=True)
            return self.step(s, row, to, who, reason)

    def step(self, s: AsyncSession, row: IncidentRow, to: Status, who: Principal | None,
             reason: str = "", *, actor: str | None = None) -> Status:
        """Take one step inside the caller's transaction (``who=None``: the system)."""
        check_text(reason, MAX_REASON, "reason")
        try:
            current = Status(row.status)
        except ValueError:
            raise IncidentError(f"incident {row.id} is in unknown state {row.status!r}") from None
        needed = TRANSITIONS.get((current, to))
        if needed is None:
            allowed = sorted(t.value for (f, t) in TRANSITIONS if f is current)
            raise IncidentError(f"incident {row.id} is {current.value}: cannot go to "
                                f"{to.value} (allowed: {', '.join(allowed) or 'none'})")
        if who is not None and not who.can(needed):
            raise IncidentError(f"role {who.role.value} may not move an incident from "
                                f"{current.value} to {to.value} (needs {needed.value})", 403)
        if (current, to) in NEEDS_REASON and not reason.strip():
            raise IncidentError(f"{current.value} → {to.value} needs a reason", 422)
        name = actor or (who.name if who is not None else "system")
        now = self.now()
        row.status, row.updated_at = to.value, now
        s.add(TransitionRow(incident_id=row.id, from_status=current.value, to_status=to.value,
                            at=now, actor=name, reason=reason))
        self.audit.record(s, actor=name, action=f"incident.{to.value}",
                          subject=f"incident:{row.id}",
                          details={"from": current.value, "to": to.value, "reason": reason})
        event = IncidentStatusChanged(row.id, current.value, to.value, name, reason, now)
        after_commit(s, lambda: self.publish(event))
        return to

    async def add_note(self, incident_id: str, text: str, who: Principal) -> IncidentNoteRow:
        """Write a note on an incident (stored and audited before the answer)."""
        text = check_text(text.strip(), MAX_NOTE, "note")
        if not text:
            raise IncidentError("a note needs text", 422)
        async with self.db.session() as s:
            await self.get(s, incident_id)
            note = IncidentNoteRow(incident_id=incident_id, at=self.now(), author=who.name,
                                   text=text)
            s.add(note)
            await s.flush()
            self.audit.record(s, actor=who.name, action="incident.note_added",
                              subject=f"incident:{incident_id}",
                              details={"note": note.id, "chars": len(text)})
            event = IncidentNoteAdded(incident_id, note.id, who.name, text, note.at)
            after_commit(s, lambda: self.publish(event))
        return note

    async def link(self, incident_id: str, kind: LinkKind, ref: str, actor: str,
                   note: str = "") -> bool:
        """Link a call/report/recording/broadcast/conference; False if already linked.

        Other services (the call and conference adapters) call this with their own actor
        name; the API calls it for operators.
        """
        if not _REF.match(ref):
            raise IncidentError("ref must be 1-160 characters of letters, digits and ._:@/+-",
                                422)
        check_text(note, MAX_REASON, "note")
        try:
            async with self.db.session() as s:
                await self.get(s, incident_id)
                s.add(IncidentLinkRow(incident_id=incident_id, kind=kind.value, ref=ref,
                                      at=self.now(), actor=actor, note=note))
                await s.flush()
                self.audit.record(s, actor=actor, action="incident.linked",
                                  subject=f"incident:{incident_id}",
                                  details={"kind": kind.value, "ref": ref, "note": note})
                event = IncidentLinked(incident_id, kind.value, ref, actor)
                after_commit(s, lambda: self.publish(event))
        except IntegrityError:
            return False
        return True

    async def timeline(self, incident_id: str, limit: int = 2000) -> list[dict[str, Any]]:
        """Audit rows, notes and links of one incident, oldest first (过程溯源)."""
        async with self.db.session() as s:
            await self.get(s, incident_id)
            # The incident's own rows and those of its reports (received, assessed).
            reports = (await s.scalars(select(ReportRow.id).where(
                ReportRow.incident_id == incident_id).limit(limit))).all()
            subjects = [f"incident:{incident_id}", *(f"report:{r}" for r in reports)]
            audits = (await s.scalars(
                select(AuditEntry).where(AuditEntry.subject.in_(subjects))
                .order_by(AuditEntry.id).limit(limit))).all()
            notes = (await s.scalars(select(IncidentNoteRow).where(
                IncidentNoteRow.incident_id == incident_id).limit(limit))).all()
            links = (await s.scalars(select(IncidentLinkRow).where(
                IncidentLinkRow.incident_id == incident_id).limit(limit))).all()
        items: list[tuple[dt.datetime, int, int, dict[str, Any]]] = []
        for a in audits:
            items.append((a.at, 0, a.id, {"kind": "audit", "at": a.at.isoformat(),
                                          "actor": a.actor, "action": a.action,
                                          "subject": a.subject, "details": a.details}))
        for n in notes:
            items.append((n.at, 1, n.id, {"kind": "note", "at": n.at.isoformat(),
                                          "actor": n.author, "text": n.text}))
        for link in links:
            items.append((link.at, 2, link.id, {"kind": "link", "at": link.at.isoformat(),
                                                "actor": link.actor, "link_kind": link.kind,
                                                "ref": link.ref, "note": link.note}))
        items.sort(key=lambda item: (item[0], item[1], item[2]))
        return [item[3] for item in items[:limit]]
