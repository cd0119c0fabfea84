"""The TETRA gateway over a real pty, against the TETRA PEI emulator."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hardware.emulators import TetraRadioEmulator, decode_simple_text_sds
from radio.floor import (
    FloorDenied,
    FloorGranted,
    FloorPreempted,
    FloorRevoked,
    FloorSettings,
    FloorTimedOut,
    Key,
    Priority,
    Unkey,
)
from radio.sds import decode_text, encode_text
from radio.tetra import (
    CallReleased,
    GatewayFault,
    GroupsAttached,
    IncomingGroupCall,
    LinkDown,
    LinkUp,
    RadioError,
    RadioEvent,
    RadioKeyed,
    SdsReceived,
    TalkerChanged,
    TetraGateway,
    TetraSettings,
)

WAIT = 5.0
T = TypeVar("T")


def at(event: Any) -> float:
    """The time stamp of a floor event (the adapter's clock, not known to the test)."""
    value = event.at
    assert isinstance(value, float)
    return value


class Harness:
    """A gateway on an emulated radio behind a symlink (so the device can be re-plugged)."""

    def __init__(self, tmp_path: Path, reactor: Any, floor: FloorSettings,
                 release_timeout_s: float = 2.0) -> None:
        self.radio = TetraRadioEmulator()
        self.link = tmp_path / "ttyTETRA0"
        self.events: asyncio.Queue[RadioEvent] = asyncio.Queue()
        self.seen: list[RadioEvent] = []
        self.commands: asyncio.Queue[str] = asyncio.Queue()
        self.radio.on_command = self.commands.put_nowait
        self.plug()
        self.gw = TetraGateway(
            TetraSettings("tetra1", str(self.link), ("9001", "9002"), retry_s=0.02, floor=floor,
                          release_timeout_s=release_timeout_s),
            reactor, self._event)

    def _event(self, event: RadioEvent) -> None:
        self.seen.append(event)
        self.events.put_nowait(event)

    def plug(self) -> None:
        tmp = self.link.with_suffix(".new")
        os.symlink(self.radio.open(), tmp)
        os.replace(tmp, self.link)

    async def next(self, kind: type[T], where: Callable[[T], bool] = lambda e: True) -> T:
        while True:
            event = await asyncio.wait_for(self.events.get(), WAIT)
            if isinstance(event, kind) and where(event):
                return event

    async def command(self, text: str) -> None:
        while await asyncio.wait_for(self.commands.get(), WAIT) != text:
            pass

    def drain(self) -> None:
        while not self.commands.empty():
            self.commands.get_nowait()


@asynccontextmanager
async def gateway(tmp_path: Path, reactor: Any,
                  floor: FloorSettings | None = None) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, reactor, floor or FloorSettings(hang_time_s=0.0))
    await h.gw.start()
    try:
        yield h
    finally:
        await h.gw.stop()
        h.radio.close()


