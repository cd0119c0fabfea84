"""REFER blind transfer, session timers, PRACK/100rel, TLS and digest trunks with real peers.

A real ``dispatchd run`` against SIPp scenarios (tests/b2bua/sipp) playing the
carrier, call takers' phones that REFER, refresh or send reliable 18x, and
the transfer target behind a second trunk; baresip registers and calls over
TLS.  Outcomes are read back from the daemon's database (CDR, audit).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path

from b2bua_helpers import (
    DOMAIN,
    PASSWORD,
    SipDaemon,
    SippServer,
    errors,
    free_port,
    need,
    register_agents,
)
from softphones import Baresip
from test_b2bua_media import media
from test_b2bua_sipp import call, trunk, uas_done, wait_for


def target_trunk(port: int) -> str:
    """A second trunk towards the fire centre's gateway (first choice for outbound)."""
    return (f'[[trunks]]\nname = "fire-centre"\naddress = "127.0.0.1:{port}"\n'
            f'sources = ["127.0.0.9"]\noutbound_priority = 10\n')


def audit(sip: SipDaemon, action: str) -> list[tuple[str, str]]:
    """(actor, details) of the audit rows of ``action``."""
    return [(r[0], r[1]) for r in sip.rows(
        "SELECT actor, details FROM audit_log WHERE action = ?", action)]


# -- REFER / API blind transfer ----------------------------------------------------


async def transfer_setup(tmp: Path, started: list[object], agent_scenario: str,
                         target_scenario: str, number: str) -> tuple[SipDaemon, int, int]:
    carrier, target = free_port(), free_port()
    sip = SipDaemon(tmp, agents={"alice": ["police"]}, media=media(tmp),
                    trunks=trunk(carrier) + target_trunk(target))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer(agent_scenario, agent_port, tmp, "-s", number))
    started.append(SippServer(target_scenario, target, tmp))
    code, out = await register_agents(sip, tmp, {"alice": agent_port})
    assert code == 0, out + errors(tmp)
    return sip, carrier, agent_port


async def test_refer_bridges_the_caller_to_the_target_and_releases_the_call_taker(
    tmp_path: Path, started: list[object]
) -> None:
    sip, carrier, agent_port = await transfer_setup(
        tmp_path, started, "agent_refer.xml", "agent_uas.xml", "119001")
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    # The agent's scenario ends after REFER/202, the NOTIFYs 100/180/200 and our BYE.
    await uas_done(tmp_path, agent_port)
    live = await wait_for(lambda: [c for c in sip.api().get("/api/v1/calls").json()
                                   if c["agent_id"] == "transfer:119001"],
                          "the caller bridged to the transfer target")
    assert live[0]["state"] == "connected"
    cdr = await wait_for(lambda: sip.rows(
        "SELECT outcome, agent_id, timeline FROM call_records WHERE outcome = 'transferred'"),
        "the CDR says transferred")
    assert cdr[0][1] == "alice"
    steps = [t for t in json.loads(cdr[0][2]) if t["kind"] == "transferred"]
    assert steps == [{"kind": "transferred", "agent": "alice", "target": "119001",
                      "by": "agent:alice"}]
    # The CDR writer batches its rows: wait for the audit row rather than race it.
    assert await wait_for(lambda: [a for a, _ in audit(sip, "call.transferred")],
                          "the transfer audited") == ["agent:alice"]
    # The call taker is free again (wrap-up or ready), not busy with the caller.
    agents = sip.api().get("/api/v1/agents").json()
    assert agents[0]["state"] != "busy" and agents[0]["call_id"] is None
    # The caller talks to the target until a supervisor ends the call: both get BYE.
    reply = sip.api().post(f"/api/v1/calls/{live[0]['call_id']}/release",
                           json={"reason": "test over"})
    assert reply.status_code == 200, reply.text
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause, released_by FROM call_records WHERE released_by != ''"),
        "the release of the transferred call")
    assert row == [("transferred", "transferred", "sup")]


async def test_baresip_call_taker_transfers_with_refer(
    tmp_path: Path, started: list[object]
) -> None:
    carrier, target = free_port(), free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, media=media(tmp_path),
                    registrar='algorithms = ["MD5"]',
                    trunks=trunk(carrier) + target_trunk(target))
    started.append(sip)
    started.append(SippServer("agent_uas.xml", target, tmp_path))
    phone = Baresip(tmp_path, "alice", PASSWORD, sip.port, DOMAIN, seconds=120)
    started.append(phone)
    await asyncio.to_thread(phone.connect)
    await wait_for(lambda: sip.rows("SELECT contact FROM sip_bindings"), "alice registered")
    await wait_for(lambda: sip.api().get("/api/v1/agents").json()[0]["state"] == "ready",
                   "alice ready")
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 30.0)
    phone.command("transfer", "sip:119005@127.0.0.1")
    await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 30.0)
    live = await wait_for(lambda: [c for c in sip.api().get("/api/v1/calls").json()
                                   if c["agent_id"] == "transfer:119005"],
                          "the caller bridged to 119005")
    assert not caller.done()
    # The CDR writer batches its rows: wait for the audit row rather than race it.
    assert await wait_for(lambda: [a for a, _ in audit(sip, "call.transferred")],
                          "the transfer audited") == ["agent:alice"]
    assert sip.api().post(f"/api/v1/calls/{live[0]['call_id']}/release",
                          json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)


