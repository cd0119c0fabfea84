"""A real dispatchd with SIP on, against SIPp as the carrier trunk and as call takers' phones.

Each test starts ``dispatchd run`` as a subprocess, creates SIP accounts with
``dispatchd sip account add``, registers agents with SIPp (digest), and
sends calls in from a SIPp "carrier" whose source port is the trunk's.  The
outcome is read back from the daemon's own database (CDR, reports, audit) and
API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from b2bua_helpers import (
    PASSWORD,
    SIPP_DIR,
    SipDaemon,
    SippServer,
    errors,
    free_port,
    need,
    register_agents,
    run_peer,
    sipp_stats,
)

Factory = Callable[..., SipDaemon]


async def uas_done(tmp: Path, port: int, calls: int = 1) -> None:
    """Wait until the SIPp UAS on ``port`` has completed ``calls`` calls (its -stf, 1 s)."""
    path = tmp / f"uas-{port}.csv"

    def done() -> bool:
        try:
            return sipp_stats(path)["SuccessfulCall(C)"] >= calls
        except (OSError, IndexError, ValueError):
            return False

    await wait_for(done, f"SIPp UAS {port}: {calls} call(s) completed")


def trunk(port: int, max_calls: int = 10, source_port: bool = True) -> str:
    text = f'[[trunks]]\nname = "carrier"\naddress = "127.0.0.1:{port}"\nmax_calls = {max_calls}\n'
    return text + (f"source_port = {port}\n" if source_port else "")


async def call(sip: SipDaemon, tmp: Path, scenario: str, number: str, port: int,
               *extra: str, calls: int = 1, timeout: float = 60) -> tuple[int, str]:
    return await run_peer(
        need("sipp"), f"127.0.0.1:{sip.port}", "-sf", str(SIPP_DIR / scenario), "-s", number,
        "-i", "127.0.0.1", "-p", str(port), "-mp", str(free_port()), "-m", str(calls),
        "-nostdin", "-trace_err", "-trace_stat", "-stf", str(tmp / f"{scenario}.csv"),
        "-recv_timeout", "15000", *extra, timeout=timeout, cwd=tmp)


async def wait_for(check: Callable[[], object], what: str, timeout: float = 15.0) -> Any:
    """Poll the daemon's database/API until ``check`` holds (its writes are asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"not seen within {timeout}s: {what}")


async def test_digest_register_stores_bindings_and_refuses_wrong_password(
    tmp_path: Path, started: list[object]
) -> None:
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]})
    started.append(sip)
    code, out = await register_agents(sip, tmp_path, {"alice": 5999})
    assert code == 0, out + errors(tmp_path)
    rows = sip.rows("SELECT aor, contact, source_host FROM sip_bindings")
    assert rows == [("sip:alice@dispatch.test", "sip:alice@127.0.0.1:5999", "127.0.0.1")]
    accounts = sip.rows("SELECT * FROM sip_accounts")
    assert PASSWORD not in repr(accounts)
    code, _ = await register_agents(sip, tmp_path, {"alice": 5998}, password="wrong-pass")
    assert code != 0
    assert [r[1] for r in sip.rows("SELECT aor, contact FROM sip_bindings")] == [
        "sip:alice@127.0.0.1:5999"]
    # A restart keeps the registration (bindings live in the database).
    sip.stop()
    again = SipDaemon.__new__(SipDaemon)
    again.__dict__.update(sip.__dict__)
    from b2bua_helpers import ROOT, env
    from daemonproc import DaemonProcess

    again.proc = DaemonProcess(ROOT, sip.config, env=env())
    started.append(again)
    again.proc.wait_ready()
    assert again.rows("SELECT contact FROM sip_bindings") == [("sip:alice@127.0.0.1:5999",)]


async def test_svwar_cannot_enumerate_users(tmp_path: Path, started: list[object]) -> None:
    sip = SipDaemon(tmp_path, agents={"alice": ["police"], "bob": ["police"]})
    started.append(sip)
    exts = tmp_path / "exts.txt"
    exts.write_text("\n".join(["alice", "bob", "carol", "dave", "1000", "admin"]) + "\n")
    code, out = await run_peer(
        need("svwar"), "--force", "-m", "REGISTER", "-d", str(exts), "-p", str(sip.port),
        "-P", str(free_port()), "127.0.0.1", timeout=90, cwd=tmp_path)
    assert code == 0, out
    assert "found nothing" in out
    assert "| alice" not in out and "| bob" not in out


