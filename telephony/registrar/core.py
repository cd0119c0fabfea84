"""The REGISTER transaction user (RFC 3261 section 10.3).

Theory of operation
-------------------
:meth:`Registrar.handle` takes one REGISTER, its source and ``now`` (wall
clock, epoch seconds) and returns the response, or None to drop it.  It is
a coroutine only because the stores are; it never reads a clock or a socket,
so tests drive it with a stepped ``now``.  :meth:`Registrar.on_request` is
the adapter side: it runs ``handle`` as a task and sends the answer through
the :class:`~telephony.sip.transport.SipEndpoint`.

Order of checks, cheapest and least revealing first:

1. a blocked source is dropped (the endpoint's ``admit`` gate normally
   drops it before parsing; see :meth:`Registrar.admit`);
2. the per-source token bucket: 503 with Retry-After;
3. digest authentication.  No credentials, an unknown user, a wrong
   password and a replayed nonce-count all get the *same* 401 with a fresh
   challenge (MD5 and SHA-256 by default, ``qop="auth"``), produced by the same code
   path: an unknown user is verified against a dummy HA1 so the work done
   and the answer are indistinguishable (no user enumeration).  Failures
   count toward blocking the source.  An expired nonce with the right
   password gets 401 ``stale=true`` and does not count;
4. the bindings, per 10.3 steps 5-8: ``Contact: *`` with ``Expires: 0``,
   per-contact expiry, 423 below ``min_expires``, clamp at ``max_expires``,
   Call-ID/CSeq ordering (500 for an out-of-order request), then the 200
   listing every current binding with its remaining time.

Updates of one AoR are serialised with a per-AoR lock, so concurrent
REGISTERs cannot lose each other's bindings on this node.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from telephony.registrar.events import (
    AuthFailed,
    AuthFailure,
    BindingAdded,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    RateLimited,
    RegistrarEvent,
    SourceBlocked,
)
from telephony.registrar.limits import FailureBlocker, TokenBucketLimiter
from telephony.registrar.store import Binding, BindingStore, CredentialStore, base_algorithm, ha1
from telephony.sip.digest import (
    DigestCredentials,
    DigestOutcome,
    DigestServer,
    challenge_response,
    credentials_for_realm,
)
from telephony.sip.errors import SipError
from telephony.sip.events import DeliverRequest
from telephony.sip.headers import NameAddr
from telephony.sip.message import Destination, SipRequest, SipResponse, build_response
from telephony.sip.proxied import origin_of
from telephony.sip.transport import NullTransactionUser, SipEndpoint
from telephony.sip.uri import SipUri

__all__ = ["Registrar", "RegistrarSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    """Typed registrar settings (the daemon's ``[sip.registrar]`` section)."""

    realm: str
    domain: str | None = None
    """Domain of the AoRs (``sip:user@domain``); the realm when None."""
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 7200
    max_bindings: int = 10
    nonce_ttl: float = 300.0
    algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    """Challenges in this order.  MD5 leads by default because SIPp, sipvicious
    and many phones answer only the first WWW-Authenticate and know only MD5
    (SIPp 3.6 fails outright on a SHA-256 first challenge).  This costs no
    security: whoever answers picks the algorithm among those offered anyway;
    only a SHA-256-capable client that blindly takes the first is downgraded.
    Put SHA-256 first, or offer it alone, when every phone supports RFC 8760."""
    check_digest_uri: bool = True
    """Digest ``uri`` must equal the Request-URI (RFC 3261 22.4 point 2 of 8)."""
    require_qop: bool = True
    """Refuse RFC 2069 responses without ``qop`` (pyVoIP 1.6 sends none; each of its
    nonces is then good for one use only, so replays still fail)."""
    rate: float = 5.0
    """REGISTERs per second per source address, sustained."""
    burst: float = 20.0
    max_failures: int = 5
    """Failed authentications in ``failure_window`` that block a source."""
    failure_window: float = 60.0
    block_for: float = 300.0
    exempt_networks: tuple[str, ...] = ()
    """Sources never rate limited or blocked (CIDR): trunks, and a front proxy
    such as Kamailio, behind which every phone shares one source address."""
    expiry_interval: float = 5.0
    """How often stored bindings are swept for expiry."""
    max_pending: int = 512
    """REGISTERs being processed at once (waiting on the stores); more get 503."""
    user_agent: str = "dispatchd"

    def __post_init__(self) -> None:
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        if self.max_bindings < 1 or self.max_pending < 1:
            raise ValueError("max_bindings and max_pending must be positive")
        for algorithm in self.algorithms:
            base_algorithm(algorithm)
        for network in self.exempt_networks:
            ipaddress.ip_network(network)


class _Reject(Exception):
    """Abort a REGISTER with this response (raised inside the binding update)."""

    def __init__(self, status: int, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status)
        self.status = status
        self.extra = extra


class Registrar(NullTransactionUser):
    """REGISTER handling with digest auth, rate limiting and blocking (module docs)."""

    name = "sip-registrar"

    def __init__(
        self,
        settings: RegistrarSettings,
        secret: bytes,
        bindings: BindingStore,
        credentials: CredentialStore,
        *,
        on_event: Callable[[RegistrarEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bindings = bindings
        self.credentials = credentials
        self.on_event = on_event
        self.clock = clock
        self.digest = DigestServer(settings.realm, secret, algorithms=settings.algorithms,
                                   nonce_ttl=settings.nonce_ttl,
                                   require_qop=settings.require_qop)
        self.limiter = TokenBucketLimiter(settings.rate, settings.burst)
        self.blocker = FailureBlocker(settings.max_failures, settings.failure_window,
                                      settings.block_for)
        self.endpoint: SipEndpoint | None = None
        self._dummy_password = secrets.token_hex(16)
        self._exempt = tuple(ipaddress.ip_network(n) for n in settings.exempt_networks)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def domain(self) -> str:
        """The AoR domain."""
        return self.settings.domain or self.settings.realm

    # -- service side ----------------------------------------------------------

    def attach(self, endpoint: SipEndpoint) -> None:
        """Answer through ``endpoint`` and gate its input on :meth:`admit`."""
        self.endpoint = endpoint
        endpoint.admit = self.admit

    async def start(self) -> None:
        """Start the expiry sweeper."""
        self._sweeper = asyncio.ensure_future(self._sweep_loop())

    async def stop(self) -> None:
        """Stop the sweeper and abandon REGISTERs in progress."""
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None

    def health(self) -> dict[str, object]:
        """Figures for the health endpoint."""
        return {"pending": len(self._tasks), "realm": self.settings.realm}

    def admit(self, host: str) -> bool:
        """The endpoint's gate: False while ``host`` is blocked (drop silently)."""
        return not self.blocker.is_blocked(host, self.clock())

    def exempt(self, host: str) -> bool:
        """True for sources in ``exempt_networks``."""
        if not self._exempt:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._exempt)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.expiry_interval)
            try:
                await self.expire(self.clock())
            except Exception:
                log.exception("registrar expiry sweep failed")

    async def expire(self, now: float) -> list[Binding]:
        """Remove bindings due at ``now``, reporting each as :class:`BindingExpired`."""
        gone = await self.bindings.expire(now)
        for binding in gone:
            self._emit(BindingExpired(binding))
        return gone

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        """Current bindings of ``aor`` (for routing calls to a registered user)."""
        return [b for b in await self.bindings.get(aor) if b.expires_at > now]

    def aor_for(self, user: str) -> str:
        """The AoR string of a user name in our domain."""
        return f"sip:{user}@{self.domain}"

    def on_request(self, event: DeliverRequest) -> None:
        """Run :meth:`handle` as a task and send its answer."""
        if event.key is None or self.endpoint is None:
            return
        if len(self._tasks) >= self.settings.max_pending:
            self.endpoint.send_response(build_response(
                event.request, 503, extra_headers=[("Retry-After", "5")]))
            return
        task = asyncio.ensure_future(self._serve(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, event: DeliverRequest) -> None:
        assert self.endpoint is not None
        try:
            response = await self.handle(event.request, event.source, self.clock())
        except Exception:
            log.exception("registrar bug on REGISTER from %s", event.source.host)
            response = build_response(event.request, 500)
        # A server transaction must end: a dropped REGISTER (source blocked
        # while it was in flight) is answered like any other failure.
        if response is None:
            response = challenge_response(event.request, self.digest, self.clock())
        self.endpoint.send_response(response)

    def _emit(self, event: RegistrarEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("registrar event callback failed on %s", type(event).__name__)

    # -- the core --------------------------------------------------------------

    async def handle(
        self, request: SipRequest, source: Destination, now: float
    ) -> SipResponse | None:
        """The response to one REGISTER from ``source`` at ``now``; None to drop it."""
        if request.method != "REGISTER":
            return build_response(request, 405, extra_headers=[("Allow", "REGISTER")])
        host = origin_of(request, source).host  # the phone's address even behind a proxy
        exempt = self.exempt(host)
        if not exempt and self.blocker.is_blocked(host, now):
            return None
        if not exempt and not self.limiter.allow(host, now):
            self._emit(RateLimited(host, now))
            retry = str(self.limiter.retry_after(host))
            return build_response(request, 503, extra_headers=[("Retry-After", retry)])
        try:
            user = _to_user(request)
        except SipError as exc:
            return build_response(request, exc.status, exc.reason)
        credentials = credentials_for_realm(
            request.headers.get_all("Authorization"), self.settings.realm)
        if credentials is None:
            return challenge_response(request, self.digest, now)
        refusal = await self._authenticate(request, credentials, user, host, now)
        if refusal is not None:
            return refusal
        self.blocker.record_success(host)
        try:
            return await self._update(request, source, self.aor_for(user), now)
        except SipError as exc:
            return build_response(request, exc.status, exc.reason)
        except _Reject as rej:
            return build_response(request, rej.status, extra_headers=rej.extra)

    async def _authenticate(
        self, request: SipRequest, creds: DigestCredentials, user: str, host: str, now: float
    ) -> SipResponse | None:
        """None when the credentials are good, else the (uniform) refusal."""
        try:
            algorithm = base_algorithm(creds.algorithm)
        except ValueError:
            algorithm = "MD5"
        stored = await self.credentials.ha1(creds.username, self.settings.realm, algorithm)
        if stored is None:
            # Same work as a known user with a wrong password (no enumeration).
            stored = ha1(creds.username, self.settings.realm, self._dummy_password, algorithm)
        uri = str(request.uri) if self.settings.check_digest_uri else None
        verdict = self.digest.verify(creds, method=request.method, now=now, ha1=stored,
                                     request_uri=uri)
        if verdict.outcome is DigestOutcome.STALE:
            return challenge_response(request, self.digest, now, stale=True)
        if verdict.outcome is DigestOutcome.OK:
            if creds.username != user:
                self._failed(host, creds.username, AuthFailure.USER_MISMATCH, now)
                return build_response(request, 403)
            return None
        why = (AuthFailure.REPLAY if verdict.outcome is DigestOutcome.REPLAY
               else AuthFailure.WRONG_CREDENTIALS)
        log.info("registrar: auth failed from %s for %r: %s", host, creds.username,
                 verdict.reason)
        self._failed(host, creds.username, why, now)
        return challenge_response(request, self.digest, now)

    def _failed(self, host: str, username: str, why: AuthFailure, now: float) -> None:
        self._emit(AuthFailed(host, username, why, now))
        if not self.exempt(host) and self.blocker.record_failure(host, now):
            until = self.blocker.blocked_until(host) or now
            log.warning("registrar: blocking %s until %.0f after failed logins", host, until)
            self._emit(SourceBlocked(host, self.settings.max_failures, until))

    async def _update(
        self, request: SipRequest, source: Destination, aor: str, now: float
    ) -> SipResponse:
        """Apply the Contact headers to the AoR's bindings; the 200 lists them all."""
        # One lock per AoR that passed authentication: bounded by the users table.
        lock = self._locks.setdefault(aor, asyncio.Lock())
        async with lock:
            current = [b for b in await self.bindings.get(aor) if b.expires_at > now]
            contacts = request.contacts
            if contacts:
                new, events = self._apply(request, source, aor, current, contacts, now)
                await self.bindings.replace(aor, new)
                current = new
                for event in events:
                    self._emit(event)
        headers = [("Contact", _contact_value(b, now)) for b in current]
        headers.append(("Server", self.settings.user_agent))
        return build_response(request, 200, extra_headers=headers)

    def _apply(
        self, request: SipRequest, source: Destination, aor: str,
        current: list[Binding], contacts: list[NameAddr], now: float,
    ) -> tuple[list[Binding], list[RegistrarEvent]]:
        """The new binding set and its events; raises :class:`_Reject` to abort."""
        call_id, cseq = request.call_id, request.cseq.number
        if contacts[0].star:
            if request.expires != 0:
                raise _Reject(400)
            for b in current:
                if b.call_id == call_id and cseq <= b.cseq:
                    raise _Reject(500)
            return [], [BindingRemoved(b) for b in current]
        by_contact = {b.contact: b for b in current}
        events: list[RegistrarEvent] = []
        for contact in contacts:
            uri = str(contact.sip_uri if isinstance(contact.uri, SipUri) else contact.uri)
            expires = self._expires(request, contact)
            old = by_contact.get(uri)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                raise _Reject(500)
            if expires == 0:
                if old is not None:
                    del by_contact[uri]
                    events.append(BindingRemoved(old))
                continue
            binding = Binding(
                aor=aor, contact=uri, expires_at=now + expires, call_id=call_id, cseq=cseq,
                source_transport=source.transport, source_host=source.host,
                source_port=source.port, q=_q(contact),
                user_agent=(request.headers.get("User-Agent") or "")[:200],
                registered_at=old.registered_at if old is not None else now,
            )
            by_contact[uri] = binding
            events.append(BindingAdded(binding) if old is None else BindingRefreshed(binding))
        if len(by_contact) > self.settings.max_bindings:
            raise _Reject(403)
        return list(by_contact.values()), events

    def _expires(self, request: SipRequest, contact: NameAddr) -> int:
        """Per-contact expiry (10.3 step 7): parameter, header, default; 423 or clamp."""
        value = contact.expires
        if value is None:
            value = request.expires
        if value is None:
            value = self.settings.default_expires
        if value == 0:
            return 0
        if value < self.settings.min_expires:
            raise _Reject(423, (("Min-Expires", str(self.settings.min_expires)),))
        return min(value, self.settings.max_expires)


def _to_user(request: SipRequest) -> str:
    """The user part of the To URI: the AoR being registered."""
    to = request.to.sip_uri
    if not to.user:
        raise SipError("To URI has no user part")
    return to.user


def _q(contact: NameAddr) -> float | None:
    value = contact.param("q")
    if value is None:
        return None
    try:
        q = float(value)
    except ValueError:
        raise SipError(f"bad q value {value!r}") from None
    if not 0 <= q <= 1:
        raise SipError(f"q value {value!r} out of range")
    return q


def _contact_value(binding: Binding, now: float) -> str:
    value = f"<{binding.contact}>;expires={binding.remaining(now)}"
    if binding.q is not None:
        value += f";q={binding.q:g}"
    return value

