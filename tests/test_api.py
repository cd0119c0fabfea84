"""The HTTP API against a running in-process daemon, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dispatch.auth import Role
from dispatch.storage import schema_head


async def login(client: httpx.AsyncClient, daemon: Any, name: str, role: Role) -> dict[str, str]:
    """Create a user and return the headers of a logged-in session."""
    await daemon.users.add_user(name, role, f"{name}-password", actor="test")
    r = await client.post("/api/v1/auth/login", json={"username": name,
                                                      "password": f"{name}-password"})
    assert r.status_code == 200, r.text
    assert r.json()["user"]["role"] == role.value
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_health_metrics_and_openapi(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.base_url) as client:
        health = (await client.get("/health")).json()
        assert health["status"] == "ok" and health["ready"] is True
        assert {"database", "http"} <= set(health["services"])
        assert health["services"]["database"]["detail"]["schema"] == schema_head()
        assert (await client.get("/ready")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'dispatchd_service_up{required="true",service="database"} 1.0' in metrics
        assert 'dispatchd_http_requests_total{method="GET",route="/health",status="200"}' in metrics
        spec = (await client.get("/openapi.json")).json()
        assert "/api/v1/duty-log" in spec["paths"]


async def test_authentication_and_roles(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.base_url) as client:
        r = await client.get("/api/v1/users")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in r.json()["detail"]
        r = await client.get("/api/v1/users", headers={"Authorization": "Bearer dpd_forged"})
        assert r.status_code == 401 and r.json()["detail"] == "invalid or expired token"
        taker = await login(client, daemon, "ct1", Role.CALL_TAKER)
        r = await client.get("/api/v1/users", headers=taker)
        assert r.status_code == 403
        assert r.json()["detail"] == "role call_taker may not users.read"
        admin = await login(client, daemon, "root", Role.ADMIN)
        r = await client.post("/api/v1/users", headers=admin,
                              json={"name": "disp1", "role": "dispatcher", "password": "x" * 12})
        assert r.status_code == 201 and r.json()["role"] == "dispatcher"
        r = await client.post("/api/v1/users", headers=admin,
                              json={"name": "disp1", "role": "dispatcher", "password": "x" * 12})
        assert r.status_code == 409
        r = await client.post("/api/v1/users", headers=admin,
                              json={"name": "Bad Name", "role": "janitor", "password": "x"})
        assert r.status_code == 422
        assert {tuple(e["loc"]) for e in r.json()["detail"]} == {
            ("body", "name"), ("body", "role"), ("body", "password")}
        r = await client.post("/api/v1/users/disp1/tokens", headers=admin, json={"label": "cad"})
        program = {"Authorization": f"Bearer {r.json()['token']}"}
        assert (await client.get("/api/v1/me", headers=program)).json()["name"] == "disp1"
        await client.patch("/api/v1/users/disp1", headers=admin, json={"disabled": True})
        assert (await client.get("/api/v1/me", headers=program)).status_code == 401
        assert (await client.post("/api/v1/auth/logout", headers=taker)).status_code == 204
        assert (await client.get("/api/v1/me", headers=taker)).status_code == 401


async def test_duty_log_is_persisted_audited_and_streamed(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.base_url) as client:
        sup = await login(client, daemon, "sup1", Role.SUPERVISOR)
        token = sup["Authorization"].split()[1]
        ws_url = daemon.base_url.replace("http", "ws") + "/events?topics=duty_log.,audit."
        async with connect(ws_url + f"&token={token}") as ws:
            hello = json.loads(await ws.recv())
            assert hello["data"] == {"user": "sup1", "topics": ["duty_log.", "audit."]}
            r = await client.post("/api/v1/duty-log", headers=sup,
                                  json={"text": "交接班：3号台话机故障已报修"})
            assert r.status_code == 201
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
        topics = sorted(f["topic"] for f in frames)
        assert topics == ["audit.recorded", "duty_log.added"]
        added = next(f for f in frames if f["topic"] == "duty_log.added")
        assert added["data"]["text"] == "交接班：3号台话机故障已报修"
        rows = (await client.get("/api/v1/duty-log", headers=sup)).json()
        assert [row["text"] for row in rows] == ["交接班：3号台话机故障已报修"]
        audit = (await client.get("/api/v1/audit", headers=sup,
                                  params={"action": "duty_log.written"})).json()
        assert audit[0]["actor"] == "sup1" and audit[0]["subject"] == f"duty_log:{rows[0]['id']}"


async def test_bad_input_gets_clear_answers(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.base_url) as client:
        ct = await login(client, daemon, "ct2", Role.CALL_TAKER)
        r = await client.post("/api/v1/duty-log", headers=ct, json={"text": "bell\x07"})
        assert r.status_code == 422 and "control characters" in r.text
        r = await client.post("/api/v1/duty-log", headers=ct, json={"text": "", "extra": 1})
        assert r.status_code == 422
        r = await client.post("/api/v1/duty-log", headers=ct, content=b"{not json")
        assert r.status_code == 422
        big = json.dumps({"text": "x" * 2_000_000})
        r = await client.post("/api/v1/duty-log", headers={**ct, "content-type":
                                                           "application/json"}, content=big)
        assert r.status_code == 413
        async def chunks() -> Any:  # no Content-Length: counted as the body arrives
            for _ in range(40):
                yield b"x" * 65536

        r = await client.post("/api/v1/duty-log", headers=ct, content=chunks())
        assert r.status_code == 413
        r = await client.post("/api/v1/duty-log", content=chunks(),  # read whole for JSON
                              headers={**ct, "content-type": "application/json"})
        assert r.status_code == 413
        r = await client.get("/api/v1/audit", headers=ct)
        assert r.status_code == 403
        assert (await client.get("/health")).status_code == 200


async def test_events_websocket_refuses_without_token(daemon: Any) -> None:
    ws_url = daemon.base_url.replace("http", "ws") + "/events"
    with pytest.raises(ConnectionClosed) as err:
        async with connect(ws_url) as ws:
            await ws.recv()
    assert err.value.rcvd is not None and err.value.rcvd.code == 4401


def test_listener_lets_asyncio_disable_nagle() -> None:
    """Responses written in two parts must not wait 40 ms for a delayed ACK (TCP_NODELAY)."""
    import socket

    from dispatch.httpserver import listen_tcp

    for host in ("127.0.0.1", "::1"):
        sock = listen_tcp(host, 0)
        try:
            assert sock.proto == socket.IPPROTO_TCP
        finally:
            sock.close()
