"""The HTTP JSON API, the ``/events`` WebSocket, ``/health`` and ``/metrics``.

Built with FastAPI, which validates every request body and query against the
declared models (a bad one is answered 422 with the offending field named)
and publishes the OpenAPI document at ``/openapi.json``.  Authentication is a
bearer token (``Authorization: Bearer ...``; for WebSockets, whose browser API
cannot set headers, also ``?token=``); every route names the permission it
needs, and a role without it gets 403.
"""


import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from dispatch import audit as audit_query
from dispatch.api_calls import mount_calls
from dispatch.api_campaigns import mount_campaigns
from dispatch.api_conferences import mount_conferences
from dispatch.api_dispatch import DispatchContext, mount_dispatch
from dispatch.api_monitor import mount_monitor
from dispatch.api_patch import mount_patch
from dispatch.api_radio import mount_radio
from dispatch.api_reports import mount_reports
from dispatch.api_residents import mount_residents
from dispatch.audit import AuditTrail
from dispatch.auth import AuthError, Permission, Principal, Role, UserExists, UserStore
from dispatch.campaigns import CampaignService
from dispatch.events import DutyLogAdded, EventHub, SubscriberOverflow
from dispatch.metrics import CONTENT_TYPE, Metrics
from dispatch.models import DutyLogEntry
from dispatch.radio_service import RadioService
from dispatch.reports import ReportService
from dispatch.residents import ResidentService
from dispatch.storage import Database, after_commit

API = "/api/v1"
WEB = Path(__file__).with_name("web")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# Text typed by an operator may hold newlines and tabs, never other controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class AppContext:
    """Everything the API needs from the daemon, passed in explicitly."""

    db: Database
    users: UserStore
    audit: AuditTrail
    hub: EventHub
    metrics: Metrics
    health: Callable[[], dict[str, Any]]
    clock: Callable[[], float]
    session_ttl_s: int
    max_body_bytes: int
    node: str
    version: str
    reports: ReportService
    campaigns: CampaignService
    webhook_secret: Callable[[], bytes | None]
    districts: Callable[[], dict[str, Any] | None] = lambda: None
    dispatch: DispatchContext | None = None
    residents: ResidentService | None = None
    radio: RadioService | None = None
    sip: Any = None
    conferences: Any = None
    patches: Any = None  # dispatch.radio_patch.PatchService when radio audio and media are on


# ---------------------------------------------------------------- models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(_Strict):
    """Credentials for a console log-in."""

    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class UserOut(BaseModel):
    """A user as the API shows it (never the password hash)."""

    name: str
    role: Role
    display_name: str
    disabled: bool
    created_at: dt.datetime


class TokenOut(BaseModel):
    """A freshly issued bearer token: shown once."""

    token: str
    token_id: int
    expires_at: dt.datetime | None
    user: UserOut | None = None


class UserIn(_Strict):
    """A new user."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    role: Role
    password: Annotated[str, Field(min_length=8, max_length=1024)]
    display_name: Annotated[str, Field(max_length=128)] = ""


class UserPatch(_Strict):
    """Changes to a user; omitted fields stay as they are."""

    role: Role | None = None
    password: Annotated[str | None, Field(min_length=8, max_length=1024)] = None
    disabled: bool | None = None


class TokenIn(_Strict):
    """A label for a program's API token."""

    label: Annotated[str, Field(min_length=1, max_length=128)]


class DutyLogIn(_Strict):
    """A duty-log entry typed by an operator."""

    text: Annotated[str, Field(min_length=1, max_length=4000)]

    @field_validator("text")
    @classmethod
    def _no_controls(cls, text: str) -> str:
        if _CONTROL.search(text):
            raise ValueError("control characters are not allowed")
        return text


class DutyLogOut(BaseModel):
    """A duty-log entry."""

    id: int
    at: dt.datetime
    author: str
    text: str


