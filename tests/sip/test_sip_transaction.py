"""Transaction state machines and the transaction layer, with a stepped ``now``."""

from __future__ import annotations

from typing import Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.sip.message import (
    Destination,
    SipRequest,
    SipResponse,
    build_cancel,
    build_response,
    parse_message,
)
from telephony.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    DeliverRequest,
    DeliverResponse,
    SendMessage,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    StrayResponse,
    Terminated,
    TimerName,
    TimerSettings,
    TransactionEvent,
    TransactionKey,
    TransactionLayer,
    TransactionStateError,
    TransactionTimeout,
    TransportError,
)

UDP = Destination("UDP", "192.0.2.20", 5060)
TCP = Destination("TCP", "192.0.2.20", 5060)
PEER = Destination("UDP", "198.51.100.7", 40000)


class _HasEvents(Protocol):
    def next_event(self) -> TransactionEvent | None: ...


def drain(obj: _HasEvents) -> list[TransactionEvent]:
    out: list[TransactionEvent] = []
    while (event := obj.next_event()) is not None:
        out.append(event)
    return out


def sent(events: list[TransactionEvent]) -> list[object]:
    return [e.message for e in events if isinstance(e, SendMessage)]


def make_request(
    method: str = "INVITE", branch: str = "z9hG4bKabc", transport: str = "UDP"
) -> SipRequest:
    data = (
        f"{method} sip:110@dispatch.example.cn SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 198.51.100.7:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\nTo: <sip:110@dispatch.example.cn>\r\n"
        "From: <sip:caller@carrier.example.cn>;tag=f1\r\nCall-ID: call-1@198.51.100.7\r\n"
        f"CSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def reply(request: SipRequest, status: int) -> SipResponse:
    return build_response(request, status, to_tag="t9")


def step_timers(txn: ClientInviteTransaction | ClientNonInviteTransaction | ServerInviteTransaction,
                until: float) -> list[tuple[float, TransactionEvent]]:
    """Fire timers in order until ``until``; returns (time, event) pairs."""
    out: list[tuple[float, TransactionEvent]] = []
    while (deadline := txn.get_timer()) is not None and deadline <= until:
        txn.handle_timer(deadline)
        out += [(deadline, e) for e in drain(txn)]
    return out


def test_client_invite_udp_timer_a_doubles_without_cap_then_b_times_out() -> None:
    txn = ClientInviteTransaction(make_request(), UDP, now=0.0)
    assert sent(drain(txn)) == [txn.request]
    assert txn.timer_deadline(TimerName.A) == 0.5
    assert txn.timer_deadline(TimerName.B) == 32.0
    timeline = step_timers(txn, 100.0)
    resend_times = [t for t, e in timeline if isinstance(e, SendMessage)]
    assert resend_times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [e for t, e in timeline if t == 32.0] == [
        TransactionTimeout(txn.key, TimerName.B), Terminated(txn.key)
    ]
    assert txn.state is State.TERMINATED and txn.get_timer() is None


def test_client_invite_failure_sends_ack_and_absorbs_retransmissions() -> None:
    request = make_request()
    txn = ClientInviteTransaction(request, UDP, now=0.0)
    drain(txn)
    txn.receive_response(reply(request, 180), 0.2)
    assert [type(e) for e in drain(txn)] == [DeliverResponse]
    assert txn.state is State.PROCEEDING and txn.get_timer() is None
    busy = reply(request, 486)
    txn.receive_response(busy, 1.0)
    events = drain(txn)
    assert events[0] == DeliverResponse(txn.key, busy)
    (ack,) = sent(events)
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.cseq.number == 7 and ack.cseq.method == "ACK"
    assert ack.to.tag == "t9" and ack.top_via.branch == "z9hG4bKabc"
    assert txn.timer_deadline(TimerName.D) == 33.0
    txn.receive_response(busy, 2.0)
    assert [type(e) for e in drain(txn)] == [SendMessage]
    txn.receive_response(reply(request, 180), 2.5)
    assert drain(txn) == []
    txn.handle_timer(33.0)
    assert drain(txn) == [Terminated(txn.key)]


def test_client_invite_reliable_has_no_timer_a_and_zero_timer_d() -> None:
    request = make_request(transport="TCP")
    txn = ClientInviteTransaction(request, TCP, now=10.0)
    drain(txn)
    assert txn.timer_deadline(TimerName.A) is None and txn.get_timer() == 42.0
    txn.receive_response(reply(request, 503), 11.0)
    events = drain(txn)
    assert [type(e) for e in events] == [DeliverResponse, SendMessage, Terminated]
    assert txn.terminated


def test_client_invite_2xx_goes_to_accepted_and_passes_retransmissions() -> None:
    request = make_request()
    txn = ClientInviteTransaction(request, UDP, now=0.0)
    drain(txn)
    ok = reply(request, 200)
    txn.receive_response(ok, 0.1)
    assert drain(txn) == [DeliverResponse(txn.key, ok)]
    assert txn.state is State.ACCEPTED and txn.get_timer() == pytest.approx(32.1)
    txn.receive_response(ok, 1.0)
    assert drain(txn) == [DeliverResponse(txn.key, ok)]
    txn.receive_response(reply(request, 180), 1.1)
    assert drain(txn) == []
    txn.handle_timer(32.1)
    assert drain(txn) == [Terminated(txn.key)]


def test_client_non_invite_timer_e_caps_at_t2_and_f_times_out() -> None:
    txn = ClientNonInviteTransaction(make_request("OPTIONS"), UDP, now=0.0)
    drain(txn)
    timeline = step_timers(txn, 100.0)
    resend_times = [t for t, e in timeline if isinstance(e, SendMessage)]
    assert resend_times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [e for t, e in timeline if t == 32.0] == [
        TransactionTimeout(txn.key, TimerName.F), Terminated(txn.key)
    ]


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    request = make_request("REGISTER")
    txn = ClientNonInviteTransaction(request, UDP, now=0.0)
    drain(txn)
    txn.receive_response(reply(request, 100), 0.1)
    assert txn.state is State.PROCEEDING
    timeline = step_timers(txn, 10.0)
    assert [t for t, e in timeline if isinstance(e, SendMessage)] == [0.5, 4.5, 8.5]


def test_client_non_invite_final_then_timer_k() -> None:
    request = make_request("OPTIONS")
    txn = ClientNonInviteTransaction(request, UDP, now=0.0, timers=TimerSettings(t4=2.5))
    drain(txn)
    ok = reply(request, 200)
    txn.receive_response(ok, 0.3)
    assert drain(txn) == [DeliverResponse(txn.key, ok)]
    assert txn.get_timer() == pytest.approx(2.8)
    txn.receive_response(ok, 1.0)
    assert drain(txn) == []
    txn.handle_timer(2.8)
    assert drain(txn) == [Terminated(txn.key)]
    tcp = ClientNonInviteTransaction(make_request("OPTIONS", transport="TCP"), TCP, now=0.0)
    drain(tcp)
    tcp.receive_response(reply(tcp.request, 404), 0.1)
    assert [type(e) for e in drain(tcp)] == [DeliverResponse, Terminated]


def test_client_transport_error() -> None:
    txn = ClientNonInviteTransaction(make_request("OPTIONS"), UDP, now=0.0)
    drain(txn)
    txn.transport_error(0.1)
    assert drain(txn) == [TransportError(txn.key), Terminated(txn.key)]


def test_server_invite_failure_timer_g_and_h() -> None:
    request = make_request()
    txn = ServerInviteTransaction(request, PEER, now=0.0)
    (trying,) = sent(drain(txn))
    assert isinstance(trying, SipResponse) and trying.status == 100
    txn.receive_request(request, 0.2)
    assert sent(drain(txn)) == [trying]
    txn.send_response(reply(request, 180), 0.3)
    txn.send_response(reply(request, 480), 1.0)
    assert [m.status for m in sent(drain(txn)) if isinstance(m, SipResponse)] == [180, 480]
    timeline = step_timers(txn, 100.0)
    resends = [t for t, e in timeline if isinstance(e, SendMessage)]
    assert resends == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert [e for t, e in timeline if t == 33.0] == [
        TransactionTimeout(txn.key, TimerName.H), Terminated(txn.key)
    ]


def test_server_invite_ack_confirms_then_timer_i() -> None:
    request = make_request()
    txn = ServerInviteTransaction(request, PEER, now=0.0, auto_trying=False)
    assert drain(txn) == []
    txn.send_response(reply(request, 486), 1.0)
    drain(txn)
    ack = make_request("ACK")
    txn.receive_request(ack, 1.2)
    assert txn.state is State.CONFIRMED and txn.get_timer() == pytest.approx(6.2)
    txn.receive_request(ack, 1.3)
    txn.receive_request(request, 1.4)
    assert drain(txn) == []
    txn.handle_timer(6.2)
    assert drain(txn) == [Terminated(txn.key)]
    with pytest.raises(TransactionStateError):
        txn.send_response(reply(request, 200), 7.0)


def test_server_invite_2xx_accepted_absorbs_invite_and_passes_ack() -> None:
    request = make_request()
    txn = ServerInviteTransaction(request, PEER, now=0.0)
    drain(txn)
    ok = reply(request, 200)
    txn.send_response(ok, 1.0)
    assert sent(drain(txn)) == [ok]
    assert txn.state is State.ACCEPTED and txn.timer_deadline(TimerName.L) == 33.0
    txn.receive_request(request, 1.5)
    assert drain(txn) == []
    txn.send_response(ok, 1.6)
    assert sent(drain(txn)) == [ok]
    with pytest.raises(TransactionStateError):
        txn.send_response(reply(request, 180), 1.7)
    ack = make_request("ACK")
    txn.receive_request(ack, 2.0)
    assert drain(txn) == [DeliverRequest(txn.key, ack, PEER)]
    txn.handle_timer(33.0)
    assert drain(txn) == [Terminated(txn.key)]


def test_server_responses_go_to_received_and_rport() -> None:
    layer = TransactionLayer()
    layer.receive(make_request(), PEER, 0.0)
    events = drain(layer)
    assert isinstance(events[0], DeliverRequest)
    assert isinstance(events[1], SendMessage)
    assert events[1].destination == Destination("UDP", "198.51.100.7", 40000)
    via = events[0].request.top_via
    assert via.rport == 40000 and via.received == "198.51.100.7"


def test_server_non_invite_trying_proceeding_completed() -> None:
    request = make_request("REGISTER")
    txn = ServerNonInviteTransaction(request, PEER, now=0.0)
    txn.receive_request(request, 0.1)
    assert drain(txn) == []
    txn.send_response(reply(request, 100), 0.2)
    txn.receive_request(request, 0.3)
    assert len(sent(drain(txn))) == 2
    ok = reply(request, 200)
    txn.send_response(ok, 0.4)
    assert sent(drain(txn)) == [ok] and txn.get_timer() == pytest.approx(32.4)
    txn.receive_request(request, 5.0)
    assert sent(drain(txn)) == [ok]
    with pytest.raises(TransactionStateError):
        txn.send_response(ok, 5.1)
    txn.handle_timer(32.4)
    assert drain(txn) == [Terminated(txn.key)]
    tcp_request = make_request("REGISTER", transport="TCP")
    tcp = ServerNonInviteTransaction(tcp_request, Destination("TCP", "198.51.100.7", 1), now=0.0)
    tcp.send_response(reply(tcp_request, 200), 0.1)
    assert [type(e) for e in drain(tcp)] == [SendMessage, Terminated]


def test_custom_timer_values() -> None:
    timers = TimerSettings(t1=1.0, t2=2.0, t4=3.0)
    txn = ClientNonInviteTransaction(make_request("OPTIONS"), UDP, now=0.0, timers=timers)
    drain(txn)
    timeline = step_timers(txn, 70.0)
    resends = [t for t, e in timeline if isinstance(e, SendMessage)]
    assert resends[:5] == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert timeline[-1] == (64.0, Terminated(txn.key))
    with pytest.raises(ValueError):
        TimerSettings(t1=5.0, t2=4.0)


def test_layer_new_request_retransmission_and_final() -> None:
    layer = TransactionLayer()
    request = make_request("OPTIONS")
    layer.receive(request, PEER, 0.0)
    (deliver,) = drain(layer)
    assert isinstance(deliver, DeliverRequest) and deliver.key is not None
    layer.receive(make_request("OPTIONS"), PEER, 0.1)
    assert drain(layer) == []
    layer.send_response(reply(deliver.request, 200), 0.2)
    assert [type(e) for e in drain(layer)] == [SendMessage]
    assert len(layer) == 1 and layer.get_timer() == pytest.approx(32.2)
    layer.handle_timer(32.2)
    assert drain(layer) == [Terminated(deliver.key)]
    assert len(layer) == 0


def test_layer_cancel_names_the_invite_and_unknown_ack_goes_to_tu() -> None:
    layer = TransactionLayer()
    invite = make_request()
    layer.receive(invite, PEER, 0.0)
    invite_key = drain(layer)[0]
    assert isinstance(invite_key, DeliverRequest)
    layer.receive(build_cancel(make_request()), PEER, 0.5)
    (cancel,) = [e for e in drain(layer) if isinstance(e, DeliverRequest)]
    assert cancel.request.method == "CANCEL" and cancel.cancels == invite_key.key
    layer.receive(build_cancel(make_request(branch="z9hG4bKother")), PEER, 0.6)
    (orphan,) = drain(layer)
    assert isinstance(orphan, DeliverRequest) and orphan.cancels is None
    layer.receive(make_request("ACK", branch="z9hG4bKnew"), PEER, 0.7)
    (ack,) = drain(layer)
    assert isinstance(ack, DeliverRequest) and ack.key is None


def test_layer_rejects_missing_branch_statelessly() -> None:
    layer = TransactionLayer()
    layer.receive(make_request("OPTIONS", branch="z9hG4bK"), PEER, 0.0)
    (event,) = drain(layer)
    assert isinstance(event, SendMessage) and event.key is None
    assert isinstance(event.message, SipResponse) and event.message.status == 400
    layer.receive(make_request("ACK", branch="1234"), PEER, 0.0)
    assert drain(layer) == [] and len(layer) == 0


def test_layer_client_side_never_reorders_responses() -> None:
    layer = TransactionLayer()
    request = make_request()
    key = layer.send_request(request, UDP, 0.0)
    assert key == TransactionKey("z9hG4bKabc", "INVITE")
    assert sent(drain(layer)) == [request]
    for status in (100, 180, 486, 183, 486):
        layer.receive(reply(request, status), UDP, 0.1)
    events = drain(layer)
    delivered = [e.response.status for e in events if isinstance(e, DeliverResponse)]
    assert delivered == [100, 180, 486]
    acks = [m for m in sent(events) if isinstance(m, SipRequest)]
    assert [a.method for a in acks] == ["ACK", "ACK"]
    layer.receive(reply(make_request(branch="z9hG4bKzzz"), 200), UDP, 0.2)
    (stray,) = drain(layer)
    assert isinstance(stray, StrayResponse)
    with pytest.raises(ValueError):
        layer.send_request(make_request("OPTIONS", branch="nocookie"), UDP, 0.3)


def test_layer_transport_error_and_timeout_reach_the_tu() -> None:
    layer = TransactionLayer()
    key = layer.send_request(make_request("OPTIONS"), TCP, 0.0)
    drain(layer)
    assert layer.get_timer() == 32.0
    layer.transport_error(key, 1.0)
    assert drain(layer) == [TransportError(key), Terminated(key)]
    key2 = layer.send_request(make_request("BYE", branch="z9hG4bK2"), TCP, 0.0)
    drain(layer)
    layer.handle_timer(32.0)
    assert drain(layer) == [TransactionTimeout(key2, TimerName.F), Terminated(key2)]
    with pytest.raises(TransactionStateError):
        layer.send_response(reply(make_request("BYE"), 200), 33.0)


_STEPS = st.lists(
    st.one_of(
        st.sampled_from([100, 180, 183, 200, 202, 486, 503, 603]),
        st.just("timer"),
        st.just("transport-error"),
        st.floats(min_value=0.0, max_value=5.0),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["INVITE", "OPTIONS"]), st.sampled_from([UDP, TCP]), _STEPS)
def test_client_transactions_never_reorder_or_leak_timers(
    method: str, dest: Destination, steps: list[int | str | float]
) -> None:
    request = make_request(method, transport=dest.transport)
    txn: ClientInviteTransaction | ClientNonInviteTransaction
    if method == "INVITE":
        txn = ClientInviteTransaction(request, dest, now=0.0)
    else:
        txn = ClientNonInviteTransaction(request, dest, now=0.0)
    now = 0.0
    events: list[TransactionEvent] = []
    for step in steps:
        if step == "timer":
            deadline = txn.get_timer()
            if deadline is not None:
                now = max(now, deadline)
                txn.handle_timer(now)
        elif step == "transport-error":
            txn.transport_error(now)
        elif isinstance(step, float):
            now += step
            txn.handle_timer(now)
        else:
            assert isinstance(step, int)
            txn.receive_response(reply(request, step), now)
        events += drain(txn)
        deadline = txn.get_timer()
        assert deadline is None or deadline > now
        if txn.terminated or (method == "INVITE" and txn.state is State.PROCEEDING):
            assert deadline is None
        else:
            assert deadline is not None
    statuses = [e.response.status for e in events if isinstance(e, DeliverResponse)]
    finals = [i for i, s in enumerate(statuses) if s >= 200]
    if finals:
        first = finals[0]
        assert all(s >= 200 for s in statuses[first:]), "provisional after a final"
        if statuses[first] >= 300 or method != "INVITE":
            assert len(statuses) == first + 1, "response after a final was delivered"
        else:
            assert all(200 <= s < 300 for s in statuses[first:])
    terminated = [i for i, e in enumerate(events) if isinstance(e, Terminated)]
    assert len(terminated) <= 1 and (not terminated or terminated[0] == len(events) - 1)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["INVITE", "REGISTER"]),
    st.lists(st.one_of(st.sampled_from([100, 180, 200, 404, "req", "ack", "timer"])), max_size=25),
)
def test_server_transactions_only_reject_tu_misuse(method: str, steps: list[int | str]) -> None:
    request = make_request(method)
    txn: ServerInviteTransaction | ServerNonInviteTransaction
    if method == "INVITE":
        txn = ServerInviteTransaction(request, PEER, now=0.0)
    else:
        txn = ServerNonInviteTransaction(request, PEER, now=0.0)
    now = 0.0
    sent_statuses: list[int] = []
    for step in steps:
        now += 0.25
        if step == "req":
            txn.receive_request(request, now)
        elif step == "ack":
            txn.receive_request(make_request("ACK"), now)
        elif step == "timer":
            deadline = txn.get_timer()
            if deadline is not None:
                now = max(now, deadline)
                txn.handle_timer(now)
        else:
            assert isinstance(step, int)
            before = txn.state
            try:
                txn.send_response(reply(request, step), now)
            except TransactionStateError:
                assert before is not State.PROCEEDING and before is not State.TRYING
        sent_statuses += [
            m.status for m in sent(drain(txn)) if isinstance(m, SipResponse)
        ]
    finals = [i for i, s in enumerate(sent_statuses) if s >= 200]
    if finals:
        tail = sent_statuses[finals[0]:]
        assert all(s == tail[0] for s in tail), "a different response after the final"


