"""The web console in a real browser (Debian's Chromium driven by Playwright).

Screenshots are kept in ``test-artefacts/`` for people to look at.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dispatch.auth import Role
from dispatch.models import ReportRow

ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = ROOT / "test-artefacts"
CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str:
    """Debian's Chromium, installed by scripts/test."""
    for candidate in CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    if os.environ.get("DISPATCHD_TEST_SKIP_BROWSER") == "1":
        pytest.skip("DISPATCHD_TEST_SKIP_BROWSER=1: browser tests skipped on request")
    raise RuntimeError("Chromium is not installed: run scripts/test, which installs it")


@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    """A fresh browser page (its console errors are collected on ``page.errors``)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-dev-shm-usage", "--disable-component-update", "--no-first-run"],
        )
        try:
            context = await browser.new_context(locale="en-GB", viewport={"width": 1280,
                                                                          "height": 800})
            pg = await context.new_page()
            pg.errors = []
            pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
            yield pg
        finally:
            await browser.close()


@pytest.fixture
async def page(daemon: Any) -> AsyncIterator[Any]:
    """A browser page for the ``daemon`` fixture's console."""
    async with browser_page() as pg:
        yield pg


@pytest_asyncio.fixture(loop_scope="session")
async def ddaemon(db_url: str, tmp_path: Path, reactor: Any) -> AsyncIterator[Any]:
    """A daemon with the shipped units, response plans and roster (no mail relay)."""
    from dispatch.config import parse_settings
    from dispatch.daemon import Daemon

    d = Daemon(parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": db_url, "auto_migrate": True},
        "http": {"port": 0}, "ssh": {"enabled": False},
        "console": {"districts_geojson": str(ROOT / "conf/sms/districts.geojson")},
        "dispatch": {"plans_dir": str(ROOT / "conf/plans"),
                     "units_file": str(ROOT / "conf/units.toml"),
                     "roster_file": str(ROOT / "conf/roster.toml")},
    }, "test"), reactor=reactor)
    await d.start()
    d.base_url = f"http://127.0.0.1:{d.http.bound[1]}"
    try:
        yield d
    finally:
        await d.stop()


