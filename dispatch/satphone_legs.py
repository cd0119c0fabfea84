"""Satellite-phone calls as legs of conferences (and of calls, a conference of two).

Theory of operation
-------------------
A conference leg to ``satphone:<gateway>/<number>`` is dialled one of two ways,
chosen by the gateway's settings:

* ``sip_uri`` (a docking gateway with a SIP side, e.g. ``sip:{number}@192.0.2.10``):
  the number goes into the URI and the leg is an ordinary SIP dial-out of
  :class:`~telephony.b2bua.conference.Conferences` -- the dock dials the
  satellite; BYE either way ends it like any leg;
* ``audio`` (the handset's audio port on a sound card): ``ATD<number>;`` over the
  AT port and the card as a *local leg* ``satphone:<gateway>`` of the room
  (:class:`radio.terminal_audio.SatphoneAudio`: audio both ways only while
  the phone reports the call active).  An incoming call (``RING``/``+CLIP``)
  is answered into a conference the same way (``ATA``).

The leg ends when the dispatcher removes it (``ATH``), the far end hangs up
(``NO CARRIER`` or the poll finding no call), the conference or call ends
(``ATH``), or the gateway is lost (a ``RadioGatewayChanged`` ``lost`` alarm,
already raised and audited by the radio service; SIP legs dialled through a
lost gateway are hung up too, since the dock behind it is unreachable).
Every step is a :class:`~telephony.b2bua.conference.ConferenceChanged` with
actor and reason, stored and audited like any conference change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dispatch.events import Envelope
from dispatch.radio_service import (
    RadioGatewayChanged,
    RadioService,
    RadioServiceError,
    SatphoneStatus,
)
from hardware.at import AtError
from radio.satphone import SatphoneError
from telephony.b2bua.conference import ConferenceChanged, ConferenceError, Conferences, parse_target
from telephony.b2bua.events import CallReleased
from telephony.media.engine import MediaEngine

__all__ = ["SatphoneLegs", "parse_satphone_target"]

log = logging.getLogger(__name__)

PREFIX = "satphone:"
_TARGET = re.compile(r"^satphone:([A-Za-z0-9_.-]{1,64})/(\+?[0-9]{3,20})$")


def parse_satphone_target(text: str) -> tuple[str, str]:
    """``satphone:<gateway>/<number>`` -> (gateway, number); ConferenceError 422 otherwise."""
    match = _TARGET.fullmatch(text.strip())
    if match is None:
        raise ConferenceError(422, "a satphone target is satphone:<gateway>/<number>, "
                              f"not {text[:80]!r}")
    return match.group(1), match.group(2)


@dataclass
class _Leg:
    leg_id: str
    conf_id: str
    gateway: str
    number: str
    kind: str  # "audio" (sound card, AT dial) or "sip" (the dock's SIP side)
    actor: str
    incoming: bool = False
    joined: bool = False
    muted: bool = False
    deafened: bool = False


class SatphoneLegs:
    """Satphone calls dialled into, or answered into, conferences (see the module docstring)."""

    name = "satphone_legs"

    def __init__(self, radio: RadioService, engine: MediaEngine, conferences: Conferences
                 ) -> None:
        """Wire to the radio service (AT side), the media engine and the conferences."""
        self.radio, self.engine, self.conf = radio, engine, conferences
        self.legs: dict[str, _Leg] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Nothing to open: legs live as long as their calls."""

    async def stop(self) -> None:
        """Hang up every satphone leg (nobody will hear it any more)."""
        for leg in list(self.legs.values()):
            await self._hang_up(leg, "system", "shutdown")

    def health(self) -> dict[str, Any]:
        """Every satphone leg: conference, gateway, number, way."""
        return {"legs": {leg.leg_id: {"conference": leg.conf_id, "gateway": leg.gateway,
                                      "number": leg.number, "kind": leg.kind,
                                      "joined": leg.joined} for leg in self.legs.values()}}

    # --- dial and answer --------------------------------------------------------------------

    async def dial(self, conf_id: str, target: str, actor: str, reason: str = "") -> str:
        """Dial ``satphone:<gateway>/<number>`` into a conference or call; the leg id."""
        gateway, number = parse_satphone_target(target)
        gw = self._settings(gateway)
        self._open(conf_id)
        if gw.sip_uri is not None:
            uri = gw.sip_uri.replace("{number}", number)
            try:
                dial_target = parse_target(uri, self.conf.b2bua.settings.domain)
            except ValueError as exc:
                raise ConferenceError(422, f"satphone {gateway}: sip_uri gives {exc}") from None
            leg_id = await self.conf.add(conf_id, dial_target, actor,
                                         reason or f"satphone {gateway} {number} via its dock")
            self.legs[leg_id] = _Leg(leg_id, conf_id, gateway, number, "sip", actor)
            return leg_id
        leg = await self._join(conf_id, gateway, number, actor, incoming=False)
        self._emit(leg, "ringing", actor, reason or f"ATD on satphone {gateway}")
        task = asyncio.get_running_loop().create_task(self._dial(leg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return leg.leg_id

    async def _dial(self, leg: _Leg) -> None:
        try:
            await self.radio.satphone_action(leg.gateway, "dial", leg.actor, number=leg.number)
        except (RadioServiceError, SatphoneError, AtError, TimeoutError) as exc:
            if self.legs.get(leg.leg_id) is leg:
                await self._drop(leg)
                self._emit(leg, "failed", "system", f"satphone dial failed: {exc}"[:200])
            return
        if self.legs.get(leg.leg_id) is not leg:
            return  # removed while dialling: its hang-up has been sent
        leg.joined = True
        self._emit(leg, "joined", leg.actor, f"satphone {leg.gateway} answered")

    async def answer(self, gateway: str, conf_id: str, actor: str) -> str:
        """Answer the satphone's ringing call into a conference or call (``ATA``); the leg id."""
        gw = self._settings(gateway)
        if gw.audio is None:
            raise ConferenceError(409, f"satphone {gateway} has no sound card: a docking "
                                  "gateway's incoming calls arrive on its SIP side")
        phone = self.radio.satphone(gateway)
        call = phone.call
        if call is None or call.state != "ringing":
            raise ConferenceError(409, f"satphone {gateway} has no ringing call")
        self._open(conf_id)
        leg = await self._join(conf_id, gateway, call.number, actor, incoming=True)
        try:
            await self.radio.satphone_action(gateway, "answer", actor)
        except (RadioServiceError, SatphoneError, AtError, TimeoutError) as exc:
            await self._drop(leg)
            self._emit(leg, "failed", "system", f"answer failed: {exc}"[:200])
            raise ConferenceError(409, f"satphone {gateway}: answer failed: {exc}") from None
        leg.joined = True
        self._emit(leg, "joined", actor, f"incoming satphone call from {call.number or '?'}")
        return leg.leg_id

    def _settings(self, gateway: str) -> Any:
        gw = self.radio.configured.get(gateway)
        if gw is None or gw.kind != "satphone":
            raise ConferenceError(404, f"no satphone gateway {gateway!r}")
        if gw.sip_uri is None and gw.audio is None:
            raise ConferenceError(409, f"satphone {gateway} has no audio path: give its "
                                  "gateway an [radio.gateways.audio] table or a sip_uri")
        return gw

    def _open(self, conf_id: str) -> dict[str, Any]:
        snapshot = self.conf.snapshot(conf_id)  # 404 for a conference that is not live
        if snapshot["locked"]:
            raise ConferenceError(409, f"{conf_id} is locked: no new legs")
        return snapshot

    async def _join(self, conf_id: str, gateway: str, number: str, actor: str, *,
                    incoming: bool) -> _Leg:
        audio = self.radio.terminal_audio.satphones[gateway]
        leg_id = f"{PREFIX}{gateway}"
        phone = self.radio.satphone(gateway)
        if leg_id in self.legs or audio.attached:
            raise ConferenceError(409, f"satphone {gateway} is already in a conference")
        if not phone.up:
            raise ConferenceError(409, f"satphone {gateway} is not ready (link down)")
        if not incoming and phone.call is not None:
            raise ConferenceError(409, f"satphone {gateway} already has a call "
                                  f"({phone.call.state})")
        try:
            self.engine.add_local(leg_id, audio)
            await self.engine.join(conf_id, leg_id)
        except (ValueError, RuntimeError) as exc:
            await self.engine.release(leg_id)
            raise ConferenceError(409, f"satphone {gateway}: media: {exc}") from None
        leg = self.legs[leg_id] = _Leg(leg_id, conf_id, gateway, number, "audio", actor,
                                       incoming)
        return leg

    # --- ending -----------------------------------------------------------------------------

    def owns(self, leg_id: str) -> bool:
        """True for a sound-card satphone leg (SIP dock legs are ordinary conference legs)."""
        leg = self.legs.get(leg_id)
        return leg is not None and leg.kind == "audio"

    async def remove(self, conf_id: str, leg_id: str, actor: str, reason: str) -> None:
        """Hang the satphone up (``ATH``) and take its leg out."""
        leg = self.legs.get(leg_id)
        if leg is None or leg.conf_id != conf_id or leg.kind != "audio":
            raise ConferenceError(404, f"no live satphone leg {leg_id} in {conf_id}")
        await self._hang_up(leg, actor, reason or "removed")

    async def _hang_up(self, leg: _Leg, actor: str, why: str) -> None:
        if leg.kind == "sip":
            self.legs.pop(leg.leg_id, None)
            with contextlib.suppress(ConferenceError):  # already gone
                self.conf.remove(leg.conf_id, leg.leg_id, actor, why)
            return
        await self._drop(leg)  # audio stops before the phone is told
        self._emit(leg, "removed", actor, why)
        try:
            await self.radio.satphone_action(leg.gateway, "hang_up", actor)
        except (RadioServiceError, SatphoneError, AtError, TimeoutError) as exc:
            log.warning("satphone hang-up failed", extra={"gateway": leg.gateway,
                                                          "error": str(exc)})

    async def _drop(self, leg: _Leg) -> None:
        if self.legs.get(leg.leg_id) is leg:
            del self.legs[leg.leg_id]
        if leg.kind == "audio":
            await self.engine.release(leg.leg_id)

    def flag(self, conf_id: str, leg_id: str, what: str, on: bool, actor: str) -> None:
        """Mute (nobody hears the satphone) or deafen (it hears nothing) its leg."""
        leg = self.legs.get(leg_id)
        if leg is None or leg.conf_id != conf_id or leg.kind != "audio":
            raise ConferenceError(404, f"no live satphone leg {leg_id} in {conf_id}")
        if what == "mute":
            self.engine.mute(leg_id, on)
            leg.muted = on
        else:
            self.engine.deafen(leg_id, on)
            leg.deafened = on
        step = {"mute": "muted", "deafen": "deafened"}[what]
        self._emit(leg, step if on else f"un{step}", actor, "")

    def legs_of(self, conf_id: str) -> list[dict[str, Any]]:
        """The sound-card satphone legs of a conference, shaped like its snapshot's legs."""
        return [{"leg": leg.leg_id, "role": "satphone",
                 "state": "confirmed" if leg.joined else "early",
                 "target": f"{PREFIX}{leg.gateway}/{leg.number}", "mode": "talk",
                 "muted": leg.muted, "deafened": leg.deafened, "added_by": leg.actor,
                 "trunk": ""}
                for leg in self.legs.values() if leg.conf_id == conf_id and leg.kind == "audio"]

    # --- what happens elsewhere -------------------------------------------------------------

    def on_event(self, envelope: Envelope) -> None:
        """Hub listener (never blocks): the phone hung up, the gateway was lost, the
        conference or call ended -- each ends the satphone legs concerned."""
        event = envelope.event
        ending: list[tuple[_Leg, str, str]] = []
        hang_up = False  # False: the phone's call is already over, only the leg is left
        if isinstance(event, SatphoneStatus) and event.what == "call" \
                and event.detail.get("state") == "ended":
            why = str(event.detail.get("why") or "call ended")
            # The phone's call is over: only the leg is left to end ("remote" unless one of
            # us hung the phone up outside the conference, e.g. the satphone panel).
            actor = "system" if why.startswith("hung up by") else "remote"
            ending = [(leg, actor, why) for leg in self.legs.values()
                      if leg.gateway == event.gateway and leg.kind == "audio"]
        elif isinstance(event, RadioGatewayChanged) and event.state == "lost":
            hang_up = True
            ending = [(leg, "system", f"satphone gateway {event.gateway} lost: {event.detail}")
                      for leg in self.legs.values() if leg.gateway == event.gateway]
        elif isinstance(event, ConferenceChanged) and event.step == "ended":
            hang_up = True
            ending = [(leg, "system", "conference ended") for leg in self.legs.values()
                      if leg.conf_id == event.conference_id]
        elif isinstance(event, ConferenceChanged) and event.step in ("left", "removed",
                                                                       "failed"):
            leg = self.legs.get(event.leg_id)
            if leg is not None and leg.kind == "sip":
                del self.legs[event.leg_id]
        elif isinstance(event, CallReleased):
            hang_up = True
            ending = [(leg, "system", "call released") for leg in self.legs.values()
                      if leg.conf_id == event.call_id]
        for leg, actor, why in ending:
            self._spawn(self._ended(leg, actor, why, hang_up))

    async def _ended(self, leg: _Leg, actor: str, why: str, hang_up: bool) -> None:
        if self.legs.get(leg.leg_id) is not leg:
            return
        if not hang_up:
            await self._drop(leg)
            self._emit(leg, "left", actor, why[:200])
            return
        await self._hang_up(leg, actor, why[:200])

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, leg: _Leg, step: str, actor: str, detail: str) -> None:
        try:
            snapshot = self.conf.snapshot(leg.conf_id)
            name, incident = str(snapshot["name"]), str(snapshot["incident_id"])
        except ConferenceError:
            name = incident = ""
        self.conf.b2bua.emit(ConferenceChanged(
            leg.conf_id, step, leg.leg_id, f"{PREFIX}{leg.gateway}/{leg.number}", actor,
            detail, self.conf.b2bua.wall(), name, incident))


def wire_satphone_legs(radio: RadioService, engine: MediaEngine, conferences: Any,
                       listen: Callable[[Callable[[Envelope], None]], object]
                       ) -> SatphoneLegs:
    """Build the service, hook it to the hub and to the conference service's dial-out."""
    legs = SatphoneLegs(radio, engine, conferences.conf)
    listen(legs.on_event)
    conferences.satphones = legs
    return legs
