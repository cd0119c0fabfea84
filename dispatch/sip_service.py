"""The SIP service of the daemon: endpoint, registrar, B2BUA, trunks, CDRs and voice reports.

Composition (all on the daemon loop)::

    SipEndpoint (UDP/TCP/TLS) ── MethodRouter ── REGISTER ──▶ Registrar (SQL stores)
                                       └──── everything else ─▶ B2bua ─▶ AcdEngine, Router,
                                                                         MediaAnchor
    B2bua/ACD/registrar events ──▶ EventHub (consoles) and the record writer

The :class:`~dispatch.call_records.CallRecorder` writes CDRs, audit rows and
voice reports in batches off the call path, so the loop never waits on the
database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dispatch.audit import AuditTrail
from dispatch.call_records import RECORDS_FLUSH_S, CallRecorder
from dispatch.config import SipSettings
from dispatch.incidents import IncidentService
from dispatch.models import CallRecordRow
from dispatch.reports import ReportService
from dispatch.sip_store import CachedBindingStore, SqlBindingStore, SqlCredentialStore
from dispatch.storage import Database
from telephony.acd.engine import AcdEngine, AcdError
from telephony.acd.events import AgentState
from telephony.b2bua.anchor import MediaAnchor, PassThroughAnchor
from telephony.b2bua.config import TelephonySettings
from telephony.b2bua.core import B2bua, B2buaSettings
from telephony.b2bua.overload import OverloadSettings
from telephony.b2bua.trunks import TrunkManager
from telephony.media.anchor import (
    DeadMedia,
    DtmfReceived,
    MediaCallback,
    MediaEvent,
    RecordingFailed,
    RecordingFinished,
)
from telephony.registrar.core import Registrar, RegistrarSettings
from telephony.registrar.events import BindingAdded
from telephony.routing import Router
from telephony.sip.message import SipLimits
from telephony.sip.proxied import ProxyTrust, parse_networks
from telephony.sip.transport import ListenAddress, MethodRouter, SipEndpoint, TransportSettings

log = logging.getLogger(__name__)

SECRET_ENV = "DISPATCHD_SIP_SECRET"
RECORD_QUEUE = 10_000


def _ts(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)


def nonce_secret(settings: SipSettings) -> bytes:
    """The registrar's nonce key: environment, file, else random for this run."""
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode()
    path = settings.registrar.secret_file
    if path:
        return Path(path).read_bytes().strip()
    return secrets.token_bytes(32)


