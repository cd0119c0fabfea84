"""Reports and incidents: intake's decisions made durable and traceable.

Every contact arrives here as a :class:`NewReport`.  It is written to the
database *first*, in a transaction of its own, and only then assessed by
:mod:`intake` (figures, category, grade, place) and correlated with the open
incidents; the second transaction stores the assessment, opens or updates the
incident and writes an audit row for every decision.  A crash between the two
leaves an unassessed report, which :meth:`ReportService.start` assesses again.

Correlation runs under one lock per node, so two reports of the same fire
arriving together cannot each open an incident.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, cast

from sqlalchemy import Table, and_, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dispatch.audit import AuditTrail
from dispatch.events import to_jsonable
from dispatch.models import CorrectionRow, IncidentRow, ReportRow
from dispatch.storage import Database, after_commit, update_many
from intake.classify import Correction
from intake.correlate import Action, CorrelationError, Decision
from intake.model import (
    Category,
    Channel,
    Grade,
    IncidentSnapshot,
    Report,
    ReportRef,
)
from intake.pipeline import Assessment, Intake

log = logging.getLogger(__name__)

CLOSED_STATES = frozenset({"closed", "merged"})
OnStored = Callable[[AsyncConnection, list[str]], Awaitable[object]]
"""A hook run in the transaction that stores a batch of reports, given their ids."""
YIELD_EVERY = 20
"""A batch's assessment lets the event loop run after this many reports."""
_REPORTS = cast(Table, ReportRow.__table__)
_INCIDENTS = cast(Table, IncidentRow.__table__)
_ASSESSED = ("assessed", "category", "subtype", "agencies", "grade", "lat", "lon", "assessment",
             "incident_id")
_PLACED = ("category", "subtype", "agencies", "grade", "grade_reasons", "lat", "lon",
           "needs_location", "opened_at", "last_report_at", "report_count", "updated_at")


@dataclass(frozen=True)
class NewReport:
    """A contact as a channel hands it over, before anything is decided about it."""

    channel: Channel
    text: str
    received_at: dt.datetime
    lang: str | None = None
    caller: str = ""
    lat: float | None = None
    lon: float | None = None
    address: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    source_ref: str | None = None
    said: bool = True
    """False when dispatchd wrote ``text`` itself (a voice call's summary line: number,
    call taker, wait): it is stored and shown, but intake assesses the report from its
    fields and location alone, since no one said anything in it yet.  A description
    added later (:meth:`ReportService.describe`) is assessed as usual."""


@dataclass(frozen=True)
class Submitted:
    """What became of a report: stored (or found as a duplicate), assessed, placed."""

    report_id: str
    duplicate: bool
    incident_id: str | None


@dataclass(frozen=True)
class ReportReceived:
    """A report was stored (before it was assessed)."""

    topic: ClassVar[str] = "report.received"
    report_id: str
    channel: str
    caller: str
    received_at: dt.datetime


@dataclass(frozen=True)
class ReportAssessed:
    """A report was classified, graded and placed."""

    topic: ClassVar[str] = "report.assessed"
    report_id: str
    category: str | None
    subtype: str | None
    agencies: tuple[str, ...]
    grade: str
    incident_id: str


@dataclass(frozen=True)
class IncidentChanged:
    """An incident was opened, joined, merged, split or regraded."""

    topic: ClassVar[str] = "incident.changed"
    incident_id: str
    action: str
    reason: str
    category: str | None
    grade: str
    colour: str
    report_count: int
    previous_grade: str | None
    subtype: str | None = None


class NotFound(LookupError):
    """No such report or incident."""


