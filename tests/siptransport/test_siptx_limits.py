"""Token bucket, failure blocker and the registrar's timers, with a stepped clock."""

from __future__ import annotations

import asyncio

import pytest
from siptx_helpers import Clock, make_registrar, register

from telephony.registrar import (
    Binding,
    BindingExpired,
    FailureBlocker,
    MemoryCredentialStore,
    TokenBucketLimiter,
    ha1,
)
from telephony.sip.events import DeliverRequest, server_key
from telephony.sip.message import Destination, SipResponse
from telephony.sip.transport import SipEndpoint, TransportSettings


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucketLimiter(rate=2.0, burst=2.0)
    assert [bucket.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert bucket.retry_after("a") == 1
    assert not bucket.allow("a", 0.4)
    assert bucket.allow("a", 0.6)
    assert bucket.allow("b", 0.6)  # per source
    assert not bucket.allow("a", 0.6)
    assert bucket.allow("a", 100.0) and bucket.allow("a", 100.0) and not bucket.allow("a", 100.0)


def test_token_bucket_is_bounded() -> None:
    bucket = TokenBucketLimiter(rate=1.0, burst=1.0, max_sources=3)
    for n in range(10):
        bucket.allow(f"10.0.0.{n}", 0.0)
    assert len(bucket._buckets) == 3


def test_blocker_window_and_expiry() -> None:
    blocker = FailureBlocker(max_failures=3, window=10.0, block_for=30.0)
    assert not blocker.record_failure("a", 0.0)
    assert not blocker.record_failure("a", 5.0)
    assert not blocker.record_failure("a", 10.5)  # the first fell out of the window
    assert blocker.record_failure("a", 11.0)
    assert blocker.is_blocked("a", 40.9) and not blocker.is_blocked("b", 12.0)
    assert not blocker.is_blocked("a", 41.0)
    assert blocker.blocked_until("a") is None


def test_blocker_is_bounded() -> None:
    blocker = FailureBlocker(max_failures=2, window=10.0, block_for=5.0, max_sources=4)
    for n in range(50):
        blocker.record_failure(f"10.0.0.{n}", float(n))
    assert len(blocker._failures) == 4


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (1.0, 0.5)])
def test_token_bucket_settings_checked(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate, burst)


def test_ha1_helper_matches_rfc_definition() -> None:
    # RFC 2617 3.5 example user/realm/password, MD5.
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == \
        "939e7578ed9e3c518a452acee763bce9"
    assert len(ha1("u", "r", "p", "SHA-256")) == 64
    assert ha1("u", "r", "p", "MD5-sess") == ha1("u", "r", "p", "MD5")


async def test_credential_store_keeps_no_password() -> None:
    store = MemoryCredentialStore.from_passwords("r", {"alice": "pw"})
    assert await store.ha1("alice", "r", "SHA-256") == ha1("alice", "r", "pw", "SHA-256")
    assert await store.ha1("alice", "other", "MD5") is None
    assert "pw" not in repr(store.__dict__)


async def test_sweeper_expires_bindings_on_its_own() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock, expiry_interval=0.01)
    expired: asyncio.Future[BindingExpired] = asyncio.get_running_loop().create_future()

    def on_event(event: object) -> None:
        if isinstance(event, BindingExpired) and not expired.done():
            expired.set_result(event)

    reg.on_event = on_event
    binding = Binding("sip:alice@dispatch.test", "sip:alice@10.0.0.1", clock.now + 60,
                      "c", 1, "UDP", "10.0.0.1", 5060)
    await reg.bindings.replace(binding.aor, [binding])
    await reg.start()
    try:
        clock.now += 61
        assert (await asyncio.wait_for(expired, 5.0)).binding == binding
    finally:
        await reg.stop()


async def test_too_many_pending_registers_get_503() -> None:
    reg, _ = make_registrar(max_pending=1)
    endpoint = SipEndpoint(TransportSettings(listen=()))
    sent: list[SipResponse] = []
    endpoint.send_response = sent.append  # type: ignore[method-assign,assignment]
    reg.attach(endpoint)
    source = Destination("UDP", "192.0.2.1", 5060)
    first, second = register(call_id="p1"), register(call_id="p2")
    reg.on_request(DeliverRequest(server_key(first), first, source))
    reg.on_request(DeliverRequest(server_key(second), second, source))
    assert [r.status for r in sent] == [503]
    await asyncio.gather(*reg._tasks)
    assert [r.status for r in sent] == [503, 401]
