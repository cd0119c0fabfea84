"""Sans-I/O parts of the SMPP transport: the token bucket and the receipt index (stepped now)."""

from __future__ import annotations

import pytest

from sms.transport import IdFormat, ReceiptIndex, SmppSettings, TokenBucket


def test_token_bucket_limits_to_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.05) == pytest.approx(0.05)  # half a token saved up
    assert bucket.take(0.1) == 0.0
    bucket.give_back()
    assert bucket.take(0.1) == 0.0
    assert bucket.take(100.0) == 0.0 and bucket.take(100.0) == 0.0  # capped at burst
    assert bucket.take(100.0) > 0


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(rate=0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(1000))


@pytest.mark.parametrize("fmt, given, receipt", [
    (IdFormat.HEX_AS_DECIMAL, "000000001A", "26"), (IdFormat.HEX_AS_DECIMAL, "1a", "026"),
    (IdFormat.DECIMAL_AS_HEX, "26", "1A"), (IdFormat.SAME, "0042", "42"),
    (IdFormat.SAME, "abc-1", "ABC-1"), (IdFormat.ANY, "000000001A", "26"),
    (IdFormat.ANY, "26", "1a"), (IdFormat.HEX_AS_DECIMAL, "msg-7", "MSG-7")])
def test_receipt_index_matches_id_variants(fmt: IdFormat, given: str, receipt: str) -> None:
    index: ReceiptIndex[int] = ReceiptIndex(fmt)
    index.add(given, 7)
    assert index.match(receipt) == 7
    assert index.match("999999") is None


def test_receipt_index_any_format_refuses_ambiguous_ids() -> None:
    index: ReceiptIndex[int] = ReceiptIndex(IdFormat.ANY)
    index.add("0000000015", 1)  # hex 0x15: decimal 21
    index.add("000000000F", 2)  # hex 0x0F: decimal 15
    assert index.match("15") is None and index.ambiguous == 1  # 0x15 as hex, or 15 decimal?
    assert index.match("21") == 1  # only 0x15 reads as 21
    assert index.match("f") is None and index.ambiguous == 2  # 0x0F, or decimal 15 in hex?


def test_receipt_index_is_bounded() -> None:
    index: ReceiptIndex[int] = ReceiptIndex(IdFormat.HEX_AS_DECIMAL, capacity=2)
    for i in range(1, 4):
        index.add(f"{i:08X}", i)
    assert len(index) == 2 and index.match("1") is None and index.match("3") == 3


@pytest.mark.parametrize("bad", [
    {"port": 0}, {"system_id": ""}, {"system_id": "x" * 16}, {"password": "123456789"},
    {"rate_limit": -1}, {"reconnect_initial": 5, "reconnect_max": 1}])
def test_settings_reject_what_cannot_work(bad: dict[str, object]) -> None:
    base: dict[str, object] = {"name": "a", "host": "h", "port": 2775, "system_id": "s",
                               "password": "p"}
    with pytest.raises(ValueError):
        SmppSettings(**(base | bad))  # type: ignore[arg-type]


def test_error_responses_keep_or_drop_their_body_as_smpp_34_says() -> None:
    # Regression: smpp.twisted3 rejected a bodyless deliver_sm_resp, so ESME_RX_T_APPN was lost.
    from sms.smpp.codec import DeliverSmResp, SubmitSmResp, decode_pdu, encode_pdu

    nack = encode_pdu(DeliverSmResp(sequence_number=3, command_status=0x64))
    assert nack[16:] == b"\x00" and decode_pdu(nack) == DeliverSmResp(sequence_number=3,
                                                                       command_status=0x64)
    assert len(encode_pdu(SubmitSmResp(sequence_number=3, command_status=0x58))) == 16
