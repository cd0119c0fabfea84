"""GSM modems over serial as an SMS transport: 3GPP TS 27.005 PDU mode, sent and received.

Theory of operation.  A :class:`GsmModem` owns one :class:`~hardware.atport.AtDevice`
(one AT command in flight, unsolicited codes on their own queue).  Before its
first use on a connection it is initialised: ``ATE0``, ``AT+CMEE=1``,
``AT+CMGF=0`` (PDU mode) and ``AT+CNMI=2,1,0,0,0`` (store incoming messages and
say so with ``+CMTI``), then ``AT+CMGL=4`` collects what arrived while nobody
was listening.  A link loss (``AtLinkDown``) marks it uninitialised again.

Sending: the text is segmented (GSM-7 or UCS-2, UDH for long ones), each part
goes as ``AT+CMGS=<tpdu length>``, the ``"> "`` prompt, the PDU in hex.  Messages
go one at a time, parts together (a lock, not the AT engine's queue); before each
``AT+CMGS`` the modem looks at :attr:`GsmModem.hold`: while it returns True
nothing is written and the send waits (a clustered node that may have been
taken over holds until its heartbeat says whether it is still itself; see
dispatch/fencing.py).  Queuing every part in the engine instead would let a node
woken from a stall write them all before it knows.  A
``+CMS ERROR`` is a refusal (temporary or permanent by its code); a timeout
or a lost link after the command was written is an unknown outcome.  Modems
cannot replace a message already sent, so ``replace_if_present`` is not
available here (routes should send campaigns through SMPP first).

Receiving: each ``+CMTI: "SM",<index>`` is read with ``AT+CMGR``; parts of a
concatenated message are joined by :class:`~sms.inbound.Reassembler`, and the
stored parts are deleted (``AT+CMGD``) only after the whole message has been
handed to the callback and it returned: a daemon killed in between finds the
parts still on the SIM at the next start.

:class:`ModemPool` spreads sends over its modems (the least busy one that is up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hardware.at import AtCmsError, AtError, AtLinkDown, AtTimeout
from hardware.atport import AtDevice
from hardware.serial import PortFactory, twisted_serial_port

from ..encoding import segment
from ..errors import PduDecodeError, SmsError
from ..inbound import InboundMessage, Reassembler
from ..modem_pdu import parse_cmgs, parse_cmti, parse_reported
from ..pdu import SmsDeliver, encode_submit
from .errors import SubmitOutcomeUnknownError, SubmitPermanentError, SubmitTemporaryError

log = logging.getLogger(__name__)

#: +CMS ERROR codes after which the same message will fail again (TS 27.005 §3.2.5,
#: TS 24.011 cause values below 128).  Anything else is worth another try later.
PERMANENT_CMS = frozenset({1, 8, 10, 21, 27, 28, 29, 30, 38, 50, 69, 81, 95, 96, 97, 98, 99,
                           111, 127, 301, 302, 303, 304, 305, 310, 311, 312, 313, 316, 317,
                           318, 325})
INIT = ("ATE0", "AT+CMEE=1", "AT+CMGF=0", "AT+CNMI=2,1,0,0,0")
#: How often a held send (``GsmModem.hold``) looks again, seconds.
HOLD_RECHECK_S = 0.05


@dataclass(frozen=True)
class ModemSms:
    """A whole message a modem received."""

    modem: str
    message: InboundMessage


ModemCallback = Callable[[ModemSms], Awaitable[None]]


@dataclass
class _Held:
    indexes: list[int] = field(default_factory=list)


class GsmModem:
    """One GSM modem: send in PDU mode, turn ``+CMTI`` into whole messages."""

    def __init__(self, name: str, device: str, reactor: Any, *, baudrate: int = 115200,
                 command_timeout: float = 30.0, smsc: str = "",
                 on_message: ModemCallback | None = None,
                 port_factory: PortFactory = twisted_serial_port,
                 reassembly_timeout: float = 600.0) -> None:
        """Nothing is opened until :meth:`start`."""
        self.name = name
        self.device = AtDevice(name, device, reactor, baudrate=baudrate,
                               port_factory=port_factory)
        self.command_timeout = command_timeout
        self.smsc = smsc or None
        self._on_message = on_message
        self._ready = False
        self._init_lock = asyncio.Lock()
        self._reassembler = Reassembler(timeout=reassembly_timeout)
        self._held: dict[tuple[str, int, int, int], _Held] = {}
        self._reader: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self.busy = 0
        self.sent = 0
        self.received = 0
        self.held = 0
        self.last_error = ""
        self.hold: Callable[[], bool] | None = None
        """While this returns True no ``AT+CMGS`` is written: sends wait (a clustered
        node that may have been taken over holds until it knows)."""

    @property
    def up(self) -> bool:
        """True while the port is open."""
        return self.device.link.protocol is not None

    async def start(self) -> None:
        """Open the port (retried in the background if missing) and start reading."""
        with contextlib.suppress(OSError):
            await self.device.start()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(),
                                                              name=f"modem-{self.name}")

    async def stop(self) -> None:
        """Stop reading and close the port."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        await self.device.stop()

    def health(self) -> dict[str, Any]:
        """Link state and counters."""
        return {"up": self.up, "ready": self._ready, "busy": self.busy, "sent": self.sent,
                "received": self.received, "held": self.held, "last_error": self.last_error,
                "pending_inbound": self._reassembler.pending_count}

    async def _command(self, command: str, **kwargs: Any) -> Any:
        try:
            return await self.device.command(command, timeout=self.command_timeout, **kwargs)
        except AtLinkDown:
            self._ready = False
            raise

    async def ensure_ready(self) -> None:
        """Initialise the modem on this connection (once), then collect stored messages."""
        async with self._init_lock:
            if self._ready:
                return
            for command in INIT:
                await self._command(command)
            self._ready = True
        listed = await self._command("AT+CMGL=4")
        lines = list(listed.lines)
        for header, pdu in zip(lines[::2], lines[1::2], strict=False):
            await self._take(header, pdu)

    # ------------------------------------------------------------ sending

    async def submit(self, destination: str, text: str, *, max_parts: int,
                     urgent: bool = False) -> tuple[str, ...]:
        """Send every part; return the TP-MRs; raise the transport's Submit*Error."""
        self.busy += 1
        try:
            try:
                await self.ensure_ready()
            except AtError as exc:
                raise SubmitTemporaryError(f"{self.name}: modem not ready: {exc}",
                                           destination=destination) from None
            try:
                pdus = encode_submit(destination, segment(text, max_parts=max_parts),
                                     smsc=self.smsc)
            except SmsError as exc:
                raise SubmitPermanentError(f"{self.name}: {exc}",
                                           destination=destination) from None
            refs: list[str] = []
            async with self._send_lock:  # one message at a time, its parts together
                for pdu in pdus:
                    await self._wait_hold()
                    refs.append(await self._send_part(destination, pdu.tpdu_length, pdu.hex,
                                                      tuple(refs)))
            self.sent += 1
            return tuple(refs)
        finally:
            self.busy -= 1

    async def _wait_hold(self) -> None:
        """Return when :attr:`hold` lets this node write (at once when there is none)."""
        if self.hold is None or not self.hold():
            return
        self.held += 1
        log.warning("modem %s: holding its sends until this node may act again", self.name)
        while self.hold is not None and self.hold():
            await asyncio.sleep(HOLD_RECHECK_S)

    async def _send_part(self, destination: str, length: int, hex_pdu: str,
                         accepted: tuple[str, ...]) -> str:
        try:
            response = await self._command(f"AT+CMGS={length}", prompt_payload=hex_pdu)
        except AtCmsError as exc:
            self.last_error = str(exc)
            code = exc.error_code
            kind = SubmitPermanentError if code in PERMANENT_CMS else SubmitTemporaryError
            raise kind(f"{self.name}: +CMS ERROR {code}", destination=destination,
                       status=code, accepted=accepted) from None
        except (AtTimeout, AtLinkDown) as exc:
            # The PDU may have reached the network before the answer was lost.
            self.last_error = str(exc)
            raise SubmitOutcomeUnknownError(f"{self.name}: {exc}", destination=destination,
                                            accepted=accepted) from None
        except AtError as exc:
            self.last_error = str(exc)
            raise SubmitTemporaryError(f"{self.name}: {exc}", destination=destination,
                                       accepted=accepted) from None
        for line in response.lines:
            with contextlib.suppress(PduDecodeError):
                return f"{self.name}:{parse_cmgs(line)}"
        return f"{self.name}:?"

    # ------------------------------------------------------------ receiving

    async def _read_loop(self) -> None:
        while True:
            if not self._ready and self.up:
                with contextlib.suppress(AtError):
                    await self.ensure_ready()
            timer = self._reassembler.get_timer()
            loop = asyncio.get_running_loop()
            wait = 5.0 if timer is None else max(0.0, min(5.0, timer - loop.time()))
            try:
                async with asyncio.timeout(wait):
                    urc = await self.device.unsolicited.get()
            except TimeoutError:
                for message in self._reassembler.handle_timer(loop.time()):
                    await self._deliver(message, self._pop_held(message))
                continue
            if urc.name != "+CMTI":
                continue
            try:
                _, index = parse_cmti(f"+CMTI: {urc.value}")
                read = await self._command(f"AT+CMGR={index}")
                await self._take(read.lines[0], read.lines[1], index)
            except (AtError, PduDecodeError, IndexError) as exc:
                log.warning("modem %s: cannot read stored message: %s", self.name, exc)
            except Exception:  # the callback failed: the message stays on the SIM
                log.exception("modem %s: storing a received message failed", self.name)

    async def _take(self, header: str, pdu_line: str, index: int | None = None) -> None:
        """One stored PDU: reassemble, hand over whole messages, then delete their parts."""
        try:
            reported = parse_reported(header, pdu_line)
        except PduDecodeError as exc:
            log.warning("modem %s: undecodable stored PDU dropped: %s", self.name, exc)
            if (index := reported_index(header, index)) is not None:
                await self._delete([index])
            return
        index = reported.index if reported.index is not None else index
        message = reported.message
        if not isinstance(message, SmsDeliver):
            if index is not None:
                await self._delete([index])
            return
        part = message.as_part()
        info = part.concat
        key = None
        if info is not None and info.total > 1 and 1 <= info.seq <= info.total:
            key = (part.sender, info.ref_bits, info.ref, info.total)
            if index is not None:
                self._held.setdefault(key, _Held()).indexes.append(index)
        loop = asyncio.get_running_loop()
        for whole in self._reassembler.add(part, loop.time()):
            if key is None:
                indexes = [index] if index is not None else []
            elif whole.complete and key in self._held:
                indexes = self._held.pop(key).indexes
            else:
                indexes = self._pop_held(whole)
            await self._deliver(whole, indexes)

    def _pop_held(self, message: InboundMessage) -> list[int]:
        for key in list(self._held):
            if key[0] == message.sender and key[3] == message.parts_total:
                return self._held.pop(key).indexes
        return []

    async def _deliver(self, message: InboundMessage, indexes: Sequence[int]) -> None:
        self.received += 1
        if self._on_message is not None:
            await self._on_message(ModemSms(self.name, message))
        await self._delete(indexes)

    async def _delete(self, indexes: Sequence[int]) -> None:
        for index in indexes:
            with contextlib.suppress(AtError):
                await self._command(f"AT+CMGD={index}")