# The console is the same on both backends: one browser run (on SQLite) is enough.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_login_health_duty_log_live_and_language(daemon: Any, page: Any) -> None:
    await daemon.users.add_user("lead", Role.SUPERVISOR, "lead-password", actor="test")
    ARTEFACTS.mkdir(exist_ok=True)
    await page.goto(daemon.base_url + "/")
    assert page.url.endswith("/console/")

    await page.fill("input[name=username]", "lead")
    await page.fill("input[name=password]", "wrong-password")
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#login-error:has-text('invalid user name or password')")

    await page.fill("input[name=password]", "lead-password")
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#app:not([hidden])")
    await page.wait_for_selector("#live.on")
    await page.wait_for_selector("tr[data-service=database] td.state-running")
    assert await page.text_content("#who") == "lead (supervisor)"
    # A supervisor starts on the supervisor's view: services and events, no report form.
    assert await page.get_attribute("#views button[data-view=supervisor]", "aria-pressed") == "true"
    assert await page.is_hidden("#report-form")

    await page.fill("#duty-form textarea", "19:05 三号台话机已修复")
    await page.click("#duty-form button[type=submit]")
    await page.wait_for_selector("#duty-log li:has-text('19:05 三号台话机已修复')")
    await page.wait_for_selector("#events li:has-text('duty_log.added')")
    await page.screenshot(path=str(ARTEFACTS / "console-en.png"), full_page=True)

    # A call taker types a report: the classification follows the typing, then it is filed.
    await page.click("#views button[data-view=taker]")
    await page.wait_for_selector("#report-form", state="visible")
    assert await page.is_hidden("#services")
    await page.fill("#report-form textarea", "东城街道一栋居民楼起火，三人死亡，十二人受伤")
    await page.wait_for_selector("#preview .grade.yellow:has-text('III')")
    assert "Accident" in await page.text_content("#preview")
    await page.fill("#report-form input[name=lat]", "23.02")
    await page.fill("#report-form input[name=lon]", "113.75")
    await page.click("#report-form button[type=submit]")
    await page.wait_for_selector("#preview:has-text('Saved in incident')")
    await page.wait_for_selector("#incidents li .grade.yellow")
    # Typed and sent at once: the live preview still pending must not wipe the confirmation.
    await page.evaluate("document.querySelector('#preview').textContent = ''")
    await page.fill("#report-form textarea", "南城大道一辆货车侧翻，司机受伤")
    await page.click("#report-form button[type=submit]")
    await page.wait_for_selector("#preview:has-text('Saved in incident')")
    await page.wait_for_timeout(1000)  # past the 250 ms preview debounce and its answer
    assert (await page.text_content("#preview") or "").startswith("Saved in incident")
    # The offline map: the configured districts (conf/sms/districts.geojson) and the
    # incident as a yellow dot inside the district that holds its coordinates.
    await page.wait_for_selector("#map circle.inc.yellow")
    assert await page.locator("#map path.district").count() == 5
    assert await page.locator("#map text", has_text="Nancheng").count() == 1
    holder = await page.evaluate("""() => {
        const dot = document.querySelector('#map circle.inc');
        const pt = new DOMPoint(Number(dot.getAttribute('cx')), Number(dot.getAttribute('cy')));
        return [...document.querySelectorAll('#map path.district')]
            .filter((p) => p.isPointInFill(pt)).map((p) => p.dataset.district);
    }""")
    assert holder == ["南城街道"]
    await page.screenshot(path=str(ARTEFACTS / "console-report-en.png"), full_page=True)

    await page.click("#lang")
    await page.wait_for_selector("h2:has-text('值班记录')")
    await page.wait_for_selector("#map text:has-text('南城街道')")
    await page.click("#views button:has-text('班长席')")
    assert await page.text_content("tr[data-service=database] td.state-running") == "运行中"
    await page.screenshot(path=str(ARTEFACTS / "console-zh.png"), full_page=True)

    await page.fill("#duty-form textarea", "   ")
    await page.click("#duty-form button[type=submit]")
    await page.wait_for_selector("#duty-error:has-text('text')")
    assert page.errors == []

    await page.click("#logout")
    await page.wait_for_selector("#login:not([hidden])")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_commander_approves_a_broadcast_in_the_console(daemon: Any, page: Any) -> None:
    from dispatch.campaigns import RecipientIn

    await daemon.users.add_user("chief", Role.COMMANDER, "chief-password", actor="test")
    cid = await daemon.campaigns.create(
        "东城洪水撤离", [RecipientIn("+8613800138000", "zh", "请立即撤离")], actor="duty-sup")
    await page.goto(daemon.base_url + "/console/")
    await page.fill("input[name=username]", "chief")
    await page.fill("input[name=password]", "chief-password")
    await page.click("#login button[type=submit]")
    item = f"#campaigns li[data-campaign='{cid}']"
    await page.wait_for_selector(f"{item}:has-text('awaiting approval')")
    await page.click(f"{item} button.approve")
    await page.wait_for_selector(f"{item}:has-text('sending')")
    await page.screenshot(path=str(ARTEFACTS / "console-broadcast-approved.png"), full_page=True)
    async with daemon.db.session() as s:
        from dispatch.models import CampaignRow

        row = await s.get(CampaignRow, cid)
        assert row is not None and row.approved_by == "chief"
    assert page.errors == []


