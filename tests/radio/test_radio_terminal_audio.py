"""TETRA terminals' and satphones' audio in conferences and patches, in a real daemon.

An in-process daemon runs SIP, media and four gateways: a TETRA terminal and two
satphones emulated over real ptys (``hardware.emulators``), the terminal and one
satphone with a frame-fed sound card (this machine has none, see soundcardpeers),
the other satphone reaching its dock's SIP side (SIPp, echoing RTP); plus one
sound-card radio.  Every frame played into a terminal's card is kept with the
*emulator's* own state at that moment (the TETRA terminal transmitting, the
satphone in an active call), so "never audio to an unkeyed radio" is checked
against the device, not against our own bookkeeping.  What a phone in the room
hears and what reaches each card is judged by FFT (tones present / absent).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from radioharness import Plugged
from soundcardpeers import FrameAudio, Lines, pcm_of, tone_frames

from dispatch import radio_audio, radio_service
from dispatch.auth import Principal, Role
from dispatch.config import load_settings
from dispatch.daemon import Daemon
from hardware.emulators import SatellitePhoneEmulator, TetraRadioEmulator
from radio.terminal_audio import SatphoneAudio, TetraAudio
from radio.tetra import (
    CallReleased,
    IncomingGroupCall,
    LinkDown,
    RadioKeyed,
    RadioUnkeyed,
    TalkerChanged,
)
from telephony.media.dtmf import TelephoneEvent, build_telephone_event
from telephony.media.rtp import RtpPacket

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "media"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "b2bua"))
from b2bua_helpers import BASE_TELEPHONY, DOMAIN, env, free_port, need  # noqa: E402
from enginepeers import Peer, assert_hears, tone, until  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIPP = Path(__file__).resolve().parent / "sipp"
WAIT = 10.0


class DeviceState:
    """A stand-in for PTT lines whose state is the emulated device's own."""

    def __init__(self, on_air: Callable[[], bool]) -> None:
        self.on_air = on_air

    @property
    def ptt(self) -> bool:
        """True while the device transmits (TETRA) or has an active call (satphone)."""
        return self.on_air()


def tetra_on_air(emulator: TetraRadioEmulator) -> bool:
    """The terminal transmits: one of its calls has us as the talker."""
    return any(call.talker == "self" for call in emulator.calls.values())


def sat_on_air(emulator: SatellitePhoneEmulator) -> bool:
    """The satphone has an active voice call (27.007 +CLCC stat 0)."""
    return emulator.call is not None and emulator.call.state == 0


