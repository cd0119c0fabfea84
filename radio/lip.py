"""TETRA Location Information Protocol (ETSI TS 100 392-18-1): the short location report.

A handset sends its position as an SDS whose user data starts with the
protocol identifier ``0x0A``.  The *short location report* (PDU type 0) is
76 bits after it:

===================  ====  ==================================================
field                bits  meaning
===================  ====  ==================================================
PDU type             2     0 = short location report
time elapsed         2     0 < 5 s, 1 < 5 min, 2 < 30 min, 3 unknown
longitude            25    two's complement, 360 / 2**25 degrees per unit
latitude             24    two's complement, 180 / 2**24 degrees per unit
position error       3     0 < 2 m ... 6 > 200 km, 7 unknown
horizontal velocity  7     km/h (0-28 exact, above: 16 * 1.038**(v-13)), 127 unknown
direction of travel  4     22.5 degree steps from north
additional data      1+8   type, then reason for sending / user data
===================  ====  ==================================================

Every read goes through :class:`_Bits`, which raises :class:`LipError` rather
than read past the end; the long location report (PDU type 1) is recognised
and refused with the same error.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PID_LIP", "LipError", "LocationReport", "decode_lip", "encode_short_report"]

PID_LIP = 0x0A
SHORT_REPORT_BITS = 76
MAX_LIP_OCTETS = 64
_ERRORS_M = (2.0, 20.0, 200.0, 2_000.0, 20_000.0, 200_000.0, None, None)


class LipError(ValueError):
    """User data that is not a short location report we can read."""


@dataclass(frozen=True)
class LocationReport:
    """A handset's position as LIP reported it."""

    lat: float
    lon: float
    #: Upper bound of the position error in metres (``None``: unknown or > 200 km).
    error_m: float | None
    #: km/h, ``None`` if unknown.
    velocity_kmh: float | None
    #: degrees from north, in 22.5 degree steps.
    direction_deg: float
    #: 0 < 5 s, 1 < 5 min, 2 < 30 min, 3 unknown.
    time_elapsed: int
    reason: int | None


class _Bits:
    """A bounds-checked big-endian bit cursor."""

    def __init__(self, data: bytes, limit_bits: int) -> None:
        self.data = data
        self.limit = min(limit_bits, len(data) * 8)
        self.pos = 0

    def take(self, count: int, what: str) -> int:
        if self.pos + count > self.limit:
            raise LipError(f"LIP report ends before its {what}")
        value = 0
        for _ in range(count):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _velocity(code: int) -> float | None:
    if code == 127:
        return None
    if code <= 28:
        return float(code)
    return round(16 * 1.038 ** (code - 13), 1)


def decode_lip(user_data: str, bits: int | None = None) -> LocationReport:
    """Decode SDS user data (hex, starting with the ``0x0A`` PID); :class:`LipError` if not LIP."""
    if len(user_data) > 2 * MAX_LIP_OCTETS:
        raise LipError("LIP user data longer than any location report")
    try:
        data = bytes.fromhex(user_data)
    except ValueError:
        raise LipError("LIP user data is not hex") from None
    if not data or data[0] != PID_LIP:
        raise LipError("not a LIP message (protocol identifier is not 0x0A)")
    limit = len(data) * 8 if bits is None or bits <= 0 else bits
    cursor = _Bits(data[1:], limit - 8)
    pdu_type = cursor.take(2, "PDU type")
    if pdu_type != 0:
        raise LipError(f"LIP PDU type {pdu_type} is not a short location report")
    elapsed = cursor.take(2, "time elapsed")
    lon = _signed(cursor.take(25, "longitude"), 25) * 360.0 / (1 << 25)
    lat = _signed(cursor.take(24, "latitude"), 24) * 180.0 / (1 << 24)
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
        raise LipError(f"LIP position out of range: {lat}, {lon}")
    error = _ERRORS_M[cursor.take(3, "position error")]
    velocity = _velocity(cursor.take(7, "horizontal velocity"))
    direction = cursor.take(4, "direction of travel") * 22.5
    reason = cursor.take(8, "additional data") if cursor.take(1, "additional data type") == 0 \
        else None
    return LocationReport(round(lat, 6), round(lon, 6), error, velocity, direction, elapsed,
                          reason)


def encode_short_report(lat: float, lon: float, *, error_code: int = 1, velocity: int = 0,
                        direction: int = 0, elapsed: int = 0, reason: int = 0) -> tuple[int, str]:
    """A short location report as SDS user data: (length in bits, hex) -- for emulators."""
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
        raise LipError(f"position out of range: {lat}, {lon}")
    lon_units = round(lon * (1 << 25) / 360.0)
    lat_units = round(lat * (1 << 24) / 180.0)
    lon_units = max(-(1 << 24), min((1 << 24) - 1, lon_units))
    lat_units = max(-(1 << 23), min((1 << 23) - 1, lat_units))
    fields = ((0, 2), (elapsed, 2), (lon_units & ((1 << 25) - 1), 25),
              (lat_units & ((1 << 24) - 1), 24), (error_code, 3), (velocity, 7),
              (direction, 4), (0, 1), (reason, 8))
    value, count = 0, 0
    for field, width in fields:
        value = (value << width) | (field & ((1 << width) - 1))
        count += width
    pad = (-count) % 8
    body = (value << pad).to_bytes((count + pad) // 8, "big")
    return 8 + count, (bytes([PID_LIP]) + body).hex().upper()