def test_server_invite_reliable_ack_terminates_at_once() -> None:
    request = make_request(transport="TCP")
    txn = ServerInviteTransaction(request, Destination("TCP", "198.51.100.7", 33000), now=0.0)
    txn.send_response(reply(request, 404), 0.1)
    assert txn.timer_deadline(TimerName.G) is None
    assert txn.timer_deadline(TimerName.H) == pytest.approx(32.1)
    drain(txn)
    txn.receive_request(make_request("ACK", transport="TCP"), 0.2)
    assert drain(txn) == [Terminated(txn.key)]


def test_layer_timer_heap_with_many_transactions() -> None:
    layer = TransactionLayer()
    keys = [
        layer.send_request(make_request("OPTIONS", branch=f"z9hG4bK{i}"), UDP, i * 0.1)
        for i in range(50)
    ]
    drain(layer)
    layer.handle_timer(5.0)  # retransmissions due so far
    assert all(isinstance(e, SendMessage) for e in drain(layer))
    # Half of them get a final response early: their E/F timers must vanish.
    for i in range(0, 50, 2):
        layer.receive(reply(make_request("OPTIONS", branch=f"z9hG4bK{i}"), 200), UDP, 5.0)
    drain(layer)
    fired: list[float] = []
    terminated: list[TransactionKey] = []
    last = 5.0
    while (deadline := layer.get_timer()) is not None:
        assert deadline >= last
        last = deadline
        layer.handle_timer(deadline)
        for event in drain(layer):
            if isinstance(event, Terminated):
                terminated.append(event.key)
                fired.append(deadline)
            elif isinstance(event, TransactionTimeout):
                assert keys.index(event.key) % 2 == 1
    assert sorted(terminated, key=keys.index) == keys and len(layer) == 0
    # Answered ones end at 5 + T4, unanswered ones at start + 64*T1.
    assert fired[0] == pytest.approx(10.0)
    assert max(fired) == pytest.approx(4.9 + 32.0)


