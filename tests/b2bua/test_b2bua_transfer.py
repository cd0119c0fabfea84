"""Blind transfer's loose ends with real peers: trunk channels and repeated REFERs.

A real ``dispatchd run`` with the media engine; SIPp plays the carrier, the
call takers' phones (REFERing twice in one dialog) and the other agencies'
lines behind the outbound trunks (busy, ringing until CANCELled, answering, or
a trunk refusing 503); baresip is a real call taker's phone.  A transfer leg
holds one of its trunk's ``max_calls`` channels for its whole life, read back
from ``/health`` (``trunk_calls``); outcomes come from the audit trail.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from b2bua_helpers import (
    BASE_TELEPHONY,
    DOMAIN,
    PASSWORD,
    SIPP_DIR,
    SipDaemon,
    SippServer,
    errors,
    free_port,
    need,
    register_agents,
    run_peer,
)
from softphones import Baresip
from test_b2bua_media import media
from test_b2bua_sipp import call, trunk, uas_done, wait_for


def outbound_trunk(name: str, port: int, max_calls: int, priority: int) -> str:
    """A trunk towards another agency's gateway (outbound only: no caller comes from it)."""
    return (f'[[trunks]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\n'
            f'sources = ["127.0.0.9"]\nmax_calls = {max_calls}\n'
            f"outbound_priority = {priority}\n")


def trunk_calls(sip: SipDaemon) -> dict[str, int]:
    """Channels in use per trunk, as the daemon reports them."""
    health: dict[str, Any] = sip.api().get("/health").json()
    return dict(health["services"]["sip"]["detail"]["calls"]["trunk_calls"])


def audit(sip: SipDaemon, action: str) -> list[tuple[str, dict[str, Any]]]:
    """(actor, details) of the audit rows of ``action``, oldest first."""
    return [(r[0], json.loads(r[1])) for r in sip.rows(
        "SELECT actor, details FROM audit_log WHERE action = ? ORDER BY id", action)]


def connected_calls(sip: SipDaemon) -> list[dict[str, Any]]:
    """Live calls connected to someone."""
    return [c for c in sip.api().get("/api/v1/calls").json() if c["state"] == "connected"]


async def alice_on_duty(tmp: Path, started: list[object], carrier: int, trunks: str,
                        agent: tuple[str, ...], peers: dict[int, str],
                        **daemon: Any) -> tuple[SipDaemon, int]:
    """A daemon with the carrier's trunk (one channel) and ``trunks``; call taker alice on
    a SIPp phone playing ``agent`` (scenario, then its arguments), registered; a SIPp
    per entry of ``peers`` (port: scenario) as the far ends.  The daemon and alice's port."""
    sip = SipDaemon(tmp, agents={"alice": ["police"]}, media=media(tmp),
                    trunks=trunk(carrier, max_calls=1) + trunks, **daemon)
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer(agent[0], agent_port, tmp, *agent[1:]))
    started.extend(SippServer(scenario, port, tmp) for port, scenario in peers.items())
    code, out = await register_agents(sip, tmp, {"alice": agent_port})
    assert code == 0, out + errors(tmp)
    return sip, agent_port


async def test_refer_again_after_a_busy_target_and_491_while_one_is_under_way(
    tmp_path: Path, started: list[object]
) -> None:
    # The carrier's own channel is taken by the caller, the fire centre has one: a busy
    # leg that kept its channel would make the second REFER fail (NOTIFY 503).
    carrier, target = free_port(), free_port()
    sip, agent_port = await alice_on_duty(
        tmp_path, started, carrier, outbound_trunk("fire-centre", target, 1, 10),
        ("agent_refer_twice.xml",), {target: "target_by_number.xml"})
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    # REFER 1 (busy, NOTIFY 100 then 486), REFER 2 (its NOTIFYs with id=2), REFER 3 (491),
    # then NOTIFY 180 and 200 of the second, and our BYE: the scenario checks each.
    await uas_done(tmp_path, agent_port)
    live = await wait_for(lambda: [c for c in connected_calls(sip)
                                   if c["agent_id"] == "transfer:119010"],
                          "the caller bridged to 119010")
    assert trunk_calls(sip) == {"carrier": 1, "fire-centre": 1}
    failed = await wait_for(lambda: audit(sip, "call.transfer_failed"), "the busy audited")
    assert failed == [("agent:alice", {"agent": "alice", "target": "119009", "status": 486,
                                       "reason": "target answered 486"})]
    assert await wait_for(lambda: audit(sip, "call.transferred"), "the transfer audited") == [
        ("agent:alice", {"agent": "alice", "target": "119010"})]
    assert sip.api().post(f"/api/v1/calls/{live[0]['call_id']}/release",
                          json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, target, calls=2)  # the busy call and the answered one
    assert await wait_for(lambda: trunk_calls(sip) == {"carrier": 0, "fire-centre": 0},
                          "every channel given back")


