"""Statistics of incidents and response times, and their CSV export.

Times are measured from what the lifecycle stored:

* **answer time** — for an incident that began with a call: the first call offered → the
  first of its calls a call taker answered (from the CDRs of the calls whose voice reports
  belong to it, merged incidents included); for one that did not (SMS, email, radio, the
  API): incident opened → first ``acknowledged`` (or, if it went straight to dispatch, first
  ``dispatched``);
* **call-to-dispatch** — the first call offered (or, without a call, the incident opened) →
  first ``dispatched``;
* **dispatch-to-on-scene** — per unit assignment: assigned → on scene.

Counts are by category, grade, time bucket (hour or day, in local time), agency and shift
(shifts are named local start times from ``[dispatch].shifts``).  Each figure gives the
count, mean, median and 90th percentile in seconds.  The window is bounded (at most
:data:`MAX_INCIDENTS` incidents) so a statistics request never loads the whole database.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from dispatch.config import ShiftSettings
from dispatch.models import CallRecordRow, IncidentRow, ReportRow, UnitAssignmentRow
from dispatch.models import IncidentTransitionRow as TransitionRow
from dispatch.storage import Database
from intake.model import Grade

MAX_INCIDENTS = 100_000


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, median and p90 (nearest rank) of durations in seconds."""
    if not values:
        return {"count": 0, "mean_s": None, "median_s": None, "p90_s": None}
    ordered = sorted(values)
    p90 = ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]
    return {"count": len(ordered), "mean_s": round(statistics.fmean(ordered), 1),
            "median_s": round(statistics.median(ordered), 1), "p90_s": round(p90, 1)}


def shift_of(at: dt.datetime, shifts: Sequence[ShiftSettings], offset_h: float) -> str:
    """The name of the shift a UTC time falls in (shifts start at local times of day)."""
    if not shifts:
        return ""
    local = at.astimezone(dt.timezone(dt.timedelta(hours=offset_h)))
    minute = local.hour * 60 + local.minute
    starts = sorted((int(s.start[:2]) * 60 + int(s.start[3:]), s.name) for s in shifts)
    current = starts[-1][1]  # before the first start of the day: the last shift of yesterday
    for start, name in starts:
        if minute >= start:
            current = name
    return current


@dataclass(frozen=True)
class IncidentTimes:
    """One incident with its measured times (seconds, or None when not reached)."""

    row: IncidentRow
    shift: str
    answer_s: float | None
    to_dispatch_s: float | None
    on_scene_s: list[tuple[str, float]]


