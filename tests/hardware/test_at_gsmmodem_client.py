"""The modem emulator against an independent AT client: python-gsmmodem-new.

The client is threaded and blocking, so it runs in an executor while the
emulator serves its pty on the test loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gsmmodem.modem import GsmModem

from hardware.emulators import GsmModemEmulator

# SMS-DELIVER from +8613912345678, "hi", GSM 7-bit, with an SMSC address.
DELIVER = "0891683108100005F0040D91683119325476F800006211122100000002E834"
WAIT = 20.0


async def test_python_gsmmodem_connects_reads_signal_sends_and_receives_pdu_sms() -> None:
    modem = GsmModemEmulator(echo=True)
    path = modem.open()
    loop = asyncio.get_running_loop()
    received: asyncio.Future[Any] = loop.create_future()
    deleted: asyncio.Future[str] = loop.create_future()
    modem.on_command = lambda line: (line.startswith("AT+CMGD") and not deleted.done()
                                     and deleted.set_result(line))

    def on_sms(sms: Any) -> None:
        loop.call_soon_threadsafe(lambda: received.done() or received.set_result(sms))

    client = GsmModem(path, 115200, smsReceivedCallbackFunc=on_sms)
    client.smsTextMode = False
    try:
        await asyncio.wait_for(loop.run_in_executor(None, client.connect), WAIT)
        assert await loop.run_in_executor(None, lambda: client.signalStrength) == 21
        sms = await asyncio.wait_for(loop.run_in_executor(
            None, lambda: client.sendSms("+8613912345678", "hello from gsmmodem")), WAIT)
        assert sms.reference == 1
        assert len(modem.sent) == 1
        # SMS-SUBMIT, destination +8613912345678 in swapped semi-octets, 7-bit text.
        assert "0D91683119325476F8" in modem.sent[0].pdu
        assert modem.sent[0].length == len(modem.sent[0].pdu) // 2 - 1

        modem.inject_sms(DELIVER)
        incoming = await asyncio.wait_for(received, WAIT)
        assert incoming.number == "+8613912345678" and incoming.text == "hi"
        # The client reads the stored message and deletes it from its own thread; one more
        # command (serialised behind that one by the client's lock) lets it finish first.
        assert await asyncio.wait_for(deleted, WAIT) == "AT+CMGD=1,0"
        await loop.run_in_executor(None, lambda: client.signalStrength)
        assert modem.store == {}
    finally:
        await loop.run_in_executor(None, client.close)
        modem.close()
