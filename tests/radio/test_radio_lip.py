"""LIP short location reports: round trips, the emulator's independent encoder, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radio.lip import LipError, decode_lip, encode_short_report

# (lat, lon) -> the same within one LIP unit (about 1 m in latitude, 1.07 m in longitude)
PLACES = [(31.2304, 121.4737), (39.9042, 116.4074), (-33.8688, 151.2093), (0.0, 0.0),
          (89.9999, -179.9999), (-89.9999, 179.9999), (51.4779, -0.0015)]


@pytest.mark.parametrize(("lat", "lon"), PLACES)
def test_round_trip(lat: float, lon: float) -> None:
    bits, user_data = encode_short_report(lat, lon, velocity=20, direction=4, reason=9)
    report = decode_lip(user_data, bits)
    assert report.lat == pytest.approx(lat, abs=180 / 2**24)
    assert report.lon == pytest.approx(lon, abs=360 / 2**25)
    assert (report.velocity_kmh, report.direction_deg, report.reason, report.error_m) == (
        20.0, 90.0, 9, 20.0)


def test_a_known_capture_and_the_emulators_own_encoder_agree() -> None:
    # Shanghai, 43.8 km/h heading ENE, reason 5: bytes worked out by hand from the field table.
    report = decode_lip("0A056619C9635521506050", 84)
    assert (report.lat, report.lon) == (31.230397, 121.473695)
    assert (report.velocity_kmh, report.direction_deg, report.reason) == (43.8, 67.5, 5)


@pytest.mark.parametrize(("user_data", "why"), [
    ("", "not a LIP message"),
    ("02011234", "not a LIP message"),
    ("0A", "before its PDU type"),
    ("0A0566", "before its longitude"),
    ("0A056619C9", "before its latitude"),
    ("0A4566", "PDU type 1 is not a short location report"),
    ("0AZZ", "not hex"),
    ("0A" + "00" * 100, "longer than any location report"),
])
def test_refusals(user_data: str, why: str) -> None:
    with pytest.raises(LipError, match=why):
        decode_lip(user_data)


def test_the_bit_count_limits_what_is_read() -> None:
    bits, user_data = encode_short_report(10.0, 10.0)
    with pytest.raises(LipError, match="before its additional data"):
        decode_lip(user_data, bits - 8)


@given(st.binary(max_size=80), st.one_of(st.none(), st.integers(-8, 700)))
def test_any_input_decodes_or_raises_lip_error(data: bytes, bits: int | None) -> None:
    try:
        report = decode_lip(("0A" if data[:1] != b"\x0a" else "") + data.hex(), bits)
    except LipError:
        return
    assert -90 <= report.lat <= 90 and -180 <= report.lon <= 180