class AuditOut(BaseModel):
    """An audit-trail row."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


def _user_out(user: Any) -> UserOut:
    return UserOut(
        name=user.name, role=Role(user.role), display_name=user.display_name,
        disabled=user.disabled, created_at=user.created_at,
    )


# ---------------------------------------------------------------- middleware


class BodyLimit:
    """ASGI middleware: refuse request bodies over a size with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Wrap ``app``; ``max_bytes`` counts the body as it arrives."""
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, cutting it off past the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _never_receive, send)


async def _never_receive() -> Message:
    return {"type": "http.disconnect"}


class TextOnly:
    """ASGI middleware: a JSON body whose strings hold a lone surrogate escape
    (``"\\ud800"``, valid JSON but not text) gets 422 before any route sees it.

    Such a string cannot be encoded, so it would fail deep inside (storing a report,
    classifying it) as a server error.  Only bodies that contain ``\\ud`` are parsed
    here; the route parses the body again as usual.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check a JSON body, then pass the request on with the body replayed."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        if b"json" not in content_type.lower():
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body"):
                    break
        except HTTPException as exc:  # BodyLimit cut a body sent without Content-Length
            refusal = JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
            await refusal(scope, _never_receive, send)
            return
        body = b"".join(chunks)
        if b"\\ud" in body.lower() and _lone_surrogate(body):
            response = JSONResponse({"detail": "a string in the body holds a lone surrogate "
                                     "escape (\\ud800-\\udfff): not text"}, status_code=422)
            await response(scope, _never_receive, send)
            return
        sent = False

        async def replayed() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replayed, send)


