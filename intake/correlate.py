"""Correlating reports into incidents; merging and splitting; every decision with a reason.

Theory of operation: a new report may join an open incident when (1) the categories are
compatible (configured; an unknown category on either side is compatible with anything),
(2) it arrives within the time window after the incident's last report, and (3) it lies
within the distance limit of the incident's position (the larger of the limits of the two
categories).  Among candidates the nearest wins, then the most recently active.  Otherwise
the report opens a new incident.  All operations are pure: they take snapshots and ``now``
and return :class:`Decision` objects holding new snapshots; the daemon persists the
snapshots and writes each decision's reason to the audit trail.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from intake.config import CorrelationRules
from intake.grade import Grader
from intake.model import Category, Grade, GradeReason, IncidentSnapshot, ReportRef

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


class Action(enum.Enum):
    """What a correlation decision did."""

    JOIN = "join"
    OPEN = "open"
    MERGE = "merge"
    SPLIT = "split"


@dataclass(frozen=True)
class Decision:
    """One correlation decision: the resulting incident snapshot(s) and why."""

    action: Action
    incident: IncidentSnapshot
    reason: str
    at: datetime
    report_id: str | None = None
    previous_grade: Grade | None = None
    distance_km: float | None = None
    other: IncidentSnapshot | None = None
    retired_id: str | None = None

    @property
    def grade_changed(self) -> bool:
        """True when the incident's grade differs from before the decision."""
        return self.previous_grade is not None and self.previous_grade != self.incident.grade


class CorrelationError(ValueError):
    """A merge or split request that cannot be carried out (names what is wrong)."""


class Correlator:
    """Applies the correlation rules; holds no incidents itself."""

    def __init__(self, rules: CorrelationRules, grader: Grader) -> None:
        """Keep the rules and the grader (for surges)."""
        self._rules = rules
        self._grader = grader

    def place(
        self,
        ref: ReportRef,
        open_incidents: Iterable[IncidentSnapshot],
        now: datetime,
        new_incident_id: str,
    ) -> Decision:
        """Join ``ref`` to the best compatible open incident, or open ``new_incident_id``."""
        best: tuple[float, float, IncidentSnapshot, str] | None = None
        for incident in open_incidents:
            verdict = self._candidate(ref, incident, now)
            if verdict is None:
                continue
            distance, why = verdict
            key = (distance, -(incident.last_report_at.timestamp()))
            if best is None or key < best[:2]:
                best = (*key, incident, why)
        if best is None:
            incident = _derive(new_incident_id, (ref,), ref.received_at, self._grader)
            return Decision(
                Action.OPEN,
                incident,
                "no compatible open incident within distance and time window",
                now,
                ref.report_id,
            )
        distance, _, target, why = best
        updated = _derive(
            target.incident_id, (*target.reports, ref), target.opened_at, self._grader
        )
        return Decision(
            Action.JOIN,
            updated,
            why,
            now,
            ref.report_id,
            target.grade,
            None if math.isinf(distance) else distance,
        )

    def _candidate(
        self, ref: ReportRef, incident: IncidentSnapshot, now: datetime
    ) -> tuple[float, str] | None:
        """(distance, reason) if ``ref`` may join ``incident``, else None."""
        if incident.closed:
            return None
        if not _compatible(self._rules, ref.category, incident.category):
            return None
        age = ref.received_at - incident.last_report_at
        window = timedelta(minutes=self._rules.window_minutes)
        if age > window or now - incident.last_report_at > window:
            return None
        minutes = max(age.total_seconds(), 0.0) / 60
        cat = ref.category.value if ref.category else "unknown"
        if ref.lat is None or ref.lon is None or incident.lat is None or incident.lon is None:
            if not self._rules.unlocated_joins:
                return None
            return (
                math.inf,
                f"category {cat} compatible, {minutes:.0f} min after last report, "
                "no position to compare",
            )
        distance = haversine_km(ref.lat, ref.lon, incident.lat, incident.lon)
        limit = max(self._limit(ref.category), self._limit(incident.category))
        if distance > limit:
            return None
        other = incident.category.value if incident.category else "unknown"
        return distance, (
            f"category {cat} compatible with {other}, {distance:.2f} km ≤ {limit:g} km, "
            f"{minutes:.0f} min ≤ {self._rules.window_minutes:g} min"
        )

    def _limit(self, category: Category | None) -> float:
        """Distance limit for a category."""
        if category is None:
            return self._rules.distance_km
        return self._rules.distance_by_category.get(category, self._rules.distance_km)

    def merge(
        self, keep: IncidentSnapshot, absorb: IncidentSnapshot, now: datetime, operator: str = ""
    ) -> Decision:
        """A call taker's merge: ``absorb``'s reports move to ``keep``; ``absorb`` is retired."""
        if keep.incident_id == absorb.incident_id:
            raise CorrelationError(f"cannot merge incident {keep.incident_id} with itself")
        reports = tuple(sorted((*keep.reports, *absorb.reports), key=lambda r: r.received_at))
        merged = _derive(
            keep.incident_id, reports, min(keep.opened_at, absorb.opened_at), self._grader
        )
        retired = replace(absorb, closed=True)
        return Decision(
            Action.MERGE,
            merged,
            f"merged {absorb.incident_id} into {keep.incident_id} by {operator or 'operator'}",
            now,
            None,
            keep.grade,
            None,
            retired,
            absorb.incident_id,
        )

    def split(
        self,
        incident: IncidentSnapshot,
        report_ids: Sequence[str],
        now: datetime,
        new_incident_id: str,
        operator: str = "",
    ) -> Decision:
        """A call taker's split: ``report_ids`` leave ``incident`` for ``new_incident_id``."""
        moving = set(report_ids)
        unknown = moving - set(incident.report_ids)
        if unknown:
            raise CorrelationError(
                f"reports {sorted(unknown)} are not in incident {incident.incident_id}"
            )
        stay = tuple(r for r in incident.reports if r.report_id not in moving)
        leave = tuple(r for r in incident.reports if r.report_id in moving)
        if not stay or not leave:
            raise CorrelationError("a split must leave at least one report on each side")
        kept = _derive(incident.incident_id, stay, incident.opened_at, self._grader)
        new = _derive(new_incident_id, leave, leave[0].received_at, self._grader)
        return Decision(
            Action.SPLIT,
            kept,
            f"split {len(leave)} report(s) into {new_incident_id} by {operator or 'operator'}",
            now,
            None,
            incident.grade,
            None,
            new,
        )


