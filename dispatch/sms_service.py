"""The SMS service: SMPP binds and GSM modems as one sender for campaigns, and SMS in.

Theory of operation.  :class:`SmsService` builds one transport per
``[[sms.smpp]]`` entry (an :class:`~sms.transport.SmppPool` of ``binds``
transceivers) and per ``[[sms.modems]]`` entry (modems
sharing a ``pool`` name form one :class:`~sms.transport.modem.ModemPool`), and a
:class:`~sms.routing.Router` over their names.  It *is* the campaign engine's
:class:`~dispatch.campaigns.SmsSender`: :meth:`SmsService.submit` tries the
route's transports in order and translates transport errors into the engine's
three outcomes:

* not taken (throttled past retries, queue full, transport down) →
  :class:`~dispatch.campaigns.TemporaryFailure`, after trying the next
  transport of the route (failover is safe: nothing went out);
* refused (bad number, barred) → :class:`~dispatch.campaigns.PermanentFailure`;
* sent without an answer, or some parts of a long message taken →
  :class:`~dispatch.campaigns.OutcomeUnknown` with no failover: the engine
  resends with ``replace_if_present`` on the same tag, never blindly.

Message ids are returned as ``"<transport>:<canonical id>"`` (see
:func:`~sms.transport.ratelimit.stored_id`) so a delivery receipt, which may
write the id another way and may arrive after a restart, finds its recipient in
the database.  Receipts and mobile-originated messages are handed to the
callbacks the daemon gives (campaign receipts, report intake); an MO message is
acknowledged to the SMSC only once that callback has stored it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from dispatch.campaigns import OutcomeUnknown, PermanentFailure, TemporaryFailure
from dispatch.config import SmppBindSettings, SmsSettings
from dispatch.reports import NewReport, ReportService
from hardware.serial import PortFactory, twisted_serial_port
from intake.model import Channel
from sms.encoding import fit_text
from sms.routing import Route, Router
from sms.smpp.events import DeliveryReceipt
from sms.smpp.receipt import MessageState
from sms.smpp.session import SessionSettings
from sms.transport import (
    IdFormat,
    ReceivedSms,
    SmppClient,
    SmppPool,
    SmppSettings,
    SubmitOutcomeUnknownError,
    SubmitPermanentError,
    SubmitTemporaryError,
)
from sms.transport.modem import GsmModem, ModemPool, ModemSms
from sms.transport.ratelimit import receipt_id, stored_id

log = logging.getLogger(__name__)

#: Receipt states the campaign engine records; the rest are not final.
RECEIPT_STATES: dict[MessageState, str] = {
    MessageState.DELIVERED: "delivered",
    MessageState.EXPIRED: "expired",
    MessageState.DELETED: "failed",
    MessageState.UNDELIVERABLE: "failed",
    MessageState.REJECTED: "failed",
}

#: Pauses before looking a receipt's message id up again (the submit may not be committed yet).
RECEIPT_RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

ReceiptSink = Callable[[list[str], str], Awaitable[bool]]


@dataclasses.dataclass(frozen=True)
class InboundSms:
    """A whole message from the public, as intake gets it."""

    sender: str
    destination: str
    text: str
    transport: str
    complete: bool
    received_at: dt.datetime


MessageSink = Callable[[InboundSms], Awaitable[None]]


class Transport(Protocol):
    """What the router needs of a transport; errors are already the campaign engine's."""

    name: str

    @property
    def up(self) -> bool:
        """True when it can take a message now."""

    async def start(self) -> None:
        """Begin connecting (returns at once)."""

    async def stop(self) -> None:
        """Stop, letting in-flight submits settle."""

    async def send(self, msisdn: str, text: str, *, source: str, tag: str, replace: bool,
                   urgent: bool, max_parts: int) -> list[str]:
        """Send; return canonical message ids or raise a campaign outcome."""

    def health(self) -> dict[str, Any]:
        """State for /health."""


