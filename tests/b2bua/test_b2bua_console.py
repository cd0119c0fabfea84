"""The supervisor's view of live calls in the web console, with a real call (SIPp).

A SIPp carrier calls 110, a SIPp call taker answers; the supervisor sees the call
and the queue in Chromium and force-releases it (强拆) from there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from b2bua_helpers import SipDaemon, SippServer, errors, free_port, register_agents
from test_b2bua_sipp import call, trunk, uas_done, wait_for
from test_web_console import ARTEFACTS, browser_page, log_in


async def test_supervisor_sees_the_live_call_and_force_releases_it_from_the_console(
        tmp_path: Path, started: list[object]) -> None:  # noqa: F811 - the fixture
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    agent_port = free_port()
    agent = SippServer("agent_uas.xml", agent_port, tmp_path)
    started.append(agent)
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    api = sip.api()  # creates the supervisor "sup"
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier,
                                        "-trace_msg"))
    await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                            if c["state"] == "connected"], "a connected call")

    async with browser_page() as page:
        await log_in(page, sip.proc.url, "sup", "supervisor-password-1")
        assert await page.get_attribute("#views button[data-view=supervisor]",
                                        "aria-pressed") == "true"
        row = "#calls tbody tr[data-call]"
        await page.wait_for_selector(f"{row} td.call-state:has-text('connected')")
        assert "110" in (await page.text_content(row) or "")
        assert "alice" in (await page.text_content(row) or "")
        await page.wait_for_selector("#queues tr[data-queue=police]")
        await page.wait_for_selector("#agents tr[data-agent=alice] td.agent-state.busy")
        ARTEFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTEFACTS / "console-supervisor-calls.png"),
                              full_page=True)

        async def accept(dialog: Any) -> None:
            await dialog.accept("free the line")

        page.on("dialog", lambda d: asyncio.ensure_future(accept(d)))
        await page.click(f"{row} button.release")
        code, out = await caller
        assert code == 0, out + errors(tmp_path)
        await page.wait_for_selector(row, state="detached")
        # The supervisor pauses the call taker from the console.
        await page.wait_for_selector("#agents tr[data-agent=alice] button.agent-not_ready")
        await page.click("#agents tr[data-agent=alice] button.agent-not_ready")
        await page.wait_for_selector("#agents tr[data-agent=alice] td.agent-state.not_ready")
        assert page.errors == []
    assert api.get("/api/v1/agents").json()[0]["state"] == "not_ready"
    messages = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert 'text="force-released by sup: free the line"' in messages
    await uas_done(tmp_path, agent_port)


async def connected_call(tmp_path: Path, stack: list[object], extra_sip: str = ""
                         ) -> tuple[SipDaemon, Any, asyncio.Future[tuple[int, str]], str]:
    """A carrier's 110 call answered by call taker alice (a SIPp agent): the daemon, a
    supervisor's API client, the caller still talking, and the call's id (``stack``: the
    test's ``started`` list, stopped after it)."""
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    extra_sip=extra_sip)
    stack.append(sip)
    agent_port = free_port()
    agent = SippServer("agent_uas.xml", agent_port, tmp_path)
    stack.append(agent)
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    api = sip.api()
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "a connected call")
    return sip, api, caller, live[0]["call_id"]


async def test_call_taker_describes_the_call_on_the_console_and_it_is_reclassified(
        tmp_path: Path, started: list[object]) -> None:  # noqa: F811 - the fixture
    sip, api, caller, call_id = await connected_call(tmp_path, started)
    pw = tmp_path / "alice-pw"
    pw.write_text("alice-password-1\n")
    made = sip.cli("user", "add", "alice", "--role", "call_taker", "--password-file", str(pw))
    assert made.returncode == 0, made.stderr
    # The voice report is filed off the call path; wait until it is there.
    report = await wait_for(lambda: sip.rows(
        "SELECT report_id FROM call_records WHERE id = ? AND report_id IS NOT NULL", call_id),
        "the call's voice report")
    report_id = report[0][0]

    async with browser_page() as page:
        await log_in(page, sip.proc.url, "alice", "alice-password-1")
        await page.wait_for_selector("#current-call:not([hidden]):has-text('110')")
        await page.fill("#report-form textarea", "东城街道一栋居民楼起火，三人死亡，十二人受伤")
        await page.fill("#report-form input[name=lat]", "23.0205")
        await page.fill("#report-form input[name=lon]", "113.7518")
        await page.click("#report-form button[type=submit]")
        await page.wait_for_selector("#preview:has-text('Saved in incident')")
        assert page.errors == []
    got = api.get(f"/api/v1/reports/{report_id}").json()
    assert got["channel"] == "voice" and got["category"] == "accident"
    assert got["subtype"] == "building_fire" and got["lat"] == 23.0205
    assert api.post(f"/api/v1/calls/{call_id}/release", json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)


