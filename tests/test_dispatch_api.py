"""Dispatch through the daemon's HTTP API on SQLite and PostgreSQL, with a real SMTP server.

A report opens an incident; the shipped plans activate; officials get email (aiosmtpd) with
a signed acknowledgement link; a dispatcher confirms the proposed units; the lifecycle,
notes, links, timeline, statistics and CSV are read back.  The check-config command refuses
a plan file with mistakes, one line each, with exit code 2.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from mailpeer import MailSink
from test_reports import FIRE, client_for

from dispatch.auth import Principal, Role
from dispatch.events import Envelope, Subscription

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


@pytest_asyncio.fixture(loop_scope="session")
async def mail() -> AsyncIterator[MailSink]:
    sink = await MailSink().start()
    yield sink
    await sink.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def ddaemon(db_url: str, tmp_path: Path, reactor: Any, mail: MailSink
                  ) -> AsyncIterator[Any]:
    """A daemon with the shipped units, plans and roster, mailing to ``mail``."""
    from dispatch.config import parse_settings
    from dispatch.daemon import Daemon

    settings = parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": db_url, "auto_migrate": True},
        "http": {"port": 0}, "ssh": {"enabled": False},
        "dispatch": {"plans_dir": str(ROOT / "conf/plans"),
                     "units_file": str(ROOT / "conf/units.toml"),
                     "roster_file": str(ROOT / "conf/roster.toml"),
                     "email": True, "public_url": "https://ecc.example",
                     "smtp": {"host": "127.0.0.1", "port": mail.port, "security": "none",
                              "sender": "ecc@ecc.test"}},
    }, "test")
    d = Daemon(settings, reactor=reactor)
    await d.start()
    d.base_url = f"http://127.0.0.1:{d.http.bound[1]}"
    try:
        yield d
    finally:
        await d.stop()


async def next_events(sub: Subscription, n: int) -> list[Envelope]:
    """The next ``n`` events of a subscription (bounded wait, no sleeping)."""
    out: list[Envelope] = []

    async def take() -> None:
        async for env in sub:
            out.append(env)
            if len(out) == n:
                return

    await asyncio.wait_for(take(), 15)
    return out


async def test_report_to_plan_to_dispatch_through_the_api(ddaemon: Any, mail: MailSink) -> None:
    d = ddaemon
    activated = d.hub.subscribe(["plan.activated"])
    async with client_for(d, Role.CALL_TAKER, "ct") as ct, \
            client_for(d, Role.DISPATCHER, "disp") as disp, \
            client_for(d, Role.SUPERVISOR, "sup") as sup, \
            client_for(d, Role.ADMIN, "adm") as adm:
        r = await ct.post("/api/v1/reports", json={"text": FIRE, "lat": 23.0205,
                                                   "lon": 113.7518})
        iid = r.json()["incident_id"]
        events = await next_events(activated, 2)
        assert sorted(e.event.plan_id for e in events) == ["building-fire-III",
                                                           "building-fire-IV"]
        mails = [await mail.next() for _ in range(2)]  # 119 once although two plans name it
        assert sorted(m["To"] for m in mails) == ["duty-119@ecc.example",
                                                  "duty-120@ecc.example"]

        # The signed link: GET only shows a button (scanners fetch links); POST acknowledges.
        m120 = next(m for m in mails if m["To"] == "duty-120@ecc.example")
        link = re.search(r"https://ecc\.example(/ack/\S+)", m120.get_content())
        assert link, m120.get_content()
        async with httpx.AsyncClient(base_url=d.base_url) as anon:
            page = await anon.get(link.group(1))
            assert page.status_code == 200 and "<form method=post" in page.text
            got = await ct.get("/api/v1/notifications", params={"incident_id": iid})
            assert got.status_code == 200, got.text
            notes = got.json()
            # (the mail may have arrived a moment before "sent" is stored)
            assert {n["person"]: n["status"] for n in notes}["王医生"] in ("pending", "sent")
            done = await anon.post(link.group(1))
            assert done.status_code == 200 and "Acknowledged by 王医生" in done.text
            assert (await anon.post(link.group(1)[:-2] + "00")).status_code == 404
            # A mangled link (schemathesis found this one) is refused, not a server error.
            for bad in ("/ack/%F1%B8%90%A7%C3%8D~%11.%F3%9F%B6%B3", "/ack/%C3%A9.%ED%A0%80"):
                assert (await anon.post(bad)).status_code == 404
                assert (await anon.get(bad)).status_code == 404
        notes = (await ct.get("/api/v1/notifications", params={"incident_id": iid})).json()
        assert {n["person"]: n["status"] for n in notes}["王医生"] == "acknowledged"
        nid = next(n["id"] for n in notes if n["person"] == "张值班")

        # Proposed actions wait for someone who may decide.
        actions = (await ct.get("/api/v1/plans/actions",
                                params={"incident_id": iid, "status": "proposed"})).json()
        assert [(a["plan_id"], a["kind"]) for a in actions] == [
            ("building-fire-III", "units"), ("building-fire-III", "talkgroups"),
            ("building-fire-IV", "units")]
        units_iii = actions[0]["id"]
        assert (await ct.post(f"/api/v1/plans/actions/{units_iii}/confirm",
                              json={})).status_code == 403
        rec = (await ct.get(f"/api/v1/incidents/{iid}/recommendation")).json()
        assert [u["unit_id"] for u in rec["units"]][:3] == ["E-101", "E-102", "A-11"]
        assert rec["road_factor"] == 1.3 and "km by road" in rec["units"][0]["reason"]

        assert (await ct.post(f"/api/v1/incidents/{iid}/transition",
                              json={"to": "acknowledged"})).json()["status"] == "acknowledged"
        r = await ct.post(f"/api/v1/incidents/{iid}/transition", json={"to": "dispatched"})
        assert r.status_code == 403
        r = await disp.post(f"/api/v1/plans/actions/{units_iii}/confirm",
                            json={"note": "send them"})
        assert r.status_code == 200, r.text
        assert r.json()["payload"]["assigned"] == ["E-101", "E-102", "A-11", "A-12"]
        incident = (await ct.get(f"/api/v1/incidents/{iid}")).json()
        assert incident["status"] == "dispatched"
        r = await disp.post(f"/api/v1/plans/actions/{units_iii}/confirm", json={})
        assert r.status_code == 409

        r = await disp.post("/api/v1/units/E-101/status", json={"status": "on_scene"})
        assert r.status_code == 200 and r.json()["status"] == "on_scene"
        assert (await ct.get(f"/api/v1/incidents/{iid}")).json()["status"] == "on_scene"
        r = await disp.post("/api/v1/units/E-101/position",
                            json={"lat": 23.0206, "lon": 113.7519, "source": "gps"})
        assert r.json()["position"]["source"] == "gps"
        assert (await disp.post("/api/v1/units/E-101/position",
                                json={"lat": 123, "lon": 0})).status_code == 422

        assert (await ct.post(f"/api/v1/incidents/{iid}/notes",
                              json={"text": "二楼有人被困"})).status_code == 201
        r = await ct.post(f"/api/v1/incidents/{iid}/links",
                          json={"kind": "conference", "ref": "conf-42"})
        assert r.json()["added"] is True
        assert (await ct.post(f"/api/v1/incidents/{iid}/links",
                              json={"kind": "fax", "ref": "x"})).status_code == 422
        line = (await ct.get(f"/api/v1/incidents/{iid}/timeline")).json()
        actions_seen = [i.get("action") for i in line if i["kind"] == "audit"]
        for expected in ("report.received", "report.assessed", "incident.opened", "plan.activated", "notification.created",
                         "notification.sent", "notification.acknowledged",
                         "incident.acknowledged", "unit.assigned", "incident.dispatched",
                         "plan.action_confirmed", "unit.on_scene", "incident.on_scene",
                         "incident.note_added", "incident.linked"):
            assert expected in actions_seen, expected
        assert actions_seen.index("report.received") < actions_seen.index("incident.opened") \
            < actions_seen.index("plan.activated")
        assert [i["kind"] for i in line].count("note") == 1

        # Units and depots are editable by an administrator only.
        spec = {"name": "新能源 救护车", "agency": "120", "type": "ambulance",
                "lat": 23.05, "lon": 113.76, "phone": "+8613800120099"}
        assert (await disp.put("/api/v1/units/A-99", json=spec)).status_code == 403
        r = await adm.put("/api/v1/units/A-99", json=spec)
        assert r.status_code == 200 and r.json()["status"] == "available"
        bad = await adm.put("/api/v1/units/A-98", json={**spec, "phone": "call me"})
        assert bad.status_code == 422
        r = await adm.put("/api/v1/depots/D-1/stock/sandbag", json={"quantity": 19500})
        assert r.status_code == 200
        depots = (await ct.get("/api/v1/depots")).json()
        assert depots[0]["stock"]["sandbag"] == 19500

        # Roster hand-over by a shift lead; a call taker may only read it.
        body = {"agency": "119", "rank": 1, "person": "孙值班", "email": "sun@ecc.example"}
        assert (await ct.post("/api/v1/roster/handover", json=body)).status_code == 403
        assert (await sup.post("/api/v1/roster/handover", json=body)).status_code == 201
        on = (await ct.get("/api/v1/roster", params={"agency": "119"})).json()
        assert [o["person"] for o in on] == ["孙值班", "李副支队长"]

        # Statistics and CSV for the shift lead.
        assert (await ct.get("/api/v1/stats/incidents")).status_code == 403
        stats = (await sup.get("/api/v1/stats/incidents", params={"bucket": "hour"})).json()
        assert stats["total"] == 1 and stats["by_category"] == {"accident": 1}
        assert stats["by_grade"] == {"III": 1}
        assert stats["times"]["call_to_dispatch"]["count"] == 1
        assert stats["times"]["dispatch_to_on_scene"]["count"] == 1
        r = await sup.get("/api/v1/stats/incidents.csv")
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 1 and rows[0]["incident_id"] == iid and rows[0]["grade"] == "III"
        assert rows[0]["units_on_scene"] == "1"
        r = await sup.get("/api/v1/stats/incidents", params={"since": "2026-01-01T00:00:00"})
        assert r.status_code == 422

    # The console command acknowledges too.
    deputy = Principal(0, "sup", Role.SUPERVISOR)
    listing = await d.commands.run("show notifications", deputy)
    assert "王医生" in listing
    open_ = [n for n in await d.dispatch.notifications.recent(status="sent")
             if n.target_kind == "official"]
    assert [n.person for n in open_] == ["张值班"]
    assert (await d.commands.run(f"notify ack {open_[0].id}", deputy)) == (
        f"notification {open_[0].id} acknowledged (张值班)")
    assert await d.dispatch.notifications.recent(status="sent") == []
    # Through the API too: idempotent, the first acknowledgement is kept.
    async with client_for(d, Role.CALL_TAKER, "ct2") as ct2:
        r = await ct2.post(f"/api/v1/notifications/{nid}/ack")
        assert r.status_code == 200 and r.json()["acked_by"] == "sup"
    out = await d.commands.run("show units", deputy)
    assert "E-101" in out and "on_scene" in out


async def test_check_config_refuses_a_bad_plan_file(tmp_path: Path, db_url: str) -> None:
    if "postgresql" in db_url:
        return  # the command reads no database: one run is enough
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "p.toml").write_text('[[plan]]\nid = "x"\nname = "n"\ncategory = "accident"\n'
                                  'grade = "II"\nunits = [{ type = "fire_engine" }]\n'
                                  'talkgroups = [1190]\n', encoding="utf-8")
    conf = tmp_path / "d.toml"
    conf.write_text(f'[dispatch]\nplans_dir = "{plans}"\n', encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "check-config", str(conf)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"{plans / 'p.toml'}: plan 'x': units[0].count: required key is missing",
        f"{plans / 'p.toml'}: plan 'x': talkgroups[0]: Input should be a valid string (got 1190)",
    ]
    (plans / "p.toml").write_text('[[plan]]\nid = "x"\nname = "n"\ncategory = "accident"\n'
                                  'grade = "II"\n', encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "dispatch.cli", "check-config", str(conf)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["dispatch_files"] == {"units": 0, "depots": 0,
                                                        "plans": ["x"], "officials": 0}


async def test_bad_recommendation_queries_are_422_or_404(ddaemon: Any) -> None:
    # Found by schemathesis: a unit type outside [a-z0-9_] used to raise a 500.
    async with client_for(ddaemon, Role.DISPATCHER, "disp2") as disp:
        r = await disp.get("/api/v1/incidents/0/recommendation", params={"type": "AAA"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "type"]
        r = await disp.get("/api/v1/incidents/0/recommendation", params={"type": "fire_engine"})
        assert r.status_code == 404 and "no incident 0" in r.text


async def test_a_confirmed_plan_broadcast_waits_for_a_commander(ddaemon: Any) -> None:
    d = ddaemon
    await d.residents.import_text(
        "phone,name,language,address,lat,lon,district,groups,opt_out\n"
        "13800000001,王伟,zh,东城大道1号,23.0210,113.7520,,,\n"
        "13800000002,李娜,zh,东城大道2号,23.0230,113.7540,,,yes\n"
        "13800000003,刘洋,zh,虎门镇,22.8200,113.6700,,,\n", actor="test")
    async with client_for(d, Role.DISPATCHER, "disp3") as disp, \
            client_for(d, Role.COMMANDER, "chief3") as chief:
        r = await disp.post("/api/v1/reports", json={
            "text": "东城街道暴雨内涝，一百多户居民被困，三人失踪", "lat": 23.0205, "lon": 113.7518})
        iid = r.json()["incident_id"]
        proposed: list[dict[str, Any]] = []
        for _ in range(100):
            proposed = [a for a in (await disp.get(
                "/api/v1/plans/actions", params={"incident_id": iid,
                                                 "status": "proposed"})).json()
                        if a["kind"] == "broadcast"]
            if proposed:
                break
            await asyncio.sleep(0.05)
        assert proposed and proposed[0]["plan_id"] == "flood-III"
        r = await disp.post(f"/api/v1/plans/actions/{proposed[0]['id']}/confirm", json={})
        assert r.status_code == 200, r.text
        campaign: dict[str, Any] = {}
        for _ in range(100):
            found = [c for c in (await chief.get("/api/v1/campaigns")).json()
                     if c.get("incident_id") == iid]
            if found:
                campaign = found[0]
                break
            await asyncio.sleep(0.05)
        # Within 5 km, opt-out honoured: one resident; it waits for a second person.
        assert campaign["status"] == "pending_approval" and campaign["recipients"] == 1
        assert campaign["created_by"] == "disp3"
        r = await chief.post(f"/api/v1/campaigns/{campaign['id']}/approve")
        assert r.status_code == 200 and r.json()["status"] == "sending"
