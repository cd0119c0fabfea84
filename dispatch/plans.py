"""Response plans (预案) in action: activation, notifications and proposed actions.

A plan (see :class:`~dispatch.dispatchconf.PlanSpec`) activates for an incident when the
incident's category and subtype match and its grade reaches the plan's grade (an incident
regraded from IV to II activates the II plans then).  Activation is stored once per plan and
incident (a unique row), so a replayed event or two nodes racing cannot activate twice.

On activation, in one transaction:

* officials of the plan's ``notify`` list are notified at once (the on-duty rank 1 of each
  agency and role; :mod:`dispatch.notify` escalates if they do not acknowledge);
* actions that move resources or reach the public become *proposed actions* waiting for a
  human: ``units`` (recommended units to assign), ``talkgroups`` (to patch), ``conference``
  (to open) and ``broadcast`` (the template, filled in, to propose as a campaign).

Confirming ``units`` assigns the recommended units (:meth:`UnitService.assign`); confirming
the others publishes :class:`ProposedActionDecided`, which the radio, conference and SMS
wiring act on.  Every decision is audited with who, when and the note.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dispatch.audit import AuditTrail
from dispatch.auth import Principal
from dispatch.dispatchconf import DispatchFiles, PlanSpec, UnitNeed
from dispatch.events import Envelope
from dispatch.incidents import IncidentService, check_text
from dispatch.models import IncidentRow, PlanActivationRow, ProposedActionRow
from dispatch.notify import NotificationService
from dispatch.roster import RosterService
from dispatch.storage import Database, after_commit
from dispatch.units import UnitError, UnitService
from intake.model import Grade

log = logging.getLogger(__name__)

OPEN_INCIDENT = ("new", "acknowledged", "dispatched", "on_scene", "contained")


class PlanError(Exception):
    """A refused plan operation; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 409) -> None:
        """``status``: 404 unknown, 409 state."""
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PlanActivated:
    """A response plan activated for an incident."""

    topic: ClassVar[str] = "plan.activated"
    incident_id: str
    plan_id: str
    plan_name: str
    grade: str
    notified: tuple[str, ...]
    proposed: tuple[int, ...]


@dataclass(frozen=True)
class ProposedActionDecided:
    """A human confirmed or rejected a plan's proposed action."""

    topic: ClassVar[str] = "plan.action_decided"
    action_id: int
    incident_id: str
    plan_id: str
    kind: str
    status: str
    payload: dict[str, Any]
    actor: str


def action_json(row: ProposedActionRow) -> dict[str, Any]:
    """A proposed action as the API shows it."""
    return {"id": row.id, "incident_id": row.incident_id, "plan_id": row.plan_id,
            "kind": row.kind, "payload": row.payload, "status": row.status,
            "created_at": row.created_at.isoformat(), "decided_by": row.decided_by,
            "decided_at": row.decided_at.isoformat() if row.decided_at else None,
            "note": row.decision_note}


def _proposals(plan: PlanSpec, incident: IncidentRow) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if plan.units:
        out.append(("units", {"needs": [n.model_dump(mode="json") for n in plan.units]}))
    if plan.talkgroups:
        out.append(("talkgroups", {"talkgroups": list(plan.talkgroups)}))
    if plan.conference is not None:
        out.append(("conference", plan.conference.model_dump(mode="json")))
    if plan.broadcast is not None:
        where = (f"{incident.lat:.4f},{incident.lon:.4f}" if incident.lat is not None
                 and incident.lon is not None else "")
        text = (plan.broadcast.template.replace("{incident}", incident.id[:8])
                .replace("{address}", where))
        out.append(("broadcast", {"text": text, "radius_km": plan.broadcast.radius_km,
                                  "lat": incident.lat, "lon": incident.lon}))
    return out