def test_an_accepted_server_invite_passes_every_2xx_on_but_keeps_none() -> None:
    request = make_request()
    txn = ServerInviteTransaction(request, PEER, now=0.0)
    drain(txn)
    ok = reply(request, 200)
    txn.send_response(ok, 0.1)
    assert sent(drain(txn)) == [ok] and txn.state is State.ACCEPTED
    assert txn.last_response is None and not hasattr(txn, "request")  # nothing lingers 32 s
    txn.receive_request(make_request(), 0.2)  # a retransmitted INVITE is absorbed
    assert sent(drain(txn)) == []
    txn.send_response(ok, 0.6)  # the TU's own 2xx retransmission still goes out
    assert sent(drain(txn)) == [ok] and txn.last_response is None
    assert [e for _, e in step_timers(txn, 40.0) if isinstance(e, Terminated)]


def test_layer_destroys_an_invite_whose_cancel_is_never_answered_after_64_t1() -> None:
    # RFC 3261 9.1: a peer that sent 180 and then ignores our CANCEL (no 487) must not
    # keep the INVITE client transaction for ever (figure 5 has no timer in Proceeding).
    layer = TransactionLayer()
    invite = make_request()
    key = layer.send_request(invite, UDP, 0.0)
    layer.receive(reply(invite, 180), UDP, 0.1)
    drain(layer)
    assert layer.get_timer() is None  # Proceeding: nothing would ever end it
    layer.send_request(build_cancel(invite), UDP, 5.0)
    drain(layer)
    expires = 5.0 + 64 * 0.5
    layer.handle_timer(expires - 0.01)
    assert not [e for e in drain(layer) if isinstance(e, TransactionTimeout)]
    assert layer.client_transaction(key) is not None
    layer.handle_timer(expires)
    events = drain(layer)
    assert TransactionTimeout(key, TimerName.B) in events and Terminated(key) in events
    assert layer.client_transaction(key) is None


def test_layer_a_cancelled_invite_answered_487_ends_as_usual() -> None:
    layer = TransactionLayer()
    invite = make_request()
    key = layer.send_request(invite, UDP, 0.0)
    layer.receive(reply(invite, 180), UDP, 0.1)
    layer.send_request(build_cancel(invite), UDP, 1.0)
    layer.receive(reply(invite, 487), UDP, 1.1)
    events = drain(layer)
    assert [e.response.status for e in events if isinstance(e, DeliverResponse)] == [180, 487]
    assert not [e for e in events if isinstance(e, TransactionTimeout)]
    txn = layer.client_transaction(key)
    assert txn is not None and txn.state is State.COMPLETED
    assert txn.timer_deadline(TimerName.B) is None
