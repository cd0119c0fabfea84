"""asyncio adapters that own SIP sockets and drive a :class:`TransactionLayer`.

Theory of operation
-------------------
:class:`SipEndpoint` is the only place where the sans-I/O SIP cores meet the
event loop.  It listens on UDP, TCP and (optionally) TLS, on IPv4 and IPv6,
and opens outbound TCP/TLS connections on demand, reusing one connection per
destination and closing connections that stay idle.

Every datagram, and every frame cut by :class:`StreamFramer` from a stream,
goes through :func:`parse_message` and then :meth:`TransactionLayer.receive`.
The layer's events are drained at once: :class:`SendMessage` is written to a
socket, everything else goes to the :class:`TransactionUser`.  After every
input the single ``loop.call_at`` timer is re-armed from
:meth:`TransactionLayer.get_timer`; the layer's ``now`` is ``loop.time()``.

Bad input never kills the loop (STYLE 7): a :class:`SipError` is answered
statelessly (400, or the error's status) when the message carried enough to
answer, otherwise the message is dropped and logged with the peer.  A stream
framing error closes the connection after that answer.  Anything else is
logged as a bug and the endpoint keeps running.  Hard caps: the size of one
message (:class:`SipLimits`), the number of stream connections and the bytes
buffered per connection.

``admit(host)`` is an optional gate consulted before a single byte is
parsed; the registrar uses it to drop every packet of a blocked source.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from telephony.sip.errors import SipBadExtension, SipError, SipFramingError
from telephony.sip.events import (
    DEFAULT_TIMERS,
    DeliverRequest,
    DeliverResponse,
    SendMessage,
    StrayResponse,
    Terminated,
    TimerSettings,
    TransactionEvent,
    TransactionKey,
    TransactionTimeout,
    TransportError,
)
from telephony.sip.message import (
    DEFAULT_LIMITS,
    KEEPALIVE_PING,
    Destination,
    SipLimits,
    SipMessage,
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    check_require,
    parse_message,
    response_destination,
    stamp_via_received,
)
from telephony.sip.proxied import ProxyTrust
from telephony.sip.transaction import TransactionLayer, TransactionStateError

__all__ = [
    "ListenAddress",
    "MethodRouter",
    "NullTransactionUser",
    "SipEndpoint",
    "TransactionUser",
    "TransportSettings",
    "server_tls_context",
]

log = logging.getLogger(__name__)

STREAM_TRANSPORTS = ("TCP", "TLS")


class TransactionUser(Protocol):
    """What the endpoint hands the layer's events to (registrar, B2BUA, router)."""

    def on_request(self, event: DeliverRequest) -> None:
        """A new request (or an ACK outside a transaction); answer via the endpoint."""

    def on_response(self, event: DeliverResponse) -> None:
        """A response for one of our client transactions."""

    def on_stray_response(self, event: StrayResponse) -> None:
        """A response matching no client transaction (e.g. a retransmitted 2xx)."""

    def on_timeout(self, event: TransactionTimeout) -> None:
        """Timer B, F or H fired."""

    def on_transport_error(self, event: TransportError) -> None:
        """A message of this transaction could not be sent."""

    def on_terminated(self, event: Terminated) -> None:
        """The transaction is gone."""


class NullTransactionUser:
    """A TU that answers every request 501 (except ACK) and ignores the rest.

    Used until the daemon attaches its real TU, and as a base class with
    no-op handlers for TUs that care about few events.
    """

    endpoint: SipEndpoint | None = None

    def on_request(self, event: DeliverRequest) -> None:
        """Answer 501 Not Implemented."""
        if self.endpoint is not None and event.key is not None:
            self.endpoint.send_response(build_response(event.request, 501))

    def on_response(self, event: DeliverResponse) -> None:
        """Ignore."""

    def on_stray_response(self, event: StrayResponse) -> None:
        """Ignore."""

    def on_timeout(self, event: TransactionTimeout) -> None:
        """Ignore."""

    def on_transport_error(self, event: TransportError) -> None:
        """Ignore."""

    def on_terminated(self, event: Terminated) -> None:
        """Ignore."""


