"""HTTP routes for force-in (强插): a supervisor's phone joins a live call.

``POST /api/v1/calls/{id}/monitor {"mode", "account"}`` rings the supervisor's
registered phone (SIP account ``account``) into the call in listen, whisper or
barge mode; ``PATCH /api/v1/calls/{id}/monitor/{leg} {"mode"}`` switches mode;
``DELETE`` hangs the phone up; ``GET`` lists the supervisors in a call.  Needs
``[media] enabled``; every step is audited with the supervisor's name.  Without
``[sip] enabled`` the routes answer 409 (a list is empty).
"""

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from dispatch.api_calls import SIP_OFF
from dispatch.apiutil import configured
from dispatch.auth import Permission, Principal
from telephony.b2bua.monitor import MonitorError

API = "/api/v1"


class MonitorIn(BaseModel):
    """A supervisor forcing into a call: the mode and their phone's SIP account."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["listen", "whisper", "barge"]
    account: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")]


class ModeIn(BaseModel):
    """A supervisor leg's new mode."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["listen", "whisper", "barge"]


def mount_monitor(app: FastAPI, sip: Any, needs: Any) -> None:
    """Add the force-in routes (``sip`` is the daemon's SipService or None)."""

    def service(what: str = "") -> Any:
        return configured(sip, what, "telephony", SIP_OFF)

    @app.get(f"{API}/calls/{{call_id}}/monitor", tags=["calls"])
    async def monitors(
        call_id: Annotated[str, Field(max_length=64)],
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_SUPERVISE))],
    ) -> list[dict[str, str]]:
        """The supervisor legs forced into a call."""
        return [] if sip is None else list(sip.monitors(call_id))

    @app.post(f"{API}/calls/{{call_id}}/monitor", tags=["calls"], status_code=202)
    async def force_in(
        call_id: Annotated[str, Field(max_length=64)], body: MonitorIn,
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_SUPERVISE))],
    ) -> dict[str, Any]:
        """强插: ring the supervisor's phone into the call in the chosen mode (audited)."""
        try:
            leg = await service(f"call {call_id}").monitor(call_id, body.account, body.mode,
                                                           principal.name)
        except MonitorError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return {"call_id": call_id, "leg": leg, "mode": body.mode, "account": body.account}

    @app.patch(f"{API}/calls/{{call_id}}/monitor/{{leg}}", tags=["calls"])
    async def monitor_mode(
        call_id: Annotated[str, Field(max_length=64)], leg: Annotated[str, Field(max_length=128)],
        body: ModeIn,
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_SUPERVISE))],
    ) -> dict[str, Any]:
        """Switch a supervisor leg between listen, whisper and barge (audited)."""
        try:
            service(f"call {call_id}").monitor_mode(call_id, leg, body.mode, principal.name)
        except MonitorError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return {"call_id": call_id, "leg": leg, "mode": body.mode}

    @app.delete(f"{API}/calls/{{call_id}}/monitor/{{leg}}", tags=["calls"])
    async def monitor_leave(
        call_id: Annotated[str, Field(max_length=64)], leg: Annotated[str, Field(max_length=128)],
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_SUPERVISE))],
    ) -> dict[str, Any]:
        """Hang up a supervisor leg (the call goes on; audited)."""
        try:
            service(f"call {call_id}").monitor_leave(call_id, leg, principal.name)
        except MonitorError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return {"call_id": call_id, "leg": leg, "left": True}