async def two_connected_calls(tmp: Path, started: list[object], trunks: str, carrier: int,
                              extra_sip: str = "") -> tuple[SipDaemon, asyncio.Future[Any],
                                                            list[str]]:
    """A daemon with two call takers (SIPp phones) each talking to a carrier caller."""
    sip = SipDaemon(tmp, agents={"alice": ["police"], "bob": ["police"]}, media=media(tmp),
                    trunks=trunks, extra_sip=extra_sip)
    started.append(sip)
    phones = {"alice": free_port(), "bob": free_port()}
    started.extend(SippServer("agent_uas.xml", port, tmp) for port in phones.values())
    code, out = await register_agents(sip, tmp, phones)
    assert code == 0, out + errors(tmp)
    callers = asyncio.ensure_future(call(sip, tmp, "caller_wait_bye.xml", "110", carrier,
                                         calls=2))
    live = await wait_for(lambda: len(connected_calls(sip)) == 2 and connected_calls(sip),
                          "both calls connected")
    return sip, callers, [c["call_id"] for c in live]


async def test_api_transfer_is_503_when_every_trunk_is_full_and_works_once_one_frees(
    tmp_path: Path, started: list[object]
) -> None:
    carrier, target = free_port(), free_port()
    started.append(SippServer("target_by_number.xml", target, tmp_path))
    sip, callers, (first, second) = await two_connected_calls(
        tmp_path, started, trunk(carrier, max_calls=2)
        + outbound_trunk("fire-centre", target, 1, 10), carrier)
    api = sip.api()
    assert trunk_calls(sip) == {"carrier": 2, "fire-centre": 0}
    reply = api.post(f"/api/v1/calls/{first}/transfer", json={"target": "119010"})
    assert reply.status_code == 202, reply.text
    await wait_for(lambda: [c for c in connected_calls(sip) if c["call_id"] == first
                            and c["agent_id"] == "transfer:119010"], "first bridged to 119010")
    assert trunk_calls(sip) == {"carrier": 2, "fire-centre": 1}
    # The fire centre's one channel is the first transfer's; the carrier's two are the
    # callers': the second transfer has no trunk to go out through.
    reply = api.post(f"/api/v1/calls/{second}/transfer", json={"target": "119011"})
    assert reply.status_code == 503, reply.text
    assert "every trunk is at its call limit" in reply.json()["detail"]
    assert trunk_calls(sip) == {"carrier": 2, "fire-centre": 1}
    # The first call ends (force-release): both its trunk channels are given back ...
    assert api.post(f"/api/v1/calls/{first}/release",
                    json={"reason": "done"}).status_code == 200
    await wait_for(lambda: trunk_calls(sip) == {"carrier": 1, "fire-centre": 0},
                   "the first call's channels given back")
    # ... and the same call can be transferred now.
    reply = api.post(f"/api/v1/calls/{second}/transfer", json={"target": "119011"})
    assert reply.status_code == 202, reply.text
    await wait_for(lambda: [c for c in connected_calls(sip) if c["call_id"] == second
                            and c["agent_id"] == "transfer:119011"], "second bridged")
    assert trunk_calls(sip) == {"carrier": 1, "fire-centre": 1}
    assert [d["target"] for _, d in await wait_for(
        lambda: len(audit(sip, "call.transferred")) == 2 and audit(sip, "call.transferred"),
        "both transfers audited")] == ["119010", "119011"]
    # The target hangs up? No: the supervisor ends the call; the target gets BYE.
    assert api.post(f"/api/v1/calls/{second}/release",
                    json={"reason": "done"}).status_code == 200
    code, out = await callers
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, target, calls=2)
    assert await wait_for(lambda: trunk_calls(sip) == {"carrier": 0, "fire-centre": 0},
                          "every channel given back")