class StatsService:
    """Computes statistics over a time window."""

    def __init__(self, db: Database, shifts: Sequence[ShiftSettings], utc_offset_hours: float):
        """Keep the database and the shift definition."""
        self.db = db
        self.shifts = tuple(shifts)
        self.offset_h = utc_offset_hours

    async def _load(self, since: dt.datetime, until: dt.datetime) -> list[IncidentTimes]:
        window = (IncidentRow.opened_at >= since, IncidentRow.opened_at < until,
                  IncidentRow.status != "merged")
        ids = select(IncidentRow.id).where(*window).limit(MAX_INCIDENTS).scalar_subquery()
        async with self.db.session() as s:
            incidents = (await s.scalars(select(IncidentRow).where(*window)
                                         .order_by(IncidentRow.opened_at)
                                         .limit(MAX_INCIDENTS))).all()
            steps = (await s.scalars(select(TransitionRow).where(
                TransitionRow.incident_id.in_(ids)).order_by(TransitionRow.id))).all()
            assignments = (await s.scalars(select(UnitAssignmentRow).where(
                UnitAssignmentRow.incident_id.in_(ids)))).all()
            calls = (await s.execute(
                select(ReportRow.incident_id, CallRecordRow.offered_at,
                       CallRecordRow.answered_at)
                .join(ReportRow, ReportRow.id == CallRecordRow.report_id)
                .where(ReportRow.incident_id.in_(ids)))).all()
        offered: dict[str, dt.datetime] = {}
        picked: dict[str, dt.datetime] = {}
        for incident_id, offered_at, answered_at in calls:
            if incident_id is None:
                continue
            offered[incident_id] = min(offered_at, offered.get(incident_id, offered_at))
            if answered_at is not None:
                picked[incident_id] = min(answered_at, picked.get(incident_id, answered_at))
        first: dict[tuple[str, str], dt.datetime] = {}
        for step in steps:
            first.setdefault((step.incident_id, step.to_status), step.at)
        scene: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for a in assignments:
            if a.on_scene_at is not None:
                scene[a.incident_id].append(
                    (a.agency, (a.on_scene_at - a.assigned_at).total_seconds()))
        out = []
        for row in incidents:
            sent = first.get((row.id, "dispatched"))
            start = offered.get(row.id)
            if start is not None:
                answered = picked.get(row.id)
            else:
                start = row.opened_at
                ack = first.get((row.id, "acknowledged"))
                answered = min((t for t in (ack, sent) if t is not None), default=None)
            out.append(IncidentTimes(
                row, shift_of(row.opened_at, self.shifts, self.offset_h),
                (answered - start).total_seconds() if answered else None,
                (sent - start).total_seconds() if sent else None,
                scene.get(row.id, [])))
        return out

    def _bucket(self, at: dt.datetime, bucket: str) -> str:
        local = at.astimezone(dt.timezone(dt.timedelta(hours=self.offset_h)))
        return local.strftime("%Y-%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d")

    async def incidents(self, since: dt.datetime, until: dt.datetime,
                        bucket: str = "day") -> dict[str, Any]:
        """Counts and response times of incidents opened in ``[since, until)``."""
        rows = await self._load(since, until)
        by_agency: dict[str, list[float]] = defaultdict(list)
        agency_count: Counter[str] = Counter()
        per_shift: dict[str, list[IncidentTimes]] = defaultdict(list)
        for item in rows:
            for agency in item.row.agencies:
                agency_count[agency] += 1
            for agency, secs in item.on_scene_s:
                by_agency[agency].append(secs)
            per_shift[item.shift].append(item)

        def times(items: Sequence[IncidentTimes]) -> dict[str, Any]:
            return {
                "answer": summary([i.answer_s for i in items if i.answer_s is not None]),
                "call_to_dispatch": summary([i.to_dispatch_s for i in items
                                             if i.to_dispatch_s is not None]),
                "dispatch_to_on_scene": summary([s for i in items for _, s in i.on_scene_s]),
            }

        return {
            "since": since.isoformat(), "until": until.isoformat(), "total": len(rows),
            "by_category": dict(Counter(i.row.category or "unclassified" for i in rows)),
            "by_grade": dict(Counter(Grade(i.row.grade).name for i in rows)),
            "by_status": dict(Counter(i.row.status for i in rows)),
            "by_time": dict(sorted(Counter(self._bucket(i.row.opened_at, bucket)
                                           for i in rows).items())),
            "times": times(rows),
            "per_agency": {a: {"incidents": agency_count[a],
                               "dispatch_to_on_scene": summary(by_agency.get(a, []))}
                           for a in sorted(set(agency_count) | set(by_agency))},
            "per_shift": {name: {"incidents": len(items), **times(items)}
                          for name, items in sorted(per_shift.items())},
        }

    async def csv(self, since: dt.datetime, until: dt.datetime) -> str:
        """One line per incident with its times, for a spreadsheet."""
        rows = await self._load(since, until)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(["incident_id", "opened_at", "shift", "category", "subtype", "grade",
                         "status", "agencies", "reports", "answer_s", "call_to_dispatch_s",
                         "first_on_scene_s", "units_on_scene"])
        for item in rows:
            r = item.row
            first = min((s for _, s in item.on_scene_s), default=None)
            writer.writerow([
                r.id, r.opened_at.isoformat(), item.shift, r.category or "", r.subtype or "",
                Grade(r.grade).name, r.status, " ".join(r.agencies), r.report_count,
                _num(item.answer_s), _num(item.to_dispatch_s), _num(first),
                len(item.on_scene_s)])
        return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"
