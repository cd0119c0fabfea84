"""Two sans-I/O stacks wired back to back through bytes: INVITE, 180, 200, ACK, BYE.

Also a lossy run: the first INVITE is dropped and timer A recovers the
call.  Everything is stepped with an explicit ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telephony.sip.dialog import Dialog, DialogState
from telephony.sip.message import (
    Destination,
    SipRequest,
    SipResponse,
    build_response,
    make_via,
    parse_message,
)
from telephony.sip.transaction import (
    DeliverRequest,
    DeliverResponse,
    SendMessage,
    StrayResponse,
    TransactionEvent,
    TransactionLayer,
)

CALLER = Destination("UDP", "192.0.2.10", 5060)
CALLEE = Destination("UDP", "192.0.2.20", 5060)

INVITE = (
    "INVITE sip:110@192.0.2.20 SIP/2.0\r\n"
    f"Via: {make_via('UDP', '192.0.2.10', 5060, 'z9hG4bKcall1')}\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:13800000000@192.0.2.10>;tag=caller\r\n"
    "To: <sip:110@192.0.2.20>\r\nCall-ID: flow-1\r\nCSeq: 1 INVITE\r\n"
    "Contact: <sip:13800000000@192.0.2.10:5060>\r\nContent-Length: 0\r\n\r\n"
)


@dataclass
class Wire:
    """Delivers SendMessage events as bytes, optionally dropping some."""

    drop: list[int] = field(default_factory=list)
    sent: int = 0

    def carry(self, event: SendMessage, to: TransactionLayer, source: Destination,
              now: float) -> None:
        self.sent += 1
        if self.sent in self.drop:
            return
        to.receive(parse_message(event.message.to_bytes()), source, now)


def pump(a: TransactionLayer, b: TransactionLayer, wire: Wire, now: float
         ) -> tuple[list[TransactionEvent], list[TransactionEvent]]:
    """Move messages both ways until quiet; return what each TU saw."""
    seen_a: list[TransactionEvent] = []
    seen_b: list[TransactionEvent] = []
    busy = True
    while busy:
        busy = False
        for layer, peer, seen, source in ((a, b, seen_a, CALLER), (b, a, seen_b, CALLEE)):
            while (event := layer.next_event()) is not None:
                busy = True
                if isinstance(event, SendMessage):
                    wire.carry(event, peer, source, now)
                else:
                    seen.append(event)
    return seen_a, seen_b


def run_call(wire: Wire) -> tuple[Dialog, Dialog, float]:
    caller, callee = TransactionLayer(), TransactionLayer()
    invite = parse_message(INVITE.encode())
    assert isinstance(invite, SipRequest)
    caller.send_request(invite, CALLEE, 0.0)
    now = 0.0
    uas_request: SipRequest | None = None
    ok: SipResponse | None = None
    uac_dialog: Dialog | None = None
    acked = False
    for _ in range(200):
        seen_caller, seen_callee = pump(caller, callee, wire, now)
        acted = False
        for event in seen_callee:
            if isinstance(event, DeliverRequest) and event.request.method == "INVITE":
                uas_request = event.request
                callee.send_response(build_response(uas_request, 180, to_tag="callee"), now)
                ok = build_response(uas_request, 200, to_tag="callee",
                                    extra_headers=[("Contact", "<sip:110@192.0.2.20>")])
                callee.send_response(ok, now)
                acted = True
            if isinstance(event, DeliverRequest) and event.request.method == "ACK":
                acked = True
        for event in seen_caller:
            response = event.response if isinstance(event, (DeliverResponse, StrayResponse)) \
                else None
            if response is not None and response.status == 200:
                uac_dialog = uac_dialog or Dialog.as_uac(invite, response)
                ack = uac_dialog.create_ack(make_via("UDP", "192.0.2.10", 5060, "z9hG4bKack1"))
                caller.send_stateless(ack, CALLEE)
                acted = True
        if acked:
            break
        if acted:
            continue
        deadline = min(t for t in (caller.get_timer(), callee.get_timer()) if t is not None)
        now = max(now, deadline)
        caller.handle_timer(now)
        callee.handle_timer(now)
    assert uas_request is not None and ok is not None and uac_dialog is not None
    return uac_dialog, Dialog.as_uas(uas_request, ok), now


def test_clean_call_flow() -> None:
    uac, uas, now = run_call(Wire())
    assert now == 0.0
    assert uac.id.call_id == uas.id.call_id == "flow-1"
    assert (uac.id.local_tag, uac.id.remote_tag) == (uas.id.remote_tag, uas.id.local_tag)
    bye = uac.create_request("BYE", make_via("UDP", "192.0.2.10", 5060, "z9hG4bKbye1"))
    received = parse_message(bye.to_bytes())
    assert isinstance(received, SipRequest)
    uas.on_request(received)
    assert uas.state is DialogState.TERMINATED


def test_lost_invite_recovers_by_timer_a() -> None:
    # The first datagram (the INVITE) is lost; timer A re-sends it at T1.
    wire = Wire(drop=[1])
    uac, uas, now = run_call(wire)
    assert now == 0.5  # recovered by the first timer A retransmission
    assert uac.state is DialogState.CONFIRMED and uas.state is DialogState.CONFIRMED
