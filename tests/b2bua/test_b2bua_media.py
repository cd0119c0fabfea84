"""Calls through the B2BUA with ``[media] enabled``: every leg's audio passes our mixer.

A real dispatchd runs with the media engine; baresip phones send known tones
(caller 650 Hz, call taker 1000 Hz, supervisor 1700 Hz) and dump what they
decode (``dump-*-dec.wav``).  The FFT of each phone's dump, cut at the moments
the test changed something, proves what each leg heard: the hold prompt (392
and 523 Hz) while queued, the other side through our mixer once answered, and
the supervisor only as the force-in mode allows.  SIPp plays a caller and a
call taker that send no RTP at all for the dead-media release.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import wave
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
from test_b2bua_sipp import call, trunk, uas_done, wait_for

CALLER, TAKER, SUPERVISOR = 650.0, 1000.0, 1700.0
HOLD = (392.0, 523.0)


def media(tmp: Path, dead_s: int = 30) -> str:
    """A ``[media]`` section recording into ``tmp/rec`` with the shipped prompts."""
    port = 30000 + 2 * (free_port() % 2000)
    return (f'[media]\nenabled = true\nport_min = {port}\nport_max = {port + 99}\n'
            f'dead_media_seconds = {dead_s}\nrecord = true\n'
            f'recordings_dir = "{tmp / "rec"}"\nprompts_dir = "{ROOT / "conf" / "prompts"}"\n')


def samples(path: Path | None) -> np.ndarray:
    """The PCM a phone has decoded so far (its dump is still being written: read the data
    chunk's bytes, not the header's size)."""
    if path is None:
        return np.zeros(0, dtype=np.int16)
    data = path.read_bytes()
    at = data.find(b"data")
    if at < 0:
        return np.zeros(0, dtype=np.int16)
    body = data[at + 8:]
    return np.frombuffer(body[:len(body) // 2 * 2], dtype="<i2")


def level_db(x: np.ndarray, freq: float) -> float:
    """Peak level (dB) within 15 Hz of ``freq``."""
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x)))) + 1e-9
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    band = (freqs > freq - 15) & (freqs < freq + 15)
    return float(20 * np.log10(spectrum[band].max()))


def assert_hears(x: np.ndarray, present: tuple[float, ...], absent: tuple[float, ...],
                 what: str) -> None:
    """Each present tone stands out; each absent one is at least 30 dB below the weakest."""
    assert len(x) >= 4000, f"{what}: only {len(x)} samples"
    levels = {f: round(level_db(x, f), 1) for f in present + absent}
    weakest = min(levels[f] for f in present)
    assert weakest > level_db(np.full(len(x), 1e-3), 1000.0) + 60, f"{what}: {levels}"
    for f in absent:
        assert levels[f] <= weakest - 30, f"{what}: {f} Hz must be inaudible: {levels}"


async def grow(phone: Baresip, mark: int, seconds: float = 2.5) -> int:
    """Wait until ``phone`` has heard ``seconds`` more audio than ``mark``; its length."""
    need = mark + int(seconds * 8000)
    await wait_for(lambda: len(samples(phone.heard())) >= need,
                   f"{phone.dir.name} hears {seconds}s more", timeout=30)
    return len(samples(phone.heard()))


def segment(phone: Baresip, start: int, end: int) -> np.ndarray:
    """What ``phone`` heard between two marks, minus 0.5 s at the start (the change lands)."""
    return samples(phone.heard())[start + 4000:end]


async def test_anchored_call_hold_prompt_force_in_modes_recording_and_release(
    tmp_path: Path, started: list[object]
) -> None:
    users = {"alice": PASSWORD, "caller1": PASSWORD, "sup1": PASSWORD}
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, accounts=users,
                    registrar='algorithms = ["MD5"]', media=media(tmp_path))
    started.append(sip)
    api = sip.api()
    sup = Baresip(tmp_path, "sup1", PASSWORD, sip.port, "dispatch.test", freq=SUPERVISOR,
                  dump=True, seconds=120)
    caller = Baresip(tmp_path, "caller1", PASSWORD, sip.port, "dispatch.test", freq=CALLER,
                     dump=True, seconds=120)
    started.extend([sup, caller])
    for phone in (sup, caller):
        await asyncio.to_thread(phone.connect)
    await wait_for(lambda: len(sip.rows("SELECT contact FROM sip_bindings")) == 2,
                   "caller and supervisor registered")

    # 1. Nobody is ready: the caller is queued and hears the hold prompt (early media).
    caller.command("dial", f"sip:110@127.0.0.1:{sip.port}")
    queued = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                     if c["state"] == "queued"], "a queued call")
    call_id = queued[0]["call_id"]
    hold_end = await grow(caller, 0, 3.0)
    assert_hears(segment(caller, 0, hold_end), HOLD, (TAKER,), "caller while queued")

    # 2. alice's phone registers (logs her in), is rung, auto-answers: the prompt stops
    #    and each side hears the other's tone through our mixer.
    alice = Baresip(tmp_path, "alice", PASSWORD, sip.port, "dispatch.test", freq=TAKER,
                    dump=True, seconds=120)
    started.append(alice)
    await asyncio.to_thread(alice.connect)
    # (baresip may answer before its ctrl_tcp is up: read the call's state from the API)
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "the call connected", 30)
    assert (live[0]["agent_id"], live[0]["caller"]) == ("alice", "caller1")
    c0, a0 = len(samples(caller.heard())), len(samples(alice.heard()))
    c1, a1 = await grow(caller, c0), await grow(alice, a0)
    assert_hears(segment(caller, c0, c1), (TAKER,), HOLD, "caller, answered")
    assert_hears(segment(alice, a0, a1), (CALLER,), HOLD, "call taker, answered")
    # Both phones' RTP lands on our ports (with SDP passed through, they would talk
    # directly and the engine would anchor nothing).
    metrics = dict(line.rsplit(" ", 1) for line in api.get("/metrics").text.splitlines()
                   if line.startswith("dispatchd_media_"))
    assert float(metrics["dispatchd_media_legs"]) == 2.0, metrics
    assert float(metrics["dispatchd_media_rooms"]) == 1.0, metrics
    assert float(metrics["dispatchd_media_packets_rx_total"]) > 100, metrics

    # 3. Force-in: listen, then whisper, then barge.
    reply = api.post(f"/api/v1/calls/{call_id}/monitor",
                     json={"mode": "listen", "account": "sup1"})
    assert reply.status_code == 202, reply.text
    leg = reply.json()["leg"]
    await asyncio.to_thread(sup.wait_event, "CALL_ESTABLISHED", 30)
    await wait_for(lambda: sip.rows("SELECT 1 FROM audit_log WHERE action = "
                                    "'call.monitor_joined'"), "the supervisor joined")
    marks = [len(samples(p.heard())) for p in (caller, alice, sup)]
    ends = [await grow(p, m) for p, m in zip((caller, alice, sup), marks, strict=True)]
    assert_hears(segment(caller, marks[0], ends[0]), (TAKER,), (SUPERVISOR,), "caller, listen")
    assert_hears(segment(alice, marks[1], ends[1]), (CALLER,), (SUPERVISOR,), "taker, listen")
    assert_hears(segment(sup, marks[2], ends[2]), (CALLER, TAKER), (), "supervisor, listen")

    for mode, caller_hears, taker_hears in (
            ("whisper", (TAKER,), (CALLER, SUPERVISOR)),
            ("barge", (TAKER, SUPERVISOR), (CALLER, SUPERVISOR))):
        reply = api.patch(f"/api/v1/calls/{call_id}/monitor/{leg}", json={"mode": mode})
        assert reply.status_code == 200, reply.text
        marks = [len(samples(p.heard())) for p in (caller, alice)]
        ends = [await grow(p, m) for p, m in zip((caller, alice), marks, strict=True)]
        silent = () if SUPERVISOR in caller_hears else (SUPERVISOR,)
        assert_hears(segment(caller, marks[0], ends[0]), caller_hears, silent, f"caller, {mode}")
        assert_hears(segment(alice, marks[1], ends[1]), taker_hears, (), f"taker, {mode}")
    assert api.patch(f"/api/v1/calls/{call_id}/monitor/{leg}",
                     json={"mode": "shout"}).status_code == 422

    # 4. Force-release (强拆) still ends everything, supervisor included.
    reply = api.post(f"/api/v1/calls/{call_id}/release", json={"reason": "priority call"})
    assert reply.status_code == 200, reply.text
    for phone in (caller, alice, sup):
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 30)

    # 5. The recording: on the CDR, with its hash beside it, linked to the incident.
    cdr = await wait_for(lambda: [r for r in sip.rows(
        "SELECT cause, released_by, timeline, report_id FROM call_records WHERE id = ?",
        call_id) if "recording" in r[2]], "the recording on the CDR", timeout=30)
    cause, by, timeline, report_id = cdr[0]
    assert (cause, by) == ("force_released", "sup")
    rec = next(t for t in json.loads(timeline) if t["kind"] == "recording")
    path = Path(rec["path"])
    assert path.is_relative_to(tmp_path / "rec") and rec["duration_s"] > 5
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["sha256"] == digest
    assert Path(f"{path}.sha256").read_text().split()[0] == digest
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    talk = stereo[len(stereo) // 3:]  # past the queueing
    assert_hears(talk[:, 0], (CALLER,), (TAKER,), "recording, caller channel")
    assert_hears(talk[:, 1], (TAKER,), (CALLER,), "recording, call-taker channel")
    incident = sip.rows("SELECT incident_id FROM reports WHERE id = ?", report_id)[0][0]
    links = await wait_for(lambda: sip.rows(
        "SELECT ref, actor, note FROM incident_links WHERE incident_id = ? AND kind = "
        "'recording'", incident), "the incident's recording link")
    assert links[0][0] == "/".join(path.parts[-2:]) and digest in links[0][2]

    # 6. Every force-in step is audited with the supervisor's name.
    audit = sip.rows("SELECT action, actor, details FROM audit_log WHERE action LIKE "
                     "'call.monitor%' ORDER BY id")
    steps = [(a, who) for a, who, _ in audit]
    assert steps[:4] == [("call.monitor_ringing", "sup"), ("call.monitor_joined", "sup"),
                         ("call.monitor_mode", "sup"), ("call.monitor_mode", "sup")]
    assert steps[4] == ("call.monitor_left", "sup")
    assert '"mode": "barge"' in audit[3][2] and '"account": "sup1"' in audit[0][2]


async def test_force_in_errors(tmp_path: Path, started: list[object]) -> None:
    """No such call, an unregistered phone, whisper before a call taker answers."""
    users = {"alice": PASSWORD, "caller1": PASSWORD}
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, accounts=users,
                    registrar='algorithms = ["MD5"]', media=media(tmp_path))
    started.append(sip)
    api = sip.api()
    assert api.post("/api/v1/calls/nope/monitor",
                    json={"mode": "listen", "account": "sup1"}).status_code == 404
    assert api.post("/api/v1/calls/nope/monitor",
                    json={"mode": "listen", "account": "a\r\nb"}).status_code == 422
    caller = Baresip(tmp_path, "caller1", PASSWORD, sip.port, "dispatch.test", freq=CALLER)
    started.append(caller)
    await asyncio.to_thread(caller.connect)
    await wait_for(lambda: sip.rows("SELECT contact FROM sip_bindings"), "caller registered")
    caller.command("dial", f"sip:110@127.0.0.1:{sip.port}")
    queued = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                     if c["state"] == "queued"], "a queued call")
    call_id = queued[0]["call_id"]
    reply = api.post(f"/api/v1/calls/{call_id}/monitor", json={"mode": "whisper",
                                                               "account": "caller1"})
    assert reply.status_code == 409 and "call taker" in reply.text
    reply = api.post(f"/api/v1/calls/{call_id}/monitor", json={"mode": "listen",
                                                               "account": "nobody"})
    assert reply.status_code == 404 and "registered" in reply.text


async def test_dead_media_releases_the_call_with_a_reason(
    tmp_path: Path, started: list[object]
) -> None:
    """SIPp caller and call taker answer but never send RTP: after dead_media_seconds the
    B2BUA sends BYE with a Reason header to both, and audits it."""
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    media=media(tmp_path, dead_s=2))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path, "-trace_msg"))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier, "-trace_msg")
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port)
    messages = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert messages.count('Reason: Q.850;cause=41;text="no RTP for') >= 2, messages[-3000:]
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause, released_by FROM call_records WHERE outcome IS NOT NULL"),
        "a CDR")
    assert row == [("answered", "dead_media", "system")]
    audit = await wait_for(lambda: sip.rows(
        "SELECT actor, details FROM audit_log WHERE action = 'call.dead_media'"),
        "the dead-media audit row")
    assert audit[0][0] == "system"
    assert ":caller" in audit[0][1] or ":alice" in audit[0][1]


async def ssh_command(sip: SipDaemon, key: Path, *words: str) -> tuple[int, str]:
    """Run one console command as ``sup`` with OpenSSH's client; (status, stdout+stderr)."""
    port = next(int(x["port"]) for x in sip.proc.lines if x.get("msg") == "ssh listening")
    code, out = await run_peer(
        need("ssh"), "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        "-o", "IdentitiesOnly=yes", "sup@127.0.0.1", *words, timeout=30)
    return code, out


async def test_console_shows_calls_forces_in_and_releases(
    tmp_path: Path, started: list[object]
) -> None:
    """``show calls``, ``call listen`` then ``call barge`` (a SIPp phone as the supervisor's),
    ``call release`` over the SSH console, all audited with the supervisor's name."""
    carrier = free_port()
    users = {"alice": PASSWORD, "sup1": PASSWORD}
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    accounts=users, media=media(tmp_path), ssh=True)
    started.append(sip)
    sip.api()  # creates the supervisor "sup"
    key = tmp_path / "sup_key"
    code, out = await run_peer(need("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f",
                               str(key))
    assert code == 0, out
    done = sip.cli("user", "key", "sup", f"{key}.pub")
    assert done.returncode == 0, done.stderr
    alice_port, sup_port = free_port(), free_port()
    started.append(SippServer("agent_uas.xml", alice_port, tmp_path))
    started.append(SippServer("agent_uas.xml", sup_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": alice_port,
                                                  "sup1": sup_port}))[0] == 0
    # Call takers' states and the queues, as an Asterisk CLI user would look at them.
    code, out = await ssh_command(sip, key, "agent", "notready", "alice")
    assert code == 0 and out.strip() == "alice: not_ready", out
    code, out = await ssh_command(sip, key, "show", "agents")
    assert code == 0 and re.search(r"alice\s+not_ready\s+\d+\s+police", out), out
    code, out = await ssh_command(sip, key, "agent", "ready", "alice")
    assert code == 0 and out.strip() == "alice: ready", out
    code, out = await ssh_command(sip, key, "agent", "ready", "nobody")
    assert code == 1 and "nobody" in out, out
    code, out = await ssh_command(sip, key, "show", "queues")
    assert code == 0 and re.search(r"police\s+0\s+0\s+0\s+1\s", out), out
    code, out = await ssh_command(sip, key, "show", "trunks")
    assert code == 0 and "carrier" in out, out
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier,
                                        "-trace_msg"))
    api = sip.api()
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "a connected call")
    call_id = live[0]["call_id"]

    code, out = await ssh_command(sip, key, "show", "calls")
    assert code == 0 and call_id in out and "alice" in out and "connected" in out, out
    code, out = await ssh_command(sip, key, "call", "listen", call_id, "sup1")
    assert code == 0 and "ringing sup1" in out, out
    await wait_for(lambda: sip.rows("SELECT 1 FROM audit_log WHERE action = "
                                    "'call.monitor_joined'"), "the supervisor's phone joined")
    code, out = await ssh_command(sip, key, "show", "calls")
    assert "sup:listen" in out, out
    code, out = await ssh_command(sip, key, "call", "barge", call_id, "sup1")
    assert code == 0 and "now in barge mode" in out, out
    code, out = await ssh_command(sip, key, "call", "whisper", "no-such-call", "sup1")
    assert code == 1 and "no live call" in out, out
    code, out = await ssh_command(sip, key, "call", "release", call_id, "priority", "call")
    assert code == 0 and "released: priority call" in out, out

    code, out = await caller
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, alice_port)
    await uas_done(tmp_path, sup_port)  # the supervisor's phone got its BYE too
    messages = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
    assert 'text="force-released by sup: priority call"' in messages
    steps = ("call.monitor_ringing", "call.monitor_joined", "call.monitor_mode",
             "call.force_released", "call.monitor_left")

    def trail() -> list[tuple[str, str, str]]:
        rows = sip.rows(
            "SELECT action, actor, details FROM audit_log WHERE action LIKE 'call.monitor%' OR "
            "action = 'call.force_released' ORDER BY id")
        # The call records are written in batches off the call path: wait for every step.
        return rows if {(a, who) for a, who, _ in rows} >= {(s, "sup") for s in steps} else []

    audit = await wait_for(trail, "every force-in step audited")
    assert '"mode": "barge"' in next(d for a, _, d in audit if a == "call.monitor_mode")


