"""Hypothesis: no datagram or byte stream makes the endpoint raise or log a bug."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from siptx_helpers import make_registrar, register_text

from telephony.sip.message import Destination
from telephony.sip.transport import ListenAddress, MethodRouter, SipEndpoint, TransportSettings

SOURCE = Destination("UDP", "127.0.0.1", 9)  # discard port: replies go nowhere
VALID = [
    register_text(ruri="sip:127.0.0.1").encode(),
    register_text(contact="*", expires=0).encode(),
    (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx;rport\r\n"
     b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"),
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKy\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes replaced, inserted or cut."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "cut"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "replace":
            data[pos:pos + len(chunk)] = chunk
        elif action == "insert":
            data[pos:pos] = chunk
        else:
            del data[pos:pos + len(chunk)]
    return bytes(data)


DATAGRAMS = st.one_of(st.binary(max_size=2048), mutated())


async def fuzz_endpoint() -> SipEndpoint:
    endpoint = SipEndpoint(TransportSettings(listen=(ListenAddress("UDP", "127.0.0.1", 0),)))
    registrar, _ = make_registrar(rate=1e9, burst=1e9)
    router = MethodRouter(endpoint)
    router.route("REGISTER", registrar)
    endpoint.user = router
    registrar.attach(endpoint)
    await endpoint.start()
    return endpoint


async def test_random_datagrams_never_crash() -> None:
    endpoint = await fuzz_endpoint()
    try:
        @settings(max_examples=400, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(DATAGRAMS)
        def feed(data: bytes) -> None:
            endpoint._received(data, SOURCE, None)

        feed()
        await asyncio.sleep(0)  # let registrar tasks started by valid REGISTERs run
        assert endpoint.stats.bugs == 0
    finally:
        await endpoint.stop()


async def test_random_streams_never_crash() -> None:
    endpoint = await fuzz_endpoint()
    endpoint.settings = TransportSettings(listen=endpoint.settings.listen, max_buffered=4096)
    from telephony.sip.transport import _StreamConnection

    class FakeTransport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.closed = False

        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 9) if name == "peername" else default

        def write(self, data: bytes | bytearray | memoryview) -> None:
            pass

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

        def abort(self) -> None:
            self.closed = True

    try:
        @settings(max_examples=200, deadline=None)
        @given(st.lists(DATAGRAMS, max_size=4), st.integers(1, 64))
        def feed(messages: list[bytes], chunk: int) -> None:
            conn = _StreamConnection(endpoint, "TCP")
            transport = FakeTransport()
            conn.connection_made(transport)
            stream = b"".join(messages)
            for i in range(0, len(stream), chunk):
                if transport.closed:
                    break
                conn.data_received(stream[i:i + chunk])
            conn.connection_lost(None)

        feed()
        assert endpoint.stats.bugs == 0 and endpoint.connection_count == 0
    finally:
        await endpoint.stop()
