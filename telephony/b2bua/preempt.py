"""Pre-emption (force-release for priority): urgent calls take a lower-priority call's place.

Two cases, both decided here and carried out through the B2BUA:

* **Call taker**: the ACD reports :class:`~telephony.acd.events.PreemptionWanted`
  when a call at or above ``[acd] preempt_priority`` (110/119/120) waits although
  call takers who could take it are busy on lower-priority calls (12345).  The
  first candidate (lowest priority, then longest connected) whose queue allows it
  is pre-empted: its call taker's leg gets BYE with an RFC 4411 Reason
  (``preemption ;cause=1 ;text="UA Preemption"``) and is offered the urgent call.
  The pre-empted caller is, per the queue's ``preempt`` policy, either put back at
  the head of its queue hearing why (``requeue``, the default: their dialog and
  media stay up, and the next call taker to answer is bridged in without any
  SIP to the caller) or released with the same Reason (``release``).  A queue with
  ``preempt = "never"`` is never pre-empted.  Re-queueing needs the media engine;
  with a pass-through anchor the call is released instead.
* **Trunk line**: an urgent call arriving on a trunk at its ``max_calls`` releases
  the lowest-priority, longest-running call on that trunk whose queue allows it
  (re-queueing would not free the line), then is admitted.

Every pre-emption is a :class:`~telephony.b2bua.events.CallPreempted` event,
which the daemon writes to the audit trail (who = system, why) and the CDR.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from telephony.acd.engine import AcdError
from telephony.acd.events import Connect, PreemptionWanted, PreemptPolicy
from telephony.b2bua.events import CallAnswered, CallPreempted
from telephony.b2bua.legs import Call, CallState, LegState

if TYPE_CHECKING:
    from telephony.b2bua.core import B2bua

__all__ = ["PREEMPTION_REASON", "Preemptor"]

log = logging.getLogger(__name__)

PREEMPTION_REASON = 'preemption ;cause=1 ;text="UA Preemption"'
"""RFC 4411's Reason header value for a session ended to make room for another."""


class Preemptor:
    """Carries out pre-emptions for the B2BUA (module docs)."""

    def __init__(self, b2bua: B2bua) -> None:
        """Serve ``b2bua``'s calls."""
        self.b2bua = b2bua
        self.count = 0

    # -- a call taker for an urgent call ----------------------------------------

    def wanted(self, event: PreemptionWanted) -> None:
        """The ACD found an urgent call waiting: pre-empt its first allowed candidate."""
        b = self.b2bua
        urgent = b.calls.get(event.call_id)
        if urgent is None:
            return
        for candidate in event.candidates:
            victim = b.calls.get(candidate.call_id)
            if victim is None or victim.state is not CallState.CONNECTED:
                continue
            policy = b.acd.queue_settings(victim.queue).preempt
            if policy is PreemptPolicy.NEVER:
                continue
            requeue = policy is PreemptPolicy.REQUEUE and b.control() is not None
            try:
                agent_id = b.acd.preempt(event.call_id, victim.call_id, b.mono(), requeue)
            except AcdError as exc:
                log.info("pre-emption of %s for %s not possible: %s", victim.call_id,
                         event.call_id, exc)
                continue
            self._done(victim, agent_id, urgent, requeue, "call_taker")
            return

    def _done(self, victim: Call, agent_id: str, urgent: Call, requeue: bool,
              why: str) -> None:
        b = self.b2bua
        self.count += 1
        log.warning("call %s (%s) pre-empted for %s call %s: %s", victim.call_id,
                    victim.hotline, urgent.hotline, urgent.call_id,
                    "re-queued" if requeue else "released")
        b.emit(CallPreempted(victim.call_id, agent_id, urgent.call_id, urgent.hotline,
                             "requeue" if requeue else "release", why, b.wall()))
        if not requeue:
            victim.in_acd = False  # the ACD has already finished it (cause preempted)
            b.release_with_reason(victim, "preempted", PREEMPTION_REASON)
            return
        leg = victim.connected
        victim.state = CallState.QUEUED
        victim.connected = None
        if leg is not None and leg.live:
            b.bye_leg(leg, PREEMPTION_REASON)
        b.announcer.preempted(victim.call_id)

    def _may_preempt(self, queue: str) -> bool:
        try:
            return self.b2bua.acd.queue_settings(queue).preempt is not PreemptPolicy.NEVER
        except AcdError:  # not an ACD call (a call-back): never taken
            return False

    # -- a re-queued caller is answered again -----------------------------------

    def is_reconnect(self, call: Call) -> bool:
        """True for a re-queued call: its caller's dialog is already confirmed."""
        caller = call.caller_leg
        return caller is not None and caller.dialog is not None

    async def reconnect(self, call: Call, action: Connect) -> None:
        """Bridge the call taker who answered a re-queued call: media only, no SIP to
        the caller (their dialog and our SDP never changed)."""
        b = self.b2bua
        leg = call.agent_legs[action.agent_id]
        caller = call.caller_leg
        assert caller is not None
        call.state = CallState.CONNECTING
        call.connected = leg
        try:
            await b.anchor.accept(leg.leg_id, leg.answer_sdp)
        except (ValueError, RuntimeError) as exc:
            log.warning("call %s: media answer failed: %r", call.call_id, exc)
            b.release_with_reason(call, "media_failed", None)
            return
        if call.state is not CallState.CONNECTING or caller.state is LegState.ENDED:
            return
        b.bridge_media(call, caller, leg)
        call.state = CallState.CONNECTED
        call.answered_at = b.wall()
        b.emit(CallAnswered(call.call_id, leg.agent_id, call.queue, action.wait,
                            call.answered_at))

    # -- a trunk line for an urgent call ----------------------------------------

    def free_trunk(self, trunk: str, priority: int, hotline: str) -> bool:
        """An urgent call (``priority``) found ``trunk`` full: release its lowest-priority,
        longest-running call whose queue allows it.  False if there is none."""
        b = self.b2bua
        if priority < b.acd.preempt_priority:
            return False
        victims = [c for c in b.calls.values()
                   if c.trunk == trunk and c.priority < priority and c.in_acd
                   and c.state is not CallState.ENDED and self._may_preempt(c.queue)]
        if not victims:
            return False
        victim = min(victims, key=lambda c: (c.priority, c.offered_at, c.call_id))
        agent = victim.connected.agent_id if victim.connected is not None else ""
        self.count += 1
        log.warning("call %s (%s) released to free trunk %s for a %s call", victim.call_id,
                    victim.hotline, trunk, hotline)
        b.emit(CallPreempted(victim.call_id, agent, "", hotline, "release", "trunk", b.wall()))
        b.release_with_reason(victim, "preempted", PREEMPTION_REASON)
        return True
