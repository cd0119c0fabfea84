"""The registrar core driven with a stepped clock: no sockets, no sleeping."""

from __future__ import annotations

import re

import pytest
from siptx_helpers import (
    PASSWORDS,
    REALM,
    Clock,
    authorize,
    make_registrar,
    register,
    register_text,
)

from telephony.registrar import (
    AuthFailed,
    AuthFailure,
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    RateLimited,
    Registrar,
    SourceBlocked,
)
from telephony.sip.digest import parse_challenge
from telephony.sip.errors import SipParseError
from telephony.sip.message import Destination, SipRequest, SipResponse, parse_message

SRC = Destination("UDP", "198.51.100.7", 40000)
URI = "sip:127.0.0.1"


async def login(reg: Registrar, clock: Clock, user: str = "alice", password: str | None = None,
                source: Destination = SRC, algorithm: str | None = None,
                **kw: object) -> SipResponse:
    """Challenge then answer; returns the second response."""
    first = await reg.handle(register(user=user, **kw), source, clock.now)
    assert first is not None and first.status == 401
    auth = authorize(first, user, password or PASSWORDS.get(user, "x"), URI, algorithm)
    kw = {**kw, "cseq": int(kw.get("cseq", 1)) + 1}  # type: ignore[call-overload]
    second = await reg.handle(register(user=user, authorization=auth, **kw), source, clock.now)
    assert second is not None
    return second


def shape(response: SipResponse) -> tuple[int, list[str], list[str]]:
    """Status, header names and challenge values with the nonce blanked."""
    challenges = [re.sub(r'nonce="[^"]*"', 'nonce=""', v)
                  for v in response.headers.get_all("WWW-Authenticate")]
    return response.status, [n for n, _ in response.headers], challenges


@pytest.mark.parametrize("order", [("MD5", "SHA-256"), ("SHA-256", "MD5"), ("SHA-256",)])
async def test_challenge_offers_configured_algorithms_with_qop(order: tuple[str, ...]) -> None:
    reg, _ = make_registrar(algorithms=order)
    response = await reg.handle(register(), SRC, Clock().now)
    assert response is not None and response.status == 401
    challenges = [parse_challenge(v) for v in response.headers.get_all("WWW-Authenticate")]
    assert tuple(c.algorithm for c in challenges) == order
    assert all(c.qop == ("auth",) and c.realm == REALM for c in challenges)
    assert len({c.nonce for c in challenges}) == 1


async def test_algorithm_not_offered_is_refused() -> None:
    clock = Clock()
    reg, _ = make_registrar(clock, algorithms=("SHA-256",))
    first = await reg.handle(register(), SRC, clock.now)
    assert first is not None
    md5_challenge = first.headers.get_all("WWW-Authenticate")[0].replace("SHA-256", "MD5")
    first.headers.set("WWW-Authenticate", md5_challenge)
    auth = authorize(first, "alice", "secret1", URI)
    again = await reg.handle(register(authorization=auth, cseq=2), SRC, clock.now)
    assert again is not None and again.status == 401


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_register_binds_contact(algorithm: str) -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    response = await login(reg, clock, algorithm=algorithm)
    assert response.status == 200
    assert response.headers.get_all("Contact") == ["<sip:alice@192.168.1.20:5062>;expires=3600"]
    (added,) = rec.of(BindingAdded)
    assert isinstance(added, BindingAdded)
    assert added.binding.aor == f"sip:alice@{REALM}"
    assert (added.binding.source_host, added.binding.source_port) == ("198.51.100.7", 40000)
    assert [b.contact for b in await reg.lookup(f"sip:alice@{REALM}", clock.now)] == [
        "sip:alice@192.168.1.20:5062"]


async def test_unknown_user_and_wrong_password_look_the_same() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    wrong = await login(reg, clock, "alice", "not-it")
    unknown = await login(reg, clock, "mallory", "not-it")
    assert wrong.status == unknown.status == 401
    assert shape(wrong) == shape(unknown)
    assert [e.reason for e in rec.of(AuthFailed)] == [AuthFailure.WRONG_CREDENTIALS] * 2


async def test_expired_nonce_is_stale_and_not_a_failure() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    first = await reg.handle(register(), SRC, clock.now)
    assert first is not None
    auth = authorize(first, "alice", "secret1", URI)
    clock.now += 301
    again = await reg.handle(register(authorization=auth, cseq=2), SRC, clock.now)
    assert again is not None and again.status == 401
    assert all(parse_challenge(v).stale for v in again.headers.get_all("WWW-Authenticate"))
    assert rec.of(AuthFailed) == []


async def test_replayed_credentials_are_refused() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    first = await reg.handle(register(), SRC, clock.now)
    assert first is not None
    auth = authorize(first, "alice", "secret1", URI)
    ok = await reg.handle(register(authorization=auth, cseq=2), SRC, clock.now)
    replay = await reg.handle(register(authorization=auth, cseq=3), SRC, clock.now)
    assert ok is not None and ok.status == 200
    assert replay is not None and replay.status == 401
    assert [e.reason for e in rec.of(AuthFailed)] == [AuthFailure.REPLAY]


