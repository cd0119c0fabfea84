"""HTTP route to answer a satphone's incoming call into a conference.

``POST /api/v1/satphones/{name}/conference`` answers the ringing satphone
(``ATA``) with its sound-card audio as a leg of ``conference_id`` (a
conference or a call), or of a new conference named after the caller; with
``account``, the dispatcher's own phone is dialled into it as well.  Dialling
a satphone into a conference is ``POST /api/v1/conferences/{id}/legs`` with
``target = "satphone:<gateway>/<number>"``.  See :mod:`dispatch.satphone_legs`.
"""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from dispatch.apiutil import configured
from dispatch.auth import Permission, Principal
from telephony.b2bua.conference import ConferenceError

API = "/api/v1"
WHY = "satphone legs need [sip], [media] and a satphone gateway with audio on this node"


class AnswerIntoIn(BaseModel):
    """Where the answered call goes, and optionally the dispatcher's phone to ring too."""

    model_config = ConfigDict(extra="forbid")
    conference_id: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    account: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")] = None


def mount_satphone_legs(app: FastAPI, conferences: Any, needs: Any) -> None:
    """Add the answer-into-conference route (409 when satphone legs are off here)."""

    @app.post(f"{API}/satphones/{{name}}/conference", tags=["radio"], status_code=201,
              responses={404: {"description": "unknown"}, 409: {"description": "busy"}})
    async def answer_into(
        name: Annotated[str, Field(max_length=64)], body: AnswerIntoIn,
        who: Annotated[Principal, Depends(needs(Permission.CONFERENCES))],
    ) -> dict[str, Any]:
        """Answer the satphone's ringing call into a conference (new unless given)."""
        svc = configured(conferences, "", "satphone legs", WHY)
        if svc.satphones is None:
            raise HTTPException(409, WHY)
        created = None
        try:
            conf_id = body.conference_id
            if conf_id is None:
                phone = svc.satphones.radio.satphone(name) if name in \
                    svc.satphones.radio.satphones else None
                caller = phone.call.number if phone is not None and phone.call else ""
                conf_id = created = await svc.create(
                    f"satphone {name} {caller}".strip()[:128], who.name)
            leg = await svc.satphones.answer(name, conf_id, who.name)
            legs = {"satphone": leg}
            if body.account:
                legs["dispatcher"] = await svc.add(conf_id, body.account, who.name,
                                                   f"answering satphone {name}")
        except ConferenceError as exc:
            if created is not None:
                svc.conf.end(created, "system", "satphone not answered")
            raise HTTPException(exc.status, str(exc)) from None
        return {**svc.snapshot(conf_id), "legs_added": legs}
