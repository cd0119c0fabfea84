"""The B2BUA: trunks and phones in, hotline queues, call takers' softphones out.

Call flow (inbound emergency call)
----------------------------------
::

    carrier/phone            dispatchd (B2BUA)                  call taker
    INVITE (offer O) ──────▶ authenticate (trunk source address,
                             or digest 407 for trunks/phones)
                             Router: Request-URI/To/Diversion ─▶ hotline, queue, priority
                             anchor.join(call, caller); anchor.answer(caller, O) started
    ◀──── 180 Ringing        AcdEngine.call_arrived ─▶ RingAgent
                             registrar.lookup(agent) ─▶ binding
                             anchor.join(call, agent); anchor.offer(agent) ─▶ O'
                             INVITE (O') ────────────────────────────▶
    ◀──── 180/183 relayed    ◀──────────────────────────────── 180/183
                             ◀──────────────────────────────── 200 (A)
                             ACK ─────────────────────────────────────▶
                             AcdEngine.agent_answered ─▶ Connect
                             anchor.accept(agent, A); await answer ─▶ A'
    ◀──── 200 (A')
    ACK ───────────────────▶
    BYE ───────────────────▶ 200; BYE ────────────────────────────────▶  (or the other way)

With :class:`~telephony.b2bua.anchor.PassThroughAnchor` O' = O and A' = A.
With the media engine (a :class:`~telephony.b2bua.anchor.MediaControl`) both
are the engine's own SDP (our ports), and a few steps change: the caller's
answer is ready at once, so instead of a bare 180 the caller gets ``183``
with A' (early media) and hears the hold prompt looped until the call taker
answers (then the prompt stops and the same A' goes in the 200; agents'
180/183 are not relayed); re-INVITE/UPDATE offers are answered by the engine
instead of being relayed; a leg with no RTP for the dead-media time releases
the call (BYE with a Reason header, :class:`CallMediaDead`); supervisors force
in as extra legs of the room (:mod:`telephony.b2bua.monitor`).

CANCEL from the caller while queued or ringing becomes
``call_abandoned`` (the ACD puts the number on the call-back list) and every
ringing agent leg is CANCELled.  A ring that times out, fails (4xx-6xx, timer
B) or finds no registration goes back to the ACD, which rings the next agent.

In-dialog re-INVITE, UPDATE and INFO from one side of a connected call are
relayed to the other side and the answer relayed back (hold/resume passes
through).  REFER blind-transfers the caller (:mod:`telephony.b2bua.transfer`);
session timers (:mod:`telephony.b2bua.sessions`) find dead calls; PRACK/100rel
is :mod:`telephony.b2bua.prack`.

Everything arrives through :class:`~telephony.sip.transport.SipEndpoint`
callbacks on the loop; the ACD is sans-I/O and is driven with the loop's
monotonic clock, while records carry the injected wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telephony.acd.engine import AcdEngine, AcdError
from telephony.acd.events import (
    AgentState,
    Connect,
    HangupAgentLeg,
    PreemptionWanted,
    RejectCall,
    RingAgent,
    StopRinging,
)
from telephony.b2bua.anchor import MediaAnchor, MediaControl
from telephony.b2bua.announcer import QueueAnnouncer
from telephony.b2bua.conference import Conferences
from telephony.b2bua.config import InboundAuth, SipTrunk
from telephony.b2bua.events import (
    CallAnswered,
    CallMediaDead,
    CallOffered,
    CallRefused,
    CallReleased,
    CallTransferred,
    LiveCall,
)
from telephony.b2bua.legs import Call, CallState, Leg, LegRole, LegState
from telephony.b2bua.monitor import ForceIn
from telephony.b2bua.overload import LoopLagMonitor, OverloadGuard, OverloadSettings
from telephony.b2bua.prack import Reliability
from telephony.b2bua.preempt import Preemptor
from telephony.b2bua.sessions import EXPIRED_REASON, SessionKeeper
from telephony.b2bua.sipio import SipIo, merge_option_tags
from telephony.registrar.core import Registrar
from telephony.registrar.store import Binding
from telephony.routing import Router, normalise_number
from telephony.sip.dialog import AnswerRetransmitter, Dialog, DialogError
from telephony.sip.digest import DigestOutcome, challenge_response, credentials_for_realm
from telephony.sip.errors import SipError
from telephony.sip.events import (
    DeliverRequest,
    DeliverResponse,
    SendMessage,
    StrayResponse,
    TimerName,
    TransactionKey,
    TransactionTimeout,
    TransportError,
)
from telephony.sip.message import (
    Destination,
    SipRequest,
    SipResponse,
    build_cancel,
    build_response,
    response_destination,
)
from telephony.sip.proxied import origin_of
from telephony.sip.transport import TransactionUser
from telephony.sip.uri import SipUri, parse_uri

__all__ = ["B2bua", "B2buaSettings"]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[^A-Za-z0-9 _.:@+\-/]")
FEATURE_CODES = {"*11": "login", "*12": "logout", "*13": "ready", "*14": "not_ready"}
"""What a registered agent's phone dials to change its ACD state (answered 480
with the new state as the reason phrase, or 403 if refused)."""
_RELAYED = ("INVITE", "UPDATE", "INFO")


@dataclass(frozen=True, slots=True)
class B2buaSettings:
    """Typed settings of the B2BUA (from ``[sip]``)."""

    domain: str
    max_calls: int = 5000
    session_expires: float = 1800.0
    ringback_180: bool = True
    user_agent: str = "dispatchd"
    hold_prompt: str | None = "hold"
    """Prompt looped to a queued caller when the anchor mixes media (None: silence)."""
    min_se: int = 90
    """RFC 4028 Min-SE: smaller Session-Expires requests are answered 422."""
    overload: OverloadSettings = field(default_factory=OverloadSettings)
    """When new calls are shed with 503 (:mod:`telephony.b2bua.overload`)."""


def _user(uri: object) -> str:
    return uri.user or "" if isinstance(uri, SipUri) else ""


def binding_destination(binding: Binding) -> Destination:
    """Where to send requests for a binding: its Contact when that is the address the
    REGISTER came from (no NAT in between), else the REGISTER's source (NAT)."""
    try:
        uri = parse_uri(binding.contact)
    except SipError:
        uri = None
    if isinstance(uri, SipUri) and uri.host == binding.source_host and uri.port:
        return Destination(binding.source_transport, uri.host, uri.port)
    return Destination(binding.source_transport, binding.source_host, binding.source_port)