class ReportService:
    """The intake service of the daemon (required: reports must never be refused)."""

    name = "intake"

    def __init__(self, db: Database, audit: AuditTrail, publish: Callable[[object], object],
                 clock: Callable[[], float], rules_dir: Path | None = None) -> None:
        """Keep the parts; rules load in :meth:`start`."""
        self.db = db
        self.audit = audit
        self.publish = publish
        self.clock = clock
        self.rules_dir = rules_dir
        self._intake: Intake | None = None
        self._lock = asyncio.Lock()
        self.counts = {"received": 0, "assessed": 0, "duplicates": 0}

    @property
    def intake(self) -> Intake:
        """The loaded intake pipeline."""
        if self._intake is None:
            raise RuntimeError("intake rules are not loaded")
        return self._intake

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def start(self) -> None:
        """Load rules and stored corrections; assess reports a crash left unassessed."""
        async with self.db.session() as s:
            rows = (await s.scalars(select(CorrectionRow))).all()
        corrections = {r.fingerprint: Correction(Category(r.category), r.subtype, r.operator,
                                                 r.note) for r in rows}
        self._intake = await asyncio.to_thread(Intake.from_dir, self.rules_dir, corrections)
        async with self.db.session() as s:
            pending = (await s.scalars(select(ReportRow.id).where(ReportRow.assessed.is_(False))
                                       .order_by(ReportRow.received_at))).all()
        for report_id in pending:
            log.warning("assessing a report left unassessed", extra={"report": report_id})
            await self._assess(report_id, actor="system")

    async def stop(self) -> None:
        """Nothing to release: every decision is already stored."""

    def health(self) -> dict[str, Any]:
        """Counters since start."""
        return dict(self.counts)

    async def submit(self, new: NewReport, *, actor: str) -> Submitted:
        """Store a report, then assess and correlate it."""
        report_id = str(uuid.uuid4())
        try:
            async with self.db.session() as s:
                s.add(ReportRow(
                    id=report_id, channel=new.channel.value, source_ref=new.source_ref,
                    received_at=new.received_at, text=new.text, lang=new.lang, caller=new.caller,
                    lat=new.lat, lon=new.lon, address=new.address, fields=dict(new.fields),
                    created_by=actor, assessed=False, agencies=[], assessment={},
                ))
                self.audit.record(s, actor=actor, action="report.received",
                                  subject=f"report:{report_id}",
                                  details={"channel": new.channel.value, "caller": new.caller,
                                           "source_ref": new.source_ref})
                event = ReportReceived(report_id, new.channel.value, new.caller, new.received_at)
                after_commit(s, lambda: self.publish(event))
        except IntegrityError:
            # The channel re-delivered a contact we already hold (same source_ref).
            self.counts["duplicates"] += 1
            async with self.db.session() as s:
                row = await s.scalar(select(ReportRow).where(
                    ReportRow.channel == new.channel.value, ReportRow.source_ref == new.source_ref))
                assert row is not None
                return Submitted(row.id, True, row.incident_id)
        self.counts["received"] += 1
        incident_id = await self._assess(report_id, actor=actor)
        return Submitted(report_id, False, incident_id)

    async def submit_many(self, news: Sequence[NewReport], *, actor: str,
                          on_stored: OnStored | None = None) -> list[Submitted]:
        """Store a batch of reports in one transaction, then assess them all in one more.

        For a channel that hands over many contacts at once (the voice reports of a
        burst of calls): the same guarantees as :meth:`submit` at a fraction of the
        commits.  Every report is stored before any is assessed; a ``source_ref``
        already held (or repeated in the batch) comes back as a duplicate.  If the
        batch cannot be stored together, each report goes through :meth:`submit`; if
        it cannot be assessed together, each stored report is assessed on its own.

        ``on_stored`` runs inside the storing transaction with each report's id (in
        the order of ``news``), so a caller can link its own rows to the reports
        atomically; it does not run when the batch falls back to :meth:`submit`.
        """
        if not news:
            return []
        try:
            stored, results = await self._store_many(news, actor, on_stored)
        except IntegrityError:  # another node stored one of them meanwhile
            return [await self.submit(new, actor=actor) for new in news]
        ids = [report_id for _, report_id in stored]
        try:
            async with self._lock:
                placed = await self._assess_many(
                    [(report_id, news[index]) for index, report_id in stored], actor)
            self.counts["assessed"] += len(ids)
        except Exception:
            log.exception("reports: batch of %d not assessed together; one by one", len(ids))
            placed = [await self._assess(report_id, actor=actor) for report_id in ids]
        for (index, report_id), incident_id in zip(stored, placed, strict=True):
            results[index] = Submitted(report_id, False, incident_id)
        return [results[i] for i in range(len(news))]

    async def _store_many(self, news: Sequence[NewReport], actor: str,
                          on_stored: OnStored | None = None
                          ) -> tuple[list[tuple[int, str]], dict[int, Submitted]]:
        """Insert the batch's new reports in one transaction: ((index, id) stored,
        {index: duplicate})."""
        refs = [n.source_ref for n in news if n.source_ref is not None]
        # The channel too: the unique index is (channel, source_ref), and without its
        # first column the look-up scans the whole index (it grows with every report).
        channels = sorted({n.channel.value for n in news if n.source_ref is not None})
        held: dict[tuple[str, str], tuple[str, str | None]] = {}
        stored: list[tuple[int, str]] = []
        duplicates: dict[int, Submitted] = {}
        audit = self.audit.batch()
        rows: list[dict[str, Any]] = []
        events: list[ReportReceived] = []
        async with self.db.transaction() as tx:
            conn = tx.conn
            if refs:
                found = await conn.execute(
                    select(ReportRow.channel, ReportRow.source_ref, ReportRow.id,
                           ReportRow.incident_id).where(ReportRow.channel.in_(channels),
                                                        ReportRow.source_ref.in_(refs)))
                held = {(c, str(r)): (i, inc) for c, r, i, inc in found}
            for index, new in enumerate(news):
                key = (new.channel.value, new.source_ref or "")
                if new.source_ref is not None and key in held:
                    duplicates[index] = Submitted(held[key][0], True, held[key][1])
                    continue
                report_id = str(uuid.uuid4())
                if new.source_ref is not None:
                    held[key] = (report_id, None)
                rows.append({
                    "id": report_id, "channel": new.channel.value, "source_ref": new.source_ref,
                    "received_at": new.received_at, "text": new.text, "lang": new.lang,
                    "caller": new.caller, "lat": new.lat, "lon": new.lon,
                    "address": new.address, "fields": dict(new.fields), "created_by": actor,
                    "assessed": False, "category": None, "subtype": None, "agencies": [],
                    "grade": None, "assessment": {}, "incident_id": None})
                audit.record(actor=actor, action="report.received",
                             subject=f"report:{report_id}",
                             details={"channel": new.channel.value, "caller": new.caller,
                                      "source_ref": new.source_ref})
                events.append(ReportReceived(report_id, new.channel.value, new.caller,
                                             new.received_at))
                stored.append((index, report_id))
            if rows:
                await conn.execute(insert(_REPORTS), rows)
            if on_stored is not None:
                ids = dict(stored) | {i: d.report_id for i, d in duplicates.items()}
                await on_stored(conn, [ids[i] for i in range(len(news))])
            await audit.write(tx)
            for event in events:
                tx.after_commit(partial(self.publish, event))
        self.counts["received"] += len(stored)
        self.counts["duplicates"] += len(duplicates)
        return stored, duplicates

    async def _assess_many(self, items: Sequence[tuple[str, NewReport]], actor: str
                           ) -> list[str]:
        """Assess and place a batch of stored reports in one transaction (lock held).

        The same decisions as :meth:`_assess_in` one by one, without an ORM object per
        row: each report is assessed from what was just stored (no read back), the
        incidents the batch opens or joins are kept in memory so that a later report of
        the batch can join them, and at the end one executemany statement per table
        writes the incidents, the reports' assessments and the audit rows.
        """
        now = self._now()
        touched: dict[str, IncidentSnapshot] = {}
        fresh: set[str] = set()
        updates: list[dict[str, Any]] = []
        placed: list[str] = []
        audit = self.audit.batch()
        events: list[object] = []
        async with self.db.session() as s:
            for n, (report_id, new) in enumerate(items):
                if n and n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a large batch must not hold up the calls
                report = Report(report_id, new.channel, new.received_at,
                                new.text if new.said else "", new.lang, new.caller,
                                new.lat, new.lon, new.address,
                                tuple((str(k), str(v)) for k, v in dict(new.fields).items()))
                assessment = self.intake.assess(report)
                ref = assessment.ref(report)
                candidates = await self._open_snapshots(s, ref, touched)
                decision = self.intake.correlator.place(ref, candidates, now, str(uuid.uuid4()))
                if decision.other is not None:  # place() only opens or joins
                    raise CorrelationError(f"unexpected {decision.action} in a batch")
                incident = decision.incident
                if decision.action is Action.OPEN:
                    fresh.add(incident.incident_id)
                touched[incident.incident_id] = incident
                values = _assessment_values(new.lat, new.lon, assessment)
                updates.append({"id": report_id, "incident_id": incident.incident_id,
                                **values})
                events.extend(self._audit_decision(audit.record, decision, actor))
                audit.record(actor=actor, action="report.assessed",
                             subject=f"report:{report_id}",
                             details=_assessment_summary(assessment))
                c = assessment.classification
                events.append(ReportAssessed(
                    report_id, c.category.value if c.category else None, c.subtype,
                    tuple(c.agencies), assessment.grade.grade.name, incident.incident_id))
                placed.append(incident.incident_id)
            conn = await s.connection()
            opened = [{"id": i, "status": "new", "merged_into": None,
                       **_snapshot_values(snap, now)} for i, snap in touched.items() if i in fresh]
            joined = [{"id": i, **_snapshot_values(snap, now)}
                      for i, snap in touched.items() if i not in fresh]
            if opened:
                await conn.execute(insert(_INCIDENTS), opened)
            await update_many(conn, _INCIDENTS, "id", _PLACED, joined)
            await update_many(conn, _REPORTS, "id", _ASSESSED, updates)
            await audit.write(s)
            for event in events:
                after_commit(s, partial(self.publish, event))
        return placed

    async def _assess(self, report_id: str, *, actor: str, replace: str | None = None) -> str:
        """Assess a report and place it: join an open incident or open one.

        ``replace`` is an incident holding only this report (a re-assessment): it is
        recomputed if the report opens an incident again, else marked merged into the one
        the report joined.
        """
        async with self._lock:
            async with self.db.session() as s:
                incident_id = await self._assess_in(s, report_id, actor, replace)
            self.counts["assessed"] += 1
            return incident_id

    async def _assess_in(self, s: AsyncSession, report_id: str, actor: str,
                         replace: str | None = None) -> str:
        """:meth:`_assess`'s work inside ``s`` (the caller holds the lock)."""
        row = await s.get(ReportRow, report_id)
        if row is None:
            raise NotFound(report_id)
        report = _to_report(row)
        assessment = self.intake.assess(report)
        _store_assessment(row, assessment)
        ref = assessment.ref(report)
        open_incidents = [snap for snap in await self._open_snapshots(s, ref)
                          if snap.incident_id != replace]
        new_id = replace or str(uuid.uuid4())
        decision = self.intake.correlator.place(ref, open_incidents, self._now(), new_id)
        await self._apply(s, decision, actor, fresh=None if replace else new_id)
        row.incident_id = decision.incident.incident_id
        if replace is not None and replace != row.incident_id:
            left = await s.get(IncidentRow, replace)
            if left is not None:
                left.status, left.merged_into = "merged", row.incident_id
                left.report_count, left.updated_at = 0, self._now()
                self.audit.record(s, actor=actor, action="incident.merged",
                                  subject=f"incident:{replace}",
                                  details={"into": row.incident_id,
                                           "why": "re-assessed report joined"})
        self.audit.record(s, actor=actor, action="report.assessed",
                          subject=f"report:{report_id}",
                          details=_assessment_summary(assessment))
        event = ReportAssessed(
            report_id, row.category, row.subtype, tuple(row.agencies),
            assessment.grade.grade.name, decision.incident.incident_id)
        after_commit(s, lambda: self.publish(event))
        return decision.incident.incident_id

    async def _open_snapshots(self, s: AsyncSession, ref: ReportRef,
                              touched: dict[str, IncidentSnapshot] | None = None
                              ) -> list[IncidentSnapshot]:
        """Open incidents this report could join: in the time window and, when both are
        located, inside a box around it no larger than the widest correlation distance.

        ``touched`` holds incidents a batch has opened or changed but not yet written:
        they replace their stored versions and are filtered the same way in memory."""
        rules = self.intake.rules.correlation
        if (ref.lat is None or ref.lon is None) and not rules.unlocated_joins:
            # The correlator joins an unlocated report to nothing, so loading every
            # open incident of the window (one per call in a busy hour) is waste.
            return []
        window = dt.timedelta(minutes=rules.window_minutes)
        stmt = select(IncidentRow).where(IncidentRow.status.not_in(CLOSED_STATES),
                                         IncidentRow.last_report_at >= ref.received_at - window)
        if ref.lat is not None and ref.lon is not None:
            reach = max([rules.distance_km, *rules.distance_by_category.values()])
            dlat = reach / 111.0
            dlon = reach / (111.0 * max(0.05, math.cos(math.radians(ref.lat))))
            near = and_(IncidentRow.lat.between(ref.lat - dlat, ref.lat + dlat),
                        IncidentRow.lon.between(ref.lon - dlon, ref.lon + dlon))
            # An unlocated incident is a candidate only when unlocated joins are allowed.
            stmt = stmt.where(or_(IncidentRow.lat.is_(None), near)
                              if rules.unlocated_joins else near)
        found = await _snapshots(s, (await s.scalars(stmt)).all())
        if not touched:
            return found
        box = (ref.lat - dlat, ref.lat + dlat, ref.lon - dlon, ref.lon + dlon) if (
            ref.lat is not None and ref.lon is not None) else None
        return [snap for snap in found if snap.incident_id not in touched] + [
            snap for snap in touched.values()
            if _may_join(snap, ref.received_at - window, box, rules.unlocated_joins)]

    async def _apply(self, s: AsyncSession, decision: Decision, actor: str,
                     fresh: str | None = None) -> None:
        """Write a correlation decision: the incident(s) it touched and the audit rows.

        ``fresh`` is an incident id just made up for this decision: no row can have it,
        so opening it needs no look-up."""
        now = self._now()
        touched = [decision.incident] + ([decision.other] if decision.other else [])
        for snapshot in touched:
            row = (None if snapshot.incident_id == fresh
                   else await s.get(IncidentRow, snapshot.incident_id))
            if row is None:
                row = IncidentRow(id=snapshot.incident_id, status="new", opened_at=now,
                                  needs_location=False, report_count=0, updated_at=now,
                                  grade=snapshot.grade.value, agencies=[], grade_reasons=[],
                                  last_report_at=snapshot.last_report_at)
                s.add(row)
            _store_snapshot(row, snapshot, now)
            if snapshot.closed:
                row.status, row.merged_into = "merged", decision.incident.incident_id
            await s.flush()
        if decision.other is not None:
            # Merge: the absorbed incident's reports now belong to the kept one.
            # Split: the reports that left belong to the new incident.
            owner = (decision.incident if decision.action is Action.MERGE else decision.other)
            for ref in decision.other.reports:
                report = await s.get(ReportRow, ref.report_id)
                if report is not None:
                    report.incident_id = owner.incident_id
        for event in self._audit_decision(partial(self.audit.record, s), decision, actor):
            after_commit(s, partial(self.publish, event))

    @staticmethod
    def _audit_decision(record: Callable[..., object], decision: Decision,
                        actor: str) -> list[IncidentChanged]:
        """Record a correlation decision's audit rows; returns the events to publish."""
        incident = decision.incident
        action = {Action.OPEN: "incident.opened", Action.JOIN: "incident.report_joined",
                  Action.MERGE: "incident.merged", Action.SPLIT: "incident.split"}[decision.action]
        details: dict[str, Any] = {"reason": decision.reason, "report": decision.report_id,
                                   "grade": incident.grade.name,
                                   "reports": incident.report_count}
        if decision.distance_km is not None:
            details["distance_km"] = round(decision.distance_km, 3)
        if decision.other is not None:
            details["other"] = decision.other.incident_id
        record(actor=actor, action=action, subject=f"incident:{incident.incident_id}",
               details=details)
        if decision.grade_changed and decision.previous_grade is not None:
            record(
                actor=actor, action="incident.grade_changed",
                subject=f"incident:{incident.incident_id}",
                details={"from": decision.previous_grade.name, "to": incident.grade.name,
                         "reasons": [r.detail for r in incident.grade_reasons]})
        return [IncidentChanged(
            snapshot.incident_id, decision.action.value, decision.reason,
            snapshot.category.value if snapshot.category else None, snapshot.grade.name,
            snapshot.grade.colour, snapshot.report_count,
            decision.previous_grade.name if decision.previous_grade else None, snapshot.subtype)
            for snapshot in [incident] + ([decision.other] if decision.other else [])]

    async def describe(self, report_id: str, text: str, *, actor: str,
                       lat: float | None = None, lon: float | None = None,
                       address: str = "") -> str:
        """A call taker's description of a contact (a voice call's report is filed empty at
        answer): stored with the report, which is then classified, graded and placed again.

        The text is added to what the report already held (nothing is overwritten).  If the
        report shared its incident with others it is first split out; then correlation
        either joins it to an open incident (its placeholder incident is marked merged) or
        its own incident is recomputed from the new text.  Returns the incident id.
        """
        async with self.db.session() as s:
            row = await s.get(ReportRow, report_id)
            if row is None:
                raise NotFound(report_id)
            row.text = f"{row.text}\n{text}" if row.text.strip() else text
            if lat is not None and lon is not None:
                row.lat, row.lon = lat, lon
            if address:
                row.address = address[:512]
            own = row.incident_id
            self.audit.record(s, actor=actor, action="report.described",
                              subject=f"report:{report_id}",
                              details={"chars": len(text), "located": lat is not None})
            alone = own is None or (await s.scalar(
                select(func.count()).select_from(ReportRow)
                .where(ReportRow.incident_id == own))) == 1
        if own is not None and not alone:
            own = await self.split(own, [report_id], actor=actor)
        return await self._assess(report_id, actor=actor, replace=own)

    async def merge(self, keep_id: str, absorb_id: str, *, actor: str) -> str:
        """A call taker merges ``absorb_id`` into ``keep_id``."""
        async with self._lock, self.db.session() as s:
            keep, absorb = await self._snapshot(s, keep_id), await self._snapshot(s, absorb_id)
            decision = self.intake.correlator.merge(keep, absorb, self._now(), actor)
            await self._apply(s, decision, actor)
        return keep_id

    async def split(self, incident_id: str, report_ids: Sequence[str], *, actor: str) -> str:
        """A call taker moves ``report_ids`` out of an incident into a new one."""
        new_id = str(uuid.uuid4())
        async with self._lock, self.db.session() as s:
            incident = await self._snapshot(s, incident_id)
            decision = self.intake.correlator.split(incident, report_ids, self._now(), new_id,
                                                    actor)
            await self._apply(s, decision, actor)
        return new_id

    async def _snapshot(self, s: AsyncSession, incident_id: str) -> IncidentSnapshot:
        row = await s.get(IncidentRow, incident_id)
        if row is None or row.status in CLOSED_STATES:
            raise NotFound(f"no open incident {incident_id}")
        return (await _snapshots(s, [row]))[0]

    async def correct(self, report_id: str, category: Category, subtype: str | None, *,
                      actor: str, note: str = "") -> None:
        """An operator corrects a report's classification; the correction is kept."""
        async with self._lock, self.db.session() as s:
            row = await s.get(ReportRow, report_id)
            if row is None:
                raise NotFound(report_id)
            fingerprint = self.intake.classifier.add_correction(
                row.text, Correction(category, subtype, actor, note))
            existing = await s.get(CorrectionRow, fingerprint)
            if existing is None:
                existing = CorrectionRow(fingerprint=fingerprint, category="", operator="",
                                         at=self._now())
                s.add(existing)
            existing.category, existing.subtype = category.value, subtype
            existing.operator, existing.note, existing.at = actor, note[:512], self._now()
            before = (row.category, row.subtype)
            assessment = self.intake.assess(_to_report(row))
            _store_assessment(row, assessment)
            self.audit.record(s, actor=actor, action="report.classification_corrected",
                              subject=f"report:{report_id}",
                              details={"from": list(before), "to": [category.value, subtype],
                                       "note": note})


