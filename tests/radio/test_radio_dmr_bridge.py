"""DMR bridges: the forwarding core on a stepped clock, and two masters bridged by a daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dispatch.config import ConfigError, parse_settings
from dispatch.daemon import Daemon
from dispatch.models import AuditEntry
from hardware.emulators.dmr import HomebrewMasterEmulator, call_payload
from radio.dmr import Dmrd, parse_dmrd
from radio.dmr_bridge import BridgeMember, DmrBridge

CITY = BridgeMember("city", 46001)
COUNTY = BridgeMember("county", 9001, slot=2)
TEAM = BridgeMember("team", 777)
WAIT = 10.0


def dmrd(stream: int, *, source: int = 4600123, tg: int = 46001, slot: int = 1,
         kind: tuple[int, int] = (1, 0), private: bool = False, seq: int = 0) -> Dmrd:
    return Dmrd(seq, source, tg, 3120101, slot, private, kind[0], kind[1], stream,
                bytes([seq]) * 33)


HEADER, VOICE, TERMINATOR = (2, 1), (0, 3), (2, 2)


def test_a_call_is_forwarded_to_every_other_member_with_its_voice_untouched() -> None:
    bridge = DmrBridge("link", (CITY, COUNTY, TEAM))
    out = bridge.route("city", dmrd(0x10, kind=HEADER, seq=7), 0.0)
    assert [gw for gw, _ in out] == ["county", "team"]
    county, team = out[0][1], out[1][1]
    assert (county.destination, county.slot, county.source) == (9001, 2, 4600123)
    assert (team.destination, team.slot) == (777, 1), "slot 0: kept as heard"
    assert county.payload == bytes([7]) * 33 and county.seq == 7
    assert len({county.stream, team.stream, 0x10}) == 3, "a stream id of its own per member"
    again = bridge.route("city", dmrd(0x10, kind=VOICE, seq=8), 0.06)
    assert [f.stream for _, f in again] == [county.stream, team.stream], "stable for the stream"
    assert bridge.route("city", dmrd(0x10, kind=TERMINATOR, seq=9), 0.12) != []
    assert bridge.active is None, "the terminator frees the bridge"
    assert bridge.counts["streams"] == 1 and bridge.counts["forwarded"] == 6


def test_one_call_at_a_time_and_the_holder_times_out() -> None:
    bridge = DmrBridge("link", (CITY, COUNTY), hold_s=1.5)
    assert bridge.route("city", dmrd(0x10, kind=HEADER), 0.0)
    # The county keys up while the city talks: dropped, not mixed into the city's call.
    assert bridge.route("county", dmrd(0x20, tg=9001, slot=2, kind=HEADER), 0.5) == []
    assert bridge.counts["blocked"] == 1
    # The city's radio vanished without a terminator: after hold_s the county gets through.
    assert bridge.route("county", dmrd(0x20, tg=9001, slot=2, kind=VOICE), 1.4) == []
    out = bridge.route("county", dmrd(0x20, tg=9001, slot=2, kind=VOICE), 1.6)
    assert [(gw, f.destination) for gw, f in out] == [("city", 46001)]
    assert bridge.active is not None and bridge.active.origin == COUNTY


def test_no_loops_no_private_calls_no_other_groups_or_slots() -> None:
    bridge = DmrBridge("link", (CITY, COUNTY))
    (_, forwarded), = bridge.route("city", dmrd(0x10, kind=HEADER), 0.0)
    # Two masters linked to each other hand our own forwarded stream back.
    echo = Dmrd(0, forwarded.source, 9001, 1, 2, False, 0, 3, forwarded.stream, bytes(33))
    assert bridge.route("county", echo, 0.1) == []
    assert bridge.counts["looped"] == 1
    assert bridge.route("city", dmrd(0x30, private=True), 0.2) == []
    assert bridge.route("city", dmrd(0x31, tg=46002), 0.2) == []
    assert bridge.route("county", dmrd(0x32, tg=9001, slot=1), 0.2) == [], "slot 2 only"
    assert bridge.route("elsewhere", dmrd(0x33), 0.2) == []
    # The end of a stream the bridge never carried starts nothing.
    assert DmrBridge("b", (CITY, COUNTY)).route("city", dmrd(0x40, kind=TERMINATOR), 0) == []
    with pytest.raises(ValueError, match="at least two"):
        DmrBridge("b", (CITY,))
    with pytest.raises(ValueError, match="twice"):
        DmrBridge("b", (CITY, CITY))


def _settings(tmp_path: Path, ports: tuple[int, int], bridge: Any) -> Any:
    secret = tmp_path / "dmr.pass"
    secret.write_text("passw0rd\n")
    gateways = [{"name": name, "kind": "dmr", "host": "127.0.0.1", "port": port,
                 "peer_id": peer, "password_file": str(secret), "poll_s": 1.0, "retry_s": 0.1}
                for name, port, peer in (("city", ports[0], 3120101),
                                         ("county", ports[1], 3120202))]
    return parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
        "http": {"port": 0}, "ssh": {"enabled": False},
        "radio": {"gateways": gateways,
                  "talkgroups": [{"name": "city-rescue", "gssi": "46001", "gateway": "city"},
                                 {"name": "county-rescue", "gssi": "9001", "gateway": "county"}],
                  "dmr_bridges": [bridge]},
    }, "test")


def test_a_bridge_must_name_dmr_talkgroups(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'nowhere', which is not a talkgroup on a dmr"):
        _settings(tmp_path, (1, 2), {"name": "b", "members": [
            {"talkgroup": "city-rescue"}, {"talkgroup": "nowhere"}]})
    with pytest.raises(ConfigError, match="members"):
        _settings(tmp_path, (1, 2), {"name": "b", "members": [{"talkgroup": "city-rescue"}]})


async def test_a_call_on_one_master_is_heard_on_the_other(tmp_path: Path, reactor: Any) -> None:
    city, county = HomebrewMasterEmulator(), HomebrewMasterEmulator()
    ports = (await city.open(), await county.open())
    settings = _settings(tmp_path, ports, {"name": "rescue-link", "members": [
        {"talkgroup": "city-rescue"}, {"talkgroup": "county-rescue", "slot": 2}]})
    daemon = Daemon(settings, reactor=reactor)
    await daemon.start()
    try:
        assert daemon.radio is not None
        radio = daemon.radio

        async def until(what: Any, why: str) -> Any:
            for _ in range(int(WAIT / 0.02)):
                if (value := what()):
                    return value
                await asyncio.sleep(0.02)
            raise AssertionError(why)

        await until(lambda: city.connected() and county.connected(), "both peers logged in")
        county.received.clear()
        city.play_call(4600123, 46001, stream=0x5151, voice_frames=6)
        frames = await until(lambda: (got := [parse_dmrd(d) for d in county.received
                                              if d.startswith(b"DMRD")]) and len(got) == 8
                             and got, "8 frames forwarded to the county master")
        assert {(f.destination, f.slot, f.source, f.peer_id) for f in frames} == {
            (9001, 2, 4600123, 3120202)}
        assert [f.payload for f in frames] == [call_payload(0x5151, seq) for seq in range(8)]
        assert len({f.stream for f in frames}) == 1 and frames[0].stream != 0x5151
        assert [d for d in city.received if d.startswith(b"DMRD")] == [], "nothing echoed back"
        state = radio.health()["dmr_bridges"]["rescue-link"]
        assert (state["streams"], state["forwarded"], state["active"]) == (1, 8, None)
        await until(lambda: radio.talkgroup_state("city-rescue")["talker"] is None,
                    "the city's floor released by the terminator")

        async def audited() -> list[AuditEntry]:
            async with daemon.db.session() as s:
                return list((await s.scalars(select(AuditEntry).where(
                    AuditEntry.action == "radio.bridge_stream"))).all())

        rows: list[AuditEntry] = []
        for _ in range(int(WAIT / 0.05)):
            if (rows := await audited()):
                break
            await asyncio.sleep(0.05)
        assert len(rows) == 1 and rows[0].actor == "dmr:4600123"
        assert rows[0].subject == "dmr_bridge:rescue-link"
        assert rows[0].details["to"] == ["county/9001"]

        # The county's master goes away: frames for it are counted as dropped, the city's
        # side keeps working.
        county.close_peers()
        await until(lambda: not radio.dmr["county"].core.connected, "county link lost")
        city.play_call(4600124, 46001, stream=0x5252, voice_frames=1)
        await until(lambda: radio.counts["bridge_dropped"] == 3, "3 frames could not go out")
    finally:
        await daemon.stop()
        city.close()
        county.close()
