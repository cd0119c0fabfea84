"""Dialogs: creation on both sides, CSeq rules, route sets and in-dialog requests."""

from __future__ import annotations

import pytest

from telephony.sip.dialog import (
    AckTimeout,
    AnswerRetransmitter,
    Dialog,
    DialogError,
    DialogState,
    uac_dialog_id,
    uas_dialog_id,
)
from telephony.sip.message import (
    Destination,
    SipRequest,
    SipResponse,
    build_response,
    parse_message,
)
from telephony.sip.transaction import SendMessage
from telephony.sip.uri import SipUri

VIA = "SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKnew1"


def parse_request(text: str) -> SipRequest:
    msg = parse_message(text.replace("\n", "\r\n").encode())
    assert isinstance(msg, SipRequest)
    return msg


OUR_INVITE = """INVITE sip:unit7@radio.example.cn SIP/2.0
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKinv1
Max-Forwards: 70
From: "Dispatcher 3" <sip:disp3@dispatch.example.cn>;tag=ourtag
To: <sip:unit7@radio.example.cn>
Call-ID: dlg-1@dispatch.example.cn
CSeq: 20 INVITE
Contact: <sip:disp3@203.0.113.5:5060>
Content-Length: 0

"""

THEIR_INVITE = """INVITE sip:110@dispatch.example.cn SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKtheirs
Record-Route: <sip:p1.example.cn;lr>, <sip:p2.example.cn;lr>
Max-Forwards: 68
From: <sip:13800000000@carrier.example.cn>;tag=caller
To: <sip:110@dispatch.example.cn>
Call-ID: dlg-2@carrier.example.cn
CSeq: 5 INVITE
Contact: <sip:13800000000@198.51.100.7:5060>
Content-Length: 0

"""


def answer(request: SipRequest, status: int, *, record_route: tuple[str, ...] = ()) -> SipResponse:
    extra = [("Contact", "<sip:unit7@192.0.2.77:5062>")]
    extra += [("Record-Route", rr) for rr in record_route]
    return build_response(request, status, to_tag="theirtag", extra_headers=extra)


