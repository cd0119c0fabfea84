"""HTTP routes for reports and incidents, and the signed sensor webhook.

``POST /api/v1/reports`` answers only after the report is stored (and then
assessed and placed in an incident).  Sensors post to
``POST /api/v1/hooks/sensor`` with an HMAC-SHA256 of ``timestamp.body`` in
``X-Dispatchd-Signature: sha256=<hex>`` and the Unix time in
``X-Dispatchd-Timestamp``; a signature more than five minutes old is refused,
so a captured request cannot be replayed later, and ``event_id`` makes a
re-delivery land on the same report instead of a new one.
"""

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select

from dispatch.auth import Permission, Principal
from dispatch.models import IncidentRow, ReportRow
from dispatch.reports import CorrelationError, NewReport, NotFound, ReportService
from intake import channels
from intake.cli import classify_line
from intake.model import Category, Channel, Grade

API = "/api/v1"
MAX_SKEW_S = 300
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
Text = Annotated[str, Field(min_length=1, max_length=8000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportIn(_Strict):
    """A report typed by an operator or sent by a program."""

    channel: Annotated[str, Field(pattern="^(api|web_form|voice|radio_sds|satphone_sms)$")] = "api"
    text: Text
    lang: Annotated[str | None, Field(pattern="^(zh|en)$")] = None
    caller: Annotated[str, Field(max_length=64)] = ""
    lat: Annotated[float | None, Field(ge=-90, le=90)] = None
    lon: Annotated[float | None, Field(ge=-180, le=180)] = None
    address: Annotated[str, Field(max_length=512)] = ""
    fields: Annotated[dict[str, Annotated[str, Field(max_length=256)]],
                      Field(max_length=32)] = {}
    source_ref: Annotated[str | None, Field(min_length=1, max_length=160)] = None

    @field_validator("text", "address", "caller")
    @classmethod
    def _no_controls(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("control characters are not allowed")
        return value


class SensorIn(_Strict):
    """A sensor's alert (flood gauge, gas detector, fire alarm panel, ...)."""

    sensor_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w.:-]+$")]
    event_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w.:-]+$")]
    text: Text
    lat: Annotated[float | None, Field(ge=-90, le=90)] = None
    lon: Annotated[float | None, Field(ge=-180, le=180)] = None
    fields: Annotated[dict[str, Annotated[str, Field(max_length=256)]],
                      Field(max_length=32)] = {}


class PreviewIn(_Strict):
    """Text being typed, to classify without storing anything."""

    text: Annotated[str, Field(max_length=8000)]
    lang: Annotated[str | None, Field(pattern="^(zh|en)$")] = None
    fields: Annotated[dict[str, Annotated[str, Field(max_length=256)]],
                      Field(max_length=32)] = {}


class Placed(BaseModel):
    """Where a report went."""

    report_id: str
    duplicate: bool
    incident_id: str | None


class CorrectionIn(_Strict):
    """An operator's correction of a report's classification."""

    category: Category
    subtype: Annotated[str | None, Field(max_length=64)] = None
    note: Annotated[str, Field(max_length=512)] = ""


class DescribeIn(_Strict):
    """What the call taker learnt from the caller: text, and the place if known."""

    text: Text
    lat: Annotated[float | None, Field(ge=-90, le=90)] = None
    lon: Annotated[float | None, Field(ge=-180, le=180)] = None
    address: Annotated[str, Field(max_length=512)] = ""


class MergeIn(_Strict):
    """The incident to absorb into this one."""

    absorb: Annotated[str, Field(min_length=1, max_length=36)]


class SplitIn(_Strict):
    """The reports that leave for a new incident."""

    report_ids: Annotated[list[Annotated[str, Field(max_length=36)]],
                          Field(min_length=1, max_length=500)]


def report_json(row: ReportRow) -> dict[str, Any]:
    """A stored report as the API shows it."""
    grade = Grade(row.grade) if row.grade else None
    return {
        "id": row.id, "channel": row.channel, "received_at": row.received_at.isoformat(),
        "text": row.text, "lang": row.lang, "caller": row.caller, "lat": row.lat,
        "lon": row.lon, "address": row.address, "fields": row.fields,
        "created_by": row.created_by, "assessed": row.assessed, "category": row.category,
        "subtype": row.subtype, "agencies": row.agencies,
        "grade": grade.name if grade else None, "colour": grade.colour if grade else None,
        "incident_id": row.incident_id, "assessment": row.assessment,
    }


def incident_json(row: IncidentRow) -> dict[str, Any]:
    """A stored incident as the API shows it."""
    grade = Grade(row.grade)
    return {
        "id": row.id, "status": row.status, "category": row.category, "subtype": row.subtype,
        "agencies": row.agencies, "grade": grade.name, "grade_zh": grade.zh,
        "colour": grade.colour, "grade_reasons": row.grade_reasons, "lat": row.lat,
        "lon": row.lon, "needs_location": row.needs_location,
        "opened_at": row.opened_at.isoformat(), "last_report_at": row.last_report_at.isoformat(),
        "report_count": row.report_count, "merged_into": row.merged_into,
    }


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str,
                     now: float) -> None:
    """Check a webhook signature; ``HTTPException`` 401 if it is wrong or stale."""
    # isascii: "²" is a digit to str.isdigit but not to int().
    if (not (timestamp.isascii() and timestamp.isdigit())
            or abs(now - int(timestamp)) > MAX_SKEW_S):
        raise HTTPException(401, f"X-Dispatchd-Timestamp missing or more than {MAX_SKEW_S}s off")
    # The timestamp is signed with the body, so an old request cannot be replayed.
    if not channels.verify_signature(timestamp.encode() + b"." + body, signature, secret):
        raise HTTPException(401, "bad X-Dispatchd-Signature")


