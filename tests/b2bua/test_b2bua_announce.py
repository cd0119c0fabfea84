"""Queue announcements and pre-emption through a real dispatchd with the media engine.

baresip callers wait in queues and dump what they decode; the dump is compared sample
by sample (normalised cross-correlation) with the expected prompt sequence: "you are
number 2 in the queue" must contain the clip for two where the clip for one is a worse
fit.  Pre-emption: a call taker (baresip, or SIPp) busy on a 12345 call is taken for a
110 call; the 12345 caller is re-queued hearing why (then bridged back), or released
with an RFC 4411 Reason header seen on the SIPp peer; CDR and audit rows are checked.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from b2bua_helpers import (
    PASSWORD,
    ROOT,
    SipDaemon,
    SippServer,
    errors,
    free_port,
    need,
    register_agents,
    run_peer,
)
from softphones import Baresip
from test_b2bua_media import assert_hears, grow, media, samples, segment
from test_b2bua_sipp import SIPP_DIR, call, trunk, uas_done, wait_for

from telephony.media.g711 import ulaw_decode, ulaw_encode
from telephony.media.prompts import load_prompt

PROMPTS = ROOT / "conf" / "prompts"
CALLER, TAKER = 650.0, 1000.0
REASON = 'Reason: preemption ;cause=1 ;text="UA Preemption"'

TELEPHONY = """
[routing]
fallback = "12345"
[[hotlines]]
number = "110"
queue = "police"
[[hotlines]]
number = "12345"
queue = "service"
[[hotlines]]
number = "12315"
queue = "service"
language = "zh"
[[queues]]
name = "police"
wrap_up = 0
[[queues]]
name = "service"
language = "en"
announce_every = 10
wrap_up = 0
{service}
"""


def clip(name: str) -> np.ndarray:
    """A shipped prompt as a phone decodes it after our µ-law encoding."""
    return ulaw_decode(ulaw_encode(load_prompt(PROMPTS / f"{name}.wav"))).astype(np.float64)


def ncc(heard: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``pattern`` at every offset of ``heard``."""
    x = heard.astype(np.float64)
    n = len(pattern)
    if len(x) < n:
        return np.zeros(1)
    size = 1 << (len(x) + n).bit_length()
    num = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(pattern, size)), size)
    num = num[:len(x) - n + 1]
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    window = np.sqrt(np.maximum(energy[n:] - energy[:-n], 1e-9))
    return np.asarray(num / (window * np.linalg.norm(pattern)))


def find_sequence(heard: np.ndarray, names: list[str], start: int = 0) -> int:
    """Each clip of ``names`` in turn, each right after the previous one (within 60 ms:
    the jitter buffer may add or drop a frame); returns where the sequence ends."""
    at = start
    for i, name in enumerate(names):
        pattern = clip(name)
        lo = at if i == 0 else max(at - 480, 0)
        hi = len(heard) if i == 0 else at + 480 + len(pattern)
        scores = ncc(heard[lo:hi], pattern)
        best = int(np.argmax(scores))
        assert scores[best] > 0.9, f"{name} not heard after sample {at}: best {scores[best]:.2f}"
        at = lo + best + len(pattern)
    return at


def fit(heard: np.ndarray, name: str, at: int) -> float:
    """How well ``name`` fits ``heard`` starting near ``at`` (best NCC within 60 ms)."""
    pattern = clip(name)
    return float(ncc(heard[max(at - 480, 0):at + 480 + len(pattern)], pattern).max())


async def heard_for(phone: Baresip, seconds: float) -> np.ndarray:
    """What ``phone`` decoded once it has at least ``seconds`` of audio."""
    await grow(phone, 0, seconds)
    return samples(phone.heard())


