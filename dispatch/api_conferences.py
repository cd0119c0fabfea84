"""HTTP routes for conferences, and for calling a unit by voice.

``/api/v1/conferences``: create (name, optional PIN, locked, incident), list
(open conferences and every connected call, a conference of two), show (legs
with state, mode, muted, deafened, who added them); ``POST .../legs`` dials a
registered user, a number through a trunk or a SIP URI into it; ``PATCH
.../legs/{leg}`` mutes/deafens; ``DELETE .../legs/{leg}?reason=`` hangs a leg
up (BYE with a Reason header); ``PATCH`` locks/unlocks; ``DELETE ?reason=``
ends it.  ``POST /api/v1/units/{id}/call`` rings the dispatcher's phone and the
unit into a new or given conference.  Dispatchers, supervisors and commanders
(``conferences.manage``); every change is audited with who and why.
"""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from dispatch.apiutil import configured
from dispatch.auth import Permission, Principal
from dispatch.satphone_legs import parse_satphone_target
from telephony.b2bua.conference import ConferenceError

API = "/api/v1"
OFF = "conferences need [sip] and [media] enabled on this node"
_ID = Annotated[str, Field(max_length=64)]
_LEG = Annotated[str, Field(max_length=128)]
_REASON = Annotated[str, Query(max_length=200)]
_TARGET = Annotated[str, Field(min_length=1, max_length=255)]


class ConferenceIn(BaseModel):
    """A new conference; ``participants`` are dialled at once."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=128)]
    pin: Annotated[str | None, Field(pattern=r"^[0-9]{4,12}$")] = None
    locked: bool = False
    incident_id: Annotated[str | None, Field(max_length=36)] = None
    participants: Annotated[list[_TARGET], Field(max_length=32)] = []
    reason: Annotated[str, Field(max_length=200)] = ""


class LegIn(BaseModel):
    """Whom to dial in: a registered user, a number (through a trunk) or a SIP URI."""

    model_config = ConfigDict(extra="forbid")
    target: _TARGET
    reason: Annotated[str, Field(max_length=200)] = ""


class LegPatch(BaseModel):
    """Mute/unmute and deafen/undeafen a leg."""

    model_config = ConfigDict(extra="forbid")
    muted: bool | None = None
    deafened: bool | None = None


class ConferencePatch(BaseModel):
    """Lock or unlock."""

    model_config = ConfigDict(extra="forbid")
    locked: bool


class UnitCallIn(BaseModel):
    """Call a unit: the dispatcher's phone (SIP account) and an optional conference to use."""

    model_config = ConfigDict(extra="forbid")
    account: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")] = None
    conference_id: Annotated[str | None, Field(max_length=64)] = None
    reason: Annotated[str, Field(max_length=200)] = ""


def _checked(svc: Any, text: str) -> Any:
    """A parsed dial target, or ``satphone:<gateway>/<number>`` kept as text (checked)."""
    if text.strip().startswith("satphone:"):
        parse_satphone_target(text)
        return text
    return svc.target(text)


