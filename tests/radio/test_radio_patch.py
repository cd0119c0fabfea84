"""Talkgroups patched into calls, conferences and each other, in a real in-process daemon:
real RTP from a phone peer through the media engine's clock, RFC 4733 keys for PTT, the
HTTP API, the SSH command table, a plan action, and the audit trail.

The sound cards are frame-fed test cards (this machine has none, see soundcardpeers)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from soundcardpeers import FrameAudio, Lines, pcm_of, tone_frames
from sqlalchemy import select

from dispatch import radio_service
from dispatch.auth import Principal, Role
from dispatch.config import parse_settings
from dispatch.daemon import Daemon
from dispatch.models import AuditEntry
from dispatch.plans import ProposedActionDecided
from dispatch.radio_patch import PatchService
from telephony.media.dtmf import TelephoneEvent, build_telephone_event
from telephony.media.pttkeys import PttKeys, parse_info
from telephony.media.rtp import RtpPacket

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "media"))
from enginepeers import Peer, assert_hears, tone, until  # noqa: E402

_ports = [46000]


class Rig:
    """A daemon with two sound-card radios (fire on sc1, police on sc2) and media on."""

    def __init__(self, daemon: Daemon, cards: dict[str, tuple[FrameAudio, Lines]]) -> None:
        self.daemon = daemon
        self.cards = cards
        self.url = f"http://127.0.0.1:{daemon.http.bound[1]}"
        self.seen: list[Any] = []
        daemon.hub.listen(lambda env: self.seen.append(env.event))
        assert isinstance(daemon.patches, PatchService)
        self.patches: PatchService = daemon.patches

    async def headers(self, client: httpx.AsyncClient, name: str, role: Role) -> dict[str, str]:
        await self.daemon.users.add_user(name, role, f"{name}-password", actor="test")
        r = await client.post("/api/v1/auth/login",
                              json={"username": name, "password": f"{name}-password"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    async def phone(self, leg: str, room: str, ssrc: int) -> Peer:
        """A phone leg answered and joined to ``room``, as the B2BUA does for a call."""
        peer = Peer(ssrc)
        engine = self.daemon.media.engine  # type: ignore[union-attr]
        peer.use_answer(await engine.answer(leg, peer.offer()))
        await engine.join(room, leg)
        return peer

    async def audited(self, action: str) -> list[AuditEntry]:
        for _ in range(500):
            async with self.daemon.db.session() as s:
                rows = (await s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                        .order_by(AuditEntry.id))).all()
            if rows:
                return list(rows)
            await asyncio.sleep(0.01)
        raise AssertionError(f"no audit row {action}")


@pytest_asyncio.fixture(loop_scope="session")
async def rig(tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Rig]:
    cards: dict[str, tuple[FrameAudio, Lines]] = {}

    def audio(gw: Any) -> FrameAudio:
        line = Lines()
        card = FrameAudio(line)
        cards[gw.name] = (card, line)
        return card

    def lines_of(gw: Any) -> Lines:
        return cards[gw.name][1]

    monkeypatch.setattr(radio_service, "SOUND_CARDS", [audio, lines_of])
    _ports[0] += 200
    sc = {"cos_line": "cts", "audio_rate": 8000}
    settings = parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'd.db'}", "auto_migrate": True},
        "http": {"port": 0}, "ssh": {"port": 0},
        "media": {"enabled": True, "port_min": _ports[0], "port_max": _ports[0] + 199,
                  "recordings_dir": str(tmp_path / "rec")},
        "radio": {
            "gateways": [
                {"name": "sc1", "kind": "soundcard", "device": "/dev/ttyUSB0",
                 "hang_time_s": 0.0, "soundcard": sc},
                {"name": "sc2", "kind": "soundcard", "device": "/dev/ttyUSB1",
                 "hang_time_s": 0.0, "soundcard": sc},
                {"name": "tetra1", "kind": "tetra", "device": str(tmp_path / "ttyNONE"),
                 "retry_s": 60.0},  # absent: an alarm, and a group with no audio path
            ],
            "talkgroups": [
                {"name": "fire", "gssi": "1", "gateway": "sc1", "agency": "119"},
                {"name": "police", "gssi": "2", "gateway": "sc2", "agency": "110"},
                {"name": "command", "gssi": "9001", "gateway": "tetra1"},
            ],
        },
    }, "test")
    daemon = Daemon(settings, reactor=reactor)
    await daemon.start()
    try:
        yield Rig(daemon, cards)
    finally:
        await daemon.stop()


_T0: dict[int, float] = {}


async def _pace(peer: Peer) -> None:
    """Wait until packet ``peer.seq`` is due on the peer's own 20 ms timeline (RTP time)."""
    loop = asyncio.get_running_loop()
    t0 = _T0.setdefault(peer.ssrc, loop.time() - 0.02 * peer.seq)
    await asyncio.sleep(max(0.0, t0 + 0.02 * peer.seq - loop.time()))


