"""HTTP routes for calls and call takers: live calls, queues, agent state, force-release.

``GET /api/v1/calls`` lists live calls; ``GET /api/v1/calls/{id}`` adds the
stored CDR (and its report); agents log in/out and go ready/not-ready
(a call taker only as themselves, a supervisor for anyone); a supervisor
force-releases a call (强拆: BYE on both legs with a Reason header, audited).
Without ``[sip] enabled`` every route answers 503.
"""

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from dispatch.auth import Permission, Principal
from telephony.acd.engine import AcdError

API = "/api/v1"


class ReleaseIn(BaseModel):
    """Why a supervisor ends a call."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class CallbackIn(BaseModel):
    """Whom to call back, and which call taker talks to them."""

    model_config = ConfigDict(extra="forbid")
    number: Annotated[str, Field(pattern=r"^\+?[0-9]{3,32}$")]
    agent_id: Annotated[str, Field(min_length=1, max_length=64)]


def mount_calls(app: FastAPI, sip: Any, needs: Any) -> None:
    """Add the call routes (``sip`` is the daemon's SipService or None)."""

    def service() -> Any:
        if sip is None:
            raise HTTPException(503, "SIP is not enabled on this node ([sip] enabled = false)")
        return sip

    @app.get(f"{API}/calls", tags=["calls"])
    async def live_calls(
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_READ))],
    ) -> list[dict[str, Any]]:
        """Every live call: state, caller, hotline, queue, agent."""
        return [asdict(c) for c in service().b2bua.live_calls()]

    @app.get(f"{API}/calls/{{call_id}}", tags=["calls"])
    async def one_call(
        call_id: Annotated[str, Field(max_length=64)],
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_READ))],
    ) -> dict[str, Any]:
        """A live call, or the CDR of an ended one (with its report id)."""
        svc = service()
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
        svc = service()
        now = svc.b2bua.mono()
        out = []
        for q in svc.acd._settings.queues:
            stats = svc.acd.queue_stats(q.name, now)
            data = asdict(stats)
            data["agents"] = {k.value: v for k, v in stats.agents.items()}
            out.append(data)
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

    @app.post(f"{API}/calls/{{call_id}}/release", tags=["calls"])
    async def force_release(
        call_id: Annotated[str, Field(max_length=64)], body: ReleaseIn,
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_SUPERVISE))],
    ) -> dict[str, Any]:
        """强拆: end a call on both legs with a Reason header (audited)."""
        if not await service().force_release(call_id, body.reason, principal.name):
            raise HTTPException(404, f"no live call {call_id}")
        return {"call_id": call_id, "released": True}
