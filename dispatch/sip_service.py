"""The SIP service of the daemon: endpoint, registrar, B2BUA, trunks, CDRs and voice reports.

Composition (all on the daemon loop)::

    SipEndpoint (UDP/TCP/TLS) ── MethodRouter ── REGISTER ──▶ Registrar (SQL stores)
                                       └──── everything else ─▶ B2bua ─▶ AcdEngine, Router,
                                                                         MediaAnchor
    B2bua/ACD/registrar events ──▶ EventHub (consoles) and the record writer

The record writer is one task fed by a bounded queue, so the loop never waits
on the database: it writes the CDR row (``call_records``) when a call is
offered and completes it as it is answered and released, writes an audit row
for each step, and files every answered or abandoned call as a voice
:class:`~dispatch.reports.NewReport` (caller number, hotline, queue, times;
``source_ref`` is the call id, so a report is never filed twice) and links
the report to the CDR.
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
from dispatch.config import SipSettings
from dispatch.models import CallRecordRow
from dispatch.reports import NewReport, ReportService
from dispatch.sip_store import SqlBindingStore, SqlCredentialStore
from dispatch.storage import Database
from intake.model import Channel
from telephony.acd.engine import AcdEngine, AcdError
from telephony.acd.events import Abandoned, AgentState, AgentStateChanged, CallFinished
from telephony.b2bua.anchor import MediaAnchor, PassThroughAnchor
from telephony.b2bua.config import TelephonySettings
from telephony.b2bua.core import B2bua, B2buaSettings
from telephony.b2bua.events import CallAnswered, CallOffered, CallReleased
from telephony.b2bua.trunks import TrunkManager
from telephony.registrar.core import Registrar, RegistrarSettings
from telephony.registrar.events import AuthFailed, BindingAdded, SourceBlocked
from telephony.routing import Router
from telephony.sip.message import SipLimits
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

    def __init__(self, settings: SipSettings, telephony: TelephonySettings, db: Database,
                 audit: AuditTrail, reports: ReportService,
                 publish: Callable[[object], object], clock: Callable[[], float],
                 anchor: MediaAnchor | None = None) -> None:
        """Compose the parts; nothing listens until :meth:`start`."""
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
        self.bindings = SqlBindingStore(db)
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
                          settings.ringback_180, settings.user_agent),
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
                   "REFER"),
            user_agent=settings.user_agent))
        router = MethodRouter(self.endpoint, fallback=self.b2bua)
        router.route("REGISTER", self.registrar)
        self.endpoint.user = router
        self.registrar.attach(self.endpoint)
        self.b2bua.attach(self.endpoint, settings.advertise)
        self.trunks.attach(self.endpoint, settings.advertise)
        self.trunks.on_response_hook(self.b2bua)
        self._records: asyncio.Queue[object] = asyncio.Queue(RECORD_QUEUE)
        self._writer: asyncio.Task[None] | None = None
        self._offered: dict[str, CallOffered] = {}
        self._released: dict[str, CallReleased] = {}
        self.record_errors = 0
        self.dropped_records = 0

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Listen, start the registrar sweeper, the B2BUA, trunks and the writer."""
        await self.endpoint.start()
        await self.registrar.start()
        await self.b2bua.start()
        await self.trunks.start()
        self._writer = asyncio.ensure_future(self._write_loop())
        for bound in self.endpoint.bound:
            log.info("sip listening", extra={"transport": bound.transport, "host": bound.host,
                                             "port": bound.port})

    async def stop(self) -> None:
        """BYE every call, stop trunks, flush records, close sockets."""
        await self.b2bua.stop()
        await self.trunks.stop()
        await asyncio.sleep(0)  # let the BYEs go out before the sockets close
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._records.join(), 3.0)
            except TimeoutError:
                log.error("sip: call records not flushed at stop",
                          extra={"pending": self._records.qsize()})
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.registrar.stop()
        await self.endpoint.stop()

    def health(self) -> dict[str, Any]:
        """Endpoint, registrar, calls, trunks and the record writer."""
        return {"endpoint": self.endpoint.health(), "registrar": self.registrar.health(),
                "calls": self.b2bua.health(), "trunks": self.trunks.health(),
                "record_queue": self._records.qsize(), "record_errors": self.record_errors}

    # -- events ----------------------------------------------------------------

    def _registrar_event(self, event: object) -> None:
        self.publish(event)
        if isinstance(event, BindingAdded) and self.settings.agent_login_on_register:
            self._login_on_register(event.binding.aor)
        if isinstance(event, AuthFailed | SourceBlocked):
            self._enqueue(event)

    def _login_on_register(self, aor: str) -> None:
        """A configured agent's phone registered: log the agent in, ready."""
        agent_id = aor.removeprefix("sip:").split("@", 1)[0]
        try:
            status = self.acd.agent_status(agent_id)
        except AcdError:
            return  # a phone that is not a call taker's
        if status.state is AgentState.LOGGED_OUT:
            self.b2bua.agent_action(agent_id, "login", reason="registered")

    def _call_event(self, event: object) -> None:
        self.publish(event)
        if isinstance(event, CallOffered | CallAnswered | CallReleased | Abandoned
                      | CallFinished | AgentStateChanged):
            self._enqueue(event)

    def _enqueue(self, event: object) -> None:
        try:
            self._records.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_records += 1
            log.error("sip: record queue full, event dropped",
                      extra={"event": type(event).__name__})

    async def _write_loop(self) -> None:
        while True:
            event = await self._records.get()
            try:
                await self._write(event)
            except Exception:
                self.record_errors += 1
                log.exception("sip: could not store %s", type(event).__name__)
            finally:
                self._records.task_done()

    async def _write(self, event: object) -> None:
        if isinstance(event, CallOffered):
            await self._offered_row(event)
        elif isinstance(event, CallAnswered):
            await self._answered(event)
        elif isinstance(event, Abandoned):
            await self._abandoned(event)
        elif isinstance(event, CallReleased):
            self._released[event.call_id] = event
            offered = self._offered.get(event.call_id)
            if offered is not None and offered.route == "callback":
                await self._callback_done(event)
        elif isinstance(event, CallFinished):
            await self._finished(event)
        elif isinstance(event, AgentStateChanged):
            async with self.db.session() as s:
                self.audit.record(s, actor=f"agent:{event.agent_id}", action="agent.state",
                                  subject=f"agent:{event.agent_id}",
                                  details={"from": event.old.value, "to": event.new.value,
                                           "reason": event.reason})
        elif isinstance(event, AuthFailed | SourceBlocked):
            async with self.db.session() as s:
                action = "sip.auth_failed" if isinstance(event, AuthFailed) else "sip.blocked"
                self.audit.record(s, actor="system", action=action,
                                  subject=f"source:{event.source}",
                                  details={"event": type(event).__name__})

    async def _offered_row(self, e: CallOffered) -> None:
        self._offered[e.call_id] = e
        async with self.db.session() as s:
            s.add(CallRecordRow(
                id=e.call_id, sip_call_id=e.sip_call_id[:200], caller=e.caller, called=e.called,
                hotline=e.hotline, queue=e.queue, trunk=e.trunk, priority=e.priority,
                agent_id="", outcome=None, cause="", released_by="",
                offered_at=_ts(e.at), timeline=[]))
            self.audit.record(s, actor="system", action="call.offered", subject=f"call:{e.call_id}",
                              details={"caller": e.caller, "hotline": e.hotline,
                                       "queue": e.queue, "trunk": e.trunk, "route": e.route})

    async def _file_report(self, call_id: str, text: str, extra: dict[str, str]) -> str | None:
        offered = self._offered.get(call_id)
        if offered is None:
            return None
        fields = {"call_id": call_id, "hotline": offered.hotline, "queue": offered.queue,
                  "trunk": offered.trunk, "called": offered.called, **extra}
        new = NewReport(Channel.VOICE, text, _ts(offered.at) or dt.datetime.now(dt.UTC),
                        caller=offered.caller, fields=tuple(sorted(fields.items())),
                        source_ref=call_id)
        done = await self.reports.submit(new, actor="sip")
        async with self.db.session() as s:
            row = await s.get(CallRecordRow, call_id)
            if row is not None:
                row.report_id = done.report_id
        return done.report_id

    async def _answered(self, e: CallAnswered) -> None:
        offered = self._offered.get(e.call_id)
        async with self.db.session() as s:
            row = await s.get(CallRecordRow, e.call_id)
            if row is not None:
                row.answered_at = _ts(e.at)
                row.agent_id = e.agent_id
            self.audit.record(s, actor=f"agent:{e.agent_id}", action="call.answered",
                              subject=f"call:{e.call_id}",
                              details={"queue": e.queue, "wait_s": round(e.wait, 3)})
        if offered is not None and offered.route != "callback":
            text = (f"Voice call to {offered.hotline} from {offered.caller or 'unknown'}, "
                    f"answered by {e.agent_id} after {e.wait:.0f} s")
            await self._file_report(e.call_id, text, {"agent": e.agent_id,
                                                      "wait_s": f"{e.wait:.1f}",
                                                      "outcome": "answered"})

    async def _abandoned(self, e: Abandoned) -> None:
        entry = e.entry
        text = (f"Abandoned voice call to {entry.hotline} from {entry.caller or 'unknown'} "
                f"after {entry.wait:.0f} s waiting: call back")
        await self._file_report(entry.call_id, text, {"wait_s": f"{entry.wait:.1f}",
                                                      "outcome": "abandoned"})

    async def _finished(self, e: CallFinished) -> None:
        record = e.record
        released = self._released.pop(record.call_id, None)
        self._offered.pop(record.call_id, None)
        async with self.db.session() as s:
            row = await s.get(CallRecordRow, record.call_id)
            if row is None:
                return
            row.outcome = record.outcome.value if record.outcome else None
            row.cause = (released.cause if released else record.cause)[:64]
            row.released_by = (released.by if released else "")[:64]
            row.released_at = _ts(released.at if released else self.clock())
            row.queue = record.queue or row.queue
            row.agent_id = record.agent_id or row.agent_id
            row.timeline = [{"kind": t.kind.value, "queue": t.queue, "agent": t.agent_id,
                             "cause": t.cause, "after_s": round(t.at - record.arrived, 3)}
                            for t in record.timeline]
            self.audit.record(s, actor=released.by if released else "system",
                              action="call.released", subject=f"call:{record.call_id}",
                              details={"outcome": row.outcome, "cause": row.cause})

    async def _callback_done(self, e: CallReleased) -> None:
        """A call-back never enters the ACD: its CDR is completed on release."""
        self._offered.pop(e.call_id, None)
        self._released.pop(e.call_id, None)
        async with self.db.session() as s:
            row = await s.get(CallRecordRow, e.call_id)
            if row is None:
                return
            row.outcome = "answered" if row.answered_at is not None else "failed"
            row.cause, row.released_by, row.released_at = e.cause[:64], e.by[:64], _ts(e.at)
            self.audit.record(s, actor=e.by, action="call.released",
                              subject=f"call:{e.call_id}",
                              details={"outcome": row.outcome, "cause": row.cause})

    # -- operations for the API ------------------------------------------------

    async def call_back(self, number: str, agent_id: str, actor: str) -> str:
        """Ring the agent, then call ``number`` through the best trunk; audited."""
        from telephony.b2bua.callback import call_back

        call_id = await call_back(self.b2bua, number, agent_id, self.trunks.best())
        async with self.db.session() as s:
            self.audit.record(s, actor=actor, action="call.callback", subject=f"call:{call_id}",
                              details={"number": number, "agent": agent_id})
        return call_id

    async def force_release(self, call_id: str, reason: str, actor: str) -> bool:
        """强拆: BYE both legs with a Reason header; audited with who and why."""
        done = self.b2bua.release_call(call_id, reason, actor)
        if done:
            async with self.db.session() as s:
                self.audit.record(s, actor=actor, action="call.force_released",
                                  subject=f"call:{call_id}", details={"reason": reason})
        return done

    async def call_record(self, call_id: str) -> CallRecordRow | None:
        """The stored CDR of a call."""
        async with self.db.session() as s:
            return await s.scalar(select(CallRecordRow).where(CallRecordRow.id == call_id))