def reported_index(header: str, index: int | None) -> int | None:
    """The storage index a ``+CMGL`` header names (or the one we read with ``+CMGR``)."""
    if header.startswith("+CMGL:"):
        head = header[6:].split(",", 1)[0].strip()
        return int(head) if head.isdigit() else index
    return index


class ModemPool:
    """Several modems behind one submit: the least busy modem that is up sends."""

    def __init__(self, name: str, modems: Sequence[GsmModem]) -> None:
        """``modems`` are started and stopped with the pool."""
        if not modems:
            raise ValueError("a modem pool needs at least one modem")
        self.name = name
        self.modems = tuple(modems)

    @property
    def up(self) -> bool:
        """True while some modem's port is open."""
        return any(m.up for m in self.modems)

    async def start(self) -> None:
        """Open every modem."""
        for modem in self.modems:
            await modem.start()

    async def stop(self) -> None:
        """Close every modem."""
        await asyncio.gather(*(m.stop() for m in self.modems), return_exceptions=True)

    async def submit(self, destination: str, text: str, *, max_parts: int,
                     urgent: bool = False) -> tuple[str, ...]:
        """Send on the least busy modem; a modem that refuses for now hands over to the next."""
        order = sorted((m for m in self.modems if m.up), key=lambda m: m.busy)
        last: SubmitTemporaryError | None = None
        for modem in order:
            try:
                return await modem.submit(destination, text, max_parts=max_parts, urgent=urgent)
            except SubmitTemporaryError as exc:
                if exc.accepted:
                    raise
                last = exc
        raise last or SubmitTemporaryError(f"{self.name}: no modem is up",
                                           destination=destination)

    def health(self) -> dict[str, Any]:
        """Each modem's health."""
        return {"name": self.name, "modems": {m.name: m.health() for m in self.modems}}
