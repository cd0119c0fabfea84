"""Building submit_sm from texts, reading deliver_sm bodies, receipt texts."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sms.encoding import Encoding, segment
from sms.errors import EncodingError, SmppDecodeError, SmppEncodeError, TooManyParts
from sms.smpp.codec import DeliverSm, Tag, Tlv, decode_pdu, encode_pdu
from sms.smpp.events import DeliveryReceipt, MessageReceived
from sms.smpp.messages import (
    ConcatMode,
    address,
    build_submits,
    classify,
    decode_text,
    relative_time,
)
from sms.smpp.receipt import MessageState, message_id_variants, parse_receipt_text

LONG_ZH = "【应急管理局】山洪预警：请沿河低洼地带居民立即撤离至镇中心学校安置点。" * 4


def test_single_part_gsm7() -> None:
    [pdu] = build_submits("+8613800138000", "Evacuate {now}", source="CMDCTR")
    assert (pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr) == (1, 1, "8613800138000")
    assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr) == (5, 0, "CMDCTR")
    assert pdu.data_coding == 0 and pdu.esm_class == 0 and pdu.registered_delivery == 1
    assert pdu.short_message == b"Evacuate \x1b\x28now\x1b\x29"


def test_udh_parts() -> None:
    pdus = build_submits("+8613800138000", LONG_ZH, ref=0x21, source="12110")
    msg = segment(LONG_ZH, ref=0x21)
    assert len(pdus) == msg.total > 1
    for i, pdu in enumerate(pdus):
        assert pdu.esm_class == 0x40 and pdu.data_coding == 8
        assert pdu.short_message[:6] == bytes((5, 0, 3, 0x21, msg.total, i + 1))
        assert len(pdu.short_message) <= 140
        assert (pdu.source_addr_ton, pdu.source_addr) == (0, "12110")
    body = b"".join(p.short_message[6:] for p in pdus)
    assert body.decode("utf-16-be") == LONG_ZH


def test_sar_parts() -> None:
    pdus = build_submits("13800138000", LONG_ZH, concat=ConcatMode.SAR, ref=0x1234,
                         ref_bits=16)
    for i, pdu in enumerate(pdus):
        assert pdu.esm_class == 0
        assert pdu.tlv_int(Tag.SAR_MSG_REF_NUM) == 0x1234
        assert pdu.tlv_int(Tag.SAR_TOTAL_SEGMENTS) == len(pdus)
        assert pdu.tlv_int(Tag.SAR_SEGMENT_SEQNUM) == i + 1
    assert b"".join(p.short_message for p in pdus).decode("utf-16-be") == LONG_ZH


def test_payload_mode_is_one_pdu() -> None:
    [pdu] = build_submits("+8613800138000", LONG_ZH * 3, concat=ConcatMode.PAYLOAD,
                          flash=True, registered_delivery=False)
    assert pdu.short_message == b"" and pdu.data_coding == 0x18
    assert pdu.registered_delivery == 0
    assert (pdu.tlv(Tag.MESSAGE_PAYLOAD) or b"").decode("utf-16-be") == LONG_ZH * 3


def test_prebuilt_segmented_message_is_used_as_is() -> None:
    msg = segment("x" * 300, ref=3, encoding=Encoding.GSM7)
    pdus = build_submits("+1", msg)
    assert [p.short_message[:6] for p in pdus] == [msg.udh(0), msg.udh(1)]


def test_build_errors() -> None:
    with pytest.raises(TooManyParts):
        build_submits("+8613800138000", LONG_ZH * 10, max_parts=5)
    with pytest.raises(SmppEncodeError):
        build_submits("+8613800138000", "x", source="AVeryLongSenderName")
    with pytest.raises(EncodingError):
        build_submits("+8613800138000", "bad\x00")


@pytest.mark.parametrize(("addr", "expected"), [
    ("+8613800138000", (1, 1, "8613800138000")), ("10086", (0, 1, "10086")),
    ("", (0, 0, "")), ("Gov-Alert", (5, 0, "Gov-Alert")), ("+CN", (5, 0, "+CN")),
])
def test_address(addr: str, expected: tuple[int, int, str]) -> None:
    assert address(addr) == expected


@pytest.mark.parametrize(("coding", "payload", "text", "raw"), [
    (0, b"\x00\x1b\x65", "@€", False),
    (1, b"abc", "abc", False),
    (3, "é".encode("latin-1"), "é", False),
    (8, "中".encode("utf-16-be"), "中", True),
    (0x18, "中".encode("utf-16-be"), "中", True),
    (0x11, b"\x00", "@", False),
    (0xF0, b"A", "A", False),
    (0xF4, b"\x01\x02", "", False),
    (0x04, b"\x01\x02", "", False),
    (0x02, b"\x01\x02", "", False),
])
def test_decode_text(coding: int, payload: bytes, text: str, raw: bool) -> None:
    got, ucs2 = decode_text(coding, payload)
    assert got == text and (ucs2 is not None) == raw


def test_decode_text_latin1_default_alphabet() -> None:
    assert decode_text(0, b"\xe9", default_alphabet="latin-1") == ("é", None)


def test_classify_bad_udh() -> None:
    with pytest.raises(SmppDecodeError):
        classify(DeliverSm(esm_class=0x40, short_message=b"\x09\x00\x03"))
    with pytest.raises(SmppDecodeError):
        classify(DeliverSm(esm_class=0x40, short_message=b"\x05\x00\x03\x01"))


def test_classify_intermediate_and_tlv_only_receipts() -> None:
    inter = classify(DeliverSm(esm_class=0x20, short_message=b"id:9 stat:ENROUTE"))
    assert isinstance(inter, DeliveryReceipt) and inter.state is MessageState.ENROUTE
    assert not MessageState.ENROUTE.final and MessageState.DELIVERED.final
    tlv_only = classify(DeliverSm(esm_class=0x04, tlvs=(Tlv(Tag.RECEIPTED_MESSAGE_ID, b"7\x00"),
                                                        Tlv.u8(Tag.MESSAGE_STATE, 99))))
    assert isinstance(tlv_only, DeliveryReceipt)
    assert tlv_only.message_id == "7" and tlv_only.state is None


def test_classify_empty_udh_message() -> None:
    mo = classify(DeliverSm(esm_class=0x40, short_message=b""))
    assert isinstance(mo, MessageReceived) and mo.part.text == ""


@pytest.mark.parametrize(("text", "mid", "state", "err", "sub", "done"), [
    ("id:0123456789 sub:001 dlvrd:001 submit date:2611211600 done date:2611211601 "
     "stat:DELIVRD err:000 text:Evacuate", "0123456789", MessageState.DELIVERED, "000", 1,
     datetime(2026, 11, 21, 16, 1)),
    ("id:abc sub:001 dlvrd:000 submit date:261121160005 done date:261121170005 "
     "stat:EXPIRED err:027 Text:...", "abc", MessageState.EXPIRED, "027", 1,
     datetime(2026, 11, 21, 17, 0, 5)),
    ("ID:X1 STAT:UNDELIV ERR:1", "X1", MessageState.UNDELIVERABLE, "1", None, None),
    ("id:X2 stat:REJECTD err:0 done date:9913999999", "X2", MessageState.REJECTED, "0", None,
     None),
    ("id:X3 stat:WEIRD", "X3", None, None, None, None),
    ("id:X4 stat:ACCEPTD text: id:FAKE stat:DELIVRD", "X4", MessageState.ACCEPTED, None, None,
     None),
    ("id:X5 stat:DELETED", "X5", MessageState.DELETED, None, None, None),
    ("id:X6 stat:UNKNOWN", "X6", MessageState.UNKNOWN, None, None, None),
])
def test_receipt_text_table(text: str, mid: str, state: MessageState | None, err: str | None,
                            sub: int | None, done: datetime | None) -> None:
    r = parse_receipt_text(text)
    assert (r.message_id, r.state, r.error, r.submitted, r.done_date) == (mid, state, err, sub,
                                                                          done)


@pytest.mark.parametrize("text", ["", "stat:DELIVRD", "id: stat:DELIVRD", "hello"])
def test_receipt_without_id(text: str) -> None:
    with pytest.raises(SmppDecodeError):
        parse_receipt_text(text)


@pytest.mark.parametrize(("period", "text"), [
    (timedelta(hours=2), "000000020000000R"),
    (timedelta(days=1, minutes=30, seconds=5), "000001003005000R"),
    (timedelta(days=400), "010105000000000R"),
])
def test_relative_validity(period: timedelta, text: str) -> None:
    assert relative_time(period) == text
    [pdu] = build_submits("+1", "x", validity=period)
    assert pdu.validity_period == text


@pytest.mark.parametrize("period", [timedelta(0), timedelta(days=365 * 100)])
def test_relative_validity_errors(period: timedelta) -> None:
    with pytest.raises(SmppEncodeError):
        relative_time(period)


def test_package_exports() -> None:
    import sms.smpp as api
    assert all(hasattr(api, name) for name in api.__all__)


def test_message_id_variants_match_hex_and_decimal() -> None:
    submitted = message_id_variants("0A1B")       # submit_sm_resp said hex
    assert "2587" in submitted and "a1b" in submitted
    assert "A1B" in message_id_variants("2587")   # receipt said decimal
    assert message_id_variants("000123") >= {"000123", "123"}
    assert message_id_variants("msg-xyz") == {"msg-xyz"}
    assert message_id_variants("") == {"", "0"}


# A real deliver_sm receipt kept as a regression case (from python-smpplib's
# tests/test_command.py): the receipt text rides in message_payload, the TLV id is
# hexadecimal while the text's id is the same number in decimal with a leading zero.
CAPTURED_RECEIPT = (
    b"\x00\x00\x00\xcb\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01\x00"
    b"\x01\x0131600000000\x00\x05\x00XXX YYYY\x00\x04\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x0e\x00\x01\x01\x00\x06\x00\x01\x01\x00\x1e\x00"
    b"\t1d305b4c\x00\x04'\x00\x01\x02\x04$\x00rid:0489708364 sub:001"
    b" dlvrd:001 submit date:1810151907 done date:1810151907 stat:DELIVRD"
    b" err:000 text:\x04\x1f\x04@\x048\x042\x045\x04B\x04&\x00\x01\x01"
)


def test_captured_receipt() -> None:
    pdu = decode_pdu(CAPTURED_RECEIPT)
    assert isinstance(pdu, DeliverSm) and encode_pdu(pdu) == CAPTURED_RECEIPT
    event = classify(pdu)
    assert isinstance(event, DeliveryReceipt)
    assert (event.message_id, event.state, event.error, event.recipient) == \
        ("1d305b4c", MessageState.DELIVERED, "000", "+31600000000")
    assert event.done_date == datetime(2018, 10, 15, 19, 7)
    text_id = parse_receipt_text((pdu.tlv(Tag.MESSAGE_PAYLOAD) or b"").decode("latin-1"))
    assert text_id.message_id == "0489708364"
    assert message_id_variants("1d305b4c") & message_id_variants(text_id.message_id)
