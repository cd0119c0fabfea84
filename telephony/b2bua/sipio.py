"""The B2BUA's side of the endpoint: sending, answering, tasks, addresses.

Kept apart from the call logic in :mod:`telephony.b2bua.core` so that the
trunk manager and transfers share one way of building requests: our Via with
``rport``, our Contact at the advertised address, fresh Call-IDs and tags.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine, Iterable
from typing import Any

from telephony.b2bua.legs import Call
from telephony.registrar.core import Registrar
from telephony.registrar.store import base_algorithm, ha1
from telephony.sip.digest import DigestCredentials, DigestOutcome
from telephony.sip.events import DEFAULT_TIMERS, TimerSettings, TransactionKey
from telephony.sip.headers import Headers
from telephony.sip.message import (
    Destination,
    SipMessage,
    SipRequest,
    SipResponse,
    build_response,
    make_via,
    new_branch,
)
from telephony.sip.transport import NullTransactionUser, SipEndpoint
from telephony.sip.uri import parse_uri

__all__ = ["SipIo", "merge_option_tags"]

log = logging.getLogger(__name__)


def merge_option_tags(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """One Supported and one Require header each, with every option tag once (some
    peers read only the first Supported header)."""
    out: list[tuple[str, str]] = []
    tags: dict[str, list[str]] = {}
    for name, value in headers:
        if name in ("Supported", "Require"):
            if name not in tags:
                tags[name] = []
                out.append((name, ""))
            tags[name] += [t.strip() for t in value.split(",")
                           if t.strip() and t.strip() not in tags[name]]
        else:
            out.append((name, value))
    return [(n, ", ".join(tags[n]) if n in tags else v) for n, v in out]


class SipIo(NullTransactionUser):
    """Endpoint plumbing shared by the B2BUA parts; ``attach`` before use."""

    def __init__(self, user_agent: str) -> None:
        self.user_agent = user_agent
        self.endpoint: SipEndpoint | None = None
        self.advertise: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def attach(self, endpoint: SipEndpoint, advertise: str | None = None) -> None:
        """Send through ``endpoint``; ``advertise`` overrides the host in Via/Contact."""
        self.endpoint = endpoint
        self.advertise = advertise

    # -- clocks and tasks ------------------------------------------------------

    def mono(self) -> float:
        """The loop's monotonic clock (the ACD's and the transactions' ``now``)."""
        return asyncio.get_running_loop().time()

    def timers(self) -> TimerSettings:
        """The endpoint's RFC 3261 timer values."""
        return self.endpoint.settings.timers if self.endpoint else DEFAULT_TIMERS

    def spawn(self, coro: Coroutine[Any, Any, Any], call: Call | None = None) -> None:
        """Run ``coro`` as a task whose failure is logged, never lost."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("B2BUA task failed (a bug)", exc_info=task.exception())

    def close_tasks(self) -> None:
        """Cancel every task still running."""
        for task in list(self._tasks):
            task.cancel()

    # -- addresses -------------------------------------------------------------

    def local(self, transport: str) -> tuple[str, int]:
        """Our host and port for ``transport`` (the advertised host if configured)."""
        assert self.endpoint is not None
        try:
            bound = self.endpoint.address(transport)
        except LookupError:
            bound = self.endpoint.bound[0]
        return self.advertise or bound.host, bound.port

    def via(self, dest: Destination) -> str:
        """A Via for a new request towards ``dest`` (fresh branch, rport)."""
        host, port = self.local(dest.transport)
        return make_via(dest.transport, host, port, new_branch())

    def contact(self, dest: Destination) -> str:
        """Our Contact for dialogs with ``dest``."""
        host, port = self.local(dest.transport)
        suffix = "" if dest.transport.upper() == "UDP" else f";transport={dest.transport.lower()}"
        return f"<sip:dispatchd@{host}:{port}{suffix}>"

    def answer_headers(self, dest: Destination) -> list[tuple[str, str]]:
        """Contact, Allow and Server for our 2xx answers."""
        return [("Contact", self.contact(dest)),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER"),
                ("Content-Type", "application/sdp"), ("Server", self.user_agent)]

    # -- sending ---------------------------------------------------------------

    def send_response(self, response: SipResponse) -> None:
        """Through the server transaction."""
        assert self.endpoint is not None
        self.endpoint.send_response(response)

    def respond(self, request: SipRequest | None, status: int, *, reason: str | None = None,
                to_tag: str | None = None, extra: Iterable[tuple[str, str]] = ()) -> None:
        """Answer ``request`` (ignored when None or an ACK)."""
        if request is None or request.method == "ACK":
            return
        headers = [*extra, ("Server", self.user_agent)]
        self.send_response(build_response(request, status, reason, headers, to_tag=to_tag))

    def send_request(self, request: SipRequest, dest: Destination) -> TransactionKey:
        """Start a client transaction."""
        assert self.endpoint is not None
        return self.endpoint.send_request(request, dest)

    def send_stateless(self, message: SipMessage, dest: Destination) -> None:
        """ACKs for 2xx and 2xx retransmissions."""
        assert self.endpoint is not None
        self.endpoint.send_stateless(message, dest)

    def new_invite(self, target: str, from_: str, to: str, tag: str, dest: Destination,
                   body: bytes, extra: Iterable[tuple[str, str]] = (),
                   method: str = "INVITE", call_id: str | None = None,
                   cseq: int = 1) -> SipRequest:
        """A new out-of-dialog request (INVITE by default) to ``target``."""
        headers = Headers()
        headers.add("Via", self.via(dest))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{from_};tag={tag}")
        headers.add("To", to)
        headers.add("Call-ID", call_id or secrets.token_hex(16))
        headers.add("CSeq", f"{cseq} {method}")
        if method in ("INVITE", "REGISTER"):
            headers.add("Contact", self.contact(dest))
        if method == "INVITE":
            headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER")
        for name, value in extra:
            headers.add(name, value)
        headers.add("User-Agent", self.user_agent)
        if body:
            headers.add("Content-Type", "application/sdp")
        return SipRequest(headers, body, method, parse_uri(target))

    def _send_ack(self, leg: Any) -> None:
        """The ACK for the 2xx of a leg's INVITE (a new branch, not a transaction)."""
        ack = leg.dialog.create_ack(self.via(leg.peer))
        self.send_stateless(ack, leg.peer)

    # -- digest for INVITEs ----------------------------------------------------

    async def verify_digest(self, registrar: Registrar, request: SipRequest,
                            creds: DigestCredentials, host: str) -> DigestOutcome:
        """Check Proxy-Authorization with the registrar's realm, nonces and users.

        Unknown users are checked against a random HA1 (same work, same answer)
        and failures count towards blocking the source, as for REGISTER.
        """
        try:
            algorithm = base_algorithm(creds.algorithm)
        except ValueError:
            algorithm = "MD5"
        realm = registrar.settings.realm
        stored = await registrar.credentials.ha1(creds.username, realm, algorithm)
        if stored is None:
            stored = ha1(creds.username, realm, secrets.token_hex(16), algorithm)
        now = registrar.clock()
        uri = str(request.uri) if registrar.settings.check_digest_uri else None
        verdict = registrar.digest.verify(creds, method=request.method, now=now, ha1=stored,
                                          request_uri=uri)
        failed = verdict.outcome not in (DigestOutcome.OK, DigestOutcome.STALE)
        if failed and not registrar.exempt(host):
            registrar.blocker.record_failure(host, now)
        return verdict.outcome