async def test_call_taker_hanging_up_after_202_does_not_drop_the_caller(
    tmp_path: Path, started: list[object]
) -> None:
    sip, carrier, agent_port = await transfer_setup(
        tmp_path, started, "agent_refer_hangup.xml", "target_slow.xml", "119004")
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    await uas_done(tmp_path, agent_port)  # REFER, 202, NOTIFY 100, its own BYE answered 200
    live = await wait_for(lambda: [c for c in sip.api().get("/api/v1/calls").json()
                                   if c["agent_id"] == "transfer:119004"],
                          "the caller bridged to the target after the call taker left")
    assert not caller.done()
    assert sip.api().post(f"/api/v1/calls/{live[0]['call_id']}/release",
                          json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    # The CDR writer batches its rows: wait for the audit row rather than race it.
    assert await wait_for(lambda: [a for a, _ in audit(sip, "call.transferred")],
                          "the transfer audited") == ["agent:alice"]


async def test_failed_refer_keeps_the_caller_with_the_call_taker(
    tmp_path: Path, started: list[object]
) -> None:
    sip, carrier, agent_port = await transfer_setup(
        tmp_path, started, "agent_refer_fail.xml", "target_busy.xml", "119002")
    code, out = await call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier)
    # NOTIFY 486 reached the agent, who then hung up: only then did the caller get BYE.
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("answered", "agent_hangup")]
    failed = await wait_for(lambda: audit(sip, "call.transfer_failed"), "the failure audited")
    assert json.loads(failed[0][1]) == {"agent": "alice", "target": "119002", "status": 486,
                                        "reason": "target answered 486"}
    assert audit(sip, "call.transferred") == []


async def test_api_transfer_of_a_connected_call(tmp_path: Path, started: list[object]) -> None:
    sip, carrier, agent_port = await transfer_setup(
        tmp_path, started, "agent_uas.xml", "agent_uas.xml", "0")
    api = sip.api()
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "a connected call")
    call_id = live[0]["call_id"]
    assert api.post(f"/api/v1/calls/{call_id}/transfer",
                    json={"target": "12;3"}).status_code == 422
    assert api.post("/api/v1/calls/nope/transfer", json={"target": "119"}).status_code == 404
    reply = api.post(f"/api/v1/calls/{call_id}/transfer", json={"target": "119003"})
    assert reply.status_code == 202, reply.text
    await uas_done(tmp_path, agent_port)  # the call taker's leg got its BYE
    await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                            if c["agent_id"] == "transfer:119003"], "bridged to 119003")
    assert [a for a, _ in audit(sip, "call.transfer_requested")] == ["sup"]
    # The CDR writer batches its rows: wait for the audit row rather than race it.
    assert await wait_for(lambda: [a for a, _ in audit(sip, "call.transferred")],
                          "the transfer audited") == ["sup"]
    assert api.post(f"/api/v1/calls/{call_id}/release",
                    json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)


async def test_refer_without_the_media_engine_is_refused_501(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_refer_501.xml", agent_port, tmp_path, "-s", "119"))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    # The agent's REFER gets 501 naming the media engine; the call goes on until the
    # agent hangs up, and the caller gets BYE.
    code, out = await call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("answered", "agent_hangup")]


# -- session timers -----------------------------------------------------------------


async def test_session_interval_too_small_gets_422(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    code, out = await call(sip, tmp_path, "caller_se_small.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    assert sip.rows("SELECT COUNT(*) FROM call_records") == [(0,)]


async def test_silent_refresher_is_released_with_a_reason(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    extra_sip="session_expires = 4\nmin_se = 2")
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_refresh.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "caller_se_expires.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause, released_by FROM call_records WHERE outcome IS NOT NULL"),
        "a CDR")
    assert row == [("answered", "session_expired", "system")]


