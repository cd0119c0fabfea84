"""Call-back: a call taker rings a caller back through a trunk (RFC 3725 flow I).

The agent's phone is rung first with an INVITE *without* SDP, so its 200
carries an offer.  That offer goes to the media anchor (``answer``), and the
anchor's ``offer`` for the outbound leg goes to the caller through the trunk
(failover order of :meth:`TrunkManager.best`).  When the caller answers, the
anchor gets their answer (``accept``), and our answer to the agent's offer
travels in the ACK we had held back.  With the pass-through anchor the agent
and the caller simply see each other's SDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid

from telephony.b2bua.config import SipTrunk
from telephony.b2bua.core import B2bua, binding_destination
from telephony.b2bua.events import CallAnswered, CallOffered
from telephony.b2bua.legs import Call, CallState, Leg, LegRole, LegState
from telephony.sip.message import Destination

__all__ = ["CallbackError", "call_back"]

_NUMBER = re.compile(r"\+?[0-9]{3,32}")


class CallbackError(ValueError):
    """The call-back cannot start (bad number, agent not registered, no trunk)."""


async def call_back(b2bua: B2bua, number: str, agent_id: str, trunks: list[SipTrunk]) -> str:
    """Start a call-back; returns the call id (the rest happens on SIP events)."""
    if not _NUMBER.fullmatch(number):
        raise CallbackError(f"not a dialable number: {number!r}")
    if not trunks:
        raise CallbackError("no trunk to call out through")
    trunk = trunks[0]
    registrar = b2bua.registrar
    bindings = await registrar.lookup(registrar.aor_for(agent_id), b2bua.wall())
    if not bindings:
        raise CallbackError(f"agent {agent_id} has no registered phone")
    if b2bua.trunk_calls.get(trunk.name, 0) >= trunk.max_calls:
        raise CallbackError(f"trunk {trunk.name} is at its call limit")
    binding = max(bindings, key=lambda b: (b.q or 0.0, b.registered_at))
    domain = b2bua.settings.domain
    call = Call(str(uuid.uuid4()), "", number, "", number, trunk.name, b2bua.wall(),
                route="callback")
    agent = Leg(f"{call.call_id}:{agent_id}", call, LegRole.AGENT,
                binding_destination(binding), agent_id=agent_id, late_offer=True)
    call.agent_legs[agent_id] = agent
    call.state = CallState.CONNECTING
    call.on_answer = lambda leg: _answered(b2bua, call, trunk, leg)
    b2bua.calls[call.call_id] = call
    b2bua.trunk_calls[trunk.name] = b2bua.trunk_calls.get(trunk.name, 0) + 1
    b2bua.register_leg(agent)
    request = b2bua.new_invite(
        binding.contact, f'"call-back" <sip:{number}@{domain}>', f"<sip:{agent_id}@{domain}>",
        agent.local_tag, agent.peer, b"", [("X-Dispatchd-Call", call.call_id)])
    call.sip_call_id = request.call_id
    b2bua.track_invite(agent, request)
    b2bua._emit(CallOffered(call.call_id, call.sip_call_id, number, number, "", "",
                            0, trunk.name, "callback", call.offered_at))
    return call.call_id


def _answered(b2bua: B2bua, call: Call, trunk: SipTrunk, leg: Leg) -> None:
    if leg.role is LegRole.AGENT:
        b2bua.spawn(_dial_out(b2bua, call, trunk, leg))
    else:
        b2bua.spawn(_bridge(b2bua, call, leg))


async def _dial_out(b2bua: B2bua, call: Call, trunk: SipTrunk, agent: Leg) -> None:
    anchor = b2bua.anchor
    await anchor.join(call.call_id, agent.leg_id)
    call.answer_task = asyncio.ensure_future(anchor.answer(agent.leg_id, agent.answer_sdp))
    await asyncio.sleep(0)
    if call.answer_task.done() and call.answer_task.exception() is not None:
        b2bua._release(call, "media_refused", "system")
        return
    out = Leg(f"{call.call_id}:out", call, LegRole.OUTBOUND,
              Destination(trunk.transport, trunk.host, trunk.port))
    call.caller_leg = out
    b2bua.register_leg(out)
    await anchor.join(call.call_id, out.leg_id)
    sdp = await anchor.offer(out.leg_id)
    if call.state is CallState.ENDED:
        return
    domain = b2bua.settings.domain
    target = f"sip:{call.called}@{trunk.host}:{trunk.port}"
    request = b2bua.new_invite(target, f"<sip:dispatchd@{domain}>", f"<{target}>",
                               out.local_tag, out.peer, sdp.encode(),
                               [("X-Dispatchd-Call", call.call_id)])
    b2bua.track_invite(out, request)


async def _bridge(b2bua: B2bua, call: Call, out: Leg) -> None:
    agent = next(iter(call.agent_legs.values()))
    try:
        await b2bua.anchor.accept(out.leg_id, out.answer_sdp)
        assert call.answer_task is not None
        async with asyncio.timeout(10.0):
            answer = await asyncio.shield(call.answer_task)
    except (ValueError, TimeoutError, asyncio.CancelledError):
        b2bua._release(call, "media_failed", "system")
        return
    if call.state is CallState.ENDED or agent.dialog is None or agent.state is LegState.ENDED:
        return
    ack = agent.dialog.create_ack(b2bua.via(agent.peer), body=answer.encode())
    ack.headers.add("Content-Type", "application/sdp")
    b2bua.send_stateless(ack, agent.peer)
    call.connected = agent
    call.state = CallState.CONNECTED
    call.answered_at = b2bua.wall()
    control = b2bua.control()
    if control is not None:  # recorded from answer to release
        with contextlib.suppress(ValueError):  # both legs left the room: nothing to record
            control.record(call.call_id)
    b2bua.counts["answered"] += 1
    b2bua._emit(CallAnswered(call.call_id, agent.agent_id, "", 0.0, call.answered_at))
