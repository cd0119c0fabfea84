"""HTTP routes for broadcast campaigns: create, approve (second person), cancel, progress."""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from dispatch.auth import Permission, Principal
from dispatch.campaigns import CampaignError, CampaignService, RecipientIn
from dispatch.models import CampaignRow
from sms.errors import MsisdnError
from sms.msisdn import normalise_msisdn

API = "/api/v1"
MAX_RECIPIENTS = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipientBody(_Strict):
    """A recipient and their message (rendered by the caller, or by a template later)."""

    msisdn: Annotated[str, Field(min_length=3, max_length=32)]
    lang: Annotated[str, Field(pattern="^(zh|en)$")] = "zh"
    text: Annotated[str, Field(min_length=1, max_length=1000)]


class CampaignIn(_Strict):
    """A new broadcast."""

    title: Annotated[str, Field(min_length=1, max_length=200)]
    priority: Annotated[int, Field(ge=0, le=2)] = 0
    public: bool = True
    incident_id: Annotated[str | None, Field(max_length=36)] = None
    recipients: Annotated[list[RecipientBody], Field(min_length=1, max_length=MAX_RECIPIENTS)]


class CancelIn(_Strict):
    """Why a campaign is stopped."""

    reason: Annotated[str, Field(max_length=500)] = ""


def _campaign_json(row: CampaignRow, counts: dict[str, int]) -> dict[str, Any]:
    return {"id": row.id, "title": row.title, "status": row.status, "priority": row.priority,
            "public": row.public, "incident_id": row.incident_id,
            "created_by": row.created_by, "created_at": row.created_at.isoformat(),
            "approved_by": row.approved_by, "recipients": row.recipients, "counts": counts}


def mount_campaigns(app: FastAPI, campaigns: CampaignService, needs: Any) -> None:
    """Add the campaign routes."""

    def refuse(exc: CampaignError) -> HTTPException:
        return HTTPException(exc.status, str(exc))

    @app.post(f"{API}/campaigns", tags=["broadcast"], status_code=201)
    async def create(
        body: CampaignIn, who: Annotated[Principal, Depends(needs(Permission.BROADCAST_CREATE))]
    ) -> dict[str, Any]:
        """Store a broadcast and every recipient; a public one then waits for approval."""
        recipients, problems = [], []
        for i, r in enumerate(body.recipients):
            try:
                recipients.append(RecipientIn(normalise_msisdn(r.msisdn), r.lang, r.text))
            except MsisdnError as exc:
                problems.append({"loc": ["body", "recipients", i, "msisdn"], "msg": str(exc)})
        if problems:
            raise HTTPException(422, problems[:50])
        try:
            cid = await campaigns.create(body.title, recipients, actor=who.name,
                                         priority=body.priority, public=body.public,
                                         incident_id=body.incident_id)
        except CampaignError as exc:
            raise refuse(exc) from None
        return await get(cid, who)

    @app.get(f"{API}/campaigns/{{campaign_id}}", tags=["broadcast"],
             responses={404: {"description": "unknown"}})
    async def get(
        campaign_id: str, _: Annotated[Principal, Depends(needs(Permission.BROADCAST_READ))]
    ) -> dict[str, Any]:
        """A campaign with its recipients counted by state."""
        async with campaigns.db.session() as s:
            row = await s.get(CampaignRow, campaign_id)
        if row is None:
            raise HTTPException(404, f"no campaign {campaign_id}")
        return _campaign_json(row, await campaigns.counts(campaign_id))

    @app.get(f"{API}/campaigns", tags=["broadcast"])
    async def list_(
        _: Annotated[Principal, Depends(needs(Permission.BROADCAST_READ))],
    ) -> list[dict[str, Any]]:
        """The newest campaigns."""
        async with campaigns.db.session() as s:
            rows = (await s.scalars(select(CampaignRow).order_by(CampaignRow.created_at.desc())
                                    .limit(100))).all()
        return [_campaign_json(r, {}) for r in rows]

    @app.post(f"{API}/campaigns/{{campaign_id}}/approve", tags=["broadcast"],
              responses={403: {"description": "two-person rule"}, 409: {"description": "state"}})
    async def approve(
        campaign_id: str, who: Annotated[Principal, Depends(needs(Permission.BROADCAST_APPROVE))]
    ) -> dict[str, Any]:
        """The second person (a commander, not the creator) approves: sending starts."""
        try:
            await campaigns.approve(campaign_id, actor=who.name)
        except CampaignError as exc:
            raise refuse(exc) from None
        return await get(campaign_id, who)

    @app.post(f"{API}/campaigns/{{campaign_id}}/cancel", tags=["broadcast"],
              responses={404: {"description": "unknown"}, 409: {"description": "state"}})
    async def cancel(
        campaign_id: str, body: CancelIn,
        who: Annotated[Principal, Depends(needs(Permission.BROADCAST_CREATE))],
    ) -> dict[str, Any]:
        """Stop a campaign; recipients not yet submitted are not sent to."""
        try:
            await campaigns.cancel(campaign_id, actor=who.name, reason=body.reason)
        except CampaignError as exc:
            raise refuse(exc) from None
        return await get(campaign_id, who)