async def test_start_up_reconciles_first_then_attaches(tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        await h.next(GroupsAttached)
        assert h.radio.commands == ["ATH", "ATE0", "AT+CMEE=1", "AT+CTOM=0", "AT+CTSP=1,3,2",
                                    "AT+CTGS=1,9001,1,9002"]
        assert h.radio.groups == ["9001", "9002"]
        health = h.gw.health()
        assert health["ready"] and health["connected"]
        assert health["attached_groups"] == ["9001", "9002"] and health["keyed_groups"] == []


async def test_radio_left_keyed_by_a_crashed_predecessor_is_released(
        tmp_path: Path, reactor: Any) -> None:
    h = Harness(tmp_path, reactor, FloorSettings())
    h.radio.feed(b"ATD9001\r")  # a previous process keyed the radio, then died
    assert h.radio.calls[1].talker == "self"
    h.radio.commands.clear()
    await h.gw.start()
    try:
        assert h.radio.commands[0] == "ATH" and h.radio.calls == {}
    finally:
        await h.gw.stop()
        h.radio.close()


async def test_key_unkey_round_trip(tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        h.drain()
        events = h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        assert events == [FloorGranted("9001", "disp1", Priority.DISPATCHER, at(events[0])),
                          Key("9001")]
        keyed = await h.next(RadioKeyed)
        assert (keyed.group, keyed.cc) == ("9001", 1)
        assert h.radio.commands[-2:] == ["AT+CTSDC=0,0,0,1,1,0,1,1,0,0", "ATD9001"]
        assert h.radio.calls[1].talker == "self" and h.gw.health()["keyed_groups"] == ["9001"]
        h.gw.release_ptt("9001", "disp1")
        await h.command("AT+CUTXC=1")
        assert await h.next(TalkerChanged, lambda e: e.talker is None) == TalkerChanged(
            "tetra1", "9001", 1, None)
        assert h.radio.calls[1].talker is None and h.gw.health()["keyed_groups"] == []
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        await h.command("AT+CTXD=1,0")
        assert (await h.next(RadioKeyed)).cc == 1
        h.gw.release_ptt("9001", "disp1")
        await h.command("AT+CUTXC=1")
        await h.gw.hang_up("9001")
        assert await h.next(CallReleased) == CallReleased("tetra1", "9001", 1, 1)
        assert h.radio.calls == {}
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        await h.command("ATD9001")  # no call any more: a new one is set up
        assert (await h.next(RadioKeyed)).cc == 2


async def test_three_talkers_contend_with_priorities(tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        h.gw.request_ptt("9001", "unit7", Priority.FIELD_UNIT)
        await h.next(RadioKeyed)
        h.drain()
        events = h.gw.request_ptt("9001", "cmdr", Priority.COMMANDER)
        assert [type(e) for e in events] == [FloorPreempted, Unkey, FloorGranted, Key]
        await h.command("AT+CUTXC=1")
        await h.command("AT+CTXD=1,0")
        await h.next(RadioKeyed)
        queued = h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        assert queued[0].position == 1  # type: ignore[union-attr]
        events = h.gw.request_ptt("9001", "handset42", Priority.EMERGENCY)
        assert events[0] == FloorPreempted("9001", "cmdr", "handset42", at(events[0]),
                                           "emergency outranks commander")
        await h.command("AT+CUTXC=1")
        await h.command("AT+CTXD=1,0")
        await h.next(RadioKeyed)
        assert h.gw.floor.talker("9001") == "handset42"
        assert h.radio.calls[1].talker == "self"
        h.gw.release_ptt("9001", "handset42")
        granted = await h.next(FloorGranted)
        assert granted.who == "disp1" and granted.why == "next in queue"


async def test_transmit_time_out_cuts_the_talker(tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor, FloorSettings(hang_time_s=0.0, tx_timeout_s=0.2)) as h:
        h.gw.request_ptt("9002", "unit7", Priority.FIELD_UNIT)
        await h.next(RadioKeyed)
        timed_out = await h.next(FloorTimedOut)
        assert timed_out.who == "unit7" and timed_out.held_s >= 0.2
        await h.command("AT+CUTXC=1")
        await h.next(TalkerChanged, lambda e: e.talker is None)
        assert h.radio.calls[1].talker is None and h.gw.health()["keyed_groups"] == []


async def test_gateway_lost_while_keyed_leaves_nothing_keyed(tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        await h.next(RadioKeyed)
        h.radio.close()  # unplugged mid-transmission: the radio itself stays keyed
        await h.next(LinkDown)
        revoked = await h.next(FloorRevoked)
        assert (revoked.who, revoked.why) == ("disp1", "gateway tetra1 lost")
        assert h.gw.floor.keyed() == frozenset() and h.gw.health()["keyed_groups"] == []
        denied = h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        assert denied == [FloorDenied("9001", "disp1", at(denied[0]), "gateway tetra1 is down")]
        assert h.radio.calls[1].talker == "self"
        before = len(h.radio.commands)
        h.plug()
        await h.next(LinkUp)
        assert h.radio.commands[before] == "AT+CUTXC=1"  # the very first thing written
        assert h.radio.calls == {}  # and the unconditional ATH after it
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        assert (await h.next(RadioKeyed)).group == "9001"


async def test_stop_unkeys(tmp_path: Path, reactor: Any) -> None:
    h = Harness(tmp_path, reactor, FloorSettings())
    await h.gw.start()
    try:
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        await h.next(RadioKeyed)
        await h.gw.stop()
        assert h.radio.commands[-1] == "AT+CUTXC=1" and h.radio.calls[1].talker is None
        revoked = next(e for e in h.seen if isinstance(e, FloorRevoked))
        assert revoked.why == "gateway stopping"
    finally:
        h.radio.close()


async def test_a_crash_in_the_service_still_unkeys(tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        await h.next(RadioKeyed)

        async def broken(group: str) -> None:
            raise RuntimeError("bug in the unkey path")

        h.gw._unkey = broken  # type: ignore[method-assign]
        h.gw.release_ptt("9001", "disp1")
        await h.command("AT+CUTXC=1")
        assert h.radio.calls[1].talker is None
        assert h.gw.health()["ready"] is False
        assert "RuntimeError" in h.gw.health()["last_error"]
        denied = h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        assert isinstance(denied[0], FloorDenied)  # a crashed gateway refuses presses


async def test_incoming_call_talkers_and_radio_refusals(tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        cc = h.radio.inject_group_call("9002", "2001")
        assert await h.next(IncomingGroupCall) == IncomingGroupCall("tetra1", "9002", cc, "2001")
        assert await h.next(TalkerChanged) == TalkerChanged("tetra1", "9002", cc, "2001")
        h.gw.request_ptt("9002", "disp1", Priority.DISPATCHER)
        assert (await h.next(FloorRevoked)).why == "radio did not grant transmission"
        h.radio.inject_talk_end(cc)
        await h.next(TalkerChanged, lambda e: e.talker is None)
        h.gw.request_ptt("9002", "disp1", Priority.DISPATCHER)
        await h.next(RadioKeyed)
        h.radio.inject_talk(cc, "2002")  # the network drops our PTT mid-burst
        assert (await h.next(FloorRevoked)).why == "pre-empted on air by 2002"
        await h.command(f"AT+CUTXC={cc}")
        h.radio.inject_release(cc)
        assert await h.next(CallReleased) == CallReleased("tetra1", "9002", cc, 1)


async def test_sds_round_trip_chinese_and_latin1(tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        assert await h.gw.send_sds("2001", "火警：3号楼，请增援") == 1
        sent = h.radio.sds_sent[0]
        assert (sent.called, sent.ai_service) == ("2001", 12)
        assert decode_text(sent.user_data, sent.bits) == "火警：3号楼，请增援"
        await h.gw.send_sds("2001", "Évacuez le bâtiment")
        assert decode_simple_text_sds(h.radio.sds_sent[1].user_data) == "Évacuez le bâtiment"
        h.radio.inject_sds("2001", encode_text("收到，正在前往")[1])
        received = await h.next(SdsReceived)
        assert (received.calling, received.called, received.text) == ("2001", "1001",
                                                                      "收到，正在前往")
        h.radio.inject_sds("2001", "8201FF")
        assert (await h.next(SdsReceived)).text is None
        with pytest.raises(RadioError):
            await h.gw.send_sds("20;01", "x")


def test_settings_refuse_bad_groups() -> None:
    with pytest.raises(RadioError):
        TetraSettings("t", "/dev/null", ("9001;ATH",))


async def test_handset_emergency_call_overrides_the_dispatcher(tmp_path: Path,
                                                               reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        h.gw.request_ptt("9001", "cmdr", Priority.COMMANDER)
        await h.next(RadioKeyed)
        h.radio.unsolicited("+CTICN: 7,0,0,0,2005,1,1,0,1,1,1,9001,15")
        call = await h.next(IncomingGroupCall)
        assert (call.calling, call.emergency) == ("2005", True)
        revoked = await h.next(FloorRevoked)
        assert (revoked.who, revoked.why) == ("cmdr", "emergency call from 2005")
        await h.command("AT+CUTXC=1")
        assert h.radio.calls[1].talker is None and h.gw.health()["keyed_groups"] == []


async def test_a_press_revoked_before_it_reaches_the_radio_never_keys(
        tmp_path: Path, reactor: Any) -> None:
    async with gateway(tmp_path, reactor) as h:
        before = len(h.radio.commands)
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        h.gw.release_ptt("9001", "disp1")  # in the same loop turn: the worker has not run
        h.gw.request_ptt("9002", "disp1", Priority.DISPATCHER)
        await h.command("ATD9002")
        assert "ATD9001" not in h.radio.commands[before:]


async def test_release_into_a_silent_radio_is_retried_until_it_answers(
        tmp_path: Path, reactor: Any) -> None:
    h = Harness(tmp_path, reactor, FloorSettings(hang_time_s=0.0), release_timeout_s=0.05)
    await h.gw.start()
    try:
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        await h.next(RadioKeyed)
        h.radio.faults.silent = True
        h.gw.release_ptt("9001", "disp1")
        fault = await h.next(GatewayFault)
        assert fault.detail.startswith("Unkey 9001")
        assert h.gw.health()["unconfirmed_releases"] == [1]
        assert h.radio.calls[1].talker == "self"  # the radio never heard us
        h.radio.faults.silent = False
        await h.command("AT+CUTXC=1")
        assert h.radio.calls[1].talker is None
    finally:
        await h.gw.stop()
        h.radio.close()


async def test_stop_while_the_radio_answers_the_dial_still_unkeys(
        tmp_path: Path, reactor: Any) -> None:
    # Stopping exactly as the radio's grant arrives (both in one loop turn) must not lose
    # the stop: on Python 3.11, asyncio.wait_for returned the grant and swallowed the
    # cancellation, so the service task went on waiting for actions and stop() never
    # returned -- the fail-safe unkey never ran (CI hung here once).
    h = Harness(tmp_path, reactor, FloorSettings(hang_time_s=0.0))
    dial = h.radio.handlers["D"]
    held: list[Any] = []

    def slow_grant(op: str, args: str) -> Any:  # OK now, the call and grant held back
        reply = dial(op, args)
        held.append(reply)
        return type(reply)()

    h.radio.handlers["D"] = slow_grant
    await h.gw.start()
    try:
        h.gw.request_ptt("9001", "disp1", Priority.DISPATCHER)
        await h.command("ATD9001")
        await asyncio.sleep(0.2)  # the OK reaches the gateway: it now awaits the grant
        dialling = h.gw._dialling
        assert dialling is not None and not dialling.done()
        # The grant and the stop in the same loop turn (what stop() does first, done here
        # synchronously so the turn is the same on every run).
        dialling.set_result(1)
        service = h.gw._service
        assert service is not None
        service.cancel()
        stop = asyncio.ensure_future(h.gw.stop())
        done, _ = await asyncio.wait({stop}, timeout=WAIT)
        assert done, "stop() hung: the service task lost its cancellation"
        assert h.gw.health()["keyed_groups"] == []
        assert h.radio.commands[-1] == "ATH"  # the fail-safe unkeyed what was being keyed
    finally:
        h.radio.close()