async def test_supervisor_forces_into_a_call_from_the_console(
        tmp_path: Path, started: list[object]) -> None:  # noqa: F811 - the fixture
    from b2bua_helpers import PASSWORD
    from test_b2bua_media import media

    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    accounts={"alice": PASSWORD, "sup1": PASSWORD}, media=media(tmp_path))
    started.append(sip)
    api = sip.api()  # creates the supervisor "sup"
    alice_port, sup_port = free_port(), free_port()
    started.append(SippServer("agent_uas.xml", alice_port, tmp_path))
    started.append(SippServer("agent_uas.xml", sup_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": alice_port, "sup1": sup_port}))[0] == 0
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "a connected call")
    call_id = live[0]["call_id"]

    def steps() -> list[tuple[str, str]]:
        return [(a, d) for a, d in sip.rows(
            "SELECT action, details FROM audit_log WHERE action LIKE 'call.monitor_%' "
            "ORDER BY id")]

    async with browser_page() as page:
        await log_in(page, sip.proc.url, "sup", "supervisor-password-1")
        row = f"#calls tr[data-call='{call_id}']"
        await page.fill("#my-phone", "sup1")
        await page.click(f"{row} button.monitor.listen")
        await page.wait_for_selector(f"{row} button.monitor.listen[aria-pressed=true]")
        await wait_for(lambda: [s for s in steps() if s[0] == "call.monitor_joined"],
                       "the supervisor's phone joined")
        await page.click(f"{row} button.monitor.barge")
        await page.wait_for_selector(f"{row} button.monitor.barge[aria-pressed=true]")
        await wait_for(lambda: [s for s in steps() if '"barge"' in s[1]], "barge mode")
        await page.click(f"{row} button.monitor.leave")
        await wait_for(lambda: [s for s in steps() if s[0] == "call.monitor_left"],
                       "the supervisor left")
        await page.wait_for_selector(f"{row} button.monitor.leave", state="detached")
        assert page.errors == []
    await uas_done(tmp_path, sup_port)  # the supervisor's phone was hung up
    assert api.post(f"/api/v1/calls/{call_id}/release", json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)


async def test_a_dispatcher_runs_a_conference_from_the_console(
        tmp_path: Path, started: list[object]) -> None:  # noqa: F811 - the fixture
    """Open a conference dialling two phones (SIPp), mute one, lock it (a new leg is refused
    with the reason), drop one, end it: each step reaches the real phones and the audit."""
    from b2bua_helpers import PASSWORD
    from test_b2bua_media import media

    sip = SipDaemon(tmp_path, agents={"alice": ["police"]},
                    accounts={"alice": PASSWORD, "unit1": PASSWORD, "unit2": PASSWORD},
                    media=media(tmp_path))
    started.append(sip)
    sip.api()  # creates the supervisor "sup"
    ports = {"unit1": free_port(), "unit2": free_port()}
    for port in ports.values():
        started.append(SippServer("agent_uas.xml", port, tmp_path))
    assert (await register_agents(sip, tmp_path, ports))[0] == 0

    def steps() -> list[str]:
        return [a for (a,) in sip.rows("SELECT action FROM audit_log WHERE action LIKE "
                                       "'conference.%' ORDER BY id")]

    async with browser_page() as page:
        await log_in(page, sip.proc.url, "sup", "supervisor-password-1")
        await page.fill("#conference-form input[name=conf_name]", "东城火灾会商")
        await page.fill("#conference-form input[name=participants]", "unit1, unit2")
        await page.click("#conference-form button[type=submit]")
        block = "#conferences .conference:has-text('东城火灾会商')"
        for unit in ports:
            await page.wait_for_selector(f"{block} tr[data-target='user:{unit}']")
        await wait_for(lambda: sip.rows("SELECT 1 FROM audit_log WHERE action = "
                                        "'conference.joined'")[1:], "both phones answered")
        await page.click(f"{block} tr[data-target='user:unit1'] button.leg-muted")
        await page.wait_for_selector(f"{block} tr[data-target='user:unit1'] button.leg-muted"
                                     ":has-text('Unmute')")
        await page.click(f"{block} button.lock")
        await page.wait_for_selector(f"{block} .badge.locked")
        await page.fill(f"{block} input.add-target", "alice")
        await page.click(f"{block} button.add-party")
        await page.wait_for_selector("#conference-error:has-text('locked')")
        ARTEFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTEFACTS / "console-conference.png"), full_page=True)
        await page.click(f"{block} tr[data-target='user:unit2'] button.leg-drop")
        await uas_done(tmp_path, ports["unit2"])  # the dropped phone got its BYE

        async def accept(dialog: Any) -> None:
            await dialog.accept("drill over")

        page.on("dialog", lambda d: asyncio.ensure_future(accept(d)))
        await page.click(f"{block} button.end")
        await uas_done(tmp_path, ports["unit1"])
        await page.wait_for_selector(block, state="detached")
        assert page.errors == []
    done = steps()
    for step in ("conference.created", "conference.muted", "conference.locked",
                 "conference.removed", "conference.ended"):
        assert step in done, (step, done)


async def test_describing_a_call_just_answered_waits_for_its_report(
        tmp_path: Path, started: list[object]) -> None:  # noqa: F811 - the fixture
    """Call records are written behind the calls; with a 1.5 s group-commit window the
    report is certainly not filed when the call taker describes the call at once, and the
    API waits for it instead of answering 409."""
    sip, api, caller, call_id = await connected_call(
        tmp_path, started, "session_expires = 90\nrecords_linger_ms = 1500")
    r = await asyncio.to_thread(api.post, f"/api/v1/calls/{call_id}/describe",
                                json={"text": "东城街道一栋居民楼起火，三人受伤"})
    assert r.status_code == 200, r.text
    got = api.get(f"/api/v1/reports/{r.json()['report_id']}").json()
    assert got["channel"] == "voice" and got["subtype"] == "building_fire"
    assert api.post(f"/api/v1/calls/{call_id}/release", json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
