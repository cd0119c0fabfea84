"""HTTP routes of dispatch: incident lifecycle, units, plans, roster, notifications, stats.

Every route names the permission it needs; lifecycle steps are further checked against the
transition table (:data:`dispatch.incidents.TRANSITIONS`).  ``/ack/<token>`` is the signed
acknowledgement link put in notifications: GET shows a page with one button, POST
acknowledges.  The GET does not acknowledge by itself because mail security scanners fetch
every link in a message, and a scanner must never silence an escalation.
"""

import datetime as dt
import html
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from dispatch.auth import Permission, Principal
from dispatch.dispatchconf import DispatchFiles, OfficialSpec, UnitNeed, UnitSpec
from dispatch.incidents import IncidentError, IncidentService, LinkKind, Status
from dispatch.notify import NotFound, NotificationService, notification_json
from dispatch.plans import PlanError, PlanService, action_json
from dispatch.roster import RosterService
from dispatch.stats import StatsService
from dispatch.units import PositionSource, UnitError, UnitService, UnitStatus, unit_json

API = "/api/v1"
Id = Annotated[str, Field(min_length=1, max_length=36)]


@dataclass(frozen=True)
class DispatchContext:
    """The dispatch services the routes use."""

    incidents: IncidentService
    units: UnitService
    plans: PlanService
    roster: RosterService
    notifications: NotificationService
    stats: StatsService
    files: DispatchFiles


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransitionIn(_Strict):
    """A lifecycle step."""

    to: Status
    reason: Annotated[str, Field(max_length=512)] = ""


class NoteIn(_Strict):
    """A note on an incident."""

    text: Annotated[str, Field(min_length=1, max_length=4000)]


class LinkIn(_Strict):
    """A typed link."""

    kind: LinkKind
    ref: Annotated[str, Field(min_length=1, max_length=160)]
    note: Annotated[str, Field(max_length=512)] = ""


class AssignIn(_Strict):
    """Units to send."""

    unit_ids: Annotated[list[Annotated[str, Field(max_length=32)]],
                        Field(min_length=1, max_length=50)]


class PositionIn(_Strict):
    """A unit's position."""

    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    source: PositionSource = PositionSource.API


class UnitStatusIn(_Strict):
    """A unit's new status."""

    status: UnitStatus
    reason: Annotated[str, Field(max_length=512)] = ""


class DecisionIn(_Strict):
    """A note with a decision."""

    note: Annotated[str, Field(max_length=512)] = ""


class StockIn(_Strict):
    """A stock level."""

    quantity: Annotated[int, Field(ge=0, le=10**9)]


class HandoverIn(OfficialSpec):
    """Who takes over a duty."""

    note: Annotated[str, Field(max_length=512)] = ""


#: Row ids are 64-bit: a larger number is a 422, not a database overflow.
ActionId = Annotated[int, Path(ge=1, le=2**63 - 1)]