async def _send_digit(peer: Peer, event: int) -> None:
    ts = (160 * peer.seq) & 0xFFFFFFFF  # the current timestamp, as a phone sends
    for n, end in ((1, False), (2, False), (3, True), (3, True), (3, True)):
        payload = build_telephone_event(TelephoneEvent(event, end, 10, 160 * n))
        await _pace(peer)
        peer.send(RtpPacket(101, peer.seq & 0xFFFF, ts, peer.ssrc, payload, marker=n == 1))


async def _speak(peer: Peer, freq: float, frames: int) -> None:
    for _ in range(frames):
        await _pace(peer)
        peer.send_audio(tone(freq, peer.seq))


async def test_a_talkgroup_in_a_call_keyed_by_dtmf_both_ways(rig: Rig) -> None:
    fire_audio, fire_lines = rig.cards["sc1"]
    phone = await rig.phone("call-1-a", "call-1", 0x51)
    async with httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp", Role.DISPATCHER)
        r = await client.post("/api/v1/talkgroups/fire/patch", json={"call": "nope"},
                              headers=disp)
        assert r.status_code == 404, r.text
        r = await client.post("/api/v1/talkgroups/fire/patch", json={}, headers=disp)
        assert r.status_code == 422
        r = await client.post("/api/v1/talkgroups/fire/patch", json={"call": "call-1"},
                              headers=disp)
        assert r.status_code == 201, r.text
        assert r.json() == {"talkgroup": "fire", "room": "call-1", "target": "call:call-1"}
        r = await client.post("/api/v1/talkgroups/fire/patch", json={"room": "x"},
                              headers=disp)
        assert r.status_code == 409 and "already patched" in r.text
        assert (await client.get("/api/v1/patches", headers=disp)).json()["fire"]["room"] \
            == "call-1"

        # The phone speaks before keying: nothing may reach the air.
        await _speak(phone, 1000.0, 20)
        assert fire_audio.played == [] and fire_lines.ptt is False
        await _send_digit(phone, 10)  # *
        await _send_digit(phone, 7)
        await until(lambda: fire_lines.ptt, "the radio keyed by *7")
        await _speak(phone, 1000.0, 60)
        await until(lambda: len(fire_audio.played) >= 50, "audio on air")
        await _send_digit(phone, 10)
        await _send_digit(phone, 8)
        await until(lambda: not fire_lines.ptt, "the radio unkeyed by *8")
        assert fire_audio.played_unkeyed == 0
        assert_hears(pcm_of(fire_audio.played[10:-10]), [1000.0], [600.0])
        floor = [e for e in rig.seen if type(e).__name__ == "RadioFloorChanged"]
        assert [(e.event, e.who) for e in floor][:2] == [("granted", "leg:call-1-a"),
                                                        ("released", "leg:call-1-a")]

        # The group's received audio reaches the call while its squelch is open.
        phone.drain()
        skip = len(phone.received)
        fire_lines.squelch_open = True
        for frame in tone_frames(600.0, 60):
            await _pace(phone)
            fire_audio.capture([frame])
            phone.send_audio(tone(1000.0, phone.seq))
        fire_lines.squelch_open = False
        fire_audio.capture(tone_frames(600.0, 1))
        await asyncio.sleep(0.1)
        heard = phone.heard(skip=skip + 10)
        assert_hears(heard, [600.0], [1000.0])

        r = await client.delete("/api/v1/talkgroups/fire/patch", headers=disp)
        assert r.status_code == 200, r.text
        r = await client.delete("/api/v1/talkgroups/fire/patch", headers=disp)
        assert r.status_code == 404
    assert rig.daemon.media.engine.rooms() == {"call-1": ("call-1-a",)}  # type: ignore[union-attr]
    states = [(e.talkgroup, e.state) for e in rig.seen if type(e).__name__ == "RadioPatchChanged"]
    assert states == [("fire", "patched"), ("fire", "unpatched")]
    rows = await rig.audited("radio.unpatched")
    assert rows[0].actor == "disp" and rows[0].details["target"] == "call:call-1"
    assert (await rig.audited("radio.patched"))[0].subject == "talkgroup:fire"
    phone.close()