def _compatible(rules: CorrelationRules, a: Category | None, b: Category | None) -> bool:
    """Category compatibility; unknown is compatible with anything."""
    if a is None or b is None:
        return True
    return b in rules.compatible.get(a, frozenset({a}))


def _derive(
    incident_id: str, reports: tuple[ReportRef, ...], opened_at: datetime, grader: Grader
) -> IncidentSnapshot:
    """Recompute an incident's category, position, grade and agencies from its reports."""
    votes = Counter(r.category for r in reports if r.category is not None)
    category = max(votes, key=lambda c: (votes[c], -_first_index(reports, c))) if votes else None
    subs = Counter(r.subtype for r in reports if r.category is category and r.subtype)
    subtype = max(subs, key=lambda s: subs[s]) if subs else None
    located = [r for r in reports if r.lat is not None and r.lon is not None]
    lat = sum(r.lat for r in located if r.lat is not None) / len(located) if located else None
    lon = sum(r.lon for r in located if r.lon is not None) / len(located) if located else None
    worst = min(r.grade for r in reports)
    reasons = [GradeReason("reports", worst, f"most severe of {len(reports)} report grade(s)")]
    grade, surge = grader.surge(worst, [r.received_at for r in reports])
    if surge is not None:
        reasons.append(surge)
    agencies: list[str] = []
    for ref in reports:
        agencies.extend(code for code in ref.agencies if code not in agencies)
    return IncidentSnapshot(
        incident_id,
        category,
        subtype,
        lat,
        lon,
        opened_at,
        max(r.received_at for r in reports),
        reports,
        grade,
        tuple(agencies),
        False,
        tuple(reasons),
    )


def _first_index(reports: tuple[ReportRef, ...], category: Category) -> int:
    """Index of the first report of ``category`` (earlier reports win ties)."""
    return next(i for i, r in enumerate(reports) if r.category is category)