def _to_report(row: ReportRow) -> Report:
    fields = tuple((str(k), str(v)) for k, v in row.fields.items())
    return Report(row.id, Channel(row.channel), row.received_at, row.text, row.lang, row.caller,
                  row.lat, row.lon, row.address, fields)


def _store_assessment(row: ReportRow, assessment: Assessment) -> None:
    for key, value in _assessment_values(row.lat, row.lon, assessment).items():
        setattr(row, key, value)


def _assessment_values(lat: float | None, lon: float | None,
                       assessment: Assessment) -> dict[str, Any]:
    """A report's columns after assessment (its own position kept if it had one)."""
    c = assessment.classification
    if lat is None and assessment.location.resolved:
        lat, lon = assessment.location.lat, assessment.location.lon
    return {"assessed": True, "category": c.category.value if c.category else None,
            "subtype": c.subtype, "agencies": list(c.agencies),
            "grade": assessment.grade.grade.value, "lat": lat, "lon": lon,
            "assessment": to_jsonable({
                "classification": c, "grade": assessment.grade,
                "location": assessment.location, "figures": assessment.figures})}


def _assessment_summary(assessment: Assessment) -> dict[str, Any]:
    c = assessment.classification
    return {"category": c.category.value if c.category else None, "subtype": c.subtype,
            "agencies": list(c.agencies), "grade": assessment.grade.grade.name,
            "reasons": [r.detail for r in assessment.grade.reasons if r.applied],
            "location": assessment.location.source, "corrected": c.corrected}