async def test_unanswered_transfer_times_out_and_a_ringing_leg_gives_its_channel_back(
    tmp_path: Path, started: list[object]
) -> None:
    carrier, target = free_port(), free_port()
    sip, _ = await alice_on_duty(
        tmp_path, started, carrier, outbound_trunk("fire-centre", target, 1, 10),
        ("agent_uas.xml",), {target: "target_by_number.xml"},
        extra_sip="session_expires = 90\ntransfer_ring_timeout = 4")
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    live = await wait_for(lambda: connected_calls(sip), "a connected call")
    call_id = live[0]["call_id"]
    api = sip.api()
    # 119007 rings and never answers.
    assert api.post(f"/api/v1/calls/{call_id}/transfer",
                    json={"target": "119007"}).status_code == 202
    reply = api.post(f"/api/v1/calls/{call_id}/transfer", json={"target": "119010"})
    assert reply.status_code == 409 and "under way" in reply.json()["detail"], reply.text
    await wait_for(lambda: trunk_calls(sip)["fire-centre"] == 1, "the ringing leg's channel")
    failed = await wait_for(lambda: audit(sip, "call.transfer_failed"), "no answer audited")
    assert failed == [("sup", {"agent": "alice", "target": "119007", "status": 408,
                               "reason": "no answer within 4 s"})]
    # CANCEL, 487: the channel is free and the caller still talks to the call taker.
    await wait_for(lambda: trunk_calls(sip) == {"carrier": 1, "fire-centre": 0},
                   "the unanswered leg's channel given back")
    assert [c["agent_id"] for c in connected_calls(sip)] == ["alice"]
    # Again, and the caller's side ends while the target rings: CANCEL, channel back.
    assert api.post(f"/api/v1/calls/{call_id}/transfer",
                    json={"target": "119007"}).status_code == 202
    await wait_for(lambda: trunk_calls(sip)["fire-centre"] == 1, "ringing again")
    assert api.post(f"/api/v1/calls/{call_id}/release",
                    json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, target, calls=2)  # both legs: 180, CANCEL, 487, ACK
    assert await wait_for(lambda: trunk_calls(sip) == {"carrier": 0, "fire-centre": 0},
                          "every channel given back")


