"""The asyncio endpoint with real sockets on loopback (port 0), Python-built messages."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
import pytest_asyncio
from siptx_helpers import PASSWORDS, authorize, make_registrar, register_text

from telephony.registrar import Registrar
from telephony.sip.events import DeliverRequest, DeliverResponse, TransportError
from telephony.sip.message import (
    Destination,
    SipLimits,
    SipRequest,
    SipResponse,
    StreamFramer,
    make_via,
    new_branch,
    parse_message,
)
from telephony.sip.transport import (
    ListenAddress,
    MethodRouter,
    NullTransactionUser,
    SipEndpoint,
    TransportSettings,
)

WAIT = 5.0  # upper bound for an answer on loopback; never a sleep


def options_text(host: str, port: int, transport: str = "UDP", branch: str | None = None) -> bytes:
    """An OPTIONS request."""
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: {make_via(transport, '127.0.0.1', 9, branch or new_branch())}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:probe@test>;tag=p1\r\nTo: <sip:probe@test>\r\n"
        "Call-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class UdpClient(asyncio.DatagramProtocol):
    """Collects datagrams into a queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    async def ask(self, data: bytes, dest: tuple[str, int]) -> SipResponse:
        assert self.transport is not None
        self.transport.sendto(data, dest)
        return await self.next()

    async def next(self) -> SipResponse:
        message = parse_message(await asyncio.wait_for(self.queue.get(), WAIT))
        assert isinstance(message, SipResponse)
        return message


async def udp_client(host: str = "127.0.0.1") -> UdpClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(UdpClient, local_addr=(host, 0))
    return proto


async def make_endpoint(registrar: Registrar | None = None, **kw: object) -> SipEndpoint:
    listen = kw.pop("listen", (ListenAddress("UDP", "127.0.0.1", 0),
                               ListenAddress("TCP", "127.0.0.1", 0)))
    endpoint = SipEndpoint(TransportSettings(listen=listen, **kw))  # type: ignore[arg-type]
    if registrar is not None:
        router = MethodRouter(endpoint)
        router.route("REGISTER", registrar)
        endpoint.user = router
        registrar.attach(endpoint)
    await endpoint.start()
    return endpoint


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[tuple[SipEndpoint, Registrar]]:
    registrar, _ = make_registrar(rate=1000.0, burst=1000.0)
    endpoint = await make_endpoint(registrar)
    try:
        yield endpoint, registrar
    finally:
        await endpoint.stop()
        await registrar.stop()


def addr(endpoint: SipEndpoint, transport: str = "UDP", ipv6: bool = False) -> tuple[str, int]:
    d = endpoint.address(transport, ipv6)
    return d.host, d.port


async def test_udp_options_answered_by_the_endpoint(served: tuple[SipEndpoint, Registrar]) -> None:
    endpoint, _ = served
    client = await udp_client()
    response = await client.ask(options_text(*addr(endpoint)), addr(endpoint))
    assert response.status == 200
    assert "REGISTER" in (response.headers.get("Allow") or "")
    assert response.headers.get("Accept") == "application/sdp"
    via = response.top_via
    assert via.received == "127.0.0.1" and via.rport is not None  # RFC 3581 for NAT


async def test_udp_register_round_trip(served: tuple[SipEndpoint, Registrar]) -> None:
    endpoint, registrar = served
    client = await udp_client()
    host, port = addr(endpoint)
    ruri = f"sip:{host}:{port}"
    first = await client.ask(register_text(ruri=ruri, call_id="udp-rt").encode(), (host, port))
    assert first.status == 401
    auth = authorize(first, "alice", PASSWORDS["alice"], ruri)
    second = await client.ask(
        register_text(ruri=ruri, call_id="udp-rt", cseq=2, authorization=auth).encode(),
        (host, port))
    assert second.status == 200
    (binding,) = [b for b in await registrar.bindings.get("sip:alice@dispatch.test")
                  if b.call_id == "udp-rt"]
    assert binding.source_transport == "UDP" and binding.source_host == "127.0.0.1"