def _store_snapshot(row: IncidentRow, snapshot: IncidentSnapshot, now: dt.datetime) -> None:
    for key, value in _snapshot_values(snapshot, now).items():
        setattr(row, key, value)


def _snapshot_values(snapshot: IncidentSnapshot, now: dt.datetime) -> dict[str, Any]:
    """An incident's columns as correlation left it (status and merges apart)."""
    return {"category": snapshot.category.value if snapshot.category else None,
            "subtype": snapshot.subtype, "agencies": list(snapshot.agencies),
            "grade": snapshot.grade.value,
            "grade_reasons": [to_jsonable(r) for r in snapshot.grade_reasons],
            "lat": snapshot.lat, "lon": snapshot.lon, "needs_location": snapshot.lat is None,
            "opened_at": snapshot.opened_at, "last_report_at": snapshot.last_report_at,
            "report_count": snapshot.report_count, "updated_at": now}


def _may_join(snap: IncidentSnapshot, since: dt.datetime,
              box: tuple[float, float, float, float] | None, unlocated_joins: bool) -> bool:
    """:meth:`ReportService._open_snapshots`'s query, on an incident held in memory."""
    if snap.closed or snap.last_report_at < since:
        return False
    if box is None:
        return True
    if snap.lat is None or snap.lon is None:
        return unlocated_joins
    return box[0] <= snap.lat <= box[1] and box[2] <= snap.lon <= box[3]