async def test_a_trunk_refusing_503_fails_the_transfer_over_to_the_next_trunk(
    tmp_path: Path, started: list[object]
) -> None:
    carrier, congested, backup = free_port(), free_port(), free_port()
    sip, agent_port = await alice_on_duty(
        tmp_path, started, carrier, outbound_trunk("fire-centre", congested, 1, 10)
        + outbound_trunk("backup", backup, 1, 5), ("agent_refer.xml", "-s", "119010"),
        {congested: "trunk_503.xml", backup: "target_by_number.xml"})
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    # The REFERing phone sees 100, 180 and 200 (the failover is ours to hide), then BYE.
    await uas_done(tmp_path, agent_port)
    await uas_done(tmp_path, congested)
    live = await wait_for(lambda: [c for c in connected_calls(sip)
                                   if c["agent_id"] == "transfer:119010"], "bridged via backup")
    assert trunk_calls(sip) == {"carrier": 1, "fire-centre": 0, "backup": 1}
    health = sip.api().get("/health").json()["services"]["sip"]["detail"]["calls"]
    assert health["transfers"]["failover"] == 1 and health["transfers"]["failed"] == 0
    assert sip.api().post(f"/api/v1/calls/{live[0]['call_id']}/release",
                          json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    assert await wait_for(lambda: trunk_calls(sip) == {"carrier": 0, "fire-centre": 0,
                                                       "backup": 0}, "channels given back")


def phone_call_event(phone: Baresip, kind: str, call: str | None,
                     not_call: str | None = None) -> str:
    """Wait for baresip's ``kind`` event of call ``call`` (or of any call but
    ``not_call``); the call's id."""
    while True:
        event = phone.wait_event(kind, 30.0)
        if (call is None or event["id"] == call) and event["id"] != not_call:
            return str(event["id"])


async def test_baresip_hanging_up_on_a_failed_transfer_does_not_drop_the_caller(
    tmp_path: Path, started: list[object]
) -> None:
    # baresip 1.0.0 ends its call when a transfer fails (menu.c: mem_deref(call) on
    # TRANSFER_FAILED), whether the REFER is refused or its NOTIFY says 503: the caller
    # must not go with it.
    carrier, target = free_port(), free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, media=media(tmp_path),
                    registrar='algorithms = ["MD5"]',
                    telephony=BASE_TELEPHONY.replace('name = "police"\n',
                                                     'name = "police"\nwrap_up = 1\n'),
                    trunks=trunk(carrier, max_calls=1)
                    + outbound_trunk("fire-centre", target, 1, 10))
    started.append(sip)
    started.append(SippServer("target_by_number.xml", target, tmp_path))
    api = sip.api()
    # The fire centre's one channel: a call in from it, waiting in the 12345 queue.
    queued = asyncio.ensure_future(run_peer(
        need("sipp"), f"127.0.0.1:{sip.port}", "-sf", str(SIPP_DIR / "caller_wait_bye.xml"),
        "-s", "12345", "-i", "127.0.0.9", "-p", str(free_port()), "-mp", str(free_port()),
        "-m", "1", "-nostdin", "-recv_timeout", "90000", timeout=120, cwd=tmp_path))
    await wait_for(lambda: trunk_calls(sip)["fire-centre"] == 1, "the fire centre's call queued")
    phone = Baresip(tmp_path, "alice", PASSWORD, sip.port, DOMAIN, seconds=120)
    started.append(phone)
    await asyncio.to_thread(phone.connect)
    await wait_for(lambda: api.get("/api/v1/agents").json()[0]["state"] == "ready",
                   "alice registered and ready")
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier,
                                        "-recv_timeout", "90000", timeout=120))
    first = (await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 30.0))["id"]
    # Every trunk is full: 202, then NOTIFY 503 -- and baresip hangs up.
    phone.command("transfer", "sip:119010@127.0.0.1")
    failed = await asyncio.to_thread(phone.wait_event, "TRANSFER_FAILED", 30.0)
    assert failed["param"] == "503 Service Unavailable", failed
    assert await wait_for(lambda: audit(sip, "call.transfer_failed"), "audited") == [
        ("agent:alice", {"agent": "alice", "target": "119010", "status": 503,
                         "reason": "every trunk is at its call limit"})]
    # The caller went back to the head of the queue, and after wrap-up rang alice again.
    assert await wait_for(lambda: audit(sip, "call.requeued"), "re-queue audited") == [
        ("system", {"agent": "alice",
                    "why": "call taker's phone hung up after a failed transfer"})]
    again = await asyncio.to_thread(phone_call_event, phone, "CALL_ESTABLISHED", None, first)
    live = await wait_for(lambda: [c for c in connected_calls(sip) if c["agent_id"] == "alice"],
                          "the caller connected to alice again")
    assert not caller.done()
    # The queued call ends (a supervisor releases it): the channel is free, REFER again.
    waiting = [c for c in api.get("/api/v1/calls").json() if c["state"] == "queued"]
    assert api.post(f"/api/v1/calls/{waiting[0]['call_id']}/release",
                    json={"reason": "test"}).status_code == 200
    await queued
    await wait_for(lambda: trunk_calls(sip) == {"carrier": 1, "fire-centre": 0},
                   "the queued call's channel given back")
    phone.command("transfer", "sip:119010@127.0.0.1")
    await asyncio.to_thread(phone_call_event, phone, "CALL_CLOSED", again)
    await wait_for(lambda: [c for c in connected_calls(sip)
                            if c["call_id"] == live[0]["call_id"]
                            and c["agent_id"] == "transfer:119010"], "bridged to 119010")
    assert trunk_calls(sip) == {"carrier": 1, "fire-centre": 1}
    assert api.post(f"/api/v1/calls/{live[0]['call_id']}/release",
                    json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    cdr = await wait_for(lambda: sip.rows(
        "SELECT outcome, timeline FROM call_records WHERE outcome = 'transferred'"), "the CDR")
    kinds = [t["kind"] for t in json.loads(cdr[0][1])]
    assert kinds.index("requeued") < kinds.index("answered", kinds.index("requeued")) \
        < kinds.index("transferred"), kinds


async def test_a_transfer_failing_after_the_call_taker_left_requeues_the_caller(
    tmp_path: Path, started: list[object]
) -> None:
    carrier, target = free_port(), free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"], "bob": ["police"]},
                    media=media(tmp_path), trunks=trunk(carrier, max_calls=1)
                    + outbound_trunk("fire-centre", target, 1, 10),
                    extra_sip="session_expires = 90\ntransfer_ring_timeout = 2")
    started.append(sip)
    alice, bob = free_port(), free_port()
    # alice REFERs to 119007 (it rings, nobody answers) and hangs up after the 202.
    started.append(SippServer("agent_refer_hangup.xml", alice, tmp_path, "-s", "119007"))
    started.append(SippServer("agent_uas.xml", bob, tmp_path))
    started.append(SippServer("target_by_number.xml", target, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": alice}))[0] == 0
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier,
                                        "-recv_timeout", "60000", timeout=90))
    await uas_done(tmp_path, alice)  # REFER, 202, NOTIFY 100, its own BYE answered 200
    assert (await register_agents(sip, tmp_path, {"bob": bob}))[0] == 0  # bob comes in
    failed = await wait_for(lambda: audit(sip, "call.transfer_failed"), "no answer audited")
    assert failed[0][1]["status"] == 408
    assert await wait_for(lambda: audit(sip, "call.requeued"), "re-queue audited") == [
        ("system", {"agent": "alice", "why": "transfer failed after the call taker left"})]
    live = await wait_for(lambda: [c for c in connected_calls(sip) if c["agent_id"] == "bob"],
                          "the caller answered by bob")
    assert not caller.done()
    await wait_for(lambda: trunk_calls(sip) == {"carrier": 1, "fire-centre": 0},
                   "the unanswered leg's channel given back")
    assert sip.api().post(f"/api/v1/calls/{live[0]['call_id']}/release",
                          json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, bob)


