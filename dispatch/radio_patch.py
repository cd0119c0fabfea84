"""Patches: radio talkgroups as legs of calls, conferences and of each other.

Theory of operation
-------------------
A talkgroup whose gateway carries audio (``kind = "soundcard"``, or a
``tetra`` terminal with a sound card: :mod:`radio.terminal_audio`) becomes a
*local leg* of the media engine (:mod:`telephony.media.local`), id
``radio:<talkgroup>``, joined to a room:

* ``patch(tg, call=ID)``: the call's room (the B2BUA names it after the call);
* ``patch(tg, room=NAME)``: a conference (created if nobody is in it yet);
* ``patch(tg, group=OTHER)``: the room OTHER is patched into, or a new room
  ``patch:<OTHER>`` holding both groups.

The mixer does the audio: every leg of the room hears the talkgroup's received
audio, and the talkgroup's leg is handed the room's mix minus itself every
20 ms, which its gateway puts on air only while keyed.  So the dispatcher's
voice reaches the radio exactly while the floor is theirs.

Keying: the API/SSH ``ptt`` commands as before, or from a softphone in the
room: DTMF ``*7`` requests the floor of every talkgroup patched into the
caller's room, ``*8`` releases it; SIP INFO with ``application/dtmf-relay``
digits or a ``PTT: on``/``PTT: off`` body does the same
(:mod:`telephony.media.pttkeys`).  The keyer is ``leg:<leg id>`` at dispatcher
priority; radio legs of the room never key anything by DTMF.

Floors are coupled between talkgroups in one room: when one group starts
receiving (its squelch opens: ``TalkerChanged`` with a talker), every other
talkgroup of the room is requested for ``patch:<group>`` and released when the
over ends.  A keyed radio does not receive (half-duplex, enforced by the
gateway), so a retransmission never comes back as a new over: no echo loop.

A patch into a call ends when the call is released (:class:`CallReleased`).
Every patch and unpatch is published (:class:`RadioPatchChanged`) and audited.
A confirmed plan action of kind ``talkgroups`` patches its groups into the
incident's conference ``incident-<id>`` (:meth:`PatchService.on_event`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dispatch.events import Envelope
from dispatch.plans import ProposedActionDecided
from dispatch.radio_service import RadioService, RadioServiceError
from radio.floor import Priority
from telephony.b2bua.events import CallReleased
from telephony.media.anchor import DtmfReceived, MediaEvent
from telephony.media.engine import MediaEngine
from telephony.media.pttkeys import PttAction, PttKeys, parse_info

__all__ = ["PatchService", "RadioPatchChanged", "leg_id_of"]

log = logging.getLogger(__name__)

MAX_ROOM = 128


def leg_id_of(talkgroup: str) -> str:
    """The media leg id of a talkgroup."""
    return f"radio:{talkgroup}"


@dataclass(frozen=True)
class RadioPatchChanged:
    """A talkgroup was patched into a room (a call, a conference, another group) or out."""

    topic: ClassVar[str] = "radio.patch"

    talkgroup: str
    room: str
    target: str  # "call:<id>", "room:<name>" or "group:<talkgroup>"
    state: str  # "patched" or "unpatched"
    who: str


@dataclass
class _Patch:
    room: str
    target: str
    who: str


@dataclass
class _Keyer:
    keys: PttKeys = field(default_factory=PttKeys)
    holding: set[str] = field(default_factory=set)


class PatchService:
    """Talkgroups into calls, conferences and each other (see the module docstring)."""

    name = "radio_patch"

    def __init__(self, radio: RadioService, engine: MediaEngine,
                 publish: Callable[[object], object], clock: Callable[[], float]) -> None:
        """Wire to the radio service and the media engine; nothing runs until used."""
        self.radio, self.engine, self.publish, self.clock = radio, engine, publish, clock
        self.patches: dict[str, _Patch] = {}
        self._keyers: dict[str, _Keyer] = {}
        self._coupled: dict[str, set[str]] = {}  # source group -> groups keyed for it
        self._tasks: set[asyncio.Task[Any]] = set()
        radio.add_talker_hook(self._on_talker)

    async def start(self) -> None:
        """Nothing to open: patches live as long as their rooms."""

    async def stop(self) -> None:
        """Unpatch everything (releasing every floor a patch holds)."""
        for talkgroup in list(self.patches):
            await self.unpatch(talkgroup, "system")

    def health(self) -> dict[str, Any]:
        """Every patch: talkgroup -> room and target."""
        return {"patches": self.describe()}

    def describe(self) -> dict[str, dict[str, str]]:
        """Every patch as the API shows it."""
        return {tg: {"room": p.room, "target": p.target, "by": p.who}
                for tg, p in self.patches.items()}

    # --- patch / unpatch --------------------------------------------------------------------

    async def patch(self, talkgroup: str, who: str, *, call: str | None = None,
                    room: str | None = None, group: str | None = None) -> dict[str, str]:
        """Patch ``talkgroup`` into a call, a room or another group (exactly one)."""
        if sum(x is not None for x in (call, room, group)) != 1:
            raise RadioServiceError(422, "name exactly one of call, room or group")
        audio = self.radio.audio_leg(talkgroup)
        if talkgroup in self.patches:
            raise RadioServiceError(409, f"talkgroup {talkgroup!r} is already patched into "
                                    f"{self.patches[talkgroup].target}")
        rooms = self.engine.rooms()
        if call is not None:
            if call not in rooms:
                raise RadioServiceError(404, f"no call {call!r} with media on this node")
            target, where = f"call:{call}", call
        elif room is not None:
            if not room or len(room) > MAX_ROOM or not room.isprintable():
                raise RadioServiceError(422, f"room must be 1..{MAX_ROOM} printable characters")
            target, where = f"room:{room}", room
        else:
            assert group is not None
            if group == talkgroup:
                raise RadioServiceError(422, "a talkgroup cannot be patched to itself")
            terminal = self.radio.terminal_of(talkgroup)
            if terminal is not None and terminal == self.radio.terminal_of(group):
                raise RadioServiceError(409, f"{talkgroup!r} and {group!r} are both on TETRA "
                                        f"terminal {terminal!r}, which carries one group call "
                                        "at a time: it cannot retransmit one on the other")
            other_audio = self.radio.audio_leg(group)
            target = f"group:{group}"
            other = self.patches.get(group)
            where = other.room if other is not None else f"patch:{group}"
            if other is None:
                await self._join(group, other_audio, where, f"group:{talkgroup}", who)
                try:
                    await self._join(talkgroup, audio, where, target, who)
                except RadioServiceError:
                    await self._leave(group, self.patches[group], who)
                    raise
                return {"talkgroup": talkgroup, "room": where, "target": target}
        await self._join(talkgroup, audio, where, target, who)
        return {"talkgroup": talkgroup, "room": where, "target": target}

    async def _join(self, talkgroup: str, audio: Any, room: str, target: str, who: str) -> None:
        leg = leg_id_of(talkgroup)
        try:
            self.engine.add_local(leg, audio)
        except (ValueError, RuntimeError) as exc:  # MediaUnavailable, TerminalBusy
            if not isinstance(exc, ValueError):
                await self.engine.release(leg)  # a leg whose audio refused to attach
            raise RadioServiceError(409, f"cannot patch {talkgroup!r}: {exc}") from exc
        try:
            await self.engine.join(room, leg)
        except (ValueError, RuntimeError) as exc:
            await self.engine.release(leg)
            raise RadioServiceError(409, f"cannot patch {talkgroup!r}: {exc}") from exc
        self.patches[talkgroup] = _Patch(room, target, who)
        self.publish(RadioPatchChanged(talkgroup, room, target, "patched", who))
        self.radio.journal(who, "radio.patched", f"talkgroup:{talkgroup}",
                           {"room": room, "target": target})

    async def unpatch(self, talkgroup: str, who: str) -> dict[str, str]:
        """Take ``talkgroup`` out of its room; a group patch left with one group ends too."""
        patch = self.patches.get(talkgroup)
        if patch is None:
            self.radio.audio_leg(talkgroup)  # 404 for an unknown group
            raise RadioServiceError(404, f"talkgroup {talkgroup!r} is not patched")
        await self._leave(talkgroup, patch, who)
        left = [tg for tg, p in self.patches.items() if p.room == patch.room]
        if patch.room.startswith("patch:") and len(left) == 1:
            await self._leave(left[0], self.patches[left[0]], who)
        return {"talkgroup": talkgroup, "room": patch.room, "target": patch.target}

    async def _leave(self, talkgroup: str, patch: _Patch, who: str) -> None:
        del self.patches[talkgroup]
        await self.engine.release(leg_id_of(talkgroup))
        for keyer_id, keyer in self._keyers.items():
            if talkgroup in keyer.holding:
                keyer.holding.discard(talkgroup)
                self.radio.release_ptt(talkgroup, keyer_id)
        for source, keyed in list(self._coupled.items()):
            if talkgroup in keyed:
                keyed.discard(talkgroup)
                self.radio.release_ptt(talkgroup, f"patch:{source}")
        if talkgroup in self._coupled:
            self._on_talker(talkgroup, None)
        self.publish(RadioPatchChanged(talkgroup, patch.room, patch.target, "unpatched", who))
        self.radio.journal(who, "radio.unpatched", f"talkgroup:{talkgroup}",
                           {"room": patch.room, "target": patch.target})

    def _groups_in(self, room: str) -> list[str]:
        return [tg for tg, p in self.patches.items() if p.room == room]

    # --- floor coupling between patched groups ------------------------------------------------

    def _on_talker(self, talkgroup: str, talker: str | None) -> None:
        """A group started or stopped receiving: key or unkey the groups patched to it."""
        patch = self.patches.get(talkgroup)
        if talker is not None and talker != "self" and patch is not None:
            keyed = self._coupled.setdefault(talkgroup, set())
            for other in self._groups_in(patch.room):
                if other != talkgroup and other not in keyed:
                    keyed.add(other)
                    self.radio.request_ptt(other, f"patch:{talkgroup}", Priority.DISPATCHER)
        elif talker is None:
            for other in self._coupled.pop(talkgroup, set()):
                self.radio.release_ptt(other, f"patch:{talkgroup}")

    # --- keying from a softphone ----------------------------------------------------------------

    def on_media_event(self, event: MediaEvent) -> None:
        """A DTMF digit on any leg: ``*7``/``*8`` key or unkey the leg room's talkgroups."""
        if isinstance(event, DtmfReceived) and not event.leg_id.startswith("radio:"):
            self.key_digit(event.leg_id, event.digit)

    def key_digit(self, leg_id: str, digit: str) -> PttAction | None:
        """Feed one digit of ``leg_id``; applies and returns the PTT action it completes."""
        keyer = self._keyers.setdefault(f"leg:{leg_id}", _Keyer())
        action = keyer.keys.feed(digit, self.clock())
        if action is not None:
            self.ptt(leg_id, action)
        return action

    def on_info(self, leg_id: str, content_type: str, body: bytes) -> bool:
        """A SIP INFO on ``leg_id``: True if it was PTT/DTMF for a patched room (answer 200)."""
        try:
            parsed = parse_info(content_type, body)
            if parsed is None or not self._talkgroups_of(leg_id):
                return False
            if parsed in ("key", "unkey"):
                self.ptt(leg_id, parsed)  # type: ignore[arg-type]
            else:
                self.key_digit(leg_id, parsed)
        except Exception:  # the SIP dialog must never suffer from a radio bug
            log.exception("SIP INFO PTT failed (a bug)", extra={"leg": leg_id})
            return False
        return True

    def _talkgroups_of(self, leg_id: str) -> list[str]:
        for room, legs in self.engine.rooms().items():
            if leg_id in legs:
                return self._groups_in(room)
        return []

    def ptt(self, leg_id: str, action: PttAction) -> list[dict[str, Any]]:
        """Key or unkey every talkgroup patched into ``leg_id``'s room for that leg."""
        who = f"leg:{leg_id}"
        keyer = self._keyers.setdefault(who, _Keyer())
        events: list[dict[str, Any]] = []
        groups = self._talkgroups_of(leg_id) if action == "key" else sorted(keyer.holding)
        for tg in groups:
            if action == "key":
                keyer.holding.add(tg)
                events += self.radio.request_ptt(tg, who, Priority.DISPATCHER)
            else:
                keyer.holding.discard(tg)
                events += self.radio.release_ptt(tg, who)
        if action == "unkey" and not keyer.holding:
            self._keyers.pop(who, None)
        log.info("softphone PTT", extra={"leg": leg_id, "action": action, "groups": groups})
        return events

    # --- response plans ---------------------------------------------------------------------

    def on_event(self, envelope: Envelope) -> None:
        """Hub listener (never blocks): a confirmed ``talkgroups`` plan action patches them;
        a released call takes its talkgroups out (the radio must not keep the room alive)."""
        event = envelope.event
        work: Any = None
        if isinstance(event, ProposedActionDecided) and event.kind == "talkgroups" \
                and event.status == "confirmed":
            work = self.patch_plan(event)
        elif isinstance(event, CallReleased):
            target = f"call:{event.call_id}"
            ended = [tg for tg, p in self.patches.items() if p.target == target]
            if ended:
                work = self._call_ended(ended)
        if work is not None:
            task = asyncio.get_running_loop().create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call_ended(self, talkgroups: list[str]) -> None:
        for tg in talkgroups:
            if tg in self.patches:
                await self.unpatch(tg, "system")

    async def patch_plan(self, event: ProposedActionDecided) -> list[str]:
        """Patch a plan's talkgroups into ``incident-<id>``; the groups patched."""
        room = f"incident-{event.incident_id}"
        done: list[str] = []
        for tg in event.payload.get("talkgroups", []):
            try:
                await self.patch(str(tg), event.actor, room=room)
            except RadioServiceError as exc:
                log.warning("plan talkgroup patch failed", extra={
                    "incident": event.incident_id, "talkgroup": tg, "error": str(exc)})
                self.radio.journal(event.actor, "radio.patch_failed", f"talkgroup:{tg}",
                                   {"room": room, "why": str(exc)})
                continue
            done.append(str(tg))
        return done


def wire_patches(radio: RadioService, engine: MediaEngine, publish: Callable[[object], object],
                 listen: Callable[[Callable[[Envelope], None]], object],
                 media_events: Callable[[Callable[[MediaEvent], None]], object],
                 sip: Any, commands: Any, clock: Callable[[], float],
                 relay: Any = None) -> PatchService:
    """Build the patch service and hook it to the hub, media DTMF, SIP INFO and the console
    (``relay``: the console's path to the node that drives the radios, in a cluster)."""
    from dispatch.radio_commands import add_patch_commands

    patches = PatchService(radio, engine, publish, clock)
    listen(patches.on_event)
    media_events(patches.on_media_event)
    if sip is not None:
        sip.b2bua.info_hook = patches.on_info
    add_patch_commands(commands, patches, relay)
    return patches
