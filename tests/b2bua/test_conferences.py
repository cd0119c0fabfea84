"""Conferences with real peers: baresip phones dialled out, SIPp trunks, FFT of what each hears.

A real dispatchd runs with ``[sip]`` and ``[media]``; baresip phones (and a
pyVoIP phone) register and auto-answer, each sending its own tone (dispatcher 700 Hz, unit 1 1100 Hz,
unit 2 1500 Hz; a public caller 650 Hz, a call taker 1000 Hz) and dumping what
it decodes.  The FFT of each dump between two moments proves who hears whom:
a muted leg is heard by nobody, a deafened leg hears nothing, a locked room
refuses a new leg (409).  SIPp plays two trunks: one out of channels (503),
so a number fails over to the other, which answers and later gets our BYE
with its Reason header.  Ending a conference releases every real peer; the
recording holds the first leg dialled on channel 0 and the others on channel 1.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from b2bua_helpers import PASSWORD, SipDaemon, SippServer, free_port, need, run_peer
from softphones import Baresip
from test_b2bua_media import (
    assert_hears,
    grow,
    level_db,
    media,
    samples,
    segment,
    ssh_command,
)
from test_b2bua_sipp import uas_done, wait_for

DISP, UNIT1, UNIT2 = 700.0, 1100.0, 1500.0
CALLER, TAKER = 650.0, 1000.0
JOIN_HIGH = 1760.0


def trunks(busy: int, backup: int) -> str:
    """Two trunks: ``busy`` preferred (it answers 503), ``backup`` second."""
    return (f'[[trunks]]\nname = "busy"\naddress = "127.0.0.1:{busy}"\nsource_port = {busy}\n'
            f'outbound_priority = 10\n'
            f'[[trunks]]\nname = "backup"\naddress = "127.0.0.1:{backup}"\n'
            f'source_port = {backup}\noutbound_priority = 1\n')


async def phones(tmp: Path, sip: SipDaemon, tones: dict[str, float]) -> dict[str, Baresip]:
    """Registered, auto-answering baresips, one per account, each sending its tone."""
    out = {}
    for user, freq in tones.items():
        out[user] = Baresip(tmp, user, PASSWORD, sip.port, "dispatch.test", freq=freq,
                            dump=True, seconds=180)
    for phone in out.values():
        await asyncio.to_thread(phone.connect)
    return out


def legs(api: Any, conf_id: str) -> list[dict[str, Any]]:
    """The conference's live legs from the API."""
    reply = api.get(f"/api/v1/conferences/{conf_id}")
    assert reply.status_code == 200, reply.text
    return list(reply.json()["legs"])


