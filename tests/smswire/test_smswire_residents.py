"""The broadcast registry through the daemon's API: import, preview, area campaigns, CAP export.

Runs on SQLite and PostgreSQL (the in-process ``daemon`` fixture); the CLI
import is run as a real process; the CAP output is validated against the
official OASIS CAP 1.2 schema.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import xmlschema
from sqlalchemy import select

from dispatch.auth import Role
from dispatch.models import CampaignRecipientRow, CampaignRow

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "cap" / "CAP-v1.2.xsd"
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"

# Dongcheng (东城街道) is roughly 113.762-113.85 E, 22.975-23.07 N in conf/sms/districts.geojson.
REGISTRY = """phone,name,language,address,lat,lon,district,groups,opt_out
13800000001,王伟,zh,东城大道1号,23.0200,113.8000,,三防责任人,
13800000002,李娜,zh,东城大道2号,23.0210,113.8010,,,
13800000003,John Smith,en,Dongcheng Rd 3,23.0220,113.8020,,,
13800000004,张敏,zh,东城大道4号,23.0230,113.8030,,,yes
13800000005,刘洋,zh,虎门镇,22.8200,113.6700,,三防责任人;村长,
13800000006,陈静,zh,没有坐标,,,东城街道,,
13800000001,王伟,zh,duplicate row,23.02,113.80,,楼长,
12,bad number,zh,,,,,,
13800000008,bad lat,zh,,95.0,113.8,,,
"""


async def login(c: httpx.AsyncClient, daemon: Any, name: str, role: Role) -> dict[str, str]:
    await daemon.users.add_user(name, role, f"{name}-password", actor="test")
    r = await c.post("/api/v1/auth/login", json={"username": name, "password": f"{name}-password"})
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_registry_preview_area_campaign_and_cap(daemon: Any) -> None:
    async with httpx.AsyncClient(base_url=daemon.base_url) as c:
        sup = await login(c, daemon, "sup", Role.SUPERVISOR)
        cmd = await login(c, daemon, "cmd", Role.COMMANDER)
        ct = await login(c, daemon, "ct", Role.CALL_TAKER)
        csv_headers = {"Content-Type": "text/csv"}
        r = await c.post("/api/v1/residents/import", content=REGISTRY.encode(),
                         headers={**ct, **csv_headers})
        assert r.status_code == 403, r.text
        r = await c.post("/api/v1/residents/import", content=REGISTRY.encode(),
                         headers={**sup, "Content-Type": "application/json"})
        assert r.status_code == 415
        r = await c.post("/api/v1/residents/import", content=REGISTRY.encode(),
                         headers={**sup, **csv_headers})
        assert r.status_code == 200, r.text
        summary = r.json()
        assert (summary["imported"], summary["merged_duplicates"]) == (6, 1)
        assert [(e["row"], e["column"]) for e in summary["errors"]] == [(8, "phone"), (9, "lat")]
        assert (await c.get("/api/v1/residents", headers=sup)).json() == {"count": 6}

        async def preview(targets: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            r = await c.post("/api/v1/campaigns/preview", json={"targets": targets, **extra},
                             headers=sup)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        circle = {"kind": "circle", "lat": 23.021, "lon": 113.801, "radius_m": 500}
        p = await preview([circle])
        assert (p["count"], p["opted_out"]) == (3, 1), "resident 4 opted out"
        p = await preview([circle], severity="extreme")
        assert (p["count"], p["opted_out"], p["opt_out_overridden"]) == (4, 0, True)
        p = await preview([{"kind": "district", "key": "东城街道"}])
        assert p["count"] == 4, "three inside the boundary + one listed without coordinates"
        p = await preview([{"kind": "group", "name": "三防责任人"},
                           {"kind": "list", "numbers": ["+86 139 0000 0000"]}])
        assert (p["count"], p["unregistered_numbers"]) == (3, 1)
        polygon = {"kind": "polygon", "label": "东江堤围",
                   "geometry": {"type": "Polygon", "coordinates": [[
                       [113.79, 23.01], [113.81, 23.01], [113.81, 23.03], [113.79, 23.03],
                       [113.79, 23.01]]]}}
        p = await preview([polygon])
        assert p["count"] == 3 and p["by_language"] == {"zh": 2, "en": 1}
        r = await c.post("/api/v1/campaigns/preview",
                         json={"targets": [{"kind": "district", "key": "火星"}]}, headers=sup)
        assert r.status_code == 422 and "火星" in r.json()["detail"]

        values = {"sender": "东莞三防", "area": "东城街道", "time": "22:00",
                  "route": "东城大道", "shelter": "东城中学", "hotline": "12345"}
        body = {"title": "东江洪水紧急撤离", "template": "flood_evacuation", "values": values,
                "per_language": {"en": {"sender": "Dongguan FCO", "area": "Dongcheng",
                                        "route": "Dongcheng Ave", "shelter": "Dongcheng School"}},
                "targets": [polygon]}
        r = await c.post("/api/v1/campaigns/from-area", json=body, headers=sup)
        assert r.status_code == 201, r.text
        made = r.json()
        assert (made["recipients"], made["severity"], made["opt_out_overridden"]) == (
            4, "extreme", True)
        cid = made["id"]
        async with daemon.db.session() as s:
            rows = (await s.execute(select(CampaignRecipientRow.msisdn, CampaignRecipientRow.lang,
                                           CampaignRecipientRow.text)
                                    .where(CampaignRecipientRow.campaign_id == cid))).all()
            campaign = await s.get(CampaignRow, cid)
        assert campaign is not None and campaign.status == "pending_approval"
        assert campaign.priority == 0, "template priority 1 is an evacuation"
        langs = {m: lang for m, lang, _ in rows}
        assert langs == {"+8613800000001": "zh", "+8613800000002": "zh",
                         "+8613800000003": "en", "+8613800000004": "zh"}
        texts = {m: t for m, _, t in rows}
        assert texts["+8613800000003"].startswith("[Dongguan FCO] FLOOD EVACUATION")
        assert texts["+8613800000001"].startswith("【东莞三防】洪水紧急撤离通知：东城街道")

        r = await c.get(f"/api/v1/campaigns/{cid}/cap", headers=cmd)
        assert r.status_code == 200 and r.headers["content-type"] == "application/cap+xml"
        xmlschema.XMLSchema(str(SCHEMA)).validate(r.content)
        root = ET.fromstring(r.content)
        infos = root.findall(f"{CAP}info")
        assert [i.findtext(f"{CAP}language") for i in infos] == ["zh-CN", "en-US"]
        assert {i.findtext(f"{CAP}severity") for i in infos} == {"Extreme"}
        assert infos[0].findtext(f"{CAP}area/{CAP}areaDesc") == "东江堤围"
        assert infos[0].findtext(f"{CAP}area/{CAP}polygon").startswith("23.010000,113.790000")
        assert (await c.get("/api/v1/campaigns/nope/cap", headers=cmd)).status_code == 404


def test_cli_import_persists_and_reports_row_errors(tmp_path: Path) -> None:
    registry = tmp_path / "residents.csv"
    registry.write_text(REGISTRY, encoding="utf-8")
    opt_out = tmp_path / "opt-out.txt"
    opt_out.write_text("13800000002\n+86 139 0000 0000\n", encoding="utf-8")
    config = tmp_path / "d.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "var"}"\n'
                      f'[sms]\ntemplates_file = "{ROOT / "conf/sms/templates.toml"}"\n'
                      f'districts_file = "{ROOT / "conf/sms/districts.geojson"}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dispatch.cli", "residents", *args,
                               "-c", str(config)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=120)

    strict = cli("import", str(registry), "--strict")
    assert strict.returncode == 1 and "row 8, column phone" in strict.stderr
    assert cli("count").stdout.strip() == "0", "a strict import with errors stores nothing"
    run = cli("import", str(registry), "--opt-out", str(opt_out))
    assert run.returncode == 0, run.stderr
    assert "row 9, column lat" in run.stderr
    assert '"imported": 6' in run.stdout and '"opted_out": 3' in run.stdout
    assert cli("count").stdout.strip() == "6", "kept in the database for the next start"
    missing = cli("import", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert Counter(line.split(":")[0] for line in run.stderr.splitlines()) == {
        str(registry): 2}