def _http(exc: IncidentError | UnitError | PlanError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


def mount_dispatch(app: FastAPI, ctx: DispatchContext, needs: Any) -> None:
    """Add the dispatch routes to ``app``."""
    _mount_incidents(app, ctx, needs)
    _mount_units(app, ctx, needs)
    _mount_plans(app, ctx, needs)
    _mount_people(app, ctx, needs)
    _mount_stats(app, ctx, needs)


def _mount_incidents(app: FastAPI, ctx: DispatchContext, needs: Any) -> None:
    read = Depends(needs(Permission.INCIDENTS_READ))
    manage = Depends(needs(Permission.INCIDENTS_MANAGE))

    @app.post(f"{API}/incidents/{{incident_id}}/transition", tags=["incidents"])
    async def transition(incident_id: str, body: TransitionIn,
                         who: Annotated[Principal, manage]) -> dict[str, str]:
        """Take one lifecycle step (checked against the transition table and the role)."""
        try:
            status = await ctx.incidents.transition(incident_id, body.to, who, body.reason)
        except IncidentError as exc:
            raise _http(exc) from None
        return {"id": incident_id, "status": status.value}

    @app.post(f"{API}/incidents/{{incident_id}}/notes", tags=["incidents"], status_code=201)
    async def note(incident_id: str, body: NoteIn,
                   who: Annotated[Principal, manage]) -> dict[str, Any]:
        """Write a note on an incident."""
        try:
            row = await ctx.incidents.add_note(incident_id, body.text, who)
        except IncidentError as exc:
            raise _http(exc) from None
        return {"id": row.id, "at": row.at.isoformat(), "author": row.author, "text": row.text}

    @app.post(f"{API}/incidents/{{incident_id}}/links", tags=["incidents"], status_code=201)
    async def link(incident_id: str, body: LinkIn,
                   who: Annotated[Principal, manage]) -> dict[str, Any]:
        """Link a call, report, recording, broadcast or conference (idempotent)."""
        try:
            added = await ctx.incidents.link(incident_id, body.kind, body.ref, who.name,
                                             body.note)
        except IncidentError as exc:
            raise _http(exc) from None
        return {"added": added, "kind": body.kind.value, "ref": body.ref}

    @app.get(f"{API}/incidents/{{incident_id}}/timeline", tags=["incidents"])
    async def timeline(incident_id: str, _: Annotated[Principal, read],
                       limit: Annotated[int, Query(ge=1, le=5000)] = 2000
                       ) -> list[dict[str, Any]]:
        """Everything that happened to an incident, oldest first (过程溯源)."""
        try:
            return await ctx.incidents.timeline(incident_id, limit)
        except IncidentError as exc:
            raise _http(exc) from None


def _mount_units(app: FastAPI, ctx: DispatchContext, needs: Any) -> None:
    read = Depends(needs(Permission.UNITS_READ))
    dispatch = Depends(needs(Permission.UNITS_DISPATCH))
    manage = Depends(needs(Permission.UNITS_MANAGE))

    @app.get(f"{API}/units", tags=["units"])
    async def units(_: Annotated[Principal, read], status: UnitStatus | None = None,
                    agency: Annotated[str | None, Query(max_length=32)] = None,
                    type: Annotated[str | None, Query(max_length=32)] = None,
                    ) -> list[dict[str, Any]]:
        """Units, filtered by status, agency or type."""
        rows = await ctx.units.list_units(status=status.value if status else None, agency=agency,
                                    unit_type=type)
        return [unit_json(r) for r in rows]

    @app.get(f"{API}/units/{{unit_id}}", tags=["units"])
    async def unit(unit_id: str, _: Annotated[Principal, read]) -> dict[str, Any]:
        """One unit."""
        try:
            return unit_json(await ctx.units.get(unit_id))
        except UnitError as exc:
            raise _http(exc) from None

    @app.put(f"{API}/units/{{unit_id}}", tags=["units"])
    async def put_unit(unit_id: str, body: dict[str, Any],
                       who: Annotated[Principal, manage]) -> dict[str, Any]:
        """Create or change a unit (same keys as a ``[[unit]]`` of units.toml)."""
        from pydantic import ValidationError

        try:
            spec = UnitSpec.model_validate({**body, "id": unit_id}, strict=False)
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False)
                                ) from None
        await ctx.units.upsert(spec, actor=who.name)
        return unit_json(await ctx.units.get(unit_id))

    @app.post(f"{API}/units/{{unit_id}}/position", tags=["units"])
    async def position(unit_id: str, body: PositionIn,
                       _: Annotated[Principal, dispatch]) -> dict[str, Any]:
        """Record a unit's position."""
        try:
            await ctx.units.update_position(unit_id=unit_id, lat=body.lat, lon=body.lon,
                                            source=body.source)
            return unit_json(await ctx.units.get(unit_id))
        except UnitError as exc:
            raise _http(exc) from None

    @app.post(f"{API}/units/{{unit_id}}/status", tags=["units"])
    async def unit_status(unit_id: str, body: UnitStatusIn,
                          who: Annotated[Principal, dispatch]) -> dict[str, Any]:
        """Set a unit's status (en route, on scene, returning, available, out of service)."""
        try:
            await ctx.units.set_status(unit_id, body.status, who, body.reason)
            return unit_json(await ctx.units.get(unit_id))
        except (UnitError, IncidentError) as exc:
            raise _http(exc) from None

    @app.get(f"{API}/incidents/{{incident_id}}/recommendation", tags=["units"])
    async def recommend(incident_id: str, _: Annotated[Principal, read],
                        type: Annotated[list[str] | None, Query(max_length=16)] = None,
                        count: Annotated[int, Query(ge=1, le=50)] = 1) -> dict[str, Any]:
        """Nearest available units: of ``type`` (× count), else of the incident's plans."""
        if type:
            from pydantic import ValidationError

            try:
                needs_ = [UnitNeed(type=t, count=count) for t in type]
            except ValidationError as exc:
                raise HTTPException(422, [{**e, "loc": ["query", "type"]} for e in exc.errors(
                    include_url=False, include_context=False, include_input=False)]) from None
        else:
            needs_ = [UnitNeed.model_validate(n, strict=False)
                      for a in await ctx.plans.actions(incident_id=incident_id)
                      if a.kind == "units" for n in a.payload["needs"]]
        if not needs_:
            raise HTTPException(422, "no unit types: give ?type=... or activate a plan")
        try:
            picks = await ctx.units.recommend(incident_id, needs_)
        except (UnitError, IncidentError) as exc:
            raise _http(exc) from None
        return {"road_factor": ctx.units.road_factor,
                "needs": [n.model_dump(mode="json") for n in needs_],
                "units": [c.__dict__ for c in picks]}

    @app.post(f"{API}/incidents/{{incident_id}}/assign", tags=["units"])
    async def assign(incident_id: str, body: AssignIn,
                     who: Annotated[Principal, dispatch]) -> dict[str, Any]:
        """Send units to an incident in one action (all or none); each is notified."""
        try:
            refs = await ctx.units.assign(incident_id, body.unit_ids, who)
        except (UnitError, IncidentError) as exc:
            raise _http(exc) from None
        return {"assigned": body.unit_ids, "notifications": refs}

    @app.get(f"{API}/depots", tags=["units"])
    async def depots(_: Annotated[Principal, read]) -> list[dict[str, Any]]:
        """Resource depots with their stock."""
        return await ctx.units.depots()

    @app.put(f"{API}/depots/{{depot_id}}/stock/{{item}}", tags=["units"])
    async def stock(depot_id: str, item: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,32}$")],
                    body: StockIn, who: Annotated[Principal, manage]) -> dict[str, Any]:
        """Set one item's stock level."""
        try:
            await ctx.units.set_stock(depot_id, item, body.quantity, actor=who.name)
        except UnitError as exc:
            raise _http(exc) from None
        return {"depot": depot_id, "item": item, "quantity": body.quantity}