async def test_group_to_group_patch_couples_floors_without_echo(rig: Rig) -> None:
    fire_audio, fire_lines = rig.cards["sc1"]
    police_audio, police_lines = rig.cards["sc2"]
    admin = Principal(1, "sup", Role.SUPERVISOR)
    out = await rig.daemon.commands.run("patch fire group police", admin)
    assert "fire patched into group:police (room patch:police)" in out
    assert set(rig.patches.describe()) == {"fire", "police"}

    fire_lines.squelch_open = True  # a fire handset talks: police is keyed and hears it
    for frame in tone_frames(700.0, 60):
        fire_audio.capture([frame])
        police_audio.capture(tone_frames(1300.0, 1))  # police's own side while keyed
        await asyncio.sleep(0.02)
    assert police_lines.ptt is True and fire_lines.ptt is False
    await until(lambda: len(police_audio.played) >= 40, "fire's audio on police")
    fire_lines.squelch_open = False
    fire_audio.capture(tone_frames(700.0, 1))
    await until(lambda: not police_lines.ptt, "police unkeyed when the fire over ends")
    assert police_audio.played_unkeyed == 0
    assert_hears(pcm_of(police_audio.played[5:-5]), [700.0], [1300.0])
    assert fire_audio.played == []  # nothing came back to fire: no echo loop
    floor = [(e.talkgroup, e.event, e.who) for e in rig.seen
             if type(e).__name__ == "RadioFloorChanged"]
    assert floor == [("police", "granted", "patch:fire"), ("police", "released", "patch:fire")]

    out = await rig.daemon.commands.run("unpatch police", admin)
    assert "police unpatched" in out
    assert rig.patches.describe() == {}  # the group patch ended with its second group
    with pytest.raises(Exception, match="usage"):
        await rig.daemon.commands.run("patch fire sideways x", admin)


async def test_a_confirmed_plan_action_patches_into_the_incident_conference(rig: Rig) -> None:
    rig.daemon.hub.publish(ProposedActionDecided(
        7, "INC-1", "fire-II", "talkgroups", "confirmed",
        {"talkgroups": ["fire", "ghost"]}, "disp"))
    await until(lambda: "fire" in rig.patches.describe(), "the plan's patch")
    assert rig.patches.describe()["fire"]["room"] == "incident-INC-1"
    failed = await rig.audited("radio.patch_failed")
    assert failed[0].subject == "talkgroup:ghost" and "no talkgroup" in failed[0].details["why"]
    rig.daemon.hub.publish(ProposedActionDecided(
        8, "INC-2", "p", "talkgroups", "rejected", {"talkgroups": ["police"]}, "disp"))
    await asyncio.sleep(0.05)
    assert "police" not in rig.patches.describe()


async def test_sip_info_keys_the_rooms_talkgroups(rig: Rig) -> None:
    _, fire_lines = rig.cards["sc1"]
    phone = await rig.phone("call-2-a", "call-2", 0x52)
    assert rig.patches.on_info("call-2-a", "text/plain", b"PTT: on") is False  # nothing patched
    await rig.patches.patch("fire", "disp", call="call-2")
    assert rig.patches.on_info("call-2-a", "application/x-ptt", b"PTT: on") is True
    assert fire_lines.ptt is True
    assert rig.patches.on_info("call-2-a", "text/plain", b"PTT: off") is True
    assert fire_lines.ptt is False
    for digit in "*7":
        assert rig.patches.on_info("call-2-a", "application/dtmf-relay",
                                   f"Signal={digit}\r\nDuration=160\r\n".encode())
    assert fire_lines.ptt is True
    assert rig.patches.on_info("call-2-a", "application/sdp", b"v=0") is False
    await rig.patches.unpatch("fire", "disp")
    assert fire_lines.ptt is False  # unpatching lets go of every floor it held
    phone.close()


