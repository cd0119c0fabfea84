"""Supervisor commands about a call on another node are forwarded to that node.

A call's legs and media live on the node that took it; a supervisor's console
may be served by any node.  This ASGI middleware sees ``/api/v1/calls/{id}/
monitor…`` (强插) and ``/api/v1/calls/{id}/release`` (强拆) requests: when the
call is not live here and the cluster's call directory says another node owns
it, the request is replayed there over HTTP with the same bearer token (users
and tokens are in the shared database, so the owning node checks the role and
audits the action itself) and its answer returned as is.  Media stays on the
owning node: it rings the supervisor's phone into its own mixer.

A forwarded request carries ``X-Dispatchd-Forwarded``; a node never forwards
such a request again, so a stale directory cannot make two nodes bounce a
command between them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

FORWARDED = b"x-dispatchd-forwarded"
_PATH = re.compile(r"^/api/v1/calls/([A-Za-z0-9_.:@-]{1,64})/(monitor(?:/[^/]{1,128})?|release)$")
MAX_BODY = 64 * 1024
TIMEOUT_S = 10.0


class ForwardCallCommands:
    """ASGI middleware: replay a call command on the node that owns the call."""

    def __init__(self, app: App, *, node: str, owner: Callable[[str], str | None],
                 url_of: Callable[[str], Awaitable[str | None]],
                 is_local: Callable[[str], bool]) -> None:
        """``owner(call_id)`` names the owning node; ``url_of`` its HTTP URL."""
        self.app, self.node = app, node
        self.owner, self.url_of, self.is_local = owner, url_of, is_local
        self.forwarded = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward when the call is elsewhere; otherwise run the app."""
        if scope["type"] != "http" or scope["method"] == "GET":
            await self.app(scope, receive, send)
            return
        match = _PATH.match(scope["path"])
        headers = dict(scope.get("headers") or [])
        if match is None or FORWARDED in headers or self.is_local(match.group(1)):
            await self.app(scope, receive, send)
            return
        node = self.owner(match.group(1))
        url = await self.url_of(node) if node and node != self.node else None
        if not url:
            await self.app(scope, receive, send)  # answers 404 as on a single node
            return
        body = await read_body(receive, send)
        if body is not None and await replay(scope, send, url, node or "", self.node, headers,
                                             body, "the node that owns this call did not answer"):
            self.forwarded += 1


async def read_body(receive: Receive, send: Send) -> bytes | None:
    """The request's body; ``None`` after answering 413 when it exceeds :data:`MAX_BODY`."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if len(body) > MAX_BODY:
            await _answer(send, 413, b'{"detail":"request body too large"}')
            return None
        if not message.get("more_body"):
            return body


async def replay(scope: Scope, send: Send, url: str, node: str, me: str,
                 headers: dict[bytes, bytes], body: bytes, silent: str) -> bool:
    """Send the request to ``node`` at ``url`` (marked forwarded by ``me``, same bearer
    token) and answer with what it said (True); 502 with ``silent`` if it did not answer."""
    out = {"content-type": headers.get(b"content-type", b"application/json").decode(),
           FORWARDED.decode(): me}
    if b"authorization" in headers:
        out["authorization"] = headers[b"authorization"].decode()
    query = scope.get("query_string", b"").decode()
    target = url.rstrip("/") + scope["path"] + (f"?{query}" if query else "")
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            r = await client.request(scope["method"], target, content=body, headers=out)
    except httpx.HTTPError as exc:
        log.warning("forwarding %s %s to %s failed: %s", scope["method"], scope["path"],
                    node, exc)
        await _answer(send, 502, json.dumps({"detail": silent}).encode())
        return False
    await _answer(send, r.status_code, r.content,
                  r.headers.get("content-type", "application/json"), node)
    return True


async def _answer(send: Send, status: int, body: bytes,
                  content_type: str = "application/json", node: str = "") -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body)).encode())]
    if node:
        headers.append((b"x-dispatchd-node", node.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