def _mount_plans(app: FastAPI, ctx: DispatchContext, needs: Any) -> None:
    read = Depends(needs(Permission.PLANS_READ))
    decide = Depends(needs(Permission.PLANS_DECIDE))

    @app.get(f"{API}/plans", tags=["plans"])
    async def plans(_: Annotated[Principal, read]) -> list[dict[str, Any]]:
        """The response plans loaded at start-up."""
        return [p.model_dump(mode="json") for p in ctx.files.plans]

    @app.get(f"{API}/plans/actions", tags=["plans"])
    async def actions(_: Annotated[Principal, read],
                      incident_id: Annotated[str | None, Query(max_length=36)] = None,
                      status: Annotated[str | None, Query(pattern="^(proposed|confirmed|"
                                                                  "rejected)$")] = None,
                      ) -> list[dict[str, Any]]:
        """Proposed actions (``status=proposed``: waiting for a human)."""
        return [action_json(a) for a in await ctx.plans.actions(incident_id=incident_id,
                                                                status=status)]

    async def _decide(action_id: int, confirm: bool, body: DecisionIn,
                      who: Principal) -> dict[str, Any]:
        try:
            return action_json(await ctx.plans.decide(action_id, confirm, who, body.note))
        except (PlanError, IncidentError) as exc:
            raise _http(exc) from None

    @app.post(f"{API}/plans/actions/{{action_id}}/confirm", tags=["plans"])
    async def confirm(action_id: ActionId, body: DecisionIn,
                      who: Annotated[Principal, decide]) -> dict[str, Any]:
        """Confirm a proposed action (``units``: the recommended units are assigned)."""
        return await _decide(action_id, True, body, who)

    @app.post(f"{API}/plans/actions/{{action_id}}/reject", tags=["plans"])
    async def reject(action_id: ActionId, body: DecisionIn,
                     who: Annotated[Principal, decide]) -> dict[str, Any]:
        """Reject a proposed action."""
        return await _decide(action_id, False, body, who)


