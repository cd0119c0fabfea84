"""TS 27.005 PDU-mode framing around TPDUs, for a GSM modem's AT channel.

The AT command engine (in :mod:`hardware`) owns the serial port and the
one-command-in-flight rule; these helpers only build and read the text:

* sending (§3.5.1): ``AT+CMGS=<length>\\r``, wait for the ``> `` prompt, then
  the PDU in hex and Ctrl-Z; the answer is ``+CMGS: <mr>`` then ``OK``.
  ``<length>`` counts TPDU octets, *not* the SMSC address field.
* receiving: ``+CMT: [<alpha>],<length>`` (§3.4.1, with ``AT+CNMI=2,2``),
  ``+CMGR: <stat>,[<alpha>],<length>`` (§3.4.3), ``+CMGL: <index>,<stat>,
  [<alpha>],<length>`` (§3.4.2) and ``+CDS: <length>`` (status report), each
  followed by a line holding the PDU in hex; ``+CMTI: <mem>,<index>`` says a
  message was stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._cursor import Cursor
from .errors import PduDecodeError
from .pdu import MAX_TPDU_OCTETS, SmsDeliver, SmsStatusReport, SmsSubmit, SubmitPdu, decode_pdu

MAX_HEADER_LINE = 256
MAX_PDU_LINE = 2 * (MAX_TPDU_OCTETS + 13)
CTRL_Z = b"\x1a"

_HEADER = re.compile(r"^\+(CMT|CMGR|CMGL|CDS):\s*(.*?),?\s*(\d+)\s*$")
_CMGL_HEAD = re.compile(r"^(\d+)\s*,\s*(\d+)")
_CMGR_HEAD = re.compile(r"^(\d+)")
_CMGS = re.compile(r"^\+CMGS:\s*(\d+)")
_CMTI = re.compile(r'^\+CMTI:\s*"([A-Z]{2})"\s*,\s*(\d+)\s*$')


@dataclass(frozen=True, slots=True)
class ReportedPdu:
    """A PDU a modem reported, with what its header line said about it."""

    kind: str
    index: int | None
    stat: int | None
    length: int
    message: SmsDeliver | SmsStatusReport | SmsSubmit


def cmgs_command(pdu: SubmitPdu) -> tuple[bytes, bytes]:
    """The two writes for one SMS-SUBMIT: the command line, then (after ``>``) the body."""
    return f"AT+CMGS={pdu.tpdu_length}\r".encode("ascii"), pdu.hex.encode("ascii") + CTRL_Z


def parse_cmgs(line: str) -> int:
    """The TP-MR from a ``+CMGS: <mr>`` answer (to match a later status report)."""
    match = _CMGS.match(line.strip()[:MAX_HEADER_LINE])
    if match is None:
        raise PduDecodeError(f"not a +CMGS answer: {line[:40]!r}")
    return int(match.group(1)) & 0xFF


def parse_cmti(line: str) -> tuple[str, int]:
    """(storage, index) from ``+CMTI: "SM",3``; read it next with ``AT+CMGR=<index>``."""
    match = _CMTI.match(line.strip()[:MAX_HEADER_LINE])
    if match is None:
        raise PduDecodeError(f"not a +CMTI indication: {line[:40]!r}")
    return match.group(1), int(match.group(2))


def parse_reported(header: str, pdu_line: str) -> ReportedPdu:
    """Decode a ``+CMT``/``+CMGR``/``+CMGL``/``+CDS`` header and the PDU line after it.

    Checks that ``<length>`` equals the TPDU length (PDU minus the SMSC field).
    """
    header = header.strip()
    pdu_line = pdu_line.strip()
    if len(header) > MAX_HEADER_LINE or len(pdu_line) > MAX_PDU_LINE:
        raise PduDecodeError("PDU report line longer than any SMS")
    match = _HEADER.match(header)
    if match is None:
        raise PduDecodeError(f"not a PDU-mode report: {header[:40]!r}")
    kind, head, length = match.group(1), match.group(2), int(match.group(3))
    index = stat = None
    if kind == "CMGL":
        m = _CMGL_HEAD.match(head)
        if m is None:
            raise PduDecodeError(f"+CMGL without index and stat: {header[:40]!r}")
        index, stat = int(m.group(1)), int(m.group(2))
    elif kind == "CMGR":
        m = _CMGR_HEAD.match(head)
        if m is None:
            raise PduDecodeError(f"+CMGR without stat: {header[:40]!r}")
        stat = int(m.group(1))
    try:
        raw = bytes.fromhex(pdu_line)
    except ValueError:
        raise PduDecodeError("PDU line is not hex") from None
    smsc_field = 1 + Cursor(raw, PduDecodeError).u8("SMSC length")
    if len(raw) - smsc_field != length:
        raise PduDecodeError(f"header says {length} TPDU octets, the PDU has "
                             f"{len(raw) - smsc_field}")
    return ReportedPdu(kind, index, stat, length, decode_pdu(raw))
