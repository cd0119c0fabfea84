"""The web console in a real browser (Debian's Chromium driven by Playwright).

Screenshots are kept in ``test-artefacts/`` for people to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from dispatch.auth import Role

ARTEFACTS = Path(__file__).resolve().parent.parent / "test-artefacts"
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


@pytest.fixture
async def page(daemon: Any) -> Any:
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
