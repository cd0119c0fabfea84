"""Reports and incidents through the API on SQLite and PostgreSQL: stored first, then placed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dispatch.audit import query
from dispatch.auth import Role
from dispatch.models import IncidentRow, ReportRow
from dispatch.reports import NewReport, ReportService
from intake.model import Channel

FIRE = "东城街道一栋居民楼起火，三人死亡，十二人受伤"
FIRE_AGAIN = "东城那栋楼还在烧，浓烟很大，有人被困"
FLOOD_FAR = "Flash flood in the village, 40 people evacuated"


@asynccontextmanager
async def client_for(daemon: Any, role: Role = Role.CALL_TAKER,
                     name: str = "ct") -> AsyncIterator[httpx.AsyncClient]:
    """An API client logged in as a new user of ``role``."""
    await daemon.users.add_user(name, role, f"{name}-password", actor="test")
    async with httpx.AsyncClient(base_url=daemon.base_url) as c:
        r = await c.post("/api/v1/auth/login", json={"username": name, "password": f"{name}-password"})
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c


async def test_report_is_stored_assessed_and_correlated(daemon: Any) -> None:
    seen: list[str] = []
    daemon.hub.listen(lambda env: seen.append(env.topic))
    async with client_for(daemon) as c:
        r = await c.post("/api/v1/reports", json={"text": FIRE, "caller": "13800138000",
                                                  "lat": 23.0205, "lon": 113.7518})
        assert r.status_code == 201, r.text
        first = r.json()
        report = (await c.get(f"/api/v1/reports/{first['report_id']}")).json()
        assert (report["category"], report["subtype"], report["grade"]) == ("accident", "building_fire", "III")
        assert set(report["agencies"]) >= {"119", "120"}
        assert report["assessment"]["grade"]["reasons"][0]["detail"].startswith("deaths")

        r = await c.post("/api/v1/reports", json={"text": FIRE_AGAIN, "lat": 23.0210, "lon": 113.7520})
        assert r.json()["incident_id"] == first["incident_id"], "same fire, same incident"
        r = await c.post("/api/v1/reports", json={"text": FLOOD_FAR, "lang": "en",
                                                  "lat": 22.80, "lon": 113.95})
        assert r.json()["incident_id"] != first["incident_id"]

        incidents = (await c.get("/api/v1/incidents")).json()
        assert [i["grade"] for i in incidents] == ["III", "IV"], "most severe first"
        fire = (await c.get(f"/api/v1/incidents/{first['incident_id']}")).json()
        assert fire["report_count"] == 2 and fire["colour"] == "yellow"
        assert [rep["text"] for rep in fire["reports"]] == [FIRE, FIRE_AGAIN]
    async with daemon.db.session() as s:
        actions = [a.action for a in await query(s, limit=50)]
    assert actions.count("report.received") == 3 and actions.count("report.assessed") == 3
    assert actions.count("incident.opened") == 2 and actions.count("incident.report_joined") == 1
    assert {"report.received", "report.assessed", "incident.changed"} <= set(seen)


async def test_merge_split_and_correction(daemon: Any) -> None:
    async with client_for(daemon) as c:
        a = (await c.post("/api/v1/reports", json={"text": FIRE, "lat": 23.02, "lon": 113.75})).json()
        b = (await c.post("/api/v1/reports", json={"text": FLOOD_FAR, "lat": 22.80, "lon": 113.95})).json()
        r = await c.post(f"/api/v1/incidents/{a['incident_id']}/merge", json={"absorb": b["incident_id"]})
        assert r.status_code == 200 and r.json()["report_count"] == 2
        gone = [i["id"] for i in (await c.get("/api/v1/incidents")).json()]
        assert b["incident_id"] not in gone
        r = await c.post(f"/api/v1/incidents/{a['incident_id']}/merge", json={"absorb": a["incident_id"]})
        assert r.status_code in (404, 409)
        r = await c.post(f"/api/v1/incidents/{a['incident_id']}/split", json={"report_ids": [b["report_id"]]})
        assert r.status_code == 200
        assert [rep["id"] for rep in r.json()["reports"]] == [b["report_id"]]
        r = await c.post(f"/api/v1/incidents/{a['incident_id']}/split", json={"report_ids": [a["report_id"]]})
        assert r.status_code == 409 and "at least one report" in r.json()["detail"]

        r = await c.post(f"/api/v1/reports/{b['report_id']}/correction",
                         json={"category": "accident", "subtype": "building_fire", "note": "wrong"})
        assert r.status_code == 200 and r.json()["category"] == "accident"
        r = await c.post(f"/api/v1/reports/{b['report_id']}/correction",
                         json={"category": "accident", "subtype": "earthquake"})
        assert r.status_code == 422
    # The correction is kept: a fresh service (a restarted daemon) classifies the same text so.
    fresh = ReportService(daemon.db, daemon.audit, lambda e: None, time.time)
    await fresh.start()
    assert fresh.intake.assess_text(FLOOD_FAR)[1].category.value == "accident"


async def test_bad_input_and_duplicates(daemon: Any) -> None:
    async with client_for(daemon) as c:
        for body in ({"text": ""}, {"text": "x", "lat": 91}, {"text": "x\x1b[2J"},
                     {"text": "x", "channel": "telepathy"}, {"text": "x", "colour": 1}):
            assert (await c.post("/api/v1/reports", json=body)).status_code == 422, body
        one = (await c.post("/api/v1/reports", json={"text": FIRE, "source_ref": "call-77"})).json()
        again = (await c.post("/api/v1/reports", json={"text": FIRE, "source_ref": "call-77"})).json()
        assert again == {**one, "duplicate": True}
        assert (await c.get("/api/v1/reports/nope")).status_code == 404
        # A lone surrogate escape is valid JSON but not text: 422, not a server error; a
        # proper pair (an emoji) is text.
        json_body = {"content-type": "application/json"}
        for path in ("/api/v1/reports", "/api/v1/classify"):
            r = await c.post(path, content=b'{"text": "\\ud800 fire"}', headers=json_body)
            assert r.status_code == 422 and "surrogate" in r.text, (path, r.text)
        r = await c.post("/api/v1/reports", content=b'{"text": "\\ud83d\\udd25 fire"}',
                         headers=json_body)
        assert r.status_code == 201, r.text


def signed(body: bytes, secret: bytes, ts: int) -> dict[str, str]:
    mac = hmac.new(secret, str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"x-dispatchd-timestamp": str(ts), "x-dispatchd-signature": f"sha256={mac}",
            "content-type": "application/json"}


async def test_sensor_webhook(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"sensor_id": "gas-07", "event_id": "e1", "text": "燃气浓度超标 gas leak",
                       "lat": 23.03, "lon": 113.76}).encode()
    async with httpx.AsyncClient(base_url=daemon.base_url) as c:
        assert (await c.post("/api/v1/hooks/sensor", content=body)).status_code == 503
        monkeypatch.setenv("DISPATCHD_WEBHOOK_SECRET", "s3cret")
        now = int(time.time())
        r = await c.post("/api/v1/hooks/sensor", content=body, headers=signed(body, b"wrong", now))
        assert r.status_code == 401
        r = await c.post("/api/v1/hooks/sensor", content=body, headers=signed(body, b"s3cret", now - 3600))
        assert r.status_code == 401 and "off" in r.json()["detail"]
        # Header bytes outside ASCII ("²" is a digit to str.isdigit; "é" in the signature
        # made hmac.compare_digest raise): 401, not a server error.
        for name, value in ((b"x-dispatchd-timestamp", b"\xb2"),
                            (b"x-dispatchd-signature", b"sha256=\xe9\xe9")):
            headers = {k.encode(): v.encode() for k, v in signed(body, b"s3cret", now).items()}
            r = await c.post("/api/v1/hooks/sensor", content=body, headers={**headers, name: value})
            assert r.status_code == 401, (name, r.text)
        r = await c.post("/api/v1/hooks/sensor", content=body, headers=signed(body, b"s3cret", now))
        assert r.status_code == 201 and r.json()["duplicate"] is False
        again = await c.post("/api/v1/hooks/sensor", content=body, headers=signed(body, b"s3cret", now))
        assert again.json() == {**r.json(), "duplicate": True}
        bad = b'{"sensor_id": "gas-07"}'
        r = await c.post("/api/v1/hooks/sensor", content=bad, headers=signed(bad, b"s3cret", now))
        assert r.status_code == 422
    async with daemon.db.session() as s:
        rows = (await s.scalars(select(ReportRow).where(ReportRow.channel == "sensor"))).all()
    assert [(x.caller, x.source_ref) for x in rows] == [("gas-07", "gas-07:e1")]


async def test_unassessed_report_is_assessed_at_start(daemon: Any) -> None:
    """A crash between storing and assessing loses nothing: start() finishes the job."""
    service = daemon.reports
    service._intake = None  # as if the process died before assessing
    async with daemon.db.session() as s:
        s.add(ReportRow(id="r-crash", channel="api", received_at=daemon_now(), text=FIRE,
                        caller="", address="", fields={}, created_by="ct", assessed=False,
                        agencies=[], assessment={}))
    await service.start()
    async with daemon.db.session() as s:
        row = await s.get(ReportRow, "r-crash")
        assert row is not None and row.assessed and row.incident_id is not None
        assert (await s.get(IncidentRow, row.incident_id)) is not None


def daemon_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


async def test_submit_directly_from_a_channel(daemon: Any) -> None:
    done = await daemon.reports.submit(
        NewReport(Channel.SMS, "紧急：长安镇化工厂泄漏", daemon_now(), caller="+8613800000000",
                  source_ref="smsc:abc"), actor="sms")
    assert done.incident_id is not None and not done.duplicate


async def test_live_classification_preview_stores_nothing(daemon: Any) -> None:
    async with client_for(daemon) as c:
        r = await c.post("/api/v1/classify", json={"text": FIRE})
        assert r.status_code == 200
        got = r.json()
        assert (got["category"], got["grade"], got["colour"]) == ("accident", "III", "yellow")
        assert any(f["kind"] == "deaths" and f["value"] == 3 for f in got["figures"])
        assert (await c.post("/api/v1/classify", json={"text": "x" * 9000})).status_code == 422
        assert (await c.get("/api/v1/reports")).json() == []


async def test_a_call_takers_description_reclassifies_and_replaces_a_voice_report(
        daemon: Any) -> None:
    async with client_for(daemon) as ct:
        # A fire is already open nearby (from an SMS).
        fire = await daemon.reports.submit(NewReport(
            Channel.SMS, FIRE, daemon_now(), caller="+8613800000009", lat=23.0205,
            lon=113.7518), actor="sms")
        # A call is answered: its voice report is filed before anyone has spoken.
        voice = await daemon.reports.submit(NewReport(
            Channel.VOICE, "Voice call to 110 from 13800000001", daemon_now(),
            caller="13800000001", source_ref="call-1"), actor="sip")
        assert voice.incident_id != fire.incident_id
        placeholder = voice.incident_id

        r = await ct.post(f"/api/v1/reports/{voice.report_id}/describe",
                          json={"text": FIRE_AGAIN, "lat": 23.0207, "lon": 113.7520})
        assert r.status_code == 200, r.text
        described = r.json()
        assert described["category"] == "accident" and described["subtype"] == "building_fire"
        assert described["incident_id"] == fire.incident_id  # joined the open fire
        assert described["text"].startswith("Voice call to 110") and FIRE_AGAIN in described["text"]
        got = (await ct.get(f"/api/v1/incidents/{fire.incident_id}")).json()
        assert got["report_count"] == 2
        async with daemon.db.session() as s:
            left = await s.get(IncidentRow, placeholder)
            trail = await query(s, subject=f"report:{voice.report_id}")
        assert left is not None and left.status == "merged"
        assert left.merged_into == fire.incident_id
        assert "report.described" in [a.action for a in trail]

        # Alone and far from anything: its own incident is recomputed, not replaced.
        other = await daemon.reports.submit(NewReport(
            Channel.VOICE, "Voice call to 120 from 13800000002", daemon_now(),
            caller="13800000002", source_ref="call-2"), actor="sip")
        r = await ct.post(f"/api/v1/reports/{other.report_id}/describe",
                          json={"text": "长安镇一家五金厂仓库起火，两人受伤",
                                "lat": 22.81, "lon": 113.81})
        assert r.status_code == 200 and r.json()["incident_id"] == other.incident_id
        got = (await ct.get(f"/api/v1/incidents/{other.incident_id}")).json()
        assert got["category"] == "accident" and "119" in got["agencies"]
        assert got["report_count"] == 1 and got["status"] == "new"

        assert (await ct.post("/api/v1/reports/nope/describe",
                              json={"text": "x"})).status_code == 404
        assert (await ct.post(f"/api/v1/reports/{other.report_id}/describe",
                              json={"text": "x", "lat": 22.8})).status_code == 422