def dtmf_ulaw(path: Path, keys: str) -> None:
    """Raw µ-law: 1 s of silence, then each key as 120 ms of its two tones and 150 ms of
    silence, then 2 s of silence (SIPp's ``rtp_stream`` sends it as 20 ms packets)."""
    from telephony.media.g711 import ulaw_encode

    pairs = {"*": (941.0, 1209.0), "1": (697.0, 1209.0), "2": (697.0, 1336.0),
             "3": (697.0, 1477.0)}
    parts = [np.zeros(8000)]
    for key in keys:
        t = np.arange(960) / 8000
        low, high = pairs[key]
        parts += [5000 * np.sin(2 * np.pi * low * t) + 5000 * np.sin(2 * np.pi * high * t),
                  np.zeros(1200)]
    parts.append(np.zeros(16000))
    pcm = np.concatenate(parts).astype(np.int16)
    path.write_bytes(ulaw_encode(pcm[:len(pcm) // 160 * 160]))


async def test_supervisor_switches_mode_from_the_keypad(
    tmp_path: Path, started: list[object]
) -> None:
    """A SIPp supervisor phone forced in to listen presses *3 (in-band DTMF in its RTP):
    the leg switches to barge, audited as the supervisor via DTMF."""
    carrier = free_port()
    users = {"alice": PASSWORD, "sup1": PASSWORD}
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    accounts=users, media=media(tmp_path))
    started.append(sip)
    dtmf_ulaw(tmp_path / "dtmf.ul", "*3")
    alice_port, sup_port = free_port(), free_port()
    started.append(SippServer("agent_uas.xml", alice_port, tmp_path))
    started.append(SippServer("supervisor_dtmf.xml", sup_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": alice_port,
                                                  "sup1": sup_port}))[0] == 0
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier))
    api = sip.api()
    live = await wait_for(lambda: [c for c in api.get("/api/v1/calls").json()
                                   if c["state"] == "connected"], "a connected call")
    call_id = live[0]["call_id"]
    reply = api.post(f"/api/v1/calls/{call_id}/monitor", json={"mode": "listen",
                                                               "account": "sup1"})
    assert reply.status_code == 202, reply.text
    leg = reply.json()["leg"]
    switched = await wait_for(lambda: sip.rows(
        "SELECT actor, details FROM audit_log WHERE action = 'call.monitor_mode'"),
        "the keypad's mode switch", timeout=20)
    assert switched[0][0] == "sup"
    assert '"mode": "barge"' in switched[0][1] and '"detail": "dtmf"' in switched[0][1]
    assert api.get(f"/api/v1/calls/{call_id}/monitor").json() == [
        {"leg": leg, "account": "sup1", "mode": "barge", "supervisor": "sup",
         "state": "confirmed"}]
    assert api.post(f"/api/v1/calls/{call_id}/release",
                    json={"reason": "done"}).status_code == 200
    code, out = await caller
    assert code == 0, out + errors(tmp_path)


async def test_hold_re_invite_is_answered_by_our_media(
    tmp_path: Path, started: list[object]
) -> None:
    """With media anchored, the caller's hold re-INVITE (a=sendonly) is answered by the
    engine (a=recvonly, SIPp checks it) and never reaches the call taker's phone, whose
    scenario would fail on an unexpected INVITE."""
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    media=media(tmp_path))
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    code, out = await call(sip, tmp_path, "caller_reinvite.xml", "110", carrier, "-d", "300")
    assert code == 0, out + errors(tmp_path)
    await uas_done(tmp_path, agent_port)
    row = await wait_for(lambda: sip.rows(
        "SELECT outcome, cause FROM call_records WHERE outcome IS NOT NULL"), "a CDR")
    assert row == [("answered", "caller_hangup")]
