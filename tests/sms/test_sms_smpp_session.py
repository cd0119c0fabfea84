"""SmppSession with a stepped ``now``: bind, window, throttling, timers, deliveries, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms.errors import SmppEncodeError, SmppStateError, WindowFull
from sms.inbound import ConcatInfo, Reassembler
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
)
from sms.smpp.events import (
    BindFailed,
    BindSucceeded,
    DeliveryReceipt,
    MessageReceived,
    ProtocolWarning,
    SessionClosed,
    SubmitAccepted,
    SubmitOutcomeUnknown,
    SubmitRejected,
    WindowOpen,
)
from sms.smpp.messages import build_submits
from sms.smpp.receipt import MessageState
from sms.smpp.session import SessionSettings, SessionState, SmppSession

SETTINGS = SessionSettings(window=3, response_timeout=10.0, enquire_link_interval=30.0,
                           throttle_pause=2.0)


def sent(session: SmppSession) -> list[Pdu]:
    """Decode everything the session wants to send."""
    reader = PduReader()
    reader.feed(session.data_to_send())
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append(decode_pdu(frame))
    return out


def bound(settings: SessionSettings = SETTINGS, now: float = 0.0) -> SmppSession:
    s = SmppSession(settings)
    seq = s.bind("esme", "pw", "", now=now)
    [bind] = sent(s)
    assert isinstance(bind, Bind) and bind.mode is BindMode.TRANSCEIVER
    events = s.receive_data(encode_pdu(BindResp(sequence_number=seq, system_id="SMSC")), now)
    assert events == [BindSucceeded("SMSC")]
    assert s.state is SessionState.BOUND
    return s


def sm(dest: str = "+8613800138000") -> SubmitSm:
    return build_submits(dest, "撤离")[0]


def test_bind_sends_credentials_and_binds() -> None:
    s = SmppSession(SETTINGS)
    assert s.get_timer() is None
    assert s.state is SessionState.OPEN
    seq = s.bind("esme", "secret", "DISP", now=5.0)
    [bind] = sent(s)
    assert isinstance(bind, Bind)
    assert (bind.sequence_number, bind.system_id, bind.password, bind.system_type) == \
        (seq, "esme", "secret", "DISP")
    assert s.get_timer() == 15.0
    assert s.state.value == "binding"
    assert s.window_free(5.0) == 0


def test_bind_refused_closes() -> None:
    s = SmppSession(SETTINGS)
    seq = s.bind("esme", "bad", now=0.0)
    sent(s)
    nack = BindResp(sequence_number=seq, command_status=CommandStatus.ESME_RINVPASWD)
    events = s.receive_data(encode_pdu(nack), 1.0)
    assert events == [BindFailed(0x0E, "bind refused: ESME_RINVPASWD"),
                      SessionClosed("bind refused: ESME_RINVPASWD")]
    assert s.state is SessionState.CLOSED and s.get_timer() is None
    assert s.receive_data(b"\x00" * 20, 2.0) == []


def test_bind_timeout() -> None:
    s = SmppSession(SETTINGS)
    s.bind("esme", "pw", now=0.0)
    assert s.handle_timer(9.99) == []
    events = s.handle_timer(10.0)
    assert isinstance(events[0], BindFailed) and events[0].status is None
    assert isinstance(events[-1], SessionClosed) and s.state is SessionState.CLOSED


def test_state_errors() -> None:
    s = SmppSession(SETTINGS)
    with pytest.raises(SmppStateError):
        s.submit(sm(), 0.0)
    with pytest.raises(SmppStateError):
        s.unbind(0.0)
    s.bind("a", "b", now=0.0)
    with pytest.raises(SmppStateError):
        s.bind("a", "b", now=0.0)
    with pytest.raises(SmppStateError):
        s.acknowledge(1)


def test_receiver_bind_cannot_submit() -> None:
    s = SmppSession(SETTINGS)
    seq = s.bind("a", "b", now=0.0, mode=BindMode.RECEIVER)
    s.receive_data(encode_pdu(BindResp(mode=BindMode.RECEIVER, sequence_number=seq)), 0.0)
    with pytest.raises(SmppStateError):
        s.submit(sm(), 0.0)


def test_window_and_matching_responses() -> None:
    s = bound()
    seqs = [s.submit(sm(), 1.0) for _ in range(3)]
    assert len(set(seqs)) == 3 and s.window_free(1.0) == 0
    pdus = sent(s)
    assert [p.sequence_number for p in pdus] == seqs
    assert all(isinstance(p, SubmitSm) for p in pdus)
    with pytest.raises(WindowFull):
        s.submit(sm(), 1.0)
    # Responses arrive out of order and are matched by sequence number.
    events = s.receive_data(encode_pdu(SubmitSmResp(sequence_number=seqs[2], message_id="m3")),
                            2.0)
    assert events == [SubmitAccepted(seqs[2], "m3"), WindowOpen(1)]
    events = s.receive_data(
        encode_pdu(SubmitSmResp(sequence_number=seqs[0],
                                command_status=CommandStatus.ESME_RINVDSTADR)), 2.5)
    assert events == [SubmitRejected(seqs[0], 0x0B, temporary=False)]
    assert s.window_free(2.5) == 2


@pytest.mark.parametrize("status", [CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL])
def test_throttle_pauses_window(status: CommandStatus) -> None:
    s = bound()
    a = s.submit(sm(), 10.0)
    b = s.submit(sm(), 10.0)
    sent(s)
    events = s.receive_data(encode_pdu(SubmitSmResp(sequence_number=a, command_status=status)),
                            11.0)
    assert events == [SubmitRejected(a, status, temporary=True)]
    assert s.window_free(11.0) == 0 and s.window_free(12.9) == 0
    with pytest.raises(WindowFull) as info:
        s.submit(sm(), 12.0)
    assert info.value.retry_at == 13.0
    assert s.get_timer() == 13.0
    assert s.handle_timer(12.99) == []
    assert s.handle_timer(13.0) == [WindowOpen(2)]
    assert s.window_free(13.0) == 2
    assert s.receive_data(encode_pdu(SubmitSmResp(sequence_number=b, message_id="x")), 13.5) \
        == [SubmitAccepted(b, "x")]


def test_submit_response_timeout_and_late_response() -> None:
    s = bound(now=95.0)
    seq = s.submit(sm(), 100.0)
    sent(s)
    assert s.get_timer() == 110.0
    events = s.handle_timer(110.0)
    assert events == [SubmitOutcomeUnknown(seq, "no submit_sm_resp within 10.0s")]
    assert s.state is SessionState.BOUND and s.window_free(110.0) == 3
    [warning] = s.receive_data(encode_pdu(SubmitSmResp(sequence_number=seq, message_id="m")),
                               111.0)
    assert isinstance(warning, ProtocolWarning)


def test_enquire_link_keepalive_with_stepped_now() -> None:
    s = bound(now=0.0)
    assert s.get_timer() == 30.0
    assert s.handle_timer(29.0) == [] and sent(s) == []
    assert s.handle_timer(30.0) == []
    [link] = sent(s)
    assert isinstance(link, EnquireLink)
    assert s.get_timer() == 40.0  # only the response timeout now
    assert s.receive_data(encode_pdu(EnquireLinkResp(sequence_number=link.sequence_number)),
                          31.0) == []
    assert s.get_timer() == 61.0  # quiet interval restarts from the last PDU received
    s.receive_data(encode_pdu(EnquireLink(sequence_number=77)), 50.0)
    assert sent(s) == [EnquireLinkResp(sequence_number=77)]
    assert s.get_timer() == 80.0


def test_dead_link_closes_and_settles_submits() -> None:
    s = bound(now=0.0)
    s.handle_timer(30.0)
    sent(s)
    seq = s.submit(sm(), 35.0)
    events = s.handle_timer(40.0)
    assert events == [SubmitOutcomeUnknown(seq, "no enquire_link_resp within 10.0s: link dead"),
                      SessionClosed("no enquire_link_resp within 10.0s: link dead")]
    assert s.state is SessionState.CLOSED and s.get_timer() is None


def test_delivery_receipt_text_is_parsed_and_acked() -> None:
    s = bound()
    text = (b"id:0A1B2C sub:001 dlvrd:001 submit date:2611211600 done date:2611211601 "
            b"stat:DELIVRD err:000 text:\xe6\x92\xa4")
    pdu = DeliverSm(sequence_number=42, source_addr_ton=1, source_addr="8613800138000",
                    destination_addr="10086", esm_class=0x04, short_message=text)
    [event] = s.receive_data(encode_pdu(pdu), 5.0)
    assert isinstance(event, DeliveryReceipt)
    assert (event.seq, event.message_id, event.state, event.error, event.recipient) == \
        (42, "0A1B2C", MessageState.DELIVERED, "000", "+8613800138000")
    assert event.done_date is not None and event.done_date.minute == 1
    assert sent(s) == [DeliverSmResp(sequence_number=42)]


def test_delivery_receipt_tlvs_win() -> None:
    s = bound()
    pdu = DeliverSm(sequence_number=43, source_addr="1", esm_class=0x04,
                    short_message=b"id:WRONG stat:DELIVRD",
                    tlvs=(Tlv(Tag.RECEIPTED_MESSAGE_ID, b"RIGHT\x00"),
                          Tlv.u8(Tag.MESSAGE_STATE, 5),
                          Tlv(Tag.NETWORK_ERROR_CODE, b"\x03\x00\x01")))
    [event] = s.receive_data(encode_pdu(pdu), 5.0)
    assert isinstance(event, DeliveryReceipt)
    assert event.message_id == "RIGHT" and event.state is MessageState.UNDELIVERABLE
    assert event.network_error == b"\x03\x00\x01"


def test_unreadable_receipt_is_acked_with_warning() -> None:
    s = bound()
    pdu = DeliverSm(sequence_number=44, esm_class=0x04, short_message=b"garbage")
    [event] = s.receive_data(encode_pdu(pdu), 5.0)
    assert isinstance(event, ProtocolWarning)
    assert sent(s) == [DeliverSmResp(sequence_number=44)]


def test_mobile_originated_concatenated_ucs2_reassembles() -> None:
    s = bound()
    text = "我家被淹了，三楼有老人需要救援！" * 6
    parts = build_submits("+8613800138000", text, ref=9)
    assert len(parts) > 1
    r = Reassembler()
    joined = []
    for i, p in enumerate(reversed(parts)):
        mo = DeliverSm(sequence_number=100 + i, source_addr_ton=1, source_addr="8613900139000",
                       destination_addr="12110", esm_class=0x40, data_coding=8,
                       short_message=p.short_message)
        [event] = s.receive_data(encode_pdu(mo), 1.0)
        assert isinstance(event, MessageReceived)
        assert event.part.sender == "+8613900139000" and event.destination == "12110"
        joined += r.add(event.part, 1.0)
    assert [m.text for m in joined] == [text]
    assert [p.sequence_number for p in sent(s)] == [100 + i for i in range(len(parts))]


def test_mobile_originated_sar_and_gsm7() -> None:
    s = bound()
    mo = DeliverSm(sequence_number=7, source_addr="13800138000", data_coding=0,
                   short_message=b"Help \x1b\x65",
                   tlvs=(Tlv.u16(Tag.SAR_MSG_REF_NUM, 300), Tlv.u8(Tag.SAR_TOTAL_SEGMENTS, 2),
                         Tlv.u8(Tag.SAR_SEGMENT_SEQNUM, 1)))
    [event] = s.receive_data(encode_pdu(mo), 1.0)
    assert isinstance(event, MessageReceived)
    assert event.part.text == "Help €" and event.part.concat == ConcatInfo(300, 2, 1, 16)
    assert event.part.sender == "13800138000"


def test_data_sm_payload_is_answered_with_data_sm_resp() -> None:
    s = bound()
    mo = DataSm(sequence_number=8, source_addr_ton=1, source_addr="8613800138000",
                data_coding=8, tlvs=(Tlv(Tag.MESSAGE_PAYLOAD, "着火了".encode("utf-16-be")),))
    [event] = s.receive_data(encode_pdu(mo), 1.0)
    assert isinstance(event, MessageReceived) and event.part.text == "着火了"
    assert sent(s) == [DataSmResp(sequence_number=8)]


def test_manual_ack_after_storage() -> None:
    s = bound(SessionSettings(auto_ack=False))
    mo = DeliverSm(sequence_number=9, source_addr="1", short_message=b"hi")
    [event] = s.receive_data(encode_pdu(mo), 1.0)
    assert isinstance(event, MessageReceived) and sent(s) == []
    s.acknowledge(9)
    assert sent(s) == [DeliverSmResp(sequence_number=9)]
    with pytest.raises(SmppStateError):
        s.acknowledge(9)
    s.receive_data(encode_pdu(DataSm(sequence_number=10)), 1.0)
    s.acknowledge(10, CommandStatus.ESME_RX_T_APPN)
    assert sent(s) == [DataSmResp(sequence_number=10, command_status=0x64)]


def test_deliver_before_bind_is_refused() -> None:
    s = SmppSession(SETTINGS)
    s.bind("a", "b", now=0.0)
    sent(s)
    [warning] = s.receive_data(encode_pdu(DeliverSm(sequence_number=3)), 0.5)
    assert isinstance(warning, ProtocolWarning)
    assert sent(s) == [DeliverSmResp(sequence_number=3, command_status=0x04)]


@pytest.mark.parametrize(("frame", "answer"), [
    # unknown command id → generic_nack ESME_RINVCMDID with its sequence number
    (bytes.fromhex("00000010000000990000000000000021"),
     GenericNack(sequence_number=0x21, command_status=0x03)),
    # an SMSC must not send us submit_sm
    (encode_pdu(SubmitSm(sequence_number=0x22)),
     GenericNack(sequence_number=0x22, command_status=0x03)),
    # a deliver_sm whose body is truncated → generic_nack ESME_RINVMSGLEN
    (bytes.fromhex("00000013000000050000000000000023000100"),
     GenericNack(sequence_number=0x23, command_status=0x01)),
])
def test_invalid_requests_get_generic_nack(frame: bytes, answer: Pdu) -> None:
    s = bound()
    [warning] = s.receive_data(frame, 1.0)
    assert isinstance(warning, ProtocolWarning)
    assert sent(s) == [answer]
    assert s.state is SessionState.BOUND


def test_ignored_and_garbled_responses() -> None:
    s = bound()
    alert = bytes.fromhex("00000010000001020000000000000005")
    [w1] = s.receive_data(alert, 1.0)
    seq = s.submit(sm(), 1.0)
    sent(s)
    garbled = bytes.fromhex(f"00000012800000040000000000{seq:06X}4142")  # no NUL
    [w2] = s.receive_data(garbled, 1.0)
    wrong_type = encode_pdu(EnquireLinkResp(sequence_number=seq))
    [w3] = s.receive_data(wrong_type, 1.0)
    unknown_resp = bytes.fromhex("00000010800000990000000000000001")
    [w4] = s.receive_data(unknown_resp, 1.0)
    assert all(isinstance(w, ProtocolWarning) for w in (w1, w2, w3, w4))
    assert sent(s) == []
    assert s.handle_timer(11.0) == [SubmitOutcomeUnknown(seq, "no submit_sm_resp within 10.0s")]


def test_generic_nack_for_our_submit() -> None:
    s = bound()
    seq = s.submit(sm(), 1.0)
    events = s.receive_data(
        encode_pdu(GenericNack(sequence_number=seq,
                               command_status=CommandStatus.ESME_RTHROTTLED)), 1.5)
    assert events == [SubmitRejected(seq, 0x58, temporary=True)]


def test_framing_loss_nacks_and_closes() -> None:
    s = bound()
    seq = s.submit(sm(), 1.0)
    sent(s)
    events = s.receive_data(bytes.fromhex("7FFFFFFF000000050000000000000031"), 2.0)
    assert events[0] == SubmitOutcomeUnknown(seq, events[-1].reason)  # type: ignore[union-attr]
    assert isinstance(events[-1], SessionClosed)
    assert sent(s) == [GenericNack(sequence_number=0x31, command_status=0x02)]
    assert s.state is SessionState.CLOSED


def test_unbind_by_us() -> None:
    s = bound()
    seq = s.unbind(5.0)
    assert sent(s) == [Unbind(sequence_number=seq)]
    assert s.state is SessionState.UNBINDING and s.window_free(5.0) == 0
    # The SMSC may still deliver in-flight messages.
    [mo] = s.receive_data(encode_pdu(DeliverSm(sequence_number=3, short_message=b"x")), 5.5)
    assert isinstance(mo, MessageReceived)
    assert s.receive_data(encode_pdu(UnbindResp(sequence_number=seq)), 6.0) == \
        [SessionClosed("unbound")]


def test_unbind_timeout_closes() -> None:
    s = bound()
    s.unbind(5.0)
    assert s.handle_timer(15.0) == [SessionClosed("no unbind_resp; closing anyway")]


def test_unbind_by_peer_settles_submits() -> None:
    s = bound()
    seq = s.submit(sm(), 1.0)
    sent(s)
    events = s.receive_data(encode_pdu(Unbind(sequence_number=50)), 2.0)
    assert events == [SubmitOutcomeUnknown(seq, "unbound by the SMSC"),
                      SessionClosed("unbound by the SMSC")]
    assert sent(s) == [UnbindResp(sequence_number=50)]


def test_connection_lost() -> None:
    s = bound()
    seq = s.submit(sm(), 1.0)
    assert s.connection_lost(2.0) == [SubmitOutcomeUnknown(seq, "connection lost"),
                                      SessionClosed("connection lost")]
    assert s.connection_lost(3.0) == []


def test_sequence_numbers_wrap_and_skip_outstanding() -> None:
    s = bound(SessionSettings(window=5))
    s._seq = 0x7FFFFFFE  # white-box: jump near the end of the sequence space
    seqs = [s.submit(sm(), 1.0) for _ in range(3)]
    assert seqs == [0x7FFFFFFF, 1, 2]


def test_settings_validated() -> None:
    with pytest.raises(ValueError):
        SessionSettings(window=0)
    with pytest.raises(LookupError):
        SessionSettings(default_alphabet="no-such-codec")
    assert SessionSettings(default_alphabet="latin-1").default_alphabet == "latin-1"


@settings(max_examples=150)
@given(st.binary(max_size=400))
def test_any_bytes_never_break_the_session(data: bytes) -> None:
    for step in (len(data) or 1, 1):
        s = bound()
        for i in range(0, len(data), step):
            s.receive_data(data[i:i + step], 1.0)  # must not raise
        s.handle_timer(100.0)
        s.data_to_send()


@settings(max_examples=100)
@given(st.lists(st.sampled_from([
    encode_pdu(EnquireLink(sequence_number=1)),
    encode_pdu(DeliverSm(sequence_number=2, short_message=b"abc")),
    encode_pdu(DeliverSm(sequence_number=3, esm_class=4, short_message=b"id:1 stat:EXPIRED")),
    encode_pdu(SubmitSmResp(sequence_number=9, message_id="z")),
    bytes.fromhex("00000010000000990000000000000021"),
]), max_size=8), st.integers(1, 17))
def test_valid_traffic_any_chunking_gives_same_events(frames: list[bytes], step: int) -> None:
    data = b"".join(frames)
    whole = bound()
    expected = whole.receive_data(data, 1.0)
    chunked = bound()
    got = []
    for i in range(0, len(data), step):
        got += chunked.receive_data(data[i:i + step], 1.0)
    assert got == expected
    assert chunked.data_to_send() == whole.data_to_send()


def test_repeated_throttling_backs_off_exponentially() -> None:
    s = bound(SessionSettings(window=5, throttle_pause=1.0, throttle_pause_max=3.0),
              now=0.0)
    now = 1.0
    pauses = []
    for _ in range(4):
        seq = s.submit(sm(), now)
        s.receive_data(encode_pdu(SubmitSmResp(sequence_number=seq,
                                               command_status=CommandStatus.ESME_RTHROTTLED)),
                       now)
        timer = s.get_timer()
        assert timer is not None
        pauses.append(timer - now)
        now = timer
        assert s.handle_timer(now) == [WindowOpen(5)]
    assert pauses == [1.0, 2.0, 3.0, 3.0]
    seq = s.submit(sm(), now)
    s.receive_data(encode_pdu(SubmitSmResp(sequence_number=seq, message_id="ok")), now)
    seq = s.submit(sm(), now)
    s.receive_data(encode_pdu(SubmitSmResp(sequence_number=seq,
                                           command_status=CommandStatus.ESME_RMSGQFUL)), now)
    assert s.get_timer() == now + 1.0  # success reset the streak


def test_unencodable_submit_does_not_use_a_slot() -> None:
    s = bound()
    with pytest.raises(SmppEncodeError):
        s.submit(SubmitSm(short_message=b"x" * 255), 1.0)
    assert s.window_free(1.0) == 3 and s.data_to_send() == b""
