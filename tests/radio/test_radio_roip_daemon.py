"""A RoIP talkgroup in a real in-process daemon: patched with a sound-card talkgroup (audio and
floors both ways, no echo), the device lost and back as an alarm with audit rows and health,
and the daemon's stop unkeying the device before its BYE.  The RoIP box is the emulator over
real SIP/RTP on 127.0.0.1; the sound card is a frame-fed test card (this machine has none)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from soundcardpeers import FrameAudio, Lines, pcm_of, tone_frames
from sqlalchemy import select

from dispatch import radio_service
from dispatch.auth import Principal, Role
from dispatch.config import parse_settings
from dispatch.daemon import Daemon
from dispatch.models import AuditEntry
from hardware.emulators.roip import RoipDevice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "media"))
from enginepeers import assert_hears, until  # noqa: E402

_ports = [47000]


class Rig:
    """A daemon with a RoIP talkgroup (mountain on roip1) and a sound-card one (fire on sc1)."""

    def __init__(self, daemon: Daemon, device: RoipDevice,
                 cards: dict[str, tuple[FrameAudio, Lines]]) -> None:
        self.daemon, self.device, self.cards = daemon, device, cards
        self.seen: list[Any] = []
        daemon.hub.listen(lambda env: self.seen.append(env.event))

    async def audited(self, action: str) -> list[AuditEntry]:
        for _ in range(1000):
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
        cards[gw.name] = (FrameAudio(line), line)
        return cards[gw.name][0]

    monkeypatch.setattr(radio_service, "SOUND_CARDS", [audio, lambda gw: cards[gw.name][1]])
    device = RoipDevice(ptt="dtmf", cos="dtmf")
    await device.start()
    _ports[0] += 200
    settings = parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'd.db'}", "auto_migrate": True},
        "http": {"port": 0}, "ssh": {"port": 0},
        "media": {"enabled": True, "port_min": _ports[0], "port_max": _ports[0] + 199,
                  "recordings_dir": str(tmp_path / "rec")},
        "radio": {
            "gateways": [
                {"name": "sc1", "kind": "soundcard", "device": "/dev/ttyUSB0",
                 "hang_time_s": 0.0, "soundcard": {"cos_line": "cts", "audio_rate": 8000}},
                {"name": "roip1", "kind": "roip", "hang_time_s": 0.0, "retry_s": 0.05,
                 "roip": {"uri": device.uri, "ptt": "dtmf", "cos": "dtmf",
                          "keepalive_s": 0.2, "request_timeout_s": 0.6,
                          "retry_max_s": 0.2}},
            ],
            "talkgroups": [
                {"name": "fire", "gssi": "1", "gateway": "sc1", "agency": "119"},
                {"name": "mountain", "gssi": "2", "gateway": "roip1", "agency": "119"},
            ],
        },
    }, "test")
    daemon = Daemon(settings, reactor=reactor)
    await daemon.start()
    try:
        yield Rig(daemon, device, cards)
    finally:
        await daemon.stop()
        device.close()


async def test_roip_group_patched_with_a_soundcard_group(rig: Rig) -> None:
    fire_audio, fire_lines = rig.cards["sc1"]
    await until(lambda: rig.device.in_call and ("unkey", "dtmf") in rig.device.log,
                "the daemon called the box and unkeyed it first")
    state = rig.daemon.radio.talkgroup_state("mountain")  # type: ignore[union-attr]
    assert state["audio"] is True and state["gateway_state"] == "up"
    admin = Principal(1, "sup", Role.SUPERVISOR)
    out = await rig.daemon.commands.run("patch mountain group fire", admin)
    assert "mountain patched into group:fire" in out

    # A mountain rescuer talks on the RoIP radio: fire is keyed and hears them.
    over = asyncio.get_running_loop().create_task(rig.device.receive_over(700.0, 60))
    while not over.done():
        fire_audio.capture(tone_frames(1300.0, 1))  # fire's own side, squelch closed
        await asyncio.sleep(0.02)
    await until(lambda: len(fire_audio.played) >= 40, "mountain's audio on fire")
    await until(lambda: not fire_lines.ptt, "fire unkeyed when the RoIP over ends")
    assert fire_audio.played_unkeyed == 0
    assert_hears(pcm_of(fire_audio.played[5:-5]), [700.0], [1300.0])
    assert rig.device.heard_on_air().size == 0  # nothing came back to the box: no echo

    # A fire handset talks: the RoIP box is keyed by DTMF and transmits fire's audio.
    fire_lines.squelch_open = True
    for frame in tone_frames(900.0, 60):
        fire_audio.capture([frame])
        await asyncio.sleep(0.02)
    await until(lambda: rig.device.keyed, "the box keyed for fire's over")
    fire_lines.squelch_open = False
    fire_audio.capture(tone_frames(900.0, 1))
    await until(lambda: not rig.device.keyed, "the box unkeyed when fire's over ends")
    assert_hears(rig.device.heard_on_air()[800:-800], [900.0], [700.0])
    assert rig.device.loud_unkeyed() == 0
    floor = [(e.talkgroup, e.event, e.who) for e in rig.seen
             if type(e).__name__ == "RadioFloorChanged"]
    assert floor == [("fire", "granted", "patch:mountain"), ("fire", "released", "patch:mountain"),
                     ("mountain", "granted", "patch:fire"),
                     ("mountain", "released", "patch:fire")]
    await rig.daemon.commands.run("unpatch mountain", admin)


async def test_device_lost_is_an_alarm_and_comes_back(rig: Rig) -> None:
    radio = rig.daemon.radio
    assert radio is not None
    await until(lambda: rig.device.in_call, "the call")
    radio.request_ptt("mountain", "disp", radio_service.Priority.DISPATCHER)
    await until(lambda: rig.device.keyed, "keyed")
    rig.device.unplug()
    await until(lambda: radio.state["roip1"] == "down", "the loss noticed")
    assert radio.talkgroup_state("mountain")["keyed"] is False
    lost = await rig.audited("radio.gateway_lost")
    assert "keep-alive" in lost[0].details["detail"]
    alarms = [(e.gateway, e.kind, e.state) for e in rig.seen
              if type(e).__name__ == "RadioGatewayChanged"]
    assert ("roip1", "roip", "lost") in alarms
    assert any(type(e).__name__ == "RadioKeyChanged" and not e.keyed for e in rig.seen)
    rig.device.plug()
    await until(lambda: radio.state["roip1"] == "up", "the redial")
    await rig.audited("radio.gateway_up")
    await until(lambda: not rig.device.keyed, "unkeyed first thing on the new call")
    health = radio.health()["gateways"]["roip1"]
    assert health["kind"] == "roip" and health["call"] is True and health["last_seen"]
    assert health["device"] == rig.device.uri and health["ptt"] == "dtmf"


async def test_daemon_stop_unkeys_before_hanging_up(rig: Rig) -> None:
    radio = rig.daemon.radio
    assert radio is not None
    await until(lambda: rig.device.in_call, "the call")
    radio.request_ptt("mountain", "disp", radio_service.Priority.DISPATCHER)
    await until(lambda: rig.device.keyed, "keyed")
    await rig.daemon.stop()
    await until(lambda: ("bye", "BYE received") in rig.device.log, "the BYE")
    order = [w for w, _ in rig.device.log if w in ("unkey", "bye")]
    assert order[-2:] == ["unkey", "bye"] and not rig.device.keyed
