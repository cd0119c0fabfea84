"""Our SMPP codec against an independent implementation (smpplib, if installed)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

# smpplib is in the test extra: its absence is a broken install, not a skip.
from smpplib import smpp  # noqa: E402

from sms.smpp.codec import (
    Bind,
    BindMode,
    BindResp,
    DeliverSm,
    PduReader,
    SubmitSm,
    SubmitSmResp,
    Tag,
    decode_pdu,
    encode_pdu,
)
from sms.smpp.events import BindSucceeded, DeliveryReceipt, SessionClosed, SubmitAccepted
from sms.smpp.messages import ConcatMode, build_submits, classify
from sms.smpp.receipt import MessageState
from sms.smpp.session import SessionSettings, SmppSession


class _SeqStub:
    """smpplib asks its client for sequence numbers; the parse overwrites them."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


def _theirs(name: str, seq: int, **fields: Any) -> bytes:
    pdu = smpp.make_pdu(name, client=_SeqStub(), **fields)
    pdu.sequence = seq
    data: bytes = pdu.generate()
    return data


def _parse(data: bytes) -> Any:
    return smpp.parse_pdu(data, client=_SeqStub())


def test_our_submit_sm_parses_in_smpplib() -> None:
    ours = build_submits("+8613800138000", "请立即撤离" * 20, source="12110", ref=0x77)
    for i, pdu in enumerate(ours):
        data = encode_pdu(replace(pdu, sequence_number=10 + i))
        theirs = _parse(data)
        assert theirs.command == "submit_sm" and theirs.sequence == 10 + i
        assert theirs.destination_addr == b"8613800138000"
        assert (theirs.dest_addr_ton, theirs.dest_addr_npi) == (1, 1)
        assert theirs.source_addr == b"12110"
        assert theirs.esm_class == 0x40 and theirs.data_coding == 8
        assert theirs.registered_delivery == 1
        assert theirs.short_message == pdu.short_message


def test_our_bind_and_sar_tlvs_parse_in_smpplib() -> None:
    data = encode_pdu(Bind(mode=BindMode.TRANSCEIVER, sequence_number=1, system_id="esme",
                           password="secret", system_type="DISP"))
    theirs = _parse(data)
    assert theirs.command == "bind_transceiver"
    assert (theirs.system_id, theirs.password, theirs.system_type) == (b"esme", b"secret",
                                                                       b"DISP")
    assert theirs.interface_version == 0x34
    [first, *_] = build_submits("+1", "x" * 400, concat=ConcatMode.SAR, ref=0x0102,
                                  ref_bits=16)
    theirs = _parse(encode_pdu(first))
    assert (theirs.sar_msg_ref_num, theirs.sar_total_segments, theirs.sar_segment_seqnum) == \
        (0x0102, 3, 1)


def test_smpplib_submit_sm_decodes_here() -> None:
    data = _theirs("submit_sm", 7, source_addr_ton=5, source_addr_npi=0, source_addr="CMD",
                   dest_addr_ton=1, dest_addr_npi=1, destination_addr="8613800138000",
                   esm_class=0x40, registered_delivery=1, data_coding=8,
                   short_message=b"\x05\x00\x03\x01\x02\x01\x4f\x60", sar_msg_ref_num=5)
    pdu = decode_pdu(data)
    assert isinstance(pdu, SubmitSm)
    assert (pdu.sequence_number, pdu.source_addr, pdu.destination_addr) == \
        (7, "CMD", "8613800138000")
    assert pdu.short_message == b"\x05\x00\x03\x01\x02\x01\x4f\x60"
    assert pdu.tlv_int(Tag.SAR_MSG_REF_NUM) == 5
    assert encode_pdu(pdu) == data  # byte-identical re-encoding


def test_smpplib_receipt_decodes_here() -> None:
    data = _theirs("deliver_sm", 9, source_addr_ton=1, source_addr="8613800138000",
                   destination_addr="12110", esm_class=4,
                   short_message=b"id:1A2B sub:001 dlvrd:001 submit date:2611211600 "
                                 b"done date:2611211601 stat:DELIVRD err:000 text:x",
                   receipted_message_id="1A2B", message_state=2)
    pdu = decode_pdu(data)
    assert isinstance(pdu, DeliverSm)
    event = classify(pdu)
    assert isinstance(event, DeliveryReceipt)
    assert (event.message_id, event.state, event.recipient) == \
        ("1A2B", MessageState.DELIVERED, "+8613800138000")


@pytest.mark.parametrize(("name", "expected"), [
    ("submit_sm_resp", SubmitSmResp(sequence_number=3, message_id="xyz")),
    ("bind_transceiver_resp", BindResp(sequence_number=3, system_id="xyz")),
])
def test_smpplib_responses_decode_here(name: str, expected: object) -> None:
    field = "message_id" if name == "submit_sm_resp" else "system_id"
    assert decode_pdu(_theirs(name, 3, **{field: "xyz"})) == expected


def _frames(data: bytes) -> list[Any]:
    reader = PduReader()
    reader.feed(data)
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append(_parse(frame))
    return out


def test_session_against_smpplib_as_the_smsc() -> None:
    s = SmppSession(SessionSettings(window=4))
    s.bind("esme", "pw", "DISP", now=0.0)
    [bind] = _frames(s.data_to_send())
    assert bind.command == "bind_transceiver" and bind.system_id == b"esme"
    assert s.receive_data(_theirs("bind_transceiver_resp", bind.sequence, system_id="SMSC"),
                          0.1) == [BindSucceeded("SMSC")]

    seqs = [s.submit(p, 1.0) for p in build_submits("+8613800138000", "请撤离" * 30, ref=1)]
    requests = _frames(s.data_to_send())
    assert [r.sequence for r in requests] == seqs
    answers = b"".join(_theirs("submit_sm_resp", r.sequence, message_id=f"M{r.sequence}")
                       for r in requests)
    events = s.receive_data(answers, 1.5)
    assert [e for e in events if isinstance(e, SubmitAccepted)] == \
        [SubmitAccepted(q, f"M{q}") for q in seqs]

    receipt = _theirs("deliver_sm", 77, source_addr_ton=1, source_addr="8613800138000",
                      esm_class=4, short_message=f"id:M{seqs[0]} stat:DELIVRD".encode(),
                      receipted_message_id=f"M{seqs[0]}", message_state=2)
    [event] = s.receive_data(receipt, 2.0)
    assert isinstance(event, DeliveryReceipt) and event.message_id == f"M{seqs[0]}"
    [ack] = _frames(s.data_to_send())
    assert ack.command == "deliver_sm_resp" and ack.sequence == 77 and ack.status == 0

    seq = s.unbind(3.0)
    [unbind] = _frames(s.data_to_send())
    assert unbind.command == "unbind" and unbind.sequence == seq
    assert s.receive_data(_theirs("unbind_resp", seq), 3.1) == [SessionClosed("unbound")]
