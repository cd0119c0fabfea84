"""The radio service in a real in-process daemon: TETRA PEI and satphone emulators on ptys."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from radioharness import radio_rig
from sqlalchemy import select

from dispatch import radio_service
from dispatch.auth import Role
from dispatch.models import AuditEntry, ReportRow
from dispatch.storage import Database
from hardware.emulators.tetra import decode_simple_text_sds
from radio.sds import decode_text, encode_text
from radio.tetra import TalkerChanged
from sms.pdu import decode_pdu, encode_deliver


async def test_ptt_by_role_priority_every_floor_event_audited(
        tmp_path: Path, reactor: Any, db_url: str) -> None:
    async with radio_rig(tmp_path, reactor, db_url) as rig, \
            httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp", Role.DISPATCHER)
        cmdr = await rig.headers(client, "cmdr", Role.COMMANDER)
        taker = await rig.headers(client, "taker", Role.CALL_TAKER)

        r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
        assert r.status_code == 200, r.text
        assert r.json()["events"][0]["event"] == "granted"
        assert (await rig.expect("radio.keyed")).keyed is True
        assert rig.radio.calls[1].talker == "self"

        r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=cmdr)
        assert [e["event"] for e in r.json()["events"]] == ["preempted", "granted"]
        assert r.json()["talkgroup"]["talker"] == "cmdr"
        assert r.json()["talkgroup"]["talker_priority"] == "commander"
        await rig.expect("radio.keyed", lambda e: e.keyed)  # on air for the commander
        r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
        assert r.json()["events"] == [{"talkgroup": "fire", "event": "queued", "who": "disp",
                                       "why": "cmdr is talking", "position": 1, "by": None}]
        r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=taker)
        assert r.status_code == 403  # call takers do not key radios

        r = await client.post("/api/v1/radio/talkgroups/command/ptt", headers=disp)
        assert r.json()["events"][0]["event"] == "denied"
        assert "needs commander" in r.json()["events"][0]["why"]

        r = await client.delete("/api/v1/radio/talkgroups/fire/ptt", headers=cmdr)
        assert [e["event"] for e in r.json()["events"]] == ["released", "granted"]
        assert r.json()["talkgroup"]["talker"] == "disp"
        await rig.expect("radio.keyed", lambda e: e.keyed)  # on air for the dispatcher again
        rig.tetra.drain()
        await client.delete("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
        await rig.tetra.command("AT+CUTXC=1")
        await rig.audited("radio.floor_released", lambda e: e.details["who"] == "disp")
        r = await client.get("/api/v1/radio/talkgroups", headers=taker)
        fire = next(t for t in r.json() if t["name"] == "fire")
        assert (fire["talker"], fire["queue"], fire["keyed"], fire["gateway_state"]) == (
            None, [], False, "up")
        assert rig.radio.calls[1].talker is None

    db = Database(db_url)
    try:
        async with db.session() as s:
            rows = (await s.scalars(select(AuditEntry).where(AuditEntry.action.like("radio.%"))
                                    .order_by(AuditEntry.id))).all()
    finally:
        await db.close()
    trail = [(r.action, r.actor, r.details.get("who")) for r in rows
             if r.action.startswith("radio.floor_") and r.subject == "talkgroup:fire"]
    assert trail == [
        ("radio.floor_granted", "disp", "disp"),
        ("radio.floor_preempted", "system", "disp"),
        ("radio.floor_granted", "cmdr", "cmdr"),
        ("radio.floor_queued", "disp", "disp"),
        ("radio.floor_released", "cmdr", "cmdr"),
        ("radio.floor_granted", "disp", "disp"),
        ("radio.floor_released", "disp", "disp"),
    ]
    denied = [r for r in rows if r.action == "radio.floor_denied"]
    assert [d.subject for d in denied] == ["talkgroup:command"]
    assert any(r.action == "radio.keyed" for r in rows)
    assert any(r.action == "radio.unkeyed" for r in rows)


async def test_stop_unkeys_and_the_journal_is_flushed(tmp_path: Path, reactor: Any) -> None:
    async with radio_rig(tmp_path, reactor) as rig:
        rig.daemon.radio.request_ptt("fire", "disp", radio_service.Priority.DISPATCHER)
        await rig.expect("radio.keyed")
        assert rig.radio.calls[1].talker == "self"
        await rig.daemon.stop()
        assert rig.radio.calls[1].talker is None
        assert "AT+CUTXC=1" in rig.radio.commands
    db = Database(f"sqlite:///{tmp_path / 'dispatchd.db'}")
    try:
        async with db.session() as s:
            actions = (await s.scalars(select(AuditEntry.action)
                                       .where(AuditEntry.subject == "talkgroup:fire"))).all()
    finally:
        await db.close()
    assert actions[-2:] == ["radio.floor_revoked", "radio.unkeyed"]


async def test_a_crash_in_a_handler_unkeys_and_the_service_keeps_serving(
        tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(service: Any, gateway: str, event: Any) -> None:
        raise RuntimeError("bug in the talker handler")

    async with radio_rig(tmp_path, reactor) as rig:
        radio = rig.daemon.radio
        monkeypatch.setitem(radio_service._HANDLERS, TalkerChanged, broken)
        radio.request_ptt("fire", "disp", radio_service.Priority.DISPATCHER)
        revoked = await rig.expect("radio.floor", lambda e: e.event == "revoked")
        assert (revoked.who, revoked.why) == ("disp", "radio service fault: RuntimeError")
        fault = await rig.expect("radio.gateway", lambda e: e.state == "fault")
        assert fault.detail == "radio service fault: RuntimeError"
        await rig.tetra.command("AT+CUTXC=1")
        assert rig.radio.calls[1].talker is None
        assert radio.counts["handler_crashes"] >= 1
        monkeypatch.undo()
        events = radio.request_ptt("fire", "disp", radio_service.Priority.DISPATCHER)
        assert events[0]["event"] == "granted"
        assert (await rig.expect("radio.keyed", lambda e: e.keyed)).talkgroup == "fire"


async def test_a_crashed_journal_task_unkeys_every_radio(
        tmp_path: Path, reactor: Any) -> None:
    async with radio_rig(tmp_path, reactor) as rig:
        radio = rig.daemon.radio
        radio.request_ptt("fire", "disp", radio_service.Priority.DISPATCHER)
        await rig.expect("radio.keyed")
        real = radio.audit

        class Exploding:
            def record(self, *args: Any, **kwargs: Any) -> None:
                radio.audit = real  # once
                raise RuntimeError("bug in the journal")

        radio.audit = Exploding()  # type: ignore[assignment]
        radio._journal_add("test", "test.poke", "x", {})
        revoked = await rig.expect("radio.floor", lambda e: e.event == "revoked")
        assert revoked.why == "radio service crashed: RuntimeError"
        await rig.tetra.command("AT+CUTXC=1")
        assert rig.radio.calls[1].talker is None
        # the journal was restarted: the revocation itself is audited
        await rig.audited("radio.floor_revoked")


async def test_gateway_lost_while_keyed_then_replugged(tmp_path: Path, reactor: Any) -> None:
    async with radio_rig(tmp_path, reactor) as rig, \
            httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp", Role.DISPATCHER)
        await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
        await rig.expect("radio.keyed")
        rig.radio.close()  # the USB adapter is pulled mid-transmission
        lost = await rig.expect("radio.gateway", lambda e: e.state == "lost")
        assert lost.gateway == "tetra1"
        revoked = await rig.expect("radio.floor", lambda e: e.event == "revoked")
        assert revoked.why == "gateway tetra1 lost"
        r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
        assert r.json()["events"][0]["why"] == "gateway tetra1 is down"
        gateways = (await client.get("/api/v1/radio/gateways", headers=disp)).json()
        assert gateways["tetra1"]["state"] == "down" and not gateways["tetra1"]["connected"]
        assert rig.radio.calls[1].talker == "self"  # the radio itself is still keyed
        before = len(rig.radio.commands)
        rig.tetra.plug()
        await rig.expect("radio.gateway", lambda e: e.state == "up")
        assert rig.radio.commands[before] == "AT+CUTXC=1"  # the first thing written
        assert rig.radio.calls == {}
        await rig.audited("radio.gateway_up")
        r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
        assert r.json()["events"][0]["event"] == "granted"


async def test_emergency_call_overrides_the_floor(tmp_path: Path, reactor: Any,
                                                   db_url: str) -> None:
    async with radio_rig(tmp_path, reactor, db_url) as rig, \
            httpx.AsyncClient(base_url=rig.url) as client:
        cmdr = await rig.headers(client, "cmdr", Role.COMMANDER)
        await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=cmdr)
        await rig.expect("radio.keyed")
        cc = rig.radio.inject_emergency_call("9001", "3005")
        emergency = await rig.expect("radio.emergency")
        assert (emergency.talkgroup, emergency.calling, emergency.priority) == (
            "fire", "3005", "high")
        revoked = await rig.expect("radio.floor", lambda e: e.event == "revoked")
        assert (revoked.who, revoked.why) == ("cmdr", "emergency call from 3005")
        await rig.tetra.command("AT+CUTXC=1")  # our own call instance, unkeyed
        r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=cmdr)
        assert r.json()["events"][0]["event"] == "denied"
        assert r.json()["talkgroup"]["emergency"] == "3005"
        received = await rig.expect("report.received", lambda e: e.channel == "radio_call")
        assert received.caller == "3005"
        await rig.audited("radio.emergency_call")
        rig.radio.inject_talk_end(cc)  # the handset lets go: consoles may answer
        await rig.expect("radio.talker", lambda e: e.talker is None)
        r = await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=cmdr)
        assert r.json()["events"][0]["event"] == "granted"
        async with rig.daemon.db.session() as s:
            row = await s.get(ReportRow, received.report_id)
            assert row is not None and "emergency" in row.text and row.fields["talkgroup"] == "fire"


async def test_sds_positions_and_satphone_sms_in_chinese(tmp_path: Path, reactor: Any,
                                                          db_url: str) -> None:
    async with radio_rig(tmp_path, reactor, db_url) as rig, \
            httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp", Role.DISPATCHER)
        hooked: list[tuple[str, float, float, dt.datetime]] = []
        rig.daemon.radio.add_position_hook(lambda *a: hooked.append(a))

        rig.radio.inject_location("2001", 31.2304, 121.4737)
        position = await rig.expect("unit.position")
        assert position.radio_id == "2001"
        assert position.lat == pytest.approx(31.2304, abs=1e-4)
        assert position.lon == pytest.approx(121.4737, abs=1e-4)
        assert hooked and hooked[0][0] == "2001"

        bits, user_data = encode_text("仓库起火，三人被困，请求支援")
        rig.radio.inject_sds("2001", user_data, bits=bits)
        sds = await rig.expect("radio.sds")
        assert sds.text == "仓库起火，三人被困，请求支援"
        received = await rig.expect("report.received", lambda e: e.channel == "radio_sds")
        assert received.caller == "2001"
        await rig.expect("report.assessed", lambda e: e.report_id == received.report_id)
        async with rig.daemon.db.session() as s:
            row = await s.get(ReportRow, received.report_id)
            assert row is not None and row.text == "仓库起火，三人被困，请求支援"
            assert row.lat == pytest.approx(31.2304, abs=1e-4)  # the unit's last position

        deliver = encode_deliver("+8613900000001", "山体滑坡，道路中断，二十人被困",
                                 dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC))
        rig.phone.inject_sms(deliver)
        received = await rig.expect("report.received", lambda e: e.channel == "satphone_sms")
        assert received.caller == "+8613900000001"

        r = await client.post("/api/v1/radio/sds", headers=disp,
                              json={"talkgroup": "fire", "text": "全体注意：向北撤离"})
        assert r.status_code == 201, r.text
        sent = rig.radio.sds_sent[-1]
        assert sent.called == "9001" and decode_text(sent.user_data, sent.bits) == "全体注意：向北撤离"
        r = await client.post("/api/v1/radio/sds", headers=disp,
                              json={"issi": "2001", "text": "Hold position"})
        assert r.status_code == 201
        assert decode_simple_text_sds(rig.radio.sds_sent[-1].user_data) == "Hold position"
        r = await client.post("/api/v1/radio/sds", headers=disp,
                              json={"issi": "2001", "text": "bad\x1atext"})
        assert r.status_code == 422
        r = await client.post("/api/v1/radio/sds", headers=disp,
                              json={"talkgroup": "nope", "text": "x"})
        assert r.status_code == 404

        r = await client.post("/api/v1/satphones/sat1/sms", headers=disp,
                              json={"number": "+8613900000001", "text": "救援队两小时后到达"})
        assert r.status_code == 201, r.text
        pdu = decode_pdu(rig.phone.sent[-1].pdu)
        assert pdu.text == "救援队两小时后到达"  # type: ignore[union-attr]
        positions = (await client.get("/api/v1/radio/positions", headers=disp)).json()
        assert [p["radio_id"] for p in positions] == ["2001"]


async def test_satphone_calls_signal_and_link_loss(tmp_path: Path, reactor: Any) -> None:
    async with radio_rig(tmp_path, reactor) as rig, \
            httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp", Role.DISPATCHER)
        status = (await client.get("/api/v1/satphones/sat1", headers=disp)).json()
        assert (status["ready"], status["signal"], status["registration"]) == (True, 4, 1)

        r = await client.post("/api/v1/satphones/sat1/dial", headers=disp,
                              json={"number": "+8613900000002"})
        assert r.status_code == 200, r.text
        assert r.json()["satphone"]["call"]["state"] == "active"
        assert rig.phone.call is not None and rig.phone.call.number == "+8613900000002"
        r = await client.post("/api/v1/satphones/sat1/dial", headers=disp,
                              json={"number": "+8613900000003"})
        assert r.status_code == 422  # one call at a time
        r = await client.post("/api/v1/satphones/sat1/hangup", headers=disp)
        assert r.json()["satphone"]["call"] is None and rig.phone.call is None

        rig.phone.inject_call("+8613900000004")
        ringing = await rig.expect("satphone.status", lambda e: e.what == "call"
                                   and e.detail["number"] == "+8613900000004")
        assert ringing.detail["state"] == "ringing"
        r = await client.post("/api/v1/satphones/sat1/answer", headers=disp)
        assert r.json()["satphone"]["call"]["state"] == "active"
        rig.phone.inject_hangup()
        ended = await rig.expect("satphone.status", lambda e: e.what == "call"
                                 and e.detail["state"] == "ended")
        assert ended.detail["why"] == "far end hung up"

        rig.phone.inject_signal(1)
        signal = await rig.expect("satphone.status", lambda e: e.what == "signal")
        assert signal.detail == {"signal": 1}

        await client.post("/api/v1/satphones/sat1/dial", headers=disp,
                          json={"number": "+8613900000005"})
        rig.phone.close()
        await rig.expect("radio.gateway", lambda e: e.gateway == "sat1" and e.state == "lost")
        ended = await rig.expect("satphone.status", lambda e: e.what == "call"
                                 and e.detail["state"] == "ended")
        assert ended.detail["why"] == "link lost"
        r = await client.post("/api/v1/satphones/sat1/sms", headers=disp,
                              json={"number": "+8613900000001", "text": "hello"})
        assert r.status_code == 502
        rig.sat.plug()  # plugged back with the call still up in the handset
        await rig.expect("radio.gateway", lambda e: e.gateway == "sat1" and e.state == "up")
        assert rig.phone.call is None  # reconciled: hung up at start-up
        await rig.audited("satphone.call_ended",
                          lambda e: e.details["why"] == "reconciled at start-up")


async def test_console_commands_key_and_show(tmp_path: Path, reactor: Any) -> None:
    from dispatch.commands import CommandError

    async with radio_rig(tmp_path, reactor) as rig:
        users = rig.daemon.users
        await users.add_user("disp", Role.DISPATCHER, "disp-password", actor="test")
        await users.add_user("taker", Role.CALL_TAKER, "taker-password", actor="test")
        disp, taker = await users.principal("disp"), await users.principal("taker")
        assert disp is not None and taker is not None
        run = rig.daemon.commands.run
        assert await run("ptt press fire", disp) == "fire: granted disp"
        await rig.expect("radio.keyed")
        table = await run("sh talk", taker)
        assert "fire" in table and "disp" in table.splitlines()[1]
        with pytest.raises(CommandError, match="may not radio.ptt"):
            await run("ptt press fire", taker)
        assert await run("ptt release fire", disp) == "fire: released disp"
        out = await run('sds send 2001 "火场东侧集合"', disp)
        assert out.startswith("SDS sent to 2001")
        assert decode_text(rig.radio.sds_sent[-1].user_data) == "火场东侧集合"
        with pytest.raises(CommandError, match="no talkgroup 'nope'"):
            await run("ptt press nope", disp)


async def test_a_radio_absent_at_start_is_an_alarm_then_comes_up(tmp_path: Path,
                                                                 reactor: Any) -> None:
    from radioharness import Plugged, radio_settings

    from dispatch.daemon import Daemon
    from hardware.emulators import SatellitePhoneEmulator, TetraRadioEmulator

    tetra = Plugged(TetraRadioEmulator(), tmp_path / "ttyTETRA0")
    sat = Plugged(SatellitePhoneEmulator(), tmp_path / "ttySAT0")
    sat.plug()
    daemon = Daemon(radio_settings(tmp_path, f"sqlite:///{tmp_path / 'd.db'}", tetra.link,
                                   sat.link), reactor=reactor)
    await daemon.start()
    try:
        assert daemon.radio is not None
        assert daemon.radio.state["tetra1"] == "absent"
        assert daemon.radio.state["sat1"] == "up"
        assert daemon.radio.request_ptt("fire", "d", radio_service.Priority.DISPATCHER)[0][
            "event"] == "denied"
        health = daemon.services.health()
        assert health["ready"]  # a missing radio never stops the daemon taking calls
        up = asyncio.Event()
        daemon.hub.listen(lambda env: up.set() if env.topic == "radio.gateway"
                          and env.event.state == "up" else None)
        tetra.plug()  # the retry opens it
        await asyncio.wait_for(up.wait(), 10)
        assert daemon.radio.state["tetra1"] == "up"
        assert tetra.emulator.commands[0] == "ATH"
    finally:
        await daemon.stop()
        tetra.emulator.close()
        sat.emulator.close()


async def test_consoles_get_radio_events_on_the_websocket(tmp_path: Path, reactor: Any) -> None:
    import json

    from websockets.asyncio.client import connect

    async with radio_rig(tmp_path, reactor) as rig, \
            httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp", Role.DISPATCHER)
        token = disp["Authorization"].removeprefix("Bearer ")
        ws_url = rig.url.replace("http", "ws") + f"/events?topics=radio.,unit.&token={token}"
        async with connect(ws_url) as ws:
            hello = json.loads(await ws.recv())
            assert hello["data"]["topics"] == ["radio.", "unit."]
            await client.post("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
            rig.radio.inject_location("2001", 22.5431, 114.0579)
            frames: list[dict[str, Any]] = []
            while not any(f["topic"] == "unit.position" for f in frames):
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        floor = next(f for f in frames if f["topic"] == "radio.floor")
        assert floor["data"] == {"talkgroup": "fire", "gateway": "tetra1", "event": "granted",
                                 "who": "disp", "priority": "dispatcher", "position": None,
                                 "by": None, "why": "granted"}
        position = next(f for f in frames if f["topic"] == "unit.position")["data"]
        assert position["radio_id"] == "2001" and position["lat"] == pytest.approx(22.5431, 1e-4)
        assert position["at"].endswith("+00:00")


async def test_satphone_sbd_both_ways(tmp_path: Path, reactor: Any) -> None:
    async with radio_rig(tmp_path, reactor) as rig, \
            httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp", Role.DISPATCHER)
        r = await client.post("/api/v1/satphones/sat1/sbd", headers=disp,
                              json={"text": "TEAM 3 AT CAMP B, 12 EVACUEES"})
        assert r.status_code == 201, r.text
        assert r.json()["result"] == 1  # MOMSN
        assert rig.phone.mo_messages == [b"TEAM 3 AT CAMP B, 12 EVACUEES"]
        rig.phone.inject_mt_message(b"BRIDGE OUT AT KM 40, 2 INJURED")
        sbd = await rig.expect("satphone.status", lambda e: e.what == "sbd")
        assert sbd.detail == {"text": "BRIDGE OUT AT KM 40, 2 INJURED"}
        received = await rig.expect("report.received", lambda e: e.channel == "satphone_sms")
        assert received.caller == "sbd:sat1"
        rig.phone.rssi = 0  # no satellite in view
        r = await client.post("/api/v1/satphones/sat1/sbd", headers=disp, json={"text": "x"})
        assert r.status_code == 422 and "MO status 32" in r.json()["detail"]
        r = await client.post("/api/v1/satphones/sat1/sbd", headers=disp,
                              json={"text": "中文不行"})
        assert r.status_code == 422


async def test_a_report_that_failed_half_way_is_retried_and_stored_once(
        tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with radio_rig(tmp_path, reactor) as rig:
        reports = rig.daemon.reports
        real = reports.submit
        calls: list[Any] = []
        second = asyncio.Event()

        async def flaky(new: Any, *, actor: str) -> Any:
            calls.append(new)
            done = await real(new, actor=actor)
            if len(calls) == 1:
                raise RuntimeError("connection reset after commit")
            second.set()
            return done

        monkeypatch.setattr(reports, "submit", flaky)
        bits, user_data = encode_text("Road blocked at km 12")
        rig.radio.inject_sds("2002", user_data, bits=bits)
        await asyncio.wait_for(second.wait(), 10)
        assert calls[0] is calls[1]  # the same report, with the same source_ref
        async with rig.daemon.db.session() as s:
            rows = (await s.scalars(select(ReportRow).where(ReportRow.caller == "2002"))).all()
        assert len(rows) == 1 and rows[0].source_ref == calls[0].source_ref
