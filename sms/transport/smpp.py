"""The asyncio adapter around :class:`~sms.smpp.session.SmppSession`: one SMPP bind.

Theory of operation: :class:`SmppClient` owns a run task that connects (TCP,
optionally TLS), binds as a transceiver and feeds the socket's bytes to the
sans-I/O session, writing out whatever it has to send and arming one
``loop.call_at`` at the session's ``get_timer()``.  When the link is lost the
session settles what was in flight (outcome unknown) and the task reconnects
with exponential backoff and binds again.

Submits queue in a deque.  A pump moves them into the session while it has
window room and the token bucket allows; a full window or a throttle pause
(the session raises :class:`~sms.errors.WindowFull`) just stops the pump, and
the session's ``WindowOpen`` restarts it.  A submit refused with a temporary
status (ESME_RTHROTTLED, ESME_RMSGQFUL) was certainly not taken, so it goes
back to the head of the queue, up to ``max_temporary_retries`` times.  A
submit that got no answer is never resent here: the caller gets
:class:`~sms.transport.errors.SubmitOutcomeUnknownError`.

Inbound deliver_sm are acknowledged only after the daemon's callback has
finished (the session runs with ``auto_ack`` off): a resident's message is
stored before the SMSC forgets it, and a failing callback answers
ESME_RX_T_APPN so the SMSC delivers it again.  Parts of a concatenated
message are all held unacknowledged until the whole message is stored (or
flushed incomplete after ``reassembly_timeout``, which should stay below the
SMSC's own response timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any

from ..encoding import DEFAULT_MAX_PARTS
from ..errors import WindowFull
from ..inbound import InboundMessage, Reassembler
from ..smpp.codec import CommandStatus, SubmitSm, status_name
from ..smpp.events import (
    BindFailed,
    BindSucceeded,
    DeliveryReceipt,
    MessageReceived,
    ProtocolWarning,
    SessionClosed,
    SmppEvent,
    SubmitAccepted,
    SubmitOutcomeUnknown,
    SubmitRejected,
    WindowOpen,
)
from ..smpp.messages import ConcatMode, build_submits
from ..smpp.session import SessionSettings, SessionState, SmppSession
from .errors import (
    SmppBindRefused,
    SubmitError,
    SubmitOutcomeUnknownError,
    SubmitPermanentError,
    SubmitTemporaryError,
    TransportStopped,
)
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)

#: How often a held pump (``SmppClient.hold``) looks again, seconds.
HOLD_RECHECK_S = 0.05
# Statuses after which binding again with the same credentials is pointless until fixed.
_AUTH_STATUSES = frozenset({CommandStatus.ESME_RINVPASWD, CommandStatus.ESME_RINVSYSID})


@dataclass(frozen=True, slots=True)
class SmppSettings:
    """One ``[[sms.smpp]]`` entry, validated once."""

    name: str
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    tls: bool = False
    source: str = ""
    concat: ConcatMode = ConcatMode.UDH
    session: SessionSettings = field(default_factory=lambda: SessionSettings(window=50))
    rate_limit: float = 0.0
    rate_burst: int | None = None
    connect_timeout: float = 10.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 30.0
    max_temporary_retries: int = 20
    max_queued: int = 200_000
    reassembly_timeout: float = 20.0

    def __post_init__(self) -> None:
        """Reject settings that cannot work."""
        if not self.name or not self.host or not 0 < self.port < 65536 or not self.system_id:
            raise ValueError(f"SMPP transport needs name, host, port and system_id: {self.name!r}")
        if len(self.system_id) > 15 or len(self.password) > 8:
            raise ValueError("SMPP 3.4 allows system_id up to 15 and password up to 8 characters")
        if self.rate_limit < 0 or self.connect_timeout <= 0 or self.reconnect_initial <= 0 \
                or self.reconnect_max < self.reconnect_initial or self.max_temporary_retries < 0 \
                or self.max_queued < 1 or self.reassembly_timeout <= 0:
            raise ValueError(f"invalid SMPP transport settings for {self.name!r}")


@dataclass(frozen=True, slots=True)
class SubmitHandle:
    """A message the SMSC accepted: one message id per part (receipts name these)."""

    transport: str
    destination: str
    message_ids: tuple[str, ...]

    @property
    def message_id(self) -> str:
        """The first part's id (the only one for a short message)."""
        return self.message_ids[0]


