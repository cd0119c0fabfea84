"""HTTP routes for talkgroups, PTT, SDS, gateways, unit positions and satphones.

A dispatcher's PTT press carries the priority of their role (commander and
admin > dispatcher and supervisor > anyone else, who counts as a field unit);
the floor core queues or pre-empts by it.  Every press, release, SDS and
satphone action is audited by :class:`~dispatch.radio_service.RadioService`.
Live changes arrive on the ``/events`` WebSocket under the topics
``radio.floor``, ``radio.keyed``, ``radio.talker``, ``radio.gateway``,
``radio.call``, ``radio.emergency``, ``radio.sds``, ``unit.position`` and
``satphone.status``.
"""

import re
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatch.apiutil import configured
from dispatch.auth import Permission, Principal
from dispatch.radio_service import ROLE_PRIORITY, RadioService, RadioServiceError
from hardware.at import AtError
from radio.satphone import SatphoneError
from radio.sds import SdsError
from radio.tetra import RadioError

API = "/api/v1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Text(_Strict):
    @field_validator("text", check_fields=False)
    @classmethod
    def _no_controls(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("control characters are not sent over the air")
        return value


class SdsIn(_Text):
    """An SDS text to a talkgroup, or to one handset (ISSI) through a gateway."""

    text: Annotated[str, Field(min_length=1, max_length=120)]
    talkgroup: Annotated[str | None, Field(max_length=64)] = None
    issi: Annotated[str | None, Field(pattern=r"^[0-9]{1,8}$")] = None
    gateway: Annotated[str | None, Field(max_length=64)] = None


class DialIn(_Strict):
    """A number for a satphone to call."""

    number: Annotated[str, Field(pattern=r"^\+?[0-9]{3,20}$")]


class SmsIn(_Text):
    """An SMS from a satphone (UCS-2 for Chinese, up to four parts)."""

    number: Annotated[str, Field(pattern=r"^\+?[0-9]{3,20}$")]
    text: Annotated[str, Field(min_length=1, max_length=600)]


class SbdIn(_Text):
    """An Iridium SBD text."""

    text: Annotated[str, Field(min_length=1, max_length=340, pattern=r"^[\x20-\x7e]+$")]


def _refuse(exc: Exception) -> HTTPException:
    if isinstance(exc, RadioServiceError):
        return HTTPException(exc.status, str(exc))
    if isinstance(exc, SdsError | RadioError | SatphoneError):
        return HTTPException(422, str(exc))
    return HTTPException(502, f"the device refused or did not answer: {exc}")


def mount_radio(app: FastAPI, radio: RadioService | None, needs: Any) -> None:
    """Add the radio and satphone routes (404/409 and empty lists when no gateway is configured)."""

    def service(what: str = "") -> RadioService:
        return configured(radio, what, "radio",
                          "no radio gateways are configured ([[radio.gateways]])")

    @app.get(f"{API}/radio/talkgroups", tags=["radio"])
    async def talkgroups(
        _: Annotated[Principal, Depends(needs(Permission.RADIO_READ))],
    ) -> list[dict[str, Any]]:
        """Every talkgroup: talker, queue, who is on air, emergency, gateway state."""
        if radio is None:
            return []
        r = radio
        return [r.talkgroup_state(name) for name in r.talkgroups]

    @app.get(f"{API}/radio/talkgroups/{{name}}", tags=["radio"],
             responses={404: {"description": "unknown"}})
    async def talkgroup(
        name: str, _: Annotated[Principal, Depends(needs(Permission.RADIO_READ))],
    ) -> dict[str, Any]:
        """One talkgroup's floor."""
        try:
            return service(f"talkgroup {name}").talkgroup_state(name)
        except RadioServiceError as exc:
            raise _refuse(exc) from None

    @app.post(f"{API}/radio/talkgroups/{{name}}/ptt", tags=["radio"],
              responses={404: {"description": "unknown"}})
    async def press(
        name: str, who: Annotated[Principal, Depends(needs(Permission.RADIO_PTT))],
    ) -> dict[str, Any]:
        """Press PTT: granted, queued (with position) or denied, at the role's priority."""
        r = service(f"talkgroup {name}")
        try:
            events = r.request_ptt(name, who.name, ROLE_PRIORITY[who.role])
        except RadioServiceError as exc:
            raise _refuse(exc) from None
        return {"events": events, "talkgroup": r.talkgroup_state(name)}

    @app.delete(f"{API}/radio/talkgroups/{{name}}/ptt", tags=["radio"],
                responses={404: {"description": "unknown"}})
    async def release(
        name: str, who: Annotated[Principal, Depends(needs(Permission.RADIO_PTT))],
    ) -> dict[str, Any]:
        """Release PTT (or withdraw a queued request)."""
        r = service(f"talkgroup {name}")
        try:
            events = r.release_ptt(name, who.name)
        except RadioServiceError as exc:
            raise _refuse(exc) from None
        return {"events": events, "talkgroup": r.talkgroup_state(name)}

    @app.post(f"{API}/radio/sds", tags=["radio"], status_code=201,
              responses={404: {"description": "unknown"}, 502: {"description": "radio"}})
    async def send_sds(
        body: SdsIn, who: Annotated[Principal, Depends(needs(Permission.RADIO_SEND))],
    ) -> dict[str, Any]:
        """Send an SDS text to a talkgroup or an ISSI."""
        try:
            reference = await service().send_sds(body.text, who.name, talkgroup=body.talkgroup,
                                                 issi=body.issi, gateway=body.gateway)
        except (RadioServiceError, SdsError, RadioError, AtError, TimeoutError) as exc:
            raise _refuse(exc) from None
        return {"reference": reference}

    @app.get(f"{API}/radio/gateways", tags=["radio"])
    async def gateways(
        _: Annotated[Principal, Depends(needs(Permission.RADIO_READ))],
    ) -> dict[str, Any]:
        """Every gateway's health: link, signal, registration, keyed groups, last seen."""
        return dict(radio.health()["gateways"]) if radio is not None else {}

    @app.get(f"{API}/radio/positions", tags=["radio"])
    async def positions(
        _: Annotated[Principal, Depends(needs(Permission.RADIO_READ))],
    ) -> list[dict[str, Any]]:
        """The last reported position of every unit."""
        return [{"radio_id": p.radio_id, "lat": p.lat, "lon": p.lon, "at": p.at.isoformat(),
                 "gateway": p.gateway, "error_m": p.error_m}
                for p in (radio.positions.values() if radio is not None else ())]

    @app.get(f"{API}/satphones/{{name}}", tags=["radio"],
             responses={404: {"description": "unknown"}})
    async def satphone(
        name: str, _: Annotated[Principal, Depends(needs(Permission.RADIO_READ))],
    ) -> dict[str, Any]:
        """A satphone's link, signal, registration and call."""
        try:
            return service(f"satphone {name}").satphone(name).health()
        except RadioServiceError as exc:
            raise _refuse(exc) from None

    async def act(name: str, action: str, who: Principal, number: str | None = None,
                  text: str | None = None) -> dict[str, Any]:
        r = service(f"satphone {name}")
        try:
            result = await r.satphone_action(name, action, who.name, number, text)
        except (RadioServiceError, SatphoneError, AtError, TimeoutError) as exc:
            raise _refuse(exc) from None
        return {"result": result, "satphone": r.satphone(name).health()}

    @app.post(f"{API}/satphones/{{name}}/dial", tags=["radio"])
    async def dial(name: str, body: DialIn,
                   who: Annotated[Principal, Depends(needs(Permission.RADIO_SEND))],
                   ) -> dict[str, Any]:
        """Call a number from the satphone."""
        return await act(name, "dial", who, number=body.number)

    @app.post(f"{API}/satphones/{{name}}/answer", tags=["radio"])
    async def answer(name: str,
                     who: Annotated[Principal, Depends(needs(Permission.RADIO_SEND))],
                     ) -> dict[str, Any]:
        """Answer the satphone's ringing call."""
        return await act(name, "answer", who)

    @app.post(f"{API}/satphones/{{name}}/hangup", tags=["radio"])
    async def hang_up(name: str,
                      who: Annotated[Principal, Depends(needs(Permission.RADIO_SEND))],
                      ) -> dict[str, Any]:
        """End the satphone's call."""
        return await act(name, "hang_up", who)

    @app.post(f"{API}/satphones/{{name}}/sbd", tags=["radio"], status_code=201)
    async def sbd(name: str, body: SbdIn,
                  who: Annotated[Principal, Depends(needs(Permission.RADIO_SEND))],
                  ) -> dict[str, Any]:
        """Send an Iridium SBD text (ASCII, up to 340 characters); the MOMSN."""
        return await act(name, "sbd", who, text=body.text)

    @app.post(f"{API}/satphones/{{name}}/sms", tags=["radio"], status_code=201)
    async def sms(name: str, body: SmsIn,
                  who: Annotated[Principal, Depends(needs(Permission.RADIO_SEND))],
                  ) -> dict[str, Any]:
        """Send an SMS from the satphone; the TP-MR of each part."""
        return await act(name, "sms", who, number=body.number, text=body.text)
