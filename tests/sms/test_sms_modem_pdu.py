"""TS 27.005 PDU-mode lines: AT+CMGS, +CMGS, +CMT, +CMGR, +CMGL, +CDS, +CMTI."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sms.errors import PduDecodeError
from sms.modem_pdu import cmgs_command, parse_cmgs, parse_cmti, parse_reported
from sms.pdu import SmsDeliver, SmsStatusReport, encode_deliver, encode_scts, encode_submit

DELIVER = "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37"
WHEN = datetime(2026, 11, 21, 16, 0, tzinfo=timezone(timedelta(hours=8)))


def test_cmgs_command() -> None:
    [pdu] = encode_submit("+46708251358", "hellohello", validity=timedelta(days=4))
    command, body = cmgs_command(pdu)
    assert command == b"AT+CMGS=23\r"
    assert body == b"0011000B916407281553F80000AA0AE8329BFD4697D9EC37\x1a"


@pytest.mark.parametrize(("line", "mr"), [("+CMGS: 12", 12), ("+CMGS: 300", 44),
                                          ("  +CMGS:7 ", 7)])
def test_parse_cmgs(line: str, mr: int) -> None:
    assert parse_cmgs(line) == mr


def test_parse_cmti() -> None:
    assert parse_cmti('+CMTI: "SM",3') == ("SM", 3)
    assert parse_cmti('+CMTI: "ME", 12\r\n') == ("ME", 12)


@pytest.mark.parametrize(("header", "kind", "index", "stat"), [
    ("+CMT: ,28", "CMT", None, None),
    ('+CMT: "Zhang, San",28', "CMT", None, None),
    ("+CMGR: 0,,28", "CMGR", None, 0),
    ("+CMGR: 1,\"\",28", "CMGR", None, 1),
    ("+CMGL: 5,1,,28", "CMGL", 5, 1),
])
def test_reported_deliver(header: str, kind: str, index: int | None, stat: int | None) -> None:
    got = parse_reported(header, DELIVER)
    assert (got.kind, got.index, got.stat, got.length) == (kind, index, stat, 28)
    assert isinstance(got.message, SmsDeliver) and got.message.text == "hellohello"


def test_reported_status_report() -> None:
    stamp = encode_scts(WHEN)
    pdu = (bytes((0x00, 0x06, 0x2A, 0x0D, 0x91)) + bytes.fromhex("683108108300F0") + stamp
           + stamp + b"\x00").hex()
    got = parse_reported(f"+CDS: {len(pdu) // 2 - 1}", pdu)
    assert isinstance(got.message, SmsStatusReport) and got.message.message_ref == 0x2A


def test_reported_chinese_round_trip() -> None:
    pdu = encode_deliver("+8613800138000", "收到，马上撤离", WHEN, smsc="+8613800100500")
    got = parse_reported(f"+CMT: ,{len(pdu) // 2 - 9}", pdu)
    assert isinstance(got.message, SmsDeliver) and got.message.text == "收到，马上撤离"


@pytest.mark.parametrize(("header", "pdu"), [
    ("+CMT: ,27", DELIVER),              # length disagrees with the PDU
    ("+CMT: ,28", DELIVER[:-2]),         # truncated PDU
    ("+CMT: ,28", DELIVER + "Z"),        # not hex
    ("+CMT: ,0", ""),                    # empty PDU
    ("+CMGL: ,,28", DELIVER),            # CMGL without index
    ("+CMGR: ,,28", DELIVER),            # CMGR without stat
    ("+CMSS: 3", DELIVER),               # not a PDU report
    ("+CMT: ,28", "00" * 400),           # longer than any SMS
    ("+CMT: " + "x" * 300 + ",28", DELIVER),
])
def test_reported_errors(header: str, pdu: str) -> None:
    with pytest.raises(PduDecodeError):
        parse_reported(header, pdu)


@pytest.mark.parametrize("line", ["OK", "+CMTI: SM,3", "+CMGS: x", "ERROR"])
def test_line_errors(line: str) -> None:
    with pytest.raises(PduDecodeError):
        parse_cmgs(line)
    with pytest.raises(PduDecodeError):
        parse_cmti(line)