class SmppTransport:
    """One SMSC: ``binds`` SMPP transceivers behind one submit."""

    def __init__(self, cfg: SmppBindSettings, password: str, *,
                 on_receipt: Callable[[SmppTransport, DeliveryReceipt], Awaitable[None]],
                 on_message: Callable[[ReceivedSms], Awaitable[None]]) -> None:
        """Build the binds; nothing connects until :meth:`start`."""
        self.name = cfg.name
        self.id_format = IdFormat(cfg.receipt_ids)
        session = SessionSettings(window=cfg.window, response_timeout=cfg.response_timeout_s,
                                  enquire_link_interval=cfg.enquire_link_s)

        async def receipt(event: DeliveryReceipt) -> None:
            await on_receipt(self, event)

        clients = [SmppClient(SmppSettings(
            name=f"{cfg.name}#{i + 1}", host=cfg.host, port=cfg.port, system_id=cfg.system_id,
            password=password, system_type=cfg.system_type, tls=cfg.tls, session=session,
            rate_limit=cfg.rate_per_s), on_receipt=receipt, on_message=on_message)
            for i in range(cfg.binds)]
        self.pool = SmppPool(cfg.name, clients)

    @property
    def up(self) -> bool:
        """True while at least one bind is up."""
        return any(c.bound for c in self.pool.clients)

    async def start(self) -> None:
        """Start every bind (each connects and reconnects in the background)."""
        await self.pool.start()

    async def stop(self) -> None:
        """Unbind every bind."""
        await self.pool.stop()

    def key(self, message_id: str) -> str:
        """The stored form of a submit_sm_resp id of this SMSC."""
        return f"{self.name[:24]}:{stored_id(message_id, self.id_format)}"

    def receipt_key(self, message_id: str) -> str:
        """The stored form of the id a receipt from this SMSC names."""
        return f"{self.name[:24]}:{receipt_id(message_id, self.id_format)}"

    async def send(self, msisdn: str, text: str, *, source: str, tag: str, replace: bool,
                   urgent: bool, max_parts: int) -> list[str]:
        """submit_sm (one per part) on the least loaded bind."""
        async with outcomes(self.name):
            handle = await self.pool.submit(msisdn, text, source=source, service_type=tag,
                                            replace_if_present=replace, priority=1 if urgent
                                            else 0, max_parts=max_parts)
        return [self.key(m) for m in handle.message_ids]

    def health(self) -> dict[str, Any]:
        """The pool's health."""
        return {"kind": "smpp", **self.pool.health()}


@contextlib.asynccontextmanager
async def outcomes(name: str) -> AsyncIterator[None]:
    """Translate a transport's Submit*Error into the campaign engine's three outcomes."""
    try:
        yield
    except SubmitOutcomeUnknownError as exc:
        raise OutcomeUnknown(f"{name}: {exc}") from None
    except SubmitTemporaryError as exc:
        if exc.accepted:  # some parts went out: a resend must replace them
            raise OutcomeUnknown(f"{name}: parts taken, then {exc}") from None
        raise TemporaryFailure(f"{name}: {exc}") from None
    except SubmitPermanentError as exc:
        raise PermanentFailure(f"{name}: {exc.status_name or exc}") from None


class ModemTransport:
    """A pool of GSM modems as a campaign transport (no replace: see sms.transport.modem)."""

    def __init__(self, pool: ModemPool) -> None:
        """Wrap a started-with-us pool."""
        self.name = pool.name
        self.pool = pool

    @property
    def up(self) -> bool:
        """True while some modem is open."""
        return self.pool.up

    async def start(self) -> None:
        """Open every modem."""
        await self.pool.start()

    async def stop(self) -> None:
        """Close every modem."""
        await self.pool.stop()

    async def send(self, msisdn: str, text: str, *, source: str, tag: str, replace: bool,
                   urgent: bool, max_parts: int) -> list[str]:
        """AT+CMGS on the least busy modem; ids are the modem's TP-MRs (no receipts)."""
        async with outcomes(self.name):
            refs = await self.pool.submit(msisdn, text, max_parts=max_parts, urgent=urgent)
        return [f"{r}:{uuid.uuid4().hex[:8]}" for r in refs]  # TP-MR wraps at 256

    def health(self) -> dict[str, Any]:
        """Every modem's state."""
        return {"kind": "modem", **self.pool.health()}


