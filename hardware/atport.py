"""The asyncio side of the AT engine: a Twisted protocol on a serial link.

:class:`AtProtocol` feeds the bytes a transport (a ``SerialLink``'s port, or
anything with ``write``) delivers into an :class:`~hardware.at.AtEngine`,
writes what the engine wants written, and arms ``loop.call_at`` from
``engine.get_timer()``: the only place the loop's clock is read.  Callers
``await protocol.command("AT+CSQ", timeout=2)`` and get an
:class:`AtResponse` or an :class:`~hardware.at.AtError`; unsolicited result
codes go to an ``asyncio.Queue`` (bounded: a flood from a broken device drops
the oldest, never grows memory).

:class:`AtDevice` keeps one device open through :class:`~hardware.serial.SerialLink`
with a queue of unsolicited codes that survives reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import Protocol

from hardware.at import (
    AtCallFailed,
    AtCmeError,
    AtCmsError,
    AtCommandError,
    AtEngine,
    AtLinkDown,
    AtSettings,
    AtTimeout,
    CommandCompleted,
    CommandFailed,
    CommandTimedOut,
    Event,
    FinalResult,
    ProtocolError,
    Resynchronised,
    Unsolicited,
)
from hardware.serial import PortFactory, SerialLink, twisted_serial_port

log = logging.getLogger(__name__)

_CALL_RESULTS = frozenset({FinalResult.NO_CARRIER, FinalResult.BUSY, FinalResult.NO_ANSWER,
                           FinalResult.NO_DIALTONE})


@dataclass(frozen=True)
class AtResponse:
    """A command that ended with ``OK`` (or ``CONNECT``): the final line and the lines before."""

    final: str
    lines: tuple[str, ...]
    data: bytes | None = None


def failure(event: CommandFailed) -> AtCommandError:
    """The exception a failed command raises in its caller."""
    kind: type[AtCommandError] = AtCommandError
    if event.result is FinalResult.CME_ERROR:
        kind = AtCmeError
    elif event.result is FinalResult.CMS_ERROR:
        kind = AtCmsError
    elif event.result in _CALL_RESULTS:
        kind = AtCallFailed
    return kind(event.final, event.result, event.error_code, event.lines)


class AtProtocol(Protocol):
    """An AT engine on a transport, for asyncio callers."""

    def __init__(self, settings: AtSettings | None = None, *,
                 unsolicited: asyncio.Queue[Unsolicited] | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 name: str = "at") -> None:
        """``unsolicited`` may be shared across reconnects; ``on_event`` sees every event."""
        self.engine = AtEngine(settings)
        self.name = name
        self.unsolicited: asyncio.Queue[Unsolicited] = (
            unsolicited if unsolicited is not None else asyncio.Queue(1000))
        self._on_event = on_event
        self._futures: dict[int, tuple[str, asyncio.Future[AtResponse]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.transport: Any = None

    # --- Twisted's side ---------------------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        """Remember the transport (Twisted calls this when the port opens)."""
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        """Bytes from the device."""
        self._after(self.engine.receive_data(data, asyncio.get_running_loop().time()))

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        """The port closed: every pending command fails with :class:`AtLinkDown`."""
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.engine.reset()
        futures, self._futures = self._futures, {}
        for command, future in futures.values():
            if not future.done():
                future.set_exception(AtLinkDown(f"{self.name}: link lost during {command}"))

    # --- the caller's side ------------------------------------------------------------------

    async def command(self, command: str, *, timeout: float | None = None,
                      prompt_payload: str | None = None, payload: str | None = None,
                      binary_response: bool = False) -> AtResponse:
        """Run one command; raise :class:`~hardware.at.AtError` subclasses on failure.

        ``prompt_payload`` is written after the ``"> "`` prompt (TS 27.005
        ``AT+CMGS``); ``payload`` is written straight after the command (TETRA
        PEI ``AT+CMGS``).  Control characters are refused before anything is
        written.  ``binary_response`` reads an Iridium ``+SBDRB`` body into
        ``AtResponse.data``.  Cancelling the await drops the command if it is
        still queued.
        """
        if self.transport is None:
            raise AtLinkDown(f"{self.name}: not connected")
        loop = asyncio.get_running_loop()
        handle = self.engine.send(
            command, loop.time(), expect_prompt=prompt_payload is not None,
            payload=prompt_payload if prompt_payload is not None else payload, timeout=timeout,
            binary_response=binary_response)
        future: asyncio.Future[AtResponse] = loop.create_future()
        self._futures[handle] = (command, future)
        self._after([])
        try:
            return await future
        except asyncio.CancelledError:
            self.engine.cancel(handle)
            self._futures.pop(handle, None)
            raise

    # --- plumbing ---------------------------------------------------------------------------

    def _after(self, events: list[Event]) -> None:
        data = self.engine.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
        for event in events:
            self._dispatch(event)
        self._arm()

    def _dispatch(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)
        if isinstance(event, CommandCompleted | CommandFailed | CommandTimedOut):
            command, future = self._futures.pop(event.handle, ("", None))
            if future is None or future.done():
                return
            if isinstance(event, CommandCompleted):
                future.set_result(AtResponse(event.final, event.lines, event.data))
            elif isinstance(event, CommandFailed):
                future.set_exception(failure(event))
            else:
                future.set_exception(AtTimeout(f"{self.name}: no answer to {command}"))
        elif isinstance(event, Unsolicited):
            if self.unsolicited.full():
                dropped = self.unsolicited.get_nowait()
                log.warning("unsolicited queue full, dropped the oldest",
                            extra={"device": self.name, "urc": dropped.name})
            self.unsolicited.put_nowait(event)
        elif isinstance(event, Resynchronised):
            log.info("AT link resynchronised", extra={"device": self.name, "probes": event.probes})
        elif isinstance(event, ProtocolError):
            log.warning("AT protocol error", extra={"device": self.name,
                                                    "code": event.code.value,
                                                    "detail": event.detail})

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.engine.get_timer()
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        self._timer = None
        # call_at may run a hair before ``when`` (clock resolution): never hand the core
        # a time earlier than the deadline it asked for.
        now = max(asyncio.get_running_loop().time(), when)
        self._after(self.engine.handle_timer(now))


class AtDevice:
    """One AT device on a serial link: commands, and unsolicited codes across reconnects."""

    def __init__(self, name: str, device: str, reactor: Any, *,
                 settings: AtSettings | None = None, baudrate: int = 115200,
                 retry_s: float = 5.0, port_factory: PortFactory = twisted_serial_port,
                 on_event: Callable[[Event], None] | None = None,
                 max_unsolicited: int = 1000) -> None:
        """Describe the device; nothing is opened until :meth:`start`."""
        self.name = name
        self.unsolicited: asyncio.Queue[Unsolicited] = asyncio.Queue(max_unsolicited)
        self.link = SerialLink(
            name, device,
            lambda: AtProtocol(settings, unsolicited=self.unsolicited, on_event=on_event,
                               name=name),
            reactor, baudrate=baudrate, retry_s=retry_s, port_factory=port_factory)

    async def start(self) -> None:
        """Open the port; ``OSError`` if the device is missing."""
        await self.link.start()

    async def stop(self) -> None:
        """Close the port and stop reopening it."""
        await self.link.stop()

    def health(self) -> dict[str, Any]:
        """The link's counters and the engine's state (``resync`` means desynchronised)."""
        health = self.link.health()
        protocol = self.link.protocol
        health["at_state"] = protocol.engine.state.value if protocol is not None else None
        return health

    async def command(self, command: str, *, timeout: float | None = None,
                      prompt_payload: str | None = None, payload: str | None = None,
                      binary_response: bool = False) -> AtResponse:
        """Run one command on the current connection (see :meth:`AtProtocol.command`)."""
        protocol = self.link.protocol
        if protocol is None:
            raise AtLinkDown(f"{self.name}: not connected")
        response: AtResponse = await protocol.command(
            command, timeout=timeout, prompt_payload=prompt_payload, payload=payload,
            binary_response=binary_response)
        return response
