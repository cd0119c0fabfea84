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
user, else a trunk: the first in ``TrunkManager.best`` order with a free
channel.  A transfer leg through a trunk holds one of that trunk's
``max_calls`` channels (``B2bua.trunk_calls``) from the moment it is created
until the leg ends, whatever ends it (the target's BYE, ours, a failure, a
CANCEL, the caller hanging up while it rings, a force-release): the B2BUA
calls :meth:`Transfers.leg_ended` from its one place where legs end.  A
CANCELled leg whose INVITE never gets a final answer ends when the transaction
layer gives the INVITE up 64*T1 after the CANCEL (RFC 3261 section 9.1), so a
silent peer cannot hold a channel for ever.  A
trunk answering 408/5xx (or not at all) makes the transfer fail over to the
next trunk with a free channel, with a fresh leg.  When every trunk is full
the API answers 503 at once and a REFER gets 202 then a terminating NOTIFY
``503 Service Unavailable`` (baresip hangs up on a refused REFER, but keeps
the call after a failed NOTIFY).

A dialog may carry many REFERs, one at a time: after a failure the call
taker may REFER (or the API transfer) again; a REFER while one is under way
gets 491 Request Pending (the API 409).  Each REFER is its own implicit
subscription: from the second REFER received in a dialog on, its NOTIFYs
carry ``Event: refer;id=<the REFER's CSeq>`` (RFC 3515 section 2.4.6).

A failed transfer never drops the caller.  Some phones end their call when a
transfer fails (baresip 1.0.0 does, by design, whether the REFER was refused or
its NOTIFY said 503 or 486): a call taker's BYE within :data:`REQUEUE_GRACE_S`
of a failed transfer, or a failure after the call taker already left, puts the
caller back at the head of their queue (hold prompt, :class:`CallRequeued`)
instead of releasing them, and the next call taker is bridged in.

Without the media engine (``[media] enabled = false``) the caller's SDP
belongs to the call taker's phone and re-pointing it would need a third-party
re-INVITE: REFER is answered 501 and the API 409, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from telephony.acd.engine import AcdError
from telephony.b2bua.config import SipTrunk
from telephony.b2bua.events import CallRequeued, CallTransferFailed
from telephony.b2bua.legs import Call, CallState, Leg, LegRole, LegState
from telephony.b2bua.sipio import merge_option_tags
from telephony.sip.dialog import DialogError
from telephony.sip.errors import SipError
from telephony.sip.message import REASON_PHRASES, Destination, SipRequest
from telephony.sip.uri import SipUri, TelUri, parse_uri

if TYPE_CHECKING:
    from telephony.b2bua.core import B2bua
    from telephony.registrar.store import Binding

__all__ = ["TransferError", "Transfers", "target_number"]

log = logging.getLogger(__name__)

NUMBER = re.compile(r"\+?[0-9]{3,32}")
NO_MEDIA = "blind transfer needs the media engine ([media] enabled = true)"
SIPFRAG = "message/sipfrag;version=2.0"


CONNECT_POLL_S = 0.02
CONNECT_WAIT_S = 2.0
FAILOVER = frozenset({408, 500, 502, 503, 504})
"""A trunk's answers that try the next trunk (a 486/480/404 is the target's own answer)."""
ALL_TRUNKS_FULL = "every trunk is at its call limit"
REQUEUE_GRACE_S = 2.0
"""A call taker's hang-up this soon after a failed transfer is the phone giving up on
the transfer (not the call taker ending the call): the caller is re-queued."""


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
    """One REFER (or API request) until its leg is bridged or it fails."""

    call: Call
    agent: Leg
    target: str
    by: str
    refer: bool
    event: str = "refer"
    """The Event header of this REFER's NOTIFYs (``refer;id=N`` after a dialog's first)."""
    binding: Binding | None = None
    """The target's registered phone, if it has one (no trunk then)."""
    trunks: list[SipTrunk] = field(default_factory=list)
    """Trunks not tried yet, best first (a number that is not registered)."""
    out: Leg | None = None
    done: bool = False


@dataclass(eq=False)
class _Channel:
    """A live transfer leg and the trunk channel it holds ("" for a registered phone)."""

    leg: Leg
    trunk: str
    timer: asyncio.TimerHandle | None = None
    """The no-answer timeout while it rings."""