class SipService:
    """The ``sip`` service: start/stop/health for the whole SIP side."""

    name = "sip"
    #: Seconds the daemon grants :meth:`stop`: BYE every call, seal recordings (10 s),
    #: then flush every queued CDR and audit row (:data:`RECORDS_FLUSH_S`).
    stop_timeout = 15.0 + RECORDS_FLUSH_S

    def __init__(self, settings: SipSettings, telephony: TelephonySettings, db: Database,
                 audit: AuditTrail, reports: ReportService,
                 publish: Callable[[object], object], clock: Callable[[], float],
                 anchor: MediaAnchor | None = None, *,
                 media_events: Callable[[MediaCallback], object] | None = None,
                 hold_prompt: str | None = None,
                 incidents: IncidentService | None = None,
                 tones: tuple[str, str] | None = None) -> None:
        """Compose the parts; nothing listens until :meth:`start`.

        ``anchor`` is the media engine when ``[media]`` is on; ``media_events``
        subscribes to its events (dead media, recordings); ``hold_prompt`` is looped
        to queued callers; ``incidents`` gets a link to each finished recording.
        """
        self.settings = settings
        self.db = db
        self.audit = audit
        self.reports = reports
        self.publish = publish
        self.clock = clock
        reg = settings.registrar
        realm = reg.realm or settings.domain
        self.realm = realm
        self.credentials = SqlCredentialStore(db, clock)
        self.bindings = CachedBindingStore(SqlBindingStore(db))
        self.registrar = Registrar(
            RegistrarSettings(
                realm=realm, domain=settings.domain, default_expires=reg.default_expires,
                min_expires=reg.min_expires, max_expires=reg.max_expires,
                max_bindings=reg.max_bindings, nonce_ttl=reg.nonce_ttl,
                algorithms=tuple(reg.algorithms), rate=reg.rate, burst=reg.burst,
                max_failures=reg.max_failures, failure_window=reg.failure_window,
                block_for=reg.block_for, exempt_networks=reg.exempt_networks,
                check_digest_uri=reg.check_digest_uri, require_qop=reg.require_qop,
                user_agent=settings.user_agent),
            nonce_secret(settings), self.bindings, self.credentials,
            on_event=self._registrar_event, clock=clock)
        self.acd = AcdEngine(telephony.acd)
        self.b2bua = B2bua(
            B2buaSettings(settings.domain, settings.max_calls, float(settings.session_expires),
                          settings.ringback_180, settings.user_agent,
                          hold_prompt=hold_prompt or None, min_se=settings.min_se,
                          overload=OverloadSettings(
                              settings.overload.lag_ms / 1000, settings.overload.all_lag_ms / 1000,
                              settings.overload.keep_priority, settings.overload.hold_s,
                              settings.overload.retry_after_s)),
            self.registrar, Router(telephony.routing), self.acd, telephony.trunks,
            anchor or PassThroughAnchor(), on_event=self._call_event, wall_clock=clock)
        self.trunks = TrunkManager(telephony.trunks, on_event=self._call_event,
                                   user_agent=settings.user_agent, domain=settings.domain)
        self.endpoint = SipEndpoint(TransportSettings(
            listen=tuple(ListenAddress(x.transport.upper(), x.host, x.port)
                         for x in settings.listen),
            limits=SipLimits(max_message=settings.max_message, max_headers=settings.max_headers,
                             max_body=settings.max_message),
            max_connections=settings.max_connections, tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
            allow=("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "UPDATE", "INFO",
                   "REFER", "PRACK"),
            user_agent=settings.user_agent))
        self.endpoint.proxy_trust = ProxyTrust(parse_networks(settings.proxies))
        router = MethodRouter(self.endpoint, fallback=self.b2bua)
        router.route("REGISTER", self.registrar)
        self.endpoint.user = router
        self.registrar.attach(self.endpoint)
        self.b2bua.attach(self.endpoint, settings.advertise)
        self.trunks.attach(self.endpoint, settings.advertise)
        self.trunks.on_response_hook(self.b2bua)
        self.b2bua.transfers.best = self.trunks.best
        self.b2bua.transfers.ring_timeout = float(settings.transfer_ring_timeout)
        self.b2bua.conferences.trunk_source = self.trunks.best
        if tones is not None:
            self.b2bua.conferences.join_tone, self.b2bua.conferences.leave_tone = tones
        self.recorder = CallRecorder(db, audit, reports, clock, incidents=incidents,
                                     linger_s=settings.records_linger_ms / 1000)
        if media_events is not None:
            media_events(self._media_event)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Listen, start the registrar sweeper, the B2BUA, trunks and the writer."""
        await self.endpoint.start()
        await self.registrar.start()
        await self.b2bua.start()
        await self.trunks.start()
        await self.recorder.start()
        for bound in self.endpoint.bound:
            log.info("sip listening", extra={"transport": bound.transport, "host": bound.host,
                                             "port": bound.port})

    async def stop(self) -> None:
        """BYE every call, stop trunks, flush records, close sockets."""
        await self.b2bua.stop()
        await self.trunks.stop()
        await asyncio.sleep(0)  # let the BYEs go out before the sockets close
        await self.recorder.stop()
        await self.registrar.stop()
        await self.endpoint.stop()

    def health(self) -> dict[str, Any]:
        """Endpoint, registrar, calls, trunks and the record writer."""
        return {"endpoint": self.endpoint.health(), "registrar": self.registrar.health(),
                "calls": self.b2bua.health(), "trunks": self.trunks.health(),
                "records": self.recorder.health()}

    # -- events ----------------------------------------------------------------

    def _registrar_event(self, event: object) -> None:
        self.publish(event)
        if isinstance(event, BindingAdded) and self.settings.agent_login_on_register:
            self._login_on_register(event.binding.aor)
        self.recorder.enqueue(event)

    def _login_on_register(self, aor: str) -> None:
        """A configured agent's phone registered: log the agent in, ready."""
        agent_id = aor.removeprefix("sip:").split("@", 1)[0]
        try:
            status = self.acd.agent_status(agent_id)
        except AcdError:
            return  # a phone that is not a call taker's
        if status.state is AgentState.LOGGED_OUT:
            self.b2bua.agent_action(agent_id, "login", reason="registered")

    def _media_event(self, event: MediaEvent) -> None:
        """Dead media releases the call; a supervisor's *1/*2/*3 switch their mode;
        recordings go on the CDR and the incident."""
        if isinstance(event, DeadMedia):
            self.b2bua.media_dead(event.leg_id, event.silent_s)
        elif isinstance(event, DtmfReceived):
            self.b2bua.forcein.dtmf(event.leg_id, event.digit)
        elif isinstance(event, RecordingFinished | RecordingFailed):
            self.recorder.enqueue(event)

    def _call_event(self, event: object) -> None:
        self.publish(event)
        self.recorder.enqueue(event)

    # -- operations for the API ------------------------------------------------

    async def call_back(self, number: str, agent_id: str, actor: str) -> str:
        """Ring the agent, then call ``number`` through the best trunk; audited."""
        from telephony.b2bua.callback import call_back

        call_id = await call_back(self.b2bua, number, agent_id, self.trunks.best())
        async with self.db.session() as s:
            self.audit.record(s, actor=actor, action="call.callback", subject=f"call:{call_id}",
                              details={"number": number, "agent": agent_id})
        return call_id

    async def transfer(self, call_id: str, target: str, actor: str) -> None:
        """Blind-transfer a connected call to ``target`` (TransferError); audited."""
        await self.b2bua.transfers.start(call_id, target, actor)
        async with self.db.session() as s:
            self.audit.record(s, actor=actor, action="call.transfer_requested",
                              subject=f"call:{call_id}", details={"target": target})

    async def force_release(self, call_id: str, reason: str, actor: str) -> bool:
        """强拆: BYE both legs with a Reason header; audited with who and why."""
        done = self.b2bua.release_call(call_id, reason, actor)
        if done:
            async with self.db.session() as s:
                self.audit.record(s, actor=actor, action="call.force_released",
                                  subject=f"call:{call_id}", details={"reason": reason})
        return done

    async def monitor(self, call_id: str, account: str, mode: str, actor: str) -> str:
        """强插: ring ``account``'s phone into the call in ``mode``; MonitorError if not."""
        return await self.b2bua.forcein.start(call_id, account, mode, actor)

    def monitor_mode(self, call_id: str, leg_id: str, mode: str, actor: str) -> None:
        """Switch a supervisor leg between listen, whisper and barge."""
        self.b2bua.forcein.change(call_id, leg_id, mode, actor)

    def monitor_leave(self, call_id: str, leg_id: str, actor: str) -> None:
        """Hang up a supervisor leg."""
        self.b2bua.forcein.leave(call_id, leg_id, actor)

    def monitors(self, call_id: str) -> list[dict[str, str]]:
        """The live supervisor legs of a call."""
        call = self.b2bua.calls.get(call_id)
        if call is None:
            return []
        return [{"leg": leg.leg_id, "account": leg.agent_id, "mode": leg.mode,
                 "supervisor": leg.actor, "state": leg.state.value}
                for leg in call.monitors.values() if leg.live]

    async def call_record(self, call_id: str) -> CallRecordRow | None:
        """The stored CDR of a call."""
        async with self.db.session() as s:
            return await s.scalar(select(CallRecordRow).where(CallRecordRow.id == call_id))