def mount_conferences(app: FastAPI, conferences: Any, needs: Any) -> None:
    """Add the conference and unit-call routes (``conferences``: ConferenceService or None)."""

    def service(what: str = "") -> Any:
        return configured(conferences, what, "conferences", OFF)

    def fail(exc: ConferenceError) -> HTTPException:
        return HTTPException(exc.status, str(exc))

    manage = Depends(needs(Permission.CONFERENCES))
    from dispatch.api_satphone_legs import mount_satphone_legs

    mount_satphone_legs(app, conferences, needs)

    @app.get(f"{API}/conferences", tags=["conferences"])
    async def list_conferences(
        principal: Annotated[Principal, Depends(needs(Permission.CALLS_READ))],
    ) -> list[dict[str, Any]]:
        """Open conferences and connected calls (each a conference of its legs)."""
        return [] if conferences is None else list(conferences.listing())

    @app.post(f"{API}/conferences", tags=["conferences"], status_code=201)
    async def create_conference(body: ConferenceIn,
                                principal: Annotated[Principal, manage]) -> dict[str, Any]:
        """Open a conference and dial its participants (audited)."""
        svc = service()
        try:
            targets = [_checked(svc, t) for t in body.participants]  # all valid, or none
            conf_id = await svc.create(body.name, principal.name, locked=False,
                                       pin=body.pin, incident_id=body.incident_id)
        except ConferenceError as exc:
            raise fail(exc) from None
        try:
            legs = [await (svc.add(conf_id, t, principal.name, body.reason) if isinstance(t, str)
                           else svc.conf.add(conf_id, t, principal.name, body.reason))
                    for t in targets]
        except ConferenceError as exc:
            svc.conf.end(conf_id, principal.name, f"not opened: {exc}")
            raise fail(exc) from None
        if body.locked:
            svc.conf.lock(conf_id, True, principal.name)
        return {**svc.snapshot(conf_id), "dialled": legs}

    @app.get(f"{API}/conferences/{{conf_id}}", tags=["conferences"])
    async def show_conference(
        conf_id: _ID, principal: Annotated[Principal, Depends(needs(Permission.CALLS_READ))],
    ) -> dict[str, Any]:
        """A conference (or call) with its legs."""
        try:
            return dict(service(f"conference {conf_id}").snapshot(conf_id))
        except ConferenceError as exc:
            raise fail(exc) from None

    @app.post(f"{API}/conferences/{{conf_id}}/legs", tags=["conferences"], status_code=202)
    async def add_leg(conf_id: _ID, body: LegIn,
                      principal: Annotated[Principal, manage]) -> dict[str, Any]:
        """Dial a user, number, SIP URI or ``satphone:<gateway>/<number>`` in (audited)."""
        try:
            leg = await service(f"conference {conf_id}").add(conf_id, body.target,
                                                             principal.name, body.reason)
        except ConferenceError as exc:
            raise fail(exc) from None
        return {"conference_id": conf_id, "leg": leg, "target": body.target}

    @app.patch(f"{API}/conferences/{{conf_id}}/legs/{{leg}}", tags=["conferences"])
    async def patch_leg(conf_id: _ID, leg: _LEG, body: LegPatch,
                        principal: Annotated[Principal, manage]) -> dict[str, Any]:
        """Mute/unmute, deafen/undeafen a leg (audited)."""
        svc = service(f"conference {conf_id}")
        conf = svc.conf
        try:
            if svc.satphones is not None and svc.satphones.owns(leg):
                for what, on in (("mute", body.muted), ("deafen", body.deafened)):
                    if on is not None:
                        svc.satphones.flag(conf_id, leg, what, on, principal.name)
                return {"conference_id": conf_id, "leg": leg, "muted": body.muted,
                        "deafened": body.deafened}
            if body.muted is not None:
                conf.mute(conf_id, leg, body.muted, principal.name)
            if body.deafened is not None:
                conf.deafen(conf_id, leg, body.deafened, principal.name)
        except ConferenceError as exc:
            raise fail(exc) from None
        return {"conference_id": conf_id, "leg": leg, "muted": body.muted,
                "deafened": body.deafened}

    @app.delete(f"{API}/conferences/{{conf_id}}/legs/{{leg}}", tags=["conferences"])
    async def remove_leg(conf_id: _ID, leg: _LEG, principal: Annotated[Principal, manage],
                         reason: _REASON = "") -> dict[str, Any]:
        """Hang a leg up with a Reason header (a call's own leg releases the call)."""
        try:
            await service(f"conference {conf_id}").remove(conf_id, leg, principal.name, reason)
        except ConferenceError as exc:
            raise fail(exc) from None
        return {"conference_id": conf_id, "leg": leg, "removed": True}

    @app.patch(f"{API}/conferences/{{conf_id}}", tags=["conferences"])
    async def lock_conference(conf_id: _ID, body: ConferencePatch,
                              principal: Annotated[Principal, manage]) -> dict[str, Any]:
        """Lock (no new legs, 409) or unlock."""
        try:
            service(f"conference {conf_id}").conf.lock(conf_id, body.locked, principal.name)
        except ConferenceError as exc:
            raise fail(exc) from None
        return {"conference_id": conf_id, "locked": body.locked}

    @app.delete(f"{API}/conferences/{{conf_id}}", tags=["conferences"])
    async def end_conference(conf_id: _ID, principal: Annotated[Principal, manage],
                             reason: _REASON = "") -> dict[str, Any]:
        """BYE every leg with a Reason header (audited)."""
        try:
            service(f"conference {conf_id}").conf.end(conf_id, principal.name, reason)
        except ConferenceError as exc:
            raise fail(exc) from None
        return {"conference_id": conf_id, "ended": True}

    @app.post(f"{API}/units/{{unit_id}}/call", tags=["units"], status_code=202)
    async def call_unit(unit_id: Annotated[str, Field(max_length=32)], body: UnitCallIn,
                        principal: Annotated[Principal, manage]) -> dict[str, Any]:
        """Dial the unit (SIP URI, phone or satphone) and the dispatcher's phone together."""
        try:
            return dict(await service().call_unit(unit_id, principal.name, body.account,
                                                  body.conference_id, body.reason))
        except ConferenceError as exc:
            raise fail(exc) from None