class Rig:
    """The daemon, its emulators, cards, and everything published."""

    def __init__(self, daemon: Daemon, tetra: Plugged, sat: Plugged, dock_sat: Plugged,
                 cards: dict[str, FrameAudio], police: tuple[FrameAudio, Lines],
                 dock_port: int) -> None:
        self.daemon, self.tetra, self.sat, self.dock_sat = daemon, tetra, sat, dock_sat
        self.cards, self.police, self.dock_port = cards, police, dock_port
        self.url = f"http://127.0.0.1:{daemon.http.bound[1]}"
        self.engine: Any = daemon.media.engine  # type: ignore[union-attr]
        self.seen: list[Any] = []
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        daemon.hub.listen(self._seen)

    def _seen(self, env_: Any) -> None:
        self.seen.append(env_.event)
        self.events.put_nowait(env_.event)

    async def expect(self, kind: str, where: Callable[[Any], bool] = lambda e: True) -> Any:
        """The next published event of class ``kind`` matching ``where``."""
        while True:
            event = await asyncio.wait_for(self.events.get(), WAIT)
            if type(event).__name__ == kind and where(event):
                return event

    def drain(self) -> None:
        """Forget the events seen so far (for :meth:`expect`)."""
        while not self.events.empty():
            self.events.get_nowait()

    async def headers(self, client: httpx.AsyncClient, name: str) -> dict[str, str]:
        """A dispatcher's session."""
        await self.daemon.users.add_user(name, Role.DISPATCHER, f"{name}-password",
                                         actor="test")
        r = await client.post("/api/v1/auth/login",
                              json={"username": name, "password": f"{name}-password"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    async def phone(self, leg: str, room: str, ssrc: int) -> Peer:
        """A phone leg answered and joined to ``room``, as the B2BUA does for a call."""
        peer = Peer(ssrc)
        peer.use_answer(await self.engine.answer(leg, peer.offer()))
        await self.engine.join(room, leg)
        return peer


@pytest_asyncio.fixture(loop_scope="session")
async def rig(tmp_path: Path, reactor: Any, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Rig]:
    tetra = Plugged(TetraRadioEmulator(), tmp_path / "ttyTETRA0")
    sat = Plugged(SatellitePhoneEmulator(), tmp_path / "ttySAT0")
    dock_sat = Plugged(SatellitePhoneEmulator(), tmp_path / "ttySAT1")
    for plugged in (tetra, sat, dock_sat):
        plugged.plug()
    cards: dict[str, FrameAudio] = {}
    on_air = {"tetra1": lambda: tetra_on_air(tetra.emulator),  # type: ignore[arg-type]
              "sat1": lambda: sat_on_air(sat.emulator)}  # type: ignore[arg-type]

    def terminal_card(gw: Any) -> FrameAudio:
        card = cards[gw.name] = FrameAudio(DeviceState(on_air[gw.name]))  # type: ignore[arg-type]
        return card

    police_lines = Lines()
    police = (FrameAudio(police_lines), police_lines)
    monkeypatch.setattr(radio_audio, "AUDIO_CARDS", [terminal_card])
    monkeypatch.setattr(radio_service, "SOUND_CARDS", [lambda gw: police[0],
                                                       lambda gw: police_lines])
    for key, value in env().items():
        if key != "PYTHONPATH":
            monkeypatch.setenv(key, value)
    dock_port = free_port()
    media_port = 34000 + 2 * (free_port() % 1500)
    config = tmp_path / "dispatchd.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "var"}"\n[http]\nport = 0\n[ssh]\nenabled = false\n'
        f'[sip]\nenabled = true\ndomain = "{DOMAIN}"\n'
        'listen = [{transport = "udp", host = "127.0.0.1", port = 0}]\n'
        f'{BASE_TELEPHONY}\n'
        f'[media]\nenabled = true\nport_min = {media_port}\nport_max = {media_port + 99}\n'
        f'recordings_dir = "{tmp_path / "rec"}"\njoin_tone = ""\nleave_tone = ""\n'
        f'[[radio.gateways]]\nname = "tetra1"\nkind = "tetra"\ndevice = "{tetra.link}"\n'
        'retry_s = 0.05\nhang_time_s = 0.0\ncommand_timeout_s = 2.0\n'
        '[radio.gateways.audio]\naudio_rate = 8000\n'
        f'[[radio.gateways]]\nname = "sat1"\nkind = "satphone"\ndevice = "{sat.link}"\n'
        'retry_s = 0.05\npoll_s = 3600.0\n[radio.gateways.audio]\naudio_rate = 8000\n'
        f'[[radio.gateways]]\nname = "sat2"\nkind = "satphone"\ndevice = "{dock_sat.link}"\n'
        f'retry_s = 0.05\npoll_s = 3600.0\nsip_uri = "sip:{{number}}@127.0.0.1:{dock_port}"\n'
        '[[radio.gateways]]\nname = "sc1"\nkind = "soundcard"\ndevice = "/dev/ttyUSB0"\n'
        'hang_time_s = 0.0\n[radio.gateways.soundcard]\naudio_rate = 8000\n'
        '[[radio.talkgroups]]\nname = "fire"\ngssi = "9001"\ngateway = "tetra1"\n'
        '[[radio.talkgroups]]\nname = "rescue"\ngssi = "9002"\ngateway = "tetra1"\n'
        '[[radio.talkgroups]]\nname = "police"\ngssi = "2"\ngateway = "sc1"\n')
    daemon = Daemon(load_settings(config), reactor=reactor)
    await daemon.start()
    try:
        radio = daemon.radio
        assert radio is not None
        await until(lambda: all(radio.state[g] == "up" for g in radio.kinds), "gateways up")
        yield Rig(daemon, tetra, sat, dock_sat, cards, police, dock_port)
    finally:
        await daemon.stop()
        for plugged in (tetra, sat, dock_sat):
            plugged.emulator.close()


_T0: dict[int, float] = {}


async def _pace(peer: Peer) -> None:
    """Wait until packet ``peer.seq`` is due on the peer's own 20 ms timeline."""
    loop = asyncio.get_running_loop()
    t0 = _T0.setdefault(peer.ssrc, loop.time() - 0.02 * peer.seq)
    await asyncio.sleep(max(0.0, t0 + 0.02 * peer.seq - loop.time()))


async def _digit(peer: Peer, event: int) -> None:
    ts = (160 * peer.seq) & 0xFFFFFFFF
    for n, end in ((1, False), (2, False), (3, True), (3, True), (3, True)):
        await _pace(peer)
        peer.send(RtpPacket(101, peer.seq & 0xFFFF, ts, peer.ssrc,
                            build_telephone_event(TelephoneEvent(event, end, 10, 160 * n)),
                            marker=n == 1))


async def _talk(peer: Peer, freq: float, frames: int, card: FrameAudio | None = None,
                card_freq: float = 0.0) -> None:
    """The phone speaks ``freq``; meanwhile the card (if any) captures ``card_freq``."""
    captured = tone_frames(card_freq, frames) if card is not None else []
    for i in range(frames):
        await _pace(peer)
        peer.send_audio(tone(freq, peer.seq))
        if card is not None:
            card.capture([captured[i]])


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


# --- the gates, on a stepped sequence of gateway reports -----------------------------------


def test_tetra_gates_follow_the_terminals_reports() -> None:
    """Receive only while another member talks on the held group; transmit only between
    the terminal's grant and the end of it, and only while the floor core still grants."""
    card = FrameAudio(Lines())
    granted = {"9001"}
    faults: list[str] = []
    terminal = TetraAudio("t", card, lambda g: g in granted, on_fault=faults.append)
    assert terminal._try_open()
    heard: list[bytes] = []
    leg = terminal.leg("9001")
    leg.attach(heard.append)
    with pytest.raises(RuntimeError, match="one group call at a time"):
        terminal.leg("9002").attach(heard.append)
    frame = tone_frames(500.0, 1)[0]
    steps: list[tuple[object | None, bool, bool]] = [
        # (report, a captured frame is heard, a transmitted frame is played)
        (None, False, False),
        (TalkerChanged("t", "9002", 7, "2001"), False, False),  # another group: not ours
        (CallReleased("t", "9002", 7, 1), False, False),
        (TalkerChanged("t", "9001", 8, "2001"), True, False),   # +CTXG to 2001 on ours
        (TalkerChanged("t", "9001", 8, None), False, False),    # +CDTXC
        (IncomingGroupCall("t", "9001", 8, "2005"), True, False),  # +CTICN: caller talks
        (CallReleased("t", "9001", 8, 1), False, False),        # +CTCR
        (RadioKeyed("t", "9001", 8), False, True),              # +CTXG granted to us
        (TalkerChanged("t", "9001", 8, "self"), False, True),
        (RadioUnkeyed("t", "9001", 8), False, False),           # before AT+CUTXC
        (RadioKeyed("t", "9001", 8), False, True),
        (TalkerChanged("t", "9001", 8, "2002"), True, False),   # pre-empted on air
        (RadioKeyed("t", "9001", 8), False, True),
        (CallReleased("t", None, 8, 1), False, False),          # +CTCR of our call
        (RadioKeyed("t", "9001", 9), False, True),
        (LinkDown("t", "port closed"), False, False),
    ]
    for report, hears, plays in steps:
        if report is not None:
            terminal.on_event(report)
        before_heard, before_played = len(heard), len(card.played)
        card.capture([frame])
        leg.transmit(frame)
        assert (len(heard) > before_heard, len(card.played) > before_played) == \
            (hears, plays), report
    terminal.on_event(RadioKeyed("t", "9001", 9))
    granted.clear()  # the core revoked: the gate shuts before the Unkey reaches the radio
    leg.transmit(frame)
    assert len(card.played) == 5 and faults == []
    leg.detach()
    terminal.leg("9002").attach(heard.append)  # the card is free for another group now


# --- TETRA ---------------------------------------------------------------------------------


async def test_tetra_group_audio_reaches_a_room_and_a_dispatcher_keys_it(rig: Rig) -> None:
    card = rig.cards["tetra1"]
    radio = rig.tetra.emulator
    assert isinstance(radio, TetraRadioEmulator)
    phone = await rig.phone("ops-a", "ops", 0x61)
    async with httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp")
        r = await client.post("/api/v1/talkgroups/fire/patch", json={"room": "ops"},
                              headers=disp)
        assert r.status_code == 201, r.text
        r = await client.post("/api/v1/talkgroups/rescue/patch", json={"room": "other"},
                              headers=disp)
        assert r.status_code == 409 and "one group call at a time" in r.text
        assert "'fire'" in r.text
        r = await client.post("/api/v1/talkgroups/rescue/patch", json={"talkgroup": "police"},
                              headers=disp)
        assert r.status_code == 409  # rescue shares fire's terminal, whoever is patched
        state = (await client.get("/api/v1/radio/talkgroups/fire", headers=disp)).json()
        assert state["audio"] is True

    # Nothing on air: what the card hears is not passed on.
    await _talk(phone, 1000.0, 10, card, 600.0)
    assert rig.daemon.radio.terminal_audio.tetra["tetra1"].counters["rx"] == 0  # type: ignore[union-attr]

    # A handset opens a group call on fire (+CTICN, +CTXG to 2001): the room hears it.
    rig.drain()
    cc = radio.inject_group_call("9001", "2001")
    await rig.expect("RadioTalker", lambda e: e.talkgroup == "fire" and e.talker == "2001")
    phone.drain()
    skip = len(phone.received)
    await _talk(phone, 1000.0, 60, card, 600.0)
    await asyncio.sleep(0.1)
    assert_hears(phone.heard(skip=skip + 10), [600.0], [1000.0])
    assert card.played == []  # the phone spoke, but nobody keyed the terminal
    radio.inject_talk_end(cc)  # +CDTXC: the over ends, the call stays up
    await rig.expect("RadioTalker", lambda e: e.talkgroup == "fire" and e.talker is None)
    rx = rig.daemon.radio.terminal_audio.tetra["tetra1"].counters["rx"]  # type: ignore[union-attr]
    await _talk(phone, 1000.0, 10, card, 600.0)
    assert rig.daemon.radio.terminal_audio.tetra["tetra1"].counters["rx"] == rx  # type: ignore[union-attr]

    # The phone keys with *7: AT+CTXD on the call; its voice is played only while on air.
    rig.tetra.drain()
    await _digit(phone, 10)
    await _digit(phone, 7)
    await rig.tetra.command(f"AT+CTXD={cc},0")
    await rig.expect("RadioKeyChanged", lambda e: e.talkgroup == "fire" and e.keyed)
    await _talk(phone, 1000.0, 60, card, 600.0)
    await until(lambda: len(card.played) >= 40, "the dispatcher's voice on air")
    await _digit(phone, 10)
    await _digit(phone, 8)
    await rig.tetra.command(f"AT+CUTXC={cc}")
    await _talk(phone, 1000.0, 10)
    assert not tetra_on_air(radio)
    played = len(card.played)
    assert card.played_unkeyed == 0, "a frame reached the terminal while it was not on air"
    assert_hears(pcm_of(card.played[5:-5]), [1000.0], [600.0])

    # Keyed again, then the USB adapter is pulled mid-over: nothing more is played, and the
    # first thing written when it is back is the release of that transmission.
    await _digit(phone, 10)
    await _digit(phone, 7)
    await until(lambda: len(card.played) > played + 20, "on air again")
    rig.drain()
    radio.close()
    await rig.expect("RadioGatewayChanged", lambda e: e.gateway == "tetra1" and e.state == "lost")
    stopped = len(card.played)
    await _talk(phone, 1000.0, 20, card, 600.0)
    assert len(card.played) == stopped, "audio played to a terminal whose link is lost"
    assert card.played_unkeyed == 0
    before = len(radio.commands)
    rig.tetra.plug()
    await rig.expect("RadioGatewayChanged", lambda e: e.gateway == "tetra1" and e.state == "up")
    assert radio.commands[before] == f"AT+CUTXC={cc}", radio.commands[before:]
    assert not tetra_on_air(radio), "the terminal was left transmitting"
    await _talk(phone, 1000.0, 10)
    assert len(card.played) == stopped
    await rig.daemon.patches.unpatch("fire", "disp")
    phone.close()


async def test_a_tetra_group_patched_with_a_sound_card_radio_both_ways(rig: Rig) -> None:
    card = rig.cards["tetra1"]
    radio = rig.tetra.emulator
    assert isinstance(radio, TetraRadioEmulator)
    police_card, police_lines = rig.police
    out = await rig.daemon.patches.patch("police", "sup", group="fire")
    assert out["room"] == "patch:fire"
    start = len(card.played)

    # The police radio hears a 700 Hz over: fire is keyed (a new group call: ATD9001) and
    # carries it; the terminal's card gets it only while the terminal transmits.
    rig.drain()
    police_lines.squelch_open = True
    for frame in tone_frames(700.0, 60):
        police_card.capture([frame])
        card.capture(tone_frames(1300.0, 1))  # what the terminal's card picks up meanwhile
        await asyncio.sleep(0.02)
    await until(lambda: len(card.played) >= start + 30, "police's over on fire")
    assert tetra_on_air(radio)
    police_lines.squelch_open = False
    police_card.capture(tone_frames(700.0, 1))
    await rig.expect("RadioKeyChanged", lambda e: e.talkgroup == "fire" and not e.keyed)
    await until(lambda: not tetra_on_air(radio), "fire released when police's over ends")
    assert card.played_unkeyed == 0
    assert_hears(pcm_of(card.played[start + 5:-5]), [700.0], [1300.0])
    assert police_lines.ptt is False and police_card.played == []  # no echo back to police

    # A fire handset talks (900 Hz): police is keyed and carries it.
    cc = next(iter(radio.calls))
    radio.inject_talk(cc, "2003")
    await rig.expect("RadioTalker", lambda e: e.talkgroup == "fire" and e.talker == "2003")
    for frame in tone_frames(900.0, 60):
        card.capture([frame])
        await asyncio.sleep(0.02)
    await until(lambda: len(police_card.played) >= 30, "fire's over on police")
    radio.inject_talk_end(cc)
    await until(lambda: not police_lines.ptt, "police released when fire's over ends")
    assert police_card.played_unkeyed == 0
    assert_hears(pcm_of(police_card.played[5:-5]), [900.0], [700.0])
    await rig.daemon.patches.unpatch("police", "sup")
    assert rig.daemon.patches.describe() == {}


# --- satphones -----------------------------------------------------------------------------


async def test_a_satphone_on_a_sound_card_in_a_conference(rig: Rig) -> None:
    card = rig.cards["sat1"]
    phone_dev = rig.sat.emulator
    assert isinstance(phone_dev, SatellitePhoneEmulator)
    async with httpx.AsyncClient(base_url=rig.url) as client:
        disp = await rig.headers(client, "disp3")
        r = await client.post("/api/v1/conferences", json={
            "name": "bad", "participants": ["satphone:sat1/12ab"]}, headers=disp)
        assert r.status_code == 422 and (await client.get(
            "/api/v1/conferences", headers=disp)).json() == []
        # A conference opened with a satphone participant, then ended: the phone hangs up.
        r = await client.post("/api/v1/conferences", json={
            "name": "brief", "participants": ["satphone:sat1/+8613900000010"]}, headers=disp)
        assert r.status_code == 201 and r.json()["dialled"] == ["satphone:sat1"], r.text
        await rig.expect("ConferenceChanged", lambda e: e.step == "joined")
        assert sat_on_air(phone_dev) and phone_dev.call.number == "+8613900000010"
        r = await client.delete(f"/api/v1/conferences/{r.json()['id']}", headers=disp)
        assert r.status_code == 200
        await until(lambda: phone_dev.call is None, "ATH when the conference ended")
        await until(lambda: not rig.daemon.conferences.satphones.legs, "leg gone")  # type: ignore[union-attr]
        r = await client.post("/api/v1/conferences", json={"name": "flood"}, headers=disp)
        assert r.status_code == 201, r.text
        conf = r.json()["id"]
        phone = await rig.phone("flood-a", conf, 0x62)
        for target, status, why in (
                ("satphone:ghost/+8613900000001", 404, "no satphone gateway"),
                ("satphone:sat1/12ab", 422, "satphone:<gateway>/<number>"),
                ("satphone:sat1/+1\r\n2", 422, "")):
            r = await client.post(f"/api/v1/conferences/{conf}/legs",
                                  json={"target": target}, headers=disp)
            assert r.status_code == status and why in r.text, (target, r.text)

        # Dialled by AT; audio both ways while the call is up.
        rig.sat.drain()
        r = await client.post(f"/api/v1/conferences/{conf}/legs",
                              json={"target": "satphone:sat1/+8613900000001"}, headers=disp)
        assert r.status_code == 202, r.text
        leg = r.json()["leg"]
        assert leg == "satphone:sat1"
        await rig.sat.command("ATD+8613900000001;")
        await rig.expect("ConferenceChanged", lambda e: e.step == "joined" and e.leg_id == leg)
        r = await client.post(f"/api/v1/conferences/{conf}/legs",
                              json={"target": "satphone:sat1/+8613900000009"}, headers=disp)
        assert r.status_code == 409 and "already in a conference" in r.text
        legs = (await client.get(f"/api/v1/conferences/{conf}", headers=disp)).json()["legs"]
        assert [(x["leg"], x["state"]) for x in legs] == [(leg, "confirmed")]
        phone.drain()
        skip = len(phone.received)
        await _talk(phone, 1000.0, 60, card, 500.0)
        await asyncio.sleep(0.1)
        assert_hears(phone.heard(skip=skip + 10), [500.0], [1000.0])
        assert len(card.played) >= 40 and card.played_unkeyed == 0
        assert_hears(pcm_of(card.played[5:]), [1000.0], [500.0])

        # The far end hangs up (NO CARRIER): the leg leaves, no more audio either way.  The
        # phone's call is gone before its NO CARRIER is read (frames played in that window
        # cannot be known to be late); from the moment it is read, nothing is played.
        assert card.played_unkeyed == 0
        phone_dev.inject_hangup()
        left = await rig.expect("ConferenceChanged", lambda e: e.leg_id == leg)
        assert (left.step, left.actor, left.detail) == ("left", "remote", "far end hung up")
        assert leg not in rig.engine.rooms()[conf]
        unkeyed = card.played_unkeyed
        played = len(card.played)
        await _talk(phone, 1000.0, 10, card, 500.0)
        assert len(card.played) == played

        # An incoming call answered into the conference from the API (ATA).
        rig.drain()
        phone_dev.inject_call("+8613900000002")
        await rig.expect("SatphoneStatus", lambda e: e.detail.get("state") == "ringing")
        r = await client.post("/api/v1/satphones/sat1/conference",
                              json={"conference_id": conf}, headers=disp)
        assert r.status_code == 201, r.text
        assert r.json()["legs_added"] == {"satphone": leg}
        assert sat_on_air(phone_dev)
        sup = Principal(1, "sup", Role.SUPERVISOR)
        shown = await rig.daemon.commands.run("show conferences", sup)
        assert "satphone:sat1/+8613900000002" in shown and "confirmed" in shown
        phone.drain()
        skip = len(phone.received)
        await _talk(phone, 1000.0, 40, card, 450.0)
        await asyncio.sleep(0.1)
        assert_hears(phone.heard(skip=skip + 10), [450.0], [1000.0])
        r = await client.patch(f"/api/v1/conferences/{conf}/legs/{leg}", json={"muted": True},
                               headers=disp)
        assert r.status_code == 200, r.text
        legs = (await client.get(f"/api/v1/conferences/{conf}", headers=disp)).json()["legs"]
        assert legs[0]["muted"] is True
        await _talk(phone, 1000.0, 10, card, 450.0)  # frames mixed before the mute drain
        phone.drain()
        skip = len(phone.received)
        await _talk(phone, 1000.0, 30, card, 450.0)
        await asyncio.sleep(0.1)
        assert _rms(phone.heard(skip=skip + 5)) < 50.0, "a muted satphone was heard"
        r = await client.delete(f"/api/v1/conferences/{conf}/legs/{leg}?reason=done",
                                headers=disp)
        assert r.status_code == 200, r.text
        await until(lambda: phone_dev.call is None, "ATH sent")
        r = await client.post("/api/v1/satphones/sat1/conference",
                              json={"conference_id": conf}, headers=disp)
        assert r.status_code == 409 and "no ringing call" in r.text

        # Dialled again, then the phone's link is lost: the leg ends and an alarm is raised.
        r = await client.post(f"/api/v1/conferences/{conf}/legs",
                              json={"target": "satphone:sat1/+8613900000003"}, headers=disp)
        assert r.status_code == 202, r.text
        await rig.expect("ConferenceChanged", lambda e: e.step == "joined" and e.leg_id == leg)
        rig.drain()
        phone_dev.close()
        alarm = await rig.expect("RadioGatewayChanged", lambda e: e.gateway == "sat1")
        assert alarm.state == "lost"
        ended = await rig.expect("ConferenceChanged", lambda e: e.leg_id == leg)
        assert ended.step == "removed" and "sat1 lost" in ended.detail
        played = len(card.played)
        await _talk(phone, 1000.0, 10, card, 500.0)
        assert len(card.played) == played and card.played_unkeyed == unkeyed
        assert leg not in rig.engine.rooms()[conf]
        rig.sat.plug()
        await rig.expect("RadioGatewayChanged", lambda e: e.gateway == "sat1" and e.state == "up")
        assert phone_dev.call is None  # reconciled: the call nobody hears is hung up

        # Ending the conference hangs a satphone leg up.
        phone_dev.inject_call("+8613900000004")
        await rig.expect("SatphoneStatus", lambda e: e.detail.get("state") == "ringing")
        r = await client.post("/api/v1/satphones/sat1/conference", json={}, headers=disp)
        assert r.status_code == 201, r.text
        new_conf = r.json()["id"]
        assert "+8613900000004" in r.json()["name"]
        r = await client.delete(f"/api/v1/conferences/{new_conf}?reason=over", headers=disp)
        assert r.status_code == 200
        await until(lambda: phone_dev.call is None, "ATH when the conference ended")
        r = await client.delete(f"/api/v1/conferences/{conf}", headers=disp)
    phone.close()
    steps = [(e.step, e.leg_id) for e in rig.seen if type(e).__name__ == "ConferenceChanged"
             and e.conference_id == conf and e.leg_id == leg]
    assert steps[:3] == [("ringing", leg), ("joined", leg), ("left", leg)]


def _dock(scenario: str, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    """SIPp as the dock's SIP side for one call (it exits 0 if the call went as scripted)."""
    return subprocess.Popen(
        [need("sipp"), "-sf", str(SIPP / scenario), "-i", "127.0.0.1", "-p", str(port),
         "-mp", str(free_port()), "-m", "1", "-rtp_echo", "-nostdin", "-trace_err"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_satphone_through_its_docks_sip_side(rig: Rig, tmp_path: Path) -> None:
    """The dock (SIPp, echoing RTP) is dialled at sip:<number>@dock; its BYE ends the leg;
    losing the satphone gateway hangs a leg up with our BYE."""
    dock = _dock("satdock_bye.xml", rig.dock_port, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=rig.url) as client:
            disp = await rig.headers(client, "disp4")
            r = await client.post("/api/v1/conferences", json={"name": "dock"}, headers=disp)
            conf = r.json()["id"]
            phone = await rig.phone("dock-a", conf, 0x63)
            r = await client.post(f"/api/v1/conferences/{conf}/legs",
                                  json={"target": "satphone:sat2/+870772009999"}, headers=disp)
            assert r.status_code == 202, r.text
            first = r.json()["leg"]
            assert first in rig.daemon.conferences.satphones.legs  # type: ignore[union-attr]
            left = await rig.expect("ConferenceChanged",
                                    lambda e: e.step == "left" and e.leg_id == first)
            assert left.actor == "remote"
            await until(lambda: dock.poll() is not None, "the dock's call done")
            assert dock.returncode == 0, [p.read_text() for p in tmp_path.glob("*errors.log")]
            assert first not in rig.daemon.conferences.satphones.legs  # type: ignore[union-attr]
            dock = _dock("satdock_uas.xml", rig.dock_port, tmp_path)
            r = await client.post(f"/api/v1/conferences/{conf}/legs",
                                  json={"target": "satphone:sat2/+870772009999"}, headers=disp)
            assert r.status_code == 202, r.text
            leg = r.json()["leg"]
            joined = await rig.expect("ConferenceChanged",
                                      lambda e: e.step == "joined" and e.leg_id == leg)
            assert joined.target == f"uri:sip:+870772009999@127.0.0.1:{rig.dock_port}"
            # Before the echo comes back nobody else speaks: what the phone hears of its
            # own tone went to the dock and came back through its leg.
            phone.drain()
            skip = len(phone.received)
            await _talk(phone, 1000.0, 60)
            await asyncio.sleep(0.2)
            heard = phone.heard(skip=skip + 15)
            assert_hears(heard, [1000.0], [500.0])
            rig.drain()
            rig.dock_sat.emulator.close()
            ended = await rig.expect("ConferenceChanged", lambda e: e.leg_id == leg)
            assert ended.step == "removed" and "sat2 lost" in ended.detail
            await until(lambda: dock.poll() is not None, "the dock got its BYE")
            assert dock.returncode == 0, [p.read_text() for p in tmp_path.glob("*errors.log")]
            phone.drain()
            skip = len(phone.received)
            await _talk(phone, 1000.0, 20)
            await asyncio.sleep(0.1)
            assert _rms(phone.heard(skip=skip + 5)) < 50.0  # the dock's leg is gone
            rig.dock_sat.plug()
            phone.close()
            await client.delete(f"/api/v1/conferences/{conf}", headers=disp)
    finally:
        if dock.poll() is None:
            dock.terminate()
            dock.wait(10)


def test_satphone_audio_flows_only_during_an_active_call() -> None:
    """Ringing, dialling, ended or link down: nothing heard, nothing played."""
    card = FrameAudio(Lines())
    active = [False]
    phone = SatphoneAudio("s", card, lambda: active[0], on_fault=lambda why: None)
    assert phone._try_open()
    heard: list[bytes] = []
    phone.attach(heard.append)
    with pytest.raises(RuntimeError, match="already in a conference"):
        phone.attach(heard.append)
    frame = tone_frames(500.0, 1)[0]
    for state in (False, True, False):
        active[0] = state
        card.capture([frame])
        phone.transmit(frame)
    assert len(heard) == 1 and len(card.played) == 1
    phone.transmit(b"\x00" * 10)  # a wrong-sized frame never reaches the card
    assert len(card.played) == 1 and phone.counters["tx_dropped"] == 3


class FailingCard(FrameAudio):
    """A card whose playback fails like a USB sound card pulled out."""

    def write(self, frame: bytes) -> None:
        """Always fails."""
        raise OSError("[Errno 19] No such device")


async def test_a_failing_card_is_an_alarm_and_is_reopened() -> None:
    faults: list[str] = []
    card = FailingCard(Lines())
    phone = SatphoneAudio("s", card, lambda: True, on_fault=faults.append, retry_s=0.01)
    await phone.start()
    phone.transmit(tone_frames(500.0, 1)[0])
    assert faults == ["sound card: [Errno 19] No such device"] and not phone.open
    await until(lambda: phone.open, "the card reopened")
    await phone.stop()
    assert not phone.open


@pytest.mark.parametrize(("gateway", "expected"), [
    ({"kind": "dmr", "host": "h", "peer_id": 1, "password_file": "/p",
      "audio": {"audio_rate": 8000}},
     "radio gateway 'x': [radio.gateways.audio] is for tetra and satphone gateways"),
    ({"kind": "tetra", "device": "/d", "groups": ["1"], "sip_uri": "sip:{number}@h"},
     "radio gateway 'x': sip_uri is a satphone setting"),
    ({"kind": "satphone", "device": "/d", "sip_uri": "sip:{number}@h", "audio": {}},
     "radio gateway 'x': give audio or sip_uri, not both"),
    ({"kind": "satphone", "device": "/d", "sip_uri": "sip:dock@h"},
     "radio gateway 'x': sip_uri must hold {number} once"),
    ({"kind": "satphone", "device": "/d", "sip_uri": "sip:{number}@h\r\nX: y"}, "sip_uri"),
    ({"kind": "satphone", "device": "/d", "audio": {"audio_rate": 44100}}, "audio_rate"),
    ({"kind": "satphone", "device": "/d", "audio": {"ptt_line": "rts"}},
     "audio.ptt_line: unknown key"),
])
def test_terminal_audio_settings_are_checked(gateway: dict[str, Any], expected: str) -> None:
    from dispatch.config import ConfigError, parse_settings

    with pytest.raises(ConfigError) as caught:
        parse_settings({"radio": {"gateways": [{"name": "x", **gateway}]}}, "d.toml")
    assert any(expected in p for p in caught.value.problems), caught.value.problems
    good = parse_settings({"radio": {"gateways": [
        {"name": "s", "kind": "satphone", "device": "/d", "sip_uri": "sip:{number}@10.0.0.2"},
        {"name": "t", "kind": "satphone", "device": "/e", "audio": {"audio_input": 2}}]}}, "d")
    assert good.radio.gateways[1].audio.audio_rate == 48000  # type: ignore[union-attr]


async def test_a_dispatcher_answers_a_satphone_into_a_conference_from_the_console(
        rig: Rig) -> None:
    """The satphone panel's 'Answer into conference' button: a new conference holds the
    satphone's leg, shown in the conference panel; its call is up on the phone."""
    from test_web_console import ARTEFACTS, browser_page, log_in

    phone_dev = rig.sat.emulator
    assert isinstance(phone_dev, SatellitePhoneEmulator)
    await rig.daemon.users.add_user("disp5", Role.DISPATCHER, "disp5-password", actor="test")
    async with browser_page() as page:
        await log_in(page, rig.url, "disp5", "disp5-password")
        await page.wait_for_selector("#satphones tr[data-satphone=sat1]")
        phone_dev.inject_call("+8613900000005")
        await page.wait_for_selector("#satphones tr[data-satphone=sat1] td.call:has-text('ringing')")
        await page.select_option("#satphone-pick", "sat1")
        assert await page.eval_on_selector("#satphone-conf", "s => s.value") == ""  # new one
        await page.click("#satphone-conference")
        await page.wait_for_selector("#conferences-card :text('satphone:sat1/+8613900000005')")
        assert sat_on_air(phone_dev)
        legs = rig.daemon.conferences.satphones.legs  # type: ignore[union-attr]
        assert [leg.number for leg in legs.values()] == ["+8613900000005"]
        ARTEFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTEFACTS / "console-satphone-conference.png"),
                              full_page=True)
        assert await page.text_content("#satphone-error") == ""
        assert page.errors == []
