"""Radio and dispatch together: handset positions move units, assignments go out by SDS.

A real in-process daemon with the TETRA emulator on a pty and the shipped units
(conf/units.toml: E-101 carries radio id 1190101).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from radioharness import radio_rig

from dispatch.auth import Principal, Role
from dispatch.reports import NewReport
from hardware.emulators.tetra import decode_simple_text_sds
from intake.model import Channel

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"dispatch": {"units_file": str(ROOT / "conf/units.toml")}}


async def test_a_location_report_moves_the_unit_and_an_assignment_is_an_sds(
        tmp_path: Path, reactor: Any, db_url: str) -> None:
    async with radio_rig(tmp_path, reactor, db_url, UNITS) as rig:
        units = rig.daemon.dispatch.units
        rig.radio.inject_location("1190101", 23.0311, 113.7702)
        moved = await rig.expect("unit.changed", lambda e: e.unit_id == "E-101")
        assert (moved.lat, moved.lon) == (pytest.approx(23.0311, abs=1e-4),
                                          pytest.approx(113.7702, abs=1e-4))
        row = await units.get("E-101")
        assert row.position_source == "radio"

        placed = await rig.daemon.reports.submit(NewReport(
            Channel.API, "东城街道一栋居民楼起火，三人死亡，十二人受伤", dt.datetime.now(dt.UTC),
            caller="+8613800000001", lat=23.0205, lon=113.7518), actor="taker")
        assert placed.incident_id is not None
        refs = await units.assign(placed.incident_id, ["E-101"],
                                  Principal(0, "disp", Role.DISPATCHER))
        assert refs and refs[0].startswith("sds:1190101:"), refs
        sent = rig.radio.sds_sent[-1]
        assert sent.called.endswith("1190101")
        assert decode_simple_text_sds(sent.user_data) == (
            f"DISPATCH incident {placed.incident_id[:8]} accident/building_fire grade 3 "
            "at 23.02050,113.75180")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_dispatcher_keys_a_talkgroup_from_the_web_console(
        tmp_path: Path, reactor: Any, db_url: str) -> None:
    from test_web_console import ARTEFACTS, browser_page, log_in

    async with radio_rig(tmp_path, reactor, db_url) as rig, browser_page() as page:
        await rig.daemon.users.add_user("disp", Role.DISPATCHER, "disp-password", actor="test")
        await log_in(page, rig.url, "disp", "disp-password")
        row = "#talkgroups tr[data-talkgroup=fire]"
        await page.wait_for_selector(f"{row} button.ptt:not([disabled])")
        await page.click(f"{row} button.ptt")
        # The radio confirms it is on air; the panel shows who talks.
        assert (await rig.expect("radio.keyed", lambda e: e.keyed)).keyed is True
        await page.wait_for_selector(f"{row}.keyed td.talker:has-text('disp')")
        assert await page.get_attribute(f"{row} button.ptt", "aria-pressed") == "true"
        ARTEFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTEFACTS / "console-talkgroups.png"), full_page=True)
        await page.click(f"{row} button.ptt")  # release
        await rig.audited("radio.floor_released", lambda e: e.details["who"] == "disp")
        await page.wait_for_selector(f"{row} button.ptt[aria-pressed=false]")
        # The command group needs a commander: the press is refused and said so.
        await page.click("#talkgroups tr[data-talkgroup=command] button.ptt")
        await page.wait_for_selector("#radio-error:has-text('command: denied')")
        assert "needs commander" in (await page.text_content("#radio-error") or "")
        assert page.errors == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_dispatcher_calls_and_texts_a_village_satphone_from_the_web_console(
        tmp_path: Path, reactor: Any, db_url: str) -> None:
    """The satphone panel shows signal and registration, dials, hangs up and sends a Chinese
    SMS through the emulated handset on its pty; a bad number is refused with the reason."""
    from test_web_console import ARTEFACTS, browser_page, log_in

    from sms.pdu import decode_pdu

    async with radio_rig(tmp_path, reactor, db_url) as rig, browser_page() as page:
        await rig.daemon.users.add_user("disp", Role.DISPATCHER, "disp-password", actor="test")
        await log_in(page, rig.url, "disp", "disp-password")
        row = "#satphones tr[data-satphone=sat1]"
        await page.wait_for_selector(f"{row} td.signal:has-text('/5')")
        await page.wait_for_selector(f"{row} td.registration:text-is('registered')")
        await page.fill("#satphone-number", "+8613900000001")
        await page.click("#satphone-dial")
        await page.wait_for_selector(f"{row} td.call:has-text('+8613900000001')")
        assert rig.phone.call is not None and rig.phone.call.number == "+8613900000001"
        await rig.audited("satphone.dial", lambda e: e.actor == "disp")
        await page.screenshot(path=str(ARTEFACTS / "console-satphone.png"), full_page=True)
        await page.click("#satphone-hangup")
        await page.wait_for_selector(f"{row} td.call:text-is('')")
        assert rig.phone.call is None

        await page.fill("#satphone-text", "救援队两小时后到达，请在村委会等候")
        await page.click("#satphone-sms")
        await page.wait_for_function("document.querySelector('#satphone-text').value === ''")
        pdu = decode_pdu(rig.phone.sent[-1].pdu)
        assert pdu.text == "救援队两小时后到达，请在村委会等候"  # type: ignore[union-attr]

        await page.fill("#satphone-number", "not a number")
        await page.click("#satphone-dial")
        await page.wait_for_selector("#satphone-error:not(:empty)")
        assert page.errors == []
