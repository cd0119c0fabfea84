"""HTTP routes for the broadcast registry: import, preview, campaigns from an area, CAP export.

No ``from __future__ import annotations`` here: FastAPI must evaluate the
``Depends(needs(...))`` annotations, which name a local of :func:`mount_residents`.
"""


from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from dispatch.auth import Permission, Principal
from dispatch.campaigns import CampaignError, CampaignService
from dispatch.residents import RegistryUnavailable, ResidentService
from sms.errors import SmsError
from sms.targeting import TargetError
from sms.templates import Severity, TemplateError

API = "/api/v1"
MAX_TARGETS = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Targets = Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_TARGETS)]


class PreviewIn(_Strict):
    """Targets to count (circle, polygon, district, group, list) and the alert's severity."""

    targets: Targets
    severity: Severity = Severity.SEVERE
    template: Annotated[str | None, Field(max_length=64)] = None


class AreaCampaignIn(_Strict):
    """A broadcast to everyone the targets reach, in each resident's language."""

    title: Annotated[str, Field(min_length=1, max_length=200)]
    template: Annotated[str, Field(min_length=1, max_length=64)]
    values: dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=200)]]
    per_language: dict[Annotated[str, Field(pattern="^(zh|en)$")],
                       dict[Annotated[str, Field(max_length=32)],
                            Annotated[str, Field(max_length=200)]]] = {}
    targets: Targets
    public: bool = True
    incident_id: Annotated[str | None, Field(max_length=36)] = None


def mount_residents(app: FastAPI, residents: ResidentService, campaigns: CampaignService,
                    needs: Any) -> None:
    """Add the registry and area-broadcast routes."""

    @app.post(f"{API}/residents/import", tags=["broadcast"],
              responses={415: {"description": "not text/csv"}})
    async def import_csv(
        request: Request, who: Annotated[Principal, Depends(needs(Permission.RESIDENTS_MANAGE))]
    ) -> dict[str, Any]:
        """Replace the registry with a CSV upload (UTF-8); answers per-row errors.

        Larger files than the HTTP body limit: ``dispatchd residents import FILE``.
        """
        if request.headers.get("content-type", "").split(";")[0].strip() != "text/csv":
            raise HTTPException(415, "send the registry as text/csv")
        try:
            text = (await request.body()).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise HTTPException(422, f"not UTF-8 (byte {exc.start})") from None
        try:
            summary = await residents.import_text(text, actor=who.name)
        except SmsError as exc:
            raise HTTPException(422, str(exc)) from None
        return summary.to_json()

    @app.get(f"{API}/residents", tags=["broadcast"])
    async def count(
        _: Annotated[Principal, Depends(needs(Permission.BROADCAST_READ))],
    ) -> dict[str, Any]:
        """How many residents the registry holds."""
        return {"count": await residents.count()}

    @app.get(f"{API}/broadcast-templates", tags=["broadcast"])
    async def templates(
        _: Annotated[Principal, Depends(needs(Permission.BROADCAST_READ))],
    ) -> list[dict[str, Any]]:
        """The broadcast templates (conf/sms/templates.toml): texts, severity, placeholders."""
        if residents.templates is None:
            raise HTTPException(409, "no templates loaded (sms.templates_file)")
        out = []
        for tid in residents.templates.ids():
            t = residents.templates[tid]
            out.append({"id": t.id, "severity": t.severity.value, "priority": t.priority,
                        "max_parts": t.max_parts, "texts": dict(t.texts),
                        "placeholders": sorted(t.placeholders)})
        return out

    @app.post(f"{API}/campaigns/preview", tags=["broadcast"])
    async def preview(
        body: PreviewIn, _: Annotated[Principal, Depends(needs(Permission.BROADCAST_CREATE))]
    ) -> dict[str, Any]:
        """How many people the targets reach (opt-outs left out unless overridden)."""
        severity = body.severity
        try:
            if body.template is not None:
                if residents.templates is None:
                    raise RegistryUnavailable("no templates loaded")
                severity = residents.templates[body.template].severity
            return await residents.preview(body.targets, severity)
        except (SmsError, TemplateError) as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post(f"{API}/campaigns/from-area", tags=["broadcast"], status_code=201)
    async def from_area(
        body: AreaCampaignIn,
        who: Annotated[Principal, Depends(needs(Permission.BROADCAST_CREATE))],
    ) -> dict[str, Any]:
        """Resolve the targets, render the template per language and store the campaign."""
        try:
            plan = await residents.plan(body.targets, body.template, body.values,
                                        body.per_language)
        except (TargetError, TemplateError, SmsError) as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            cid = await campaigns.create(body.title, plan.recipients, actor=who.name,
                                         priority=plan.priority, public=body.public,
                                         incident_id=body.incident_id, target=plan.target)
        except CampaignError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        counts = await campaigns.counts(cid)
        return {"id": cid, "recipients": len(plan.recipients), "counts": counts,
                "severity": plan.severity.value, "opted_out": plan.opted_out,
                "opt_out_overridden": plan.override_opt_out,
                "status": "pending_approval" if body.public else "sending"}

    @app.get(f"{API}/campaigns/{{campaign_id}}/cap", tags=["broadcast"],
             responses={200: {"content": {"application/cap+xml": {}}},
                        404: {"description": "unknown"}, 409: {"description": "no area"}})
    async def cap(
        campaign_id: str, _: Annotated[Principal, Depends(needs(Permission.BROADCAST_READ))]
    ) -> Response:
        """The campaign as a CAP 1.2 alert (OASIS schema)."""
        try:
            xml = await residents.cap(campaign_id)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except SmsError as exc:
            raise HTTPException(409, str(exc)) from None
        return Response(xml, media_type="application/cap+xml")
