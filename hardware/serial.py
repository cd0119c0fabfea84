"""Serial ports on the asyncio loop, through pyserial and Twisted's ``SerialPort``.

A :class:`SerialLink` keeps one device open: it opens the port at start (and
fails loudly if the device is missing), notices when a USB adapter vanishes,
and reopens it every ``retry_s`` seconds until it is back.  The bytes go to a
Twisted protocol built by the caller's factory, so an AT engine, a TETRA PEI
driver or a raw line reader can sit behind the same link.

The port factory is replaceable, so tests can put an emulator or a hostile
peer behind it; the reactor is passed in (Twisted's asyncio reactor installed
by the daemon), never imported here.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class PortFactory(Protocol):
    """Opens a device: Twisted's ``SerialPort`` signature, narrowed."""

    def __call__(self, protocol: Any, device: str, reactor: Any, *, baudrate: int) -> Any:
        """Open ``device`` and connect it to ``protocol``; raise if it cannot be opened."""


#: Empty reads in a row from a tty that is not hung up, after which the link is
#: dropped anyway (and reopened): a driver that keeps reporting "readable" with
#: nothing to read would otherwise spin the loop.
MAX_EMPTY_READS = 1000


def tty_hung_up(fd: int) -> bool:
    """True if ``fd`` (a tty) reports a hang-up or an error now, without waiting.

    Linux answers ``POLLHUP``/``POLLERR`` on a tty whose device is gone (a USB
    adapter pulled: the tty is hung up and reads return 0 bytes), and on a pty
    whose other end was closed.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    try:
        ready = poller.poll(0)
    except OSError:
        return True
    return any(event & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
               for _fd, event in ready)


@functools.cache
def _serial_port_class() -> type:
    from twisted.internet import main
    from twisted.internet.serialport import SerialPort

    class TtySerialPort(SerialPort):
        """Twisted's ``SerialPort``, where an empty read is not taken for the end.

        Twisted reads a serial port as a pipe: 0 bytes means the other side
        closed.  On a tty it can also mean another reader of the same device
        took the bytes between our wake-up and our read (two processes on one
        port: a node woken from a stall before it closes the radio's port), and
        dropping the link then would revoke every grant on a radio that works.
        So an empty read ends the connection only if the tty is hung up (the
        device is gone) or after :data:`MAX_EMPTY_READS` of them in a row.
        """

        _empty_reads = 0

        def doRead(self) -> Any:  # noqa: N802 - Twisted's name
            try:
                fd = self.fileno()  # type: ignore[no-untyped-call]
                data = os.read(fd, 8192)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return None
                return main.CONNECTION_LOST
            if data:
                self._empty_reads = 0
                self.protocol.dataReceived(data)
                return None
            self._empty_reads += 1
            if self._empty_reads >= MAX_EMPTY_READS or tty_hung_up(fd):
                return main.CONNECTION_DONE
            return None

    return TtySerialPort


def twisted_serial_port(protocol: Any, device: str, reactor: Any, *, baudrate: int) -> Any:
    """The real thing: Twisted's ``SerialPort`` (pyserial underneath), see ``TtySerialPort``."""
    return _serial_port_class()(protocol, device, reactor, baudrate=baudrate)


@dataclass
class LinkStats:
    """Counters a link keeps for ``/health``."""

    opens: int = 0
    losses: int = 0
    bytes_in: int = 0
    last_error: str | None = None


class _Watch:
    """Wraps the caller's protocol to see data and connection loss."""

    def __init__(self, inner: Any, link: SerialLink) -> None:
        self.inner = inner
        self.link = link

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.link.stats.bytes_in += len(data)
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        try:
            self.inner.connectionLost(reason)
        finally:
            self.link._lost(reason)


class SerialLink:
    """One serial device kept open, with reopen after loss."""

    def __init__(
        self,
        name: str,
        device: str,
        protocol_factory: Callable[[], Any],
        reactor: Any,
        *,
        baudrate: int = 9600,
        retry_s: float = 5.0,
        port_factory: PortFactory = twisted_serial_port,
        on_down: Callable[[str], None] | None = None,
        on_up: Callable[[], None] | None = None,
    ) -> None:
        """Describe the link; nothing is opened until :meth:`start`."""
        self.name = name
        self.device = device
        self.baudrate = baudrate
        self.retry_s = retry_s
        self.stats = LinkStats()
        self._protocol_factory = protocol_factory
        self._reactor = reactor
        self._port_factory = port_factory
        self._on_down = on_down
        self._on_up = on_up
        self._port: Any = None
        self._protocol: Any = None
        self._stopping = False
        self._reopen: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """True while the device is open."""
        return self._port is not None

    @property
    def protocol(self) -> Any:
        """The protocol instance of the current connection (``None`` when down)."""
        return self._protocol

    def _open(self) -> None:
        protocol = self._protocol_factory()
        try:
            self._port = self._port_factory(
                _Watch(protocol, self), self.device, self._reactor, baudrate=self.baudrate
            )
        except Exception as exc:  # pyserial raises SerialException, an OSError, ...
            self.stats.last_error = f"cannot open {self.device}: {exc}"
            raise OSError(self.stats.last_error) from exc
        self._protocol = protocol
        self.stats.opens += 1
        self.stats.last_error = None
        log.info("serial device open", extra={"device": self.name, "port": self.device})

    async def start(self) -> None:
        """Open the device now; raise ``OSError`` if it is not there."""
        self._stopping = False
        self._open()

    def _lost(self, reason: Any) -> None:
        self._port = None
        self._protocol = None
        if self._stopping:
            return
        self.stats.losses += 1
        message = getattr(reason, "getErrorMessage", lambda: str(reason))()
        self.stats.last_error = f"{self.device} lost: {message}"
        log.warning("serial device lost", extra={"device": self.name, "error": message})
        if self._on_down is not None:
            self._on_down(self.stats.last_error)
        self._reopen = asyncio.get_running_loop().create_task(self._reopen_loop())

    async def _reopen_loop(self) -> None:
        while not self._stopping and self._port is None:
            await asyncio.sleep(self.retry_s)
            if self._stopping:
                return
            try:
                self._open()
            except OSError:
                continue
            if self._on_up is not None:
                self._on_up()

    def write(self, data: bytes) -> None:
        """Send bytes to the device; ``OSError`` if it is not open."""
        if self._port is None:
            raise OSError(f"{self.device} is not open")
        self._port.write(data)

    async def stop(self) -> None:
        """Close the device and stop trying to reopen it."""
        self._stopping = True
        if self._reopen is not None:
            self._reopen.cancel()
        port, self._port = self._port, None
        if port is not None:
            port.loseConnection()

    def health(self) -> dict[str, Any]:
        """Connection state and counters."""
        return {
            "port": self.device,
            "connected": self.connected,
            "opens": self.stats.opens,
            "losses": self.stats.losses,
            "bytes_in": self.stats.bytes_in,
            "last_error": self.stats.last_error,
        }