class PlanService:
    """Activates plans for incidents and holds their proposed actions for a human."""

    name = "plans"

    def __init__(self, db: Database, audit: AuditTrail, publish: Callable[[object], object],
                 clock: Callable[[], float], files: DispatchFiles, incidents: IncidentService,
                 units: UnitService, roster: RosterService,
                 notifications: NotificationService) -> None:
        """Keep the parts; :meth:`on_event` is the hook for incident changes."""
        self.db, self.audit, self.publish, self.clock = db, audit, publish, clock
        self.files = files
        self.incidents, self.units = incidents, units
        self.roster, self.notifications = roster, notifications
        self._lock = asyncio.Lock()
        self._decide_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counts = {"activated": 0}

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def start(self) -> None:
        """Activate plans an open incident should have but lacks (events lost in a crash)."""
        async with self.db.session() as s:
            ids = (await s.scalars(select(IncidentRow.id).where(
                IncidentRow.status.in_(OPEN_INCIDENT)).order_by(IncidentRow.opened_at)
                .limit(5000))).all()
        for incident_id in ids:
            await self.activate(incident_id)

    async def stop(self) -> None:
        """Let activations in flight finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def health(self) -> dict[str, Any]:
        """Plans loaded and activations since start."""
        return {"plans": len(self.files.plans), **self.counts}

    def on_event(self, envelope: Envelope) -> None:
        """Hub listener: an incident opened or changed grade → check its plans."""
        if envelope.topic != "incident.changed":
            return
        incident_id = getattr(envelope.event, "incident_id", None)
        if not isinstance(incident_id, str) or not self._may_match(envelope.event):
            return
        task = asyncio.get_running_loop().create_task(self._activate_logged(incident_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _may_match(self, event: object) -> bool:
        """False when the change says what the incident now is and no plan matches it.

        Most incidents (an unclassified voice call's) match no plan: this spares
        them a read of the incident.  An event without those facts is checked in full.
        """
        category = getattr(event, "category", None)
        grade = getattr(event, "grade", None)
        if not hasattr(event, "subtype") or not isinstance(grade, str) or (
                grade not in Grade.__members__):
            return True
        subtype = getattr(event, "subtype", None)
        return bool(self.files.plans_for(category, subtype, Grade[grade].value))

    async def _activate_logged(self, incident_id: str) -> None:
        try:
            await self.activate(incident_id)
        except Exception:  # a bug must not stop intake's event stream
            log.exception("plan activation failed", extra={"incident": incident_id})

    async def activate(self, incident_id: str) -> list[str]:
        """Activate every matching plan not yet active for the incident; returns plan ids."""
        async with self._lock:
            async with self.db.session() as s:
                incident = await s.get(IncidentRow, incident_id)
                if incident is None or incident.status not in OPEN_INCIDENT:
                    return []
                plans = self.files.plans_for(incident.category, incident.subtype, incident.grade)
                if not plans:
                    return []
                done = set((await s.scalars(select(PlanActivationRow.plan_id).where(
                    PlanActivationRow.incident_id == incident_id))).all())
            activated = []
            # Several plans matching at once (grade IV's and grade III's) must not text the
            # same official twice about one incident: the first plan's notice covers them.
            told: set[tuple[str, str]] = set()
            for plan in sorted(plans, key=lambda p: p.grade):  # most severe (I) first
                if plan.id not in done and await self._activate_one(incident_id, plan, told):
                    activated.append(plan.id)
            return activated

    async def _activate_one(self, incident_id: str, plan: PlanSpec,
                            told: set[tuple[str, str]]) -> bool:
        now = self._now()
        targets = [(t, (await self.roster.on_duty(t.agency, t.role))[:1]) for t in plan.notify]
        try:
            async with self.db.session() as s:
                incident = await s.get(IncidentRow, incident_id)
                assert incident is not None
                s.add(PlanActivationRow(incident_id=incident_id, plan_id=plan.id,
                                        grade=incident.grade, at=now))
                await s.flush()
                proposed = []
                for kind, payload in _proposals(plan, incident):
                    row = ProposedActionRow(incident_id=incident_id, plan_id=plan.id, kind=kind,
                                            payload=payload, status="proposed", created_at=now,
                                            decision_note="")
                    s.add(row)
                    await s.flush()
                    proposed.append(row.id)
                notified: list[str] = []
                covered: list[str] = []
                for target, officials in targets:
                    for official in officials:
                        if (official.agency, official.person) in told:
                            covered.append(official.person)
                            continue
                        self.notifications.add(
                            s, official, incident_id, plan.id,
                            f"[{Grade(incident.grade).name}] {plan.name}",
                            _notice(plan, incident), "system", now)
                        notified.append(official.person)
                    if not officials:
                        self.audit.record(s, actor="system", action="plan.nobody_on_duty",
                                          subject=f"incident:{incident_id}",
                                          details={"plan": plan.id, "agency": target.agency,
                                                   "role": target.role})
                self.audit.record(s, actor="system", action="plan.activated",
                                  subject=f"incident:{incident_id}",
                                  details={"plan": plan.id, "name": plan.name,
                                           "grade": Grade(incident.grade).name,
                                           "notified": notified, "proposed": proposed,
                                           "already_notified": covered})
                event = PlanActivated(incident_id, plan.id, plan.name,
                                      Grade(incident.grade).name, tuple(notified),
                                      tuple(proposed))
                after_commit(s, lambda: self.publish(event))
        except IntegrityError:
            return False  # another node (or event) activated it first
        told.update((o.agency, o.person) for _, officials in targets for o in officials)
        self.counts["activated"] += 1
        # Officials hear at once: the delivery loop runs now rather than at its next tick.
        self.notifications.wake()
        return True

    async def actions(self, *, incident_id: str | None = None,
                      status: str | None = None) -> list[ProposedActionRow]:
        """Proposed actions, oldest first."""
        stmt = select(ProposedActionRow).order_by(ProposedActionRow.id).limit(1000)
        if incident_id is not None:
            stmt = stmt.where(ProposedActionRow.incident_id == incident_id)
        if status is not None:
            stmt = stmt.where(ProposedActionRow.status == status)
        async with self.db.session() as s:
            return list((await s.scalars(stmt)).all())

    async def decide(self, action_id: int, confirm: bool, who: Principal,
                     note: str = "") -> ProposedActionRow:
        """Confirm or reject a proposed action (once); confirming ``units`` assigns them."""
        check_text(note, 512, "note")
        async with self._decide_lock:
            return await self._decide(action_id, confirm, who, note)

    async def _decide(self, action_id: int, confirm: bool, who: Principal,
                      note: str) -> ProposedActionRow:
        async with self.db.session() as s:
            row = await s.scalar(select(ProposedActionRow).where(
                ProposedActionRow.id == action_id).with_for_update())
            if row is None:
                raise PlanError(f"no proposed action {action_id}", 404)
            if row.status != "proposed":
                raise PlanError(f"action {action_id} was already {row.status} by "
                                f"{row.decided_by}")
            incident_id, kind, payload = row.incident_id, row.kind, dict(row.payload)
        if confirm and kind == "units":
            needs = [UnitNeed.model_validate(n, strict=False) for n in payload["needs"]]
            try:
                picks = await self.units.recommend(incident_id, needs)
                if not picks:
                    raise PlanError("no available unit matches the plan's needs")
                await self.units.assign(incident_id, [c.unit_id for c in picks], who,
                                        {c.unit_id: c.reason for c in picks})
            except UnitError as exc:
                raise PlanError(str(exc), exc.status) from None
            payload["assigned"] = [c.unit_id for c in picks]
        async with self.db.session() as s:
            row = await s.scalar(select(ProposedActionRow).where(
                ProposedActionRow.id == action_id).with_for_update())
            assert row is not None
            if row.status != "proposed":
                raise PlanError(f"action {action_id} was already {row.status} by "
                                f"{row.decided_by}")
            row.status = "confirmed" if confirm else "rejected"
            row.decided_by, row.decided_at, row.decision_note = who.name, self._now(), note
            row.payload = payload
            self.audit.record(s, actor=who.name, action=f"plan.action_{row.status}",
                              subject=f"incident:{incident_id}",
                              details={"action": action_id, "plan": row.plan_id, "kind": kind,
                                       "note": note, "payload": payload})
            event = ProposedActionDecided(action_id, incident_id, row.plan_id, kind, row.status,
                                          payload, who.name)
            after_commit(s, lambda: self.publish(event))
        return row


def _notice(plan: PlanSpec, incident: IncidentRow) -> str:
    grade = Grade(incident.grade)
    where = (f"{incident.lat:.5f}, {incident.lon:.5f}" if incident.lat is not None
             and incident.lon is not None else "location not yet known")
    return (f"Response plan {plan.name} ({plan.id}) activated.\n"
            f"Incident {incident.id}: {incident.category}/{incident.subtype}, grade "
            f"{grade.name} {grade.zh} ({grade.colour}), {incident.report_count} report(s).\n"
            f"Location: {where}.\nOpened {incident.opened_at.isoformat()}.")
