"""A satellite phone (Iridium / Tiantong handset or docking gateway) as a dispatch gateway.

Theory of operation
-------------------
The phone speaks TS 27.007 / 27.005 AT commands on a serial port, through an
:class:`~hardware.atport.AtDevice` (one command in flight, unsolicited codes on
their own queue, resynchronisation after a silent device).

* Start-up and every reconnect: ``ATE0``, ``AT+CMEE=1``, then
  *reconciliation*: ``AT+CLCC`` and, if a call is listed (left up by a
  crashed predecessor, with nobody listening), ``ATH``.  Then SMS in PDU mode
  with deliveries routed straight to us (``AT+CMGF=0``, ``AT+CNMI=2,2,0,0,0``),
  caller id (``AT+CLIP=1``), registration and signal events (``AT+CREG=1``,
  Iridium's ``AT+CIER=1,1``: optional), and a first ``AT+CSQ``.
* Calls: :meth:`SatphoneGateway.dial` (``ATD<number>;``), ``RING``/``+CLIP``
  (ringing), :meth:`~SatphoneGateway.answer` (``ATA``),
  :meth:`~SatphoneGateway.hang_up` (``ATH``), ``NO CARRIER`` (far end hung
  up).  A poll every ``poll_s`` (``AT+CSQ``, ``AT+CLCC``) refreshes the signal
  and ends a call the phone no longer lists.
* SMS out: :func:`sms.pdu.encode_submit` (GSM 7-bit or UCS-2 for Chinese,
  concatenated when long) and one ``AT+CMGS`` per part with the ``> ``
  prompt.  SMS in: ``+CMT`` with the PDU on the next line, joined by
  :class:`sms.inbound.Reassembler`.
* Iridium SBD: :meth:`~SatphoneGateway.send_sbd` (``+SBDWT``, ``+SBDIX``);
  ``SBDRING`` (alerts on with ``+SBDMTA=1``) starts a session and reads the
  waiting messages (``+SBDRT``), each an :class:`SbdReceived`.
* Link lost (the port closed): :class:`SatLinkDown`, any call is reported
  ended; the serial link reopens by itself and initialisation runs again.

Every event goes to the ``on_event`` callback given at construction; the
callback's own failures are logged and never stop the phone being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hardware.at import AtCallFailed, AtCommandError, AtError, AtLinkDown, Unsolicited
from hardware.atport import AtDevice
from hardware.serial import PortFactory, twisted_serial_port
from sms.errors import SmsError
from sms.inbound import InboundMessage, Reassembler
from sms.modem_pdu import parse_cmgs, parse_reported
from sms.pdu import SmsDeliver, encode_submit

__all__ = [
    "CallStateChanged", "RegistrationChanged", "SatFault", "SatLinkDown", "SatLinkUp",
    "SatphoneError", "SatphoneEvent", "SatphoneGateway", "SatphoneSettings", "SbdReceived",
    "SignalChanged", "SmsReceived",
]

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")
_FIRST_INT = re.compile(r"(\d+)")
_SBDIX = re.compile(r"^\+SBDIX:\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+)\s*$")
MAX_SMS_TEXT = 1000
MAX_SBD_TEXT = 340
SBD_MO_OK = 4  # MO status 0-4: the message reached the gateway
MAX_SBD_FETCH = 16


class SatphoneError(ValueError):
    """A request the phone cannot carry out (bad number, no call to answer, too long)."""


@dataclass(frozen=True)
class SatphoneSettings:
    """One satellite phone on a serial port."""

    name: str
    device: str
    baudrate: int = 19200
    retry_s: float = 5.0
    command_timeout_s: float = 10.0
    #: Satellite call set-up is slow: how long ``ATD`` may take.
    dial_timeout_s: float = 60.0
    poll_s: float = 30.0
    max_sms_parts: int = 4
    #: How long the parts of a long SMS wait for the rest before what came is delivered.
    sms_reassembly_s: float = 600.0


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SatLinkUp:
    """The phone answered and is initialised."""

    gateway: str


@dataclass(frozen=True)
class SatLinkDown:
    """The serial link to the phone was lost."""

    gateway: str
    why: str


@dataclass(frozen=True)
class SignalChanged:
    """Signal strength (``+CIEV`` or ``+CSQ``; Iridium bars 0-5, GSM 0-31)."""

    gateway: str
    signal: int


@dataclass(frozen=True)
class RegistrationChanged:
    """Network registration (``+CREG`` stat: 1 home, 5 roaming = registered)."""

    gateway: str
    stat: int
    registered: bool


@dataclass(frozen=True)
class CallStateChanged:
    """The phone's one call: ``ringing``, ``active`` or ``ended`` (with why)."""

    gateway: str
    state: str
    number: str
    incoming: bool
    why: str = ""