async def test_a_leg_whose_cancel_is_never_answered_gives_its_channel_back_after_64_t1(
    tmp_path: Path, started: list[object]
) -> None:
    carrier, target = free_port(), free_port()
    sip, _ = await alice_on_duty(
        tmp_path, started, carrier, outbound_trunk("fire-centre", target, 1, 10),
        ("agent_uas.xml",), {target: "target_by_number.xml"})
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    call_id = (await wait_for(lambda: connected_calls(sip), "a connected call"))[0]["call_id"]
    api = sip.api()
    # 119008 rings, then swallows our CANCEL: no 200, no 487, ever.
    assert api.post(f"/api/v1/calls/{call_id}/transfer",
                    json={"target": "119008"}).status_code == 202
    await wait_for(lambda: trunk_calls(sip)["fire-centre"] == 1, "the ringing leg's channel")
    assert api.post(f"/api/v1/calls/{call_id}/release",
                    json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, target)  # it got the CANCEL
    # The INVITE is still open (the gateway may yet answer 200, which would be BYEd) ...
    assert trunk_calls(sip) == {"carrier": 0, "fire-centre": 1}
    # ... until 64*T1 (32 s) after the CANCEL: then it is considered cancelled (RFC 3261 9.1).
    assert await wait_for(lambda: trunk_calls(sip) == {"carrier": 0, "fire-centre": 0},
                          "the channel given back after 64*T1", timeout=60)
