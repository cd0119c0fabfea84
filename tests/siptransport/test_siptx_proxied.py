"""X-Dispatchd-Source: parsed strictly, believed from configured proxies only.

The end-to-end check through Kamailio is tests/cluster/test_cluster_source.py;
here the parser, the screening, and the registrar limiting each phone behind
one proxy on its own (over a real UDP endpoint on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import socket
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from siptx_helpers import Clock, make_registrar, register, register_text

from dispatch.config import ConfigError, parse_settings
from telephony.registrar import RateLimited
from telephony.sip.message import Destination, SipResponse, parse_message
from telephony.sip.proxied import (
    SOURCE_HEADER,
    ProxyTrust,
    SourceHeaderError,
    origin_of,
    parse_networks,
    parse_source,
)
from telephony.sip.transport import ListenAddress, MethodRouter, SipEndpoint, TransportSettings

PROXY = Destination("UDP", "10.0.0.2", 5060)


@pytest.mark.parametrize(("value", "expected"), [
    ("203.0.113.7:5060;transport=udp", Destination("UDP", "203.0.113.7", 5060)),
    (" 198.51.100.1:5061 ; transport=TLS ", Destination("TLS", "198.51.100.1", 5061)),
    ("[2001:db8::1]:5080;transport=tcp", Destination("TCP", "2001:db8::1", 5080)),
])
def test_parse_source_round_trips(value: str, expected: Destination) -> None:
    assert parse_source(value) == expected


@pytest.mark.parametrize("value", [
    "", "203.0.113.7", "203.0.113.7:5060", "203.0.113.7:5060;transport=sctp",
    "203.0.113.7:0;transport=udp", "203.0.113.7:70000;transport=udp",
    "999.1.1.1:5060;transport=udp", "carrier.example:5060;transport=udp",
    "2001:db8::1:5060;transport=udp", "1.2.3.4:5060;transport=udp\r\nX: y",
    "1.2.3.4:5060;transport=udp" + " " * 100,
])
def test_parse_source_refuses(value: str) -> None:
    with pytest.raises(SourceHeaderError):
        parse_source(value)


@given(st.text(max_size=120))
def test_parse_source_gives_an_address_or_our_error(value: str) -> None:
    try:
        dest = parse_source(value)
    except SourceHeaderError:
        return
    assert dest.transport in ("UDP", "TCP", "TLS") and 0 < dest.port < 65536




def test_header_believed_from_a_proxy_only() -> None:
    trust = ProxyTrust(parse_networks(["10.0.0.0/30"]))
    good = register()
    good.headers.add(SOURCE_HEADER, "203.0.113.7:5062;transport=udp")
    trust.screen(good, PROXY)
    assert origin_of(good, PROXY) == Destination("UDP", "203.0.113.7", 5062)

    stranger = Destination("UDP", "192.0.2.9", 5060)
    spoofed = register()
    spoofed.headers.add(SOURCE_HEADER, "203.0.113.7:5062;transport=udp")
    trust.screen(spoofed, stranger)
    assert SOURCE_HEADER not in spoofed.headers
    assert origin_of(spoofed, stranger) == stranger

    for bad in (["nonsense"], ["1.1.1.1:1;transport=udp", "2.2.2.2:2;transport=udp"]):
        request = register()
        for value in bad:
            request.headers.add(SOURCE_HEADER, value)
        trust.screen(request, PROXY)
        assert SOURCE_HEADER not in request.headers
        assert origin_of(request, PROXY) == PROXY
    assert (trust.accepted, trust.ignored, trust.malformed) == (1, 1, 2)
    assert not ProxyTrust().trusted("10.0.0.2")


async def test_registrar_limits_each_phone_behind_a_proxy_on_its_own() -> None:
    """Two phones behind one proxy: the flooding one is limited, the other is not."""
    reg, events = make_registrar(Clock(), rate=0.001, burst=2.0)
    endpoint = SipEndpoint(TransportSettings(listen=(ListenAddress("UDP", "127.0.0.1", 0),)))
    endpoint.proxy_trust = ProxyTrust(parse_networks(["127.0.0.1"]))
    router = MethodRouter(endpoint, fallback=None)
    router.route("REGISTER", reg)
    endpoint.user = router
    reg.attach(endpoint)
    await endpoint.start()
    port = endpoint.address("UDP").port
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def send(origin: str, n: int) -> int:
        text = register_text(call_id=f"c-{origin}-{n}", cseq=n).replace(
            "Content-Length: 0", f"{SOURCE_HEADER}: {origin}:5062;transport=udp\r\n"
            "Content-Length: 0")
        await loop.sock_sendto(sock, text.encode(), ("127.0.0.1", port))
        reply = parse_message(await asyncio.wait_for(loop.sock_recv(sock, 65535), 10))
        assert isinstance(reply, SipResponse)
        return reply.status

    try:
        flood = [await send("203.0.113.7", n) for n in range(1, 5)]
        other = await send("203.0.113.8", 1)
    finally:
        sock.close()
        await endpoint.stop()
    assert flood == [401, 401, 503, 503]
    assert other == 401
    assert {e.source for e in events.of(RateLimited)} == {"203.0.113.7"}


@pytest.mark.parametrize(("text", "expected"), [
    ('[sip]\nproxies = ["kamailio.local"]', "f.toml: sip.proxies: "),
    ('[sip]\nproxies = "127.0.0.1"', "f.toml: sip.proxies: "),
    ('[sip]\nproxy = ["127.0.0.1"]', "f.toml: sip.proxy: unknown key"),
])
def test_proxies_setting_is_checked(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(tomllib.loads(text), "f.toml")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(expected), err.value.problems


def test_proxies_setting_accepts_addresses_and_networks() -> None:
    settings = parse_settings(tomllib.loads('[sip]\nproxies = ["10.0.0.2", "10.1.0.0/24"]'),
                              "f.toml")
    trust = ProxyTrust(parse_networks(settings.sip.proxies))
    assert trust.trusted("10.0.0.2") and trust.trusted("10.1.0.77")
    assert not trust.trusted("10.0.0.3")


async def test_a_blocked_source_behind_a_proxy_is_dropped_and_its_neighbour_is_not() -> None:
    clock = Clock()
    reg, _ = make_registrar(clock, max_failures=3)
    endpoint = SipEndpoint(TransportSettings(listen=(ListenAddress("UDP", "127.0.0.1", 0),)))
    endpoint.proxy_trust = ProxyTrust(parse_networks(["127.0.0.1"]))
    router = MethodRouter(endpoint, fallback=None)
    router.route("REGISTER", reg)
    endpoint.user = router
    reg.attach(endpoint)
    await endpoint.start()
    for _ in range(3):  # three failed logins from 203.0.113.9 (as the registrar counts them)
        reg.blocker.record_failure("203.0.113.9", clock())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    port = endpoint.address("UDP").port

    async def send(origin: str, n: int) -> None:
        text = register_text(call_id=f"b-{origin}-{n}", cseq=n).replace(
            "Content-Length: 0", f"{SOURCE_HEADER}: {origin}:5062;transport=udp\r\n"
            "Content-Length: 0")
        await loop.sock_sendto(sock, text.encode(), ("127.0.0.1", port))

    try:
        await send("203.0.113.9", 1)  # blocked: dropped, no answer
        await send("203.0.113.10", 1)  # its neighbour behind the same proxy: challenged
        reply = parse_message(await asyncio.wait_for(loop.sock_recv(sock, 65535), 10))
        assert isinstance(reply, SipResponse) and reply.status == 401
        assert "b-203.0.113.10-1" in (reply.headers.get("Call-ID") or "")
        assert endpoint.stats.dropped == 1
    finally:
        sock.close()
        await endpoint.stop()
