"""A confirmed plan broadcast becomes a campaign waiting for a commander's approval.

Response plans propose a public broadcast (text and radius around the incident).
When a dispatcher confirms it, the residents registered within the radius are
resolved (opt-outs honoured) and a public campaign is stored for the incident:
the two-person rule still holds — the campaign waits for a commander other than
the person who confirmed.  Nothing is sent by the confirmation itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dispatch.campaigns import PRIORITY_WARNING, CampaignError, CampaignService, RecipientIn
from dispatch.events import Envelope
from dispatch.plans import ProposedActionDecided
from dispatch.residents import ResidentService
from sms.errors import SmsError
from sms.templates import Severity

log = logging.getLogger(__name__)


class PlanBroadcasts:
    """Hub listener: ``plan.action_decided`` (broadcast, confirmed) → a pending campaign."""

    def __init__(self, residents: ResidentService, campaigns: CampaignService) -> None:
        self.residents, self.campaigns = residents, campaigns
        self.created: dict[int, str] = {}  # action id -> campaign id
        self._tasks: set[asyncio.Task[Any]] = set()

    def __call__(self, envelope: Envelope) -> None:
        """Start creating the campaign (the hub's listeners must not block)."""
        event = envelope.event
        if isinstance(event, ProposedActionDecided) and event.kind == "broadcast" \
                and event.status == "confirmed":
            task = asyncio.get_running_loop().create_task(self.create(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def create(self, event: ProposedActionDecided) -> str | None:
        """The campaign for one confirmed broadcast action; None if it cannot be made."""
        payload = event.payload
        lat, lon = payload.get("lat"), payload.get("lon")
        if lat is None or lon is None:
            log.warning("plan broadcast confirmed for an incident with no location",
                        extra={"incident": event.incident_id, "plan": event.plan_id})
            return None
        radius_m = float(payload["radius_km"]) * 1000.0
        targets = [{"kind": "circle", "lat": lat, "lon": lon, "radius_m": radius_m}]
        text = str(payload["text"])
        try:
            # Opt-outs are honoured: a plan's notice is not the highest severity.
            reached, _, _ = await self.residents.reach(targets, Severity.SEVERE)
            people = [RecipientIn(msisdn, lang, text) for msisdn, lang in reached]
            if not people:
                log.warning("plan broadcast confirmed but nobody is registered in the area",
                            extra={"incident": event.incident_id, "plan": event.plan_id})
                return None
            cid = await self.campaigns.create(
                f"预案 {event.plan_id} · {event.incident_id[:8]}", people, actor=event.actor,
                priority=PRIORITY_WARNING, public=True, incident_id=event.incident_id,
                target={"targets": targets, "texts": {"zh": text}, "plan": event.plan_id,
                        "action": event.action_id})
        except (CampaignError, SmsError, LookupError, ValueError) as exc:
            log.error("plan broadcast could not be stored: %s", exc,
                      extra={"incident": event.incident_id, "plan": event.plan_id})
            return None
        self.created[event.action_id] = cid
        return cid