async def test_waiting_callers_hear_position_wait_and_music_in_their_language(
    tmp_path: Path, started: list[object]
) -> None:
    users = {f"c{i}": PASSWORD for i in range(1, 4)}
    sip = SipDaemon(tmp_path, agents={"alice": ["police", "service"]}, accounts=users,
                    registrar='algorithms = ["MD5"]', media=media(tmp_path),
                    telephony=TELEPHONY.format(service=""))
    started.append(sip)
    api = sip.api()
    phones = [Baresip(tmp_path, f"c{i}", PASSWORD, sip.port, "dispatch.test", freq=CALLER,
                      dump=True, seconds=120) for i in range(1, 4)]
    started.extend(phones)
    for phone in phones:
        await asyncio.to_thread(phone.connect)
    await wait_for(lambda: len(sip.rows("SELECT contact FROM sip_bindings")) == 3,
                   "three callers registered")
    # Nobody answers (alice never registers): c1 and c2 wait for 12345 (English queue),
    # c3 dials 12315 (same queue, a Chinese hotline) and is third in line.
    for phone, number, n in ((phones[0], "12345", 1), (phones[1], "12345", 2),
                             (phones[2], "12315", 3)):
        phone.command("dial", f"sip:{number}@127.0.0.1:{sip.port}")
        await wait_for(lambda n=n: len([c for c in api.get("/api/v1/calls").json()
                                        if c["state"] == "queued"]) == n, f"{n} queued")
    first = await heard_for(phones[0], 14.0)
    end = find_sequence(first, ["en/pos_pre", "en/n1", "en/pos_post", "en/hold"])
    assert fit(first, "en/n2", end - len(clip("en/hold")) - len(clip("en/pos_post"))
               - len(clip("en/n1"))) < 0.5
    moh = first[end + 800:end + 800 + 16000]  # then music on hold (from where its loop is)
    assert float(ncc(np.tile(clip("moh"), 2), moh.astype(np.float64)).max()) > 0.9
    again = find_sequence(first, ["en/pos_pre", "en/n1", "en/pos_post"], end)  # every 10 s
    assert again > end + 8000
    second = await heard_for(phones[1], 7.0)
    at = find_sequence(second, ["en/pos_pre", "en/n2"])
    assert fit(second, "en/n1", at - len(clip("en/n2"))) < fit(second, "en/n2",
                                                               at - len(clip("en/n2")))
    third = await heard_for(phones[2], 12.0)
    find_sequence(third, ["zh/pos_pre", "zh/n3", "zh/pos_post", "zh/hold"])
    for phone in phones:
        phone.command("hangup")


async def test_preempted_caller_is_requeued_told_why_and_bridged_back(
    tmp_path: Path, started: list[object]
) -> None:
    users = {"alice": PASSWORD, "c1": PASSWORD}
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police", "service"]}, accounts=users,
                    registrar='algorithms = ["MD5"]', media=media(tmp_path),
                    telephony=TELEPHONY.format(service=""), trunks=trunk(carrier))
    started.append(sip)
    api = sip.api()
    caller = Baresip(tmp_path, "c1", PASSWORD, sip.port, "dispatch.test", freq=CALLER,
                     dump=True, seconds=180)
    alice = Baresip(tmp_path, "alice", PASSWORD, sip.port, "dispatch.test", freq=TAKER,
                    dump=True, seconds=180)
    started.extend([caller, alice])
    for phone in (caller, alice):
        await asyncio.to_thread(phone.connect)
    caller.command("dial", f"sip:12345@127.0.0.1:{sip.port}")
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "12345 answered", 30)
    service_call = live[0]["call_id"]
    c0 = len(samples(caller.heard()))
    c1 = await grow(caller, c0, 2.0)
    assert_hears(segment(caller, c0, c1), (TAKER,), (), "12345 caller, answered")

    # A 110 call arrives through the trunk: alice is taken for it.
    urgent = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier,
                                        "-trace_msg"))
    mark = len(samples(caller.heard()))

    def states() -> dict[str, tuple[str, str]]:
        return {c["hotline"]: (c["state"], c["agent_id"])
                for c in api.get("/api/v1/calls").json()}

    await wait_for(lambda: states() == {"110": ("connected", "alice"), "12345": ("queued", "")},
                   "110 with alice, 12345 back in line", 30)
    told = await heard_for(caller, mark / 8000 + 10.0)
    find_sequence(told[mark:], ["en/preempted", "en/pos_pre", "en/n1", "en/pos_post"])
    audit = await wait_for(lambda: sip.rows(
        "SELECT actor, details FROM audit_log WHERE action = 'call.preempted'"), "audit")
    details = json.loads(audit[0][1])
    assert audit[0][0] == "system"
    assert (details["action"], details["why"], details["agent"], details["for_hotline"]) == (
        "requeue", "call_taker", "alice", "110")

    # The 110 call ends: alice (no wrap-up) gets the re-queued caller back, media only.
    urgent_id = next(c["call_id"] for c in api.get("/api/v1/calls").json()
                     if c["hotline"] == "110")
    assert api.post(f"/api/v1/calls/{urgent_id}/release",
                    json={"reason": "done"}).status_code == 200
    code, out = await urgent
    assert code == 0, out + errors(tmp_path)
    await wait_for(lambda: states() == {"12345": ("connected", "alice")}, "bridged back", 30)
    b0 = len(samples(caller.heard()))
    b1 = await grow(caller, b0, 2.5)
    assert_hears(segment(caller, b0, b1), (TAKER,), (), "12345 caller, bridged back")
    assert api.post(f"/api/v1/calls/{service_call}/release",
                    json={"reason": "done"}).status_code == 200
    row = await wait_for(lambda: sip.rows(
        "SELECT agent_id, outcome, timeline FROM call_records WHERE id = ? AND outcome IS NOT "
        "NULL", service_call), "the 12345 CDR")
    kinds = [t["kind"] for t in json.loads(row[0][2])]
    assert row[0][:2] == ("alice", "answered")
    assert kinds.count("answered") == 2 and "preempted" in kinds


