"""Digest authentication: RFC 2617 / RFC 7616 vectors, stateless nonces, replay, stale."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.sip.digest import (
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestOutcome,
    DigestParseError,
    DigestServer,
    challenge_response,
    compute_response,
    credentials_for_realm,
    parse_authorization,
    parse_challenge,
    select_challenge,
)
from telephony.sip.message import SipRequest, SipResponse, parse_message

RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "method": "GET",
    "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


def test_rfc2617_section_3_5_vector() -> None:
    assert compute_response(
        algorithm="MD5", username="Mufasa", realm="testrealm@host.com",
        password="Circle Of Life", method="GET", uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", qop="auth", nc="00000001", cnonce="0a4f113b",
    ) == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    assert compute_response(algorithm=algorithm, qop="auth", **RFC7616) == expected


def test_rfc7616_client_reproduces_the_example_header() -> None:
    challenge = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert challenge.qop == ("auth", "auth-int")
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616["cnonce"])
    creds = client.authorize(challenge, "GET", "/dir/index.html")
    assert creds.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert parse_authorization(creds.to_header()) == creds
    assert client.authorize(challenge, "GET", "/dir/index.html").nc == "00000002"


def test_select_challenge_prefers_sha256() -> None:
    values = [
        'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="n1", algorithm=SHA-512-256, qop="auth"',
        "Basic realm=\"r\"",
    ]
    assert select_challenge(values).algorithm == "SHA-256"
    with pytest.raises(DigestParseError):
        select_challenge(["Basic realm=x"])


def make_server(**kwargs: object) -> DigestServer:
    counter = iter(range(1000))
    return DigestServer(
        "dispatch.example.cn", b"0123456789abcdef-secret",
        random_bytes=lambda n: next(counter).to_bytes(n, "big"), **kwargs,  # type: ignore[arg-type]
    )


def answer(server: DigestServer, now: float, *, algorithm: str = "SHA-256",
           password: str = "pw", client: DigestClient | None = None) -> DigestCredentials:
    challenge = next(c for c in server.challenge(now) if c.algorithm == algorithm)
    client = client or DigestClient("8001", password)
    return client.authorize(challenge, "REGISTER", "sip:dispatch.example.cn")


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_server_accepts_good_credentials(algorithm: str) -> None:
    server = make_server()
    challenges = server.challenge(100.0)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert challenges[0].nonce == challenges[1].nonce
    creds = parse_authorization(answer(server, 100.0, algorithm=algorithm).to_header())
    verdict = server.verify(creds, method="REGISTER", now=101.0, password="pw",
                            request_uri="sip:dispatch.example.cn")
    assert verdict.ok and verdict.username == "8001"


def test_server_accepts_stored_ha1() -> None:
    server = make_server()
    creds = answer(server, 0.0, algorithm="MD5")
    ha1 = hashlib.md5(b"8001:dispatch.example.cn:pw").hexdigest()
    assert server.verify(creds, method="REGISTER", now=1.0, ha1=ha1).ok


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: replace(c, response="0" * 64), "wrong response"),
        (lambda c: replace(c, realm="other"), "realm mismatch"),
        (lambda c: replace(c, nonce="forged"), "nonce not issued by us"),
        (lambda c: replace(c, opaque="x"), "opaque mismatch"),
        (lambda c: replace(c, uri="sip:evil"), "digest uri differs"),
        (lambda c: replace(c, qop=None), "qop required"),
    ],
)
def test_server_rejects_bad_credentials(
    mutate: Callable[[DigestCredentials], DigestCredentials], reason: str
) -> None:
    server = make_server()
    creds = mutate(answer(server, 0.0))
    verdict = server.verify(creds, method="REGISTER", now=1.0, password="pw",
                            request_uri="sip:dispatch.example.cn")
    assert verdict.outcome is DigestOutcome.INVALID and verdict.reason.startswith(reason)


def test_wrong_password_is_invalid() -> None:
    server = make_server()
    verdict = server.verify(answer(server, 0.0, password="guess"), method="REGISTER", now=1.0,
                            password="pw")
    assert verdict.outcome is DigestOutcome.INVALID


def test_nonce_from_another_server_secret_is_invalid() -> None:
    other = DigestServer("dispatch.example.cn", b"another-secret-of-16+")
    server = make_server()
    foreign = answer(other, 0.0)
    verdict = server.verify(foreign, method="REGISTER", now=1.0, password="pw")
    assert verdict.outcome is DigestOutcome.INVALID
    without_opaque = replace(foreign, opaque=None)
    verdict = server.verify(without_opaque, method="REGISTER", now=1.0, password="pw")
    assert verdict.reason == "nonce not issued by us"


def test_expired_nonce_with_right_password_is_stale() -> None:
    server = make_server(nonce_ttl=60.0)
    creds = answer(server, 0.0)
    assert server.verify(creds, method="REGISTER", now=60.0, password="pw").ok
    verdict = server.verify(answer(server, 0.0), method="REGISTER", now=60.5, password="pw")
    assert verdict.outcome is DigestOutcome.STALE
    assert server.challenge(60.5, stale=True)[0].to_header().endswith("stale=true")
    future = answer(server, 100.0)
    assert server.verify(future, method="REGISTER", now=50.0, password="pw").reason == (
        "nonce from the future"
    )


def test_nonce_count_replay_is_refused() -> None:
    server = make_server()
    challenge = server.challenge(0.0)[0]
    client = DigestClient("8001", "pw")
    first = client.authorize(challenge, "REGISTER", "sip:x")
    second = client.authorize(challenge, "REGISTER", "sip:x")
    assert server.verify(first, method="REGISTER", now=1.0, password="pw").ok
    assert server.verify(first, method="REGISTER", now=2.0, password="pw").outcome is (
        DigestOutcome.REPLAY
    )
    assert server.verify(second, method="REGISTER", now=3.0, password="pw").ok
    assert server.verify(first, method="REGISTER", now=4.0, password="pw").outcome is (
        DigestOutcome.REPLAY
    )


def test_evicted_nonces_become_stale_not_replayable() -> None:
    server = make_server(max_tracked_nonces=2)
    old = answer(server, 0.0)
    assert server.verify(old, method="REGISTER", now=0.1, password="pw").ok
    for t in (1.0, 2.0):
        assert server.verify(answer(server, t), method="REGISTER", now=t, password="pw").ok
    verdict = server.verify(old, method="REGISTER", now=3.0, password="pw")
    assert verdict.outcome is DigestOutcome.STALE


def test_unknown_scheme_and_malformed_headers() -> None:
    with pytest.raises(DigestParseError):
        parse_authorization("NoOneKnowsThisScheme opaque-data=here")
    for bad in ('Digest username="a"', 'Digest username="a", username="b"',
                'Digest realm="r", nonce="n", uri="u", response="x", username="a", qop=auth',
                "Digest ,,,", 'Digest username="unterminated'):
        with pytest.raises(DigestParseError):
            parse_authorization(bad)
    challenge = DigestChallenge("r", "n", "SHA-256", ("auth",), "o", True)
    assert parse_challenge(challenge.to_header()) == challenge


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_authorization_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(DigestParseError):
        parse_authorization(text)


def test_register_challenge_round_trip_through_messages() -> None:
    register = parse_message(
        b"REGISTER sip:dispatch.example.cn SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKreg1\r\n"
        b"From: <sip:8001@dispatch.example.cn>;tag=r1\r\nTo: <sip:8001@dispatch.example.cn>\r\n"
        b"Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:8001@192.0.2.50>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(register, SipRequest)
    server = make_server()
    response = parse_message(challenge_response(register, server, 10.0, to_tag="x").to_bytes())
    assert isinstance(response, SipResponse) and response.status == 401
    challenge = select_challenge(response.headers.get_all("WWW-Authenticate"))
    assert challenge.algorithm == "SHA-256"
    creds = DigestClient("8001", "pw").authorize(challenge, "REGISTER", str(register.uri))
    register.headers.add("Authorization", 'Basic Zm9vOmJhcg==')
    register.headers.add("Authorization", 'Digest realm="other", x=1')
    register.headers.add("Authorization", creds.to_header())
    found = credentials_for_realm(register.headers.get_all("Authorization"), server.realm)
    assert found == creds
    verdict = server.verify(found, method="REGISTER", now=11.0, password="pw",
                            request_uri=str(register.uri))
    assert verdict.ok
    proxy = challenge_response(register, server, 10.0, proxy=True, stale=True)
    assert proxy.status == 407
    assert "stale=true" in (proxy.headers.get("Proxy-Authenticate") or "")