class Transfers:
    """The B2BUA's blind-transfer collaborator (module docs)."""

    def __init__(self, b2bua: B2bua) -> None:
        self.b2bua = b2bua
        self.best: Callable[[], list[SipTrunk]] = lambda: sorted(
            b2bua.trunks, key=lambda t: (-t.outbound_priority, t.name))
        """Trunks in failover order (the daemon points this at the trunk manager)."""
        self.ring_timeout = 45.0
        """Seconds the target may ring before the transfer fails (``408 no answer``)."""
        self.call_later: Callable[..., asyncio.TimerHandle] = (
            lambda delay, fn, *args: asyncio.get_running_loop().call_later(delay, fn, *args))
        """Timer factory (replaceable, so tests can step the clock)."""
        self._active: dict[str, _Transfer] = {}
        self._legs: dict[str, _Channel] = {}
        self._failed_at: dict[str, tuple[Leg, float]] = {}  # call id -> (call taker, when)
        self.counts = {"requested": 0, "transferred": 0, "failed": 0, "failover": 0}

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
        transaction), instead of being refused -- baresip hangs up on a refused REFER.
        A REFER while another of the call is under way gets 491."""
        b2bua = self.b2bua
        call = leg.call
        answering = call.state not in (CallState.CONNECTED, CallState.ENDED) and \
            leg.role is LegRole.AGENT and leg.state is LegState.CONFIRMED
        if answering and leg.live and waited * CONNECT_POLL_S < CONNECT_WAIT_S:
            asyncio.get_running_loop().call_later(CONNECT_POLL_S, self.on_refer, leg, request,
                                                  waited + 1)
            return
        leg.refers += 1
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
        # RFC 3515 2.4.6: the second and later REFERs of a dialog are told apart by id.
        event = "refer" if leg.refers == 1 else f"refer;id={request.cseq.number}"
        state = _Transfer(leg.call, leg, target, f"agent:{leg.agent_id}", refer=True,
                          event=event)
        self._begin(state)
        b2bua.spawn(self._dial(state), state.call)

    async def start(self, call_id: str, target: str, actor: str) -> None:
        """The API's transfer of a connected call; raises TransferError: 404 no such
        call (or a number nobody can reach), 409 not now (not connected, a transfer
        under way, no media engine), 422 a bad number, 503 every trunk at its limit."""
        call, agent = self._connected(call_id)
        if not NUMBER.fullmatch(target):
            raise TransferError(f"not a dialable number: {target[:40]!r}", 422)
        state = _Transfer(call, agent, target, actor, refer=False)
        await self._resolve(state)
        # The registrar answered asynchronously: the call may have moved on meanwhile.
        if self._connected(call_id) != (call, agent):
            raise TransferError("the call changed while the transfer was prepared", 409)
        self._launch(state)  # takes a trunk channel now, or 503
        self._begin(state)

    def _connected(self, call_id: str) -> tuple[Call, Leg]:
        call = self.b2bua.calls.get(call_id)
        if call is None:
            raise TransferError(f"no live call {call_id}", 404)
        agent = call.connected
        if agent is None:
            raise TransferError("the call is not connected to a call taker", 409)
        try:
            self._check(call, agent)
        except TransferError as exc:
            raise TransferError(str(exc), 409) from None
        return call, agent

    def _begin(self, state: _Transfer) -> None:
        self.counts["requested"] += 1
        self._active[state.call.call_id] = state
        self._notify(state, "100 Trying")

    # -- dialling --------------------------------------------------------------

    async def _resolve(self, state: _Transfer) -> None:
        """The target's registered phone, else the trunks to try (TransferError 404)."""
        b2bua = self.b2bua
        registrar = b2bua.registrar
        bindings = await registrar.lookup(registrar.aor_for(state.target), b2bua.wall())
        if bindings:
            state.binding = max(bindings, key=lambda b: (b.q or 0.0, b.registered_at))
            return
        state.trunks = list(self.best())
        if not state.trunks:
            raise TransferError(f"{state.target} is not registered and no trunk is configured",
                                404)

    async def _dial(self, state: _Transfer) -> None:
        """A REFER's dialling (after its 202): a failure ends in a NOTIFY."""
        try:
            await self._resolve(state)
            if not state.done:
                self._launch(state)
        except TransferError as exc:
            self._failed(state, exc.status, str(exc))

    def _free_trunk(self, state: _Transfer) -> SipTrunk | None:
        """The next untried trunk with a free channel (full ones are passed over)."""
        counts = self.b2bua.trunk_calls
        while state.trunks:
            trunk = state.trunks.pop(0)
            if counts.get(trunk.name, 0) < trunk.max_calls:
                return trunk
            log.info("transfer to %s: trunk %s is at its call limit", state.target, trunk.name)
        return None

    def _launch(self, state: _Transfer) -> None:
        """A new leg towards the target, holding its trunk channel from now until the
        leg ends (:meth:`leg_ended`), then its INVITE (TransferError 503: every trunk
        left is full)."""
        b2bua, call = self.b2bua, state.call
        trunk: SipTrunk | None = None
        if state.binding is not None:
            from telephony.b2bua.core import binding_destination

            dest, uri = binding_destination(state.binding), state.binding.contact
        else:
            trunk = self._free_trunk(state)
            if trunk is None:
                raise TransferError(ALL_TRUNKS_FULL, 503)
            dest = Destination(trunk.transport, trunk.host, trunk.port)
            uri = f"sip:{state.target}@{trunk.host}:{trunk.port}"
        n = len(call.agent_legs)
        out = Leg(f"{call.call_id}:xfer{n}", call, LegRole.OUTBOUND, dest,
                  agent_id=f"transfer:{state.target}", state=LegState.LOOKUP)
        out.on_status = lambda leg, status: self._status(state, leg, status)
        call.agent_legs[f"{out.agent_id}:{n}"] = out
        b2bua.register_leg(out)
        self._legs[out.leg_id] = _Channel(out, trunk.name if trunk else "")
        if trunk is not None:
            b2bua.trunk_calls[trunk.name] = b2bua.trunk_calls.get(trunk.name, 0) + 1
        state.out = out
        b2bua.spawn(self._invite(state, out, uri, trunk), call)

    async def _invite(self, state: _Transfer, out: Leg, uri: str,
                      trunk: SipTrunk | None) -> None:
        b2bua, call = self.b2bua, state.call
        try:
            await b2bua.anchor.join(call.call_id, out.leg_id)
            sdp = await b2bua.anchor.offer(out.leg_id)
        except (ValueError, RuntimeError) as exc:
            b2bua.stop_leg(out)  # not dialled yet: ends it, its media and its channel
            self._failed(state, 503, f"media: {exc}")
            return
        if state.done or not out.live or call.state is not CallState.CONNECTED:
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
            f"<{uri}>", out.local_tag, out.peer, sdp.encode(), extra)
        b2bua.track_invite(out, request)
        self._arm(out, self.ring_timeout, self._no_answer, state, out)

    def _status(self, state: _Transfer, leg: Leg, status: int) -> None:
        """Progress of a transfer leg (from the B2BUA's INVITE handling)."""
        if state.done or leg is not state.out:
            return
        if status < 200:
            self._notify(state, "180 Ringing" if status == 180 else f"{status} Session Progress")
        elif status < 300:
            self._disarm(leg)
            self.b2bua.spawn(self._bridge(state), state.call)
        elif (status in FAILOVER and state.trunks
              and state.call.state is CallState.CONNECTED):
            self._failover(state, status)
        else:
            self._failed(state, status, f"target answered {status}")

    def _failover(self, state: _Transfer, status: int) -> None:
        """A trunk failed (408/5xx): the same number through the next free trunk."""
        try:
            self._launch(state)
        except TransferError:
            self._failed(state, status, f"trunk answered {status}; no other trunk is free")
            return
        self.counts["failover"] += 1
        log.info("call %s: transfer to %s fails over after %d", state.call.call_id,
                 state.target, status)

    def _no_answer(self, state: _Transfer, leg: Leg) -> None:
        """The target rang for ``ring_timeout`` s: CANCEL it; the call taker keeps the
        caller and may transfer again."""
        if state.done or leg is not state.out or leg.state is LegState.CONFIRMED:
            return
        self.b2bua.stop_leg(leg)  # CANCEL; ended by the 487, or by the INVITE's timeout
        self._failed(state, 408, f"no answer within {self.ring_timeout:.0f} s")

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
        self._notify(state, f"{status} {REASON_PHRASES.get(status, 'Failed')}", final=True)
        self.b2bua.emit(CallTransferFailed(state.call.call_id, state.agent.agent_id,
                                           state.target, status, self.b2bua.wall(), state.by,
                                           why))
        if state.agent.live:
            self._failed_at[state.call.call_id] = (state.agent, self.b2bua.mono())
        elif not self._requeue(state.call, state.agent, "transfer failed after the call "
                               "taker left"):
            # Nobody is left to talk to the caller and no queue to go back to.
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
                extra_headers=(("Event", state.event), ("Subscription-State", sub),
                               ("Content-Type", SIPFRAG)),
                body=f"SIP/2.0 {frag}\r\n".encode())
        except DialogError:
            return
        b2bua.track_client(b2bua.send_request(notify, agent.peer), agent, "notify")

    # -- timers of transfer legs -----------------------------------------------

    def _arm(self, leg: Leg, delay: float, fn: Callable[..., None], *args: object) -> None:
        channel = self._legs.get(leg.leg_id)
        if channel is None or not leg.live:
            return
        if channel.timer is not None:
            channel.timer.cancel()
        channel.timer = self.call_later(delay, fn, *args)

    def _disarm(self, leg: Leg) -> None:
        channel = self._legs.get(leg.leg_id)
        if channel is not None and channel.timer is not None:
            channel.timer.cancel()
            channel.timer = None

    # -- hooks from the B2BUA --------------------------------------------------

    def leg_ended(self, leg: Leg) -> None:
        """Any end of an outbound leg: a transfer leg gives back its trunk channel
        (once) and its timer stops."""
        channel = self._legs.pop(leg.leg_id, None)
        if channel is None:
            return
        if channel.timer is not None:
            channel.timer.cancel()
        if channel.trunk:
            counts = self.b2bua.trunk_calls
            counts[channel.trunk] = max(0, counts.get(channel.trunk, 1) - 1)

    def agent_left(self, leg: Leg) -> bool:
        """A BYE from ``leg``: True when it only ends that leg — a call taker already
        transferred away, one hanging up after the 202 of a blind transfer still under
        way, or one hanging up right after a failed transfer (the caller is then
        re-queued): the caller is not dropped with them."""
        call = leg.call
        if leg.role is not LegRole.AGENT or call.connected is None:
            return False
        if leg is not call.connected:
            return True
        state = self._active.get(call.call_id)
        if state is not None and state.agent is leg:
            return True
        recent = self._failed_at.pop(call.call_id, None)
        return (recent is not None and recent[0] is leg
                and self.b2bua.mono() - recent[1] <= REQUEUE_GRACE_S
                and self._requeue(call, leg, "call taker's phone hung up after a failed "
                                  "transfer"))

    def _requeue(self, call: Call, agent: Leg, why: str) -> bool:
        """The caller back at the head of the queue, hearing the hold prompt (False:
        not an ACD call, or the ACD refused)."""
        b2bua = self.b2bua
        control = b2bua.control()
        caller = call.caller_leg
        if (not call.in_acd or control is None or caller is None or not caller.live
                or call.state is not CallState.CONNECTED):
            return False
        try:
            b2bua.acd.requeue(call.call_id, b2bua.mono(), why)
        except AcdError as exc:
            log.warning("call %s: cannot re-queue: %s", call.call_id, exc)
            return False
        log.warning("call %s: re-queued: %s", call.call_id, why)
        call.state = CallState.QUEUED
        call.connected = None
        if b2bua.settings.hold_prompt:
            try:
                control.play_to_leg(caller.leg_id, b2bua.settings.hold_prompt, loop=True)
            except ValueError as exc:  # a missing prompt never stops the call
                log.error("hold prompt cannot play: %s", exc)
        b2bua.emit(CallRequeued(call.call_id, agent.agent_id, why, b2bua.wall()))
        # The ACD may ring this call taker again: after their leg has ended.
        asyncio.get_running_loop().call_soon(b2bua.pump_acd)
        return True

    def call_ended(self, call: Call) -> None:
        """The call ended: stop tracking its transfer and its no-answer timer (a leg
        still ringing was CANCELled; it ends with the 487 or the INVITE's timeout)."""
        state = self._active.pop(call.call_id, None)
        if state is not None:
            state.done = True
        self._failed_at.pop(call.call_id, None)
        for channel in self._legs.values():
            if channel.leg.call is call:
                self._disarm(channel.leg)
