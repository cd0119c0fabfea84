"""Reassembly of concatenated inbound SMS and MSISDN normalisation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sms.encoding import segment
from sms.errors import MsisdnError, SmsError
from sms.inbound import ConcatInfo, InboundPart, Reassembler
from sms.msisdn import normalise_msisdn
from sms.pdu import SmsDeliver, decode_pdu, encode_deliver

CST = timezone(timedelta(hours=8))
WHEN = datetime(2026, 11, 21, 16, 0, tzinfo=CST)


def _part(seq: int, total: int = 3, ref: int = 9, sender: str = "+8613800138000",
          text: str | None = None) -> InboundPart:
    return InboundPart(sender, text if text is not None else f"<{seq}>",
                       ConcatInfo(ref, total, seq), WHEN)


def test_single_part_passes_straight_through() -> None:
    r = Reassembler()
    [msg] = r.add(InboundPart("+861", "hello", None, WHEN), now=0.0)
    assert msg.complete and msg.text == "hello" and msg.parts_total == 1
    assert r.get_timer() is None


def test_out_of_order_parts_join() -> None:
    r = Reassembler(timeout=60)
    assert r.add(_part(3), 0.0) == []
    assert r.add(_part(1), 1.0) == []
    assert r.get_timer() == 60.0
    [msg] = r.add(_part(2), 2.0)
    assert msg.text == "<1><2><3>" and msg.complete and msg.missing == ()
    assert r.pending_count == 0 and r.get_timer() is None


def test_duplicate_part_first_copy_wins() -> None:
    r = Reassembler()
    r.add(_part(1, 2, text="a"), 0.0)
    assert r.add(_part(1, 2, text="b"), 0.5) == []
    [msg] = r.add(_part(2, 2, text="c"), 1.0)
    assert msg.text == "ac"


def test_keys_separate_senders_refs_and_totals() -> None:
    r = Reassembler()
    r.add(_part(1, 2, ref=1, sender="+1"), 0.0)
    r.add(_part(1, 2, ref=1, sender="+2"), 0.0)
    r.add(_part(1, 3, ref=1, sender="+1"), 0.0)
    r.add(_part(1, 2, ref=2, sender="+1"), 0.0)
    assert r.pending_count == 4
    [msg] = r.add(_part(2, 2, ref=1, sender="+2"), 0.0)
    assert msg.sender == "+2"


def test_timeout_emits_incomplete_text() -> None:
    r = Reassembler(timeout=30)
    r.add(_part(1), 0.0)
    r.add(_part(3), 10.0)
    r.add(_part(1, ref=10), 20.0)
    assert r.handle_timer(29.9) == []
    [msg] = r.handle_timer(30.0)
    assert not msg.complete and msg.text == "<1><3>" and msg.missing == (2,)
    assert msg.parts_received == 2 and msg.parts_total == 3
    assert r.get_timer() == 50.0
    [late] = r.handle_timer(100.0)
    assert late.missing == (2, 3)
    assert r.get_timer() is None


def test_bound_evicts_oldest_as_incomplete() -> None:
    r = Reassembler(max_pending=2)
    r.add(_part(1, ref=1), 0.0)
    r.add(_part(1, ref=2), 1.0)
    [evicted] = r.add(_part(1, ref=3), 2.0)
    assert not evicted.complete and evicted.text == "<1>"
    assert r.pending_count == 2
    assert len(r.flush_all()) == 2 and r.pending_count == 0


def test_bad_sequence_number_is_a_whole_message() -> None:
    r = Reassembler()
    [msg] = r.add(_part(4, total=3), 0.0)
    assert msg.complete and msg.text == "<4>"


def test_ucs2_surrogate_pair_split_across_parts_is_rejoined() -> None:
    raw = "救命😀".encode("utf-16-be")
    a, b = raw[:6], raw[6:]  # cut inside the surrogate pair, as some phones do
    r = Reassembler()
    r.add(InboundPart("+1", a.decode("utf-16-be", "replace"), ConcatInfo(1, 2, 1), WHEN, a), 0)
    [msg] = r.add(InboundPart("+1", b.decode("utf-16-be", "replace"), ConcatInfo(1, 2, 2),
                              WHEN, b), 0)
    assert msg.text == "救命😀"


def test_modem_pdus_through_reassembler() -> None:
    text = "山洪预警：请沿河居民立即撤离至高处安置点。" * 5
    msg = segment(text, ref=200)
    r = Reassembler()
    out = []
    for i in reversed(range(msg.total)):
        d = decode_pdu(encode_deliver("+8613900139000", msg, WHEN, index=i))
        assert isinstance(d, SmsDeliver)
        out += r.add(d.as_part(), 0.0)
    [whole] = out
    assert whole.text == text and whole.complete and whole.timestamp == WHEN


def test_reassembler_settings_checked() -> None:
    with pytest.raises(SmsError):
        Reassembler(timeout=0)
    with pytest.raises(SmsError):
        Reassembler(max_pending=0)


@pytest.mark.parametrize("raw", [
    "+8613800138000", "008613800138000", "13800138000", "8613800138000",
    "86 138-0013-8000", "+86 138 0013 8000", "１３８００１３８０００", "＋8613800138000",
    " 138.0013.8000 ", "(+86) 13800138000",
])
def test_msisdn_same_resident(raw: str) -> None:
    assert normalise_msisdn(raw) == "+8613800138000"


@pytest.mark.parametrize(("raw", "country", "expected"), [
    ("010-12345678", "86", "+861012345678"),
    ("+44 (0)20 7946 0958", "86", "+442079460958"),
    ("+1 415 555 0100", "86", "+14155550100"),
    ("4155550100", "1", "+14155550100"),
    ("14155550100", "1", "+14155550100"),
    ("91234567", "852", "+85291234567"),
])
def test_msisdn_other_forms(raw: str, country: str, expected: str) -> None:
    assert normalise_msisdn(raw, default_country=country) == expected


@pytest.mark.parametrize(("raw", "country"), [
    ("", "86"), ("   ", "86"), ("abc", "86"), ("138-0013-800x", "86"), ("+0123456789", "86"),
    ("138001380001", "86"), ("1380013800", "86"), ("12", "86"), ("+1234567890123456", "86"),
    ("1" * 41, "86"), ("13800138000", "0"), ("13800138000", "+86"), ("13800138000", "8612"),
    ("1380013800\n0", "86"),
])
def test_msisdn_errors(raw: str, country: str) -> None:
    with pytest.raises(MsisdnError) as info:
        normalise_msisdn(raw, default_country=country)
    assert info.value.raw == raw and info.value.reason
