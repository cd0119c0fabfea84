"""The satphone gateway alone on the Iridium emulator's pty: long SMS reassembly and its limits."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from hardware.emulators import SatellitePhoneEmulator
from radio.satphone import (
    SatLinkUp,
    SatphoneError,
    SatphoneEvent,
    SatphoneGateway,
    SatphoneSettings,
    SmsReceived,
)
from sms.encoding import segment
from sms.pdu import encode_deliver

WAIT = 10.0
TEXT = ("泥石流冲毁了村口的桥梁，三十余名村民被困在山腰的小学里，其中五人受伤，"
        "通信基站断电，请求直升机救援并空投药品和饮用水，我们会在操场上点火作为信号。")
WHEN = dt.datetime(2026, 7, 1, 3, 0, tzinfo=dt.UTC)


async def run(reactor: Any, test: Any, reassembly_s: float = 600.0) -> list[SatphoneEvent]:
    phone = SatellitePhoneEmulator()
    events: asyncio.Queue[SatphoneEvent] = asyncio.Queue()
    seen: list[SatphoneEvent] = []

    def on_event(event: SatphoneEvent) -> None:
        seen.append(event)
        events.put_nowait(event)

    gw = SatphoneGateway(SatphoneSettings("sat1", phone.open(), poll_s=3600,
                                          sms_reassembly_s=reassembly_s), reactor, on_event)
    await gw.start()
    try:
        assert any(isinstance(e, SatLinkUp) for e in seen)
        await test(phone, gw, events)
    finally:
        await gw.stop()
        phone.close()
    return seen


async def next_sms(events: asyncio.Queue[SatphoneEvent]) -> SmsReceived:
    while True:
        event = await asyncio.wait_for(events.get(), WAIT)
        if isinstance(event, SmsReceived):
            return event


async def test_a_long_chinese_sms_is_joined(reactor: Any) -> None:
    message = segment(TEXT, ref=77)
    assert message.total == 2

    async def test(phone: Any, gw: SatphoneGateway, events: Any) -> None:
        for index in (1, 0):  # out of order, as networks deliver them
            phone.inject_sms(encode_deliver("+8613900000009", message, WHEN, index=index))
        sms = await next_sms(events)
        assert (sms.sender, sms.text, sms.complete, sms.sent_at) == (
            "+8613900000009", TEXT, True, WHEN)

    await run(reactor, test)


async def test_a_missing_part_does_not_hold_the_rest_for_ever(reactor: Any) -> None:
    message = segment(TEXT, ref=78)

    async def test(phone: Any, gw: SatphoneGateway, events: Any) -> None:
        phone.inject_sms(encode_deliver("+8613900000009", message, WHEN, index=0))
        sms = await next_sms(events)  # after sms_reassembly_s, what came is delivered
        assert not sms.complete and sms.text.startswith(TEXT[:20])

    await run(reactor, test, reassembly_s=0.2)


async def test_stop_delivers_what_is_waiting(reactor: Any) -> None:
    message = segment(TEXT, ref=79)

    async def test(phone: Any, gw: SatphoneGateway, events: Any) -> None:
        phone.inject_sms(encode_deliver("+8613900000009", message, WHEN, index=1))
        await phone_answered(gw)

    async def phone_answered(gw: SatphoneGateway) -> None:
        # One command round trip: the +CMT before it has been read by then.
        await gw.device.command("AT", timeout=WAIT)

    seen = await run(reactor, test)
    sms = [e for e in seen if isinstance(e, SmsReceived)]
    assert len(sms) == 1 and not sms[0].complete


async def test_refusals_before_anything_is_written(reactor: Any) -> None:
    async def test(phone: Any, gw: SatphoneGateway, events: Any) -> None:
        before = len(phone.commands)
        for call in (gw.dial("12;ATH"), gw.send_sms("+86139", "x" * 2000),
                     gw.send_sms("not-a-number", "hi"), gw.send_sbd("中文"), gw.answer()):
            try:
                await call
            except SatphoneError:
                continue
            raise AssertionError("accepted")
        assert len(phone.commands) == before

    await run(reactor, test)
