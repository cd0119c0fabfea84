"""The duty roster (值班表): who is on duty for each role of each agency, with hand-over.

A row of ``duty_roster`` is one official's turn of duty: ``off_at`` is empty while they are
on duty.  ``rank`` orders a role's officials for escalation: a notification goes to rank 1
first, and to the next rank when it is not acknowledged in time.  A hand-over ends the
current holder's turn and starts the successor's in one audited transaction, so a
notification is never addressed to nobody in between.  ``roster.toml`` seeds the table the
first time (when it is empty); after that the roster lives in the database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import func, select

from dispatch.audit import AuditTrail
from dispatch.dispatchconf import OfficialSpec
from dispatch.models import DutyShiftRow
from dispatch.storage import Database, after_commit


@dataclass(frozen=True)
class Official:
    """An official on duty, as notifications need them."""

    shift_id: int
    agency: str
    role: str
    rank: int
    person: str
    email: str
    phone: str


@dataclass(frozen=True)
class DutyHandedOver:
    """One official handed a duty over to another."""

    topic: ClassVar[str] = "roster.handover"
    agency: str
    role: str
    rank: int
    from_person: str | None
    to_person: str
    actor: str


def _official(row: DutyShiftRow) -> Official:
    return Official(row.id, row.agency, row.role, row.rank, row.person, row.email, row.phone)


class RosterService:
    """The duty roster in the database."""

    name = "roster"

    def __init__(self, db: Database, audit: AuditTrail, publish: Callable[[object], object],
                 clock: Callable[[], float], seed: Iterable[OfficialSpec] = ()) -> None:
        """Keep the parts; ``seed`` fills an empty roster at :meth:`start`."""
        self.db = db
        self.audit = audit
        self.publish = publish
        self.clock = clock
        self._seed = tuple(seed)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def start(self) -> None:
        """Seed the roster from the configuration if it has never held anyone."""
        async with self.db.session() as s:
            if await s.scalar(select(func.count()).select_from(DutyShiftRow)):
                return
            now = self._now()
            for spec in self._seed:
                s.add(DutyShiftRow(agency=spec.agency, role=spec.role, rank=spec.rank,
                                   person=spec.person, email=spec.email, phone=spec.phone,
                                   on_since=now, off_at=None, handed_over_by="config"))
            if self._seed:
                self.audit.record(s, actor="system", action="roster.seeded", subject="roster",
                                  details={"officials": len(self._seed)})

    async def stop(self) -> None:
        """Nothing to release."""

    def health(self) -> dict[str, Any]:
        """Nothing to report."""
        return {}

    async def on_duty(self, agency: str | None = None, role: str | None = None) -> list[Official]:
        """Officials on duty now, by agency, role and rank."""
        stmt = select(DutyShiftRow).where(DutyShiftRow.off_at.is_(None)).order_by(
            DutyShiftRow.agency, DutyShiftRow.role, DutyShiftRow.rank, DutyShiftRow.id)
        if agency is not None:
            stmt = stmt.where(DutyShiftRow.agency == agency)
        if role is not None:
            stmt = stmt.where(DutyShiftRow.role == role)
        async with self.db.session() as s:
            return [_official(r) for r in await s.scalars(stmt)]

    async def next_after(self, agency: str, role: str, rank: int) -> Official | None:
        """The on-duty official of the lowest rank above ``rank`` (escalation)."""
        for official in await self.on_duty(agency, role):
            if official.rank > rank:
                return official
        return None

    async def hand_over(self, spec: OfficialSpec, *, actor: str, note: str = "") -> Official:
        """``spec.person`` takes over ``spec``'s agency/role/rank from whoever held it."""
        now = self._now()
        async with self.db.session() as s:
            current = (await s.scalars(select(DutyShiftRow).where(
                DutyShiftRow.agency == spec.agency, DutyShiftRow.role == spec.role,
                DutyShiftRow.rank == spec.rank, DutyShiftRow.off_at.is_(None))
                .with_for_update())).all()
            for row in current:
                row.off_at = now
            new = DutyShiftRow(agency=spec.agency, role=spec.role, rank=spec.rank,
                               person=spec.person, email=spec.email, phone=spec.phone,
                               on_since=now, off_at=None, handed_over_by=actor)
            s.add(new)
            await s.flush()
            before = ", ".join(r.person for r in current) or None
            self.audit.record(s, actor=actor, action="roster.handover",
                              subject=f"roster:{spec.agency}/{spec.role}/{spec.rank}",
                              details={"from": before, "to": spec.person, "note": note})
            event = DutyHandedOver(spec.agency, spec.role, spec.rank, before, spec.person, actor)
            after_commit(s, lambda: self.publish(event))
            return _official(new)

    async def history(self, limit: int = 200) -> list[dict[str, Any]]:
        """Turns of duty, newest first."""
        async with self.db.session() as s:
            rows = await s.scalars(select(DutyShiftRow).order_by(DutyShiftRow.id.desc())
                                   .limit(limit))
            return [{"id": r.id, "agency": r.agency, "role": r.role, "rank": r.rank,
                     "person": r.person, "email": r.email, "phone": r.phone,
                     "on_since": r.on_since.isoformat(),
                     "off_at": r.off_at.isoformat() if r.off_at else None,
                     "handed_over_by": r.handed_over_by} for r in rows]
