"""A satellite phone on the Iridium ISU AT command set (voice plus SBD).

Voice calls, ``RING`` and ``+CLIP`` come from the GSM modem; on top of it:
``+CSQ`` on Iridium's 0-5 scale (``+CSQ:<n>``, no space), ``+SBDWT`` (with
text inline, or ``READY`` then a line), ``+SBDIX[A]`` (one SBD session:
``+SBDIX: <MO status>, <MOMSN>, <MT status>, <MTMSN>, <MT length>, <MT
queued>``), ``+SBDRT`` (text) and ``+SBDRB`` (binary: 2-byte length, bytes,
2-byte checksum), ``+SBDD0/1/2``, ``+SBDS``, ``+SBDMTA`` with the
``SBDRING`` alert, and ``+CIER`` indicator events (``+CIEV:0,<signal>``).
"""

from __future__ import annotations

from collections import deque

from hardware.emulators.base import ERROR, OK, Faults, Reply
from hardware.emulators.gsm import GsmModemEmulator

MO_NO_NETWORK = 32  # ISU-reported <MO status>: no network service
SBD_MAX_MO = 340


class SatellitePhoneEmulator(GsmModemEmulator):
    """An Iridium-like handset; inject MT messages and calls, inspect MO messages."""

    identity = "dispatchd Iridium emulator"

    def __init__(self, *, echo: bool = True, faults: Faults | None = None) -> None:
        """In view of a satellite (signal 4), empty SBD buffers."""
        super().__init__(echo=echo, faults=faults)
        self.rssi = 4
        self.mo_buffer: bytes | None = None
        self.mt_buffer: bytes | None = None
        self.mo_messages: list[bytes] = []
        self.mt_queue: deque[bytes] = deque()
        self.momsn = 0
        self.mtmsn = 0
        self.ring_alerts = True
        self.signal_events = False
        self.handlers.update({
            "+CSQ": self._cmd_csq, "+CSQF": self._cmd_csq,
            "+SBDWT": self._cmd_sbdwt, "+SBDIX": self._cmd_sbdix, "+SBDIXA": self._cmd_sbdix,
            "+SBDRT": self._cmd_sbdrt, "+SBDRB": self._cmd_sbdrb, "+SBDS": self._cmd_sbds,
            "+SBDMTA": self._cmd_sbdmta, "+CIER": self._cmd_cier,
            "+SBDD0": lambda op, a: self._clear(mo=True, mt=False),
            "+SBDD1": lambda op, a: self._clear(mo=False, mt=True),
            "+SBDD2": lambda op, a: self._clear(mo=True, mt=True),
        })

    def inject_mt_message(self, data: bytes) -> None:
        """A mobile-terminated message waits at the gateway (``SBDRING`` if alerts are on)."""
        self.mt_queue.append(data)
        if self.ring_alerts:
            self.unsolicited("SBDRING")

    def inject_signal(self, bars: int) -> None:
        """Signal strength changes (0-5); ``+CIEV:0,<bars>`` if ``AT+CIER=1,1``."""
        self.rssi = bars
        if self.signal_events:
            self.unsolicited(f"+CIEV:0,{bars}")

    def _cmd_cier(self, op: str, args: str) -> Reply:
        fields = args.split(",")
        self.signal_events = len(fields) >= 2 and fields[0] == "1" and fields[1] == "1"
        return OK

    def _cmd_csq(self, op: str, args: str) -> Reply:
        return Reply((f"+CSQ:{self.rssi}",)) if op == "" else Reply(("+CSQ:(0-5)",))

    def _cmd_sbdwt(self, op: str, args: str) -> Reply | None:
        if op == "=":
            if len(args) > SBD_MAX_MO:
                return ERROR
            self.mo_buffer = args.encode("latin-1")
            return OK

        def line(text: str) -> Reply:
            self.mo_buffer = text.encode("latin-1")
            return Reply(("0",))

        self.expect_text(line, prompt=b"\r\nREADY\r\n", end=0x0D)
        return None

    def _cmd_sbdix(self, op: str, args: str) -> Reply:
        if self.rssi == 0:
            return Reply((f"+SBDIX: {MO_NO_NETWORK}, {self.momsn}, 2, {self.mtmsn}, 0, 0",))
        mo_status = 0
        if self.mo_buffer is not None:
            self.mo_messages.append(self.mo_buffer)
            self.momsn = (self.momsn + 1) % 65536
        mt_status, mt_length = 0, 0
        if self.mt_queue:
            self.mt_buffer = self.mt_queue.popleft()
            self.mtmsn = (self.mtmsn + 1) % 65536
            mt_status, mt_length = 1, len(self.mt_buffer)
        return Reply((f"+SBDIX: {mo_status}, {self.momsn}, {mt_status}, {self.mtmsn}, "
                       f"{mt_length}, {len(self.mt_queue)}",))

    def _cmd_sbdrt(self, op: str, args: str) -> Reply:
        return Reply(("+SBDRT:", (self.mt_buffer or b"").decode("latin-1")))

    def _cmd_sbdrb(self, op: str, args: str) -> Reply:
        data = self.mt_buffer or b""
        checksum = sum(data) & 0xFFFF
        return Reply(raw=len(data).to_bytes(2, "big") + data + checksum.to_bytes(2, "big"))

    def _cmd_sbds(self, op: str, args: str) -> Reply:
        mt = self.mtmsn if self.mt_buffer is not None else -1
        return Reply((f"+SBDS: {int(self.mo_buffer is not None)}, {self.momsn}, "
                      f"{int(self.mt_buffer is not None)}, {mt}",))

    def _cmd_sbdmta(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f"+SBDMTA: {int(self.ring_alerts)}",))
        if args not in ("0", "1"):
            return ERROR
        self.ring_alerts = args == "1"
        return OK

    def _clear(self, *, mo: bool, mt: bool) -> Reply:
        if mo:
            self.mo_buffer = None
        if mt:
            self.mt_buffer = None
        return Reply(("0",))
