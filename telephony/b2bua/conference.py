"""Conferences: rooms of dialled-out legs, and the same operations on every live call.

Theory of operation
-------------------
A conference is a :class:`~telephony.b2bua.legs.Call` with ``route =
"conference"`` and no caller: it lives in ``B2bua.calls`` (so shutdown, dead
media and the tag index treat it like any call) and its media room is its id.
A live two-party call *is* a conference too: its room is the call id, its
legs are the caller, the call taker and any supervisor, and a third party
can be added to it exactly as to a conference.

Adding a leg dials out (we are UAC, early offer from the media engine)::

    add(conf, target) ─▶ user:   registrar.lookup ─▶ binding ─▶ INVITE its Contact
                         number: trunk_source() (failover order), a trunk under its
                                 max_calls ─▶ INVITE sip:number@trunk; a 408/5xx tries
                                 the next trunk with a fresh leg
                         uri:    INVITE the URI's host directly
                 anchor.join(room, leg); anchor.offer ─▶ INVITE (O)
    200 (A) ───▶ answered(): anchor.accept(A); the room hears the join tone
    BYE  ──────▶ hung_up(); 4xx-6xx/timeout ─▶ failed(); any end ─▶ leg_ended()
                 (trunk count released once; the room hears the leave tone)

``remove`` BYEs a leg with a Reason header (a call's own caller or call
taker is the call: removing one force-releases the call); ``end`` BYEs every
leg with a Reason.  A locked conference refuses new legs (409).  Mute and
deafen act on the mixer (a muted leg is heard by nobody, a deafened one hears
nothing).  Every change is a :class:`ConferenceChanged` event with the actor
and the reason, which the daemon publishes and writes to the audit trail.
The B2BUA calls the hooks (:meth:`answered`, :meth:`failed`, :meth:`hung_up`,
:meth:`leg_ended`) for legs whose role is ``PARTY``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from telephony.b2bua.config import SipTrunk
from telephony.b2bua.legs import Call, CallState, Leg, LegRole, LegState
from telephony.sip.errors import SipError
from telephony.sip.headers import quote_string
from telephony.sip.message import Destination
from telephony.sip.uri import SipUri, parse_uri

if TYPE_CHECKING:
    from telephony.b2bua.core import B2bua

__all__ = ["ConferenceChanged", "ConferenceError", "Conferences", "DialTarget", "parse_target"]

log = logging.getLogger(__name__)

MAX_PARTIES = 32
"""Dialled-out legs one conference (or call) may have at once."""
MAX_CONFERENCES = 500
_USER = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_NUMBER = re.compile(r"^\+?[0-9]{3,32}$")
_TEXT = re.compile(r"[^A-Za-z0-9 _.:@+\-/]")
_RETRY = frozenset({408, 480, 500, 502, 503, 504})


class ConferenceError(Exception):
    """A conference request that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ConferenceChanged:
    """One change of a conference (or of a call's room).

    ``step``: created, ringing, joined, failed, left, removed, muted, unmuted,
    deafened, undeafened, locked, unlocked, ended.  ``actor`` is who did it
    (``system`` or ``remote`` for what a phone did), ``detail`` why.
    """

    topic: ClassVar[str] = "conference.changed"
    conference_id: str
    step: str
    leg_id: str
    target: str
    actor: str
    detail: str
    at: float
    name: str = ""
    incident_id: str = ""


@dataclass(frozen=True, slots=True)
class DialTarget:
    """Whom to dial: a registered ``user``, a ``number`` through a trunk, or a SIP ``uri``."""

    kind: Literal["user", "number", "uri"]
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_target(text: str, domain: str) -> DialTarget:
    """``alice``, ``+8613800000000``, ``sip:unit7@dispatch.test`` or ``sip:x@host:5070``.

    A SIP URI in our own domain is the registered user; control characters and
    anything else are refused (ValueError).
    """
    text = text.strip()
    if not text or len(text) > 255 or not text.isprintable():
        raise ValueError("a dial target must be 1..255 printable characters")
    if _NUMBER.fullmatch(text):
        return DialTarget("number", text)
    if text.startswith(("sip:", "sips:")):
        try:
            uri = parse_uri(text)
        except SipError as exc:
            raise ValueError(f"not a SIP URI: {exc}") from None
        if not isinstance(uri, SipUri) or not uri.user or not _USER.fullmatch(uri.user):
            raise ValueError(f"SIP URI {text!r} needs a plain user part")
        if uri.host.lower() == domain.lower() and uri.port is None:
            return DialTarget("user", uri.user)
        return DialTarget("uri", text)
    if _USER.fullmatch(text):
        return DialTarget("user", text)
    raise ValueError(f"not a user, number or SIP URI: {text!r}")


