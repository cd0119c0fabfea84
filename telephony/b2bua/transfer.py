"""Blind transfer (RFC 3515 REFER, or the API): the caller goes to another agency's number.

::

    call taker                dispatchd                           target (trunk / phone)
    REFER Refer-To: 119xxxx ─▶ 202 Accepted
                     ◀──────── NOTIFY  sipfrag "100 Trying"
                               join the call's room; offer ─▶ INVITE ─────────▶
                     ◀──────── NOTIFY  "180 Ringing"        ◀───────── 180
                               accept(answer) ◀──────────────────────── 200 ; ACK ▶
                               the caller's room now bridges the target
                     ◀──────── NOTIFY  "200 OK" (terminated)
                     ◀──────── BYE (the call taker's leg is released)

The caller's own dialog never changes: with the media engine the caller
talks to our room, and the target simply joins that room (the call
taker's leg leaves it).  A failure (4xx-6xx, timeout, media refused) ends
only the new leg: the final status goes in a terminating NOTIFY and the
caller stays with the call taker.  The ACD sees the call ended for the
call taker (``transferred``: wrap-up starts), the CDR gets a ``transferred``
step, and events :class:`CallTransferred` / :class:`CallTransferFailed`
reach the audit trail.

The target is a registered phone when the registrar knows the number as a
user, else the best trunk (``TrunkManager.best`` order).  Without the media
engine (``[media] enabled = false``) the caller's SDP belongs to the call
taker's phone and re-pointing it would need a third-party re-INVITE: REFER is
answered 501 and the API 409, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from telephony.b2bua.config import SipTrunk
from telephony.b2bua.events import CallTransferFailed
from telephony.b2bua.legs import Call, CallState, Leg, LegRole, LegState
from telephony.b2bua.sipio import merge_option_tags
from telephony.sip.dialog import DialogError
from telephony.sip.errors import SipError
from telephony.sip.message import Destination, SipRequest
from telephony.sip.uri import SipUri, TelUri, parse_uri

if TYPE_CHECKING:
    from telephony.b2bua.core import B2bua

__all__ = ["TransferError", "Transfers", "target_number"]

log = logging.getLogger(__name__)

NUMBER = re.compile(r"\+?[0-9]{3,32}")
NO_MEDIA = "blind transfer needs the media engine ([media] enabled = true)"
SIPFRAG = "message/sipfrag;version=2.0"


CONNECT_POLL_S = 0.02
CONNECT_WAIT_S = 2.0


class TransferError(ValueError):
    """A transfer cannot start; ``status`` is the SIP answer to a REFER."""

    def __init__(self, detail: str, status: int = 403) -> None:
        super().__init__(detail)
        self.status = status


def target_number(refer_to: str) -> str:
    """The dialable number in a Refer-To value (``<sip:119001@host>``, ``tel:+86...``)."""
    text = refer_to.strip()
    if len(text) > 512:
        raise TransferError("Refer-To too long", 400)
    if "<" in text:
        start, end = text.find("<"), text.find(">")
        if end < start:
            raise TransferError("malformed Refer-To", 400)
        text = text[start + 1:end]
    try:
        uri = parse_uri(text)
    except SipError:
        raise TransferError("malformed Refer-To URI", 400) from None
    if isinstance(uri, SipUri):
        if uri.has_param("method") or "?" in text:
            raise TransferError("Refer-To with a method or headers is not a blind transfer",
                                400)
        number = uri.user or ""
    elif isinstance(uri, TelUri):
        number = uri.number
    else:
        raise TransferError("Refer-To must be a sip: or tel: URI", 416)
    number = number.replace("-", "").replace(".", "")
    if not NUMBER.fullmatch(number):
        raise TransferError(f"not a dialable number: {number[:40]!r}", 404)
    return number


@dataclass(eq=False)
class _Transfer:
    call: Call
    agent: Leg
    target: str
    by: str
    refer: bool
    out: Leg | None = None
    done: bool = False


class Transfers:
    """The B2BUA's blind-transfer collaborator (module docs)."""

    def __init__(self, b2bua: B2bua) -> None:
        self.b2bua = b2bua
        self.best: Callable[[], list[SipTrunk]] = lambda: sorted(
            b2bua.trunks, key=lambda t: (-t.outbound_priority, t.name))
        """Trunks in failover order (the daemon points this at the trunk manager)."""
        self._active: dict[str, _Transfer] = {}
        self.counts = {"requested": 0, "transferred": 0, "failed": 0}

    def _check(self, call: Call, agent: Leg) -> None:
        if self.b2bua.control() is None:
            raise TransferError(NO_MEDIA, 501)
        if call.state is not CallState.CONNECTED or agent is not call.connected:
            raise TransferError("only the call taker on a connected call can transfer it")
        if call.call_id in self._active:
            raise TransferError("a transfer of this call is already under way", 491)

    # -- entry points ----------------------------------------------------------

    def on_refer(self, leg: Leg, request: SipRequest, waited: int = 0) -> None:
        """REFER in the call taker's dialog: 202 and dial, or the reason it cannot.

        A phone may REFER the moment it has our ACK, before the call is bridged (the
        ACD's connect, the caller's 200): the REFER then waits for that, up to
        :data:`CONNECT_WAIT_S` (its retransmissions are absorbed by the server
        transaction), instead of being refused -- baresip hangs up on a refused REFER."""
        b2bua = self.b2bua
        call = leg.call
        answering = call.state not in (CallState.CONNECTED, CallState.ENDED) and \
            leg.role is LegRole.AGENT and leg.state is LegState.CONFIRMED
        if answering and leg.live and waited * CONNECT_POLL_S < CONNECT_WAIT_S:
            asyncio.get_running_loop().call_later(CONNECT_POLL_S, self.on_refer, leg, request,
                                                  waited + 1)
            return
        refer_to = request.headers.get_all("Refer-To")
        try:
            if len(refer_to) != 1:
                raise TransferError("exactly one Refer-To is needed", 400)
            target = target_number(refer_to[0])
            self._check(leg.call, leg)
        except TransferError as exc:
            log.info("leg %s: REFER refused: %s", leg.leg_id, exc)
            b2bua.respond(request, exc.status, to_tag=leg.local_tag,
                          extra=(("Warning", f'399 dispatchd "{str(exc)[:100]}"'),))
            return
        b2bua.respond(request, 202, to_tag=leg.local_tag, extra=(("Contact",
                      b2bua.contact(leg.peer)),))
        state = _Transfer(leg.call, leg, target, f"agent:{leg.agent_id}", refer=True)
        self._begin(state)

    def start(self, call_id: str, target: str, actor: str) -> None:
        """The API's transfer of a connected call; raises TransferError (no such call,
        not connected, bad number, no media engine)."""
        call = self.b2bua.calls.get(call_id)
        if call is None:
            raise TransferError(f"no live call {call_id}", 404)
        if not NUMBER.fullmatch(target):
            raise TransferError(f"not a dialable number: {target[:40]!r}", 422)
        agent = call.connected
        if agent is None:
            raise TransferError("the call is not connected to a call taker", 409)
        try:
            self._check(call, agent)
        except TransferError as exc:
            raise TransferError(str(exc), 409) from None
        self._begin(_Transfer(call, agent, target, actor, refer=False))

    def _begin(self, state: _Transfer) -> None:
        self.counts["requested"] += 1
        self._active[state.call.call_id] = state
        self._notify(state, "100 Trying")
        self.b2bua.spawn(self._dial(state), state.call)

    # -- dialling --------------------------------------------------------------

    async def _destination(self, target: str) -> tuple[Destination, str, SipTrunk | None]:
        b2bua = self.b2bua
        from telephony.b2bua.core import binding_destination

        registrar = b2bua.registrar
        bindings = await registrar.lookup(registrar.aor_for(target), b2bua.wall())
        if bindings:
            binding = max(bindings, key=lambda b: (b.q or 0.0, b.registered_at))
            return binding_destination(binding), binding.contact, None
        trunks = self.best()
        if not trunks:
            raise TransferError(f"{target} is not registered and no trunk is configured", 404)
        trunk = trunks[0]
        return (Destination(trunk.transport, trunk.host, trunk.port),
                f"sip:{target}@{trunk.host}:{trunk.port}", trunk)

    async def _dial(self, state: _Transfer) -> None:
        b2bua, call = self.b2bua, state.call
        try:
            dest, uri, trunk = await self._destination(state.target)
        except TransferError as exc:
            self._failed(state, exc.status, str(exc))
            return
        out = Leg(f"{call.call_id}:xfer{len(call.agent_legs)}", call, LegRole.OUTBOUND, dest,
                  agent_id=f"transfer:{state.target}")
        out.on_status = lambda leg, status: self._status(state, status)
        state.out = out
        call.agent_legs[out.agent_id + f":{len(call.agent_legs)}"] = out
        b2bua.register_leg(out)
        try:
            await b2bua.anchor.join(call.call_id, out.leg_id)
            sdp = await b2bua.anchor.offer(out.leg_id)
        except (ValueError, RuntimeError) as exc:
            out.state = LegState.ENDED
            self._failed(state, 503, f"media: {exc}")
            return
        if state.done or call.state is not CallState.CONNECTED:
            b2bua.stop_leg(out)
            return
        extra: list[tuple[str, str]] = [("X-Dispatchd-Call", call.call_id),
                                        ("Referred-By", f"<sip:{state.agent.agent_id}@"
                                                        f"{b2bua.settings.domain}>")]
        if call.pai:
            extra.append(("P-Asserted-Identity", call.pai))
        extra += merge_option_tags(b2bua.sessions.uac_headers()
                                   + b2bua.reliable.uac_headers(trunk))
        name = f'"{call.caller_display}" ' if call.caller_display else ""
        request = b2bua.new_invite(
            uri, f"{name}<sip:{call.caller or 'anonymous'}@{b2bua.settings.domain}>",
            f"<{uri}>", out.local_tag, dest, sdp.encode(), extra)
        b2bua.track_invite(out, request)

    def _status(self, state: _Transfer, status: int) -> None:
        """Progress of the new leg (from the B2BUA's INVITE handling)."""
        if state.done:
            return
        if status < 200:
            self._notify(state, "180 Ringing" if status == 180 else f"{status} Session Progress")
        elif status < 300:
            self.b2bua.spawn(self._bridge(state), state.call)
        else:
            self._failed(state, status, f"target answered {status}")

    async def _bridge(self, state: _Transfer) -> None:
        b2bua, call, out = self.b2bua, state.call, state.out
        assert out is not None
        try:
            await b2bua.anchor.accept(out.leg_id, out.answer_sdp)
        except ValueError as exc:
            b2bua.stop_leg(out)
            self._failed(state, 488, f"answer refused: {exc}")
            return
        if state.done or call.state is not CallState.CONNECTED or not out.live:
            b2bua.stop_leg(out)
            return
        state.done = True
        self._active.pop(call.call_id, None)
        agent = state.agent
        call.connected = out  # the caller's room now bridges the target
        control = b2bua.control()
        if control is not None:
            try:
                control.expect_media(out.leg_id)
            except ValueError:
                log.info("call %s: the transfer leg left the media engine", call.call_id)
        self._notify(state, "200 OK", final=True)
        b2bua.stop_leg(agent)  # BYE: the call taker is free
        self.counts["transferred"] += 1
        b2bua.transferred(call, agent, state.target, state.by)

    def _failed(self, state: _Transfer, status: int, why: str) -> None:
        if state.done:
            return
        state.done = True
        self._active.pop(state.call.call_id, None)
        self.counts["failed"] += 1
        log.info("call %s: transfer to %s failed: %s", state.call.call_id, state.target, why)
        self._notify(state, f"{status} {'Request Timeout' if status == 408 else 'Failed'}",
                     final=True)
        self.b2bua.emit(CallTransferFailed(state.call.call_id, state.agent.agent_id,
                                           state.target, status, self.b2bua.wall(), state.by))
        if not state.agent.live:
            # The call taker hung up after the 202: nobody is left to talk to the caller.
            self.b2bua.transfer_abandoned(state.call)

    def _notify(self, state: _Transfer, frag: str, final: bool = False) -> None:
        """A NOTIFY with the new leg's status as message/sipfrag (REFER only)."""
        agent = state.agent
        if not state.refer or agent.dialog is None or not agent.live:
            return
        b2bua = self.b2bua
        sub = "terminated;reason=noresource" if final else "active;expires=60"
        try:
            notify = agent.dialog.create_request(
                "NOTIFY", b2bua.via(agent.peer), contact=b2bua.contact(agent.peer),
                extra_headers=(("Event", "refer"), ("Subscription-State", sub),
                               ("Content-Type", SIPFRAG)),
                body=f"SIP/2.0 {frag}\r\n".encode())
        except DialogError:
            return
        b2bua.track_client(b2bua.send_request(notify, agent.peer), agent, "notify")

    def agent_left(self, leg: Leg) -> bool:
        """A BYE from ``leg``: True when it only ends that leg — a call taker already
        transferred away, or one hanging up after the 202 of a blind transfer still
        under way (the caller is not dropped with them)."""
        call = leg.call
        if leg.role is not LegRole.AGENT or call.connected is None:
            return False
        if leg is not call.connected:
            return True
        state = self._active.get(call.call_id)
        return state is not None and state.agent is leg

    def call_ended(self, call: Call) -> None:
        """The call ended while a transfer was under way: stop tracking it."""
        state = self._active.pop(call.call_id, None)
        if state is not None:
            state.done = True
