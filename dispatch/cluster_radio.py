"""Radio commands reach the node that drives the radio gateways, wherever they are typed.

In a cluster one node holds the ``radio`` lease and drives every gateway
(dispatch/cluster_lease.py); a dispatcher's console may be served by any node.
A node that does not drive the gateways (a standby, or a node woken from a
stall that has not yet confirmed it still holds them) sends radio commands on
to the holder, which checks the role, acts and audits them as its own:

* *HTTP* — :class:`ForwardRadioCommands`, an ASGI middleware beside
  dispatch/cluster_forward.py's call forwarding, replays requests under
  ``/api/v1/radio/``, ``/api/v1/satphones/``, ``/api/v1/talkgroups/{tg}/patch``
  and ``/api/v1/patches`` on the holder (the holder's URL from
  ``cluster_nodes``, the same bearer token, ``X-Dispatchd-Forwarded``; a
  forwarded request is never forwarded again).  Reads go too: the holder's
  floors are the live ones.
* *SSH* — :class:`RadioRelay` sends the console's radio commands (``ptt``,
  ``key``/``unkey``, ``sds send``, ``patch``, ``show talkgroups``...) over the
  same HTTP API.  An SSH user has no bearer token, so the relay issues one
  short-lived token for them (``kind = relay``, audited as ``token.issued``,
  reused for a few minutes) from the shared user table.

A floor keyed through a forwarded press lives on the holder, so everything that
ends it works as on one node: the release from the same console (forwarded the
same way), the gateway's transmit time-out (``tx_timeout_s``), the fail-safe
when the holder stops or loses the lease.  When no live node holds the lease
(during a takeover) the command runs here and is refused as before.

A node that believes it holds the lease but whose heartbeat is too old to act on
(woken from a stall) first settles it with one heartbeat: if it was taken over
meanwhile it lets go of the gateways (closing their ports) before the command
goes to the new holder, and if it was not, it acts itself.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from dispatch.auth import Principal, UserStore
from dispatch.cluster_forward import (
    FORWARDED,
    TIMEOUT_S,
    App,
    Receive,
    Scope,
    Send,
    read_body,
    replay,
)
from dispatch.commands import CommandError

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/api/v1/(?:radio/[^\s]{1,200}|satphones/[^/\s]{1,64}(?:/[a-z]{1,16})?"
                   r"|talkgroups/[^/\s]{1,64}/patch|patches)$")
#: Lifetime of a relay token, and how long one is reused (seconds).
RELAY_TOKEN_TTL_S = 600
RELAY_TOKEN_REUSE_S = 300
SILENT = "the node that drives the radio gateways did not answer"

Holder = Callable[[], Awaitable[tuple[str, str] | None]]
#: True when this node drives the radios now (settling a doubt first, see clusterwire).
Local = Callable[[], Awaitable[bool]]


class ForwardRadioCommands:
    """ASGI middleware: replay radio requests on the node that drives the gateways."""

    def __init__(self, app: App, *, node: str, is_local: Local, holder: Holder) -> None:
        """``is_local()``: this node drives the radios now; ``holder()``: who does."""
        self.app, self.node, self.is_local, self.holder = app, node, is_local, holder
        self.forwarded = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward when another node drives the radios; otherwise run the app."""
        if scope["type"] != "http" or _PATH.match(scope["path"]) is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        target = None if FORWARDED in headers or await self.is_local() else await _elsewhere(
            self.holder, self.node)
        if target is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive, send)
        if body is not None and await replay(scope, send, target[1], target[0], self.node,
                                             headers, body, SILENT):
            self.forwarded += 1


async def _elsewhere(holder: Holder, me: str) -> tuple[str, str] | None:
    """``(node, url)`` of the other node that drives the radios, if one does."""
    try:
        held = await holder()
    except Exception as exc:  # the database is out of reach: act (refuse) here
        log.warning("cannot tell which node drives the radio gateways: %s", exc)
        return None
    if held is None or held[0] == me or not held[1]:
        return None
    return held


class RadioRelay:
    """The SSH console's path to the node that drives the radio gateways."""

    def __init__(self, *, node: str, is_local: Local, holder: Holder,
                 users: UserStore, monotonic: Callable[[], float] = time.monotonic) -> None:
        """Relay as ``node``; tokens come from ``users`` (the shared user table)."""
        self.node, self.is_local, self.holder, self.users = node, is_local, holder, users
        self.monotonic = monotonic
        self._tokens: dict[str, tuple[str, float]] = {}
        self.relayed = 0

    async def __call__(self, principal: Principal, method: str, path: str,
                       body: dict[str, Any] | None = None) -> Any:
        """The holder's JSON answer, or ``None`` when this node drives the radios itself.

        Raises :class:`~dispatch.commands.CommandError` with the holder's reason when
        it refuses, or when it does not answer.
        """
        if await self.is_local():
            return None
        target = await _elsewhere(self.holder, self.node)
        if target is None:
            return None
        node, url = target
        headers = {"authorization": f"Bearer {await self._token(principal)}",
                   FORWARDED.decode(): self.node}
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                r = await client.request(method, url.rstrip("/") + path, json=body,
                                         headers=headers)
        except httpx.HTTPError as exc:
            log.warning("relaying %s %s to %s failed: %s", method, path, node, exc)
            raise CommandError(f"{SILENT} (node {node})") from None
        try:
            doc = r.json()
        except ValueError:
            doc = {"detail": r.text[:200]}
        if r.status_code >= 400:
            detail = doc.get("detail") if isinstance(doc, dict) else doc
            text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
            raise CommandError(f"{text} (node {node})")
        self.relayed += 1
        return doc

    async def _token(self, principal: Principal) -> str:
        now = self.monotonic()
        held = self._tokens.get(principal.name)
        if held is not None and held[1] > now:
            return held[0]
        try:
            issued = await self.users.relay_token(
                principal.name, ttl_s=RELAY_TOKEN_TTL_S, label=f"ssh relay via {self.node}")
        except KeyError:
            raise CommandError(f"user {principal.name!r} is unknown or disabled") from None
        self._tokens[principal.name] = (issued.token, now + RELAY_TOKEN_REUSE_S)
        return issued.token
