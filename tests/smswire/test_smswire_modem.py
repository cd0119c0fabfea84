"""GSM modems over real ptys (hardware.emulators.gsm): PDU-mode send, +CMTI receive, pools.

What the emulator received is decoded again with the TPDU decoder and
compared with what was meant; incoming Chinese messages are injected as the
SMS-DELIVER parts a network would deliver, out of order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from hardware.emulators import GsmModemEmulator
from hardware.emulators.base import Reply
from sms.encoding import segment
from sms.pdu import SmsSubmit, decode_pdu, encode_deliver
from sms.transport.errors import SubmitPermanentError, SubmitTemporaryError
from sms.transport.modem import GsmModem, ModemPool, ModemSms

WAIT = 10.0
FLOOD_ZH = ("【防汛指挥部】受强降雨影响，东江水位持续上涨，预计今晚二十二时超过警戒水位。"
            "请沿江低洼地带居民立即撤离至镇中心小学、文化广场等安置点，携带身份证件和必要药品，"
            "服从现场工作人员指挥。咨询电话12345。")


@asynccontextmanager
async def modems(reactor: Any, count: int, on_message: Any = None
                 ) -> AsyncIterator[tuple[list[GsmModemEmulator], list[GsmModem]]]:
    emulators = [GsmModemEmulator(echo=True) for _ in range(count)]
    clients = [GsmModem(f"gsm{i}", e.open(), reactor, command_timeout=WAIT,
                        on_message=on_message) for i, e in enumerate(emulators)]
    for client in clients:
        await client.start()
    try:
        yield emulators, clients
    finally:
        for client in clients:
            await client.stop()
        for e in emulators:
            e.close()


async def deletes(emulator: GsmModemEmulator, count: int) -> None:
    """Wait until the emulator has answered ``count`` AT+CMGD commands."""
    done = asyncio.Event()

    def seen(_: str) -> None:
        if sum(c.startswith("AT+CMGD") for c in emulator.commands) >= count:
            done.set()

    emulator.on_command = seen
    seen("")
    await asyncio.wait_for(done.wait(), WAIT)


def sent_text(emulator: GsmModemEmulator) -> tuple[str, list[SmsSubmit]]:
    """Decode what the emulator took with AT+CMGS, joined in part order."""
    parts = []
    for sms in emulator.sent:
        decoded = decode_pdu(sms.pdu)
        assert isinstance(decoded, SmsSubmit)
        parts.append(decoded)
    parts.sort(key=lambda p: p.concat.seq if p.concat else 1)
    return "".join(p.text for p in parts), parts


async def test_long_chinese_message_goes_out_as_udh_parts(reactor: Any) -> None:
    async with modems(reactor, 1) as ([emulator], [modem]):
        refs = await modem.submit("+8613912345678", FLOOD_ZH, max_parts=6)
    text, parts = sent_text(emulator)
    assert text == FLOOD_ZH
    assert len(refs) == len(parts) == segment(FLOOD_ZH).total == 2
    assert {p.destination for p in parts} == {"+8613912345678"}
    assert [p.concat.seq for p in parts if p.concat] == [1, 2]
    assert emulator.commands[:4] == ["ATE0", "AT+CMEE=1", "AT+CMGF=0", "AT+CNMI=2,1,0,0,0"]


async def test_too_long_is_permanent_and_refused_is_temporary(reactor: Any) -> None:
    async with modems(reactor, 1) as ([emulator], [modem]):
        with pytest.raises(SubmitPermanentError):
            await modem.submit("+8613912345678", "洪" * 1000, max_parts=3)
        # No network service (TS 27.005 <err> 331): refused now, may work later.
        emulator.handlers["+CMGS"] = lambda op, args: Reply(final="+CMS ERROR: 331")
        with pytest.raises(SubmitTemporaryError) as err:
            await modem.submit("+8613912345678", "test", max_parts=3)
        assert err.value.status == 331 and not err.value.accepted
    assert emulator.sent == []


async def test_incoming_multipart_chinese_reassembled_then_deleted(reactor: Any) -> None:
    got: asyncio.Queue[ModemSms] = asyncio.Queue()

    async def store(sms: ModemSms) -> None:
        await got.put(sms)

    message = segment(FLOOD_ZH, ref=0x5A)
    stamp = dt.datetime(2026, 7, 1, 21, 30, tzinfo=dt.UTC)
    pdus = [encode_deliver("+8613800001111", message, stamp, smsc="+8613800100500", index=i)
            for i in range(message.total)]
    async with modems(reactor, 1, store) as ([emulator], [modem]):
        await modem.ensure_ready()
        for i in (1, 0):  # the network delivers parts out of order
            emulator.inject_sms(pdus[i])
        sms = await asyncio.wait_for(got.get(), WAIT)
        assert sms.message.text == FLOOD_ZH and sms.message.complete
        assert sms.message.sender == "+8613800001111" and sms.modem == "gsm0"
        assert sms.message.parts_total == 2
        await deletes(emulator, 2)
        assert emulator.store == {}, "both parts deleted once the whole message was stored"


async def test_messages_stored_while_away_are_collected_at_start(reactor: Any) -> None:
    got: list[ModemSms] = []

    async def store(sms: ModemSms) -> None:
        got.append(sms)

    emulator = GsmModemEmulator(echo=False)
    path = emulator.open()
    emulator.inject_sms(encode_deliver("+8613800002222", "桥梁坍塌，有人落水", dt.datetime(
        2026, 7, 1, tzinfo=dt.UTC)))  # +CNMI not set yet: stored silently
    modem = GsmModem("gsm0", path, reactor, command_timeout=WAIT, on_message=store)
    await modem.start()
    try:
        await modem.ensure_ready()
    finally:
        await modem.stop()
        emulator.close()
    assert [(s.message.sender, s.message.text) for s in got] == [
        ("+8613800002222", "桥梁坍塌，有人落水")]
    assert emulator.store == {}


async def test_failing_callback_leaves_the_message_on_the_sim(reactor: Any) -> None:
    calls = asyncio.Event()

    async def broken(sms: ModemSms) -> None:
        calls.set()
        raise RuntimeError("database down")

    async with modems(reactor, 1, broken) as ([emulator], [modem]):
        await modem.ensure_ready()
        emulator.inject_sms(encode_deliver("+8613800003333", "help", dt.datetime(
            2026, 7, 1, tzinfo=dt.UTC)))
        await asyncio.wait_for(calls.wait(), WAIT)
        await modem._command("AT")
        assert list(emulator.store) == [1], "not stored by us, so not deleted"


async def test_pool_spreads_load_over_modems(reactor: Any) -> None:
    async with modems(reactor, 2) as (emulators, clients):
        pool = ModemPool("modems", clients)
        await asyncio.gather(*(pool.submit(f"+86139000000{i:02d}", f"Evacuate now {i}",
                                           max_parts=3) for i in range(12)))
    counts = [len(e.sent) for e in emulators]
    assert sum(counts) == 12 and min(counts) >= 3, counts
    texts = sorted(decode_pdu(s.pdu).text for e in emulators for s in e.sent)  # type: ignore[union-attr]
    assert texts == sorted(f"Evacuate now {i}" for i in range(12))


async def test_a_held_modem_writes_no_cmgs_until_the_hold_lifts(reactor: Any) -> None:
    """A clustered node that may not act (dispatch/fencing.py) holds its modems: the
    part in hand waits, and so does every send queued behind it; none is lost."""
    hold = {"on": False}
    async with modems(reactor, 1) as ([emulator], [modem]):
        modem.hold = lambda: hold["on"]
        engaged = asyncio.Event()

        def seen(command: str) -> None:
            # The hold engages while the first part of the long message is on the air.
            if command.startswith("AT+CMGS=") and not engaged.is_set():
                hold["on"] = True
                engaged.set()

        emulator.on_command = seen
        long = asyncio.ensure_future(modem.submit("+8613912345678", FLOOD_ZH, max_parts=6))
        await asyncio.wait_for(engaged.wait(), WAIT)
        short = [asyncio.ensure_future(modem.submit(f"+861391234567{i}", f"撤离 {i}",
                                                    max_parts=1)) for i in range(3)]
        # Everything is waiting on the hold: the long message's second part, then the rest.
        while not (modem.held == 1 and modem.busy == 4):
            await asyncio.sleep(0.02)
        assert [c for c in emulator.commands if c.startswith("AT+CMGS")] == [
            emulator.commands[-1]] and len(emulator.sent) == 1
        assert modem.health()["held"] == 1
        hold["on"] = False
        refs = await asyncio.wait_for(long, WAIT)
        assert len(refs) == 2
        assert [len(await asyncio.wait_for(s, WAIT)) for s in short] == [1, 1, 1]
    parts = [decode_pdu(s.pdu) for s in emulator.sent]
    assert [p.destination for p in parts] == [  # type: ignore[union-attr]
        "+8613912345678", "+8613912345678", *(f"+861391234567{i}" for i in range(3))]
