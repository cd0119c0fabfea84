"""DMR Homebrew peer: the core on a stepped clock, the adapter against a master emulator on UDP."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dispatch.config import parse_settings
from dispatch.daemon import Daemon
from hardware.emulators.dmr import HomebrewMasterEmulator
from radio.dmr import (
    DmrCallEnded,
    DmrCallStarted,
    Dmrd,
    DmrEvent,
    DmrFault,
    DmrGateway,
    DmrLinkDown,
    DmrLinkUp,
    DmrSettings,
    HomebrewPeer,
    build_dmrd,
)
from radio.floor import Priority

ID = (3120101).to_bytes(4, "big")
SETTINGS = DmrSettings("dmr1", "127.0.0.1", 62031, 3120101, b"passw0rd", ping_s=5.0,
                       timeout_s=15.0, retry_s=10.0, stream_timeout_s=1.5)
WAIT = 10.0


def logged_in() -> HomebrewPeer:
    peer = HomebrewPeer(SETTINGS)
    peer.connect(0.0)
    assert peer.datagrams_to_send() == [b"RPTL" + ID]
    assert peer.receive_datagram(b"RPTACK" + b"\x01\x02\x03\x04", 0.1) == []
    digest = hashlib.sha256(b"\x01\x02\x03\x04passw0rd").digest()
    assert peer.datagrams_to_send() == [b"RPTK" + ID + digest]
    assert peer.receive_datagram(b"RPTACK" + ID, 0.2) == []
    config = peer.datagrams_to_send()
    assert len(config) == 1 and config[0][:8] == b"RPTC" + ID and len(config[0]) == 302
    assert config[0][8:16] == b"DISPATCH"
    assert peer.receive_datagram(b"RPTACK" + ID, 0.3) == [DmrLinkUp("dmr1")]
    return peer


def frame(stream: int, frame_type: int, data_type: int, source: int = 4600123,
          tg: int = 46001, slot: int = 1) -> bytes:
    return build_dmrd(Dmrd(0, source, tg, 3120101, slot, False, frame_type, data_type, stream,
                           bytes(33)))


def test_login_keep_alive_and_its_loss_on_a_stepped_clock() -> None:
    peer = logged_in()
    assert peer.get_timer() == 5.3
    assert peer.handle_timer(5.3) == [] and peer.datagrams_to_send() == [b"RPTPING" + ID]
    assert peer.receive_datagram(b"MSTPONG" + ID, 5.4) == []
    assert peer.get_timer() == 10.3  # next ping; the keep-alive deadline is 20.4
    for now in (10.3, 15.3, 20.3):
        assert peer.handle_timer(now) == []
    assert peer.get_timer() == 20.4
    assert peer.handle_timer(20.4) == [DmrLinkDown(
        "dmr1", "no answer from the master (keep-alive timed out)")]
    assert not peer.connected and peer.get_timer() == 30.4
    peer.datagrams_to_send()
    peer.handle_timer(30.4)
    assert peer.datagrams_to_send() == [b"RPTL" + ID]


def test_a_login_step_that_times_out_retries() -> None:
    peer = HomebrewPeer(SETTINGS)
    peer.connect(0.0)
    assert peer.handle_timer(15.0) == [DmrLinkDown(
        "dmr1", "no answer from the master (login step timed out)")]
    assert peer.get_timer() == 25.0


def test_calls_start_end_and_time_out() -> None:
    peer = logged_in()
    events = peer.receive_datagram(frame(7, 2, 1), 1.0)
    assert events == [DmrCallStarted("dmr1", 4600123, 46001, 1, 7, False)]
    assert peer.receive_datagram(frame(7, 1, 0), 1.06) == []
    assert peer.receive_datagram(frame(7, 2, 2), 1.12) == [
        DmrCallEnded("dmr1", 4600123, 46001, 1, 7, "terminator")]
    peer.receive_datagram(frame(8, 0, 1, slot=2), 2.0)  # joined mid-call: no header seen
    assert peer.get_timer() == 3.5
    assert peer.handle_timer(3.5) == [DmrCallEnded("dmr1", 4600123, 46001, 2, 8, "timeout")]
    assert peer.receive_datagram(frame(9, 2, 2), 4.0) == []  # an end we never saw start


def test_refusals_and_master_closing() -> None:
    peer = logged_in()
    for bad, why in [(b"DMRD" + bytes(10), "DMRD frame of 14 bytes"),
                     (b"MSTPONG" + b"\x00\x00\x00\x09", "packet for peer 00000009"),
                     (b"XYZZY", "unknown Homebrew packet"),
                     (b"RPTACK" + b"\x01", "RPTACK with 1 bytes"),
                     (bytes(600), "longer than any Homebrew packet")]:
        events = peer.receive_datagram(bad, 1.0)
        assert len(events) == 1 and isinstance(events[0], DmrFault) and why in events[0].detail
    assert peer.connected
    peer.receive_datagram(frame(5, 2, 1), 1.0)
    assert peer.receive_datagram(b"MSTCL" + ID, 2.0) == [
        DmrCallEnded("dmr1", 4600123, 46001, 1, 5, "link lost"),
        DmrLinkDown("dmr1", "the master closed (MSTCL)")]


@given(st.lists(st.binary(max_size=80), max_size=8))
def test_any_datagrams_are_events_or_faults(datagrams: list[bytes]) -> None:
    peer = logged_in()
    for i, data in enumerate(datagrams):
        for event in peer.receive_datagram(data, 1.0 + i):
            assert isinstance(event, DmrEvent)  # type: ignore[misc, arg-type]


class Events:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[DmrEvent] = asyncio.Queue()

    async def next(self, kind: type[Any]) -> Any:
        while True:
            event = await asyncio.wait_for(self.queue.get(), WAIT)
            if isinstance(event, kind):
                return event


async def test_against_the_master_emulator_over_udp() -> None:
    master = HomebrewMasterEmulator()
    port = await master.open()
    events = Events()
    gw = DmrGateway(DmrSettings("dmr1", "127.0.0.1", port, 3120101, b"passw0rd", ping_s=0.1,
                                timeout_s=1.0, retry_s=0.1), events.queue.put_nowait)
    await gw.start()
    try:
        await events.next(DmrLinkUp)
        assert [p.peer_id for p in master.connected()] == [ID]
        master.play_call(4600123, 46001, slot=2, stream=0xBEEF)
        assert await events.next(DmrCallStarted) == DmrCallStarted(
            "dmr1", 4600123, 46001, 2, 0xBEEF, False)
        assert (await events.next(DmrCallEnded)).why == "terminator"
        master.silent = True  # the master vanishes
        assert "keep-alive" in (await events.next(DmrLinkDown)).why
        assert not gw.health()["ready"]
        master.silent = False
        await events.next(DmrLinkUp)
        master.close_peers()
        assert (await events.next(DmrLinkDown)).why == "the master closed (MSTCL)"
        await events.next(DmrLinkUp)
        goodbye = asyncio.ensure_future(master.wait_for(b"RPTCL"))
        await gw.stop()
        assert await goodbye == b"RPTCL" + ID
    finally:
        await gw.stop()
        master.close()


async def test_a_wrong_passphrase_is_refused() -> None:
    master = HomebrewMasterEmulator(passphrase=b"other")
    port = await master.open()
    events = Events()
    gw = DmrGateway(DmrSettings("dmr1", "127.0.0.1", port, 3120101, b"passw0rd", retry_s=60),
                    events.queue.put_nowait)
    await gw.start()
    try:
        assert (await events.next(DmrLinkDown)).why == "the master refused us (MSTNAK)"
        assert master.connected() == []
    finally:
        await gw.stop()
        master.close()


async def test_dmr_talkgroup_traffic_in_the_daemon(tmp_path: Path, reactor: Any) -> None:
    master = HomebrewMasterEmulator()
    port = await master.open()
    secret = tmp_path / "dmr.pass"
    secret.write_text("passw0rd\n")
    settings = parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
        "http": {"port": 0}, "ssh": {"enabled": False},
        "radio": {"gateways": [{"name": "bm", "kind": "dmr", "host": "127.0.0.1", "port": port,
                                "peer_id": 3120101, "password_file": str(secret),
                                "poll_s": 1.0, "retry_s": 0.1}],
                  "talkgroups": [{"name": "rescue", "gssi": "46001", "gateway": "bm"}]},
    }, "test")
    daemon = Daemon(settings, reactor=reactor)
    seen: asyncio.Queue[Any] = asyncio.Queue()
    daemon.hub.listen(lambda env: seen.put_nowait(env))

    async def expect(topic: str, where: Any = lambda e: True) -> Any:
        while True:
            env = await asyncio.wait_for(seen.get(), WAIT)
            if env.topic == topic and where(env.event):
                return env.event

    await daemon.start()
    try:
        await expect("radio.gateway", lambda e: e.state == "up")
        master.play_call(4600123, 46001, terminate=False)
        master.play_call(4600999, 46999, stream=0x99)  # a talkgroup nobody configured
        granted = await expect("radio.floor")
        assert (granted.event, granted.who, granted.talkgroup) == (
            "granted", "dmr:4600123", "rescue")
        assert daemon.radio is not None
        state = daemon.radio.talkgroup_state("rescue")
        assert (state["talker"], state["monitor_only"]) == ("4600123", True)
        events = daemon.radio.request_ptt("rescue", "disp", Priority.COMMANDER)
        assert events[0]["event"] == "denied" and "monitor-only" in events[0]["why"]
        released = await expect("radio.floor", lambda e: e.event == "released")
        assert (released.who, released.why) == ("dmr:4600123", "timeout")
        await expect("audit.recorded", lambda e: e.action == "radio.floor_released")
    finally:
        await daemon.stop()
        master.close()