async def test_trunk_call_answered_by_agent_files_a_voice_report(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    code, out = await register_agents(sip, tmp_path, {"alice": agent_port})
    assert code == 0, out
    code, out = await call(sip, tmp_path, "trunk_call.xml", "110", carrier, "-d", "300")
    assert code == 0, out + errors(tmp_path)
    assert sipp_stats(tmp_path / "trunk_call.xml.csv")["SuccessfulCall(C)"] == 1
    row = await wait_for(lambda: sip.rows(
        "SELECT caller, hotline, queue, trunk, agent_id, outcome, cause, released_by, report_id"
        " FROM call_records WHERE outcome IS NOT NULL AND report_id IS NOT NULL"),
        "a finished CDR linked to its report")
    caller, hotline, queue, trunk_name, agent, outcome, cause, by, report_id = row[0]  # type: ignore[index]
    # P-Asserted-Identity tel:+86138001310 became the national number.
    assert (caller, hotline, queue, trunk_name, agent) == ("1380013" + "1", "110", "police",
                                                          "carrier", "alice")
    assert (outcome, cause, by) == ("answered", "caller_hangup", "caller")
    assert report_id is not None
    report = sip.rows("SELECT channel, caller, source_ref, fields FROM reports WHERE id = ?",
                      report_id)
    assert report[0][0] == "voice" and report[0][1] == caller
    assert '"hotline": "110"' in report[0][3] and '"agent": "alice"' in report[0][3]
    actions = [r[0] for r in sip.rows("SELECT action FROM audit_log ORDER BY id")]
    for expected in ("call.offered", "call.answered", "call.released", "report.received"):
        assert expected in actions


async def test_caller_cancel_while_queued_is_abandoned(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    # alice is configured but never registers: nobody can take the call.
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    code, out = await call(sip, tmp_path, "caller_cancel.xml", "110", carrier, "-d", "500")
    assert code == 0, out + errors(tmp_path)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause, report_id FROM call_records"
        " WHERE outcome IS NOT NULL AND report_id IS NOT NULL"), "an abandoned CDR and its report")
    outcome, cause, report_id = row[0]  # type: ignore[index]
    assert (outcome, cause) == ("abandoned", "caller_cancelled")
    text = sip.rows("SELECT text FROM reports WHERE id = ?", report_id)[0][0]
    assert text.startswith("Abandoned voice call to 110")


async def test_trunk_call_limit_answers_503(tmp_path: Path, started: list[object]) -> None:
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]},
                    trunks=trunk(5, max_calls=1, source_port=False))
    started.append(sip)
    first = asyncio.ensure_future(
        call(sip, tmp_path, "caller_cancel.xml", "110", free_port(), "-d", "3000"))
    await wait_for(lambda: sip.rows("SELECT id FROM call_records"), "the first call queued")
    code, out = await call(sip, tmp_path, "expect_503.xml", "110", free_port())
    assert code == 0, out + errors(tmp_path)
    code, out = await first
    assert code == 0, out + errors(tmp_path)
    assert len(sip.rows("SELECT id FROM call_records")) == 1


async def test_unknown_number_goes_to_the_fallback_queue(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"bob": ["service"]}, trunks=trunk(carrier))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"bob": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "trunk_call.xml", "99999", carrier, "-d", "100")
    assert code == 0, out + errors(tmp_path)
    row = await wait_for(lambda: sip.rows(
        "SELECT called, hotline, queue, agent_id FROM call_records WHERE outcome IS NOT NULL"),
        "a CDR")
    assert row == [("99999", "12345", "service", "bob")]


async def test_agent_hangs_up_and_the_caller_gets_bye(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_bye.xml", agent_port, tmp_path, "-d", "300"))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause, released_by FROM call_records WHERE outcome IS NOT NULL"),
        "a CDR")
    assert row == [("answered", "agent_hangup", "agent")]