async def test_refreshes_keep_calls_up_both_ways(tmp_path: Path, started: list[object]) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    extra_sip="session_expires = 12\nmin_se = 2")
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_refresh.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    # The caller refreshes with UPDATE (answered with Session-Expires) and hangs up itself
    # after the unrefreshed expiry would have passed.
    code, out = await call(sip, tmp_path, "caller_se_refreshes.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    # dispatchd refreshes a caller that asked refresher=uas: two UPDATEs, then its BYE.
    code, out = await call(sip, tmp_path, "caller_se_uas_refreshes.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port, calls=2)
    rows = await wait_for(lambda: (r := sip.rows(
        "SELECT cause FROM call_records WHERE outcome IS NOT NULL")) and len(r) == 2 and r,
        "two CDRs")
    assert rows == [("caller_hangup",), ("caller_hangup",)]


async def test_our_invite_is_sent_again_after_a_422(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_422.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "trunk_call.xml", "110", carrier, "-d", "300")
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port)
    row = await wait_for(lambda: sip.rows(
        "SELECT agent_id, outcome, cause FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("alice", "answered", "caller_hangup")]


# -- PRACK / 100rel ------------------------------------------------------------------


async def test_100rel_both_ways_on_a_trunk_that_requires_it(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]},
                    trunks=trunk(carrier) + "require_100rel = true\n")
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_100rel.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "caller_no_100rel.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    # Our 180 to the caller is reliable and PRACKed; the agent's reliable 180 gets our
    # PRACK; the 200 follows only then.
    code, out = await call(sip, tmp_path, "caller_100rel.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("answered", "caller_hangup")]


async def test_reliable_183_with_sdp_completes_offer_answer(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, media=media(tmp_path),
                    trunks=trunk(carrier) + "require_100rel = true\n")
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "caller_100rel_183.xml", "110", carrier)
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port)


# -- digest trunk and TLS ----------------------------------------------------------


async def test_digest_authenticated_trunk(tmp_path: Path, started: list[object]) -> None:
    carrier = free_port()
    sip = SipDaemon(
        tmp_path, agents={"alice": ["police"]},
        accounts={"alice": PASSWORD, "carrier1": "trunk-pass-1"},
        trunks=(f'[[trunks]]\nname = "carrier"\naddress = "127.0.0.1:{carrier}"\n'
                'inbound = "digest"\naccount = "carrier1"\nmax_calls = 5\n'))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    auth = ("-au", "carrier1", "-auth_uri", f"110@127.0.0.1:{sip.port}")
    code, out = await call(sip, tmp_path, "trunk_call_auth.xml", "110", carrier,
                           *auth, "-ap", "wrong-pass", "-d", "200", timeout=30)
    assert code != 0  # challenged again, never queued
    # A new local port: the refused SIPp may still hold the first one (errno 98).
    code, out = await call(sip, tmp_path, "trunk_call_auth.xml", "110", free_port(),
                           *auth, "-ap", "trunk-pass-1", "-d", "200")
    assert code == 0, out + errors(tmp_path)
    row = await wait_for(lambda: sip.rows(
        "SELECT trunk, hotline, agent_id, outcome FROM call_records WHERE outcome IS NOT NULL"),
        "a CDR")
    assert row == [("carrier", "110", "alice", "answered")]


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl)."""
    cert, key = tmp / "sip.crt", tmp / "sip.key"
    subprocess.run([need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def test_baresip_registers_and_calls_over_tls(
    tmp_path: Path, started: list[object]
) -> None:
    cert, key = make_certificate(tmp_path)
    tls_port = free_port(socket.SOCK_STREAM)
    sip = SipDaemon(
        tmp_path, agents={"alice": ["police"]},
        accounts={"alice": PASSWORD, "caller1": PASSWORD},
        listen=f', {{transport = "tls", host = "127.0.0.1", port = {tls_port}}}',
        registrar='algorithms = ["MD5"]',  # baresip 1.0 digests with MD5 only
        extra_sip=f'session_expires = 90\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    phone = Baresip(tmp_path, "caller1", PASSWORD, tls_port, DOMAIN, transport="tls",
                    cafile=cert)
    started.append(phone)
    await asyncio.to_thread(phone.connect)
    rows = await wait_for(lambda: sip.rows(
        "SELECT contact, source_transport FROM sip_bindings WHERE aor LIKE ?",
        "sip:caller1@%"), "baresip registered")
    assert rows[0][1] == "TLS" and "transport=tls" in rows[0][0], rows
    phone.command("dial", f"sip:110@127.0.0.1:{tls_port};transport=tls")
    await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED")
    phone.command("hangup")
    await asyncio.to_thread(phone.wait_event, "CALL_CLOSED")
    await uas_done(tmp_path, agent_port)
    row = await wait_for(lambda: sip.rows(
        "SELECT caller, agent_id, outcome, cause FROM call_records WHERE outcome IS NOT NULL"),
        "a CDR")
    assert row == [("caller1", "alice", "answered", "caller_hangup")]
