"""Session timers (RFC 4028) and reliable provisionals (RFC 3262) on a stepped clock."""

from __future__ import annotations

import pytest

from telephony.sip.errors import SipParseError
from telephony.sip.events import TimerSettings
from telephony.sip.message import SipResponse, parse_message
from telephony.sip.reliable import (
    RAck,
    ReliableFailed,
    ReliableReceiver,
    ReliableSender,
    Retransmit,
    SendReliable,
    parse_rack,
)
from telephony.sip.timers import (
    RefreshDue,
    Refresher,
    SessionExpired,
    SessionTimer,
    TooSmall,
    negotiate_uas,
    parse_session_expires,
)


def response(status: int, *extra: str, cseq: int = 1) -> SipResponse:
    text = (f"SIP/2.0 {status} Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c1\r\n"
            f"CSeq: {cseq} INVITE\r\n" + "".join(f"{h}\r\n" for h in extra)
            + "Content-Length: 0\r\n\r\n")
    message = parse_message(text.encode())
    assert isinstance(message, SipResponse)
    return message


# -- session timers ------------------------------------------------------------

@pytest.mark.parametrize(("value", "interval", "refresher"), [
    ("1800", 1800, None), ("90;refresher=uac", 90, Refresher.UAC),
    ("600 ; refresher=UAS", 600, Refresher.UAS), ("99999999", 86400, None),
])
def test_session_expires_parses(value: str, interval: int, refresher: Refresher | None) -> None:
    offer = parse_session_expires(value)
    assert (offer.interval, offer.refresher) == (interval, refresher)


@pytest.mark.parametrize("value", ["", "abc", "-5", "0", "90;refresher=me", "1" * 11])
def test_bad_session_expires_is_a_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_session_expires(value)


def test_uas_negotiation_table() -> None:
    def agree(se: str | None, min_se: str | None, sup: list[str]) -> tuple[int, str, bool]:
        a = negotiate_uas(se, min_se, sup, local_min_se=120, default_interval=1800)
        return a.interval, a.refresher.value, a.require_timer

    assert agree(None, None, []) == (1800, "uas", False)
    assert agree("600", None, ["timer, 100rel"]) == (600, "uac", True)
    assert agree("600;refresher=uas", None, ["timer"]) == (600, "uas", True)
    assert agree("600", None, []) == (600, "uas", False)  # no timer support: we refresh
    assert agree(None, "2000", []) == (2000, "uas", False)
    with pytest.raises(TooSmall) as caught:
        agree("100", None, ["timer"])
    assert (caught.value.status, caught.value.min_se) == (422, 120)
    assert negotiate_uas("600", None, ["timer"], local_min_se=90,
                         default_interval=1800).headers() == [
        ("Session-Expires", "600;refresher=uac"), ("Require", "timer")]


def test_refresher_refreshes_at_half_and_expires_without_answer() -> None:
    timer = SessionTimer(600, we_refresh=True, now=1000.0)
    assert timer.get_timer() == 1300.0
    timer.handle_timer(1299.9)
    assert timer.next_event() is None
    timer.handle_timer(1300.0)
    assert timer.next_event() == RefreshDue(600)
    # The refresh got no answer: the session ends at 1000 + 600 - 32.
    assert timer.get_timer() == 1568.0
    timer.handle_timer(1568.0)
    assert timer.next_event() == SessionExpired(600)
    assert timer.get_timer() is None


def test_refresh_restarts_the_clock() -> None:
    timer = SessionTimer(600, we_refresh=True, now=0.0)
    timer.handle_timer(300.0)
    assert timer.next_event() == RefreshDue(600)
    timer.refreshed(300.5, we_refresh=True)
    assert timer.get_timer() == 600.5


def test_peer_refresher_expires_before_the_interval() -> None:
    timer = SessionTimer(90, we_refresh=False, now=0.0)
    assert timer.get_timer() == 60.0  # 90 - min(32, 30)
    timer.refreshed(50.0)  # the peer's re-INVITE arrived
    assert timer.get_timer() == 110.0
    timer.handle_timer(110.0)
    assert timer.next_event() == SessionExpired(90)
    assert timer.expired


# -- 100rel / PRACK ------------------------------------------------------------

def test_reliable_provisional_retransmits_doubling_until_prack() -> None:
    sender = ReliableSender(cseq=1, timers=TimerSettings(t1=0.5), rseq=10)
    r180 = response(180)
    sender.send(r180, now=0.0)
    first = sender.next_event()
    assert isinstance(first, SendReliable)
    assert first.response.headers.get("RSeq") == "11"
    assert "100rel" in first.response.headers.get_all("Require")
    due = []
    now = 0.0
    for _ in range(3):
        deadline = sender.get_timer()
        assert deadline is not None
        now = deadline
        sender.handle_timer(now)
        assert isinstance(sender.next_event(), Retransmit)
        due.append(now)
    assert due == [0.5, 1.5, 3.5]
    assert not sender.prack(RAck(11, 2, "INVITE"), now)  # wrong CSeq
    assert sender.prack(RAck(11, 1, "INVITE"), now)
    assert sender.get_timer() is None
    assert sender.prack(RAck(11, 1, "INVITE"), now)  # a retransmitted PRACK: 200 again


def test_second_reliable_waits_for_the_first_prack() -> None:
    sender = ReliableSender(cseq=5, rseq=0)
    sender.send(response(180, cseq=5), 0.0)
    sender.send(response(183, cseq=5), 0.1)
    assert isinstance(sender.next_event(), SendReliable)
    assert sender.next_event() is None
    assert sender.prack(RAck(1, 5, "INVITE"), 0.2)
    queued = sender.next_event()
    assert isinstance(queued, SendReliable) and queued.response.status == 183
    assert queued.response.headers.get("RSeq") == "2"


def test_no_prack_within_64_t1_fails() -> None:
    sender = ReliableSender(cseq=1, rseq=0)
    sender.send(response(183), 0.0)
    sender.next_event()
    retransmits = 0
    while (deadline := sender.get_timer()) is not None:
        sender.handle_timer(deadline)
        event = sender.next_event()
        if isinstance(event, Retransmit):
            retransmits += 1
        else:
            assert event == ReliableFailed(1)
    assert retransmits == 6  # 0.5 1.5 3.5 7.5 15.5 31.5, then 63.5 >= 32: failed
    assert sender.failed


def test_receiver_pracks_new_provisionals_only() -> None:
    rx = ReliableReceiver()
    assert rx.needs_prack(response(180)) is None  # not reliable
    assert rx.needs_prack(response(180, "Require: 100rel", "RSeq: 7")) == RAck(7, 1, "INVITE")
    assert rx.needs_prack(response(180, "Require: 100rel", "RSeq: 7")) is None  # retransmitted
    assert rx.needs_prack(response(183, "Require: 100rel", "RSeq: 9")) is None  # out of order
    assert rx.needs_prack(response(183, "Require: 100rel", "RSeq: 8")) == RAck(8, 1, "INVITE")


@pytest.mark.parametrize("value", ["", "1 2", "a 1 INVITE", "1 2 INVITE x", "1" * 11 + " 1 X"])
def test_bad_rack_is_a_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_rack(value)