async def test_supervisor_force_release_sends_bye_with_reason_to_both_legs(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    agent_port = free_port()
    agent = SippServer("agent_uas.xml", agent_port, tmp_path)
    started.append(agent)
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier,
                                        "-trace_msg"))
    api = sip.api()

    def connected() -> object:
        calls = api.get("/api/v1/calls").json()
        return [c for c in calls if c["state"] == "connected"]

    live = await wait_for(connected, "a connected call")
    call_id = live[0]["call_id"]  # type: ignore[index]
    reply = api.post(f"/api/v1/calls/{call_id}/release", json={"reason": "free the line"})
    assert reply.status_code == 200, reply.text
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    messages = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert "Reason: Q.850;cause=16;text=\"force-released by sup: free the line\"" in messages
    row = await wait_for(lambda: sip.rows(
        "SELECT cause, released_by FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("force_released", "sup")]
    audit = sip.rows("SELECT actor, details FROM audit_log WHERE action = 'call.force_released'")
    assert audit and audit[0][0] == "sup" and "free the line" in audit[0][1]
    assert api.post(f"/api/v1/calls/{call_id}/release", json={"reason": "x"}).status_code == 404
    # The agent's SIPp got its BYE too: its one call completed.
    await uas_done(tmp_path, agent_port)


async def test_higher_priority_hotline_is_answered_first(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    telephony = """
[routing]
fallback = "12345"
[[hotlines]]
number = "110"
queue = "all"
[[hotlines]]
number = "12345"
queue = "all"
[[queues]]
name = "all"
wrap_up = 0
"""
    sip = SipDaemon(tmp_path, agents={"alice": ["all"]}, telephony=telephony,
                    trunks=trunk(carrier, source_port=False))
    started.append(sip)
    low = asyncio.ensure_future(call(sip, tmp_path, "trunk_call.xml", "12345", free_port(),
                                     "-d", "300"))
    await wait_for(lambda: sip.rows("SELECT id FROM call_records"), "the 12345 call queued")
    high = asyncio.ensure_future(call(sip, tmp_path, "trunk_call.xml", "110", free_port(),
                                      "-d", "300"))
    await wait_for(lambda: len(sip.rows("SELECT id FROM call_records")) == 2, "both calls queued")
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    assert (await high)[0] == 0 and (await low)[0] == 0
    rows = await wait_for(lambda: (r := sip.rows(
        "SELECT hotline FROM call_records WHERE outcome = 'answered' ORDER BY answered_at"))
        and len(r) == 2 and r, "two answered calls")
    assert rows == [("110",), ("12345",)]


async def test_baresip_call_taker_answers_a_trunk_call(
    tmp_path: Path, started: list[object]
) -> None:
    from softphones import Baresip

    carrier = free_port()
    # baresip 1.0 gives up on a 401 that also offers SHA-256 (it only knows MD5).
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    registrar='algorithms = ["MD5"]')
    started.append(sip)
    phone = Baresip(tmp_path, "alice", PASSWORD, sip.port, "dispatch.test")
    started.append(phone)
    await asyncio.to_thread(phone.connect)
    # Registration may finish before ctrl_tcp is up: read it from dispatchd instead.
    await wait_for(lambda: sip.rows("SELECT contact FROM sip_bindings"), "baresip registered")
    caller = asyncio.ensure_future(call(sip, tmp_path, "trunk_call.xml", "110", carrier,
                                        "-d", "2000"))
    established = await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED")
    # The caller's number reached the call taker's screen.
    assert "13800131" in json.dumps(established)
    await asyncio.to_thread(phone.wait_event, "CALL_CLOSED")
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    row = await wait_for(lambda: sip.rows(
        "SELECT agent_id, outcome, cause FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("alice", "answered", "caller_hangup")]


async def test_pyvoip_phone_answers_a_queued_call(tmp_path: Path, started: list[object]) -> None:
    from softphones import PyVoipPhone

    carrier = free_port()
    # pyVoIP answers only the first (MD5) challenge, without qop, and puts
    # ";transport=UDP" in its digest uri: the registrar's settings for old phones.
    sip = SipDaemon(tmp_path, agents={"bob": ["police"]}, trunks=trunk(carrier),
                    registrar="require_qop = false\ncheck_digest_uri = false")
    started.append(sip)
    phone = PyVoipPhone("bob", PASSWORD, sip.port)
    started.append(phone)
    await wait_for(lambda: sip.rows("SELECT contact FROM sip_bindings"), "pyVoIP registered")
    code, out = await call(sip, tmp_path, "trunk_call.xml", "110", carrier, "-d", "1000")
    assert code == 0, out + errors(tmp_path)
    assert phone.answered == 1
    row = await wait_for(lambda: sip.rows(
        "SELECT agent_id, outcome FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("bob", "answered")]


async def test_call_back_rings_the_agent_then_the_caller_through_the_trunk(
    tmp_path: Path, started: list[object]
) -> None:
    carrier_uas = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]},
                    trunks=trunk(carrier_uas, source_port=True))
    started.append(sip)
    agent_port = free_port()
    agent = SippServer("agent_uas.xml", agent_port, tmp_path)
    carrier = SippServer("agent_uas.xml", carrier_uas, tmp_path)
    started += [agent, carrier]
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    api = sip.api()
    assert api.post("/api/v1/calls/callback",
                    json={"number": "13800138000", "agent_id": "bob"}).status_code == 409
    assert api.post("/api/v1/calls/callback",
                    json={"number": "1380\r\n", "agent_id": "alice"}).status_code == 422
    reply = api.post("/api/v1/calls/callback",
                     json={"number": "13800138000", "agent_id": "alice"})
    assert reply.status_code == 202, reply.text
    call_id = reply.json()["call_id"]

    def connected() -> object:
        return [c for c in api.get("/api/v1/calls").json()
                if c["call_id"] == call_id and c["state"] == "connected"]

    await wait_for(connected, "the call-back connected")
    assert api.post(f"/api/v1/calls/{call_id}/release",
                    json={"reason": "test over"}).status_code == 200
    row = await wait_for(lambda: sip.rows(
        "SELECT caller, trunk, agent_id, outcome, cause FROM call_records"
        " WHERE outcome IS NOT NULL"), "the call-back CDR")
    assert row == [("13800138000", "carrier", "alice", "answered", "force_released")]
    await uas_done(tmp_path, agent_port)
    await uas_done(tmp_path, carrier_uas)
    assert sip.rows("SELECT count(*) FROM audit_log WHERE action = 'call.callback'") == [(1,)]


async def test_trunk_keepalive_and_outbound_registration(
    tmp_path: Path, started: list[object]
) -> None:
    options_port, register_port = free_port(), free_port()
    secret = tmp_path / "trunk-secret"
    secret.write_text("trunk-secret-1\n")
    trunks = (f'[[trunks]]\nname = "probe"\naddress = "127.0.0.1:{options_port}"\n'
              f"source_port = {options_port}\nkeepalive = 1\n"
              f'[[trunks]]\nname = "provider"\naddress = "127.0.0.1:{register_port}"\n'
              f"source_port = {register_port}\nregister = true\n"
              f'username = "trunkuser"\npassword_file = "{secret}"\nregister_expires = 120\n')
    options = SippServer("options_uas.xml", options_port, tmp_path)
    registrar = SippServer("register_uas.xml", register_port, tmp_path)
    started += [options, registrar]
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunks)
    started.append(sip)
    api = sip.api()

    def trunks_ok() -> object:
        health = api.get("/health").json()["services"]["sip"]
        state = health["detail"]["trunks"]
        return state["probe"]["up"] and state["provider"]["registered"] and state

    state = await wait_for(trunks_ok, "probe up and provider registered")
    assert state["provider"]["detail"] == "registered"
    # Keep-alives repeat every second.
    await wait_for(lambda: sipp_stats(tmp_path / f"uas-{options_port}.csv")[
        "SuccessfulCall(C)"] >= 2, "a second OPTIONS", timeout=20)


async def test_hold_re_invite_is_relayed_both_ways(tmp_path: Path, started: list[object]) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    agent_port = free_port()
    agent = SippServer("agent_hold.xml", agent_port, tmp_path)
    started.append(agent)
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "caller_reinvite.xml", "110", carrier, "-d", "300")
    assert code == 0, out + errors(tmp_path)
    # The agent saw a=sendonly and the caller got a=recvonly back (both check_it).
    await uas_done(tmp_path, agent_port)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("answered", "caller_hangup")]