def _lone_surrogate(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False  # not JSON: the route answers 422 itself
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ---------------------------------------------------------------- app


def create_app(ctx: AppContext) -> FastAPI:
    """The ASGI application for one daemon."""
    app = FastAPI(
        title="dispatchd",
        version=ctx.version,
        description="Emergency command centre communications daemon: API and event stream.",
    )
    app.add_middleware(TextOnly)
    app.add_middleware(BodyLimit, max_bytes=ctx.max_body_bytes)  # outermost: runs first

    async def bearer(request: Request) -> Principal:
        token = _token_from(request.headers.get("authorization"), None)
        if token is None:
            raise HTTPException(401, "authentication required: send Authorization: Bearer TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            return await ctx.users.authenticate(token)
        except AuthError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None

    def needs(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
        async def check(principal: Annotated[Principal, Depends(bearer)]) -> Principal:
            if not principal.can(permission):
                raise HTTPException(
                    403, f"role {principal.role.value} may not {permission.value}"
                )
            return principal

        return check  # type: ignore[return-value]

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        ctx.metrics.http_requests.labels(request.method, route, str(response.status_code)).inc()
        ctx.metrics.http_seconds.labels(route).observe(time.perf_counter() - started)
        return response

    @app.get("/health", tags=["system"])
    async def health() -> dict[str, Any]:
        """Liveness (answers while the process runs) and each service's readiness."""
        return {"status": "ok", "node": ctx.node, "version": ctx.version, **ctx.health()}

    @app.get("/ready", tags=["system"], responses={503: {"description": "not ready"}})
    async def ready() -> JSONResponse:
        """200 when every required service runs, else 503 (for load balancers)."""
        snapshot = ctx.health()
        return JSONResponse(snapshot, status_code=200 if snapshot["ready"] else 503)

    @app.get("/metrics", tags=["system"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)

    @app.post(f"{API}/auth/login", tags=["auth"], responses={401: {"description": "refused"}})
    async def login(body: LoginIn, request: Request) -> TokenOut:
        """Exchange a user name and password for a session token."""
        source = request.client.host if request.client else "?"
        try:
            issued = await ctx.users.login(
                body.username, body.password, ttl_s=ctx.session_ttl_s, source=source
            )
        except AuthError as exc:
            raise HTTPException(401, str(exc)) from None
        user = await ctx.users.get(body.username)
        assert user is not None
        return TokenOut(token=issued.token, token_id=issued.id, expires_at=issued.expires_at,
                        user=_user_out(user))

    @app.post(f"{API}/auth/logout", tags=["auth"], status_code=204)
    async def logout(principal: Annotated[Principal, Depends(bearer)]) -> Response:
        """Revoke the token this request was made with."""
        if principal.token_id is not None:
            await ctx.users.revoke(principal.token_id, actor=principal.name)
        return Response(status_code=204)

    @app.get(f"{API}/me", tags=["auth"])
    async def me(principal: Annotated[Principal, Depends(bearer)]) -> dict[str, Any]:
        """Who the token belongs to and what the role may do."""
        from dispatch.auth import GRANTS

        return {"name": principal.name, "role": principal.role.value,
                "permissions": sorted(p.value for p in GRANTS[principal.role])}

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/")

    app.mount("/console", StaticFiles(directory=WEB, html=True), name="console")
    _mount_users(app, ctx, needs)
    mount_reports(app, ctx.reports, needs, ctx.webhook_secret, ctx.clock)
    mount_calls(app, ctx.sip, needs)
    mount_monitor(app, ctx.sip, needs)
    mount_conferences(app, ctx.conferences, needs)
    mount_campaigns(app, ctx.campaigns, needs)
    if ctx.dispatch is not None:
        mount_dispatch(app, ctx.dispatch, needs)
    if ctx.residents is not None:
        mount_residents(app, ctx.residents, ctx.campaigns, needs)
    mount_radio(app, ctx.radio, needs)
    mount_patch(app, ctx.patches, needs)
    _mount_records(app, ctx, needs)
    _mount_events(app, ctx)
    return app


def _mount_users(app: FastAPI, ctx: AppContext, needs: Any) -> None:
    @app.get(f"{API}/users", tags=["users"])
    async def list_users(
        _: Annotated[Principal, Depends(needs(Permission.USERS_READ))],
    ) -> list[UserOut]:
        """Every user."""
        return [_user_out(u) for u in await ctx.users.all_users()]

    @app.post(f"{API}/users", tags=["users"], status_code=201,
              responses={409: {"description": "exists"}})
    async def add_user(
        body: UserIn, who: Annotated[Principal, Depends(needs(Permission.USERS_MANAGE))]
    ) -> UserOut:
        """Create a user with a role and a password."""
        try:
            user = await ctx.users.add_user(body.name, body.role, body.password, actor=who.name,
                                            display_name=body.display_name)
        except UserExists as exc:
            raise HTTPException(409, str(exc)) from None
        return _user_out(user)

    @app.patch(f"{API}/users/{{name}}", tags=["users"], responses={404: {"description": "unknown"}})
    async def patch_user(
        name: str, body: UserPatch,
        who: Annotated[Principal, Depends(needs(Permission.USERS_MANAGE))],
    ) -> UserOut:
        """Change a user's role or password, or disable the account (revokes its tokens)."""
        try:
            user = await ctx.users.update(name, actor=who.name, role=body.role,
                                          password=body.password, disabled=body.disabled)
        except KeyError:
            raise HTTPException(404, f"no user {name!r}") from None
        return _user_out(user)

    @app.post(f"{API}/users/{{name}}/tokens", tags=["users"], status_code=201,
              responses={404: {"description": "unknown"}})
    async def issue_token(
        name: str, body: TokenIn, who: Annotated[Principal, Depends(needs(Permission.USERS_MANAGE))]
    ) -> TokenOut:
        """Issue a long-lived API token for a program acting as ``name``."""
        try:
            issued = await ctx.users.issue_api_token(name, body.label, actor=who.name)
        except KeyError:
            raise HTTPException(404, f"no user {name!r}") from None
        return TokenOut(token=issued.token, token_id=issued.id, expires_at=issued.expires_at)


def _mount_records(app: FastAPI, ctx: AppContext, needs: Any) -> None:
    @app.get(f"{API}/audit", tags=["audit"])
    async def read_audit(
        _: Annotated[Principal, Depends(needs(Permission.AUDIT_READ))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        subject: Annotated[str | None, Query(max_length=128)] = None,
        actor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> list[AuditOut]:
        """The audit trail, newest first; page with ``before_id``."""
        async with ctx.db.session() as s:
            rows = await audit_query.query(s, limit=limit, before_id=before_id, action=action,
                                           subject=subject, actor=actor)
            return [AuditOut(id=r.id, at=r.at, actor=r.actor, action=r.action,
                             subject=r.subject, details=r.details) for r in rows]

    @app.get(f"{API}/map", tags=["console"])
    async def read_map(
        _: Annotated[Principal, Depends(needs(Permission.INCIDENTS_READ))],
    ) -> dict[str, Any]:
        """The offline map's layers: the jurisdiction's districts (GeoJSON) or null."""
        return {"districts": ctx.districts()}

    @app.get(f"{API}/duty-log", tags=["duty log"])
    async def read_duty_log(
        _: Annotated[Principal, Depends(needs(Permission.DUTY_LOG_READ))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[DutyLogOut]:
        """The duty log, newest first."""
        async with ctx.db.session() as s:
            newest = select(DutyLogEntry).order_by(DutyLogEntry.id.desc()).limit(limit)
            rows = await s.scalars(newest)
            return [DutyLogOut(id=r.id, at=r.at, author=r.author, text=r.text) for r in rows]

    @app.post(f"{API}/duty-log", tags=["duty log"], status_code=201)
    async def write_duty_log(
        body: DutyLogIn, who: Annotated[Principal, Depends(needs(Permission.DUTY_LOG_WRITE))]
    ) -> DutyLogOut:
        """Write an entry in the duty log (persisted and audited before the answer)."""
        async with ctx.db.session() as s:
            row = DutyLogEntry(at=dt.datetime.fromtimestamp(ctx.clock(), dt.UTC),
                               author=who.name, text=body.text)
            s.add(row)
            await s.flush()
            ctx.audit.record(s, actor=who.name, action="duty_log.written",
                             subject=f"duty_log:{row.id}", details={"chars": len(body.text)})
            event = DutyLogAdded(id=row.id, at=row.at, author=row.author, text=row.text)
            after_commit(s, lambda: ctx.hub.publish(event))
        return DutyLogOut(id=row.id, at=row.at, author=row.author, text=row.text)


def _token_from(authorization: str | None, query: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query or None


def _mount_events(app: FastAPI, ctx: AppContext) -> None:
    @app.websocket("/events")
    async def events(ws: WebSocket, token: str | None = None, topics: str = "") -> None:
        """Stream domain events as JSON text frames; ``topics`` filters by prefix (comma list)."""
        raw = _token_from(ws.headers.get("authorization"), token)
        # Accept first and refuse with a close code: a browser cannot read the
        # HTTP status of a refused handshake, but it can read 4401/4403.
        await ws.accept()
        try:
            if raw is None:
                raise AuthError("authentication required")
            principal = await ctx.users.authenticate(raw)
        except AuthError as exc:
            await ws.close(code=4401, reason=str(exc)[:120])
            return
        if not principal.can(Permission.EVENTS_READ):
            await ws.close(code=4403, reason="role may not read events")
            return
        prefixes = [t.strip() for t in topics.split(",") if t.strip()][:32]
        sub = ctx.hub.subscribe(prefixes)

        async def watch_client() -> None:
            # The console sends nothing we act on; reading is how a closed
            # socket is noticed, so its subscription is freed at once.
            try:
                while (await ws.receive())["type"] != "websocket.disconnect":
                    pass
            finally:
                ctx.hub.unsubscribe(sub)
                if not sub.closed:
                    sub.closed = True
                    sub.queue.put_nowait(None)

        watcher = asyncio.get_running_loop().create_task(watch_client())
        try:
            await ws.send_json({"topic": "hello", "data": {"user": principal.name,
                                                           "topics": prefixes}})
            async for envelope in sub:
                await ws.send_json(envelope.to_json())
            await ws.close(code=1001, reason="server shutting down")
        except SubscriberOverflow:
            await ws.close(code=1013, reason="too slow: events dropped, reconnect")
        except WebSocketDisconnect:
            pass
        finally:
            watcher.cancel()
            ctx.hub.unsubscribe(sub)