def _mount_people(app: FastAPI, ctx: DispatchContext, needs: Any) -> None:
    @app.get(f"{API}/roster", tags=["roster"])
    async def roster(_: Annotated[Principal, Depends(needs(Permission.ROSTER_READ))],
                     agency: Annotated[str | None, Query(max_length=32)] = None,
                     ) -> list[dict[str, Any]]:
        """Officials on duty now."""
        return [o.__dict__ for o in await ctx.roster.on_duty(agency)]

    @app.get(f"{API}/roster/history", tags=["roster"])
    async def roster_history(_: Annotated[Principal, Depends(needs(Permission.ROSTER_READ))],
                             limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                             ) -> list[dict[str, Any]]:
        """Turns of duty, newest first."""
        return await ctx.roster.history(limit)

    @app.post(f"{API}/roster/handover", tags=["roster"], status_code=201)
    async def handover(body: HandoverIn,
                       who: Annotated[Principal, Depends(needs(Permission.ROSTER_MANAGE))],
                       ) -> dict[str, Any]:
        """Hand a duty (agency, role, rank) over to another official."""
        spec = OfficialSpec.model_validate(body.model_dump(exclude={"note"}))
        return (await ctx.roster.hand_over(spec, actor=who.name, note=body.note)).__dict__

    @app.get(f"{API}/notifications", tags=["notifications"])
    async def notifications(
            _: Annotated[Principal, Depends(needs(Permission.NOTIFICATIONS_READ))],
            incident_id: Annotated[str | None, Query(max_length=36)] = None,
            status: Annotated[str | None, Query(max_length=16)] = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict[str, Any]]:
        """Notifications, newest first."""
        rows = await ctx.notifications.recent(incident_id=incident_id, status=status, limit=limit)
        return [notification_json(r) for r in rows]

    @app.post(f"{API}/notifications/{{nid}}/ack", tags=["notifications"])
    async def ack(nid: str, who: Annotated[Principal,
                                           Depends(needs(Permission.NOTIFICATIONS_ACK))],
                  ) -> dict[str, Any]:
        """Acknowledge a notification for its official (e.g. they phoned in)."""
        try:
            row = await ctx.notifications.acknowledge(nid, actor=who.name, via="api")
        except NotFound:
            raise HTTPException(404, f"no notification {nid}") from None
        return notification_json(row)

    @app.get("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def ack_page(token: str) -> HTMLResponse:
        if ctx.notifications.signer.verify(token) is None:
            return HTMLResponse("<p>This acknowledgement link is not valid.</p>", 404)
        safe = html.escape(token, quote=True)
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Acknowledge</title>"
            f"<form method=post action=\"/ack/{safe}\"><p>Acknowledge this dispatchd "
            "notification?</p><button type=submit>I acknowledge</button></form>")

    @app.post("/ack/{token}", response_class=HTMLResponse, tags=["notifications"])
    async def ack_link(token: str, request: Request) -> HTMLResponse:
        """Acknowledge through the signed link of a notification (no log-in needed)."""
        source = request.client.host if request.client else "?"
        try:
            row = await ctx.notifications.acknowledge_token(token, source=source)
        except NotFound:
            return HTMLResponse("<p>This acknowledgement link is not valid.</p>", 404)
        when = row.acked_at.isoformat() if row.acked_at else ""
        return HTMLResponse(f"<!doctype html><meta charset=utf-8><p>Acknowledged by "
                            f"{html.escape(row.person)} at {when}. Thank you.</p>")


def _window(since: dt.datetime | None, until: dt.datetime | None,
            now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    until = until or now
    since = since or until - dt.timedelta(days=7)
    for value in (since, until):
        if value.tzinfo is None:
            raise HTTPException(422, "give times with a zone (e.g. 2026-11-21T00:00:00+08:00)")
    if not since < until or until - since > dt.timedelta(days=400):
        raise HTTPException(422, "since must be before until, at most 400 days apart")
    return since, until


def _mount_stats(app: FastAPI, ctx: DispatchContext, needs: Any) -> None:
    read = Depends(needs(Permission.STATS_READ))

    def now() -> dt.datetime:
        return ctx.incidents.now()

    @app.get(f"{API}/stats/incidents", tags=["stats"])
    async def stats(_: Annotated[Principal, read], since: dt.datetime | None = None,
                    until: dt.datetime | None = None,
                    bucket: Annotated[str, Query(pattern="^(hour|day)$")] = "day",
                    ) -> dict[str, Any]:
        """Incidents by category, grade, time, agency and shift, with response times."""
        lo, hi = _window(since, until, now())
        return await ctx.stats.incidents(lo, hi, bucket)

    @app.get(f"{API}/stats/incidents.csv", tags=["stats"], response_class=PlainTextResponse)
    async def stats_csv(_: Annotated[Principal, read], since: dt.datetime | None = None,
                        until: dt.datetime | None = None) -> PlainTextResponse:
        """One CSV line per incident with its response times."""
        lo, hi = _window(since, until, now())
        return PlainTextResponse(
            await ctx.stats.csv(lo, hi), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": "attachment; filename=incidents.csv"})