async def test_agent_feature_codes_from_a_digest_authenticated_phone(
    tmp_path: Path, started: list[object]
) -> None:
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]})
    started.append(sip)
    assert (await register_agents(sip, tmp_path, {"alice": free_port()}))[0] == 0

    async def dial(code: str, password: str = PASSWORD) -> tuple[int, str]:
        return await run_peer(
            need("sipp"), f"127.0.0.1:{sip.port}", "-sf", str(SIPP_DIR / "phone_feature.xml"),
            "-s", code, "-au", "alice", "-ap", password,
            "-auth_uri", f"{code}@127.0.0.1:{sip.port}", "-i", "127.0.0.1",
            "-p", str(free_port()), "-m", "1", "-nostdin", "-trace_err", "-trace_msg",
            "-recv_timeout", "5000", timeout=60, cwd=tmp_path)

    code, out = await dial("*12")
    assert code == 0, out + errors(tmp_path)
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert "SIP/2.0 480 Agent alice logged out" in log
    code, out = await dial("*11")
    assert code == 0, out + errors(tmp_path)
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert "SIP/2.0 480 Agent alice ready" in log
    # A wrong password changes nothing: the phone is challenged again.
    code, _ = await dial("*12", password="wrong-password")
    assert code != 0
    rows = await wait_for(lambda: sip.rows(
        "SELECT details FROM audit_log WHERE action = 'agent.state' ORDER BY id"), "audit")
    moves = [r[0] for r in rows]
    out = next(i for i, m in enumerate(moves) if "feature code" in m)
    assert '"to": "logged_out"' in moves[out]
    assert moves[out + 1:] == ['{"from": "logged_out", "to": "ready", "reason": "login"}']


async def test_a_dead_call_is_found_by_the_probe_and_released(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    extra_sip="session_expires = 4")
    started.append(sip)
    agent_port = free_port()
    agent = SippServer("agent_forgets.xml", agent_port, tmp_path)
    started.append(agent)
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "caller_probed.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause, released_by FROM call_records WHERE outcome IS NOT NULL"),
        "a CDR")
    assert row == [("answered", "dead_call", "system")]
