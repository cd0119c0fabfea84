"""TS 23.040 SMS-SUBMIT encoding and SMS-DELIVER / STATUS-REPORT decoding."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms import gsm7
from sms.encoding import Encoding, segment
from sms.errors import PduDecodeError, PduEncodeError
from sms.inbound import ConcatInfo
from sms.pdu import (
    Alphabet,
    SmsDeliver,
    SmsStatusReport,
    SmsSubmit,
    decode_dcs,
    decode_pdu,
    encode_deliver,
    encode_scts,
    encode_submit,
    relative_validity,
)

CST = timezone(timedelta(hours=8))


def test_known_deliver_vector() -> None:
    # The widely published TS 23.040 example (dreamfabric.com "SMS and the PDU format").
    msg = decode_pdu("07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37")
    assert isinstance(msg, SmsDeliver)
    assert msg.smsc == "+27381000015"
    assert msg.sender == "27838890001"
    assert msg.text == "hellohello"
    assert msg.timestamp == datetime(1999, 3, 29, 15, 16, 59,
                                     tzinfo=timezone(timedelta(hours=2)))
    assert msg.concat is None and msg.dcs.alphabet is Alphabet.GSM7


def test_known_submit_vector() -> None:
    # Same source: SMS-SUBMIT to +46708251358, VP 0xAA (4 days), "hellohello".
    [pdu] = encode_submit("+46708251358", "hellohello", validity=timedelta(days=4))
    assert pdu.hex == "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"
    assert pdu.tpdu_length == 23  # AT+CMGS=23: the leading SMSC octet is not counted


def test_submit_without_vp_with_smsc_and_status_report() -> None:
    [pdu] = encode_submit("+8613800138000", "你好", smsc="+8613800100500", status_report=True)
    assert pdu.hex == ("089168" "3108100005F0" "21" "00" "0D9168" "3108108300F0" "00" "08"
                       "04" "4F60597D")
    assert pdu.tpdu_length == len(bytes.fromhex(pdu.hex)) - 9
    back = decode_pdu(pdu.hex)
    assert isinstance(back, SmsSubmit)
    assert back.smsc == "+8613800100500" and back.destination == "+8613800138000"
    assert back.text == "你好" and back.status_report_requested


def test_concatenated_gsm7_submit_bits() -> None:
    msg = segment("h" * 200, ref=0x42)
    pdus = encode_submit("13800138000", msg)
    assert len(pdus) == 2
    raw = bytes.fromhex(pdus[0].hex)
    # SMSC 00, first octet 0x41 (SUBMIT + UDHI), MR, DA (11 digits, unknown), PID, DCS,
    # UDL = 7 header septets + 153, then UDH 050003420201 and 'h' shifted by one fill bit.
    assert raw[:2] == bytes((0x00, 0x41))
    udl_at = 1 + 2 + 2 + 6 + 2
    assert raw[udl_at] == 160
    assert raw[udl_at + 1:udl_at + 7] == bytes.fromhex("050003420201")
    assert raw[udl_at + 7] == (0x68 << 1) & 0xFF
    assert len(raw) - 1 == pdus[0].tpdu_length
    assert raw[udl_at + 1:].__len__() == 140
    decoded = [decode_pdu(p.hex) for p in pdus]
    parts = [p for p in decoded if isinstance(p, SmsSubmit)]
    assert len(parts) == 2
    assert "".join(p.text for p in parts) == "h" * 200
    assert [p.concat for p in parts] == [ConcatInfo(0x42, 2, 1, 8), ConcatInfo(0x42, 2, 2, 8)]


@pytest.mark.parametrize("text", [
    "Evacuate now {zone} €5 [A]~", "撤离通知：请立即前往安全区域😀" * 6, "x" * 153 * 3,
    "€" * 200, "short",
])
@pytest.mark.parametrize("ref_bits", [8, 16])
def test_deliver_round_trip(text: str, ref_bits: int) -> None:
    msg = segment(text, ref=300 if ref_bits == 16 else 77, ref_bits=ref_bits,  # type: ignore[arg-type]
                  max_parts=20)
    when = datetime(2026, 11, 21, 16, 30, 5, tzinfo=CST)
    texts = []
    for i in range(msg.total):
        d = decode_pdu(encode_deliver("+8613800138000", msg, when, smsc="+8613800100500",
                                      index=i))
        assert isinstance(d, SmsDeliver)
        assert d.sender == "+8613800138000" and d.timestamp == when
        if msg.total > 1:
            assert d.concat == ConcatInfo(msg.ref or 0, msg.total, i + 1, ref_bits)
        texts.append(d.text)
    assert "".join(texts) == text


def test_alphanumeric_sender() -> None:
    # TS 23.040 §9.1.2.5: "Police" packed as GSM-7, length = useful semi-octets (6*7/4 → 11).
    name = "Police"
    packed = gsm7.pack_septets(gsm7.encode_septets(name))
    pdu = (bytes((0x00, 0x04, 11, 0xD0)) + packed + bytes((0, 0)) +
           encode_scts(datetime(2026, 1, 2, 3, 4, 5, tzinfo=CST)) + bytes((1,)) + b"\x31")
    d = decode_pdu(pdu)
    assert isinstance(d, SmsDeliver)
    assert d.sender == name and d.text == "1"


@pytest.mark.parametrize(("tz", "offset"), [
    (0x23, timedelta(hours=8)), (0x80, timedelta(hours=2)), (0x00, timedelta(0)),
    (0x0A, timedelta(hours=-5)),  # sign bit set, tens 2, units 0: -20 quarters
])
def test_scts_time_zones(tz: int, offset: timedelta) -> None:
    raw = bytes((0x62, 0x11, 0x12, 0x61, 0x03, 0x50, tz))
    pdu = bytes((0x00, 0x04, 0x01, 0x81, 0x10, 0x00, 0x00)) + raw + b"\x00"
    d = decode_pdu(pdu)
    assert isinstance(d, SmsDeliver)
    assert d.timestamp.utcoffset() == offset
    assert d.timestamp.replace(tzinfo=None) == datetime(2026, 11, 21, 16, 30, 5)


def test_scts_encode_round_trip_negative() -> None:
    when = datetime(2030, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-3, minutes=-45)))
    pdu = encode_deliver("123", "x", when)
    d = decode_pdu(pdu)
    assert isinstance(d, SmsDeliver) and d.timestamp == when


def test_status_report() -> None:
    stamp = encode_scts(datetime(2026, 11, 21, 16, 0, 0, tzinfo=CST))
    done = encode_scts(datetime(2026, 11, 21, 16, 0, 9, tzinfo=CST))
    body = bytes((0x06, 0x2A, 0x0D, 0x91)) + bytes.fromhex("683108108300F0") + stamp + done
    ok = decode_pdu(b"\x00" + body + b"\x00")
    assert isinstance(ok, SmsStatusReport)
    assert ok.message_ref == 0x2A and ok.recipient == "+8613800138000"
    assert ok.delivered and ok.final
    trying = decode_pdu(b"\x00" + body + b"\x21")
    assert isinstance(trying, SmsStatusReport) and not trying.delivered and not trying.final
    failed = decode_pdu(b"\x00" + body + b"\x41")
    assert isinstance(failed, SmsStatusReport) and not failed.delivered and failed.final


@pytest.mark.parametrize(("dcs", "alphabet", "klass"), [
    (0x00, Alphabet.GSM7, None), (0x08, Alphabet.UCS2, None), (0x04, Alphabet.EIGHT_BIT, None),
    (0x10, Alphabet.GSM7, 0), (0x18, Alphabet.UCS2, 0), (0x48, Alphabet.UCS2, None),
    (0xF0, Alphabet.GSM7, 0), (0xF6, Alphabet.EIGHT_BIT, 2), (0xC0, Alphabet.GSM7, None),
    (0xE0, Alphabet.UCS2, None), (0x90, Alphabet.GSM7, None), (0x0C, Alphabet.GSM7, None),
])
def test_dcs_table(dcs: int, alphabet: Alphabet, klass: int | None) -> None:
    coding = decode_dcs(dcs)
    assert coding.alphabet is alphabet and coding.message_class == klass


@pytest.mark.parametrize(("period", "code"), [
    (timedelta(minutes=5), 0), (timedelta(minutes=6), 1), (timedelta(hours=12), 143),
    (timedelta(hours=12, minutes=30), 144), (timedelta(hours=24), 167),
    (timedelta(days=2), 168), (timedelta(days=30), 196), (timedelta(days=35), 197),
    (timedelta(weeks=63), 255), (timedelta(weeks=100), 255), (timedelta(0), 0),
])
def test_relative_validity(period: timedelta, code: int) -> None:
    assert relative_validity(period) == code


def test_flash_sets_class_zero() -> None:
    [pdu] = encode_submit("+8613800138000", "撤离", flash=True)
    back = decode_pdu(pdu.hex)
    assert isinstance(back, SmsSubmit) and back.dcs.message_class == 0
    assert back.dcs.alphabet is Alphabet.UCS2


@pytest.mark.parametrize("bad", [
    "", "zz", "00", "0004", "000401", "00040B91", "0007",  # truncations / reserved MTI
    "0F" + "00" * 20,                                      # SMSC longer than allowed
    "00041591" + "00" * 20,                                # address of 21 digits
    "0004018110000062111261035023" + "FF",                 # UDL beyond data
    "000401811000" + "AA" * 7 + "00",                      # non-BCD timestamp
    "000401811000" + "62131261035023" + "00",              # month 31
    "004401811008" + "62111261035023" + "02" + "0500",     # UDH longer than user data
    "004401811000" + "62111261035023" + "01" + "06",       # GSM-7 UDH eats the septets
    "00" + "04" * 400,                                     # too long for any SMS
])
def test_decode_errors(bad: str) -> None:
    with pytest.raises(PduDecodeError):
        decode_pdu(bad)


@pytest.mark.parametrize(("dest", "kwargs"), [
    ("", {}), ("+", {}), ("12ab", {}), ("1" * 21, {}), ("123", {"message_ref": 256}),
    ("123", {"smsc": "+" + "1" * 21}), ("123", {"smsc": "12x"}),
])
def test_encode_errors(dest: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(PduEncodeError):
        encode_submit(dest, "x", **kwargs)  # type: ignore[arg-type]


def test_scts_encode_errors() -> None:
    with pytest.raises(PduEncodeError):
        encode_scts(datetime(2026, 1, 1))
    with pytest.raises(PduEncodeError):
        encode_scts(datetime(2026, 1, 1, tzinfo=timezone(timedelta(minutes=7))))


def test_ucs2_concat_ignores_bad_sequence_numbers() -> None:
    # IEI 00 with seq 0: the IE must be ignored (TS 23.040 §9.2.3.24.1).
    pdu = ("00" "44" "0181" "10" "00" "08" "62111261035023" "08" "050003010200" "0041")
    d = decode_pdu(pdu)
    assert isinstance(d, SmsDeliver) and d.concat is None and d.text == "A"
    assert d.udh == ((0, bytes((1, 2, 0))),)


def test_tpdu_length_matches_for_every_part() -> None:
    msg = segment("应急疏散" * 60, ref=5)
    for pdu in encode_submit("+8613800138000", msg, smsc="+8613800100500"):
        raw = bytes.fromhex(pdu.hex)
        assert pdu.tpdu_length == len(raw) - 1 - raw[0]
        assert pdu.tpdu_length <= 164
    assert msg.encoding is Encoding.UCS2


@given(st.binary(max_size=200))
def test_decode_any_bytes(data: bytes) -> None:
    with contextlib.suppress(PduDecodeError):
        decode_pdu(data)


@given(st.binary(max_size=60))
def test_decode_any_bytes_without_smsc(data: bytes) -> None:
    with contextlib.suppress(PduDecodeError):
        decode_pdu(data, with_smsc=False)


_texts = st.text(max_size=400).filter(lambda t: "\x00" not in t).map(
    lambda t: "".join(c for c in t if (ord(c) >= 0x20 and ord(c) != 0x7F
                                       and not 0xD800 <= ord(c) <= 0xDFFF) or c in "\r\n"))


@given(_texts, st.integers(0, 255), st.sampled_from([8, 16]))
def test_deliver_round_trip_property(text: str, ref: int, ref_bits: int) -> None:
    msg = segment(text, ref=ref, ref_bits=ref_bits, max_parts=255)  # type: ignore[arg-type]
    when = datetime(2026, 11, 21, 16, 30, 5, tzinfo=CST)
    parts = [decode_pdu(encode_deliver("+8613800138000", msg, when, index=i))
             for i in range(msg.total)]
    delivered = [p for p in parts if isinstance(p, SmsDeliver)]
    assert len(delivered) == msg.total
    if msg.encoding is Encoding.UCS2:
        assert b"".join(p.user_data for p in delivered).decode("utf-16-be") == text
    else:
        assert "".join(p.text for p in delivered) == text
