"""A TETRA radio's Peripheral Equipment Interface (ETSI EN 300 392-5), trunked mode.

What the dispatch gateway uses: ``AT+CTOM`` (operating mode), ``AT+CTGS``
(group attachment), ``AT+CTSDC`` then ``ATD<gssi>`` (group call set-up:
``OK`` then ``+CTCC`` and ``+CTXG``), ``AT+CTXD`` (transmit demand, answered
by ``+CTXG``: granted, or not while another member holds the floor),
``AT+CUTXC`` (transmission ceased: ``+CDTXC``), ``ATH`` (``+CTCR``),
``AT+CTSDS`` and ``AT+CMGS=<called>,<bits>`` followed straight away by
``CR LF <hex user data> Ctrl-Z`` (no prompt by default), and the
unsolicited ``+CTICN`` (incoming call), ``+CTXG`` (someone else talking),
``+CDTXC``, ``+CTCR`` and ``+CTSDSR`` (SDS received, user data on the next
line; ``inject_location`` sends a LIP short location report).  SDS user
data is hex; :func:`simple_text_sds` builds the Simple Text Messaging form
(protocol 0x02, Latin-1) of EN 300 392-2 29.5.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from hardware.emulators.base import OK, AtEmulator, Faults, Reply, digits, split_args

_HEX = frozenset(string.hexdigits)

PID_SIMPLE_TEXT = 0x02
CODING_LATIN1 = 0x01
PID_LIP = 0x0A
EMERGENCY_PRIORITY = 15
CAUSE_USER_REQUESTED = 1
TX_GRANTED, TX_NOT_GRANTED, TX_QUEUED, TX_GRANTED_TO_OTHER = 0, 1, 2, 3


def simple_text_sds(text: str) -> tuple[int, str]:
    """Simple Text Messaging user data for ``text``: (length in bits, hex)."""
    data = bytes([PID_SIMPLE_TEXT, CODING_LATIN1]) + text.encode("latin-1")
    return len(data) * 8, data.hex().upper()


def decode_simple_text_sds(user_data: str) -> str | None:
    """The text of Simple Text Messaging user data, or ``None`` if it is not that."""
    try:
        data = bytes.fromhex(user_data)
    except ValueError:
        return None
    if len(data) < 2 or data[0] != PID_SIMPLE_TEXT or data[1] & 0x7F != CODING_LATIN1:
        return None
    return data[2:].decode("latin-1")


@dataclass(frozen=True)
class SentSds:
    """One SDS the radio was asked to send."""

    called: str
    bits: int
    user_data: str
    ai_service: int


@dataclass
class GroupCall:
    """A group call the radio is in."""

    group: str
    incoming: bool
    talker: str | None = None  # ISSI holding the floor; "self" when we transmit


class TetraRadioEmulator(AtEmulator):
    """A TETRA terminal's PEI on a pty; inject group calls and SDS, inspect what it sent."""

    identity = "dispatchd TETRA PEI emulator"

    def __init__(self, *, echo: bool = False, faults: Faults | None = None,
                 issi: str = "1001", sds_prompt: bool = False) -> None:
        """An idle radio in trunked mode, attached to nothing."""
        super().__init__(echo=echo, faults=faults)
        self.issi = issi
        self.sds_prompt = sds_prompt
        self.groups: list[str] = []
        self.calls: dict[int, GroupCall] = {}
        self.sds_sent: list[SentSds] = []
        self.tx_demands: list[int] = []
        self.setup: str = ""
        self.ai_service = 12
        self._cc = 0
        self._sds_ref = 0
        self.handlers.update({
            "+CTOM": lambda op, a: Reply(("+CTOM: 0",)) if op == "?" else OK,
            "+CTGS": self._cmd_ctgs, "+CTSDC": self._cmd_ctsdc, "D": self._cmd_dial,
            "+CTXD": self._cmd_ctxd, "+CUTXC": self._cmd_cutxc, "H": self._cmd_hangup,
            "+CTSDS": self._cmd_ctsds, "+CMGS": self._cmd_cmgs,
            "+CNUMF": lambda op, a: Reply((f"+CNUMF: 6,{self.issi}",)),
            "+CSQ": lambda op, a: Reply(("+CSQ: 25,99",)),
            "+CREG": lambda op, a: Reply(("+CREG: 0,1",)) if op == "?" else OK,
            "+CTSP": lambda op, a: OK,
        })

    # --- what tests do ----------------------------------------------------------------------

    def inject_group_call(self, group: str, calling: str, priority: int = 0) -> int:
        """Another member opens a group call: ``+CTICN``, then ``+CTXG`` (they talk).

        ``priority`` is the call priority (0-15); 15 is a handset's emergency call.
        """
        cc = self._new_cc()
        self.calls[cc] = GroupCall(group, incoming=True, talker=calling)
        self.unsolicited(f"+CTICN: {cc},0,0,0,{calling},1,1,0,1,1,1,{group},{priority}")
        self.unsolicited(f"+CTXG: {cc},{TX_GRANTED_TO_OTHER},0,0,0,{calling}")
        return cc

    def inject_talk(self, cc: int, issi: str) -> None:
        """Another member keys up on call ``cc``.

        While we hold the floor this is pre-emption: the radio drops our PTT
        mid-burst and reports the floor granted to another user.
        """
        self.calls[cc].talker = issi
        self.unsolicited(f"+CTXG: {cc},{TX_GRANTED_TO_OTHER},0,0,0,{issi}")

    def inject_talk_end(self, cc: int) -> None:
        """The member talking on ``cc`` releases the floor: ``+CDTXC``."""
        self.calls[cc].talker = None
        self.unsolicited(f"+CDTXC: {cc},0")

    def inject_release(self, cc: int, cause: int = CAUSE_USER_REQUESTED) -> None:
        """The network ends call ``cc``: ``+CTCR``."""
        self.calls.pop(cc, None)
        self.unsolicited(f"+CTCR: {cc},{cause}")

    def inject_emergency_call(self, group: str, calling: str) -> int:
        """A handset presses its emergency button: a group call at priority 15."""
        return self.inject_group_call(group, calling, priority=EMERGENCY_PRIORITY)

    def inject_location(self, calling: str, lat: float, lon: float, *,
                        velocity: int = 0, direction: int = 0) -> None:
        """A handset reports its position: a LIP short location report as an SDS."""
        value, count = 0, 0
        lon_units = round(lon * (1 << 25) / 360.0) & ((1 << 25) - 1)
        lat_units = round(lat * (1 << 24) / 180.0) & ((1 << 24) - 1)
        for field, width in ((0, 2), (0, 2), (lon_units, 25), (lat_units, 24), (1, 3),
                             (velocity, 7), (direction, 4), (0, 1), (0, 8)):
            value = (value << width) | field
            count += width
        body = (value << 4).to_bytes(10, "big")  # 76 bits padded to 80
        self.inject_sds(calling, (bytes([PID_LIP]) + body).hex().upper(), bits=8 + count)

    def inject_sds(self, calling: str, user_data: str, *, called: str | None = None,
                   bits: int | None = None, ai_service: int = 12) -> None:
        """An SDS arrives: ``+CTSDSR`` with the hex user data on the next line."""
        length = len(user_data) * 4 if bits is None else bits
        target = self.issi if called is None else called
        self.unsolicited(f"+CTSDSR: {ai_service},{calling},0,{target},0,{length}", user_data)

    # --- commands ---------------------------------------------------------------------------

    def _new_cc(self) -> int:
        self._cc = self._cc % 4095 + 1
        return self._cc

    def _cmd_ctgs(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply(tuple(f"+CTGS: 1,{g}" for g in self.groups))
        fields = split_args(args)
        if len(fields) < 2 or not all(digits(f) for f in fields[1::2]):
            return self.cme(35, "Parameter wrong value")
        self.groups = fields[1::2]
        return OK

    def _cmd_ctsdc(self, op: str, args: str) -> Reply:
        if op == "?":
            return Reply((f"+CTSDC: {self.setup}",))
        self.setup = args
        return OK

    def _cmd_dial(self, op: str, args: str) -> Reply:
        group = args.strip().rstrip(";")
        if not digits(group):
            return self.cme(35, "Parameter wrong value")
        cc = self._new_cc()
        self.calls[cc] = GroupCall(group, incoming=False, talker="self")
        return Reply(after=(f"+CTCC: {cc},1,1,0,0,1,1", f"+CTXG: {cc},{TX_GRANTED},0,0"))

    def _cmd_ctxd(self, op: str, args: str) -> Reply:
        fields = split_args(args)
        cc = int(fields[0]) if fields and digits(fields[0]) else -1
        call = self.calls.get(cc)
        if call is None:
            return self.cme(34, "Call instance does not exist")
        self.tx_demands.append(cc)
        if call.talker not in (None, "self"):
            return Reply(after=(f"+CTXG: {cc},{TX_NOT_GRANTED},1,0",))
        call.talker = "self"
        return Reply(after=(f"+CTXG: {cc},{TX_GRANTED},0,0",))

    def _cmd_cutxc(self, op: str, args: str) -> Reply:
        cc = int(args) if digits(args) else -1
        call = self.calls.get(cc)
        if call is None:
            return self.cme(34, "Call instance does not exist")
        if call.talker == "self":
            call.talker = None
        return Reply(after=(f"+CDTXC: {cc},0",))

    def _cmd_hangup(self, op: str, args: str) -> Reply:
        released = tuple(f"+CTCR: {cc},{CAUSE_USER_REQUESTED}" for cc in sorted(self.calls))
        self.calls.clear()
        return Reply(after=released)

    def _cmd_ctsds(self, op: str, args: str) -> Reply:
        fields = split_args(args)
        if not fields or fields[0] not in ("9", "10", "11", "12", "13"):
            return self.cme(35, "Parameter wrong value")
        self.ai_service = int(fields[0])
        return OK

    def _cmd_cmgs(self, op: str, args: str) -> Reply | None:
        fields = split_args(args)
        if op != "=" or len(fields) < 2 or not digits(fields[0]) or not digits(fields[1]):
            return self.cme(35, "Parameter wrong value")
        called, bits = fields[0], int(fields[1])

        def submit(user_data: str) -> Reply:
            if not set(user_data) <= _HEX or not 0 < bits <= len(user_data) * 4:
                return self.cme(35, "Parameter wrong value")
            self.sds_sent.append(SentSds(called, bits, user_data.upper(), self.ai_service))
            self._sds_ref = self._sds_ref % 255 + 1
            return Reply((f"+CMGS: 0,4,{self._sds_ref}",))

        self.expect_text(submit, prompt=b"\r\n> " if self.sds_prompt else b"")
        return None
