"""HTTP routes for calls and call takers: live calls, queues, agent state, force-release.

``GET /api/v1/calls`` lists live calls; ``GET /api/v1/calls/{id}`` adds the
stored CDR (and its report); agents log in/out and go ready/not-ready
(a call taker only as themselves, a supervisor for anyone); a supervisor
force-releases a call (强拆: BYE on both legs with a Reason header, audited).
Without ``[sip] enabled`` every route answers 503.
"""

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from dispatch.api_reports import DescribeIn
from dispatch.apiutil import configured
from dispatch.auth import Permission, Principal
from telephony.acd.engine import AcdError

API = "/api/v1"
DESCRIBE_WAIT_S = 0.1
DESCRIBE_WAIT_TRIES = 30  # up to 3 s for a just-answered call's voice report to be filed
SIP_OFF = "SIP is not enabled on this node ([sip] enabled = false)"


class ReleaseIn(BaseModel):
    """Why a supervisor ends a call."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class TransferIn(BaseModel):
    """Where to blind-transfer a call (another agency's number)."""

    model_config = ConfigDict(extra="forbid")
    target: Annotated[str, Field(pattern=r"^\+?[0-9]{3,32}$")]


class CallbackIn(BaseModel):
    """Whom to call back, and which call taker talks to them."""

    model_config = ConfigDict(extra="forbid")
    number: Annotated[str, Field(pattern=r"^\+?[0-9]{3,32}$")]
    agent_id: Annotated[str, Field(min_length=1, max_length=64)]


def mount_calls(app: FastAPI, sip: Any, needs: Any) -> None:
    """Add the call routes (``sip`` is the daemon's SipService or None)."""

    def service(what: str = "") -> Any:
        return configured(sip, what, "telephony", SIP_OFF)

    @app.get(f"{API}/calls", tags=["calls"])
    async def live_calls(
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_READ))],
    ) -> list[dict[str, Any]]:
        """Every live call: state, caller, hotline, queue, agent; ``age_s`` since offered."""
        if sip is None:
            return []
        now = sip.b2bua.mono()
        return [{**asdict(c), "age_s": round(max(0.0, now - c.offered_at), 1)}
                for c in sip.b2bua.live_calls()]

    @app.get(f"{API}/calls/{{call_id}}", tags=["calls"])
    async def one_call(
        call_id: Annotated[str, Field(max_length=64)],
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_READ))],
    ) -> dict[str, Any]:
        """A live call, or the CDR of an ended one (with its report id)."""
        svc = service(f"call {call_id}")
        for call in svc.b2bua.live_calls():
            if call.call_id == call_id:
                return {"live": True, **asdict(call)}
        row = await svc.call_record(call_id)
        if row is None:
            raise HTTPException(404, f"no call {call_id}")
        return {"live": False, "call_id": row.id, "caller": row.caller, "hotline": row.hotline,
                "queue": row.queue, "trunk": row.trunk, "agent_id": row.agent_id,
                "outcome": row.outcome, "cause": row.cause, "released_by": row.released_by,
                "offered_at": row.offered_at.isoformat(),
                "answered_at": row.answered_at.isoformat() if row.answered_at else None,
                "released_at": row.released_at.isoformat() if row.released_at else None,
                "report_id": row.report_id, "timeline": row.timeline}

    @app.get(f"{API}/queues", tags=["calls"])
    async def queues(
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_READ))],
    ) -> list[dict[str, Any]]:
        """Every queue's statistics and the call-back list."""
        if sip is None:
            return []
        svc = sip
        now = svc.b2bua.mono()
        out = []
        for q in svc.acd._settings.queues:
            stats = svc.acd.queue_stats(q.name, now)
            data = asdict(stats)
            data["agents"] = {k.value: v for k, v in stats.agents.items()}
            out.append(data)
        return out

    @app.get(f"{API}/agents", tags=["calls"])
    async def agents(
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_READ))],
    ) -> list[dict[str, Any]]:
        """Every call taker: state, for how long, current call, queues logged in to."""
        if sip is None:
            return []
        now = sip.b2bua.mono()
        out = []
        for agent in sip.acd._settings.agents:
            st = sip.acd.agent_status(agent.agent_id)
            out.append({"agent_id": st.agent_id, "state": st.state.value,
                        "for_s": round(max(0.0, now - st.since), 1), "call_id": st.call_id,
                        "queues": list(st.queues)})
        return out

    @app.post(f"{API}/agents/{{agent_id}}/{{action}}", tags=["calls"])
    async def agent_action(
        agent_id: Annotated[str, Field(max_length=64)],
        action: Annotated[str, Field(pattern="^(login|logout|ready|not_ready)$")],
        principal: Annotated[Principal, Depends(needs(Permission.AGENT_STATE))],
    ) -> dict[str, Any]:
        """Log an agent in or out, or set ready / not ready."""
        if action not in ("login", "logout", "ready", "not_ready"):
            raise HTTPException(404, f"no agent action {action!r}")
        if principal.name != agent_id and not principal.can(Permission.CALLS_SUPERVISE):
            raise HTTPException(403, "a call taker may only change their own state")
        svc = service()
        try:
            svc.b2bua.agent_action(agent_id, action, reason=f"api:{principal.name}")
        except AcdError as exc:
            raise HTTPException(exc.status if exc.status != 500 else 409, str(exc)) from None
        status = svc.acd.agent_status(agent_id)
        return {"agent_id": agent_id, "state": status.state.value, "queues": status.queues}

    @app.post(f"{API}/calls/callback", tags=["calls"], status_code=202)
    async def call_back(
        body: CallbackIn,
        principal: Annotated[Principal, Depends(needs(Permission.AGENT_STATE))],
    ) -> dict[str, Any]:
        """Ring the call taker's phone, then the number through a trunk (audited)."""
        from telephony.b2bua.callback import CallbackError

        if principal.name != body.agent_id and not principal.can(Permission.CALLS_SUPERVISE):
            raise HTTPException(403, "a call taker may only call back from their own phone")
        try:
            call_id = await service().call_back(body.number, body.agent_id, principal.name)
        except CallbackError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"call_id": call_id}

    @app.post(f"{API}/calls/{{call_id}}/describe", tags=["calls"],
              responses={404: {"description": "unknown"}, 409: {"description": "not filed"}})
    async def describe(
        call_id: Annotated[str, Field(max_length=64)], body: DescribeIn,
        principal: Annotated[Principal, Depends(needs(Permission.REPORTS_WRITE))],
    ) -> dict[str, Any]:
        """The call taker describes the call: its voice report gets the text (and place),
        and is classified, graded and placed again.  Returns the report's incident."""
        svc = service(f"call {call_id}")
        row = await svc.call_record(call_id)
        # Call records are written behind the calls ([sip] records_linger_ms): a call taker
        # quick to describe a just-answered call waits for its report rather than a 409.
        for _ in range(DESCRIBE_WAIT_TRIES):
            live = call_id in svc.b2bua.calls
            if not ((row is None and live) or (row is not None and row.report_id is None)):
                break
            await asyncio.sleep(DESCRIBE_WAIT_S)
            row = await svc.call_record(call_id)
        if row is None:
            raise HTTPException(404, f"no call {call_id}")
        if row.report_id is None:
            raise HTTPException(409, f"the report of call {call_id} is not filed yet; "
                                     "try again in a moment")
        if (body.lat is None) != (body.lon is None):
            raise HTTPException(422, "give both lat and lon, or neither")
        incident_id = await svc.reports.describe(row.report_id, body.text, actor=principal.name,
                                                 lat=body.lat, lon=body.lon,
                                                 address=body.address)
        return {"call_id": call_id, "report_id": row.report_id, "incident_id": incident_id}

    @app.post(f"{API}/calls/{{call_id}}/transfer", tags=["calls"], status_code=202,
              responses={404: {"description": "no live call"},
                         409: {"description": "cannot transfer now"},
                         503: {"description": "every trunk is at its call limit"}})
    async def transfer(
        call_id: Annotated[str, Field(max_length=64)], body: TransferIn,
        principal: Annotated[Principal, Depends(needs(Permission.AGENT_STATE))],
    ) -> dict[str, Any]:
        """Blind-transfer a connected call to ``target``: the caller is bridged to the new
        leg when it answers and the call taker's leg is released; on failure the caller
        stays with the call taker.  The outcome arrives as an event (audited)."""
        from telephony.b2bua.transfer import TransferError

        svc = service(f"call {call_id}")
        live = next((c for c in svc.b2bua.live_calls() if c.call_id == call_id), None)
        if live is None:
            raise HTTPException(404, f"no live call {call_id}")
        if principal.name != live.agent_id and not principal.can(Permission.CALLS_SUPERVISE):
            raise HTTPException(403, "a call taker may only transfer their own call")
        try:
            await svc.transfer(call_id, body.target, principal.name)
        except TransferError as exc:
            raise HTTPException(exc.status if exc.status in (404, 503) else 409,
                                str(exc)) from None
        return {"call_id": call_id, "target": body.target, "state": "dialling"}

    @app.post(f"{API}/calls/{{call_id}}/release", tags=["calls"])
    async def force_release(
        call_id: Annotated[str, Field(max_length=64)], body: ReleaseIn,
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_SUPERVISE))],
    ) -> dict[str, Any]:
        """强拆: end a call on both legs with a Reason header (audited)."""
        if not await service(f"call {call_id}").force_release(call_id, body.reason,
                                                              principal.name):
            raise HTTPException(404, f"no live call {call_id}")
        return {"call_id": call_id, "released": True}
