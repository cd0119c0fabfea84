"""Digest authentication for SIP (RFC 3261 22.4, RFC 2617, RFC 7616, RFC 8760).

Server side: :class:`DigestServer` issues challenges and verifies
credentials with MD5 or SHA-256 and ``qop=auth``.  Nonces are stateless:
``base64url(timestamp || salt || HMAC-SHA256(secret, timestamp || salt ||
realm)[:16])``, so any node holding the secret can check them and nothing is
stored per challenge.  An expired nonce with an otherwise correct response
is answered with ``stale=true``.  Replays are refused by remembering the
highest nonce-count seen per nonce in a bounded LRU; a nonce evicted from the
LRU is treated as stale from then on, so eviction can never re-open a
replay window.  Digests and MACs are compared in constant time.

Client side: :class:`DigestClient` answers a provider's 401/407 for our
outbound registrations and calls.

Everything takes ``now`` in seconds; nothing reads the clock.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from telephony.sip.errors import SipParseError
from telephony.sip.message import SipRequest, SipResponse, build_response

__all__ = [
    "ALGORITHMS",
    "challenge_response",
    "credentials_for_realm",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestOutcome",
    "DigestParseError",
    "DigestServer",
    "DigestVerdict",
    "compute_response",
    "parse_authorization",
    "parse_challenge",
    "select_challenge",
]

ALGORITHMS: dict[str, str] = {
    "MD5": "md5",
    "MD5-SESS": "md5",
    "SHA-256": "sha256",
    "SHA-256-SESS": "sha256",
}
_PREFERENCE = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_MAX_PARAMS = 32
_CLOCK_SKEW = 5.0
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_AUTH_PARAM_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=[ \t]*"
    r"(\"(?:[^\"\\]|\\.)*\"|[A-Za-z0-9\-.!%*_+`'~/:@?=]+)[ \t]*(,|$)"
)


class DigestParseError(SipParseError):
    """A malformed WWW-Authenticate / Authorization value."""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme k=v, k="v"`` into the scheme and lower-cased parameters."""
    scheme, _, rest = value.strip(" \t").partition(" ")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip(" \t")
    while pos < len(rest):
        match = _AUTH_PARAM_RE.match(rest, pos)
        if match is None or match.end() == pos:
            raise DigestParseError(f"bad auth-param at {rest[pos:pos + 40]!r}")
        name = match.group(1).lower()
        if name in params or len(params) >= _MAX_PARAMS:
            raise DigestParseError(f"repeated or too many auth-params ({name})")
        params[name] = _unquote(match.group(2))
        pos = match.end()
    return scheme, params


def _canonical_algorithm(name: str) -> str:
    upper = name.upper()
    if upper not in ALGORITHMS:
        raise DigestParseError(f"unsupported digest algorithm {name!r}")
    return {"MD5": "MD5", "MD5-SESS": "MD5-sess", "SHA-256": "SHA-256"}.get(upper, "SHA-256-sess")


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One WWW-Authenticate / Proxy-Authenticate digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    def to_header(self) -> str:
        """The header value, e.g. for ``WWW-Authenticate``."""
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> DigestChallenge:
    """Parse a digest challenge; raises :class:`DigestParseError`."""
    scheme, params = parse_auth_header(value)
    if scheme.lower() != "digest":
        raise DigestParseError(f"not a digest challenge: {scheme!r}")
    if "realm" not in params or "nonce" not in params:
        raise DigestParseError("challenge lacks realm or nonce")
    qop = tuple(q.strip() for q in params["qop"].split(",")) if "qop" in params else ()
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=_canonical_algorithm(params.get("algorithm", "MD5")),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def select_challenge(values: Iterable[str]) -> DigestChallenge:
    """Pick the strongest supported challenge (SHA-256 before MD5, RFC 8760)."""
    usable: list[DigestChallenge] = []
    for value in values:
        try:
            usable.append(parse_challenge(value))
        except DigestParseError:
            continue
    if not usable:
        raise DigestParseError("no supported digest challenge")
    return min(usable, key=lambda c: _PREFERENCE.index(c.algorithm))


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A parsed Authorization / Proxy-Authorization digest response."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def to_header(self) -> str:
        """The header value for ``Authorization``."""
        parts = [
            f"username={_quote(self.username)}", f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}", f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}", f"algorithm={self.algorithm}",
        ]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts += [f"qop={self.qop}", f"nc={self.nc}", f"cnonce={_quote(self.cnonce or '')}"]
        return "Digest " + ", ".join(parts)


