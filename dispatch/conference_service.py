"""Conferences for the daemon: the API's operations, audit rows, stored rows, units and plans.

:class:`ConferenceService` fronts the B2BUA's
:class:`~telephony.b2bua.conference.Conferences` for the HTTP routes and the
console.  It listens to the event hub:

* every :class:`~telephony.b2bua.conference.ConferenceChanged` (published by the
  SIP service) is queued and written off the call path: one audit row per
  change (``conference.<step>`` with who and why) and the ``conferences`` row's
  history (created, legs joined/left, ended);
* a confirmed plan action of kind ``conference`` opens the conference, links it
  to the incident and dials the plan's participants (unit ids become the unit's
  SIP URI, phone or satphone number; anything else is a user, number or URI).

:meth:`call_unit` is ``POST /units/{id}/call``: the dispatcher's phone and the
unit's are dialled into a new (or a given) conference, linked to the unit's
incident.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from dispatch.audit import AuditTrail
from dispatch.events import Envelope
from dispatch.incidents import IncidentError, IncidentService, LinkKind
from dispatch.models import ConferenceRow, IncidentRow, UnitRow
from dispatch.plans import ProposedActionDecided
from dispatch.storage import Database
from dispatch.units import UnitError, UnitService
from telephony.b2bua.conference import (
    ConferenceChanged,
    ConferenceError,
    Conferences,
    DialTarget,
    parse_target,
)

log = logging.getLogger(__name__)

QUEUE_SIZE = 50_000


def _ts(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def unit_target(unit: UnitRow, domain: str) -> DialTarget:
    """How to reach a unit by voice: its SIP URI, else its phone, else its satphone."""
    for value in (unit.sip_uri, unit.phone, unit.satphone):
        if value:
            try:
                return parse_target(value, domain)
            except ValueError as exc:
                raise ConferenceError(422, f"unit {unit.id}: contact {value!r}: {exc}") from None
    raise ConferenceError(409, f"unit {unit.id} has no SIP URI, phone or satphone number")


class ConferenceService:
    """Conference operations with audit, storage, incidents, units and plans (module docs)."""

    name = "conferences"

    def __init__(self, conferences: Conferences, domain: str, db: Database, audit: AuditTrail,
                 clock: Callable[[], float], *, incidents: IncidentService | None = None,
                 units: UnitService | None = None) -> None:
        self.conf = conferences
        self.domain = domain
        self.db = db
        self.audit = audit
        self.clock = clock
        self.incidents = incidents
        self.units = units
        self.queue: asyncio.Queue[ConferenceChanged] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0
        self.errors = 0
        self.plan_conferences: dict[int, str] = {}  # plan action id -> conference id
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: dispatch.satphone_legs.SatphoneLegs when radio and media are on (``satphone:`` legs).
        self.satphones: Any = None

    # -- service --------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer of audit and conference rows."""
        self._task = asyncio.ensure_future(self._writer())

    async def stop(self, timeout: float = 2.5) -> None:
        """End every open conference (BYE with a Reason), flush the rows, then stop."""
        for conf_id in self.conf.open_conferences():
            try:
                self.conf.end(conf_id, "system", "shutdown")
            except ConferenceError:
                continue
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.queue.join()
        except TimeoutError:
            log.error("conference rows not flushed at stop", extra={"pending": self.queue.qsize()})
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def health(self) -> dict[str, Any]:
        """Open conferences, the writer's queue and its counters."""
        return {"open": len(self.conf.open_conferences()),
                "pending": self.queue.qsize(), "dropped": self.dropped, "errors": self.errors}

    def __call__(self, envelope: Envelope) -> None:
        """Hub listener: conference changes to the writer; confirmed plan conferences."""
        event = envelope.event
        if isinstance(event, ConferenceChanged):
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
                log.error("conference rows: queue full, change not stored",
                          extra={"conference": event.conference_id, "step": event.step})
        elif (isinstance(event, ProposedActionDecided) and event.kind == "conference"
              and event.status == "confirmed"):
            task = asyncio.get_running_loop().create_task(self.open_for_plan(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- operations -------------------------------------------------------------

    def target(self, text: str) -> DialTarget:
        """A dial target from operator text (ConferenceError 422 if it is none)."""
        try:
            return parse_target(text, self.domain)
        except ValueError as exc:
            raise ConferenceError(422, str(exc)) from None

    async def create(self, name: str, actor: str, *, locked: bool = False,
                     pin: str | None = None, incident_id: str | None = None) -> str:
        """Open a conference (linked to ``incident_id`` if given); its id."""
        if incident_id:
            async with self.db.session() as s:
                if await s.get(IncidentRow, incident_id) is None:
                    raise ConferenceError(404, f"no incident {incident_id}")
        conf_id = self.conf.create(name, actor, locked=locked, pin=pin,
                                   incident_id=incident_id or "")
        if incident_id:
            await self._link(incident_id, conf_id, actor, name)
        return conf_id

    async def _link(self, incident_id: str, conf_id: str, actor: str, name: str) -> None:
        if self.incidents is None:
            return
        try:
            await self.incidents.link(incident_id, LinkKind.CONFERENCE, conf_id, actor=actor,
                                      note=f"conference {name}"[:200])
        except IncidentError as exc:
            log.warning("conference %s not linked to incident %s: %s", conf_id, incident_id,
                        exc)

    async def add(self, conf_id: str, target: str, actor: str, reason: str = "") -> str:
        """Dial ``target`` (user, number, SIP URI or ``satphone:<gateway>/<number>``) in."""
        if target.strip().startswith("satphone:"):
            if self.satphones is None:
                raise ConferenceError(409, "satphone legs need a satphone gateway "
                                      "([[radio.gateways]]) and [media] on this node")
            return str(await self.satphones.dial(conf_id, target, actor, reason))
        return await self.conf.add(conf_id, self.target(target), actor, reason)

    def snapshot(self, conf_id: str) -> dict[str, Any]:
        """A conference with its legs, satphone sound-card legs included."""
        snapshot = self.conf.snapshot(conf_id)
        if self.satphones is not None:
            snapshot["legs"] = [*snapshot["legs"], *self.satphones.legs_of(conf_id)]
        return snapshot

    def listing(self) -> list[dict[str, Any]]:
        """Every open conference and connected call, satphone sound-card legs included."""
        listing = self.conf.listing()
        if self.satphones is not None:
            for snapshot in listing:
                snapshot["legs"] = [*snapshot["legs"], *self.satphones.legs_of(snapshot["id"])]
        return listing

    async def remove(self, conf_id: str, leg_id: str, actor: str, reason: str) -> None:
        """Hang a leg up (a satphone on a sound card with ``ATH``)."""
        if self.satphones is not None and self.satphones.owns(leg_id):
            await self.satphones.remove(conf_id, leg_id, actor, reason)
            return
        self.conf.remove(conf_id, leg_id, actor, reason)

    async def call_unit(self, unit_id: str, actor: str, account: str | None,
                        conference_id: str | None = None, reason: str = "") -> dict[str, Any]:
        """Dial a unit (and the dispatcher's phone ``account``) into a new or given conference."""
        if self.units is None:
            raise ConferenceError(409, "units are not available on this node")
        try:
            unit = await self.units.get(unit_id)
        except UnitError as exc:
            raise ConferenceError(exc.status, str(exc)) from None
        target = unit_target(unit, self.domain)
        own = self.target(account) if account else None
        created = conference_id is None
        if conference_id is None:
            conference_id = await self.create(f"unit {unit.id} {unit.name}"[:128], actor,
                                              incident_id=unit.incident_id)
        elif unit.incident_id:
            self.conf.link_incident(conference_id, unit.incident_id)
            await self._link(unit.incident_id, conference_id, actor, f"unit {unit.id}")
        legs: dict[str, str] = {}
        try:
            if own is not None:
                legs["dispatcher"] = await self.conf.add(conference_id, own, actor,
                                                         reason or f"calling unit {unit.id}")
            legs["unit"] = await self.conf.add(conference_id, target, actor,
                                               reason or f"dispatcher {actor} calls the unit")
        except ConferenceError:
            if created:
                self.conf.end(conference_id, "system", "could not dial")
            raise
        return {"conference_id": conference_id, "unit": unit.id, "target": str(target),
                "legs": legs, "incident_id": unit.incident_id}

    async def open_for_plan(self, event: ProposedActionDecided) -> str | None:
        """A confirmed plan conference: open it for the incident and dial its participants."""
        payload = event.payload
        name = str(payload.get("name") or f"plan {event.plan_id}")
        try:
            conf_id = await self.create(name, event.actor, incident_id=event.incident_id)
        except ConferenceError as exc:
            log.error("plan conference not opened: %s", exc,
                      extra={"incident": event.incident_id, "plan": event.plan_id})
            return None
        self.plan_conferences[event.action_id] = conf_id
        for who in payload.get("participants") or ():
            try:
                target = await self._participant(str(who))
                await self.conf.add(conf_id, target, event.actor,
                                    f"plan {event.plan_id} action {event.action_id}")
            except ConferenceError as exc:
                log.warning("plan conference participant %s not dialled: %s", who, exc,
                            extra={"conference": conf_id, "plan": event.plan_id})
                self.conf.b2bua.emit(ConferenceChanged(
                    conf_id, "failed", "", str(who)[:255], event.actor, str(exc)[:200],
                    self.clock(), name, event.incident_id))
        return conf_id

    async def _participant(self, who: str) -> DialTarget:
        if self.units is not None and not who.startswith("sip") and not who[:1].isdigit() \
                and not who.startswith("+"):
            try:
                return unit_target(await self.units.get(who), self.domain)
            except UnitError:
                pass  # not a unit id: a user name
        return self.target(who)

    # -- the writer -----------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < 500 and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._write(batch)
            except Exception:
                self.errors += 1
                log.exception("conference rows: a batch of %d changes not stored", len(batch))
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _write(self, batch: list[ConferenceChanged]) -> None:
        async with self.db.session() as s:
            rows: dict[str, ConferenceRow | None] = {}
            for e in batch:
                self.audit.record(s, actor=e.actor or "system", action=f"conference.{e.step}",
                                  subject=f"conference:{e.conference_id}",
                                  details={"leg": e.leg_id, "target": e.target,
                                           "detail": e.detail, "name": e.name,
                                           "incident": e.incident_id})
                if e.step == "created":
                    rows[e.conference_id] = created = ConferenceRow(
                        id=e.conference_id, name=e.name or "conference", created_by=e.actor,
                        created_at=_ts(e.at), incident_id=e.incident_id or None,
                        ended_by="", end_reason="", history=[])
                    s.add(created)
                if e.conference_id not in rows:
                    rows[e.conference_id] = await s.get(ConferenceRow, e.conference_id)
                row = rows[e.conference_id]
                if row is None:
                    continue  # a call's room: the audit row is its record
                row.history = [*(row.history or []), {
                    "step": e.step, "leg": e.leg_id, "target": e.target, "actor": e.actor,
                    "detail": e.detail, "at": _ts(e.at).isoformat()}]
                if e.step == "ended":
                    row.ended_at, row.ended_by, row.end_reason = _ts(e.at), e.actor, e.detail
