"""The asyncio AT adapter over real ptys, against the device emulators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from hardware.at import (
    AtCallFailed,
    AtCmeError,
    AtCmsError,
    AtCommandError,
    AtControlCharacter,
    AtLinkDown,
    AtSettings,
    AtTimeout,
    Event,
    Resynchronised,
    Unsolicited,
)
from hardware.atport import AtDevice, AtResponse
from hardware.emulators import (
    GsmModemEmulator,
    SatellitePhoneEmulator,
    SentSds,
    SentSms,
    TetraRadioEmulator,
    decode_simple_text_sds,
    simple_text_sds,
)
from hardware.emulators.base import AtEmulator

# SMS-SUBMIT to +8613912345678, "hello" in GSM 7-bit, no SMSC address (00 prefix).
SUBMIT = "0011000D91683119325476F80000AA05E8329BFD06"
# SMS-DELIVER from +8613912345678, "hi", with an SMSC address.
DELIVER = "0891683108100005F0040D91683119325476F8000062111221000000" + "02E834"
WAIT = 5.0

Events = asyncio.Queue[Event]


@asynccontextmanager
async def device_on(emulator: AtEmulator, reactor: Any,
                    settings: AtSettings | None = None) -> AsyncIterator[tuple[AtDevice, Events]]:
    path = emulator.open()
    events: Events = asyncio.Queue()
    device = AtDevice("dev", path, reactor, settings=settings, on_event=events.put_nowait)
    await device.start()
    try:
        yield device, events
    finally:
        await device.stop()
        emulator.close()


async def urc(device: AtDevice) -> Unsolicited:
    return await asyncio.wait_for(device.unsolicited.get(), WAIT)


async def resynchronised(events: Events) -> Resynchronised:
    while True:
        event = await asyncio.wait_for(events.get(), WAIT)
        if isinstance(event, Resynchronised):
            return event


async def test_gsm_basics_with_echo_on(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=True)
    async with device_on(modem, reactor) as (dev, _):
        assert await dev.command("AT", timeout=WAIT) == AtResponse("OK", ())
        assert (await dev.command("AT+CPIN?", timeout=WAIT)).lines == ("+CPIN: READY",)
        assert (await dev.command("AT+CSQ", timeout=WAIT)).lines == ("+CSQ: 21,99",)
        assert (await dev.command("AT+CREG?", timeout=WAIT)).lines == ("+CREG: 0,1",)
        await dev.command("ATE0", timeout=WAIT)
        assert (await dev.command("AT+CSQ", timeout=WAIT)).lines == ("+CSQ: 21,99",)
        assert modem.commands == ["AT", "AT+CPIN?", "AT+CSQ", "AT+CREG?", "ATE0", "AT+CSQ"]


async def test_gsm_concurrent_callers_are_served_in_order(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    async with device_on(modem, reactor) as (dev, _):
        answers = await asyncio.gather(*(dev.command(c, timeout=WAIT) for c in
                                         ("AT+CSQ", "AT+CREG?", "AT+CPIN?", "AT+CGSN")))
        assert [a.lines for a in answers] == [("+CSQ: 21,99",), ("+CREG: 0,1",),
                                              ("+CPIN: READY",), ("356938035643809",)]


async def test_gsm_sms_in_pdu_mode(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=True)
    async with device_on(modem, reactor) as (dev, _):
        await dev.command("AT+CMGF=0", timeout=WAIT)
        response = await dev.command("AT+CMGS=20", prompt_payload=SUBMIT, timeout=WAIT)
        assert response.lines == ("+CMGS: 1",)
        assert modem.sent == [SentSms(20, SUBMIT, 1)]
        with pytest.raises(AtCmsError) as bad:
            await dev.command("AT+CMGS=21", prompt_payload=SUBMIT, timeout=WAIT)
        assert bad.value.error_code == 304
        with pytest.raises(AtCmsError):
            await dev.command("AT+CMGF=1", timeout=WAIT)

        await dev.command("AT+CNMI=2,1,0,0,0", timeout=WAIT)
        assert modem.inject_sms(DELIVER) == 1
        assert await urc(dev) == Unsolicited("+CMTI", '"SM",1')
        read = await dev.command("AT+CMGR=1", timeout=WAIT)
        assert read.lines == ("+CMGR: 0,,22", DELIVER)
        await dev.command("AT+CMGD=1", timeout=WAIT)
        with pytest.raises(AtCmsError) as gone:
            await dev.command("AT+CMGR=1", timeout=WAIT)
        assert gone.value.error_code == 321

        await dev.command("AT+CNMI=2,2,0,0,0", timeout=WAIT)
        modem.inject_sms(DELIVER)
        assert await urc(dev) == Unsolicited("+CMT", ",22", (DELIVER,))


async def test_gsm_calls_ring_clip_answer_hangup(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    async with device_on(modem, reactor) as (dev, _):
        await dev.command("AT+CLIP=1", timeout=WAIT)
        modem.inject_call("+8613912345678")
        assert await urc(dev) == Unsolicited("RING", "")
        assert await urc(dev) == Unsolicited("+CLIP", '"+8613912345678",145')
        await dev.command("ATA", timeout=WAIT)
        assert (await dev.command("AT+CLCC", timeout=WAIT)).lines == (
            '+CLCC: 1,1,0,0,0,"+8613912345678",145',)
        modem.inject_hangup()
        assert await urc(dev) == Unsolicited("NO CARRIER", "")
        modem.dial_outcome = "BUSY"
        with pytest.raises(AtCallFailed) as busy:
            await dev.command("ATD112;", timeout=WAIT)
        assert busy.value.final == "BUSY"
        modem.dial_outcome = "OK"
        await dev.command("ATD112;", timeout=WAIT)
        await dev.command("ATH", timeout=WAIT)


async def test_gsm_cme_errors_follow_cmee(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    modem.sim_ready = False
    async with device_on(modem, reactor) as (dev, _):
        with pytest.raises(AtCommandError) as plain:
            await dev.command("AT+CPIN?", timeout=WAIT)
        assert plain.value.final == "ERROR" and not isinstance(plain.value, AtCmeError)
        await dev.command("AT+CMEE=1", timeout=WAIT)
        with pytest.raises(AtCmeError) as numeric:
            await dev.command("AT+CPIN?", timeout=WAIT)
        assert numeric.value.error_code == 10
        await dev.command("AT+CMEE=2", timeout=WAIT)
        with pytest.raises(AtCmeError, match="SIM not inserted"):
            await dev.command("AT+CPIN?", timeout=WAIT)


async def test_control_characters_never_reach_the_modem(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    async with device_on(modem, reactor) as (dev, _):
        with pytest.raises(AtControlCharacter):
            await dev.command("ATD112;\rATH", timeout=WAIT)
        with pytest.raises(AtControlCharacter):
            await dev.command("AT+CMGS=20", prompt_payload=SUBMIT + "\x1a", timeout=WAIT)
        await dev.command("AT", timeout=WAIT)
        assert modem.commands == ["AT"]


async def test_silent_modem_times_out_then_resynchronises(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    settings = AtSettings(resync_interval=0.2, resync_settle=0.05)
    async with device_on(modem, reactor, settings) as (dev, events):
        modem.faults.silent = True
        queued = asyncio.ensure_future(dev.command("AT+CREG?", timeout=WAIT))
        with pytest.raises(AtTimeout):
            await dev.command("AT+CSQ", timeout=0.1)
        modem.faults.silent = False
        assert (await resynchronised(events)).probes >= 1
        # The queued command was kept and runs after the resynchronisation.
        assert (await asyncio.wait_for(queued, WAIT)).lines == ("+CREG: 0,1",)


async def test_slow_answer_is_absorbed_by_the_resynchronisation(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    settings = AtSettings(resync_interval=1.0, resync_settle=0.3)
    async with device_on(modem, reactor, settings) as (dev, events):
        modem.faults.delay = 0.2
        with pytest.raises(AtTimeout):
            await dev.command("AT+CSQ", timeout=0.05)
        await resynchronised(events)
        modem.faults.delay = 0.0
        assert (await dev.command("AT+CREG?", timeout=WAIT)).lines == ("+CREG: 0,1",)


async def test_garbled_answer_and_error_every_nth(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    settings = AtSettings(resync_interval=0.2, resync_settle=0.05)
    async with device_on(modem, reactor, settings) as (dev, events):
        modem.faults.garble_every = 1
        with pytest.raises(AtTimeout):
            await dev.command("AT+CSQ", timeout=0.2)
        modem.faults.garble_every = 0
        await resynchronised(events)
        assert (await dev.command("AT+CSQ", timeout=WAIT)).lines == ("+CSQ: 21,99",)
        modem.faults.error_every = 2
        results = []
        for _ in range(4):
            try:
                await dev.command("AT", timeout=WAIT)
                results.append("OK")
            except AtCommandError as exc:
                results.append(exc.final)
        assert results.count("ERROR") == 2 and results.count("OK") == 2


async def test_unplugged_device_fails_the_pending_command(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    path = modem.open()
    dev = AtDevice("dev", path, reactor, retry_s=60)
    await dev.start()
    try:
        modem.faults.silent = True
        pending = asyncio.ensure_future(dev.command("AT", timeout=WAIT))
        await asyncio.sleep(0)
        modem.close()
        with pytest.raises(AtLinkDown):
            await asyncio.wait_for(pending, WAIT)
    finally:
        await dev.stop()


async def test_satphone_sbd_round_trip_and_ring_alert(reactor: Any) -> None:
    phone = SatellitePhoneEmulator(echo=True)
    async with device_on(phone, reactor) as (dev, _):
        assert (await dev.command("AT+CSQ", timeout=WAIT)).lines == ("+CSQ:4",)
        await dev.command("AT+SBDWT=need water at camp 3", timeout=WAIT)
        assert (await dev.command("AT+SBDIX", timeout=WAIT)).lines == ("+SBDIX: 0, 1, 0, 0, 0, 0",)
        assert phone.mo_messages == [b"need water at camp 3"]
        phone.inject_mt_message(b"evacuate north")
        assert await urc(dev) == Unsolicited("SBDRING", "")
        assert (await dev.command("AT+SBDD0", timeout=WAIT)).lines == ("0",)
        assert (await dev.command("AT+SBDIX", timeout=WAIT)).lines == ("+SBDIX: 0, 1, 1, 1, 14, 0",)
        assert (await dev.command("AT+SBDRT", timeout=WAIT)).lines == ("+SBDRT:", "evacuate north")
        binary = await dev.command("AT+SBDRB", binary_response=True, timeout=WAIT)
        assert binary == AtResponse("OK", (), b"evacuate north")
        phone.rssi = 0
        assert (await dev.command("AT+SBDIX", timeout=WAIT)).lines[0].startswith("+SBDIX: 32,")
        await dev.command("AT+CIER=1,1,0,0", timeout=WAIT)
        phone.inject_signal(2)
        assert await urc(dev) == Unsolicited("+CIEV", "0,2")
        phone.inject_call("+881631234567")
        assert await urc(dev) == Unsolicited("RING", "")
        await dev.command("ATA", timeout=WAIT)


async def test_tetra_group_call_floor_and_sds(reactor: Any) -> None:
    radio = TetraRadioEmulator()
    async with device_on(radio, reactor) as (dev, _):
        assert (await dev.command("AT+CTOM?", timeout=WAIT)).lines == ("+CTOM: 0",)
        await dev.command("AT+CTGS=1,9001", timeout=WAIT)
        assert (await dev.command("AT+CTGS?", timeout=WAIT)).lines == ("+CTGS: 1,9001",)
        await dev.command("AT+CTSDC=0,0,0,1,1,0,1,1,0,0", timeout=WAIT)
        await dev.command("ATD9001", timeout=WAIT)
        assert await urc(dev) == Unsolicited("+CTCC", "1,1,1,0,0,1,1")
        assert await urc(dev) == Unsolicited("+CTXG", "1,0,0,0")
        await dev.command("AT+CUTXC=1", timeout=WAIT)
        assert await urc(dev) == Unsolicited("+CDTXC", "1,0")

        cc = radio.inject_group_call("9002", "2001")
        assert await urc(dev) == Unsolicited("+CTICN", f"{cc},0,0,0,2001,1,1,0,1,1,1,9002,0")
        assert await urc(dev) == Unsolicited("+CTXG", f"{cc},3,0,0,0,2001")
        await dev.command(f"AT+CTXD={cc},0", timeout=WAIT)
        assert await urc(dev) == Unsolicited("+CTXG", f"{cc},1,1,0")
        radio.inject_talk_end(cc)
        assert await urc(dev) == Unsolicited("+CDTXC", f"{cc},0")
        await dev.command(f"AT+CTXD={cc},0", timeout=WAIT)
        assert await urc(dev) == Unsolicited("+CTXG", f"{cc},0,0,0")
        assert radio.tx_demands == [cc, cc]
        radio.inject_talk(cc, "2002")  # pre-empted mid-burst
        assert await urc(dev) == Unsolicited("+CTXG", f"{cc},3,0,0,0,2002")
        await dev.command("ATH", timeout=WAIT)
        assert {(await urc(dev)).value, (await urc(dev)).value} == {"1,1", f"{cc},1"}

        await dev.command("AT+CTSDS=12,0", timeout=WAIT)
        bits, data = simple_text_sds("Fire at block 3")
        sent = await dev.command(f"AT+CMGS=2001,{bits}", payload=data, timeout=WAIT)
        assert sent.lines == ("+CMGS: 0,4,1",)
        assert radio.sds_sent == [SentSds("2001", bits, data, 12)]
        radio.inject_sds("2001", simple_text_sds("on our way")[1])
        incoming = await urc(dev)
        assert incoming.name == "+CTSDSR" and incoming.value == "12,2001,0,1001,0,96"
        assert decode_simple_text_sds(incoming.extra_lines[0]) == "on our way"
        await dev.command("AT+CMEE=1", timeout=WAIT)
        with pytest.raises(AtCmeError) as no_call:
            await dev.command("AT+CTXD=99,0", timeout=WAIT)
        assert no_call.value.error_code == 34


async def test_cancelled_caller_drops_its_queued_command(reactor: Any) -> None:
    modem = GsmModemEmulator(echo=False)
    async with device_on(modem, reactor) as (dev, _):
        modem.faults.silent = True
        first = asyncio.ensure_future(dev.command("AT", timeout=WAIT))
        second = asyncio.ensure_future(dev.command("AT+CSQ", timeout=WAIT))
        await asyncio.sleep(0)
        engine = dev.link.protocol.engine
        assert engine.in_flight is not None and len(engine.queued) == 1
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert engine.queued == ()
        assert dev.health()["at_state"] == "awaiting_final"
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
