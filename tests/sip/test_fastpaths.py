"""The SIP fast paths give exactly what the general code gives (or the same error)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from telephony.sip.errors import SipError
from telephony.sip.headers import (
    Headers,
    _scan_params,
    _scan_params_general,
    _Scanner,
)

# Parameter text built from the characters that matter to the grammar.
PARAM_TEXT = st.text(alphabet=';=ab1.-:"[] \t\\>z', max_size=30)


def _outcome(fn: object, text: str, stop: str) -> tuple[object, int] | str:
    scanner = _Scanner(text)
    try:
        params = fn(scanner, stop)  # type: ignore[operator]
    except SipError:
        return "error"
    return params, scanner.pos


@given(PARAM_TEXT, st.sampled_from(["", ">", ","]))
def test_scan_params_fast_path_matches_general(text: str, stop: str) -> None:
    """Same parameters and same end position, or both raise."""
    assert _outcome(_scan_params, text, stop) == _outcome(_scan_params_general, text, stop)


def test_scan_params_fast_path_cases() -> None:
    """Typical Via/URI parameters, and the forms the fast path hands over."""
    for text in (";branch=z9hG4bK-1;rport", ";lr", ";received=::1;rport=5060",
                 ';tag="x y"', "; lr", ";a=[::1]", ";a=", ";lr>rest"):
        for stop in ("", ">"):
            assert (_outcome(_scan_params, text, stop)
                    == _outcome(_scan_params_general, text, stop)), (text, stop)


VALUES = st.sampled_from(["SIP/2.0/UDP a;branch=z9hG4bK1", "x, y", "", "  ", "<sip:a,b>, c"])
NAMES = st.sampled_from(["Via", "v", "VIA", "Route", "To", "X-Custom", "x-custom", "Supported"])


@given(st.lists(st.tuples(NAMES, VALUES), max_size=6), NAMES)
def test_first_value_is_values_head(items: list[tuple[str, str]], name: str) -> None:
    """``first_value(n)`` is ``values(n)[0]`` (None when there is none)."""
    headers = Headers(items)
    values = headers.values(name)
    assert headers.first_value(name) == (values[0] if values else None)
