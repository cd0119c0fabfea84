"""HTTP routes for radio patches: a talkgroup into a call, a conference or another group.

``POST /api/v1/talkgroups/{name}/patch`` with exactly one of ``call`` (a call id
with media on this node), ``room`` (a conference) or ``talkgroup`` (another
group: the two are retransmitted on each other, floors coupled);
``DELETE`` on the same path unpatches; ``GET /api/v1/patches`` lists them.
Changes arrive on ``/events`` under ``radio.patch``.  See
:mod:`dispatch.radio_patch`.
"""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from dispatch.apiutil import configured
from dispatch.auth import Permission, Principal
from dispatch.radio_patch import PatchService
from dispatch.radio_service import RadioServiceError

API = "/api/v1"


class PatchIn(BaseModel):
    """Where to patch a talkgroup: exactly one of call, room or talkgroup."""

    model_config = ConfigDict(extra="forbid")

    call: Annotated[str | None, Field(min_length=1, max_length=256)] = None
    room: Annotated[str | None, Field(min_length=1, max_length=128,
                                      pattern=r"^[^\x00-\x1f\x7f]+$")] = None
    talkgroup: Annotated[str | None, Field(min_length=1, max_length=64)] = None


def mount_patch(app: FastAPI, patches: PatchService | None, needs: Any) -> None:
    """Add the patch routes (404/409 when radio audio or media is off on this node)."""
    why = "patches need [media] enabled and a radio gateway ([[radio.gateways]])"

    @app.get(f"{API}/patches", tags=["radio"])
    async def list_patches(
        _: Annotated[Principal, Depends(needs(Permission.RADIO_READ))],
    ) -> dict[str, dict[str, str]]:
        """Every patch: talkgroup -> room, target and who made it."""
        return {} if patches is None else patches.describe()

    @app.post(f"{API}/talkgroups/{{name}}/patch", tags=["radio"], status_code=201,
              responses={404: {"description": "unknown"}, 409: {"description": "busy"},
                         422: {"description": "bad target"}})
    async def patch(
        name: str, body: PatchIn,
        who: Annotated[Principal, Depends(needs(Permission.RADIO_PTT))],
    ) -> dict[str, str]:
        """Patch a talkgroup into a call, a conference or another talkgroup."""
        service = configured(patches, "", "radio patching", why)
        try:
            return await service.patch(name, who.name, call=body.call, room=body.room,
                                       group=body.talkgroup)
        except RadioServiceError as exc:
            raise HTTPException(exc.status, str(exc)) from None

    @app.delete(f"{API}/talkgroups/{{name}}/patch", tags=["radio"],
                responses={404: {"description": "not patched"}})
    async def unpatch(
        name: str, who: Annotated[Principal, Depends(needs(Permission.RADIO_PTT))],
    ) -> dict[str, str]:
        """Take a talkgroup out of its patch."""
        service = configured(patches, f"patch of {name}", "radio patching", why)
        try:
            return await service.unpatch(name, who.name)
        except RadioServiceError as exc:
            raise HTTPException(exc.status, str(exc)) from None