def parse_authorization(value: str) -> DigestCredentials:
    """Parse a digest Authorization value; raises :class:`DigestParseError`.

    Credentials must be valid UTF-8: the parser keeps stray bytes as surrogates, which
    could be neither hashed nor looked up, so such a value is refused here (a registrar
    then challenges the request again)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DigestParseError("credentials are not valid UTF-8") from None
    scheme, p = parse_auth_header(value)
    if scheme.lower() != "digest":
        raise DigestParseError(f"not digest credentials: {scheme!r}")
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise DigestParseError(f"credentials lack {', '.join(missing)}")
    qop = p.get("qop")
    if qop is not None and ("cnonce" not in p or _NC_RE.fullmatch(p.get("nc", "")) is None):
        raise DigestParseError("qop given without a valid nc and cnonce")
    return DigestCredentials(
        username=p["username"], realm=p["realm"], nonce=p["nonce"], uri=p["uri"],
        response=p["response"].lower(), algorithm=_canonical_algorithm(p.get("algorithm", "MD5")),
        qop=qop, nc=p.get("nc"), cnonce=p.get("cnonce"), opaque=p.get("opaque"),
    )


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(ALGORITHMS[algorithm.upper()], text.encode("utf-8")).hexdigest()


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    password: str | None = None,
    ha1: str | None = None,
    qop: str | None = "auth",
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value (RFC 7616 3.4.1); give ``password`` or a stored ``ha1``.

    ``ha1`` is H(username:realm:password) for the algorithm's hash; the
    ``-sess`` variants derive the session HA1 from it with nonce and cnonce.
    """
    if ha1 is None:
        if password is None:
            raise ValueError("need password or ha1")
        ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop is None:
        return _h(algorithm, f"{ha1}:{nonce}:{ha2}")
    if qop != "auth":
        raise ValueError(f"unsupported qop {qop!r}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


class DigestOutcome(enum.Enum):
    """Result of verifying credentials."""

    OK = "ok"
    STALE = "stale"  # right password, old nonce: challenge again with stale=true
    INVALID = "invalid"  # wrong password, foreign nonce, bad fields: challenge again
    REPLAY = "replay"  # nonce-count not above the last one accepted: refuse


@dataclass(frozen=True, slots=True)
class DigestVerdict:
    """What :meth:`DigestServer.verify` decided, and for whom."""

    outcome: DigestOutcome
    username: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True only for :attr:`DigestOutcome.OK`."""
        return self.outcome is DigestOutcome.OK


_NONCE = struct.Struct(">Q8s16s")


class DigestServer:
    """Issue and check digest challenges for one realm (see module docs)."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300.0,
        max_tracked_nonces: int = 10000,
        require_qop: bool = True,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("digest secret must be at least 16 bytes")
        self.realm = realm
        self.algorithms = tuple(_canonical_algorithm(a) for a in algorithms)
        self.nonce_ttl = nonce_ttl
        self.require_qop = require_qop
        self._secret = secret
        self._random = random_bytes
        self._max_tracked = max_tracked_nonces
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._evicted_before_ms = -1
        self.opaque = hmac.new(secret, b"opaque:" + realm.encode(), "sha256").hexdigest()[:32]

    def _mac(self, stamp: bytes, salt: bytes) -> bytes:
        return hmac.new(self._secret, stamp + salt + self.realm.encode(), "sha256").digest()[:16]

    def new_nonce(self, now: float) -> str:
        """A fresh stateless nonce stamped with ``now``."""
        stamp = struct.pack(">Q", int(now * 1000))
        salt = self._random(8)
        return base64.urlsafe_b64encode(stamp + salt + self._mac(stamp, salt)).decode()

    def challenge(self, now: float, *, stale: bool = False) -> list[DigestChallenge]:
        """One challenge per configured algorithm, strongest first, sharing a nonce."""
        nonce = self.new_nonce(now)
        return [DigestChallenge(self.realm, nonce, a, ("auth",), self.opaque, stale)
                for a in self.algorithms]

    def _nonce_time_ms(self, nonce: str) -> int | None:
        """The nonce's timestamp if its MAC is ours, else None."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) != _NONCE.size:
            return None
        stamp_ms, salt, mac = _NONCE.unpack(raw)
        if not hmac.compare_digest(mac, self._mac(raw[:8], salt)):
            return None
        return int(stamp_ms)

    def verify(
        self,
        credentials: DigestCredentials,
        *,
        method: str,
        now: float,
        password: str | None = None,
        ha1: str | None = None,
        request_uri: str | None = None,
    ) -> DigestVerdict:
        """Check credentials for ``method``; give the user's password or stored HA1."""
        user = credentials.username

        def bad(reason: str) -> DigestVerdict:
            """An INVALID verdict with ``reason`` for the log."""
            return DigestVerdict(DigestOutcome.INVALID, user, reason)

        if credentials.realm != self.realm:
            return bad("realm mismatch")
        if credentials.algorithm not in self.algorithms:
            return bad("algorithm not offered")
        if credentials.opaque is not None and not hmac.compare_digest(
            credentials.opaque.encode(), self.opaque.encode()
        ):
            return bad("opaque mismatch")
        if request_uri is not None and credentials.uri != request_uri:
            return bad("digest uri differs from the Request-URI")
        if credentials.qop is None and self.require_qop:
            return bad("qop required")
        if credentials.qop not in (None, "auth"):
            return bad("unsupported qop")
        issued_ms = self._nonce_time_ms(credentials.nonce)
        if issued_ms is None:
            return bad("nonce not issued by us")
        if issued_ms > (now + _CLOCK_SKEW) * 1000:
            return bad("nonce from the future")
        expected = compute_response(
            algorithm=credentials.algorithm, username=user, realm=self.realm, method=method,
            uri=credentials.uri, nonce=credentials.nonce, password=password, ha1=ha1,
            qop=credentials.qop, nc=credentials.nc, cnonce=credentials.cnonce,
        )
        if not hmac.compare_digest(expected.encode(), credentials.response.encode()):
            return bad("wrong response")
        if now * 1000 - issued_ms > self.nonce_ttl * 1000:
            return DigestVerdict(DigestOutcome.STALE, user, "nonce expired")
        return self._check_count(credentials, issued_ms)

    def _check_count(self, credentials: DigestCredentials, issued_ms: int) -> DigestVerdict:
        user = credentials.username
        nonce = credentials.nonce
        count = int(credentials.nc, 16) if credentials.nc is not None else 0
        last = self._seen.get(nonce)
        if last is None and issued_ms <= self._evicted_before_ms:
            # Its count history may have been evicted: force a fresh nonce.
            return DigestVerdict(DigestOutcome.STALE, user, "nonce no longer tracked")
        if last is not None and count <= last:
            return DigestVerdict(DigestOutcome.REPLAY, user, f"nc {count} not above {last}")
        self._seen[nonce] = count
        self._seen.move_to_end(nonce)
        while len(self._seen) > self._max_tracked:
            old_nonce, _ = self._seen.popitem(last=False)
            old_ms = self._nonce_time_ms(old_nonce) or 0
            self._evicted_before_ms = max(self._evicted_before_ms, old_ms)
        return DigestVerdict(DigestOutcome.OK, user)


def credentials_for_realm(values: Iterable[str], realm: str) -> DigestCredentials | None:
    """The first well-formed digest credentials for ``realm`` among header values.

    A request may carry credentials for several realms (RFC 3261 22.3);
    malformed or foreign ones are skipped rather than failing the request.
    """
    for value in values:
        try:
            creds = parse_authorization(value)
        except DigestParseError:
            continue
        if creds.realm == realm:
            return creds
    return None


def challenge_response(
    request: SipRequest,
    server: DigestServer,
    now: float,
    *,
    proxy: bool = False,
    stale: bool = False,
    to_tag: str | None = None,
) -> SipResponse:
    """A 401 (or 407 for a proxy) carrying one challenge per algorithm."""
    header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    extra = [(header, c.to_header()) for c in server.challenge(now, stale=stale)]
    return build_response(request, 407 if proxy else 401, extra_headers=extra, to_tag=to_tag)


class DigestClient:
    """Answers digest challenges for one account (outbound registration/calls)."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str] = lambda: secrets.token_hex(16),
    ) -> None:
        self.username = username
        self._password = password
        self._cnonce = cnonce_factory
        self._counts: dict[str, int] = {}

    def authorize(self, challenge: DigestChallenge, method: str, uri: str) -> DigestCredentials:
        """Credentials for ``method uri`` under ``challenge`` (nc counts up per nonce)."""
        qop = "auth" if "auth" in challenge.qop else None
        if challenge.qop and qop is None:
            raise DigestParseError(f"no supported qop in {challenge.qop}")
        if qop is None and challenge.algorithm.endswith("-sess"):
            raise DigestParseError("-sess algorithms need qop")
        nc = cnonce = None
        if qop is not None:
            count = self._counts.get(challenge.nonce, 0) + 1
            if len(self._counts) > 64 and challenge.nonce not in self._counts:
                self._counts.clear()  # only the current nonces matter
            self._counts[challenge.nonce] = count
            nc, cnonce = f"{count:08x}", self._cnonce()
        response = compute_response(
            algorithm=challenge.algorithm, username=self.username, realm=challenge.realm,
            method=method, uri=uri, nonce=challenge.nonce, password=self._password,
            qop=qop, nc=nc, cnonce=cnonce,
        )
        return DigestCredentials(
            username=self.username, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
            response=response, algorithm=challenge.algorithm, qop=qop,
            nc=nc, cnonce=cnonce, opaque=challenge.opaque,
        )