def test_uac_dialog_from_2xx_route_set_reversed_and_bye() -> None:
    invite = parse_request(OUR_INVITE)
    ok = answer(invite, 200, record_route=("<sip:p1.example.cn;lr>", "<sip:p2.example.cn;lr>"))
    dialog = Dialog.as_uac(invite, ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == uac_dialog_id(ok)
    routes = [str(r.uri) for r in dialog.route_set]
    assert routes == ["sip:p2.example.cn;lr", "sip:p1.example.cn;lr"]
    assert dialog.remote_target == SipUri("sip", "192.0.2.77", "unit7", None, 5062)
    ack = dialog.create_ack(VIA)
    assert ack.cseq.number == 20 and ack.cseq.method == "ACK"
    bye = dialog.create_request("BYE", VIA)
    assert bye.uri == dialog.remote_target
    assert bye.headers.get_all("Route") == ["<sip:p2.example.cn;lr>", "<sip:p1.example.cn;lr>"]
    assert bye.cseq.number == 21 and bye.from_.tag == "ourtag" and bye.to.tag == "theirtag"
    assert bye.from_.display_name == "Dispatcher 3"
    again = parse_message(bye.to_bytes())
    assert isinstance(again, SipRequest) and again.cseq == bye.cseq and again.uri == bye.uri
    dialog.on_response(build_response(bye, 200))
    assert dialog.state.value == "terminated"
    with pytest.raises(DialogError):
        dialog.create_request("INFO", VIA)


def test_uac_early_dialog_confirmed_or_terminated() -> None:
    invite = parse_request(OUR_INVITE)
    early = Dialog.as_uac(invite, answer(invite, 180))
    assert early.state is DialogState.EARLY
    early.on_response(answer(invite, 200))
    assert early.state.value == "confirmed"
    failed = Dialog.as_uac(invite, answer(invite, 183))
    failed.on_response(answer(invite, 486))
    assert failed.state is DialogState.TERMINATED
    with pytest.raises(ValueError):
        Dialog.as_uac(invite, build_response(invite, 100))


def test_uas_dialog_cseq_order_target_refresh_and_bye() -> None:
    invite = parse_request(THEIR_INVITE)
    ok = build_response(invite, 200, to_tag="ourtag",
                        extra_headers=[("Contact", "<sip:110@203.0.113.5>")])
    dialog = Dialog.as_uas(invite, ok, local_cseq=100)
    assert dialog.id == uas_dialog_id(parse_request(THEIR_INVITE.replace(
        "To: <sip:110@dispatch.example.cn>", "To: <sip:110@dispatch.example.cn>;tag=ourtag")))
    routes = [str(r.uri) for r in dialog.route_set]
    assert routes == ["sip:p1.example.cn;lr", "sip:p2.example.cn;lr"]
    assert dialog.remote_cseq == 5
    reinvite = parse_request(THEIR_INVITE.replace("CSeq: 5 INVITE", "CSeq: 6 INVITE").replace(
        "198.51.100.7:5060>", "198.51.100.8:5070>"))
    dialog.on_request(reinvite)
    assert dialog.remote_target == SipUri("sip", "198.51.100.8", "13800000000", None, 5070)
    with pytest.raises(DialogError) as info:
        dialog.on_request(parse_request(THEIR_INVITE.replace("CSeq: 5 INVITE", "CSeq: 6 INFO")
                                        .replace("INVITE sip:", "INFO sip:")))
    assert info.value.status == 500
    bye = dialog.create_request("BYE", VIA)
    assert bye.cseq.number == 101 and bye.to.tag == "caller" and bye.from_.tag == "ourtag"
    dialog.on_request(parse_request(THEIR_INVITE.replace("CSeq: 5 INVITE", "CSeq: 7 BYE")
                                    .replace("INVITE sip:", "BYE sip:")))
    assert dialog.state is DialogState.TERMINATED
    with pytest.raises(DialogError) as info:
        dialog.on_request(reinvite)
    assert info.value.status == 481


def test_strict_router_in_route_set() -> None:
    invite = parse_request(OUR_INVITE)
    # The UAC reverses Record-Route, so the strict router ends up first.
    ok = answer(invite, 200, record_route=("<sip:loose.example.cn;lr>", "<sip:strict.example.cn>"))
    dialog = Dialog.as_uac(invite, ok)
    info = dialog.create_request("INFO", VIA, body=b"x")
    assert info.uri == SipUri("sip", "strict.example.cn")
    assert info.headers.get_all("Route") == [
        "<sip:loose.example.cn;lr>", "<sip:unit7@192.0.2.77:5062>"
    ]


def test_answer_retransmitter_schedule_ack_and_timeout() -> None:
    invite = parse_request(THEIR_INVITE)
    ok = build_response(invite, 200, to_tag="ourtag")
    udp = Destination("UDP", "198.51.100.7", 5060)
    rtx = AnswerRetransmitter(ok, udp, now=100.0)
    times: list[float] = []
    events: list[object] = []
    while (deadline := rtx.get_timer()) is not None:
        rtx.handle_timer(deadline)
        while (event := rtx.next_event()) is not None:
            times.append(deadline)
            events.append(event)
    sends = [t - 100.0 for t, e in zip(times, events, strict=True) if isinstance(e, SendMessage)]
    assert sends == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events[-1] == AckTimeout(ok) and times[-1] == 132.0 and rtx.done
    acked = AnswerRetransmitter(ok, udp, now=0.0)
    acked.handle_timer(0.5)
    assert isinstance(acked.next_event(), SendMessage)
    acked.ack_received(0.7)
    assert acked.get_timer() is None and acked.done
    tcp = AnswerRetransmitter(ok, Destination("TCP", "198.51.100.7", 5060), now=0.0)
    assert tcp.get_timer() == 32.0
    tcp.handle_timer(32.0)
    assert tcp.next_event() == AckTimeout(ok)