@dataclass(frozen=True, slots=True)
class ReceivedSms:
    """A mobile-originated message, reassembled, and the number it was sent to."""

    message: InboundMessage
    destination: str
    transport: str


ReceiptCallback = Callable[[DeliveryReceipt], "Awaitable[None] | None"]
MessageCallback = Callable[[ReceivedSms], Awaitable[None]]
SslFactory = Callable[[], ssl.SSLContext]


@dataclass(slots=True, eq=False)
class _Job:
    pdu: SubmitSm
    future: asyncio.Future[str]
    retries: int = 0


@dataclass(slots=True)
class Counters:
    """What one transport did since it started."""

    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    temporary_retries: int = 0
    outcome_unknown: int = 0
    receipts: int = 0
    messages: int = 0
    acks_ok: int = 0
    acks_error: int = 0
    binds: int = 0
    bind_failures: int = 0
    connection_losses: int = 0
    warnings: int = 0


class _Protocol(asyncio.Protocol):
    """Moves bytes between the socket and the client; holds no state of its own."""

    def __init__(self, client: SmppClient) -> None:
        self._client = client

    def data_received(self, data: bytes) -> None:
        self._client._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._connection_lost(exc)


class SmppClient:
    """One SMPP 3.4 transceiver bind to an SMSC, with reconnect, queueing and rate limiting.

    The daemon service shape: :attr:`name`, :meth:`start`, :meth:`stop`, :meth:`health`.
    """

    def __init__(self, settings: SmppSettings, *, on_receipt: ReceiptCallback | None = None,
                 on_message: MessageCallback | None = None,
                 ssl_context: SslFactory | None = None, rng: random.Random | None = None) -> None:
        """Nothing connects until :meth:`start`."""
        self.settings = settings
        self.name = settings.name
        self.counters = Counters()
        self.last_error = ""
        self._session_settings = replace(settings.session, auto_ack=False)
        self._on_receipt = on_receipt
        self._on_message = on_message
        self._ssl = ssl_context
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: SmppSession | None = None
        self._transport: asyncio.Transport | None = None
        self._closed: asyncio.Future[None] | None = None
        self._queue: deque[_Job] = deque()
        self._inflight: dict[int, _Job] = {}
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pump_handle: asyncio.Handle | None = None
        self._reassembler = Reassembler(timeout=settings.reassembly_timeout)
        self._reassembly_timer: asyncio.TimerHandle | None = None
        self._held: dict[tuple[str, int, int, int], list[tuple[SmppSession, int]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._run_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._bind_waiters: list[asyncio.Future[None]] = []
        self._ref = self._rng.randrange(256)
        self.hold: Callable[[], bool] | None = None
        """While this returns True nothing more is written: queued submits wait (a
        clustered node that may have been taken over holds until it knows)."""

    # ------------------------------------------------------------ service shape

    async def start(self) -> None:
        """Begin connecting and binding in the background (returns at once)."""
        if self._run_task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._run_task = self._loop.create_task(self._run(), name=f"smpp-{self.name}")

    async def wait_bound(self, timeout: float | None = None) -> None:
        """Wait until bound; raises :class:`SmppBindRefused` if the SMSC refuses the bind."""
        if self.bound:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._bind_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        finally:
            if waiter in self._bind_waiters:
                self._bind_waiters.remove(waiter)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop: fail what is still queued, let in-flight submits settle, unbind, close.

        Everything is bounded by ``timeout`` seconds in all; after it the socket is just closed.
        """
        if self._run_task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._stopping = True
        assert self._wake is not None
        self._wake.set()
        self._fail_queue(TransportStopped, "transport stopped before the message was sent")
        pending: list[asyncio.Future[Any]] = [j.future for j in self._inflight.values()
                                              if not j.future.done()]
        pending += list(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
        session = self._session
        if session is not None and session.state is SessionState.BOUND:
            session.unbind(loop.time())
            self._after_io()
        if self._closed is not None and not self._closed.done():
            await asyncio.wait([self._closed], timeout=max(0.0, deadline - loop.time()))
        if self._transport is not None:
            self._transport.abort()
        self._run_task.cancel()
        await asyncio.gather(self._run_task, return_exceptions=True)
        self._run_task = None
        self._cancel_timers(reassembly=True)

    def health(self) -> dict[str, Any]:
        """Bind state, window use, queue, counters and the last error, for the status page."""
        session = self._session
        return {
            "name": self.name,
            "state": session.state.value if session else "disconnected",
            "bound": self.bound,
            "window_used": len(self._inflight),
            "window_size": self._session_settings.window,
            "queued": len(self._queue),
            "pending_inbound": self._reassembler.pending_count,
            "rate_limit": self.settings.rate_limit,
            "counters": asdict(self.counters),
            "last_error": self.last_error,
        }

    @property
    def bound(self) -> bool:
        """True while a bind is up."""
        return self._session is not None and self._session.state is SessionState.BOUND

    @property
    def load(self) -> int:
        """Submits queued or in flight (the pool sends to the least loaded bind)."""
        return len(self._queue) + len(self._inflight)

    # ------------------------------------------------------------ submitting

    async def submit(self, destination: str, text: str, *, source: str | None = None,
                     registered_delivery: bool = True, validity: timedelta | None = None,
                     priority: int = 0, flash: bool = False, service_type: str = "",
                     replace_if_present: bool = False,
                     max_parts: int | None = None) -> SubmitHandle:
        """Send ``text`` to ``destination``; return when the SMSC accepted every part.

        ``service_type`` tags the message (a campaign's tag); with
        ``replace_if_present`` the SMSC replaces a message with the same tag it
        still holds for ``destination`` instead of sending a second one.

        Waits for window room and throttle pauses.  Raises
        :class:`SubmitPermanentError`, :class:`SubmitTemporaryError` (safe to
        retry later) or :class:`SubmitOutcomeUnknownError` (do not resend blindly).
        """
        self._ref = (self._ref + 1) % 256
        pdus = build_submits(destination, text, source=self.settings.source if source is None
                             else source, concat=self.settings.concat,
                             registered_delivery=registered_delivery, validity=validity,
                             priority=priority, flash=flash, ref=self._ref,
                             service_type=service_type, replace_if_present=replace_if_present,
                             max_parts=max_parts or DEFAULT_MAX_PARTS)
        self._check_room(destination, len(pdus))
        jobs = [self._enqueue(pdu) for pdu in pdus]
        try:
            if len(jobs) == 1:
                return SubmitHandle(self.name, destination, (await jobs[0].future,))
            await asyncio.wait([j.future for j in jobs])
        except asyncio.CancelledError:
            self._cancel_jobs(jobs)
            raise
        return self._settle_parts(destination, jobs)

    def _settle_parts(self, destination: str, jobs: list[_Job]) -> SubmitHandle:
        accepted = tuple(j.future.result() for j in jobs if j.future.exception() is None)
        for job in jobs:
            exc = job.future.exception()
            if isinstance(exc, SubmitError):
                exc.accepted = accepted
                raise exc
            if exc is not None:
                raise exc
        return SubmitHandle(self.name, destination, accepted)

    def _check_room(self, destination: str, parts: int) -> None:
        if self._run_task is None or self._stopping:
            raise TransportStopped(f"SMPP transport {self.name} is not running",
                                   destination=destination)
        if len(self._queue) + parts > self.settings.max_queued:
            raise TransportStopped(f"SMPP transport {self.name}: queue full",
                                   destination=destination)

    def _enqueue(self, pdu: SubmitSm) -> _Job:
        assert self._loop is not None
        job = _Job(pdu, self._loop.create_future())
        self._queue.append(job)
        self._schedule_pump()
        return job

    def _cancel_jobs(self, jobs: list[_Job]) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.cancel()
        # Cancelled jobs still queued are skipped by the pump; in-flight ones settle quietly.

    def _schedule_pump(self) -> None:
        if self._pump_handle is None and self._loop is not None:
            self._pump_handle = self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_handle = None
        session = self._session
        if session is None or session.state is not SessionState.BOUND or self._loop is None:
            return
        now = self._loop.time()
        if self._queue and self.hold is not None and self.hold():
            self._pump_handle = self._loop.call_at(now + HOLD_RECHECK_S, self._pump)
            return
        while self._queue:
            job = self._queue[0]
            if job.future.done():
                self._queue.popleft()
                continue
            wait = self._bucket.take(now)
            if wait > 0:
                self._pump_handle = self._loop.call_at(now + wait, self._pump)
                break
            try:
                seq = session.submit(job.pdu, now)
            except WindowFull:
                self._bucket.give_back()
                break  # WindowOpen (a response, or the end of a throttle pause) restarts us
            self._queue.popleft()
            self._inflight[seq] = job
            self.counters.submitted += 1
        self._after_io()

    def _fail_queue(self, kind: type[SubmitError], reason: str) -> None:
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(kind(reason, destination=job.pdu.destination_addr))

    # ------------------------------------------------------------ connection

    async def _run(self) -> None:
        delay = self.settings.reconnect_initial
        while not self._stopping:
            bound_before = self.counters.binds
            try:
                await self._connect_once()
            except (TimeoutError, OSError) as exc:
                self._error(f"connect to {self.settings.host}:{self.settings.port} failed: "
                            f"{exc or type(exc).__name__}")
            if self._stopping:
                break
            if self.counters.binds > bound_before:
                delay = self.settings.reconnect_initial
            # Jitter, so several binds (or daemons) do not hammer the SMSC in step.
            pause = delay * self._rng.uniform(0.5, 1.0)
            delay = min(delay * 2, self.settings.reconnect_max)
            assert self._wake is not None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        context = self._ssl() if self._ssl is not None else (
            ssl.create_default_context() if self.settings.tls else None)
        async with asyncio.timeout(self.settings.connect_timeout):
            transport, _ = await loop.create_connection(
                lambda: _Protocol(self), self.settings.host, self.settings.port, ssl=context)
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._closed = loop.create_future()
        self._session = SmppSession(self._session_settings)
        self._session.bind(self.settings.system_id, self.settings.password,
                           self.settings.system_type, now=loop.time())
        self._after_io()
        await asyncio.shield(self._closed)

    def _data_received(self, data: bytes) -> None:
        session = self._session
        if session is None or self._loop is None:
            return
        try:
            events = session.receive_data(data, self._loop.time())
            self._dispatch(events)
        except Exception:  # a bug in us must not kill the bind; log it loudly
            log.exception("SMPP %s: error handling received data", self.name)
        self._after_io()

    def _connection_lost(self, exc: Exception | None) -> None:
        session = self._session
        if session is not None and self._loop is not None:
            events = session.connection_lost(self._loop.time())
            if events:
                self.counters.connection_losses += 1
                self._error(f"connection lost: {exc or 'closed by the SMSC'}")
            self._dispatch(events)
        self._transport = None
        self._cancel_timers()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def _after_io(self) -> None:
        """Write what the session has to send and re-arm its timer."""
        session = self._session
        if session is None or self._loop is None:
            return
        data = session.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
        if session.state is SessionState.CLOSED:
            if self._transport is not None:
                self._transport.close()
            return
        when = session.get_timer()
        # Only move the timer earlier; a timer firing early is harmless (handle_timer re-checks).
        if when is not None and (self._timer_at is None or when < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._session is not None and self._loop is not None:
            self._dispatch(self._session.handle_timer(self._loop.time()))
            self._after_io()

    def _cancel_timers(self, *, reassembly: bool = False) -> None:
        # Parts waiting for reassembly outlive a connection; only stop() drops their timer.
        for handle in (self._timer, self._pump_handle,
                       self._reassembly_timer if reassembly else None):
            if handle is not None:
                handle.cancel()
        self._timer = self._pump_handle = None
        self._timer_at = None
        if reassembly:
            self._reassembly_timer = None

    def _error(self, reason: str) -> None:
        self.last_error = reason
        log.warning("SMPP %s: %s", self.name, reason)

    # ------------------------------------------------------------ events

    def _dispatch(self, events: list[SmppEvent]) -> None:
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)

    def _bind_succeeded(self, event: BindSucceeded) -> None:
        self.counters.binds += 1
        log.info("SMPP %s: bound to %s", self.name, event.system_id or self.settings.host)
        for waiter in self._bind_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._schedule_pump()

    def _bind_failed(self, event: BindFailed) -> None:
        self.counters.bind_failures += 1
        self._error(event.reason)
        if event.status in _AUTH_STATUSES:
            for waiter in self._bind_waiters:
                if not waiter.done():
                    waiter.set_exception(SmppBindRefused(event.reason,
                                                         command_status=event.status))

    def _job_for(self, seq: int) -> _Job | None:
        job = self._inflight.pop(seq, None)
        if job is None or job.future.done():
            return None
        return job

    def _accepted(self, event: SubmitAccepted) -> None:
        job = self._job_for(event.seq)
        if job is not None:
            self.counters.accepted += 1
            job.future.set_result(event.message_id)

    def _rejected(self, event: SubmitRejected) -> None:
        job = self._job_for(event.seq)
        if job is None:
            return
        dest = job.pdu.destination_addr
        name = status_name(event.status)
        if event.temporary and job.retries < self.settings.max_temporary_retries:
            # Refused, so certainly not sent: safe to put back at the head of the queue.
            job.retries += 1
            self.counters.temporary_retries += 1
            self._queue.appendleft(job)
            return
        self.counters.rejected += 1
        if event.temporary:
            job.future.set_exception(SubmitTemporaryError(
                f"SMSC still answers {name} after {job.retries} retries", destination=dest,
                status=event.status))
        else:
            job.future.set_exception(SubmitPermanentError(
                f"SMSC refused the message: {name}", destination=dest, status=event.status))

    def _unknown(self, event: SubmitOutcomeUnknown) -> None:
        job = self._job_for(event.seq)
        if job is not None:
            self.counters.outcome_unknown += 1
            job.future.set_exception(SubmitOutcomeUnknownError(
                f"no submit_sm_resp ({event.reason}); the SMSC may have taken it",
                destination=job.pdu.destination_addr))

    def _window_open(self, event: WindowOpen) -> None:
        self._schedule_pump()

    def _warning(self, event: ProtocolWarning) -> None:
        self.counters.warnings += 1
        log.warning("SMPP %s: %s", self.name, event.reason)

    def _session_closed(self, event: SessionClosed) -> None:
        log.info("SMPP %s: session closed: %s", self.name, event.reason)
        if not self._stopping:
            self.last_error = event.reason

    # ------------------------------------------------------------ inbound

    def _receipt(self, event: DeliveryReceipt) -> None:
        self.counters.receipts += 1
        assert self._session is not None
        acks = [(self._session, event.seq)]
        try:
            result = self._on_receipt(event) if self._on_receipt is not None else None
        except Exception:
            log.exception("SMPP %s: receipt callback failed", self.name)
            self._ack(acks, CommandStatus.ESME_RX_T_APPN)
            return
        if result is None:
            self._ack(acks, CommandStatus.ESME_ROK)  # the common, synchronous case: no task
        else:
            self._spawn(self._finish_receipt(result, acks))

    async def _finish_receipt(self, pending: Awaitable[None],
                              acks: list[tuple[SmppSession, int]]) -> None:
        status = CommandStatus.ESME_ROK
        try:
            await pending
        except Exception:
            log.exception("SMPP %s: receipt callback failed", self.name)
            status = CommandStatus.ESME_RX_T_APPN
        self._ack(acks, status)

    def _message(self, event: MessageReceived) -> None:
        assert self._session is not None and self._loop is not None
        self.counters.messages += 1
        acks = [(self._session, event.seq)]
        info = event.part.concat
        key = None
        if info is not None and info.total > 1 and 1 <= info.seq <= info.total:
            key = (event.part.sender, info.ref_bits, info.ref, info.total)
            self._held.setdefault(key, []).extend(acks)
        for message in self._reassembler.add(event.part, self._loop.time()):
            if key is None:
                got = acks
            elif message.complete and key in self._held:
                got = self._held.pop(key)  # this part completed its message
            else:
                got = self._pop_held(message)  # an older one flushed to make room
            self._spawn(self._deliver_message(message, event.destination, got))
        self._arm_reassembly()

    def _pop_held(self, message: InboundMessage) -> list[tuple[SmppSession, int]]:
        for key in list(self._held):
            if key[0] == message.sender and key[3] == message.parts_total:
                return self._held.pop(key)
        return []

    def _arm_reassembly(self) -> None:
        if self._reassembly_timer is not None:
            self._reassembly_timer.cancel()
            self._reassembly_timer = None
        when = self._reassembler.get_timer()
        if when is not None and self._loop is not None:
            self._reassembly_timer = self._loop.call_at(when, self._on_reassembly_timer)

    def _on_reassembly_timer(self) -> None:
        self._reassembly_timer = None
        assert self._loop is not None
        for message in self._reassembler.handle_timer(self._loop.time()):
            self._spawn(self._deliver_message(message, "", self._pop_held(message)))
        self._arm_reassembly()

    async def _deliver_message(self, message: InboundMessage, destination: str,
                               acks: list[tuple[SmppSession, int]]) -> None:
        status = CommandStatus.ESME_RX_T_APPN  # nobody to store it: let the SMSC keep it
        if self._on_message is not None:
            try:
                await self._on_message(ReceivedSms(message, destination, self.name))
                status = CommandStatus.ESME_ROK
            except Exception:
                log.exception("SMPP %s: message callback failed; asking the SMSC to redeliver",
                              self.name)
        self._ack(acks, status)

    def _ack(self, acks: list[tuple[SmppSession, int]], status: int) -> None:
        for session, seq in acks:
            # A part received on an earlier connection cannot be answered: the SMSC redelivers it.
            if session is self._session and session.state in (SessionState.BOUND,
                                                              SessionState.UNBINDING):
                session.acknowledge(seq, status)
                if status == CommandStatus.ESME_ROK:
                    self.counters.acks_ok += 1
                else:
                    self.counters.acks_error += 1
        self._after_io()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_HANDLERS: dict[type, Callable[[SmppClient, Any], None]] = {
    BindSucceeded: SmppClient._bind_succeeded,
    BindFailed: SmppClient._bind_failed,
    SubmitAccepted: SmppClient._accepted,
    SubmitRejected: SmppClient._rejected,
    SubmitOutcomeUnknown: SmppClient._unknown,
    WindowOpen: SmppClient._window_open,
    ProtocolWarning: SmppClient._warning,
    SessionClosed: SmppClient._session_closed,
    DeliveryReceipt: SmppClient._receipt,
    MessageReceived: SmppClient._message,
}
