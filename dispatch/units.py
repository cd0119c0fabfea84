"""Field units, resource depots, recommendation and assignment.

Units are seeded from ``units.toml`` (a unit already in the database keeps what operators
changed through the API) and then live in the database: status, position and the incident
they serve.  A unit's position comes from the radio (location reports), the API, a satphone
or its home station, with the source and time kept.

:meth:`UnitService.recommend` picks, for each unit type an incident's plans ask for, the
nearest *available* units by estimated travel distance = great-circle distance × the
configured road factor, with a reason per unit.  :meth:`UnitService.assign` sends units in
one transaction (unit → ``assigned``, an assignment row with the time, incident →
``dispatched``, audit rows), then tells each unit through a :class:`UnitNotifier`.

Unit status: available → assigned → en_route → on_scene → returning → available, and
out_of_service from/to any of them.  ``on_scene`` of the first unit moves a dispatched
incident to ``on_scene``.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.audit import AuditTrail
from dispatch.auth import Principal
from dispatch.dispatchconf import DepotSpec, UnitNeed, UnitSpec
from dispatch.incidents import IncidentError, IncidentService, Status
from dispatch.models import DepotRow, DepotStockRow, IncidentRow, UnitAssignmentRow, UnitRow
from dispatch.storage import Database, after_commit

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0088
MAX_RECOMMEND = 50


class UnitStatus(enum.StrEnum):
    """What a unit is doing."""

    AVAILABLE = "available"
    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    RETURNING = "returning"
    OUT_OF_SERVICE = "out_of_service"


class PositionSource(enum.StrEnum):
    """Where a unit's position came from."""

    STATION = "station"
    RADIO = "radio"
    API = "api"
    SATPHONE = "satphone"
    GPS = "gps"


U = UnitStatus
#: Status changes a unit (or its dispatcher) may report.
UNIT_MOVES: frozenset[tuple[UnitStatus, UnitStatus]] = frozenset({
    (U.ASSIGNED, U.EN_ROUTE), (U.ASSIGNED, U.ON_SCENE), (U.EN_ROUTE, U.ON_SCENE),
    (U.ASSIGNED, U.RETURNING), (U.EN_ROUTE, U.RETURNING), (U.ON_SCENE, U.RETURNING),
    (U.RETURNING, U.AVAILABLE), (U.ASSIGNED, U.AVAILABLE),
    *((s, U.OUT_OF_SERVICE) for s in U if s is not U.OUT_OF_SERVICE),
    (U.OUT_OF_SERVICE, U.AVAILABLE),
})


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