def mount_reports(app: FastAPI, reports: ReportService, needs: Any,
                  webhook_secret: Callable[[], bytes | None], clock: Callable[[], float]) -> None:
    """Add the report, incident and webhook routes to ``app``."""

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock(), dt.UTC)

    @app.post(f"{API}/reports", tags=["reports"], status_code=201)
    async def post_report(
        body: ReportIn, who: Annotated[Principal, Depends(needs(Permission.REPORTS_WRITE))]
    ) -> Placed:
        """Store a report (answered only once it is stored), assess it and place it."""
        new = NewReport(Channel(body.channel), body.text, now(), body.lang, body.caller,
                        body.lat, body.lon, body.address, tuple(body.fields.items()),
                        body.source_ref)
        done = await reports.submit(new, actor=who.name)
        return Placed(report_id=done.report_id, duplicate=done.duplicate,
                      incident_id=done.incident_id)

    @app.post(f"{API}/classify", tags=["reports"])
    async def preview(
        body: PreviewIn, _: Annotated[Principal, Depends(needs(Permission.REPORTS_WRITE))]
    ) -> dict[str, Any]:
        """Classify and grade text as it is typed (nothing is stored): the call taker's
        live view of category, agencies, grade and the evidence for them."""
        return classify_line(reports.intake, body.model_dump())

    @app.get(f"{API}/reports", tags=["reports"])
    async def list_reports(
        _: Annotated[Principal, Depends(needs(Permission.REPORTS_READ))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        incident_id: Annotated[str | None, Query(max_length=36)] = None,
    ) -> list[dict[str, Any]]:
        """Reports, newest first (optionally those of one incident)."""
        stmt = select(ReportRow).order_by(ReportRow.received_at.desc()).limit(limit)
        if incident_id is not None:
            stmt = stmt.where(ReportRow.incident_id == incident_id)
        async with reports.db.session() as s:
            return [report_json(r) for r in await s.scalars(stmt)]

    @app.get(f"{API}/reports/{{report_id}}", tags=["reports"],
             responses={404: {"description": "unknown"}})
    async def get_report(
        report_id: str, _: Annotated[Principal, Depends(needs(Permission.REPORTS_READ))]
    ) -> dict[str, Any]:
        """One report with intake's evidence."""
        async with reports.db.session() as s:
            row = await s.get(ReportRow, report_id)
            if row is None:
                raise HTTPException(404, f"no report {report_id}")
            return report_json(row)

    @app.post(f"{API}/reports/{{report_id}}/correction", tags=["reports"],
              responses={404: {"description": "unknown"}})
    async def correct(
        report_id: str, body: CorrectionIn,
        who: Annotated[Principal, Depends(needs(Permission.INCIDENTS_CORRELATE))],
    ) -> dict[str, Any]:
        """Correct a classification; the correction is kept for the same text."""
        try:
            await reports.correct(report_id, body.category, body.subtype, actor=who.name,
                                  note=body.note)
        except NotFound:
            raise HTTPException(404, f"no report {report_id}") from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return await get_report(report_id, who)

    @app.post(f"{API}/reports/{{report_id}}/describe", tags=["reports"],
              responses={404: {"description": "unknown"}})
    async def describe(
        report_id: str, body: DescribeIn,
        who: Annotated[Principal, Depends(needs(Permission.REPORTS_WRITE))],
    ) -> dict[str, Any]:
        """Add the call taker's description (and location) to a report, e.g. a voice
        call's; it is classified, graded and placed again."""
        if (body.lat is None) != (body.lon is None):
            raise HTTPException(422, "give both lat and lon, or neither")
        try:
            await reports.describe(report_id, body.text, actor=who.name, lat=body.lat,
                                   lon=body.lon, address=body.address)
        except NotFound:
            raise HTTPException(404, f"no report {report_id}") from None
        return await get_report(report_id, who)

    @app.get(f"{API}/incidents", tags=["incidents"])
    async def list_incidents(
        _: Annotated[Principal, Depends(needs(Permission.INCIDENTS_READ))],
        include_closed: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        """Incidents, most severe and newest first."""
        stmt = select(IncidentRow).order_by(IncidentRow.grade, IncidentRow.last_report_at.desc())
        if not include_closed:
            stmt = stmt.where(IncidentRow.status.not_in(("closed", "merged")))
        async with reports.db.session() as s:
            return [incident_json(r) for r in await s.scalars(stmt.limit(limit))]

    @app.get(f"{API}/incidents/{{incident_id}}", tags=["incidents"],
             responses={404: {"description": "unknown"}})
    async def get_incident(
        incident_id: str, _: Annotated[Principal, Depends(needs(Permission.INCIDENTS_READ))]
    ) -> dict[str, Any]:
        """One incident with its reports."""
        async with reports.db.session() as s:
            row = await s.get(IncidentRow, incident_id)
            if row is None:
                raise HTTPException(404, f"no incident {incident_id}")
            rows = await s.scalars(select(ReportRow).where(ReportRow.incident_id == incident_id)
                                   .order_by(ReportRow.received_at))
            return {**incident_json(row), "reports": [report_json(r) for r in rows]}

    @app.post(f"{API}/incidents/{{incident_id}}/merge", tags=["incidents"],
              responses={404: {"description": "unknown"}, 409: {"description": "refused"}})
    async def merge(
        incident_id: str, body: MergeIn,
        who: Annotated[Principal, Depends(needs(Permission.INCIDENTS_CORRELATE))],
    ) -> dict[str, Any]:
        """Merge another incident into this one."""
        try:
            await reports.merge(incident_id, body.absorb, actor=who.name)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except CorrelationError as exc:
            raise HTTPException(409, str(exc)) from None
        return await get_incident(incident_id, who)

    @app.post(f"{API}/incidents/{{incident_id}}/split", tags=["incidents"],
              responses={404: {"description": "unknown"}, 409: {"description": "refused"}})
    async def split(
        incident_id: str, body: SplitIn,
        who: Annotated[Principal, Depends(needs(Permission.INCIDENTS_CORRELATE))],
    ) -> dict[str, Any]:
        """Move some reports out of this incident into a new one."""
        try:
            new_id = await reports.split(incident_id, body.report_ids, actor=who.name)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except CorrelationError as exc:
            raise HTTPException(409, str(exc)) from None
        return await get_incident(new_id, who)

    @app.post(f"{API}/hooks/sensor", tags=["reports"], status_code=201,
              responses={401: {"description": "bad signature"},
                         503: {"description": "no secret configured"}})
    async def sensor(request: Request) -> Placed:
        """A signed sensor alert becomes a report (idempotent per sensor and event id)."""
        secret = webhook_secret()
        if secret is None:
            raise HTTPException(503, "sensor webhook disabled: no intake.webhook_secret_file "
                                     "or DISPATCHD_WEBHOOK_SECRET")
        body = await request.body()
        verify_signature(secret, request.headers.get("x-dispatchd-timestamp", ""), body,
                         request.headers.get("x-dispatchd-signature", ""), clock())
        try:
            alert = SensorIn.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            detail: Any = (exc.errors(include_url=False, include_context=False)
                           if isinstance(exc, ValidationError) else str(exc))
            raise HTTPException(422, detail) from None
        new = NewReport(Channel.SENSOR, alert.text, now(), None, alert.sensor_id, alert.lat,
                        alert.lon, "", tuple(alert.fields.items()),
                        f"{alert.sensor_id}:{alert.event_id}")
        done = await reports.submit(new, actor=f"sensor:{alert.sensor_id}")
        return Placed(report_id=done.report_id, duplicate=done.duplicate,
                      incident_id=done.incident_id)