SMALL_TRUNK = '[[trunks]]\nname = "small"\naddress = "127.0.0.2:5060"\nmax_calls = 1\n'
"""A one-line trunk: any port of 127.0.0.2 (two SIPp callers on it at once)."""


async def small(sip: SipDaemon, tmp: Path, scenario: str, number: str) -> tuple[int, str]:
    """A SIPp call from the small trunk's address."""
    return await run_peer(
        need("sipp"), f"127.0.0.1:{sip.port}", "-sf", str(SIPP_DIR / scenario), "-s", number,
        "-i", "127.0.0.2", "-p", str(free_port()), "-mp", str(free_port()), "-m", "1",
        "-nostdin", "-trace_err", "-trace_msg", "-recv_timeout", "30000", timeout=60, cwd=tmp)


async def test_release_policy_sends_the_reason_and_a_full_trunk_frees_a_line(
    tmp_path: Path, started: list[object]
) -> None:
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police", "service"]},
                    telephony=TELEPHONY.format(service='preempt = "release"'),
                    trunks=trunk(carrier, source_port=False) + SMALL_TRUNK,
                    media=media(tmp_path))
    started.append(sip)
    alice_port = free_port()
    started.append(SippServer("agent_uas.xml", alice_port, tmp_path, "-trace_msg"))
    assert (await register_agents(sip, tmp_path, {"alice": alice_port}))[0] == 0
    api = sip.api()
    service = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "12345",
                                         carrier, "-trace_msg"))
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "12345 answered", 30)
    service_id = live[0]["call_id"]
    urgent = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110",
                                        free_port(), "-trace_msg"))  # carrier: any port
    code, out = await service  # BYE'd with the Reason
    assert code == 0, out + errors(tmp_path)
    messages = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert REASON in messages, messages[-3000:]  # on the 12345 caller's BYE
    await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                            if c["hotline"] == "110" and c["state"] == "connected"],
                   "alice on the 110 call", 30)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause, released_by FROM call_records WHERE id = ? AND outcome IS NOT "
        "NULL", service_id), "the 12345 CDR")
    assert row == [("answered", "preempted", "system")]
    for c in api.get("/api/v1/calls").json():
        api.post(f"/api/v1/calls/{c['call_id']}/release", json={"reason": "next part"})
    code, out = await urgent
    assert code == 0, out + errors(tmp_path)

    # The small trunk (one line) carries a queued 12345 call; a 110 call on it takes the line.
    reply = api.post("/api/v1/agents/alice/logout")  # nobody answers: both calls wait
    assert reply.status_code in (200, 204), reply.text
    queued = asyncio.ensure_future(small(sip, tmp_path, "caller_preempted.xml", "12345"))
    await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                            if c["trunk"] == "small"], "a call on the small trunk", 30)
    second = asyncio.ensure_future(small(sip, tmp_path, "caller_preempted.xml", "110"))
    code, out = await queued  # 480 with the Reason
    assert code == 0, out + errors(tmp_path)
    messages = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert messages.count(REASON) >= 2, messages[-3000:]
    await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                            if c["trunk"] == "small" and c["hotline"] == "110"],
                   "the 110 call admitted on the small trunk", 30)
    audit = await wait_for(lambda: [r for r in sip.rows(
        "SELECT details FROM audit_log WHERE action = 'call.preempted'") if '"trunk"' in r[0]],
        "the trunk pre-emption audited")
    assert '"action": "release"' in audit[0][0]
    for c in api.get("/api/v1/calls").json():
        api.post(f"/api/v1/calls/{c['call_id']}/release", json={"reason": "end of test"})
    code, out = await second  # queued (alice is logged out) until released: 480
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, alice_port)