async def log_in(page: Any, base_url: str, name: str, password: str) -> None:
    await page.goto(base_url + "/console/")
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", password)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("#app:not([hidden])")
    await page.wait_for_selector("#live.on")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_dispatcher_acknowledges_recommends_and_assigns(ddaemon: Any) -> None:
    from dispatch.reports import NewReport
    from intake.model import Channel

    await ddaemon.users.add_user("disp", Role.DISPATCHER, "disp-password", actor="test")
    placed = await ddaemon.reports.submit(NewReport(
        Channel.API, "东城街道一栋居民楼起火，三人死亡，十二人受伤", dt.datetime.now(dt.UTC),
        caller="+8613800000001", lat=23.0205, lon=113.7518), actor="taker")
    iid = placed.incident_id
    async with browser_page() as page:
        await log_in(page, ddaemon.base_url, "disp", "disp-password")
        # The dispatcher's view: incidents, plan actions, units on the map.
        assert await page.get_attribute("#views button[data-view=dispatcher]",
                                        "aria-pressed") == "true"
        await page.wait_for_selector("#units tbody tr[data-unit=E-101]")
        await page.wait_for_selector("#actions li:has-text('units')")
        assert await page.locator("#map rect.unit.available").count() >= 5

        await page.click(f"#incidents li[data-incident='{iid}']")
        await page.wait_for_selector(f"#incident-card[data-incident='{iid}']:not([hidden])")
        await page.click("#incident-steps button[data-step=acknowledged]")
        await page.wait_for_selector("#incident-status:has-text('acknowledged')")

        await page.click("#recommend")
        await page.wait_for_selector("#recommendation li[data-unit] >> nth=0")
        picked = await page.eval_on_selector_all(
            "#recommendation li[data-unit]", "els => els.map(e => e.dataset.unit)")
        reason = await page.text_content("#recommendation li[data-unit] .by")
        assert "km by road" in (reason or "")
        await page.click("#assign")
        await page.wait_for_selector("#incident-status:has-text('dispatched')")
        for unit in picked:
            await page.wait_for_selector(f"#units tr[data-unit='{unit}'] td.unit-assigned")

        await page.fill("#note-form textarea", "指挥车已出发")
        await page.click("#note-form button[type=submit]")
        await page.wait_for_selector("#timeline li:has-text('指挥车已出发')")
        await page.wait_for_selector("#timeline li:has-text('incident.acknowledged')")
        await page.wait_for_selector("#timeline li:has-text('unit.assigned')")
        await page.screenshot(path=str(ARTEFACTS / "console-dispatcher.png"), full_page=True)
        assert page.errors == []

    async with ddaemon.db.session() as s:
        from sqlalchemy import select

        from dispatch.models import IncidentRow

        status = await s.scalar(select(IncidentRow.status).where(IncidentRow.id == iid))
    assert status == "dispatched"


