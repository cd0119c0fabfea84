"""A GSM modem as TS 27.007 / TS 27.005 describe it, PDU mode only.

Enough of a real modem for the SMS gateway and a voice line: ``AT``,
``ATE0/1``, ``+CMEE``, ``+CPIN?``, ``+CREG``, ``+CSQ``, ``+CMGF=0``,
``+CMGS=<len>`` with the ``"> "`` prompt, ``+CNMI`` (``+CMTI`` or ``+CMT``),
``+CMGR``/``+CMGD``/``+CMGL``/``+CPMS``, ``ATD``/``ATA``/``ATH``/``+CLCC``,
``RING`` and ``+CLIP``.  PDUs are opaque hex here: what ``+CMGS`` received is
kept as it came, and an incoming SMS is whatever hex PDU the test injects
(the encoder lives in ``sms``, which this package does not import).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from hardware.emulators.base import ERROR, OK, AtEmulator, Faults, Reply, digits, split_args

_HEX = frozenset(string.hexdigits)

# TS 27.005 3.2.5 <err> values used here.
CMS_OPERATION_NOT_SUPPORTED = 303
CMS_INVALID_PDU_PARAMETER = 304
CMS_INVALID_MEMORY_INDEX = 321
CMS_MEMORY_FULL = 322


@dataclass(frozen=True)
class SentSms:
    """One ``AT+CMGS`` the modem accepted."""

    length: int
    pdu: str
    reference: int


@dataclass
class Call:
    """The one voice call the emulator carries."""

    number: str
    incoming: bool
    state: int  # +CLCC <stat>: 0 active, 2 dialing, 4 incoming


def tpdu_length(pdu: str) -> int | None:
    """Octets after the SMSC address (the ``<length>`` of ``AT+CMGS``), or ``None`` if malformed."""
    if len(pdu) < 2 or len(pdu) % 2 or not set(pdu) <= _HEX:
        return None
    sca = int(pdu[:2], 16)
    octets = len(pdu) // 2 - 1 - sca
    return octets if octets > 0 else None


class GsmModemEmulator(AtEmulator):
    """A GSM modem on a pty; inject calls and SMS, inspect what was sent."""

    identity = "dispatchd GSM modem emulator"
    slots = 30

    def __init__(self, *, echo: bool = True, faults: Faults | None = None,
                 smsc: str = "+8613800100500") -> None:
        """A registered modem with a ready SIM and an empty message store."""
        super().__init__(echo=echo, faults=faults)
        self.sim_ready = True
        self.registration = 1
        self.creg_n = 0
        self.rssi = 21
        self.cmgf = 0
        self.cnmi_mt = 0
        self.clip = False
        self.crc = False
        self.charset = "GSM"
        self.smsc = smsc
        self.dial_outcome = "OK"
        self.sent: list[SentSms] = []
        self.store: dict[int, tuple[int, str]] = {}
        self.call: Call | None = None
        self._mr = 0
        self.handlers.update({
            "+CPIN": self._cmd_cpin, "+CREG": self._cmd_creg, "+CSQ": self._cmd_csq,
            "+CMGF": self._cmd_cmgf, "+CMGS": self._cmd_cmgs, "+CNMI": self._cmd_cnmi,
            "+CMGR": self._cmd_cmgr, "+CMGD": self._cmd_cmgd, "+CMGL": self._cmd_cmgl,
            "+CPMS": self._cmd_cpms, "+CSCA": self._cmd_csca, "+CLIP": self._cmd_clip,
            "D": self._cmd_dial, "A": self._cmd_answer, "H": self._cmd_hangup,
            "+CHUP": self._cmd_hangup, "+CLCC": self._cmd_clcc,
            "+CGMI": lambda op, a: Reply(("dispatchd",)),
            "+CGMM": lambda op, a: Reply(("GSM emulator",)),
            "+CGMR": lambda op, a: Reply(("1.0",)),
            "+CGSN": lambda op, a: Reply(("356938035643809",)),
            "+CIMI": lambda op, a: Reply(("460001234567890",)),
            "+CFUN": lambda op, a: Reply(("+CFUN: 1",)) if op == "?" else OK,
            "+COPS": lambda op, a: Reply(('+COPS: 0,0,"EMULATOR"',)) if op == "?" else OK,
            "+CSMP": lambda op, a: OK, "+CSCS": self._cmd_cscs, "+CRC": self._cmd_crc,
            "+CVHU": lambda op, a: OK,
        })

    # --- what tests do ----------------------------------------------------------------------

    def inject_call(self, number: str) -> None:
        """An incoming voice call: ``RING`` (and ``+CLIP`` if enabled)."""
        self.call = Call(number, incoming=True, state=4)
        self.ring()

    def ring(self) -> None:
        """Repeat ``RING`` for the call still ringing (real modems do every few seconds)."""
        if self.call is None or self.call.state != 4:
            return
        # +CRC=1 asks for the extended form (TS 27.007 6.11).
        self.unsolicited("+CRING: VOICE" if self.crc else "RING")
        if self.clip:
            kind = 145 if self.call.number.startswith("+") else 129
            self.unsolicited(f'+CLIP: "{self.call.number}",{kind}')

    def inject_hangup(self) -> None:
        """The far end hangs up: ``NO CARRIER``."""
        if self.call is not None:
            self.call = None
            self.unsolicited("NO CARRIER")

    def inject_sms(self, pdu: str) -> int | None:
        """An SMS-DELIVER arrives as hex ``pdu``; return its store index (None if routed)."""
        length = tpdu_length(pdu)
        if length is None:
            raise ValueError("not a hex PDU with an SMSC address")
        if self.cnmi_mt == 2:
            self.unsolicited(f"+CMT: ,{length}", pdu)
            return None
        index = next(i for i in range(1, self.slots + 2) if i not in self.store)
        if index > self.slots:
            return None
        self.store[index] = (0, pdu)
        if self.cnmi_mt == 1:
            self.unsolicited(f'+CMTI: "SM",{index}')
        return index

    def inject_registration(self, stat: int) -> None:
        """Registration changes (``+CREG: <stat>`` if ``AT+CREG=1``)."""
        self.registration = stat
        if self.creg_n >= 1:
            self.unsolicited(f"+CREG: {stat}")

    # --- commands ---------------------------------------------------------------------------

    def _cmd_cpin(self, op: str, args: str) -> Reply:
        if not self.sim_ready:
            return self.cme(10, "SIM not inserted")
        return Reply(("+CPIN: READY",)) if op == "?" else OK

    def _cmd_creg(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f"+CREG: {self.creg_n},{self.registration}",))
        if op == "=" and args in ("0", "1", "2"):
            self.creg_n = int(args)
            return OK
        return Reply(("+CREG: (0-2)",)) if op == "=?" else ERROR

    def _cmd_csq(self, op: str, args: str) -> Reply:
        if op == "=?":
            return Reply(("+CSQ: (0-31,99),(0-7,99)",))
        return Reply((f"+CSQ: {self.rssi},99",))

    def _cmd_cmgf(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f"+CMGF: {self.cmgf}",))
        if op == "=?":
            return Reply(("+CMGF: (0)",))
        if args == "0":
            return OK
        return Reply(final=f"+CMS ERROR: {CMS_OPERATION_NOT_SUPPORTED}")

    def _cmd_cmgs(self, op: str, args: str) -> Reply | None:
        if op != "=" or not digits(args) or not 1 <= int(args) <= 164:
            return Reply(final=f"+CMS ERROR: {CMS_INVALID_PDU_PARAMETER}")
        length = int(args)

        def submit(pdu: str) -> Reply:
            if tpdu_length(pdu) != length:
                return Reply(final=f"+CMS ERROR: {CMS_INVALID_PDU_PARAMETER}")
            self._mr = (self._mr + 1) % 256
            self.sent.append(SentSms(length, pdu.upper(), self._mr))
            return Reply((f"+CMGS: {self._mr}",))

        self.expect_text(submit)
        return None

    def _cmd_cnmi(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f"+CNMI: 2,{self.cnmi_mt},0,0,0",))
        if op == "=?":
            return Reply(("+CNMI: (0-2),(0-2),(0),(0),(0)",))
        fields = split_args(args)
        if len(fields) >= 2 and fields[1] in ("0", "1", "2"):
            self.cnmi_mt = int(fields[1])
            return OK
        return Reply(final=f"+CMS ERROR: {CMS_OPERATION_NOT_SUPPORTED}")

    def _cmd_cmgr(self, op: str, args: str) -> Reply:
        index = int(args) if digits(args) else -1
        if index not in self.store:
            return Reply(final=f"+CMS ERROR: {CMS_INVALID_MEMORY_INDEX}")
        stat, pdu = self.store[index]
        self.store[index] = (1 if stat == 0 else stat, pdu)
        return Reply((f"+CMGR: {stat},,{tpdu_length(pdu)}", pdu))

    def _cmd_cmgd(self, op: str, args: str) -> Reply:
        if op == "=?":
            return Reply((f"+CMGD: (1-{self.slots}),(0-4)",))
        fields = split_args(args)
        if len(fields) >= 2 and fields[1] == "4":
            self.store.clear()
            return OK
        index = int(fields[0]) if fields and digits(fields[0]) else -1
        if index not in self.store:
            return Reply(final=f"+CMS ERROR: {CMS_INVALID_MEMORY_INDEX}")
        del self.store[index]
        return OK

    def _cmd_cmgl(self, op: str, args: str) -> Reply:
        wanted = int(args) if digits(args) else 4
        lines: list[str] = []
        for index in sorted(self.store):
            stat, pdu = self.store[index]
            if wanted in (4, stat):
                lines += [f"+CMGL: {index},{stat},,{tpdu_length(pdu)}", pdu]
                if stat == 0:
                    self.store[index] = (1, pdu)
        return Reply(tuple(lines))

    def _cmd_cpms(self, op: str, args: str) -> Reply:
        used, total = len(self.store), self.slots
        if op == "?":
            return Reply((f'+CPMS: "SM",{used},{total},"SM",{used},{total},"SM",{used},{total}',))
        if op == "=?":
            return Reply(('+CPMS: ("SM"),("SM"),("SM")',))
        return Reply((f"+CPMS: {used},{total},{used},{total},{used},{total}",))

    def _cmd_csca(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f'+CSCA: "{self.smsc}",145',))
        if op == "=" and args:
            self.smsc = split_args(args)[0]
        return OK

    def _cmd_cscs(self, op: str, args: str) -> Reply:
        if op == "=?":
            return Reply(('+CSCS: ("GSM","IRA","UCS2")',))
        if op == "?":
            return Reply((f'+CSCS: "{self.charset}"',))
        charset = args.strip('"')
        if charset not in ("GSM", "IRA", "UCS2"):
            return self.cme(4, "operation not supported")
        self.charset = charset
        return OK

    def _cmd_crc(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f"+CRC: {int(self.crc)}",))
        self.crc = args == "1"
        return OK

    def _cmd_clip(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f"+CLIP: {int(self.clip)},1",))
        self.clip = args == "1"
        return OK

    def _cmd_dial(self, op: str, args: str) -> Reply:
        number = args.strip()
        if not number.endswith(";"):
            return Reply(final="NO CARRIER")  # data calls are not emulated
        if self.call is not None:
            return Reply(final="BUSY")
        if self.dial_outcome != "OK":
            return Reply(final=self.dial_outcome)
        self.call = Call(number[:-1], incoming=False, state=0)
        return OK

    def _cmd_answer(self, op: str, args: str) -> Reply:
        if self.call is None or self.call.state != 4:
            return Reply(final="NO CARRIER")
        self.call.state = 0
        return OK

    def _cmd_hangup(self, op: str, args: str) -> Reply:
        self.call = None
        return OK

    def _cmd_clcc(self, op: str, args: str) -> Reply:
        if self.call is None:
            return OK
        call = self.call
        kind = 145 if call.number.startswith("+") else 129
        return Reply((f'+CLCC: 1,{int(call.incoming)},{call.state},0,0,"{call.number}",{kind}',))