async def confirmed(api: Any, conf_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` legs are answered."""
    return list(await wait_for(
        lambda: [x for x in legs(api, conf_id) if x["state"] == "confirmed"]
        if len([x for x in legs(api, conf_id) if x["state"] == "confirmed"]) >= count else [],
        f"{count} legs answered", timeout=30))


async def hear(phone_list: list[Baresip]) -> list[np.ndarray]:
    """What each phone heard during the next 2.5 s (past 0.5 s for a change to land)."""
    marks = [len(samples(p.heard())) for p in phone_list]
    ends = [await grow(p, m) for p, m in zip(phone_list, marks, strict=True)]
    return [segment(p, m, e) for p, m, e in zip(phone_list, marks, ends, strict=True)]


def tone_heard(x: np.ndarray) -> bool:
    """The join/leave tone's high note stands out in some 0.1 s of ``x`` (the talkers'
    tones are far from it)."""
    windows = [x[i:i + 800] for i in range(0, len(x) - 800, 400)]
    levels = [level_db(w, JOIN_HIGH) for w in windows]
    return bool(levels) and max(levels) > float(np.median(levels)) + 25


def rms(x: np.ndarray) -> float:
    """Root mean square of a segment."""
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


async def test_conference_dial_out_mute_deafen_lock_failover_remove_end_and_recording(
    tmp_path: Path, started: list[object]
) -> None:
    busy_port, backup_port = free_port(), free_port()
    busy = SippServer("trunk_busy.xml", busy_port, tmp_path)
    backup = SippServer("agent_uas.xml", backup_port, tmp_path, "-trace_msg")
    started += [busy, backup]
    users = {"disp": PASSWORD, "u1": PASSWORD, "u2": PASSWORD}
    sip = SipDaemon(tmp_path, agents={}, accounts=users, registrar='algorithms = ["MD5"]',
                    trunks=trunks(busy_port, backup_port), media=media(tmp_path))
    started.append(sip)
    api = sip.api()
    ph = await phones(tmp_path, sip, {"disp": DISP, "u1": UNIT1, "u2": UNIT2})
    started.extend(ph.values())
    await wait_for(lambda: len(sip.rows("SELECT contact FROM sip_bindings")) == 3,
                   "three phones registered")
    disp, u1, u2 = ph["disp"], ph["u1"], ph["u2"]

    # Bad input is refused with a clear status before anything is dialled.
    assert api.post("/api/v1/conferences", json={"name": "x", "participants": ["a\r\nb"]}
                    ).status_code == 422
    assert api.post("/api/v1/conferences", json={"name": "x", "colour": "red"}
                    ).status_code == 422

    # 1. A conference with two parties dialled at once: a registered user and a SIP URI.
    reply = api.post("/api/v1/conferences", json={
        "name": "flood command", "pin": "4321",
        "participants": ["disp", "sip:u1@dispatch.test"], "reason": "flood briefing"})
    assert reply.status_code == 201, reply.text
    conf = reply.json()
    conf_id = conf["id"]
    assert conf["pin_set"] and conf["created_by"] == "sup" and len(conf["dialled"]) == 2
    await confirmed(api, conf_id, 2)
    d, a = await hear([disp, u1])
    assert_hears(d, (UNIT1,), (UNIT2,), "dispatcher, two legs")
    assert_hears(a, (DISP,), (UNIT2,), "unit 1, two legs")

    # 2. A third leg: everyone hears everyone, and the room hears the join tone.
    before_join = len(samples(disp.heard()))
    reply = api.post(f"/api/v1/conferences/{conf_id}/legs", json={"target": "u2"})
    assert reply.status_code == 202, reply.text
    leg2 = reply.json()["leg"]
    await confirmed(api, conf_id, 3)
    d, a, b = await hear([disp, u1, u2])
    assert_hears(d, (UNIT1, UNIT2), (), "dispatcher, three legs")
    assert_hears(a, (DISP, UNIT2), (), "unit 1, three legs")
    assert_hears(b, (DISP, UNIT1), (), "unit 2, three legs")
    assert tone_heard(samples(disp.heard())[before_join:]), "the join tone was not heard"
    shown = {x["leg"]: x for x in legs(api, conf_id)}
    assert shown[leg2]["added_by"] == "sup" and shown[leg2]["target"] == "user:u2"

    # 3. Mute unit 2: nobody hears it.  Unmute: heard again.
    assert api.patch(f"/api/v1/conferences/{conf_id}/legs/{leg2}",
                     json={"muted": True}).status_code == 200
    assert {x["leg"]: x for x in legs(api, conf_id)}[leg2]["muted"] is True
    d, a = await hear([disp, u1])
    assert_hears(d, (UNIT1,), (UNIT2,), "dispatcher, unit 2 muted")
    assert_hears(a, (DISP,), (UNIT2,), "unit 1, unit 2 muted")
    assert api.patch(f"/api/v1/conferences/{conf_id}/legs/{leg2}",
                     json={"muted": False}).status_code == 200
    (d,) = await hear([disp])
    assert_hears(d, (UNIT1, UNIT2), (), "dispatcher, unit 2 unmuted")

    # 4. Deafen unit 1: it hears nothing, but is still heard.
    leg1 = next(x["leg"] for x in legs(api, conf_id) if x["target"] == "user:u1")
    assert api.patch(f"/api/v1/conferences/{conf_id}/legs/{leg1}",
                     json={"deafened": True}).status_code == 200
    a, d = await hear([u1, disp])
    assert rms(a) < 30, f"a deafened leg heard something: rms {rms(a)}"
    assert_hears(d, (UNIT1, UNIT2), (), "dispatcher, unit 1 deafened")
    assert api.patch(f"/api/v1/conferences/{conf_id}/legs/{leg1}",
                     json={"deafened": False}).status_code == 200
    (a,) = await hear([u1])
    assert_hears(a, (DISP, UNIT2), (), "unit 1, undeafened")

    # 5. Locked: no new legs (409); unlocked: a number is dialled through the trunks.  The
    #    preferred trunk answers 503, so the call fails over to the backup trunk.
    assert api.patch(f"/api/v1/conferences/{conf_id}", json={"locked": True}).status_code == 200
    refused = api.post(f"/api/v1/conferences/{conf_id}/legs", json={"target": "13800138000"})
    assert refused.status_code == 409 and "locked" in refused.text
    assert api.patch(f"/api/v1/conferences/{conf_id}", json={"locked": False}).status_code == 200
    reply = api.post(f"/api/v1/conferences/{conf_id}/legs", json={"target": "13800138000"})
    assert reply.status_code == 202, reply.text
    trunked = await wait_for(lambda: [x for x in legs(api, conf_id)
                                      if x["trunk"] == "backup" and x["state"] == "confirmed"],
                             "the number answered through the backup trunk", timeout=30)
    await uas_done(tmp_path, busy_port)  # the preferred trunk was tried first (503)
    await wait_for(lambda: sip.rows("SELECT details FROM audit_log WHERE action = "
                                    "'conference.failed'"), "the busy trunk's failure audited")
    failed = sip.rows("SELECT details FROM audit_log WHERE action = 'conference.failed'")
    assert "sip_503 via trunk busy" in failed[0][0]

    # 6. Remove the trunk leg: BYE with our Reason header; the rest carry on and hear
    #    the leave tone.
    before_leave = len(samples(disp.heard()))
    gone = api.delete(f"/api/v1/conferences/{conf_id}/legs/{trunked[0]['leg']}",
                      params={"reason": "line needed"})
    assert gone.status_code == 200, gone.text
    await uas_done(tmp_path, backup_port)
    messages = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert 'Reason: Q.850;cause=16;text="removed by sup: line needed"' in messages
    assert len(legs(api, conf_id)) == 3
    await grow(disp, before_leave, 1.5)
    assert tone_heard(samples(disp.heard())[before_leave:]), "the leave tone was not heard"
    assert api.delete(f"/api/v1/conferences/{conf_id}/legs/nope").status_code == 404

    # 7. End: every phone gets BYE; the conference is gone.
    listed = api.get("/api/v1/conferences").json()
    assert [c["id"] for c in listed if c["kind"] == "conference"] == [conf_id]
    assert api.delete(f"/api/v1/conferences/{conf_id}", params={"reason": "all clear"}
                      ).status_code == 200
    for phone in (disp, u1, u2):
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 30)
    assert api.get(f"/api/v1/conferences/{conf_id}").status_code == 404
    assert api.post(f"/api/v1/conferences/{conf_id}/legs", json={"target": "u1"}
                    ).status_code == 404

    # 8. Stored: the conference row with its history, and an audit row per change.
    row = await wait_for(lambda: sip.rows(
        "SELECT name, created_by, ended_by, end_reason, history FROM conferences "
        "WHERE id = ? AND ended_at IS NOT NULL", conf_id), "the ended conference row")
    name, by, ended_by, why, history = row[0]
    assert (name, by, ended_by, why) == ("flood command", "sup", "sup", "all clear")
    steps = [h["step"] for h in json.loads(history)]
    for step in ("created", "ringing", "joined", "muted", "unmuted", "deafened", "undeafened",
                 "locked", "unlocked", "failed", "removed", "ended"):
        assert step in steps, (step, steps)
    actions = {a for (a,) in sip.rows("SELECT action FROM audit_log WHERE actor = 'sup' "
                                      "AND action LIKE 'conference.%'")}
    assert {"conference.created", "conference.muted", "conference.deafened",
            "conference.locked", "conference.removed", "conference.ended"} <= actions

    # 9. The recording, from the first answer to the end: channel 0 the first leg dialled
    #    (the dispatcher), channel 1 everyone else.
    rec = await wait_for(lambda: sip.rows(
        "SELECT details FROM audit_log WHERE action = 'call.recorded' AND subject = ?",
        f"call:{conf_id}"), "the conference recording sealed", timeout=30)
    path = Path(json.loads(rec[0][0])["path"])
    assert path.is_relative_to(tmp_path / "rec")
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    middle = stereo[len(stereo) // 4: len(stereo) // 2]
    assert_hears(middle[:, 0], (DISP,), (UNIT1,), "recording, channel 0")
    assert_hears(middle[:, 1], (UNIT1,), (DISP,), "recording, channel 1")


async def test_a_third_party_joins_a_live_call_and_the_call_is_a_conference(
    tmp_path: Path, started: list[object]
) -> None:
    users = {"alice": PASSWORD, "caller1": PASSWORD, "u1": PASSWORD}
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, accounts=users,
                    registrar='algorithms = ["MD5"]', media=media(tmp_path))
    started.append(sip)
    api = sip.api()
    ph = await phones(tmp_path, sip, {"caller1": CALLER, "u1": UNIT2})
    started.extend(ph.values())
    caller, u1 = ph["caller1"], ph["u1"]
    await wait_for(lambda: len(sip.rows("SELECT contact FROM sip_bindings")) == 2,
                   "caller and unit registered")
    caller.command("dial", f"sip:110@127.0.0.1:{sip.port}")
    await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                            if c["state"] == "queued"], "the call queued")
    await grow(caller, 0, 2.5)  # queued (hearing the hold prompt): not recorded yet
    alice = Baresip(tmp_path, "alice", PASSWORD, sip.port, "dispatch.test", freq=TAKER,
                    dump=True, seconds=180)
    started.append(alice)
    await asyncio.to_thread(alice.connect)
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "the call connected", 30)
    call_id = live[0]["call_id"]

    # The call is listed as a conference of two legs.
    calls = [c for c in api.get("/api/v1/conferences").json() if c["id"] == call_id]
    assert calls and calls[0]["kind"] == "call"
    assert sorted(x["role"] for x in calls[0]["legs"]) == ["agent", "caller"]

    # Add a third party to the call taker's call.
    reply = api.post(f"/api/v1/conferences/{call_id}/legs",
                     json={"target": "u1", "reason": "connect the fire unit"})
    assert reply.status_code == 202, reply.text
    third = reply.json()["leg"]
    await confirmed(api, call_id, 3)
    c, t, u = await hear([caller, alice, u1])
    assert_hears(c, (TAKER, UNIT2), (), "caller, three-way")
    assert_hears(t, (CALLER, UNIT2), (), "call taker, three-way")
    assert_hears(u, (CALLER, TAKER), (), "unit, three-way")

    # Mute the caller's leg: neither the call taker nor the unit hears the caller.
    assert api.patch(f"/api/v1/conferences/{call_id}/legs/{call_id}:caller",
                     json={"muted": True}).status_code == 200
    t, u = await hear([alice, u1])
    assert_hears(t, (UNIT2,), (CALLER,), "call taker, caller muted")
    assert_hears(u, (TAKER,), (CALLER,), "unit, caller muted")

    # Remove the third party: it gets BYE, the call goes on.
    assert api.delete(f"/api/v1/conferences/{call_id}/legs/{third}",
                      params={"reason": "done"}).status_code == 200
    await asyncio.to_thread(u1.wait_event, "CALL_CLOSED", 30)
    assert [c["state"] for c in api.get("/api/v1/calls").json()] == ["connected"]

    # Ending a call's conference force-releases the call.
    assert api.delete(f"/api/v1/conferences/{call_id}", params={"reason": "wrap up"}
                      ).status_code == 200
    for phone in (caller, alice):
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 30)
    cdr = await wait_for(lambda: sip.rows(
        "SELECT cause, released_by FROM call_records WHERE id = ? AND outcome IS NOT NULL",
        call_id), "the CDR")
    assert cdr == [("force_released", "sup")]
    audit = sip.rows("SELECT actor, details FROM audit_log WHERE action = 'conference.ringing'")
    assert audit[0][0] == "sup" and "connect the fire unit" in audit[0][1]

    # Recorded from answer to release (not while queued): path, duration and hash on the
    # CDR; the call taker is on channel 1 from the first second of the file.
    timeline = await wait_for(lambda: [r for r in sip.rows(
        "SELECT timeline FROM call_records WHERE id = ?", call_id) if "recording" in r[0]],
        "the recording on the CDR", timeout=30)
    rec = next(t for t in json.loads(timeline[0][0]) if t["kind"] == "recording")
    with wave.open(rec["path"]) as w:
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert abs(len(stereo) / 8000 - rec["duration_s"]) < 0.05 and len(rec["sha256"]) == 64
    start = stereo[2400:10400]
    assert_hears(start[:, 1], (TAKER,), (CALLER,), "recording's first second, channel 1")
    assert_hears(start[:, 0], (CALLER,), (TAKER,), "recording's first second, channel 0")


UNITS = """
[[unit]]
id = "U-1"
name = "rescue boat 1"
agency = "119"
type = "rescue_team"
lat = 23.02
lon = 113.75
sip_uri = "sip:u1@dispatch.test"
capabilities = ["water_rescue"]

[[unit]]
id = "U-2"
name = "rescue boat 2"
agency = "119"
type = "rescue_team"
lat = 23.03
lon = 113.76
sip_uri = "sip:u2@dispatch.test"
"""

PLAN = """
[[plan]]
id = "flood-conference"
name = "flood conference"
category = "natural_disaster"
subtype = "flood"
grade = "IV"
conference = { name = "flood talk", participants = ["U-2", "disp"] }
"""


async def test_calling_a_unit_and_a_confirmed_plan_conference(
    tmp_path: Path, started: list[object]
) -> None:
    (tmp_path / "units.toml").write_text(UNITS)
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "flood.toml").write_text(PLAN)
    users = {"disp": PASSWORD, "u1": PASSWORD, "u2": PASSWORD}
    extra = (f'[dispatch]\nunits_file = "{tmp_path / "units.toml"}"\n'
             f'plans_dir = "{tmp_path / "plans"}"\n')
    sip = SipDaemon(tmp_path, agents={}, accounts=users, registrar='algorithms = ["MD5"]',
                    media=media(tmp_path) + extra, ssh=True)
    started.append(sip)
    api = sip.api()
    key = tmp_path / "sup_key"
    assert (await run_peer(need("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f",
                           str(key)))[0] == 0
    assert sip.cli("user", "key", "sup", f"{key}.pub").returncode == 0
    ph = await phones(tmp_path, sip, {"disp": DISP, "u1": UNIT1, "u2": UNIT2})
    started.extend(ph.values())
    await wait_for(lambda: len(sip.rows("SELECT contact FROM sip_bindings")) == 3,
                   "three phones registered")

    # Calling a unit by voice: the dispatcher's phone and the unit's, in one conference.
    assert api.post("/api/v1/units/NOPE/call", json={"account": "disp"}).status_code == 404
    reply = api.post("/api/v1/units/U-1/call", json={"account": "disp"})
    assert reply.status_code == 202, reply.text
    called = reply.json()
    assert called["target"] == "user:u1" and set(called["legs"]) == {"dispatcher", "unit"}
    conf_id = called["conference_id"]
    await confirmed(api, conf_id, 2)
    d, a = await hear([ph["disp"], ph["u1"]])
    assert_hears(d, (UNIT1,), (UNIT2,), "dispatcher calling unit 1")
    assert_hears(a, (DISP,), (UNIT2,), "unit 1 called")
    assert api.delete(f"/api/v1/conferences/{conf_id}").status_code == 200
    for user in ("disp", "u1"):
        await asyncio.to_thread(ph[user].wait_event, "CALL_CLOSED", 30)

    # A plan's conference, once confirmed, is opened for the incident and dials its people.
    reply = api.post("/api/v1/reports", json={
        "text": "东城街道暴雨内涝，一百多户居民被困，三人失踪", "lat": 23.0205, "lon": 113.7518})
    assert reply.status_code in (200, 201), reply.text
    iid = reply.json()["incident_id"]
    proposed = await wait_for(lambda: [x for x in api.get(
        "/api/v1/plans/actions", params={"incident_id": iid, "status": "proposed"}).json()
        if x["kind"] == "conference"], "the plan's conference proposed")
    assert api.post(f"/api/v1/plans/actions/{proposed[0]['id']}/confirm",
                    json={}).status_code == 200
    opened = await wait_for(lambda: [c for c in api.get("/api/v1/conferences").json()
                                     if c["incident_id"] == iid], "the plan conference")
    plan_conf = opened[0]["id"]
    assert opened[0]["name"] == "flood talk"
    answered = await confirmed(api, plan_conf, 2)
    assert sorted(x["target"] for x in answered) == ["user:disp", "user:u2"]
    (b,) = await hear([ph["u2"]])
    assert_hears(b, (DISP,), (UNIT1,), "unit 2 in the plan conference")
    # The same conference on the SSH console: listed leg by leg, a leg muted by name.
    code, out = await ssh_command(sip, key, "show", "conferences")
    assert code == 0 and plan_conf in out and "user:u2" in out and "user:disp" in out, out
    u2_leg = next(x["leg"] for x in answered if x["target"] == "user:u2")
    code, out = await ssh_command(sip, key, "conference", "mute", plan_conf, u2_leg)
    assert code == 0 and "muted" in out, out
    assert {x["leg"]: x for x in legs(api, plan_conf)}[u2_leg]["muted"] is True
    code, out = await ssh_command(sip, key, "conference", "mute", plan_conf)
    assert code == 2 and "usage: conference mute ID LEG" in out, out
    links = await wait_for(lambda: sip.rows(
        "SELECT ref, actor FROM incident_links WHERE incident_id = ? AND kind = 'conference'",
        iid), "the conference linked to the incident")
    assert links == [(plan_conf, "sup")]
    assert api.delete(f"/api/v1/conferences/{plan_conf}", params={"reason": "over"}
                      ).status_code == 200
    for user in ("disp", "u2"):
        await asyncio.to_thread(ph[user].wait_event, "CALL_CLOSED", 30)
    rows = await wait_for(lambda: sip.rows(
        "SELECT incident_id, ended_by FROM conferences WHERE id = ? AND ended_at IS NOT NULL",
        plan_conf), "the plan conference stored")
    assert rows == [(iid, "sup")]

    # A call taker may see conferences but not open or change one.
    pw = tmp_path / "ct-pw"
    pw.write_text("call-taker-password-1\n")
    assert sip.cli("user", "add", "ct", "--role", "call_taker", "--password-file",
                   str(pw)).returncode == 0
    token = httpx.post(f"{sip.proc.url}/api/v1/auth/login", json={
        "username": "ct", "password": "call-taker-password-1"}).json()["token"]
    ct = httpx.Client(base_url=sip.proc.url, headers={"Authorization": f"Bearer {token}"})
    assert ct.get("/api/v1/conferences").status_code == 200
    assert ct.post("/api/v1/conferences", json={"name": "x"}).status_code == 403
    assert ct.post("/api/v1/units/U-1/call", json={"account": "disp"}).status_code == 403

    # Shutdown ends open conferences: the phones get BYE and the row says why.
    reply = api.post("/api/v1/conferences", json={"name": "night", "participants": ["u1"]})
    assert reply.status_code == 201, reply.text
    last = reply.json()["id"]
    await confirmed(api, last, 1)
    sip.stop()
    await asyncio.to_thread(ph["u1"].wait_event, "CALL_CLOSED", 30)
    assert sip.rows("SELECT ended_by, end_reason FROM conferences WHERE id = ?", last) == [
        ("system", "shutdown")]


async def test_a_pyvoip_phone_in_a_conference_hears_and_is_heard_though_recording_fails(
    tmp_path: Path, started: list[object]
) -> None:
    from softphones import PyVoipPhone

    pyvoip = 1900.0
    # pyVoIP answers only an MD5 challenge without qop, with ";transport=UDP" in its uri.
    sip = SipDaemon(tmp_path, agents={}, accounts={"disp": PASSWORD, "pv": PASSWORD},
                    registrar='algorithms = ["MD5"]\nrequire_qop = false\ncheck_digest_uri = false',
                    media=media(tmp_path))
    started.append(sip)
    api = sip.api()
    pv = PyVoipPhone("pv", PASSWORD, sip.port, freq=pyvoip)
    started.append(pv)
    ph = await phones(tmp_path, sip, {"disp": DISP})
    started.extend(ph.values())
    await wait_for(lambda: len(sip.rows("SELECT contact FROM sip_bindings")) == 2,
                   "pyVoIP and baresip registered")
    # The recordings directory is broken (a file where today's directory goes): the
    # recording fails, which raises an alarm but never touches the conference.
    (tmp_path / "rec").mkdir(exist_ok=True)
    now = time.time()
    for day in (now, now + 86400):
        (tmp_path / "rec" / time.strftime("%Y-%m-%d", time.gmtime(day))).write_text("x")
    reply = api.post("/api/v1/conferences", json={"name": "pv", "participants": ["disp", "pv"]})
    assert reply.status_code == 201, reply.text
    conf_id = reply.json()["id"]
    await confirmed(api, conf_id, 2)
    alarm = await wait_for(lambda: sip.rows(
        "SELECT details FROM audit_log WHERE action = 'call.recording_failed' AND subject = ?",
        f"call:{conf_id}"), "the recording failure audited")
    assert "Not a directory" in alarm[0][0] or "exists" in alarm[0][0], alarm
    metrics = api.get("/metrics").text
    assert "dispatchd_media_recordings_failed_total 1.0" in metrics
    assert pv.answered == 1
    (d,) = await hear([ph["disp"]])
    assert_hears(d, (pyvoip,), (UNIT1,), "dispatcher hears the pyVoIP phone")
    mark = len(pv.heard)
    await wait_for(lambda: len(pv.heard) >= mark + 3 * 8000, "pyVoIP hears 3 s", timeout=30)
    heard = (np.frombuffer(bytes(pv.heard[mark + 4000:]), dtype=np.uint8).astype(np.int16)
             - 128) * 256
    assert_hears(heard, (DISP,), (pyvoip,), "pyVoIP hears the dispatcher")
    assert api.delete(f"/api/v1/conferences/{conf_id}", params={"reason": "done"}
                      ).status_code == 200
    await asyncio.to_thread(ph["disp"].wait_event, "CALL_CLOSED", 30)
    await wait_for(lambda: pv.ended == 1, "pyVoIP's call ended by our BYE")


def test_a_conference_name_keeps_chinese_and_is_quoted_safely() -> None:
    from telephony.b2bua.conference import _name
    from telephony.sip.headers import parse_name_addr, quote_string

    assert _name("东城\x07 火灾\n会商 ") == "东城 火灾 会商"
    assert _name("x" * 300) == "x" * 128
    typed = '会商 "A" \\ B'
    parsed = parse_name_addr(quote_string(_name(typed)) + " <sip:c@d.test>")
    assert parsed.display_name == typed