class MethodRouter(NullTransactionUser):
    """A TU that hands requests to per-method TUs; everything else to ``fallback``.

    Requests for a method nobody registered are answered 405 with Allow.
    ACKs without a transaction go to ``fallback`` (they belong to dialogs).
    """

    def __init__(self, endpoint: SipEndpoint, fallback: TransactionUser | None = None) -> None:
        self.endpoint = endpoint
        self.fallback: TransactionUser = fallback or NullTransactionUser()
        self._has_fallback = fallback is not None
        self._routes: dict[str, TransactionUser] = {}

    def route(self, method: str, user: TransactionUser) -> None:
        """Send requests of ``method`` to ``user``."""
        self._routes[method.upper()] = user

    def on_request(self, event: DeliverRequest) -> None:
        """Dispatch by method, or 405."""
        user = self._routes.get(event.request.method)
        if user is not None:
            user.on_request(event)
        elif event.key is None or self._has_fallback:
            self.fallback.on_request(event)
        else:
            allow = ", ".join(sorted(self._routes))
            assert self.endpoint is not None
            self.endpoint.send_response(
                build_response(event.request, 405, extra_headers=[("Allow", allow)]))

    def on_response(self, event: DeliverResponse) -> None:
        """To the fallback TU."""
        self.fallback.on_response(event)

    def on_stray_response(self, event: StrayResponse) -> None:
        """To the fallback TU."""
        self.fallback.on_stray_response(event)

    def on_timeout(self, event: TransactionTimeout) -> None:
        """To the fallback TU."""
        self.fallback.on_timeout(event)

    def on_transport_error(self, event: TransportError) -> None:
        """To the fallback TU."""
        self.fallback.on_transport_error(event)

    def on_terminated(self, event: Terminated) -> None:
        """To the fallback TU."""
        self.fallback.on_terminated(event)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One socket to listen on: transport (UDP/TCP/TLS), host, port (0 = any free)."""

    transport: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.transport.upper() not in ("UDP", "TCP", "TLS"):
            raise ValueError(f"unknown SIP transport {self.transport!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"bad port {self.port}")


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Typed settings of the SIP endpoint (validated once by the daemon's config)."""

    listen: tuple[ListenAddress, ...] = (ListenAddress("UDP", "127.0.0.1", 5060),)
    limits: SipLimits = DEFAULT_LIMITS
    timers: TimerSettings = DEFAULT_TIMERS
    max_connections: int = 1024
    """Inbound plus outbound stream connections; further accepts are refused."""
    max_buffered: int = 131072
    """Octets held for one connection before it is closed."""
    idle_timeout: float = 300.0
    """Stream connections with no traffic for this long are closed."""
    connect_timeout: float = 5.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    """CA bundle to verify outbound TLS peers with (system default if None)."""
    answer_options: bool = True
    """Answer OPTIONS here (200 with Allow/Accept/Supported) instead of the TU."""
    allow: tuple[str, ...] = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER")
    supported: tuple[str, ...] = ()
    user_agent: str = "dispatchd"


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context from PEM certificate chain and key paths."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _client_tls_context(ca: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@functools.lru_cache(maxsize=4096)
def _ip_version(host: str) -> int:
    """4 or 6 for an IP address literal, 0 for anything else (a name).

    Asked for every datagram sent; the peers of a node are few, so a bounded
    cache saves parsing the same address thousands of times a second.
    """
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0


def _is_ipv6(host: str) -> bool:
    return _ip_version(host) == 6