def _sanitise(text: str, limit: int = 120) -> str:
    """Operator text fit for a quoted header parameter (no quotes, no controls)."""
    return _TOKEN.sub(" ", text)[:limit].strip()


class B2bua(SipIo):
    """The INVITE/BYE/CANCEL/ACK/UPDATE/INFO/REFER transaction user (module docs)."""

    name = "sip-b2bua"

    def __init__(
        self,
        settings: B2buaSettings,
        registrar: Registrar,
        router: Router,
        acd: AcdEngine,
        trunks: tuple[SipTrunk, ...],
        anchor: MediaAnchor,
        *,
        on_event: Callable[[object], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings.user_agent)
        self.settings = settings
        self.registrar = registrar
        self.router = router
        self.acd = acd
        self.trunks = trunks
        self.anchor = anchor
        self.on_event = on_event
        self.wall = wall_clock
        self.calls: dict[str, Call] = {}
        #: In-dialog INFO consumed locally (PTT keying, telephony/media/pttkeys.py):
        #: ``hook(leg_id, content_type, body)`` returns True to answer 200 and not relay.
        self.info_hook: Callable[[str, str, bytes], bool] | None = None
        self.trunk_calls: dict[str, int] = {t.name: 0 for t in trunks}
        self.counts = {"offered": 0, "answered": 0, "abandoned": 0, "refused": 0,
                       "released": 0, "force_released": 0}
        self._by_tag: dict[str, Leg] = {}
        self._by_invite: dict[TransactionKey, Leg] = {}
        self._client: dict[TransactionKey, tuple[Leg, str, Any]] = {}
        self._acd_timer: asyncio.TimerHandle | None = None
        self._control_of: object = None
        self._control: MediaControl | None = None
        self.other_client: TransactionUser | None = None
        """Gets responses to client transactions that are not ours (trunk keep-alives)."""
        self.forcein = ForceIn(self)
        self.sessions = SessionKeeper(self, int(settings.session_expires), settings.min_se)
        self.reliable = Reliability(self)
        from telephony.b2bua.transfer import Transfers  # it imports this module

        self.transfers = Transfers(self)
        self.conferences = Conferences(self)
        self.announcer = QueueAnnouncer(self)
        self.preemptor = Preemptor(self)
        self.overload = OverloadGuard(settings.overload)
        self.lag_monitor = LoopLagMonitor(self.overload)

    # -- service ---------------------------------------------------------------

    async def start(self) -> None:
        """Watch the loop's lag (overload control); session timers run per leg."""
        self.lag_monitor.start()

    async def stop(self) -> None:
        """Release every call (BYE/CANCEL/503), free their media and stop timers."""
        await self.lag_monitor.stop()
        legs: list[str] = []
        for call in list(self.calls.values()):
            legs.extend(leg.leg_id for leg in call.legs())
            self._release(call, "shutdown", "system", reason="Q.850;cause=41;text=\"shutdown\"")
        if self._acd_timer is not None:
            self._acd_timer.cancel()
        self.announcer.stop()
        self.close_tasks()
        for leg_id in legs:  # the spawned releases were just cancelled: release here
            await self.anchor.release(leg_id)
        control = self.control()
        if control is not None:  # recordings sealed while the record writer still runs
            try:
                async with asyncio.timeout(10.0):
                    await control.drain()
            except TimeoutError:
                log.error("recordings not sealed within 10 s of shutdown")

    def health(self) -> dict[str, object]:
        """Live figures for /health."""
        return {"calls": len(self.calls), "trunk_calls": dict(self.trunk_calls),
                **self.counts, "sessions": dict(self.sessions.counts),
                "prack": dict(self.reliable.counts), "transfers": dict(self.transfers.counts),
                "overload": self.overload.health(self.lag_monitor.now())}

    def live_calls(self) -> list[LiveCall]:
        """Snapshots of every live call."""
        out = []
        for c in self.calls.values():
            ringing = tuple(a for a, leg in c.agent_legs.items()
                            if leg.live and leg is not c.connected)
            out.append(LiveCall(
                c.call_id, c.sip_call_id, c.state.value, c.caller, c.called, c.hotline,
                c.queue, c.priority, c.trunk, c.connected.agent_id if c.connected else "",
                c.offered_at, c.answered_at, ringing))
        return out

    def control(self) -> MediaControl | None:
        """The anchor, when it mixes media itself (prompts, force-in, dead media)."""
        anchor = self.anchor
        if anchor is not self._control_of:
            # A runtime-checkable Protocol isinstance costs tens of microseconds and
            # this is asked several times per call: check once per anchor object.
            self._control_of = anchor
            self._control = anchor if isinstance(anchor, MediaControl) else None
        return self._control

    def emit(self, event: object) -> None:
        """Hand an event to the daemon (for the force-in helper)."""
        self._emit(event)

    def _emit(self, event: object) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("B2BUA event callback failed on %s", type(event).__name__)

    # -- agents (API and feature codes) --------------------------------------

    def agent_action(self, agent_id: str, action: str, reason: str = "api") -> None:
        """login, logout, ready or not_ready; raises AcdError."""
        now = self.mono()
        if action == "login":
            self.acd.agent_login(agent_id, now)
        elif action == "logout":
            self.acd.agent_logout(agent_id, now, reason)
        elif action in ("ready", "not_ready"):
            self.acd.agent_state(agent_id, AgentState(action), now, reason)
        else:
            raise ValueError(f"unknown agent action {action!r}")
        self._pump_acd()

    # -- TransactionUser -------------------------------------------------------

    def on_request(self, event: DeliverRequest) -> None:
        """Dispatch by method and dialog."""
        request = event.request
        method = request.method
        if method == "ACK":
            self._on_ack(request)
        elif method == "CANCEL":
            self._on_cancel(event)
        elif method == "INVITE" and request.to.tag is None:
            self._on_invite(event)
        elif request.to.tag is not None:
            self._in_dialog(event)
        else:
            self.respond(request, 481 if method == "BYE" else 405)

    def on_response(self, event: DeliverResponse) -> None:
        """Responses to our INVITEs, CANCELs, BYEs and relayed requests."""
        entry = self._client.get(event.key)
        if entry is None:
            if self.other_client is not None:
                self.other_client.on_response(event)
            return
        leg, purpose, origin = entry
        response = event.response
        if purpose == "invite":
            self._invite_response(leg, response)
        elif purpose == "relay" and response.status >= 200:
            self._relay_response(leg, response, origin)
        elif purpose == "refresh" and response.status >= 200:
            self.sessions.refresh_result(leg, response.status)
        if response.status >= 200 and purpose != "invite":
            self._client.pop(event.key, None)

    def on_stray_response(self, event: StrayResponse) -> None:
        """A 2xx retransmission for an INVITE whose transaction ended: ACK it again."""
        response = event.response
        if response.cseq.method != "INVITE" or not response.is_success:
            return
        leg = self._by_tag.get(response.from_.tag or "")
        if leg is not None and leg.dialog is not None and leg.invite is not None:
            self._send_ack(leg)

    def on_timeout(self, event: TransactionTimeout) -> None:
        """Timer B/F: an INVITE, BYE or probe went unanswered."""
        self._client_failed(event.key, "timeout")

    def on_transport_error(self, event: TransportError) -> None:
        """A request could not be sent."""
        self._client_failed(event.key, "transport_error")

    def _client_failed(self, key: TransactionKey, cause: str) -> None:
        entry = self._client.pop(key, None)
        if entry is None:
            if self.other_client is not None:
                self.other_client.on_timeout(TransactionTimeout(key, TimerName.F))
            return
        leg, purpose, origin = entry
        if purpose == "invite":
            self._leg_failed(leg, 408, cause)
        elif purpose == "refresh":
            self.sessions.refresh_result(leg, None)
        elif purpose == "relay" and origin is not None:
            self.respond(origin[1], 408, to_tag=origin[0].local_tag)

    # -- inbound INVITE --------------------------------------------------------

    def _trunk_for(self, source: Destination) -> SipTrunk | None:
        for trunk in self.trunks:
            if trunk.matches_source(source.host, source.port):
                return trunk
        return None

    def _on_invite(self, event: DeliverRequest) -> None:
        request, source = event.request, event.source
        if len(self.calls) >= self.settings.max_calls:
            self._refuse(request, "", 503, "too many calls")
            return
        if not self.sessions.check_invite(request):
            return
        trunk = self._trunk_for(origin_of(request, source))  # real source behind a proxy
        if not self.reliable.check_invite(request, trunk):
            return
        if trunk is not None:
            self._admit(event, trunk)
            return
        creds = credentials_for_realm(request.headers.get_all("Proxy-Authorization"),
                                      self.registrar.settings.realm)
        if creds is None:
            self.send_response(challenge_response(request, self.registrar.digest,
                                                  self.registrar.clock(), proxy=True))
            return
        self.spawn(self._authenticate(event, creds.username))

    async def _authenticate(self, event: DeliverRequest, username: str) -> None:
        request = event.request
        creds = credentials_for_realm(request.headers.get_all("Proxy-Authorization"),
                                      self.registrar.settings.realm)
        assert creds is not None
        verdict = await self.verify_digest(self.registrar, request, creds,
                                            origin_of(request, event.source).host)
        if verdict is DigestOutcome.OK:
            trunk = next((t for t in self.trunks if t.inbound is InboundAuth.DIGEST
                          and t.account == username), None)
            self._admit(event, trunk, phone=None if trunk else username)
            return
        stale = verdict is DigestOutcome.STALE
        self.send_response(challenge_response(request, self.registrar.digest,
                                              self.registrar.clock(), proxy=True, stale=stale))

    def _identity(self, request: SipRequest) -> tuple[str, str, str | None]:
        """Caller number, display name and P-Asserted-Identity (kept as received)."""
        pai = request.headers.get("P-Asserted-Identity")
        number = ""
        if pai is not None:
            found = re.search(r"(?:sip:|tel:)(\+?[0-9*#]{1,32})", pai)
            number = found.group(1) if found else ""
        from_ = request.from_
        number = normalise_number(number or _user(from_.uri)) or _user(from_.uri)
        return number[:64], _sanitise(from_.display_name or "", 64), pai

    def _admit(self, event: DeliverRequest, trunk: SipTrunk | None,
               phone: str | None = None) -> None:
        request, source = event.request, event.source
        if phone is not None and _user(request.uri) in FEATURE_CODES:
            self._feature_code(request, phone, FEATURE_CODES[_user(request.uri)])
            return
        caller, display, pai = self._identity(request)
        trunk_name = trunk.name if trunk else ""
        ctype = request.content_type
        offer = request.body.decode("utf-8", "replace")
        if ctype is None or ctype.mime != "application/sdp" or not offer:
            self._refuse(request, caller, 488, "an SDP offer is required")
            return
        route = self.router.route(
            request_uri_user=_user(request.uri), to_user=_user(request.to.uri),
            diversion=request.headers.get("Diversion") or "", caller=caller, trunk=trunk_name,
            line=_user(request.uri))
        if (trunk is not None and self.trunk_calls.get(trunk_name, 0) >= trunk.max_calls
                and not self.preemptor.free_trunk(trunk_name, route.priority,
                                                  route.hotline.number)):
            self._refuse(request, caller, 503, f"trunk {trunk_name} at its call limit")
            return
        if not self.overload.admit(self.lag_monitor.now(), route.priority):
            self._refuse(request, caller, 503, "overloaded",
                         retry_after=self.settings.overload.retry_after_s)
            return
        now = self.wall()
        call = Call(str(uuid.uuid4()), request.call_id, caller, display, route.called,
                    trunk_name, now, hotline=route.hotline.number, queue=route.queue,
                    priority=route.priority, route=route.kind.value, pai=pai)
        leg = Leg(f"{call.call_id}:caller", call, LegRole.CALLER,
                  response_destination(request.top_via, source), invite=request,
                  invite_key=event.key)
        call.caller_leg = leg
        if self.reliable.wants_reliable(leg, trunk):
            self.reliable.start(leg)
        self.calls[call.call_id] = call
        self._by_tag[leg.local_tag] = leg
        assert event.key is not None
        self._by_invite[event.key] = leg
        if trunk is not None:
            self.trunk_calls[trunk_name] += 1
        self.counts["offered"] += 1
        self.spawn(self._queue_call(call, leg, offer), call)

    async def _queue_call(self, call: Call, leg: Leg, offer: str) -> None:
        try:
            await self.anchor.join(call.call_id, leg.leg_id)
        except (ValueError, RuntimeError) as exc:  # no ports left (MediaUnavailable)
            log.warning("call %s: media anchor refused the caller: %s", call.call_id, exc)
            self._release(call, "media_unavailable", "system", status=503)
            return
        call.answer_task = asyncio.ensure_future(self.anchor.answer(leg.leg_id, offer))
        call.answer_task.add_done_callback(lambda t: self._answer_done(call, t))
        await asyncio.sleep(0)  # a real anchor refuses a bad offer at once: 488 before queueing
        if call.state is not CallState.NEW:
            return
        if self.control() is not None:
            if not await self._early_media(call, leg):
                return
        elif self.settings.ringback_180:
            self.reliable.provisional(leg, 180)
            leg.state = LegState.EARLY
        self._emit(CallOffered(call.call_id, call.sip_call_id, call.caller, call.called,
                               call.hotline, call.queue, call.priority, call.trunk, call.route,
                               call.offered_at))
        call.state = CallState.QUEUED
        call.in_acd = True
        try:
            self.acd.call_arrived(call.call_id, call.caller, call.hotline, call.queue,
                                  call.priority, self.mono())
        except AcdError as exc:
            log.error("ACD refused call %s: %s", call.call_id, exc)
            call.in_acd = False
            self._release(call, "acd_error", "system", status=500)
        self._pump_acd()

    async def _early_media(self, call: Call, leg: Leg) -> bool:
        """Our media answers at once: 183 with our SDP, then the hold prompt in a loop
        until a call taker answers (:meth:`_connect` stops it).  False if the call ended."""
        assert call.answer_task is not None
        try:
            async with asyncio.timeout(10.0):
                answer = await asyncio.shield(call.answer_task)
        except (ValueError, asyncio.CancelledError):
            return False  # refused (488, by _answer_done) or released meanwhile
        except (TimeoutError, RuntimeError) as exc:
            log.warning("call %s: no media answer: %r", call.call_id, exc)
            self._release(call, "media_unavailable", "system", status=503)
            return False
        if call.state is not CallState.NEW or not leg.live:
            return False
        self.reliable.provisional(leg, 183, self.answer_headers(leg.peer), answer.encode())
        leg.state = LegState.EARLY
        call.early_media = True
        control = self.control()
        if self.settings.hold_prompt and control is not None:
            try:
                control.play_to_leg(leg.leg_id, self.settings.hold_prompt, loop=True)
            except ValueError as exc:  # a missing prompt never stops the call
                log.error("hold prompt %r cannot play: %s", self.settings.hold_prompt, exc)
        return True

    def _feature_code(self, request: SipRequest, user: str, action: str) -> None:
        """An agent dialled a feature code: do it and answer with a final response
        whose reason phrase says what happened (there is no media to play)."""
        try:
            self.agent_action(user, action, reason="feature code")
            state = self.acd.agent_status(user).state.value
            self.respond(request, 480, reason=f"Agent {user} {state.replace('_', ' ')}")
        except (AcdError, ValueError) as exc:
            log.info("feature code %s from %s refused: %s", action, user, exc)
            self.respond(request, 403, reason="Feature code refused")

    def _answer_done(self, call: Call, task: asyncio.Task[str]) -> None:
        if task.cancelled() or call.state in (CallState.CONNECTED, CallState.ENDED):
            return
        if isinstance(task.exception(), ValueError):
            log.info("call %s: offer refused by the media anchor: %s", call.call_id,
                     task.exception())
            self._release(call, "media_refused", "system", status=488)

    def _refuse(self, request: SipRequest, caller: str, status: int, why: str,
                retry_after: int | None = None) -> None:
        self.counts["refused"] += 1
        extra: tuple[tuple[str, str], ...] = (("Warning", f'399 dispatchd "{_sanitise(why)}"'),)
        if retry_after is not None:
            extra += (("Retry-After", str(retry_after)),)
        self.respond(request, status, reason=None, extra=extra)
        self._emit(CallRefused(request.call_id, caller, _user(request.uri), "", status, why,
                               self.wall()))

    # -- the ACD ---------------------------------------------------------------

    def _pump_acd(self) -> None:
        while (action := self.acd.next_event()) is not None:
            try:
                self._acd_action(action)
            except Exception:
                log.exception("B2BUA bug handling %s", type(action).__name__)
        deadline = self.acd.get_timer()
        if self._acd_timer is not None:
            self._acd_timer.cancel()
            self._acd_timer = None
        if deadline is not None:
            self._acd_timer = asyncio.get_running_loop().call_at(deadline, self._acd_due)

    def pump_acd(self) -> None:
        """Carry out what the ACD decided (for the transfer helper's re-queue)."""
        self._pump_acd()

    def _acd_due(self) -> None:
        self._acd_timer = None
        self.acd.handle_timer(self.mono())
        self._pump_acd()

    def _acd_action(self, action: object) -> None:
        self.announcer.on_acd(action)
        if isinstance(action, RingAgent):
            call = self.calls.get(action.call_id)
            if call is not None:
                self._ring(call, action.agent_id)
        elif isinstance(action, StopRinging):
            call = self.calls.get(action.call_id)
            leg = call.agent_legs.get(action.agent_id) if call else None
            if leg is not None and leg is not call.connected:  # type: ignore[union-attr]
                self._stop_leg(leg)
        elif isinstance(action, Connect):
            call = self.calls.get(action.call_id)
            if call is not None and self.preemptor.is_reconnect(call):
                self.spawn(self.preemptor.reconnect(call, action), call)
            elif call is not None:
                self.spawn(self._connect(call, action), call)
        elif isinstance(action, PreemptionWanted):
            self.preemptor.wanted(action)
        elif isinstance(action, HangupAgentLeg):
            call = self.calls.get(action.call_id)
            leg = call.agent_legs.get(action.agent_id) if call else None
            if leg is not None:
                self._stop_leg(leg)
        elif isinstance(action, RejectCall):
            call = self.calls.get(action.call_id)
            if call is not None:
                call.in_acd = False
                self._release(call, "queue_full", "system", status=486)
        self._emit(action)

    # -- ringing agents --------------------------------------------------------

    def _ring(self, call: Call, agent_id: str) -> None:
        old = call.agent_legs.get(agent_id)
        if old is not None and old.live:
            self._stop_leg(old)
        leg = Leg(f"{call.call_id}:{agent_id}:{len(call.agent_legs)}", call, LegRole.AGENT,
                  Destination("UDP", "0.0.0.0", 0), agent_id=agent_id, state=LegState.LOOKUP)
        call.agent_legs[agent_id] = leg
        self._by_tag[leg.local_tag] = leg
        self.spawn(self._ring_task(call, leg), call)

    async def _ring_task(self, call: Call, leg: Leg) -> None:
        bindings = await self.registrar.lookup(self.registrar.aor_for(leg.agent_id), self.wall())
        if leg.state is not LegState.LOOKUP:
            return
        if not bindings:
            self._leg_failed(leg, 480, "not_registered")
            return
        binding = max(bindings, key=lambda b: (b.q or 0.0, b.registered_at))
        try:
            await self.anchor.join(call.call_id, leg.leg_id)
            sdp = await self.anchor.offer(leg.leg_id)
        except (ValueError, RuntimeError) as exc:
            log.warning("no offer for agent leg %s: %s", leg.leg_id, exc)
            self._leg_failed(leg, 500, "media")
            return
        if leg.state is not LegState.LOOKUP:
            return
        leg.peer = binding_destination(binding)
        extra: list[tuple[str, str]] = [("X-Dispatchd-Call", call.call_id),
                                        ("X-Dispatchd-Hotline", call.hotline)]
        if call.pai:
            extra.append(("P-Asserted-Identity", call.pai))
        extra += merge_option_tags(self.sessions.uac_headers() + self.reliable.uac_headers(None))
        name = f'"{call.caller_display}" ' if call.caller_display else ""
        request = self.new_invite(
            binding.contact, f"{name}<sip:{call.caller or 'anonymous'}@{self.settings.domain}>",
            f"<sip:{leg.agent_id}@{self.settings.domain}>", leg.local_tag, leg.peer,
            sdp.encode(), extra)
        leg.invite = request
        leg.state = LegState.TRYING
        leg.invite_key = self.send_request(request, leg.peer)
        self._client[leg.invite_key] = (leg, "invite", None)

    def _invite_response(self, leg: Leg, response: SipResponse) -> None:
        call = leg.call
        if response.status < 200:
            if response.status == 100:
                return
            if leg.state is LegState.TRYING:
                leg.state = LegState.EARLY
            if leg.cancel_wanted:
                self._send_cancel(leg)
                return
            self.reliable.on_provisional(leg, response)
            if leg.on_status is not None:
                leg.on_status(leg, response.status)
                return
            caller = call.caller_leg
            if (leg.role is LegRole.AGENT and caller is not None and caller.live
                    and not call.early_media  # the caller hears our hold prompt instead
                    and call.state is CallState.QUEUED and response.status in (180, 183)):
                self.reliable.provisional(caller, response.status)
            return
        if response.is_success:
            if leg.dialog is not None:
                self._send_ack(leg)
                return
            try:
                leg.dialog = Dialog.as_uac(leg.invite, response)  # type: ignore[arg-type]
            except (ValueError, SipError) as exc:
                log.info("leg %s: unusable 2xx: %s", leg.leg_id, exc)
                self._leg_failed(leg, 502, "bad_2xx")
                return
            leg.state = LegState.CONFIRMED
            leg.answer_sdp = response.body.decode("utf-8", "replace") or leg.answer_sdp
            self.reliable.confirmed(leg)
            if leg.role is not LegRole.MONITOR:
                self.sessions.start_uac(leg, response)
            if not leg.late_offer or leg.cancel_wanted or call.state is CallState.ENDED:
                self._send_ack(leg)
            if leg.cancel_wanted or call.state is CallState.ENDED:
                self._bye(leg, None)
                return
            if leg.on_status is not None:
                leg.on_status(leg, 200)
            elif leg.role is LegRole.PARTY:
                self.conferences.answered(leg)
            elif call.on_answer is not None:
                call.on_answer(leg)
            elif leg.role is LegRole.MONITOR:
                self.forcein.answered(leg)
            elif leg.role is LegRole.AGENT:
                try:
                    self.acd.agent_answered(call.call_id, leg.agent_id, self.mono())
                except AcdError:
                    self._bye(leg, None)
                self._pump_acd()
            return
        if leg.cancel_wanted or leg.state is LegState.ENDED:
            self._end_leg(leg)
            return
        retry = self.sessions.retry_422(leg, response) if response.status == 422 else None
        if retry is not None:
            self.track_invite(leg, retry)  # RFC 4028 7.4: again, with the peer's Min-SE
            return
        self._leg_failed(leg, response.status, f"sip_{response.status}")

    def _leg_failed(self, leg: Leg, status: int, cause: str) -> None:
        was_live = leg.live
        self._end_leg(leg)
        call = leg.call
        if leg.on_status is not None:
            if was_live:
                leg.on_status(leg, status)
            return
        if leg.role is LegRole.MONITOR:
            self.forcein.ended(leg, leg.actor, cause, step="failed")
            return
        if leg.role is LegRole.PARTY:
            if was_live:
                self.conferences.failed(leg, status, cause)
            return
        if not was_live or call.state is CallState.ENDED:
            return
        if call.on_answer is not None:
            self._release(call, cause, "system")
            return
        if leg.role is not LegRole.AGENT:
            return
        try:
            self.acd.agent_rejected(call.call_id, leg.agent_id, self.mono(), cause)
        except AcdError:
            log.exception("ACD refused a rejection of %s", leg.leg_id)
        self._pump_acd()

    def _stop_leg(self, leg: Leg) -> None:
        """CANCEL a ringing leg, or BYE an answered one."""
        if leg.state is LegState.LOOKUP:
            self._end_leg(leg)
        elif leg.state is LegState.TRYING:
            leg.cancel_wanted = True  # CANCEL only after a provisional (RFC 3261 9.1)
        elif leg.state is LegState.EARLY:
            leg.cancel_wanted = True
            self._send_cancel(leg)
        elif leg.state is LegState.CONFIRMED:
            self._bye(leg, None)

    def stop_leg(self, leg: Leg) -> None:
        """CANCEL a ringing leg, or BYE an answered one (for the force-in helper)."""
        self._stop_leg(leg)

    def register_leg(self, leg: Leg) -> None:
        """Index a leg created outside this module (call-back) by its tag."""
        self._by_tag[leg.local_tag] = leg

    def track_invite(self, leg: Leg, request: SipRequest) -> None:
        """Send a leg's INVITE and route its responses to :meth:`_invite_response`."""
        leg.invite = request
        leg.state = LegState.TRYING
        leg.invite_key = self.send_request(request, leg.peer)
        self._client[leg.invite_key] = (leg, "invite", None)

    def _send_cancel(self, leg: Leg) -> None:
        if leg.invite is None or leg.cancelled:
            return
        leg.cancelled = True
        key = self.send_request(build_cancel(leg.invite), leg.peer)
        self._client[key] = (leg, "cancel", None)

    # -- connecting ------------------------------------------------------------

    async def _connect(self, call: Call, action: Connect) -> None:
        leg = call.agent_legs[action.agent_id]
        caller = call.caller_leg
        assert caller is not None and call.answer_task is not None
        call.state = CallState.CONNECTING
        call.connected = leg
        try:
            await self.anchor.accept(leg.leg_id, leg.answer_sdp)
            async with asyncio.timeout(10.0):
                answer = await asyncio.shield(call.answer_task)
        except (ValueError, TimeoutError, asyncio.CancelledError) as exc:
            log.warning("call %s: media answer failed: %r", call.call_id, exc)
            self._release(call, "media_failed", "system", status=488)
            return
        early_answered = await self.reliable.before_final(caller)
        if call.state is not CallState.CONNECTING or not caller.live:
            return
        self.bridge_media(call, caller, leg)
        assert caller.invite is not None
        headers = self.answer_headers(caller.peer) + self.sessions.uas_headers(caller.invite)
        if early_answered:  # the reliable 183 completed offer/answer (RFC 3262 section 5)
            headers = [h for h in headers if h[0] != "Content-Type"]
        response = build_response(caller.invite, 200, to_tag=caller.local_tag,
                                  extra_headers=headers,
                                  body=b"" if early_answered else answer.encode())
        self.reliable.stop(caller)
        self.send_response(response)
        caller.dialog = Dialog.as_uas(caller.invite, response)
        caller.state = LegState.CONFIRMED
        self.sessions.start_uas(caller, caller.invite)
        self._retransmit(caller, response)
        call.state = CallState.CONNECTED
        call.answered_at = self.wall()
        self.counts["answered"] += 1
        self._emit(CallAnswered(call.call_id, leg.agent_id, call.queue, action.wait,
                                call.answered_at))

    def bridge_media(self, call: Call, caller: Leg, leg: Leg) -> None:
        """The caller and ``leg`` now talk: stop the caller's prompt, restart both legs'
        dead-media clocks and record the room (from answer to release; a no-op if it
        already records).  Used on connect and on a pre-empted caller's reconnect."""
        control = self.control()
        if control is None:
            return
        try:
            control.stop_prompt(caller.leg_id)
            control.expect_media(caller.leg_id)
            control.expect_media(leg.leg_id)
            control.record(call.call_id)
        except ValueError:
            log.info("call %s: a leg left the media engine while connecting", call.call_id)

    def _retransmit(self, leg: Leg, response: SipResponse) -> None:
        leg.retransmitter = AnswerRetransmitter(response, leg.peer, self.mono(), self.timers())
        self._arm_retransmit(leg)

    def _arm_retransmit(self, leg: Leg) -> None:
        rt = leg.retransmitter
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        if rt is None or rt.done:
            return
        deadline = rt.get_timer()
        if deadline is not None:
            leg.timer = asyncio.get_running_loop().call_at(deadline, self._retransmit_due, leg)

    def _retransmit_due(self, leg: Leg) -> None:
        rt = leg.retransmitter
        leg.timer = None
        if rt is None:
            return
        rt.handle_timer(self.mono())
        while (event := rt.next_event()) is not None:
            if isinstance(event, SendMessage):
                self.send_stateless(event.message, event.destination)
            else:
                log.info("leg %s: no ACK for our 2xx; releasing", leg.leg_id)
                self._release(leg.call, "no_ack", "system")
        self._arm_retransmit(leg)

    def _on_ack(self, request: SipRequest) -> None:
        leg = self._by_tag.get(request.to.tag or "")
        if leg is not None and leg.retransmitter is not None:
            leg.retransmitter.ack_received(self.mono())
            if leg.timer is not None:
                leg.timer.cancel()
                leg.timer = None

    # -- CANCEL, BYE and in-dialog requests ----------------------------------

    def _on_cancel(self, event: DeliverRequest) -> None:
        leg = self._by_invite.get(event.cancels) if event.cancels else None
        if leg is None or leg.state in (LegState.CONFIRMED, LegState.ENDED):
            self.respond(event.request, 481 if leg is None else 200)
            return
        self.respond(event.request, 200)
        leg.cancelled = True
        self._release(leg.call, "caller_cancelled", "caller", status=487)

    def _in_dialog(self, event: DeliverRequest) -> None:
        request = event.request
        leg = self._by_tag.get(request.to.tag or "")
        if leg is not None and leg.live and request.method == "PRACK":
            self.reliable.on_prack(leg, request)
            return
        if leg is None or leg.dialog is None or not leg.live:
            self.respond(request, 481)
            return
        try:
            leg.dialog.on_request(request)
        except DialogError as exc:
            self.respond(request, exc.status, to_tag=leg.local_tag)
            return
        method = request.method
        if method == "UPDATE" and not request.body and leg.session is not None:
            self.sessions.answer_bare_update(leg, request)
            return
        if method == "BYE" and self.transfers.agent_left(leg):
            self.respond(request, 200, to_tag=leg.local_tag)  # the caller stays
            self._end_leg(leg)
            return
        if method == "BYE" and leg.role is LegRole.MONITOR:
            self.respond(request, 200, to_tag=leg.local_tag)
            self.forcein.ended(leg, leg.actor, "supervisor hung up")
            self._end_leg(leg)
        elif method == "BYE" and leg.role is LegRole.PARTY:
            self.respond(request, 200, to_tag=leg.local_tag)
            self.conferences.hung_up(leg)
            self._end_leg(leg)
        elif method in ("INVITE", "UPDATE") and request.body and self.control() is not None:
            self.spawn(self._answer_locally(leg, request), leg.call)
        elif leg.role is LegRole.MONITOR and method != "REFER":
            self.respond(request, 200 if method == "INFO" else 488, to_tag=leg.local_tag)
        elif method == "BYE":
            self.respond(request, 200, to_tag=leg.local_tag)
            self._end_leg(leg)  # ends it and frees its media (its ports leaked before)
            by = "caller" if leg.role is LegRole.CALLER else "agent"
            self._release(leg.call, f"{by}_hangup", by)
        elif method == "REFER":
            self.transfers.on_refer(leg, request)
        elif method == "INFO" and self.info_hook is not None and self.info_hook(
                leg.leg_id, request.headers.get("Content-Type") or "", request.body):
            self.respond(request, 200, to_tag=leg.local_tag)
        elif method in _RELAYED:
            other = leg.call.other(leg)
            if other is None or other.dialog is None or not other.live:
                self.respond(request, 491 if method != "INFO" else 200, to_tag=leg.local_tag)
                return
            self._relay(leg, request, other)
        else:
            self.respond(request, 405, to_tag=leg.local_tag,
                         extra=(("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE, INFO, REFER, "
                                 "OPTIONS, PRACK"),))

    async def _answer_locally(self, leg: Leg, request: SipRequest) -> None:
        """A re-INVITE/UPDATE with SDP on an anchored call: our media answers it (hold,
        resume, a new address); the other side's media is ours and does not change."""
        try:
            answer = await self.anchor.answer(leg.leg_id, request.body.decode("utf-8", "replace"))
        except ValueError as exc:
            log.info("leg %s: re-offer refused: %s", leg.leg_id, exc)
            self.respond(request, 488, to_tag=leg.local_tag)
            return
        headers = self.answer_headers(leg.peer) + self.sessions.refresh_received(leg, request)
        reply = build_response(request, 200, to_tag=leg.local_tag,
                               extra_headers=headers, body=answer.encode())
        self.send_response(reply)
        if request.method == "INVITE":
            self._retransmit(leg, reply)

    def media_dead(self, leg_id: str, silent_s: float) -> bool:
        """The media engine heard no RTP from ``leg_id`` for ``silent_s`` s: release the
        call with a Reason header (a supervisor's leg alone is hung up).  False if the
        leg is not part of a connected call (a queued caller's phone may stay silent)."""
        call = self.calls.get(leg_id.split(":", 1)[0])
        leg = next((x for x in call.legs() if x.leg_id == leg_id and x.live),
                   None) if call is not None else None
        if call is None or leg is None:
            return False
        if leg.role is LegRole.PARTY:
            if leg.state is not LegState.CONFIRMED:
                return False
            self._emit(CallMediaDead(call.call_id, leg_id, silent_s, self.wall()))
            self._bye(leg, f'Q.850;cause=41;text="no RTP for {silent_s:.0f} s"')
            return True
        if leg.role is LegRole.MONITOR:
            if leg.state is not LegState.CONFIRMED:
                return False
            self._emit(CallMediaDead(call.call_id, leg_id, silent_s, self.wall()))
            self.forcein.ended(leg, "system", "dead media")
            self._bye(leg, f'Q.850;cause=41;text="no RTP for {silent_s:.0f} s"')
            return True
        if call.state is not CallState.CONNECTED or leg not in (call.caller_leg, call.connected):
            return False
        log.warning("call %s: no RTP from %s for %.0f s; releasing", call.call_id, leg_id,
                    silent_s)
        self._emit(CallMediaDead(call.call_id, leg_id, silent_s, self.wall()))
        self._release(call, "dead_media", "system",
                      reason=f'Q.850;cause=41;text="no RTP for {silent_s:.0f} s"')
        return True

    def _relay(self, origin: Leg, request: SipRequest, target: Leg) -> None:
        assert target.dialog is not None
        extra: list[tuple[str, str]] = []
        for name in ("Content-Type",):  # session timers are per leg, not relayed
            value = request.headers.get(name)
            if value is not None:
                extra.append((name, value))
        relayed = target.dialog.create_request(
            request.method, self.via(target.peer), contact=self.contact(target.peer),
            extra_headers=tuple(extra), body=request.body)
        key = self.send_request(relayed, target.peer)
        self._client[key] = (target, "relay", (origin, request))

    def _relay_response(self, target: Leg, response: SipResponse,
                        origin: tuple[Leg, SipRequest]) -> None:
        leg, request = origin
        if target.dialog is not None:
            target.dialog.on_response(response)
        extra: list[tuple[str, str]] = []
        ctype = response.headers.get("Content-Type")
        if ctype is not None and response.body:
            extra.append(("Content-Type", ctype))
        if request.method == "INVITE" and response.status < 300:
            extra.extend(self.answer_headers(leg.peer))
        if request.method in ("INVITE", "UPDATE") and response.is_success:
            extra.extend(self.sessions.refresh_received(leg, request))
        if request.method == "INVITE" and response.is_success and target.dialog is not None:
            ack = target.dialog.create_ack(self.via(target.peer))
            self.send_stateless(ack, target.peer)
        reply = build_response(request, response.status, response.reason, extra,
                               to_tag=leg.local_tag, body=response.body)
        self.send_response(reply)
        if request.method == "INVITE" and response.is_success:
            self._retransmit(leg, reply)

    # -- release ---------------------------------------------------------------

    def release_call(self, call_id: str, reason: str, actor: str) -> bool:
        """Supervisor force-release (强拆): BYE both legs with a Reason header."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        text = _sanitise(f"force-released by {actor}: {reason}")
        self.counts["force_released"] += 1
        self._release(call, "force_released", actor,
                      reason=f'Q.850;cause=16;text="{text}"', status=480)
        return True

    def release_with_reason(self, call: Call, cause: str, reason: str | None) -> None:
        """End ``call`` as the system with a Reason header (for the pre-emption helper)."""
        self._release(call, cause, "system", reason=reason)

    def bye_leg(self, leg: Leg, reason: str | None) -> None:
        """BYE one leg with a Reason header (for the pre-emption helper)."""
        self._bye(leg, reason)

    def _release(self, call: Call, cause: str, by: str, *, reason: str | None = None,
                 status: int = 480) -> None:
        """End every leg of ``call`` and tell the ACD; idempotent."""
        if call.state is CallState.ENDED:
            return
        answered = call.state is CallState.CONNECTED
        call.state = CallState.ENDED
        call.cause = cause
        call.released_at = self.wall()
        extra = (("Reason", reason),) if reason else ()
        for leg in call.legs():
            if not leg.live:
                continue
            if leg.role is LegRole.MONITOR:
                self.forcein.ended(leg, by, f"call released: {cause}")
            if leg.role is LegRole.CALLER and leg.dialog is None:
                self.respond(leg.invite, status, to_tag=leg.local_tag, extra=extra)
                self._end_leg(leg)
            elif leg.dialog is not None:
                self._bye(leg, reason)
            else:
                self._stop_leg(leg)
        if call.answer_task is not None and not call.answer_task.done():
            call.answer_task.cancel()
        self.transfers.call_ended(call)
        self._emit(CallReleased(call.call_id, cause, by, call.released_at))
        if call.in_acd:
            call.in_acd = False
            try:
                if answered or call.connected is not None:
                    self.acd.call_ended(call.call_id, self.mono(), cause)
                else:
                    self.acd.call_abandoned(call.call_id, self.mono(), cause)
            except AcdError:
                log.exception("ACD refused the release of %s", call.call_id)
            self._pump_acd()
        if not answered:
            self.counts["abandoned" if by == "caller" else "released"] += 1
        else:
            self.counts["released"] += 1
        if call.trunk:
            self.trunk_calls[call.trunk] = max(0, self.trunk_calls.get(call.trunk, 1) - 1)
        asyncio.get_running_loop().call_later(32.0, self._forget, call)
        self.calls.pop(call.call_id, None)

    def _bye(self, leg: Leg, reason: str | None) -> None:
        if leg.dialog is None or not leg.live:
            self._end_leg(leg)
            return
        extra = (("Reason", reason),) if reason else ()
        try:
            bye = leg.dialog.create_request("BYE", self.via(leg.peer), extra_headers=extra)
        except DialogError:
            self._end_leg(leg)
            return
        key = self.send_request(bye, leg.peer)
        self._client[key] = (leg, "bye", None)
        self._end_leg(leg)

    def _end_leg(self, leg: Leg) -> None:
        if leg.state is LegState.ENDED and leg.timer is None:
            return
        leg.state = LegState.ENDED
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        leg.retransmitter = None
        self.sessions.stop(leg)
        self.reliable.stop(leg)
        if leg.role is LegRole.PARTY:
            self.conferences.leg_ended(leg)
        elif leg.role is LegRole.OUTBOUND:
            self.transfers.leg_ended(leg)  # a transfer leg's trunk channel is free again
        self.spawn(self.anchor.release(leg.leg_id))

    def _forget(self, call: Call) -> None:
        """Drop the tag and transaction indexes of a call ended a while ago."""
        for leg in call.legs():
            self._by_tag.pop(leg.local_tag, None)
            if leg.invite_key is not None:
                self._by_invite.pop(leg.invite_key, None)

    # -- hooks for the collaborators (sessions, prack, transfer) -------------

    def track_client(self, key: TransactionKey, leg: Leg, purpose: str) -> None:
        """Route the responses of a client transaction about ``leg`` by ``purpose``."""
        self._client[key] = (leg, purpose, None)

    def session_ended(self, leg: Leg, cause: str) -> None:
        """A leg's session expired or its refresh failed: release its call (BYE with
        a Reason header); a supervisor's leg alone is hung up."""
        call = leg.call
        if leg.role is LegRole.MONITOR:
            self.forcein.ended(leg, "system", cause)
            self._bye(leg, EXPIRED_REASON)
            return
        if cause == "dead_call":
            leg.state = LegState.ENDED  # it does not answer: no BYE to it
        self._release(call, cause, "system", reason=EXPIRED_REASON)

    def reliable_failed(self, leg: Leg) -> None:
        """No PRACK for our reliable 18x: reject the INVITE (504) and end the call."""
        if leg.call.state is not CallState.ENDED and leg.dialog is None:
            self._release(leg.call, "no_prack", "system", status=504)

    def transfer_abandoned(self, call: Call) -> None:
        """A transfer failed after the call taker had left: release the caller (the
        CDR says ``transfer_failed``; the number is on record for a call-back)."""
        self._release(call, "transfer_failed", "system",
                      reason='Q.850;cause=31;text="transfer failed"')

    def transferred(self, call: Call, agent: Leg, target: str, by: str) -> None:
        """A blind transfer connected: the ACD frees the call taker (wrap-up)."""
        self._emit(CallTransferred(call.call_id, agent.agent_id, target, self.wall(), by))
        if call.in_acd:
            call.in_acd = False
            try:
                self.acd.call_ended(call.call_id, self.mono(), "transferred")
            except AcdError:
                log.exception("ACD refused the transfer of %s", call.call_id)
            self._pump_acd()