@dataclass(frozen=True)
class SmsReceived:
    """A whole SMS (or what arrived of it, ``complete`` False)."""

    gateway: str
    sender: str
    text: str
    sent_at: dt.datetime | None
    complete: bool


@dataclass(frozen=True)
class SbdReceived:
    """An Iridium SBD (short burst data) message arrived from the gateway."""

    gateway: str
    text: str


@dataclass(frozen=True)
class SatFault:
    """Something failed on the phone's side (a command refused, a malformed report)."""

    gateway: str
    detail: str


SatphoneEvent = (SatLinkUp | SatLinkDown | SignalChanged | RegistrationChanged
                 | CallStateChanged | SmsReceived | SbdReceived | SatFault)


class _LossWatch:
    """Sits between the serial port and the AT protocol to see the port close."""

    def __init__(self, inner: Any, on_lost: Callable[[Any], None]) -> None:
        self.inner = inner
        self.on_lost = on_lost

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        try:
            self.on_lost(reason)
        finally:
            self.inner.connectionLost(reason)


class SatphoneGateway:
    """A satellite phone: calls, signal and registration, SMS both ways."""

    def __init__(self, settings: SatphoneSettings, reactor: Any,
                 on_event: Callable[[SatphoneEvent], None], *,
                 port_factory: PortFactory = twisted_serial_port) -> None:
        """Describe the gateway; nothing is opened until :meth:`start`."""
        self.settings = settings
        self.name = settings.name
        self._on_event = on_event
        self._port_factory = port_factory
        self.device = AtDevice(settings.name, settings.device, reactor,
                               baudrate=settings.baudrate, retry_s=settings.retry_s,
                               port_factory=self._open_port)
        self._reassembler = Reassembler(timeout=settings.sms_reassembly_s, max_pending=100)
        self.up = False
        self.signal: int | None = None
        self.registration: int | None = None
        self.call: CallStateChanged | None = None
        self.last_error: str | None = None
        self._stopping = False
        self._bring_up: asyncio.Task[None] | None = None
        self._service: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._sbd_tasks: set[asyncio.Task[None]] = set()
        self._sms_timer: asyncio.TimerHandle | None = None

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the port and initialise the phone; ``OSError`` if the device is absent."""
        self._stopping = False
        await self.device.start()
        loop = asyncio.get_running_loop()
        self._service = loop.create_task(self._read_unsolicited())
        self._poller = loop.create_task(self._poll())
        if self._bring_up is not None:
            await asyncio.shield(self._bring_up)

    async def stop(self) -> None:
        """Hang up a call in progress (nobody will hear it any more), then close the port."""
        if self.call is not None and self.call.state != "ended" and self.up:
            with contextlib.suppress(AtError, TimeoutError):
                await self.device.command("ATH", timeout=self.settings.command_timeout_s)
            self._set_call("ended", self.call.number, self.call.incoming, "gateway stopping")
        # Parts of a long SMS still waiting for the rest are delivered as they are.
        self._deliver(self._reassembler.flush_all())
        self._stopping = True
        for task in (self._service, self._poller, self._bring_up, *self._sbd_tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._service = self._poller = self._bring_up = None
        await self.device.stop()

    def health(self) -> dict[str, Any]:
        """Link, signal, registration, call and last error."""
        health = self.device.health()
        health.update({
            "ready": self.up, "signal": self.signal, "registration": self.registration,
            "call": None if self.call is None else {
                "state": self.call.state, "number": self.call.number,
                "incoming": self.call.incoming},
            "last_error": self.last_error or health.get("last_error"),
        })
        return health

    # --- dispatcher side --------------------------------------------------------------------

    async def dial(self, number: str) -> None:
        """Call ``number`` (voice); :class:`SatphoneError` if busy, ``AtError`` if it fails."""
        if not _NUMBER.match(number):
            raise SatphoneError(f"not a phone number: {number!r}")
        if self.call is not None and self.call.state != "ended":
            raise SatphoneError(f"{self.name} already has a call ({self.call.state})")
        self._set_call("dialling", number, False)
        try:
            await self.device.command(f"ATD{number};", timeout=self.settings.dial_timeout_s)
        except AtCallFailed as exc:
            self._set_call("ended", number, False, exc.final.lower())
            raise
        except (AtError, TimeoutError) as exc:
            self._set_call("ended", number, False, f"dial failed: {exc}")
            raise
        self._set_call("active", number, False)

    async def answer(self) -> None:
        """Answer the ringing call."""
        if self.call is None or self.call.state != "ringing":
            raise SatphoneError(f"{self.name} has no ringing call")
        call = self.call
        try:
            await self.device.command("ATA", timeout=self.settings.dial_timeout_s)
        except AtCallFailed as exc:
            self._set_call("ended", call.number, True, exc.final.lower())
            raise
        self._set_call("active", call.number, True)

    async def hang_up(self) -> None:
        """End the call (ringing or active)."""
        call = self.call
        await self.device.command("ATH", timeout=self.settings.command_timeout_s)
        if call is not None and call.state != "ended":
            self._set_call("ended", call.number, call.incoming, "hung up by dispatcher")

    async def send_sms(self, number: str, text: str) -> list[int]:
        """Send ``text`` to ``number`` (GSM 7-bit or UCS-2, concatenated); the TP-MRs."""
        if not _NUMBER.match(number):
            raise SatphoneError(f"not a phone number: {number!r}")
        if not text or len(text) > MAX_SMS_TEXT:
            raise SatphoneError(f"SMS text must be 1 to {MAX_SMS_TEXT} characters")
        try:
            parts = encode_submit(number, text)
        except SmsError as exc:
            raise SatphoneError(str(exc)) from None
        if len(parts) > self.settings.max_sms_parts:
            raise SatphoneError(f"text needs {len(parts)} SMS parts, at most "
                                f"{self.settings.max_sms_parts} are sent")
        references = []
        for part in parts:
            response = await self.device.command(
                f"AT+CMGS={part.tpdu_length}", prompt_payload=part.hex,
                timeout=self.settings.dial_timeout_s)
            line = next((x for x in response.lines if x.startswith("+CMGS")), None)
            references.append(parse_cmgs(line) if line is not None else -1)
        return references

    async def send_sbd(self, text: str) -> int:
        """Send ``text`` as one Iridium SBD message (``+SBDWT``, ``+SBDIX``); the MOMSN."""
        if not text or len(text) > MAX_SBD_TEXT or not text.isascii():
            raise SatphoneError(f"SBD text must be 1 to {MAX_SBD_TEXT} ASCII characters")
        await self.device.command(f"AT+SBDWT={text}", timeout=self.settings.command_timeout_s)
        mo, momsn, mt, _, _, queued = await self._sbd_session()
        if mo > SBD_MO_OK:
            raise SatphoneError(f"SBD session failed (MO status {mo}): no satellite in view?")
        await self.device.command("AT+SBDD0", timeout=self.settings.command_timeout_s)
        if mt == 1 or queued:
            await self._read_mt(mt == 1, queued)
        return momsn

    async def _sbd_session(self) -> tuple[int, ...]:
        response = await self.device.command("AT+SBDIX", timeout=self.settings.dial_timeout_s)
        for line in response.lines:
            match = _SBDIX.match(line.strip())
            if match is not None:
                return tuple(int(g) for g in match.groups())
        raise SatphoneError("no +SBDIX answer")

    async def _read_mt(self, waiting: bool, queued: int) -> None:
        """Read the MT message the last session brought, then fetch the queued ones."""
        for _ in range(MAX_SBD_FETCH):
            if waiting:
                response = await self.device.command("AT+SBDRT",
                                                     timeout=self.settings.command_timeout_s)
                lines = [x for x in response.lines if not x.startswith("+SBDRT")]
                self._report(SbdReceived(self.name, "\n".join(lines)[:MAX_SBD_TEXT * 6]))
            if not queued:
                return
            _, _, mt, _, _, queued = await self._sbd_session()
            waiting = mt == 1

    async def _fetch_sbd(self) -> None:
        """``SBDRING``: a mobile-terminated message waits at the gateway."""
        try:
            _, _, mt, _, _, queued = await self._sbd_session()
            await self._read_mt(mt == 1, queued)
        except (AtError, SatphoneError, TimeoutError) as exc:
            self.last_error = f"SBD fetch failed: {exc}"
            self._report(SatFault(self.name, self.last_error))

    # --- the link ---------------------------------------------------------------------------

    def _open_port(self, protocol: Any, device: str, reactor: Any, *, baudrate: int) -> Any:
        port = self._port_factory(_LossWatch(protocol, self._link_lost), device, reactor,
                                  baudrate=baudrate)
        self._bring_up = asyncio.get_running_loop().create_task(self._initialise())
        return port

    def _link_lost(self, reason: Any) -> None:
        self.up = False
        if self._stopping:
            return
        why = getattr(reason, "getErrorMessage", lambda: str(reason))()
        self.last_error = f"link lost: {why}"
        self._report(SatLinkDown(self.name, why))
        if self.call is not None and self.call.state != "ended":
            self._set_call("ended", self.call.number, self.call.incoming, "link lost")

    async def _initialise(self) -> None:
        timeout = self.settings.command_timeout_s
        try:
            await self.device.command("ATE0", timeout=timeout)
            await self.device.command("AT+CMEE=1", timeout=timeout)
            await self._reconcile_calls()
            for command in ("AT+CMGF=0", "AT+CNMI=2,2,0,0,0", "AT+CLIP=1", "AT+CREG=1"):
                await self.device.command(command, timeout=timeout)
            for iridium_only in ("AT+CIER=1,1", "AT+SBDMTA=1"):
                with contextlib.suppress(AtCommandError):
                    await self.device.command(iridium_only, timeout=timeout)
            await self._refresh(timeout)
        except AtError as exc:
            self.last_error = f"initialisation failed: {exc}"
            self._report(SatFault(self.name, self.last_error))
            if not isinstance(exc, AtLinkDown) and not self._stopping:
                asyncio.get_running_loop().call_later(self.settings.retry_s, self._retry_init)
            return
        self.up = True
        self._report(SatLinkUp(self.name))

    def _retry_init(self) -> None:
        if not self._stopping and not self.up and self.device.link.connected:
            self._bring_up = asyncio.get_running_loop().create_task(self._initialise())

    async def _reconcile_calls(self) -> None:
        """A call nobody knows about (left by a crashed predecessor) is hung up."""
        response = await self.device.command("AT+CLCC", timeout=self.settings.command_timeout_s)
        listed = [line for line in response.lines if line.startswith("+CLCC")]
        if listed and (self.call is None or self.call.state == "ended"):
            await self.device.command("ATH", timeout=self.settings.command_timeout_s)
            number = _clcc_number(listed[0])
            self._report(CallStateChanged(self.name, "ended", number, False,
                                          "reconciled at start-up"))

    async def _refresh(self, timeout: float) -> None:
        response = await self.device.command("AT+CSQ", timeout=timeout)
        for line in response.lines:
            if line.startswith("+CSQ"):
                self._set_signal(line[4:].lstrip(":").strip())
        response = await self.device.command("AT+CREG?", timeout=timeout)
        for line in response.lines:
            if line.startswith("+CREG"):
                fields = line[6:].split(",")
                self._set_registration(fields[-1].strip() if fields else "")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_s)
            if not self.up:
                continue
            try:
                await self._refresh(self.settings.command_timeout_s)
                response = await self.device.command("AT+CLCC",
                                                     timeout=self.settings.command_timeout_s)
            except AtError as exc:
                self.last_error = f"poll failed: {exc}"
                continue
            call = self.call
            if call is not None and call.state in ("ringing", "active") and not any(
                    line.startswith("+CLCC") for line in response.lines):
                self._set_call("ended", call.number, call.incoming, "phone lists no call")

    # --- unsolicited codes ------------------------------------------------------------------

    async def _read_unsolicited(self) -> None:
        while True:
            urc = await self.device.unsolicited.get()
            try:
                self._on_urc(urc)
            except Exception:  # a bug must not stop the phone being served
                log.exception("bug handling an unsolicited code",
                              extra={"device": self.name, "urc": urc.name})

    def _on_urc(self, urc: Unsolicited) -> None:
        name, value = urc.name.upper(), urc.value.strip()
        if name in ("RING", "+CRING"):
            if self.call is None or self.call.state == "ended":
                self._set_call("ringing", "", True)
        elif name == "+CLIP":
            number = value.split(",")[0].strip().strip('"')[:32]
            if self.call is not None and self.call.state == "ringing" and not self.call.number:
                self._set_call("ringing", number, True)
        elif name in ("NO CARRIER", "BUSY", "NO ANSWER"):
            if self.call is not None and self.call.state != "ended":
                self._set_call("ended", self.call.number, self.call.incoming,
                               "far end hung up" if name == "NO CARRIER" else name.lower())
        elif name == "+CIEV":
            fields = value.split(",")
            if len(fields) >= 2 and fields[0].strip() == "0":
                self._set_signal(fields[1])
        elif name == "+CREG":
            self._set_registration(value.split(",")[0])
        elif name == "+CMT":
            self._on_cmt(urc)
        elif name in ("SBDRING", "+SBDRING"):
            task = asyncio.get_running_loop().create_task(self._fetch_sbd())
            self._sbd_tasks.add(task)
            task.add_done_callback(self._sbd_tasks.discard)

    def _on_cmt(self, urc: Unsolicited) -> None:
        if not urc.extra_lines:
            self._report(SatFault(self.name, "+CMT without its PDU"))
            return
        try:
            reported = parse_reported(f"+CMT: {urc.value}", urc.extra_lines[0])
        except SmsError as exc:
            self._report(SatFault(self.name, f"undecodable SMS: {exc}"))
            return
        message = reported.message
        if not isinstance(message, SmsDeliver):
            return
        now = asyncio.get_running_loop().time()
        self._deliver(self._reassembler.add(message.as_part(), now))

    def _deliver(self, messages: list[InboundMessage]) -> None:
        for whole in messages:
            self._report(SmsReceived(self.name, whole.sender, whole.text, whole.timestamp,
                                     whole.complete))
        # A part that never arrives must not hold the others back for ever.
        if self._sms_timer is not None:
            self._sms_timer.cancel()
            self._sms_timer = None
        when = self._reassembler.get_timer()
        if when is not None:
            self._sms_timer = asyncio.get_running_loop().call_at(when, self._sms_expired, when)

    def _sms_expired(self, when: float) -> None:
        self._sms_timer = None
        now = max(asyncio.get_running_loop().time(), when)
        self._deliver(self._reassembler.handle_timer(now))

    # --- plumbing ---------------------------------------------------------------------------

    def _set_signal(self, text: str) -> None:
        match = _FIRST_INT.search(text)
        if match is None or len(match.group(1)) > 3:
            return
        signal = int(match.group(1))
        if signal != self.signal:
            self.signal = signal
            self._report(SignalChanged(self.name, signal))

    def _set_registration(self, text: str) -> None:
        match = _FIRST_INT.search(text)
        if match is None or len(match.group(1)) > 2:
            return
        stat = int(match.group(1))
        if stat != self.registration:
            self.registration = stat
            self._report(RegistrationChanged(self.name, stat, stat in (1, 5)))

    def _set_call(self, state: str, number: str, incoming: bool, why: str = "") -> None:
        event = CallStateChanged(self.name, state, number, incoming, why)
        self.call = None if state == "ended" else event
        self._report(event)

    def _report(self, event: SatphoneEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a broken subscriber must not stop the phone being served
            log.exception("satphone event callback failed", extra={"device": self.name})


def _clcc_number(line: str) -> str:
    fields = line.split(",")
    return fields[5].strip().strip('"')[:32] if len(fields) > 5 else ""