async def _snapshots(s: AsyncSession, incidents: Iterable[IncidentRow]) -> list[IncidentSnapshot]:
    by_id = {i.id: i for i in incidents}
    if not by_id:
        return []
    refs: dict[str, list[ReportRef]] = {key: [] for key in by_id}
    # Only the columns correlation needs: never the text or the evidence blobs.
    columns = (ReportRow.incident_id, ReportRow.id, ReportRow.received_at, ReportRow.grade,
               ReportRow.category, ReportRow.subtype, ReportRow.lat, ReportRow.lon,
               ReportRow.agencies)
    rows = await s.execute(select(*columns).where(ReportRow.incident_id.in_(by_id))
                           .order_by(ReportRow.received_at))
    for incident_id, rid, at, grade, category, subtype, lat, lon, agencies in rows:
        refs[str(incident_id)].append(ReportRef(
            rid, at, Grade(grade or 4), Category(category) if category else None, subtype,
            lat, lon, tuple(agencies)))
    out = []
    for key, row in by_id.items():
        if not refs[key]:
            continue
        out.append(IncidentSnapshot(
            row.id, Category(row.category) if row.category else None, row.subtype, row.lat,
            row.lon, row.opened_at, row.last_report_at, tuple(refs[key]), Grade(row.grade),
            tuple(row.agencies), False))
    return out


__all__ = ["CorrelationError", "NewReport", "NotFound", "ReportService", "Submitted"]