async def test_unknown_method_405(served: tuple[SipEndpoint, Registrar]) -> None:
    endpoint, _ = served
    client = await udp_client()
    data = options_text(*addr(endpoint)).replace(b"OPTIONS", b"MESSAGE")
    response = await client.ask(data, addr(endpoint))
    assert response.status == 405 and response.headers.get("Allow") == "REGISTER"


MALFORMED_ANSWERED = [
    (b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE", 400),
    (b"Max-Forwards: 70", b"Max-Forwards: lots", 400),
    (b"SIP/2.0\r\n", b"SIP/3.0\r\n", 505),
    (b"OPTIONS sip:", b"OPTIONS http:", 416),
    (b"Content-Length: 0", b"Require: 100rel\r\nContent-Length: 0", 420),
]


@pytest.mark.parametrize(("old", "new", "status"), MALFORMED_ANSWERED)
async def test_malformed_requests_answered(
    served: tuple[SipEndpoint, Registrar], old: bytes, new: bytes, status: int
) -> None:
    endpoint, _ = served
    client = await udp_client()
    data = options_text(*addr(endpoint)).replace(old, new, 1)
    response = await client.ask(data, addr(endpoint))
    assert response.status == status


MALFORMED_DROPPED = [
    b"garbage",
    b"OPTIONS sip:x SIP/2.0\r\n\r\n",  # nothing to answer to
    b"\x00" * 100,
    b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n",
]


@pytest.mark.parametrize("junk", MALFORMED_DROPPED)
async def test_unanswerable_datagrams_dropped(
    served: tuple[SipEndpoint, Registrar], junk: bytes
) -> None:
    endpoint, _ = served
    client = await udp_client()
    assert client.transport is not None
    before = endpoint.stats.dropped
    client.transport.sendto(junk, addr(endpoint))
    # The next answer is the OPTIONS one: nothing came back for the junk.
    response = await client.ask(options_text(*addr(endpoint)), addr(endpoint))
    assert response.status == 200 and response.headers.get("CSeq") == "1 OPTIONS"
    assert endpoint.stats.dropped == before + 1 and endpoint.stats.bugs == 0


async def test_oversize_datagram_dropped() -> None:
    endpoint = await make_endpoint(limits=SipLimits(max_message=2000))
    try:
        client = await udp_client()
        assert client.transport is not None
        big = options_text(*addr(endpoint)).replace(
            b"Content-Length: 0", b"X-Pad: " + b"a" * 3000 + b"\r\nContent-Length: 0")
        client.transport.sendto(big, addr(endpoint))
        response = await client.ask(options_text(*addr(endpoint)), addr(endpoint))
        assert response.status == 200 and endpoint.stats.dropped == 1
    finally:
        await endpoint.stop()


async def test_ipv6_udp_options() -> None:
    endpoint = await make_endpoint(listen=(ListenAddress("UDP", "::1", 0),))
    try:
        client = await udp_client("::1")
        host, port = addr(endpoint, ipv6=True)
        response = await client.ask(options_text(f"[{host}]", port), (host, port))
        assert response.status == 200 and response.top_via.received == "::1"
    finally:
        await endpoint.stop()


async def read_response(reader: asyncio.StreamReader, framer: StreamFramer) -> SipResponse | None:
    """Next response on a stream, None at EOF."""
    while True:
        data = await asyncio.wait_for(reader.read(65536), WAIT)
        if not data:
            return None
        frames = framer.feed(data)
        if frames:
            message = parse_message(frames[0])
            assert isinstance(message, SipResponse)
            return message


async def test_tcp_register_round_trip(served: tuple[SipEndpoint, Registrar]) -> None:
    endpoint, registrar = served
    host, port = addr(endpoint, "TCP")
    reader, writer = await asyncio.open_connection(host, port)
    framer = StreamFramer()
    ruri = f"sip:{host}:{port};transport=tcp"
    writer.write(register_text(ruri=ruri, call_id="tcp-rt", transport="TCP").encode())
    first = await read_response(reader, framer)
    assert first is not None and first.status == 401
    auth = authorize(first, "alice", PASSWORDS["alice"], ruri)
    writer.write(register_text(ruri=ruri, call_id="tcp-rt", cseq=2, transport="TCP",
                               authorization=auth).encode())
    second = await read_response(reader, framer)
    assert second is not None and second.status == 200
    (binding,) = [b for b in await registrar.bindings.get("sip:alice@dispatch.test")
                  if b.call_id == "tcp-rt"]
    assert binding.source_transport == "TCP"
    writer.write(b"\r\n\r\n")  # RFC 5626 keep-alive gets a CRLF pong
    assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
    writer.close()


async def test_tcp_framing_error_answered_then_closed(served: tuple[SipEndpoint, Registrar]) -> None:
    endpoint, _ = served
    reader, writer = await asyncio.open_connection(*addr(endpoint, "TCP"))
    data = options_text(*addr(endpoint, "TCP"), "TCP").replace(
        b"Content-Length: 0", b"Content-Length: -5")
    writer.write(data)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, framing lost
    writer.close()


async def test_tcp_connection_cap_and_buffer_cap() -> None:
    endpoint = await make_endpoint(max_connections=1, max_buffered=4000)
    try:
        host, port = addr(endpoint, "TCP")
        r1, w1 = await asyncio.open_connection(host, port)
        w1.write(options_text(host, port, "TCP"))
        first = await read_response(r1, StreamFramer())
        assert first is not None and first.status == 200
        r2, w2 = await asyncio.open_connection(host, port)
        assert await asyncio.wait_for(r2.read(), WAIT) == b""  # refused: over the cap
        w1.write(b"OPTIONS sip:x SIP/2.0\r\nX-Pad: " + b"a" * 5000)  # no end of headers
        assert await asyncio.wait_for(r1.read(), WAIT) == b""  # over the buffer cap
        assert endpoint.stats.refused == 1
        w1.close()
        w2.close()
    finally:
        await endpoint.stop()


class Collector(NullTransactionUser):
    """A TU that keeps responses."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()

    def on_response(self, event: DeliverResponse) -> None:
        self.responses.put_nowait(event.response)


async def test_outbound_tcp_reuses_one_connection(served: tuple[SipEndpoint, Registrar]) -> None:
    server, _ = served
    client = await make_endpoint()
    collector = Collector()
    client.user = collector
    try:
        host, port = addr(server, "TCP")
        local = client.address("TCP")
        for n in range(3):
            request = parse_message(options_text(host, port, "TCP").replace(
                b"127.0.0.1:9", f"{local.host}:{local.port}".encode()))
            assert isinstance(request, SipRequest)
            request.headers.set("CSeq", f"{n + 1} OPTIONS")
            client.send_request(request, Destination("TCP", host, port))
            response = await asyncio.wait_for(collector.responses.get(), WAIT)
            assert response.status == 200
        assert client.connection_count == 1
    finally:
        await client.stop()


async def test_outbound_connect_failure_is_a_transport_error() -> None:
    client = await make_endpoint()
    errors: asyncio.Queue[TransportError] = asyncio.Queue()

    class Errors(NullTransactionUser):
        def on_transport_error(self, event: TransportError) -> None:
            errors.put_nowait(event)

    client.user = Errors()
    try:
        closed_port = addr(client, "TCP")[1]
        await client.stop()
        client = await make_endpoint()
        client.user = Errors()
        request = parse_message(options_text("127.0.0.1", closed_port, "TCP"))
        assert isinstance(request, SipRequest)
        key = client.send_request(request, Destination("TCP", "127.0.0.1", closed_port))
        event = await asyncio.wait_for(errors.get(), WAIT)
        assert event.key == key
    finally:
        await client.stop()


def self_signed(tmp: Path) -> tuple[str, str]:
    """A throw-away certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_tls_options_and_outbound_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = await make_endpoint(listen=(ListenAddress("TLS", "127.0.0.1", 0),),
                                 tls_cert=cert, tls_key=key)
    client = await make_endpoint(listen=(ListenAddress("UDP", "127.0.0.1", 0),), tls_ca=cert)
    collector = Collector()
    client.user = collector
    try:
        host, port = addr(server, "TLS")
        context = ssl.create_default_context(cafile=cert)
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
        writer.write(options_text(host, port, "TLS"))
        response = await read_response(reader, StreamFramer())
        assert response is not None and response.status == 200
        writer.close()
        request = parse_message(options_text(host, port, "TLS"))
        assert isinstance(request, SipRequest)
        client.send_request(request, Destination("TLS", host, port))
        assert (await asyncio.wait_for(collector.responses.get(), WAIT)).status == 200
    finally:
        await client.stop()
        await server.stop()


async def test_tls_listener_without_certificate_refused() -> None:
    with pytest.raises(ValueError, match="tls_cert"):
        await make_endpoint(listen=(ListenAddress("TLS", "127.0.0.1", 0),))


async def test_blocked_source_dropped_before_parsing(served: tuple[SipEndpoint, Registrar]) -> None:
    endpoint, registrar = served
    host, port = addr(endpoint)
    blocked, other = await udp_client("127.0.0.2"), await udp_client()
    assert blocked.transport is not None
    registrar.blocker._blocked["127.0.0.2"] = registrar.clock() + 60
    before_dropped, before_sent = endpoint.stats.dropped, endpoint.stats.sent
    try:
        blocked.transport.sendto(options_text(host, port), (host, port))
        # Both datagrams queue on the one server socket, in order: once the
        # second is answered the first has been read, and dropped unanswered.
        assert (await other.ask(options_text(host, port), (host, port))).status == 200
        assert endpoint.stats.dropped == before_dropped + 1
        assert endpoint.stats.sent == before_sent + 1
    finally:
        registrar.blocker._blocked.clear()


async def test_tu_exception_does_not_kill_the_endpoint() -> None:
    endpoint = await make_endpoint()

    class Broken(NullTransactionUser):
        def on_request(self, event: DeliverRequest) -> None:
            raise RuntimeError("TU bug")

    endpoint.user = Broken()
    try:
        client = await udp_client()
        assert client.transport is not None
        bye = options_text(*addr(endpoint)).replace(b"OPTIONS", b"INFO")
        client.transport.sendto(bye, addr(endpoint))
        response = await client.ask(options_text(*addr(endpoint)), addr(endpoint))
        assert response.status == 200 and endpoint.stats.bugs == 1
        assert endpoint.health()["bugs"] == 1
    finally:
        await endpoint.stop()


async def test_retransmission_is_absorbed_and_answer_repeated(
    served: tuple[SipEndpoint, Registrar]
) -> None:
    endpoint, _ = served
    client = await udp_client()
    data = options_text(*addr(endpoint), branch="z9hG4bKretrans1")
    first = await client.ask(data, addr(endpoint))
    again = await client.ask(data, addr(endpoint))
    assert first.to_bytes() == again.to_bytes()  # same To tag: the transaction resent it



async def test_ipv6_tcp_options() -> None:
    endpoint = await make_endpoint(listen=(ListenAddress("TCP", "::1", 0),))
    try:
        host, port = addr(endpoint, "TCP", ipv6=True)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(options_text(f"[{host}]", port, "TCP"))
        response = await read_response(reader, StreamFramer())
        assert response is not None and response.status == 200
        writer.close()
    finally:
        await endpoint.stop()


async def test_idle_connection_closed() -> None:
    endpoint = await make_endpoint(idle_timeout=0.5)
    try:
        host, port = addr(endpoint, "TCP")
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(options_text(host, port, "TCP"))
        assert await read_response(reader, StreamFramer()) is not None
        # The sweep runs every max(1 s, idle/4): EOF arrives within a few seconds.
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        assert endpoint.connection_count == 0
        writer.close()
    finally:
        await endpoint.stop()