async def test_digest_uri_must_match_request_uri() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    first = await reg.handle(register(), SRC, clock.now)
    assert first is not None
    auth = authorize(first, "alice", "secret1", "sip:elsewhere.example")
    again = await reg.handle(register(authorization=auth, cseq=2), SRC, clock.now)
    assert again is not None and again.status == 401


async def test_authenticated_user_must_own_the_aor() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    first = await reg.handle(register(user="bob"), SRC, clock.now)
    assert first is not None
    auth = authorize(first, "alice", "secret1", URI)
    again = await reg.handle(register(user="bob", authorization=auth, cseq=2), SRC, clock.now)
    assert again is not None and again.status == 403
    assert [e.reason for e in rec.of(AuthFailed)] == [AuthFailure.USER_MISMATCH]


async def test_failures_block_the_source_then_it_recovers() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock, max_failures=3, failure_window=60, block_for=120)
    other = Destination("UDP", "203.0.113.9", 5060)
    for _ in range(3):
        assert (await login(reg, clock, "alice", "guess")).status == 401
        clock.now += 1
    (blocked,) = rec.of(SourceBlocked)
    assert blocked == SourceBlocked(SRC.host, 3, clock.now - 1 + 120)
    assert await reg.handle(register(), SRC, clock.now) is None  # dropped silently
    assert not reg.admit(SRC.host) and reg.admit(other.host)
    assert (await login(reg, clock, source=other)).status == 200  # others unaffected
    clock.now += 120
    assert reg.admit(SRC.host)
    assert (await login(reg, clock, call_id="after-block")).status == 200


async def test_failures_outside_the_window_do_not_block() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock, max_failures=3, failure_window=10)
    for _ in range(6):
        await login(reg, clock, "alice", "guess")
        clock.now += 6
    assert rec.of(SourceBlocked) == []


async def test_success_resets_the_failure_count() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock, max_failures=3)
    for _ in range(2):
        await login(reg, clock, "alice", "typo")
    await login(reg, clock)
    for _ in range(2):
        await login(reg, clock, "alice", "typo")
    assert rec.of(SourceBlocked) == []


async def test_rate_limit_answers_503_with_retry_after() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock, rate=2.0, burst=3.0)
    answers = [await reg.handle(register(), SRC, clock.now) for _ in range(4)]
    assert [a.status for a in answers if a] == [401, 401, 401, 503]
    assert answers[3] is not None and answers[3].headers.get("Retry-After") == "1"
    assert len(rec.of(RateLimited)) == 1
    other = await reg.handle(register(), Destination("UDP", "192.0.2.1", 5060), clock.now)
    assert other is not None and other.status == 401
    clock.now += 0.5
    again = await reg.handle(register(), SRC, clock.now)
    assert again is not None and again.status == 401


@pytest.mark.parametrize(("expires", "status", "granted"), [
    (59, 423, None), (60, 200, 60), (3600, 200, 3600), (100000, 200, 7200),
])
async def test_expires_bounds(expires: int, status: int, granted: int | None) -> None:
    clock = Clock()
    reg, _ = make_registrar(clock)
    response = await login(reg, clock, expires=expires)
    assert response.status == status
    if status == 423:
        assert response.headers.get("Min-Expires") == "60"
    else:
        assert response.headers.get("Contact") == f"<sip:alice@192.168.1.20:5062>;expires={granted}"


async def test_contact_expires_parameter_wins_over_header() -> None:
    clock = Clock()
    reg, _ = make_registrar(clock)
    response = await login(reg, clock, expires=3600,
                           contact="<sip:alice@10.0.0.1>;expires=120")
    assert response.headers.get("Contact") == "<sip:alice@10.0.0.1>;expires=120"


async def test_several_contacts_listed_and_fetch_without_contact() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    await login(reg, clock, contact="<sip:alice@10.0.0.1>")
    clock.now += 10
    await login(reg, clock, contact="<sip:alice@10.0.0.2>;q=0.5", call_id="reg-2")
    fetch = await login(reg, clock, contact=None, call_id="reg-3")
    assert fetch.status == 200
    assert sorted(fetch.headers.get_all("Contact")) == [
        "<sip:alice@10.0.0.1>;expires=3590", "<sip:alice@10.0.0.2>;expires=3600;q=0.5"]


async def test_refresh_and_remove_one_contact() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    await login(reg, clock, cseq=1)
    clock.now += 100
    refreshed = await login(reg, clock, cseq=3)
    assert refreshed.headers.get("Contact") == "<sip:alice@192.168.1.20:5062>;expires=3600"
    assert len(rec.of(BindingRefreshed)) == 1
    removed = await login(reg, clock, cseq=5, expires=0)
    assert removed.status == 200 and removed.headers.get_all("Contact") == []
    assert len(rec.of(BindingRemoved)) == 1


