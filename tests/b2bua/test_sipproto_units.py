"""Pure parts of transfer, session timers and 100rel: Refer-To numbers, option tags,
parsers under Hypothesis, and their configuration keys."""

from __future__ import annotations

import contextlib
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_sip_config_store import GOOD, problems

from dispatch.config import parse_settings
from telephony.b2bua.sipio import merge_option_tags
from telephony.b2bua.transfer import TransferError, target_number
from telephony.sip.errors import SipError
from telephony.sip.reliable import parse_rack
from telephony.sip.timers import parse_min_se, parse_session_expires


@pytest.mark.parametrize(("refer_to", "number"), [
    ("<sip:119001@dispatch.test>", "119001"),
    ("sip:119@10.0.0.1:5060", "119"),
    ('"Fire centre" <sip:+8602088887777@gw.test;user=phone>', "+8602088887777"),
    ("<tel:+86-20-8888-7777>", "+862088887777"),
])
def test_refer_to_numbers(refer_to: str, number: str) -> None:
    assert target_number(refer_to) == number


@pytest.mark.parametrize(("refer_to", "status"), [
    ("<sip:alice@dispatch.test>", 404),
    ("<sip:119@x?Replaces=abc>", 400),
    ("<sip:119@x;method=BYE>", 400),
    ("<mailto:a@b>", 416),
    ("<sip:119@", 400),
    ("x" * 600, 400),
])
def test_bad_refer_to_is_refused_with_a_status(refer_to: str, status: int) -> None:
    with pytest.raises(TransferError) as caught:
        target_number(refer_to)
    assert caught.value.status == status


def test_option_tags_are_merged_into_one_header_each() -> None:
    merged = merge_option_tags([("Supported", "timer"), ("Min-SE", "90"),
                                ("Supported", "100rel, timer"), ("Require", "100rel")])
    assert merged == [("Supported", "timer, 100rel"), ("Min-SE", "90"), ("Require", "100rel")]


@given(st.text(max_size=80))
def test_timer_and_rack_parsers_parse_or_raise_sip_errors(text: str) -> None:
    for parse in (parse_session_expires, parse_min_se, parse_rack, target_number):
        with contextlib.suppress(SipError, TransferError):
            parse(text)


def test_min_se_and_require_100rel_are_configured() -> None:
    text = GOOD.replace("enabled = true", "enabled = true\nmin_se = 120", 1).replace(
        "max_calls = 2", "max_calls = 2\nrequire_100rel = true", 1)
    settings = parse_settings(tomllib.loads(text), "f.toml")
    assert settings.sip.min_se == 120
    assert settings.telephony().trunks[0].require_100rel


@pytest.mark.parametrize(("change", "expected"), [
    (("max_calls = 2", "max_calls = 2\nrequire_100rel = \"yes\""),
     "f.toml: trunks[0].require_100rel:"),
    (("enabled = true", "enabled = true\nmin_se = 0"), "f.toml: sip.min_se:"),
])
def test_bad_values_name_their_key(change: tuple[str, str], expected: str) -> None:
    found = problems(GOOD.replace(*change, 1))
    assert any(p.startswith(expected) for p in found), found