REGISTRY = """phone,name,language,address,lat,lon,district,groups,opt_out
13800000001,王伟,zh,东城大道1号,23.0200,113.8000,,三防责任人,
13800000002,李娜,zh,东城大道2号,23.0210,113.8010,,,
13800000003,John Smith,en,Dongcheng Rd 3,23.0220,113.8020,,,
13800000005,刘洋,zh,虎门镇,22.8200,113.6700,,三防责任人;村长,
"""


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_commander_draws_an_area_previews_and_requests_a_broadcast(
        daemon: Any, page: Any) -> None:
    await daemon.users.add_user("chief", Role.COMMANDER, "chief-password", actor="test")
    await daemon.residents.import_text(REGISTRY, actor="test")
    await log_in(page, daemon.base_url, "chief", "chief-password")
    assert await page.get_attribute("#views button[data-view=command]", "aria-pressed") == "true"
    await page.wait_for_selector("#composer select[name=template] option[value=flood_evacuation]",
                                 state="attached")
    await page.select_option("#composer select[name=template]", "flood_evacuation")

    # Draw a four-cornered area over the whole map by clicking it.
    await page.click("#draw-area")
    the_map = page.locator("#map")
    await the_map.scroll_into_view_if_needed()
    box = await the_map.bounding_box()
    for fx, fy in ((0.03, 0.03), (0.97, 0.03), (0.97, 0.97), (0.03, 0.97)):
        await the_map.click(position={"x": fx * box["width"], "y": fy * box["height"]})
    await page.click("#draw-area")  # finish
    await page.wait_for_selector("#map polygon.area")
    drawn = await page.evaluate("area")
    assert len(drawn) == 4

    await page.click("#preview-count")
    await page.wait_for_selector("#recipient-count:has-text('Reaches')")
    expected = await daemon.residents.preview(
        [{"kind": "polygon", "geometry": {"type": "Polygon",
                                          "coordinates": [[*drawn, drawn[0]]]}}],
        daemon.residents.templates["flood_evacuation"].severity)
    assert expected["count"] == 4  # everyone with coordinates in the jurisdiction
    assert f"Reaches {expected['count']} recipients" in await page.text_content("#recipient-count")

    await page.fill("#composer input[name=title]", "东城沿河撤离")
    for name in await page.eval_on_selector_all("#placeholders input", "els => els.map(e => e.name)"):
        await page.fill(f"#placeholders input[name={name}]", "东城" if name == "ph_area" else "x")
    await page.click("#composer button[type=submit]")
    await page.wait_for_selector("#campaigns li:has-text('东城沿河撤离'):has-text('awaiting approval')")
    await page.screenshot(path=str(ARTEFACTS / "console-composer.png"), full_page=True)
    assert page.errors == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_call_taker_attaches_a_duplicate_incident(daemon: Any, page: Any) -> None:
    from dispatch.reports import NewReport
    from intake.model import Channel

    await daemon.users.add_user("ct", Role.CALL_TAKER, "ct-password", actor="test")
    now = dt.datetime.now(dt.UTC)
    first = await daemon.reports.submit(NewReport(
        Channel.API, "东城街道一栋居民楼起火", now, caller="1", lat=23.0205, lon=113.7518),
        actor="t")
    # The same fire, reported with a wrong position far away: a second incident.
    second = await daemon.reports.submit(NewReport(
        Channel.API, "东城那栋居民楼起火了，浓烟很大", now, caller="2", lat=22.82, lon=113.67),
        actor="t")
    assert first.incident_id != second.incident_id
    await log_in(page, daemon.base_url, "ct", "ct-password")
    await page.click(f"#incidents li[data-incident='{first.incident_id}']")
    await page.wait_for_selector("#merge-box:not([hidden])")
    await page.select_option("#merge-with", second.incident_id)
    await page.click("#merge")
    await page.wait_for_selector(f"#incidents li[data-incident='{second.incident_id}']",
                                 state="detached")
    await page.wait_for_selector(f"#incidents li[data-incident='{first.incident_id}']"
                                 ":has-text('2 reports')")

    # It was not the same fire after all: the second report is split out again.
    await page.wait_for_selector("#split-box:not([hidden])")
    await page.check(f"#split-reports li[data-report='{second.report_id}'] input")
    await page.click("#split")
    await page.wait_for_selector(f"#incidents li[data-incident='{first.incident_id}']"
                                 ":has-text('1 report'):not(:has-text('1 reports'))")
    async with daemon.db.session() as s:
        moved = await s.get(ReportRow, second.report_id)
        kept = await s.get(ReportRow, first.report_id)
    assert moved is not None and kept is not None
    assert moved.incident_id not in (None, first.incident_id)
    assert kept.incident_id == first.incident_id
    await page.wait_for_selector(f"#incident-card[data-incident='{moved.incident_id}']")
    await page.screenshot(path=str(ARTEFACTS / "console-split.png"), full_page=True)
    assert page.errors == []


def test_every_console_string_exists_in_chinese_and_english() -> None:
    """The console is usable in both languages: no string falls back to its raw key."""
    source = (Path(__file__).parents[1] / "dispatch" / "web" / "app.js").read_text()
    zh = source.index("zh: {")
    en = source.index("en: {", zh)
    end = source.index("\n};", en)

    def keys(block: str) -> set[str]:
        return set(re.findall(r'(?:^|[\s,{])([a-z_0-9]+): "', block))

    chinese, english = keys(source[zh:en]), keys(source[en:end])
    assert len(english) > 100
    assert english - chinese == set(), "missing in Chinese"
    assert chinese - english == set(), "missing in English"
    html = (Path(__file__).parents[1] / "dispatch" / "web" / "index.html").read_text()
    used = set(re.findall(r'(?<![\w.])t\("([a-z_0-9]+)"\)', source)) | set(
        re.findall(r'data-i18n(?:-placeholder)?="([a-z_0-9]+)"', html))
    assert used - english == set(), "used but never defined"