class SmsService:
    """Every SMS transport of the daemon, as one sender and one inbound stream."""

    name = "sms"

    def __init__(self, settings: SmsSettings, *, on_receipt: ReceiptSink,
                 on_message: MessageSink, reactor: Any = None,
                 environ: Mapping[str, str] | None = None,
                 extra: Mapping[str, Transport] | None = None,
                 port_factory: PortFactory = twisted_serial_port) -> None:
        """Keep the settings; transports are built at :meth:`start` (secrets are read then).

        ``extra`` adds transports built elsewhere (by name), for tests and tools.
        """
        self.settings = settings
        self._on_receipt = on_receipt
        self._on_message = on_message
        self._reactor = reactor
        self._environ = environ
        self._extra = dict(extra or {})
        self._port_factory = port_factory
        self.transports: dict[str, Transport] = {}
        # While this returns True the SMPP binds and the GSM modems write nothing
        # (queued submits and AT+CMGS wait):
        # set by the cluster wiring to "this node may not act now" (dispatch/fencing.py).
        self.hold: Callable[[], bool] | None = None
        self.router: Router | None = None
        self.counts: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle

    def _build(self) -> None:
        env = os.environ if self._environ is None else self._environ
        built: dict[str, Transport] = {}
        for cfg in self.settings.smpp:
            built[cfg.name] = SmppTransport(cfg, cfg.password(env),
                                            on_receipt=self._receipt, on_message=self._mo)
        pools: dict[str, list[GsmModem]] = {}
        for modem in self.settings.modems:
            pools.setdefault(modem.pool, []).append(GsmModem(
                modem.name, modem.device, self._reactor, baudrate=modem.baudrate,
                command_timeout=modem.command_timeout_s, smsc=modem.smsc,
                on_message=self._modem_mo, port_factory=self._port_factory))
        for pool, modems in pools.items():
            built[pool] = ModemTransport(ModemPool(pool, modems))
        built.update(self._extra)
        for transport in built.values():
            if isinstance(transport, SmppTransport):
                for client in transport.pool.clients:
                    client.hold = self._held
            elif isinstance(transport, ModemTransport):
                for gsm in transport.pool.modems:
                    gsm.hold = self._held
        smpp = [n for n, t in built.items() if isinstance(t, SmppTransport)]
        default = smpp + [n for n in built if n not in smpp]
        self.router = Router([Route(r.prefix, r.transports) for r in self.settings.routes],
                             default)
        self.transports = built

    def _held(self) -> bool:
        return self.hold is not None and self.hold()

    async def start(self) -> None:
        """Build and start every transport; they connect in the background."""
        if not self.transports:
            self._build()
        for transport in self.transports.values():
            await transport.start()
        log.info("SMS transports started", extra={"transports": list(self.transports)})

    async def stop(self) -> None:
        """Stop every transport (in-flight submits settle first, within their timeouts)."""
        await asyncio.gather(*(t.stop() for t in self.transports.values()),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def health(self) -> dict[str, Any]:
        """Every transport's state, and counters."""
        return {"transports": {n: t.health() for n, t in self.transports.items()},
                "up": [n for n, t in self.transports.items() if t.up],
                "counts": dict(self.counts)}

    # ------------------------------------------------------------ sending

    @property
    def ready(self) -> bool:
        """True when some transport can take a message now (the engine waits otherwise)."""
        return self.router is not None and any(t.up for t in self.transports.values())

    async def submit(self, msisdn: str, text: str, *, tag: str, replace: bool,
                     priority: int) -> list[str]:
        """The campaign engine's sender: route, fail over, map errors (module docstring)."""
        if self.router is None:
            raise TemporaryFailure("SMS transports are not started")
        candidates = self.router.candidates(msisdn)
        errors: list[str] = []
        for i, name in enumerate(candidates):
            transport = self.transports[name]
            last = i == len(candidates) - 1
            if not transport.up and not last:
                errors.append(f"{name}: down")
                continue
            try:
                ids = await transport.send(msisdn, text, source=self.settings.sender_id,
                                           tag=tag, replace=replace, urgent=priority == 0,
                                           max_parts=self.settings.max_parts)
            except TemporaryFailure as exc:
                errors.append(str(exc))
                self.counts[f"failover:{name}"] += 1
                continue
            self.counts[f"sent:{name}"] += 1
            return ids
        raise TemporaryFailure("; ".join(errors) or f"no transport for {msisdn}")

    async def send(self, msisdn: str, text: str) -> None:
        """Send one notification to an official or a unit (dispatch's ``TextSender``).

        Not part of a campaign: no replace-if-present, and any failure is raised so
        the notification engine retries and escalates on its own schedule.
        """
        text = fit_text(text, self.settings.max_parts)  # keeps the closing ack link whole
        await self.submit(msisdn, text, tag="NTFY", replace=False, priority=0)

    # ------------------------------------------------------------ inbound

    async def _receipt(self, transport: SmppTransport, event: DeliveryReceipt) -> None:
        state = RECEIPT_STATES.get(event.state) if event.state is not None else None
        if state is None:
            self.counts["receipts_not_final"] += 1
            return
        key = transport.receipt_key(event.message_id)
        if await self._on_receipt([key], state):
            self.counts["receipts"] += 1
            return
        # A fast SMSC can send the receipt before the submit's outcome is committed:
        # look again a little later, without holding up the SMSC's deliver_sm_resp.
        task = asyncio.get_running_loop().create_task(self._receipt_later(key, state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receipt_later(self, key: str, state: str) -> None:
        for delay in RECEIPT_RETRY_S:
            await asyncio.sleep(delay)
            try:
                if await self._on_receipt([key], state):
                    self.counts["receipts"] += 1
                    self.counts["receipts_late"] += 1
                    return
            except Exception:  # the database may be down for a moment: try again
                log.exception("storing a delivery receipt failed")
        self.counts["receipts_unknown"] += 1
        log.info("delivery receipt for an unknown message id", extra={"message_id": key})

    async def _mo(self, received: ReceivedSms) -> None:
        message = received.message
        await self._deliver(InboundSms(
            message.sender, received.destination, message.text, received.transport,
            message.complete, dt.datetime.now(dt.UTC)))

    async def _modem_mo(self, received: ModemSms) -> None:
        message = received.message
        await self._deliver(InboundSms(message.sender, "", message.text, received.modem,
                                       message.complete, dt.datetime.now(dt.UTC)))

    async def _deliver(self, sms: InboundSms) -> None:
        allowed = self.settings.inbound_numbers
        # A modem's messages carry no destination: its SIM is the centre's own number.
        if allowed and sms.destination and \
                sms.destination.lstrip("+") not in {n.lstrip("+") for n in allowed}:
            self.counts["inbound_ignored"] += 1
            log.info("SMS to a number that takes no reports ignored",
                     extra={"destination": sms.destination, "transport": sms.transport})
            return
        self.counts["inbound"] += 1
        if self.settings.report_inbound:
            await self._on_message(sms)  # raises: the SMSC / modem keeps it and redelivers


MAX_REPORT_TEXT = 8000


def report_sink(reports: ReportService) -> MessageSink:
    """A :data:`MessageSink` that stores each message as an ``sms`` report before it is acked."""

    async def store(sms: InboundSms) -> None:
        fields = (("to", sms.destination), ("transport", sms.transport),
                  ("complete", "true" if sms.complete else "false"))
        await reports.submit(NewReport(channel=Channel.SMS, text=sms.text[:MAX_REPORT_TEXT],
                                       received_at=sms.received_at, caller=sms.sender,
                                       fields=fields), actor=f"sms:{sms.transport}")

    return store
