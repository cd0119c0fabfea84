"""Force-in (强插): a supervisor's phone joins a live call in listen, whisper or barge mode.

Flow::

    API/console ─▶ ForceIn.start(call, account, mode, actor)
                   registrar.lookup(account) ─▶ binding (else MonitorError 404)
                   anchor.join(call room, monitor leg, engine mode); anchor.offer ─▶ O
                   INVITE (O) ─────────────────────────────▶ supervisor's phone
                   ◀──────────────────────────────────────── 200 (A); ACK
                   anchor.accept(A) ─▶ the phone hears the room in its mode
    change:        ForceIn.change(leg, mode) ─▶ anchor.set_mode  (API, console, or the
                   supervisor's keypad: *1 listen, *2 whisper, *3 barge)
    leave:         the phone's BYE, ForceIn.leave (BYE from us), or the call's release

Modes map to the mixer's: ``listen`` (heard by nobody), ``whisper`` (heard by the
call taker only: ``whisper:<call taker's leg>``), ``barge`` (heard by all).  Every
step is a :class:`~telephony.b2bua.events.CallMonitor` event carrying the
supervisor's name, which the daemon writes to the audit trail.  Force-in needs
an anchor that mixes media itself (:class:`~telephony.b2bua.anchor.MediaControl`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from telephony.b2bua.anchor import MediaControl
from telephony.b2bua.events import CallMonitor
from telephony.b2bua.legs import Call, CallState, Leg, LegRole, LegState
from telephony.media.forcein import ModeKeys

if TYPE_CHECKING:
    from telephony.b2bua.core import B2bua

__all__ = ["MODES", "ForceIn", "MonitorError"]

log = logging.getLogger(__name__)

MODES = ("listen", "whisper", "barge")
MAX_MONITORS = 4
"""Supervisor legs one call may have at once."""


class MonitorError(Exception):
    """A force-in request that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ForceIn:
    """Supervisor legs of the B2BUA's calls (module docs)."""

    def __init__(self, b2bua: B2bua) -> None:
        self.b2bua = b2bua
        self._keys: dict[str, ModeKeys] = {}

    def _control(self) -> MediaControl:
        anchor = self.b2bua.anchor
        if not isinstance(anchor, MediaControl):
            raise MonitorError(409, "force-in needs media anchoring ([media] enabled = true)")
        return anchor

    def engine_mode(self, call: Call, mode: str) -> str:
        """The mixer's mode string for ``mode`` in ``call``."""
        if mode not in MODES:
            raise MonitorError(422, f"mode must be one of {', '.join(MODES)}")
        if mode != "whisper":
            return mode
        taker = call.connected
        if taker is None or not taker.live or call.state is not CallState.CONNECTED:
            raise MonitorError(409, "whisper needs a call taker on the call")
        return f"whisper:{taker.leg_id}"

    def _live_call(self, call_id: str) -> Call:
        call = self.b2bua.calls.get(call_id)
        if call is None or call.state is CallState.ENDED:
            raise MonitorError(404, f"no live call {call_id}")
        return call

    def _leg(self, call_id: str, leg_id: str) -> tuple[Call, Leg]:
        call = self._live_call(call_id)
        leg = call.monitors.get(leg_id)
        if leg is None or not leg.live:
            raise MonitorError(404, f"no supervisor leg {leg_id} on call {call_id}")
        return call, leg

    async def start(self, call_id: str, account: str, mode: str, actor: str) -> str:
        """Ring ``account``'s registered phone into the call in ``mode``; the new leg id."""
        b = self.b2bua
        self._control()
        call = self._live_call(call_id)
        engine_mode = self.engine_mode(call, mode)
        if sum(1 for leg in call.monitors.values() if leg.live) >= MAX_MONITORS:
            raise MonitorError(409, f"call {call_id} already has {MAX_MONITORS} supervisors")
        bindings = await b.registrar.lookup(b.registrar.aor_for(account), b.wall())
        if not bindings:
            raise MonitorError(404, f"SIP account {account!r} has no registered phone")
        call = self._live_call(call_id)
        binding = max(bindings, key=lambda x: (x.q or 0.0, x.registered_at))
        from telephony.b2bua.core import binding_destination

        leg = Leg(f"{call.call_id}:monitor:{len(call.monitors)}", call, LegRole.MONITOR,
                  binding_destination(binding), agent_id=account, state=LegState.LOOKUP,
                  actor=actor, mode=mode)
        call.monitors[leg.leg_id] = leg
        b.register_leg(leg)
        try:
            await b.anchor.join(call.call_id, leg.leg_id, engine_mode)
            sdp = await b.anchor.offer(leg.leg_id)
        except (ValueError, RuntimeError) as exc:
            leg.state = LegState.ENDED
            await b.anchor.release(leg.leg_id)
            raise MonitorError(503, f"media: {exc}") from None
        if not leg.live or call.state is CallState.ENDED:
            raise MonitorError(404, f"call {call_id} ended")
        request = b.new_invite(
            binding.contact, f'"Supervisor {actor}" <sip:monitor@{b.settings.domain}>',
            f"<sip:{account}@{b.settings.domain}>", leg.local_tag, leg.peer, sdp.encode(),
            [("X-Dispatchd-Call", call.call_id), ("X-Dispatchd-Monitor", mode)])
        b.track_invite(leg, request)
        self._emit(leg, "ringing")
        return leg.leg_id

    def dtmf(self, leg_id: str, digit: str) -> str | None:
        """A key pressed on a supervisor's phone: ``*1``/``*2``/``*3`` switch its mode
        (audited as the supervisor, via DTMF); the new mode, or None."""
        call = self.b2bua.calls.get(leg_id.split(":", 1)[0])
        leg = call.monitors.get(leg_id) if call is not None else None
        if call is None or leg is None or not leg.live or not leg.mode:
            return None
        keys = self._keys.setdefault(leg_id, ModeKeys("taker"))
        wanted = keys.feed(digit, self.b2bua.mono())
        if wanted is None:
            return None
        mode = wanted.partition(":")[0]
        try:
            self.change(call.call_id, leg_id, mode, leg.actor, via="dtmf")
        except MonitorError as exc:  # e.g. whisper with no call taker: keep the mode
            log.info("supervisor key %s on %s ignored: %s", wanted, leg_id, exc)
            return None
        return mode

    def change(self, call_id: str, leg_id: str, mode: str, actor: str, via: str = "") -> None:
        """Switch a supervisor leg to ``mode`` mid-call."""
        call, leg = self._leg(call_id, leg_id)
        engine_mode = self.engine_mode(call, mode)
        try:
            self._control().set_mode(leg.leg_id, engine_mode)
        except ValueError as exc:
            raise MonitorError(409, str(exc)) from None
        leg.mode = mode
        self._emit(leg, "mode", actor=actor, detail=via)

    def leave(self, call_id: str, leg_id: str, actor: str, detail: str = "") -> None:
        """Take a supervisor leg out of the call (BYE or CANCEL to their phone)."""
        _, leg = self._leg(call_id, leg_id)
        self.ended(leg, actor, detail or "removed")
        self.b2bua.stop_leg(leg)

    def answered(self, leg: Leg) -> None:
        """The supervisor's phone answered: use its SDP, then they hear the room."""
        self.b2bua.spawn(self._accept(leg), leg.call)

    async def _accept(self, leg: Leg) -> None:
        b = self.b2bua
        try:
            await b.anchor.accept(leg.leg_id, leg.answer_sdp)
            self._control().expect_media(leg.leg_id)
        except ValueError as exc:
            log.info("supervisor leg %s: unusable answer: %s", leg.leg_id, exc)
            self.ended(leg, leg.actor, f"media: {exc}", step="failed")
            b.stop_leg(leg)
            return
        self._emit(leg, "joined")

    def ended(self, leg: Leg, actor: str, detail: str, step: str = "left") -> None:
        """Record that a supervisor leg ended (its phone hung up, failed, or was removed)."""
        self._keys.pop(leg.leg_id, None)
        if leg.mode == "":
            return
        self._emit(leg, step, actor=actor, detail=detail)
        leg.mode = ""  # reported once

    def _emit(self, leg: Leg, step: str, *, actor: str | None = None, detail: str = "") -> None:
        self.b2bua.emit(CallMonitor(leg.call.call_id, leg.leg_id, leg.agent_id, leg.mode,
                                    actor or leg.actor, step, detail, self.b2bua.wall()))