async def test_out_of_order_cseq_is_500() -> None:
    clock = Clock()
    reg, _ = make_registrar(clock)
    assert (await login(reg, clock, cseq=10)).status == 200
    assert (await login(reg, clock, cseq=5)).status == 500
    # A different Call-ID is a different client instance: accepted.
    assert (await login(reg, clock, cseq=5, call_id="other")).status == 200


async def test_star_removes_everything_only_with_expires_zero() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    await login(reg, clock, contact="<sip:alice@10.0.0.1>")
    await login(reg, clock, contact="<sip:alice@10.0.0.2>", call_id="b")
    assert (await login(reg, clock, contact="*", cseq=7)).status == 400
    wiped = await login(reg, clock, contact="*", expires=0, cseq=9)
    assert wiped.status == 200 and wiped.headers.get_all("Contact") == []
    assert len(rec.of(BindingRemoved)) == 2
    assert await reg.lookup(f"sip:alice@{REALM}", clock.now) == []


async def test_too_many_bindings_refused() -> None:
    clock = Clock()
    reg, _ = make_registrar(clock, max_bindings=2)
    for n in range(2):
        assert (await login(reg, clock, contact=f"<sip:alice@10.0.0.{n}>", call_id=f"c{n}")).status == 200
    assert (await login(reg, clock, contact="<sip:alice@10.0.0.9>", call_id="c9")).status == 403


async def test_bindings_expire_on_the_sweep() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock)
    await login(reg, clock, expires=60)
    clock.now += 59
    assert await reg.expire(clock.now) == []
    clock.now += 1
    (gone,) = await reg.expire(clock.now)
    assert gone.contact == "sip:alice@192.168.1.20:5062"
    assert len(rec.of(BindingExpired)) == 1
    assert await reg.bindings.count() == 0


async def test_bad_expires_and_userless_to_are_400() -> None:
    clock = Clock()
    reg, _ = make_registrar(clock)
    request = register(ruri="sip:127.0.0.1")
    request.headers.set("To", "<sip:dispatch.test>")
    response = await reg.handle(request, SRC, clock.now)
    assert response is not None and response.status == 400
    bad = await login(reg, clock, contact="<sip:alice@10.0.0.1>;expires=soon")
    assert bad.status == 400


async def test_event_callback_errors_do_not_break_registration() -> None:
    clock = Clock()
    reg, _ = make_registrar(clock)

    def explode(event: object) -> None:
        raise RuntimeError("subscriber bug")

    reg.on_event = explode
    assert (await login(reg, clock)).status == 200


async def test_exempt_networks_are_never_limited_or_blocked() -> None:
    clock = Clock()
    reg, rec = make_registrar(clock, rate=1.0, burst=1.0, max_failures=2,
                              exempt_networks=("198.51.100.0/24",))
    for _ in range(4):
        assert (await login(reg, clock, "alice", "guess")).status == 401
    assert rec.of(SourceBlocked) == [] and rec.of(RateLimited) == []
    assert reg.admit(SRC.host)
    limited = await login(reg, clock, source=Destination("UDP", "192.0.2.5", 5060))
    assert limited.status == 503  # outside the exempt network: second request in a second


@pytest.mark.parametrize("field", ["username", "response", "opaque", "cnonce", "uri", "nonce"])
async def test_credentials_that_are_not_utf8_get_a_challenge_not_a_crash(field: str) -> None:
    # A raw 0xFF byte in a quoted digest parameter: the parser keeps it (surrogateescape);
    # digest must refuse it cleanly (the request is challenged again) rather than raise
    # UnicodeEncodeError while hashing or comparing.
    clock = Clock()
    reg, rec = make_registrar(clock)
    first = await reg.handle(register(), SRC, clock.now)
    assert first is not None and first.status == 401
    auth = authorize(first, "alice", PASSWORDS["alice"], URI)
    bad = re.sub(rf'(?<![a-z]){field}="?([^",]*)"?', lambda m: m.group(0).replace(
        m.group(1), m.group(1)[:2] + "\udcff" + m.group(1)[2:]), auth, count=1)
    assert "\udcff" in bad
    data = register_text(authorization=bad, cseq=2).encode("utf-8", "surrogateescape")
    request = parse_message(data)
    assert isinstance(request, SipRequest)
    response = await reg.handle(request, SRC, clock.now)
    assert response is not None and response.status == 401
    assert not rec.of(BindingAdded)


async def test_a_user_name_that_is_not_utf8_is_a_parse_error() -> None:
    # The parser refuses it (the endpoint answers 400); the registrar never sees it.
    data = register_text(user="al\udcffice").encode("utf-8", "surrogateescape")
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert caught.value.status == 400