def _peer(address: object) -> tuple[str, int]:
    """(host, port) from a socket address (IPv6 addresses are 4-tuples)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return "?", 0


class _DatagramListener(asyncio.DatagramProtocol):
    """One UDP socket: hands datagrams to the endpoint."""

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport for sending."""
        # Python 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        """One datagram is one message."""
        host, port = _peer(addr)
        self.endpoint._received(data, Destination("UDP", host, port), None)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors on UDP: nothing to do per RFC 3261 but log."""
        log.debug("UDP error: %s", exc)


class _StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection, inbound or outbound, framed with :class:`StreamFramer`."""

    def __init__(self, endpoint: SipEndpoint, transport_name: str) -> None:
        self.endpoint = endpoint
        self.name = transport_name
        self.framer = StreamFramer(endpoint.settings.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Destination | None = None
        self.last_active = endpoint.loop_time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the endpoint, or refuse when over the connection cap."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = _peer(transport.get_extra_info("peername"))
        self.peer = Destination(self.name, host, port)
        if not self.endpoint._add_connection(self):
            log.warning("SIP %s connection from %s refused: connection cap", self.name, host)
            transport.abort()

    def data_received(self, data: bytes) -> None:
        """Cut frames; answer keep-alives; hand messages to the endpoint."""
        assert self.peer is not None and self.transport is not None
        self.last_active = self.endpoint.loop_time()
        if not self.endpoint._admitted(self.peer.host):
            self.transport.abort()
            return
        try:
            frames = self.framer.feed(data)
        except SipError as exc:
            log.info("SIP %s framing error from %s: %s", self.name, self.peer.host, exc)
            self.transport.close()
            return
        for frame in frames:
            if frame == KEEPALIVE_PING:
                self.transport.write(b"\r\n")  # RFC 5626 pong
            else:
                self.endpoint._received(frame, self.peer, self)
        if self.framer.buffered > self.endpoint.settings.max_buffered:
            log.warning("SIP %s peer %s over the buffer cap", self.name, self.peer.host)
            self.transport.abort()

    def write(self, data: bytes) -> bool:
        """Send bytes; False if the connection is already closing."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.last_active = self.endpoint.loop_time()
        self.transport.write(data)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self.endpoint._remove_connection(self)


@dataclass
class _Stats:
    received: int = 0
    sent: int = 0
    parse_errors: int = 0
    dropped: int = 0
    bugs: int = 0
    refused: int = 0


class SipEndpoint:
    """The SIP transport service: sockets, one transaction layer, one TU.

    Construct, set :attr:`user` (a :class:`TransactionUser`), then
    ``await start()``.  TUs answer through :meth:`send_response` and start
    client transactions with :meth:`send_request`.  ``bound`` lists the actual
    (transport, host, port) of every listener once started (port 0 resolved).
    """

    name = "sip"

    def __init__(
        self,
        settings: TransportSettings,
        user: TransactionUser | None = None,
        *,
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.proxy_trust = ProxyTrust()
        """Proxies whose X-Dispatchd-Source header is believed (see telephony.sip.proxied)."""
        self.user: TransactionUser = user or NullTransactionUser()
        self.admit = admit
        self.layer = TransactionLayer(settings.timers)
        self.bound: list[Destination] = []
        self.stats = _Stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: list[tuple[asyncio.DatagramTransport, bool]] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[Destination, _StreamConnection] = {}
        self._pending: dict[Destination, list[tuple[TransactionKey | None, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._idle_sweep: asyncio.TimerHandle | None = None
        self._server_tls: ssl.SSLContext | None = None
        self._client_tls: ssl.SSLContext | None = None

    # -- service lifecycle ---------------------------------------------------

    async def start(self) -> None:
        """Open every listener; raises OSError if one cannot bind."""
        loop = self._loop = asyncio.get_running_loop()
        s = self.settings
        if s.tls_cert and s.tls_key:
            self._server_tls = server_tls_context(s.tls_cert, s.tls_key)
        try:
            for spec in s.listen:
                await self._listen(loop, spec)
        except BaseException:
            await self.stop()
            raise
        self._arm_idle_sweep()

    async def _listen(self, loop: asyncio.AbstractEventLoop, spec: ListenAddress) -> None:
        transport = spec.transport.upper()
        if transport == "UDP":
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _DatagramListener(self), local_addr=(spec.host, spec.port)
            )
            self._udp.append((udp, _is_ipv6(spec.host)))
            sockname = udp.get_extra_info("sockname")
        else:
            if transport == "TLS" and self._server_tls is None:
                raise ValueError("a TLS listener needs tls_cert and tls_key")
            server = await loop.create_server(
                lambda: _StreamConnection(self, transport), spec.host, spec.port,
                ssl=self._server_tls if transport == "TLS" else None,
            )
            self._servers.append(server)
            sockname = server.sockets[0].getsockname()
        host, port = _peer(sockname)
        self.bound.append(Destination(transport, host, port))

    async def stop(self) -> None:
        """Close listeners and connections; pending transactions are abandoned."""
        for handle in (self._timer, self._idle_sweep):
            if handle is not None:
                handle.cancel()
        self._timer = self._idle_sweep = None
        for task in list(self._tasks):
            task.cancel()
        for udp, _ in self._udp:
            udp.close()
        for server in self._servers:
            server.close()
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            await server.wait_closed()
        self._udp.clear()
        self._servers.clear()
        self._connections.clear()
        self.bound.clear()

    def health(self) -> dict[str, object]:
        """Figures for the daemon's health endpoint."""
        return {
            "listening": [f"{d.transport} {d.host}:{d.port}" for d in self.bound],
            "transactions": len(self.layer),
            "connections": len(self._connections),
            "received": self.stats.received,
            "sent": self.stats.sent,
            "parse_errors": self.stats.parse_errors,
            "dropped": self.stats.dropped,
            "refused_connections": self.stats.refused,
            "bugs": self.stats.bugs,
        }

    def loop_time(self) -> float:
        """The layer's clock: the running loop's monotonic time."""
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def address(self, transport: str = "UDP", ipv6: bool = False) -> Destination:
        """The first bound listener of ``transport`` (for Via/Contact and tests)."""
        for dest in self.bound:
            if dest.transport == transport.upper() and _is_ipv6(dest.host) == ipv6:
                return dest
        raise LookupError(f"no {transport} listener (ipv6={ipv6})")

    # -- TU-facing API -------------------------------------------------------

    def send_response(self, response: SipResponse) -> None:
        """Send the TU's response through its server transaction."""
        try:
            self.layer.send_response(response, self.loop_time())
        except TransactionStateError as exc:
            # The transaction may have ended (connection lost): not fatal.
            log.info("SIP response not sent: %s", exc)
        self._pump()

    def send_request(self, request: SipRequest, destination: Destination) -> TransactionKey:
        """Start a client transaction; the request carries its own top Via."""
        key = self.layer.send_request(request, destination, self.loop_time())
        self._pump()
        return key

    def send_stateless(self, message: SipMessage, destination: Destination) -> None:
        """Send outside any transaction (ACK for 2xx, stateless replies)."""
        self.layer.send_stateless(message, destination)
        self._pump()

    # -- input path ----------------------------------------------------------

    def _admitted(self, host: str) -> bool:
        if self.admit is None:
            return True
        try:
            return self.admit(host)
        except Exception:
            log.exception("SIP admit gate failed for %s; admitting", host)
            return True

    def _received(self, data: bytes, source: Destination, conn: _StreamConnection | None) -> None:
        """One complete message from ``source``; never raises."""
        self.stats.received += 1
        if conn is None and not self._admitted(source.host):
            self.stats.dropped += 1
            return
        if data.strip(b"\r\n") == b"":
            return  # UDP keep-alive (CRLF) or empty datagram
        try:
            message = parse_message(data, self.settings.limits)
            if isinstance(message, SipRequest):
                origin = self.proxy_trust.screen(message, source)  # X-Dispatchd-Source
                if origin is not None and not self._admitted(origin.host):
                    self.stats.dropped += 1  # a blocked source behind a proxy
                    return
                self._check_request(message)
            self.layer.receive(message, source, self.loop_time())
        except SipError as exc:
            self._bad_message(exc, source, conn)
        except Exception:
            self.stats.bugs += 1
            log.exception("SIP bug handling a message from %s:%d", source.host, source.port)
        self._pump()

    def _check_request(self, request: SipRequest) -> None:
        check_require(request, self.settings.supported)

    def _bad_message(
        self, exc: SipError, source: Destination, conn: _StreamConnection | None
    ) -> None:
        self.stats.parse_errors += 1
        request = exc.request
        if request is None or request.method == "ACK":
            self.stats.dropped += 1
            log.info("SIP dropped from %s:%d: %s", source.host, source.port, exc)
        else:
            log.info("SIP rejected from %s:%d: %s", source.host, source.port, exc)
            extra: list[tuple[str, str]] = []
            if isinstance(exc, SipBadExtension):
                extra.append(("Unsupported", ", ".join(exc.unsupported)))
            stamp_via_received(request, source.host, source.port)
            reply = build_response(request, exc.status, exc.reason, extra)
            self.layer.send_stateless(reply, response_destination(request.top_via, source))
        if conn is not None and isinstance(exc, SipFramingError) and conn.transport is not None:
            self._pump()
            conn.transport.close()

    def _pump(self) -> None:
        """Drain the layer's events, then re-arm the single timer."""
        while (event := self.layer.next_event()) is not None:
            try:
                self._dispatch(event)
            except Exception:
                self.stats.bugs += 1
                log.exception("SIP bug dispatching %s", type(event).__name__)
        self._arm_timer()

    def _dispatch(self, event: TransactionEvent) -> None:
        if isinstance(event, SendMessage):
            self._send(event)
        elif isinstance(event, DeliverRequest):
            if self._answer_options(event):
                return
            self.user.on_request(event)
        elif isinstance(event, DeliverResponse):
            self.user.on_response(event)
        elif isinstance(event, StrayResponse):
            self.user.on_stray_response(event)
        elif isinstance(event, TransactionTimeout):
            self.user.on_timeout(event)
        elif isinstance(event, TransportError):
            self.user.on_transport_error(event)
        elif isinstance(event, Terminated):
            self.user.on_terminated(event)

    def _answer_options(self, event: DeliverRequest) -> bool:
        request = event.request
        if not self.settings.answer_options or request.method != "OPTIONS" or event.key is None:
            return False
        s = self.settings
        headers = [("Allow", ", ".join(s.allow)), ("Accept", "application/sdp")]
        if s.supported:
            headers.append(("Supported", ", ".join(s.supported)))
        headers.append(("Server", s.user_agent))
        self.layer.send_response(build_response(request, 200, extra_headers=headers),
                                 self.loop_time())
        return True

    def _arm_timer(self) -> None:
        deadline = self.layer.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.layer.handle_timer(self.loop_time())
        except Exception:
            self.stats.bugs += 1
            log.exception("SIP bug in timer handling")
        self._pump()

    # -- output path ---------------------------------------------------------

    def _send(self, event: SendMessage) -> None:
        data = event.message.to_bytes()
        dest = event.destination
        transport = dest.transport.upper()
        if transport == "UDP":
            ok = self._send_udp(data, dest)
        elif transport in STREAM_TRANSPORTS:
            ok = self._send_stream(data, dest, event.key)
        else:
            log.warning("SIP cannot send over %s", transport)
            ok = False
        if ok:
            self.stats.sent += 1
        elif event.key is not None:
            self.layer.transport_error(event.key, self.loop_time())

    def _send_udp(self, data: bytes, dest: Destination) -> bool:
        version = _ip_version(dest.host)
        if not version:
            # Resolving a name here would block the loop; the TU resolves
            # (RFC 3263) before sending.
            log.warning("SIP UDP destination %s is not an address", dest.host)
            return False
        want_v6 = version == 6
        for udp, v6 in self._udp:
            if v6 == want_v6 and not udp.is_closing():
                udp.sendto(data, (dest.host, dest.port))
                return True
        log.warning("SIP no UDP socket for %s", dest.host)
        return False

    def _send_stream(self, data: bytes, dest: Destination, key: TransactionKey | None) -> bool:
        dest = Destination(dest.transport.upper(), dest.host, dest.port)
        conn = self._connections.get(dest)
        if conn is not None:
            return conn.write(data)
        if dest in self._pending:
            self._pending[dest].append((key, data))
            return True
        if len(self._connections) + len(self._pending) >= self.settings.max_connections:
            self.stats.refused += 1
            return False
        self._pending[dest] = [(key, data)]
        task = asyncio.ensure_future(self._connect(dest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _connect(self, dest: Destination) -> None:
        """Open an outbound connection and flush what waited for it."""
        loop = asyncio.get_running_loop()
        tls = None
        if dest.transport == "TLS":
            if self._client_tls is None:
                self._client_tls = _client_tls_context(self.settings.tls_ca)
            tls = self._client_tls
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: _StreamConnection(self, dest.transport), dest.host, dest.port,
                    ssl=tls,
                )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.info("SIP %s connect to %s:%d failed: %s",
                     dest.transport, dest.host, dest.port, exc)
            for key, _data in self._pending.pop(dest, []):
                if key is not None:
                    self.layer.transport_error(key, self.loop_time())
            self._pump()
            return
        for key, data in self._pending.pop(dest, []):
            if not proto.write(data) and key is not None:
                self.layer.transport_error(key, self.loop_time())
        self._pump()

    # -- connection table ----------------------------------------------------

    def _add_connection(self, conn: _StreamConnection) -> bool:
        assert conn.peer is not None
        if len(self._connections) >= self.settings.max_connections:
            self.stats.refused += 1
            return False
        self._connections[conn.peer] = conn
        return True

    def _remove_connection(self, conn: _StreamConnection) -> None:
        if conn.peer is not None and self._connections.get(conn.peer) is conn:
            del self._connections[conn.peer]

    def _arm_idle_sweep(self) -> None:
        if self._loop is None:
            return
        interval = max(1.0, self.settings.idle_timeout / 4)
        self._idle_sweep = self._loop.call_later(interval, self._sweep_idle)

    def _sweep_idle(self) -> None:
        cutoff = self.loop_time() - self.settings.idle_timeout
        for conn in list(self._connections.values()):
            if conn.last_active < cutoff and conn.transport is not None:
                log.debug("SIP closing idle connection to %s", conn.peer)
                conn.transport.close()
        self._arm_idle_sweep()

    @property
    def connection_count(self) -> int:
        """Live stream connections (inbound and outbound)."""
        return len(self._connections)
