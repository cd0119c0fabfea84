"""SMPP 3.4 PDU codec: hex vectors, round trips, every decode/encode error, fuzzing."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms.errors import (
    CommandLengthError,
    SmppDecodeError,
    SmppEncodeError,
    SmppError,
    UnknownCommandError,
)
from sms.smpp.codec import (
    Bind,
    BindMode,
    BindResp,
    CommandStatus,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    PduReader,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Tlv,
    Unbind,
    UnbindResp,
    decode_pdu,
    encode_pdu,
    status_name,
)

# (pdu, hex) — the bind_transmitter is the example PDU of SMPP 3.4 §3.2 (Table 3-1);
# the others are spelled out field by field from §4.
VECTORS: list[tuple[Pdu, str]] = [
    (Bind(mode=BindMode.TRANSMITTER, sequence_number=1, system_id="SMPP3TEST",
          password="secret08", system_type="SUBMIT1", interface_version=0x50, addr_ton=1,
          addr_npi=1),
     "0000002F000000020000000000000001" "534D5050335445535400" "7365637265743038"
     "00" "5355424D49543100" "50" "01" "01" "00"),
    (Bind(mode=BindMode.TRANSCEIVER, sequence_number=2, system_id="esme", password="pw"),
     "0000001D000000090000000000000002" "65736D6500" "707700" "00" "34" "00" "00" "00"),
    (BindResp(mode=BindMode.TRANSCEIVER, sequence_number=2, system_id="SMSC",
              tlvs=(Tlv.u8(Tag.SC_INTERFACE_VERSION, 0x34),)),
     "0000001A800000090000000000000002" "534D534300" "0210000134"),
    (BindResp(mode=BindMode.RECEIVER, sequence_number=3,
              command_status=CommandStatus.ESME_RBINDFAIL),
     "0000001080000001" "0000000D" "00000003"),
    (EnquireLink(sequence_number=1), "00000010000000150000000000000001"),
    (EnquireLinkResp(sequence_number=1), "00000010800000150000000000000001"),
    (Unbind(sequence_number=0x7FFFFFFF), "0000001000000006000000007FFFFFFF"),
    (UnbindResp(sequence_number=9), "00000010800000060000000000000009"),
    (GenericNack(sequence_number=5, command_status=CommandStatus.ESME_RINVCMDID),
     "00000010800000000000000300000005"),
    (SubmitSmResp(sequence_number=2, message_id="abc"),
     "000000148000000400000000000000026162630" "0"),
    (SubmitSmResp(sequence_number=2, command_status=CommandStatus.ESME_RTHROTTLED),
     "00000010800000040000005800000002"),
    (DeliverSmResp(sequence_number=4), "0000001180000005000000000000000400"),
    (SubmitSm(sequence_number=3, source_addr_ton=5, source_addr="CMD", dest_addr_ton=1,
              dest_addr_npi=1, destination_addr="8613800138000", registered_delivery=1,
              short_message=b"hi"),
     "0000003300000004000000000000000300" "05" "00" "434D4400" "01" "01"
     "3836313338303031333830303000" "00" "00" "00" "00" "00" "01" "00" "00" "00" "02" "6869"),
    (DeliverSm(sequence_number=6, source_addr_ton=1, source_addr_npi=1, source_addr="1",
               destination_addr="2", esm_class=4, short_message=b"",
               tlvs=(Tlv(Tag.RECEIPTED_MESSAGE_ID, b"A1\x00"), Tlv.u8(Tag.MESSAGE_STATE, 2))),
     "0000002F00000005000000000000000600" "01" "01" "3100" "00" "00" "3200" "04" "00" "00"
     "00" "00" "00" "00" "00" "00" "00" "001E0003413100" "0427000102"),
    (DataSm(sequence_number=8, source_addr="1", destination_addr="2", data_coding=8,
            tlvs=(Tlv(Tag.MESSAGE_PAYLOAD, "中".encode("utf-16-be")),)),
     "000000220000010300000000000000080000003100000032000000080424000" "24E2D"),
    (DataSmResp(sequence_number=8, message_id="x"), "000000128000010300000000000000087800"),
]


@pytest.mark.parametrize(("pdu", "hex_"), VECTORS)
def test_vectors_round_trip(pdu: Pdu, hex_: str) -> None:
    raw = bytes.fromhex(hex_)
    assert encode_pdu(pdu).hex().upper() == raw.hex().upper()
    assert decode_pdu(raw) == pdu


def test_tlv_accessors() -> None:
    pdu = decode_pdu(bytes.fromhex(VECTORS[13][1]))
    assert isinstance(pdu, DeliverSm)
    assert pdu.tlv_str(Tag.RECEIPTED_MESSAGE_ID) == "A1"
    assert pdu.tlv_int(Tag.MESSAGE_STATE) == 2
    assert pdu.tlv(Tag.MESSAGE_PAYLOAD) is None and pdu.tlv_int(Tag.SAR_MSG_REF_NUM) is None
    assert pdu.tlv_str(Tag.ADDITIONAL_STATUS_INFO_TEXT) is None


def test_status_names() -> None:
    assert status_name(0x58) == "ESME_RTHROTTLED"
    assert status_name(0x400) == "0x00000400"


def _hdr(length: int, cid: int, status: int = 0, seq: int = 1) -> str:
    return f"{length:08X}{cid:08X}{status:08X}{seq:08X}"


@pytest.mark.parametrize(("hex_", "error", "status"), [
    ("000000", SmppDecodeError, 0x01),                              # short header
    (_hdr(15, 0x15), CommandLengthError, 0x02),                     # below header size
    (_hdr(70000, 4), CommandLengthError, 0x02),                     # above the 64 KiB limit
    (_hdr(17, 0x15), CommandLengthError, 0x02),                     # length != octets given
    (_hdr(16, 0x99), UnknownCommandError, 0x03),
    (_hdr(17, 0x15) + "00", SmppDecodeError, 0x02),                 # body on enquire_link
    (_hdr(18, 0x80000004) + "6162", SmppDecodeError, 0x01),         # message_id without NUL
    (_hdr(16 + 17, 0x80000009) + "41" * 16 + "00", SmppDecodeError, 0x01),  # system_id > 15
    (_hdr(16 + 3, 4) + "000500", SmppDecodeError, 0x01),            # submit_sm truncated
    # submit_sm whose sm_length (0x05) runs past the body
    (_hdr(16 + 19, 4) + "00" "0000" "00" "0000" "00" "000000" "00" "00" "00" "000000" "05" "6869"
     , SmppDecodeError, 0x01),
    # deliver_sm with a TLV whose length runs past the body
    (_hdr(16 + 21, 5) + "00" "0000" "00" "0000" "00" "000000" "00" "00" "00" "000000" "00"
     "0424" "0010", SmppDecodeError, 0x01),
    (_hdr(16 + 18, 5) + "00" "0000" "00" "0000" "00" "000000" "00" "00" "00" "000000" "00"
     "04", SmppDecodeError, 0x01),                                   # half a TLV tag
])
def test_decode_errors(hex_: str, error: type[SmppError], status: int) -> None:
    with pytest.raises(error) as info:
        decode_pdu(bytes.fromhex(hex_))
    assert info.value.command_status == status
    if len(hex_) >= 32:
        assert info.value.sequence_number == 1


def test_custom_length_limit() -> None:
    raw = encode_pdu(SubmitSm(short_message=b"x" * 200))
    with pytest.raises(CommandLengthError):
        decode_pdu(raw, max_length=100)
    with pytest.raises(SmppEncodeError):
        encode_pdu(SubmitSm(short_message=b"x" * 200), max_length=100)


@pytest.mark.parametrize("pdu", [
    Bind(system_id="x" * 16),
    Bind(password="p" * 9),
    Bind(system_type="t" * 13),
    Bind(system_id="中"),
    Bind(system_id="a\rb"),
    Bind(addr_ton=256),
    SubmitSm(short_message=b"x" * 255),
    SubmitSm(destination_addr="1" * 21),
    SubmitSm(validity_period="1" * 17),
    SubmitSm(esm_class=-1),
    Unbind(tlvs=(Tlv(1, b""),)),
    SubmitSm(tlvs=(Tlv(0x10000, b""),)),
    SubmitSm(tlvs=(Tlv(0x0424, b"x" * 0x10000),)),
    EnquireLink(sequence_number=2**32),
    GenericNack(command_status=-1),
])
def test_encode_errors(pdu: Pdu) -> None:
    with pytest.raises(SmppEncodeError):
        encode_pdu(pdu)


def test_failed_response_without_body() -> None:
    # SMPP 3.4 §3.3: a failed response may omit its body; both forms decode.
    raw = bytes.fromhex(_hdr(16, 0x80000004, 0x0B, 2))
    assert decode_pdu(raw) == SubmitSmResp(sequence_number=2, command_status=0x0B)
    raw_body = bytes.fromhex(_hdr(17, 0x80000004, 0x0B, 2) + "00")
    assert decode_pdu(raw_body) == SubmitSmResp(sequence_number=2, command_status=0x0B)


def test_reader_splits_stream_any_chunking() -> None:
    frames = [encode_pdu(p) for p, _ in VECTORS]
    stream = b"".join(frames)
    for step in (1, 2, 7, 16, 1000):
        reader = PduReader()
        got = []
        for i in range(0, len(stream), step):
            reader.feed(stream[i:i + step])
            while (frame := reader.next_frame()) is not None:
                got.append(frame)
        assert got == frames and reader.buffered == 0


def test_reader_refuses_after_framing_loss() -> None:
    reader = PduReader(max_length=1024)
    reader.feed(bytes.fromhex(_hdr(5000, 4)))
    with pytest.raises(CommandLengthError):
        reader.next_frame()
    with pytest.raises(CommandLengthError):
        reader.feed(b"more")


def _decode_stream(data: bytes, step: int) -> None:
    reader = PduReader(max_length=4096)
    for i in range(0, len(data), step):
        reader.feed(data[i:i + step])
        while (frame := reader.next_frame()) is not None:
            decode_pdu(frame, max_length=4096)


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_smpp_error(data: bytes) -> None:
    for step in (len(data) or 1, 1):
        with contextlib.suppress(SmppError):
            _decode_stream(data, step)


@given(st.sampled_from([p for p, _ in VECTORS]), st.binary(max_size=40), st.integers(0, 80))
def test_corrupted_valid_pdus(pdu: Pdu, junk: bytes, cut: int) -> None:
    raw = encode_pdu(pdu)
    mutated = raw[:16] + junk + raw[16 + cut:]
    mutated = len(mutated).to_bytes(4, "big") + mutated[4:]
    with contextlib.suppress(SmppError):
        decode_pdu(mutated)


_cstr = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@given(_cstr, _cstr, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=254),
       st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=20)), max_size=3),
       st.integers(1, 0x7FFFFFFF))
def test_submit_sm_round_trip_property(src: str, dst: str, esm: int, dc: int, sm: bytes,
                                       tlvs: list[tuple[int, bytes]], seq: int) -> None:
    pdu = SubmitSm(sequence_number=seq, source_addr=src, destination_addr=dst, esm_class=esm,
                   data_coding=dc, short_message=sm, tlvs=tuple(Tlv(t, v) for t, v in tlvs))
    assert decode_pdu(encode_pdu(pdu)) == pdu
    deliver = DeliverSm(**{k: getattr(pdu, k) for k in (
        "sequence_number", "source_addr", "destination_addr", "esm_class", "data_coding",
        "short_message", "tlvs")})
    assert decode_pdu(encode_pdu(deliver)) == deliver
    assert replace(pdu, sequence_number=1).sequence_number == 1