def test_ptt_keys_and_info_bodies() -> None:
    keys = PttKeys(timeout_s=3.0)
    assert [keys.feed(d, t) for d, t in (("*", 0), ("7", 1), ("*", 2), ("8", 6),
                                         ("*", 7), ("8", 8), ("7", 9), ("*", 10), ("9", 11))] \
        == [None, "key", None, None, None, "unkey", None, None, None]
    table = [
        ("application/dtmf-relay", b"Signal=7\r\nDuration=160", "7"),
        ("application/dtmf-relay; charset=x", b"signal= *\r\n", "*"),
        ("application/dtmf-relay", b"Signal=77", None),
        ("application/dtmf-relay", b"Duration=160", None),
        ("application/dtmf", b"#", "#"),
        ("application/x-ptt", b"PTT: on", "key"),
        ("text/plain", b"ptt: OFF\r\n", "unkey"),
        ("text/plain", b"hello", None),
        ("application/sdp", b"PTT: on", None),
        ("text/plain", b"PTT: on" + b" " * 2000, None),
    ]
    for ctype, body, expected in table:
        assert parse_info(ctype, body) == expected, (ctype, body)


async def test_patch_refusals_name_the_reason(rig: Rig) -> None:
    async with httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp2", Role.DISPATCHER)
        taker = await rig.headers(client, "taker2", Role.CALL_TAKER)
        cases = [
            ("command", {"room": "r"}, 409, "no audio path"),
            ("ghost", {"room": "r"}, 404, "no talkgroup"),
            ("fire", {"talkgroup": "fire"}, 422, "to itself"),
            ("fire", {"talkgroup": "ghost"}, 404, "no talkgroup"),
            ("fire", {"room": "a", "call": "b"}, 422, "exactly one"),
            ("fire", {"room": "bad\nroom"}, 422, ""),
            ("fire", {"room": "r", "extra": 1}, 422, ""),
        ]
        for name, body, status, why in cases:
            r = await client.post(f"/api/v1/talkgroups/{name}/patch", json=body, headers=disp)
            assert r.status_code == status, (name, body, r.text)
            assert why in r.text
        r = await client.post("/api/v1/talkgroups/fire/patch", json={"room": "r"},
                              headers=taker)
        assert r.status_code == 403  # call takers do not patch radios
        assert rig.patches.describe() == {}
        assert rig.daemon.media.engine.rooms() == {}  # type: ignore[union-attr]


async def test_a_dispatcher_patches_two_talkgroups_from_the_web_console(rig: Rig) -> None:
    """The talkgroup panel offers only groups with an audio path; patching fire into police
    shows on both rows and in the API, and unpatching clears it."""
    from test_web_console import ARTEFACTS, browser_page, log_in

    await rig.daemon.users.add_user("disp", Role.DISPATCHER, "disp-password", actor="test")
    async with browser_page() as page:
        await log_in(page, rig.url, "disp", "disp-password")
        await page.wait_for_selector("#patch-form:not([hidden])")
        offered = await page.eval_on_selector_all("#patch-group option", "os => os.map(o => o.value)")
        assert offered == ["fire", "police"], "command (TETRA, no audio path) is not offered"
        await page.select_option("#patch-group", "fire")
        await page.select_option("#patch-target", "talkgroup:police")
        await page.click("#patch")
        await page.wait_for_selector("#talkgroups tr[data-talkgroup=fire] td.patch:has-text('police')")
        await page.wait_for_selector("#talkgroups tr[data-talkgroup=police] td.patch:has-text('fire')")
        assert rig.patches.describe()["fire"]["by"] == "disp"
        ARTEFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTEFACTS / "console-patch.png"), full_page=True)
        await page.click("#talkgroups tr[data-talkgroup=fire] button.unpatch")
        await page.wait_for_selector("#talkgroups tr[data-talkgroup=fire] button.unpatch",
                                     state="detached")
        assert rig.patches.describe() == {}
        rows = await rig.audited("radio.unpatched")
        assert sorted((r.actor, r.subject) for r in rows) == [
            ("disp", "talkgroup:fire"), ("disp", "talkgroup:police")], "both directions"
        assert page.errors == []