@runtime_checkable
class _Mixing(Protocol):
    """What conferences need of the media engine beyond the B2BUA's MediaControl."""

    def mute(self, leg_id: str, muted: bool = True) -> None: ...  # noqa: D102
    def deafen(self, leg_id: str, deaf: bool = True) -> None: ...  # noqa: D102
    def play_to_room(self, room: str, prompt: str, loop: bool = False) -> None: ...  # noqa: D102


@dataclass
class _Info:
    name: str
    created_by: str
    created_at: float
    is_call: bool
    locked: bool = False
    pin_hash: str = ""
    incident_id: str = ""


@dataclass
class _Party:
    target: DialTarget
    added_by: str
    reason: str
    trunk: str = ""
    remaining: list[SipTrunk] = field(default_factory=list)
    joined_at: float | None = None
    counted: bool = False
    ended: bool = False


def _clean(text: str, limit: int = 120) -> str:
    return _TEXT.sub(" ", text)[:limit].strip()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _name(text: str, limit: int = 128) -> str:
    """A conference's name as operators typed it (Chinese included), minus control
    characters; in a From display name it is quoted (RFC 3261 allows UTF-8 there)."""
    return " ".join(_CONTROL.sub(" ", text).split())[:limit]


class Conferences:
    """Conferences of one B2BUA, and conference operations on its calls (module docs)."""

    def __init__(self, b2bua: B2bua, *, join_tone: str = "join",
                 leave_tone: str = "leave") -> None:
        self.b2bua = b2bua
        self.join_tone = join_tone
        self.leave_tone = leave_tone
        self.trunk_source: Callable[[], list[SipTrunk]] = lambda: list(b2bua.trunks)
        """Trunks for dialling numbers, best first (the trunk manager's ``best``)."""
        self._info: dict[str, _Info] = {}
        self._parties: dict[str, _Party] = {}
        self._flags: dict[str, tuple[bool, bool]] = {}  # leg id -> (muted, deafened)

    # -- helpers ----------------------------------------------------------------

    def _mixing(self) -> _Mixing:
        anchor = self.b2bua.anchor
        if not isinstance(anchor, _Mixing):
            raise ConferenceError(409, "conferences need media anchoring ([media] enabled)")
        return anchor

    def _emit(self, conf_id: str, step: str, *, leg_id: str = "", target: str = "",
              actor: str = "system", detail: str = "") -> None:
        info = self._info.get(conf_id)
        self.b2bua.emit(ConferenceChanged(
            conf_id, step, leg_id, target, actor, detail, self.b2bua.wall(),
            info.name if info else "", info.incident_id if info else ""))

    def _live(self, conf_id: str) -> tuple[Call, _Info]:
        call = self.b2bua.calls.get(conf_id)
        if call is None or call.state is CallState.ENDED:
            self._info.pop(conf_id, None)
            raise ConferenceError(404, f"no live conference or call {conf_id}")
        info = self._info.get(conf_id)
        if info is None:
            if call.route == "conference":
                raise ConferenceError(404, f"no live conference {conf_id}")
            info = self._info[conf_id] = _Info(f"call {call.caller or conf_id[:8]}", "acd",
                                               call.offered_at, is_call=True)
        return call, info

    def _leg(self, conf_id: str, leg_id: str) -> tuple[Call, Leg]:
        call, _ = self._live(conf_id)
        leg = next((x for x in call.legs() if x.leg_id == leg_id and x.live), None)
        if leg is None:
            raise ConferenceError(404, f"no live leg {leg_id} in {conf_id}")
        return call, leg

    # -- create, list, show -----------------------------------------------------

    def create(self, name: str, actor: str, *, locked: bool = False, pin: str | None = None,
               incident_id: str = "") -> str:
        """Open an empty conference; its id (the media room's name too)."""
        self._mixing()
        live = sum(1 for i in self._info.values() if not i.is_call)
        if live >= MAX_CONFERENCES:
            raise ConferenceError(503, f"{MAX_CONFERENCES} conferences already open")
        b = self.b2bua
        conf_id = str(uuid.uuid4())
        call = Call(conf_id, "", "", "", "", "", b.wall(), route="conference",
                    state=CallState.CONNECTED)
        b.calls[conf_id] = call
        pin_hash = ""
        if pin:
            salt = secrets.token_hex(8)
            pin_hash = f"{salt}${hashlib.sha256((salt + pin).encode()).hexdigest()}"
        self._info[conf_id] = _Info(_name(name) or "conference", actor, b.wall(),
                                    is_call=False, locked=locked, pin_hash=pin_hash,
                                    incident_id=incident_id)
        self._emit(conf_id, "created", actor=actor, detail=self._info[conf_id].name)
        if locked:
            self._emit(conf_id, "locked", actor=actor, detail="locked at creation")
        return conf_id

    def check_pin(self, conf_id: str, pin: str) -> bool:
        """True if the conference has no PIN or ``pin`` is it."""
        _, info = self._live(conf_id)
        if not info.pin_hash:
            return True
        salt, digest = info.pin_hash.split("$", 1)
        return secrets.compare_digest(digest, hashlib.sha256((salt + pin).encode()).hexdigest())

    def snapshot(self, conf_id: str) -> dict[str, Any]:
        """A conference (or call) with its live legs, as the API shows it."""
        call, info = self._live(conf_id)
        legs = []
        for leg in call.legs():
            if not leg.live:
                continue
            party = self._parties.get(leg.leg_id)
            muted, deaf = self._flags.get(leg.leg_id, (False, False))
            if leg.role is LegRole.AGENT and leg is not call.connected:
                continue  # a call taker's phone still ringing is not in the room
            added_by = {LegRole.CALLER: "caller", LegRole.AGENT: "acd",
                        LegRole.OUTBOUND: "callback"}.get(leg.role, leg.actor)
            legs.append({
                "leg": leg.leg_id, "role": leg.role.value, "state": leg.state.value,
                "target": str(party.target) if party else (leg.agent_id or call.caller),
                "mode": leg.mode or "talk", "muted": muted, "deafened": deaf,
                "added_by": party.added_by if party else added_by,
                "trunk": party.trunk if party else ""})
        return {"id": conf_id, "name": info.name, "kind": "call" if info.is_call else "conference",
                "created_by": info.created_by, "created_at": info.created_at,
                "locked": info.locked, "pin_set": bool(info.pin_hash),
                "incident_id": info.incident_id, "legs": legs}

    def listing(self) -> list[dict[str, Any]]:
        """Every open conference and every connected call (a conference of two)."""
        for gone in [c for c in self._info if c not in self.b2bua.calls]:
            del self._info[gone]  # a call released since it was last looked at
        out = []
        for call in list(self.b2bua.calls.values()):
            if call.state is CallState.ENDED:
                continue
            if call.route == "conference" or call.state is CallState.CONNECTED:
                try:
                    out.append(self.snapshot(call.call_id))
                except ConferenceError:
                    continue
        return out

    # -- adding legs -------------------------------------------------------------

    async def add(self, conf_id: str, target: DialTarget, actor: str, reason: str = "") -> str:
        """Dial ``target`` into the conference or call; the new leg's id (ringing)."""
        self._mixing()
        call, info = self._live(conf_id)
        if info.locked:
            raise ConferenceError(409, f"{conf_id} is locked: no new legs")
        if sum(1 for x in call.parties.values() if x.live) >= MAX_PARTIES:
            raise ConferenceError(409, f"{conf_id} already has {MAX_PARTIES} dialled legs")
        party = _Party(target, actor, _clean(reason))
        if target.kind == "number":
            party.remaining = [t for t in self.trunk_source()
                               if self.b2bua.trunk_calls.get(t.name, 0) < t.max_calls]
            if not party.remaining:
                raise ConferenceError(503, "no trunk with a free channel to dial out through")
        return await self._dial(call, party)

    async def _dial(self, call: Call, party: _Party) -> str:
        b = self.b2bua
        target = party.target
        domain = b.settings.domain
        if target.kind == "user":
            bindings = await b.registrar.lookup(b.registrar.aor_for(target.value), b.wall())
            if not bindings:
                raise ConferenceError(404, f"{target.value!r} has no registered phone")
            from telephony.b2bua.core import binding_destination

            binding = max(bindings, key=lambda x: (x.q or 0.0, x.registered_at))
            request_uri, dest = binding.contact, binding_destination(binding)
            to = f"<sip:{target.value}@{domain}>"
        elif target.kind == "number":
            trunk = party.remaining.pop(0)
            party.trunk = trunk.name
            request_uri = f"sip:{target.value}@{trunk.host}:{trunk.port}"
            dest, to = Destination(trunk.transport, trunk.host, trunk.port), f"<{request_uri}>"
        else:
            uri = parse_uri(target.value)
            assert isinstance(uri, SipUri)
            transport = (uri.param("transport") or "udp").upper()
            dest = Destination(transport, uri.host, uri.port or 5060)
            request_uri, to = target.value, f"<{target.value}>"
        call, _ = self._live(call.call_id)
        leg = Leg(f"{call.call_id}:party:{len(call.parties)}", call, LegRole.PARTY, dest,
                  agent_id=str(target), state=LegState.LOOKUP, actor=party.added_by,
                  mode="talk")
        call.parties[leg.leg_id] = leg
        self._parties[leg.leg_id] = party
        b.register_leg(leg)
        if party.trunk:
            b.trunk_calls[party.trunk] = b.trunk_calls.get(party.trunk, 0) + 1
            party.counted = True
        try:
            await b.anchor.join(call.call_id, leg.leg_id)
            sdp = await b.anchor.offer(leg.leg_id)
        except (ValueError, RuntimeError) as exc:
            leg.state = LegState.ENDED
            self.leg_ended(leg)
            await b.anchor.release(leg.leg_id)
            raise ConferenceError(503, f"media: {exc}") from None
        if not leg.live or call.state is CallState.ENDED:
            raise ConferenceError(404, f"{call.call_id} ended while dialling")
        info = self._info[call.call_id]
        request = b.new_invite(
            request_uri, f"{quote_string(info.name)} <sip:conference@{domain}>", to,
            leg.local_tag, dest,
            sdp.encode(), [("X-Dispatchd-Conference", call.call_id)])
        b.track_invite(leg, request)
        self._emit(call.call_id, "ringing", leg_id=leg.leg_id, target=str(target),
                   actor=party.added_by, detail=party.reason or (party.trunk and
                                                                 f"trunk {party.trunk}"))
        return leg.leg_id

    # -- hooks from the B2BUA -----------------------------------------------------

    def answered(self, leg: Leg) -> None:
        """A dialled leg answered (its 200 is ACKed): take its SDP, then it is in."""
        self.b2bua.spawn(self._accept(leg), leg.call)

    async def _accept(self, leg: Leg) -> None:
        b = self.b2bua
        try:
            await b.anchor.accept(leg.leg_id, leg.answer_sdp)
            control = b.control()
            if control is not None:
                control.expect_media(leg.leg_id)
                control.record(leg.call.call_id)  # from the first answer to the end
        except ValueError as exc:
            log.info("conference leg %s: unusable answer: %s", leg.leg_id, exc)
            self._emit(leg.call.call_id, "failed", leg_id=leg.leg_id, target=leg.agent_id,
                       detail=f"media: {exc}")
            b.stop_leg(leg)
            return
        party = self._parties.get(leg.leg_id)
        if party is not None:
            party.joined_at = b.wall()
        self._emit(leg.call.call_id, "joined", leg_id=leg.leg_id, target=leg.agent_id,
                   actor=party.added_by if party else "system")
        self._tone(leg.call.call_id, self.join_tone)

    def failed(self, leg: Leg, status: int, cause: str) -> None:
        """A dialled leg was refused or timed out: the next trunk for a number, else report."""
        party = self._parties.pop(leg.leg_id, None)
        self._emit(leg.call.call_id, "failed", leg_id=leg.leg_id, target=leg.agent_id,
                   detail=f"{cause}" + (f" via trunk {party.trunk}" if party and party.trunk
                                        else ""))
        if party is None or not party.remaining or status not in _RETRY:
            return
        call = leg.call
        if call.state is CallState.ENDED or self._info.get(call.call_id) is None:
            return
        retry = _Party(party.target, party.added_by, party.reason,
                       remaining=[t for t in party.remaining
                                  if self.b2bua.trunk_calls.get(t.name, 0) < t.max_calls])
        if retry.remaining:
            self.b2bua.spawn(self._failover(call, retry), call)

    async def _failover(self, call: Call, party: _Party) -> None:
        try:
            await self._dial(call, party)
        except ConferenceError as exc:
            log.info("conference %s: failover to the next trunk failed: %s", call.call_id, exc)

    def hung_up(self, leg: Leg) -> None:
        """The far end of a dialled leg sent BYE."""
        self._emit(leg.call.call_id, "left", leg_id=leg.leg_id, target=leg.agent_id,
                   actor="remote", detail="hung up")

    def leg_ended(self, leg: Leg) -> None:
        """Any end of a dialled leg: release its trunk channel once, play the leave tone."""
        party = self._parties.get(leg.leg_id)
        self._flags.pop(leg.leg_id, None)
        if party is None or party.ended:
            return
        party.ended = True
        if party.joined_at is not None or len(self._parties) > 4 * MAX_CONFERENCES:
            del self._parties[leg.leg_id]  # else kept until failed() decides on failover
        if party.counted and party.trunk:
            b = self.b2bua
            b.trunk_calls[party.trunk] = max(0, b.trunk_calls.get(party.trunk, 1) - 1)
        if party.joined_at is not None and leg.call.state is not CallState.ENDED:
            self._tone(leg.call.call_id, self.leave_tone)

    def _tone(self, room: str, prompt: str) -> None:
        if not prompt:
            return
        try:
            self._mixing().play_to_room(room, prompt)
        except (ValueError, ConferenceError) as exc:  # a missing tone never stops a conference
            log.info("conference tone %r not played in %s: %s", prompt, room, exc)

    # -- operations ---------------------------------------------------------------

    def remove(self, conf_id: str, leg_id: str, actor: str, reason: str) -> None:
        """BYE (or CANCEL) one leg with a Reason header; a call's own leg ends the call."""
        call, leg = self._leg(conf_id, leg_id)
        why = _clean(reason) or "removed"
        if leg.role in (LegRole.CALLER, LegRole.AGENT, LegRole.OUTBOUND):
            self._emit(conf_id, "removed", leg_id=leg_id, target=leg.agent_id or call.caller,
                       actor=actor, detail=f"{why} (ends the call)")
            self.b2bua.release_call(conf_id, why, actor)
            return
        self._emit(conf_id, "removed", leg_id=leg_id, target=leg.agent_id, actor=actor,
                   detail=why)
        if leg.role is LegRole.MONITOR:
            self.b2bua.forcein.ended(leg, actor, why)
        text = _clean(f"removed by {actor}: {why}")
        if leg.dialog is not None and leg.state is LegState.CONFIRMED:
            self.b2bua._bye(leg, f'Q.850;cause=16;text="{text}"')
        else:
            self.b2bua.stop_leg(leg)

    def mute(self, conf_id: str, leg_id: str, on: bool, actor: str) -> None:
        """Nobody hears the leg while muted."""
        self._leg(conf_id, leg_id)
        self._mixing().mute(leg_id, on)
        muted, deaf = self._flags.get(leg_id, (False, False))
        self._flags[leg_id] = (on, deaf)
        self._emit(conf_id, "muted" if on else "unmuted", leg_id=leg_id, actor=actor)

    def deafen(self, conf_id: str, leg_id: str, on: bool, actor: str) -> None:
        """The leg hears nothing while deafened."""
        self._leg(conf_id, leg_id)
        self._mixing().deafen(leg_id, on)
        muted, _ = self._flags.get(leg_id, (False, False))
        self._flags[leg_id] = (muted, on)
        self._emit(conf_id, "deafened" if on else "undeafened", leg_id=leg_id, actor=actor)

    def lock(self, conf_id: str, on: bool, actor: str) -> None:
        """A locked conference (or call) refuses new legs."""
        _, info = self._live(conf_id)
        info.locked = on
        self._emit(conf_id, "locked" if on else "unlocked", actor=actor)

    def link_incident(self, conf_id: str, incident_id: str) -> None:
        """Remember the incident a conference serves (shown and put on its events)."""
        _, info = self._live(conf_id)
        info.incident_id = incident_id

    def end(self, conf_id: str, actor: str, reason: str) -> None:
        """BYE every leg with a Reason header (a call: force-release it)."""
        call, info = self._live(conf_id)
        why = _clean(reason) or "ended"
        self._emit(conf_id, "ended", actor=actor, detail=why)
        if info.is_call:
            self.b2bua.release_call(conf_id, why, actor)
            self._info.pop(conf_id, None)
            return
        text = _clean(f"conference ended by {actor}: {why}")
        call.state = CallState.ENDED
        call.released_at = self.b2bua.wall()
        for leg in call.legs():
            if not leg.live:
                continue
            if leg.dialog is not None and leg.state is LegState.CONFIRMED:
                self.b2bua._bye(leg, f'Q.850;cause=16;text="{text}"')
            else:
                self.b2bua.stop_leg(leg)
        self.b2bua.calls.pop(conf_id, None)
        self._info.pop(conf_id, None)
        # Late responses and retransmissions still find the legs for a while (as for calls).
        asyncio.get_running_loop().call_later(32.0, self.b2bua._forget, call)

    def open_conferences(self) -> list[str]:
        """Ids of the conferences (not calls) still open."""
        return [c for c, info in self._info.items()
                if not info.is_call and c in self.b2bua.calls]

    def call_ended(self, call_id: str) -> None:
        """Forget the conference view of a call that was released."""
        info = self._info.get(call_id)
        if info is not None and info.is_call:
            del self._info[call_id]