class UnitError(Exception):
    """A refused unit operation; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        """``status``: 404 unknown, 409 state, 422 bad input."""
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UnitContact:
    """What a notifier needs to reach a unit."""

    unit_id: str
    name: str
    agency: str
    radio_id: str | None
    sip_uri: str
    phone: str
    satphone: str


class UnitNotifier(Protocol):
    """Tells a unit it has been sent somewhere (SMS, radio SDS, a call: wired by the daemon)."""

    async def notify_unit(self, unit: UnitContact, incident_id: str, text: str) -> str:
        """Deliver (or queue) ``text``; returns a notification id or a channel reference."""
        ...


@dataclass(frozen=True)
class UnitChanged:
    """A unit's status, position or assignment changed."""

    topic: ClassVar[str] = "unit.changed"
    unit_id: str
    status: str
    incident_id: str | None
    lat: float
    lon: float
    position_source: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A recommended unit with its estimated travel distance and why it was chosen."""

    unit_id: str
    name: str
    type: str
    agency: str
    distance_km: float
    reason: str


def unit_json(row: UnitRow) -> dict[str, Any]:
    """A unit as the API shows it."""
    return {
        "id": row.id, "name": row.name, "agency": row.agency, "type": row.type,
        "station": row.station, "home": {"lat": row.home_lat, "lon": row.home_lon},
        "contacts": {"radio_id": row.radio_id, "sip_uri": row.sip_uri, "phone": row.phone,
                     "satphone": row.satphone},
        "capabilities": row.capabilities, "status": row.status, "incident_id": row.incident_id,
        "position": {"lat": row.lat, "lon": row.lon, "source": row.position_source,
                     "at": row.position_at.isoformat()},
    }


class UnitService:
    """Units, depots, recommendation and assignment."""

    name = "units"

    def __init__(self, db: Database, audit: AuditTrail, publish: Callable[[object], object],
                 clock: Callable[[], float], incidents: IncidentService, *,
                 road_factor: float, notifier: UnitNotifier | None = None,
                 seed_units: Sequence[UnitSpec] = (), seed_depots: Sequence[DepotSpec] = ()
                 ) -> None:
        """Keep the parts; ``seed_*`` are written at :meth:`start` if not yet stored."""
        self.db = db
        self.audit = audit
        self.publish = publish
        self.clock = clock
        self.incidents = incidents
        self.road_factor = road_factor
        self.notifier = notifier
        self.seed_units = tuple(seed_units)
        self.seed_depots = tuple(seed_depots)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def start(self) -> None:
        """Seed units and depots that the database does not hold yet."""
        await self.seed(self.seed_units, self.seed_depots)

    async def stop(self) -> None:
        """Nothing to release: every change is stored."""

    def health(self) -> dict[str, Any]:
        """Seeded counts."""
        return {"seed_units": len(self.seed_units), "seed_depots": len(self.seed_depots)}

    async def seed(self, units: Iterable[UnitSpec], depots: Iterable[DepotSpec]) -> int:
        """Insert configured units/depots missing from the database; returns how many."""
        added = 0
        now = self._now()
        async with self.db.session() as s:
            have = set((await s.scalars(select(UnitRow.id))).all())
            for spec in units:
                if spec.id not in have:
                    s.add(self._new_row(spec, now))
                    added += 1
            depots_have = set((await s.scalars(select(DepotRow.id))).all())
            for depot in depots:
                if depot.id in depots_have:
                    continue
                s.add(DepotRow(id=depot.id, name=depot.name, agency=depot.agency, lat=depot.lat,
                               lon=depot.lon, updated_at=now))
                await s.flush()
                for item, qty in depot.stock.items():
                    s.add(DepotStockRow(depot_id=depot.id, item=item, quantity=qty, unit=""))
                added += 1
            if added:
                self.audit.record(s, actor="system", action="units.seeded", subject="units",
                                  details={"added": added})
        return added

    @staticmethod
    def _new_row(spec: UnitSpec, now: dt.datetime) -> UnitRow:
        return UnitRow(
            id=spec.id, name=spec.name, agency=spec.agency, type=spec.type, station=spec.station,
            home_lat=spec.lat, home_lon=spec.lon, radio_id=spec.radio_id, sip_uri=spec.sip_uri,
            phone=spec.phone, satphone=spec.satphone, capabilities=list(spec.capabilities),
            status=UnitStatus.AVAILABLE.value, incident_id=None, lat=spec.lat, lon=spec.lon,
            position_source=PositionSource.STATION.value, position_at=now, updated_at=now)

    async def upsert(self, spec: UnitSpec, *, actor: str) -> UnitRow:
        """Create a unit or change its description (status and position are kept)."""
        now = self._now()
        async with self.db.session() as s:
            row = await s.get(UnitRow, spec.id)
            if row is None:
                row = self._new_row(spec, now)
                s.add(row)
                action = "unit.created"
            else:
                row.name, row.agency, row.type, row.station = (spec.name, spec.agency, spec.type,
                                                               spec.station)
                row.home_lat, row.home_lon, row.radio_id = spec.lat, spec.lon, spec.radio_id
                row.sip_uri, row.phone, row.satphone = spec.sip_uri, spec.phone, spec.satphone
                row.capabilities, row.updated_at = list(spec.capabilities), now
                action = "unit.updated"
            self.audit.record(s, actor=actor, action=action, subject=f"unit:{spec.id}",
                              details=spec.model_dump(mode="json"))
        return row

    async def list_units(self, *, status: str | None = None, agency: str | None = None,
                   unit_type: str | None = None) -> list[UnitRow]:
        """Units, filtered."""
        stmt = select(UnitRow).order_by(UnitRow.id)
        if status is not None:
            stmt = stmt.where(UnitRow.status == status)
        if agency is not None:
            stmt = stmt.where(UnitRow.agency == agency)
        if unit_type is not None:
            stmt = stmt.where(UnitRow.type == unit_type)
        async with self.db.session() as s:
            return list((await s.scalars(stmt.limit(10_000))).all())

    async def get(self, unit_id: str) -> UnitRow:
        """One unit (``UnitError`` 404)."""
        async with self.db.session() as s:
            row = await s.get(UnitRow, unit_id)
        if row is None:
            raise UnitError(f"no unit {unit_id}", 404)
        return row

    async def update_position(self, *, lat: float, lon: float, source: PositionSource | str,
                              unit_id: str | None = None, radio_id: str | None = None,
                              at: dt.datetime | None = None) -> str | None:
        """Record a unit's position, found by ``unit_id`` or ``radio_id``.

        The radio service feeds location reports here (``radio_id=...``, ``source="radio"``).
        Returns the unit id, or ``None`` for a radio id no unit has (logged, not an error:
        a radio not on the unit list may report too).  An older fix than the one stored is
        ignored, so reports arriving out of order never move a unit backwards.
        """
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or math.isnan(lat + lon):
            raise UnitError(f"position out of range: {lat}, {lon}", 422)
        src = PositionSource(source)
        when = at or self._now()
        async with self.db.session() as s:
            if unit_id is not None:
                row = await s.get(UnitRow, unit_id)
            else:
                row = await s.scalar(select(UnitRow).where(UnitRow.radio_id == radio_id))
            if row is None:
                if unit_id is not None:
                    raise UnitError(f"no unit {unit_id}", 404)
                log.info("position from a radio no unit has", extra={"radio_id": radio_id})
                return None
            if when < row.position_at:
                return row.id
            row.lat, row.lon, row.position_source, row.position_at = lat, lon, src.value, when
            row.updated_at = self._now()
            self._announce(s, row, f"position from {src.value}")
            return row.id

    def _announce(self, s: AsyncSession, row: UnitRow, reason: str) -> None:
        event = UnitChanged(row.id, row.status, row.incident_id, row.lat, row.lon,
                            row.position_source, reason)
        after_commit(s, lambda: self.publish(event))

    async def set_status(self, unit_id: str, to: UnitStatus, who: Principal | str,
                         reason: str = "") -> None:
        """A unit reports (or a dispatcher sets) a status; times land on the assignment."""
        actor = who if isinstance(who, str) else who.name
        async with self.db.session() as s:
            # Lock in the order assign() does (incident, then unit), so the two never deadlock.
            seen = await s.scalar(select(UnitRow.incident_id).where(UnitRow.id == unit_id))
            if seen is not None:
                await s.scalar(select(IncidentRow.id).where(IncidentRow.id == seen)
                               .with_for_update())
            row = await s.scalar(select(UnitRow).where(UnitRow.id == unit_id).with_for_update()
                                 .execution_options(populate_existing=True))
            if row is None:
                raise UnitError(f"no unit {unit_id}", 404)
            current = UnitStatus(row.status)
            if (current, to) not in UNIT_MOVES:
                raise UnitError(f"unit {unit_id} is {current.value}: cannot become {to.value}")
            now = self._now()
            assignment = await self._open_assignment(s, unit_id)
            incident_id = row.incident_id
            if assignment is not None:
                if to is U.EN_ROUTE and assignment.en_route_at is None:
                    assignment.en_route_at = now
                elif to is U.ON_SCENE and assignment.on_scene_at is None:
                    assignment.on_scene_at = now
                elif to in (U.RETURNING, U.AVAILABLE, U.OUT_OF_SERVICE):
                    assignment.cleared_at = now
            row.status, row.updated_at = to.value, now
            if to in (U.AVAILABLE, U.OUT_OF_SERVICE):
                row.incident_id = None
            self.audit.record(s, actor=actor, action=f"unit.{to.value}",
                              subject=f"incident:{incident_id}" if incident_id
                              else f"unit:{unit_id}",
                              details={"unit": unit_id, "from": current.value, "to": to.value,
                                       "reason": reason})
            if to is U.ON_SCENE and incident_id is not None:
                incident = await s.get(IncidentRow, incident_id)
                if incident is not None and incident.status == Status.DISPATCHED.value:
                    self.incidents.step(s, incident, Status.ON_SCENE, None,
                                        f"unit {unit_id} on scene", actor=actor)
            self._announce(s, row, reason or to.value)

    async def _open_assignment(self, s: AsyncSession, unit_id: str) -> UnitAssignmentRow | None:
        return await s.scalar(
            select(UnitAssignmentRow).where(UnitAssignmentRow.unit_id == unit_id,
                                            UnitAssignmentRow.cleared_at.is_(None))
            .order_by(UnitAssignmentRow.id.desc()).limit(1))

    async def recommend(self, incident_id: str, needs: Sequence[UnitNeed]) -> list[Candidate]:
        """For each need, the nearest available units that match, with a reason each."""
        async with self.db.session() as s:
            incident = await self.incidents.get(s, incident_id)
            if incident.lat is None or incident.lon is None:
                raise UnitError(f"incident {incident_id} has no location yet", 409)
            types = {n.type for n in needs}
            rows = (await s.scalars(select(UnitRow).where(
                UnitRow.status == UnitStatus.AVAILABLE.value,
                UnitRow.type.in_(types)))).all()
        ilat, ilon = incident.lat, incident.lon
        taken: set[str] = set()
        out: list[Candidate] = []
        for need in needs:
            fits = [r for r in rows if r.type == need.type and r.id not in taken
                    and set(need.capabilities) <= set(r.capabilities)]
            ranked = sorted(fits, key=lambda r: (haversine_km(ilat, ilon, r.lat, r.lon), r.id))
            for rank, r in enumerate(ranked[:min(need.count, MAX_RECOMMEND)], start=1):
                straight = haversine_km(ilat, ilon, r.lat, r.lon)
                road = straight * self.road_factor
                age = max(0, int((self._now() - r.position_at).total_seconds() // 60))
                caps = f", has {'+'.join(need.capabilities)}" if need.capabilities else ""
                reason = (f"nearest available {need.type} #{rank} of {need.count}: "
                          f"{road:.1f} km by road ({straight:.1f} km straight × "
                          f"{self.road_factor:g}), {r.agency} {r.station or r.id}{caps}, "
                          f"position from {r.position_source} {age} min ago")
                out.append(Candidate(r.id, r.name, r.type, r.agency, round(road, 3), reason))
                taken.add(r.id)
            if len(ranked) < need.count:
                log.warning("not enough available units", extra={
                    "incident": incident_id, "type": need.type, "wanted": need.count,
                    "found": len(ranked)})
        return out

    async def assign(self, incident_id: str, unit_ids: Sequence[str], who: Principal | str,
                     reasons: dict[str, str] | None = None) -> list[str]:
        """Send units to an incident in one transaction, then notify each on its channel.

        Refused as a whole (``UnitError`` 409) if any unit is not available, so a
        dispatcher never half-sends a response.  A ``new``/``acknowledged`` incident becomes
        ``dispatched``.  Returns the notification references.
        """
        if not unit_ids or len(unit_ids) > MAX_RECOMMEND or len(set(unit_ids)) != len(unit_ids):
            raise UnitError(f"give 1 to {MAX_RECOMMEND} distinct unit ids", 422)
        actor = who if isinstance(who, str) else who.name
        principal = None if isinstance(who, str) else who
        reasons = reasons or {}
        contacts: list[UnitContact] = []
        async with self.db.session() as s:
            incident = await self.incidents.get(s, incident_id, lock=True)
            if incident.status in (Status.CLOSED.value, Status.MERGED.value):
                raise UnitError(f"incident {incident_id} is {incident.status}")
            rows = (await s.scalars(select(UnitRow).where(UnitRow.id.in_(unit_ids))
                                    .with_for_update())).all()
            found = {r.id: r for r in rows}
            missing = [u for u in unit_ids if u not in found]
            if missing:
                raise UnitError(f"no unit {', '.join(missing)}", 404)
            busy = [f"{r.id} ({r.status})" for r in rows if r.status != U.AVAILABLE.value]
            if busy:
                raise UnitError(f"not available: {', '.join(busy)}")
            now = self._now()
            for uid in unit_ids:
                row = found[uid]
                distance = None
                if incident.lat is not None and incident.lon is not None:
                    distance = round(haversine_km(incident.lat, incident.lon, row.lat, row.lon)
                                     * self.road_factor, 3)
                row.status, row.incident_id, row.updated_at = U.ASSIGNED.value, incident_id, now
                s.add(UnitAssignmentRow(incident_id=incident_id, unit_id=uid, agency=row.agency,
                                        assigned_at=now, assigned_by=actor,
                                        distance_km=distance, reason=reasons.get(uid, "")[:512]))
                self.audit.record(s, actor=actor, action="unit.assigned",
                                  subject=f"incident:{incident_id}",
                                  details={"unit": uid, "distance_km": distance,
                                           "reason": reasons.get(uid, "")})
                self._announce(s, row, f"assigned to {incident_id}")
                contacts.append(UnitContact(uid, row.name, row.agency, row.radio_id, row.sip_uri,
                                            row.phone, row.satphone))
            if incident.status in (Status.NEW.value, Status.ACKNOWLEDGED.value):
                try:
                    self.incidents.step(s, incident, Status.DISPATCHED, principal,
                                        f"units {', '.join(unit_ids)} assigned", actor=actor)
                except IncidentError as exc:
                    raise UnitError(str(exc), exc.status) from None
            text = _order_text(incident)
        refs = []
        if self.notifier is not None:
            for contact in contacts:
                try:
                    refs.append(await self.notifier.notify_unit(contact, incident_id, text))
                except Exception:  # the assignment stands; the dispatcher sees the failure
                    log.exception("notifying a unit failed", extra={"unit": contact.unit_id})
        return refs

    async def depots(self) -> list[dict[str, Any]]:
        """Depots with their stock."""
        async with self.db.session() as s:
            depots = (await s.scalars(select(DepotRow).order_by(DepotRow.id))).all()
            stock = (await s.scalars(select(DepotStockRow))).all()
        by: dict[str, dict[str, int]] = {}
        for item in stock:
            by.setdefault(item.depot_id, {})[item.item] = item.quantity
        return [{"id": d.id, "name": d.name, "agency": d.agency, "lat": d.lat, "lon": d.lon,
                 "stock": by.get(d.id, {})} for d in depots]

    async def set_stock(self, depot_id: str, item: str, quantity: int, *, actor: str) -> None:
        """Set one item's stock level at a depot (audited)."""
        if quantity < 0:
            raise UnitError("quantity must be 0 or more", 422)
        async with self.db.session() as s:
            if await s.get(DepotRow, depot_id) is None:
                raise UnitError(f"no depot {depot_id}", 404)
            row = await s.scalar(select(DepotStockRow).where(
                DepotStockRow.depot_id == depot_id, DepotStockRow.item == item))
            before = row.quantity if row is not None else 0
            if row is None:
                s.add(DepotStockRow(depot_id=depot_id, item=item, quantity=quantity, unit=""))
            else:
                row.quantity = quantity
            self.audit.record(s, actor=actor, action="depot.stock_set",
                              subject=f"depot:{depot_id}",
                              details={"item": item, "from": before, "to": quantity})


def _order_text(incident: IncidentRow) -> str:
    where = (f"{incident.lat:.5f},{incident.lon:.5f}" if incident.lat is not None
             and incident.lon is not None else "location to follow")
    return (f"DISPATCH incident {incident.id[:8]} {incident.category or ''}/"
            f"{incident.subtype or ''} grade {incident.grade} at {where}")
