"""Turning what a channel delivered into a :class:`Report` (pure: bytes and values in).

Sensor and webhook alerts are JSON bodies signed with a shared secret (HMAC-SHA256 of the
raw body, hex, optionally prefixed ``sha256=`` as GitHub-style webhooks do).  The signature
is checked before the body is parsed, in constant time, so an unsigned body costs nothing.
Forms (HTTP API, web form) are mappings already decoded by the web layer.  Every reader has
a hard limit; anything wrong raises :class:`ChannelError` naming what, which the adapter
answers (HTTP 400/401) and logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from intake.model import Channel, Report

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 8 * 1024
MAX_FIELDS = 64
MAX_FIELD_CHARS = 1024
_TEXT_KEYS = ("text", "message", "description", "msg", "content")
_SKIP_KEYS = frozenset({"lat", "lon", "latitude", "longitude", "address", "lang", *_TEXT_KEYS})


class ChannelError(ValueError):
    """A channel payload was refused; ``status`` is what an HTTP adapter should answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        """Record the message and the status to answer."""
        super().__init__(message)
        self.status = status


def sign(body: bytes, secret: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` (what a sensor gateway sends)."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, signature: str, secret: bytes) -> bool:
    """True when ``signature`` (hex, optional ``sha256=`` prefix) signs ``body``."""
    if not secret:
        return False
    given = signature.strip()
    if not given.isascii():  # a hex signature is ASCII; compare_digest raises on anything else
        return False
    if given.lower().startswith("sha256="):
        given = given[7:]
    return hmac.compare_digest(given.lower(), sign(body, secret))


def parse_sensor_alert(
    body: bytes, signature: str, secret: bytes, received_at: datetime, report_id: str
) -> Report:
    """Verify and decode a signed sensor/webhook alert into a report."""
    if len(body) > MAX_BODY_BYTES:
        raise ChannelError(f"alert body larger than {MAX_BODY_BYTES} bytes", 413)
    if not verify_signature(body, signature, secret):
        raise ChannelError("bad or missing signature", 401)
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ChannelError(f"alert is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ChannelError("alert must be a JSON object")
    return report_from_form(data, Channel.SENSOR, received_at, report_id)


def report_from_form(
    data: Mapping[str, Any], channel: Channel, received_at: datetime, report_id: str
) -> Report:
    """A report from decoded form/API/sensor values; other scalar values become fields."""
    text = next((data[k] for k in _TEXT_KEYS if isinstance(data.get(k), str)), "")
    if len(text) > MAX_TEXT_CHARS:
        raise ChannelError(f"text longer than {MAX_TEXT_CHARS} characters")
    lat = _coordinate(data, ("lat", "latitude"), 90.0)
    lon = _coordinate(data, ("lon", "longitude"), 180.0)
    if (lat is None) != (lon is None):
        raise ChannelError("lat and lon must be given together")
    address = data.get("address", "")
    lang = data.get("lang")
    if not isinstance(address, str) or len(address) > MAX_FIELD_CHARS:
        raise ChannelError("address must be a string of at most 1024 characters")
    if lang is not None and lang not in ("zh", "en"):
        raise ChannelError("lang must be zh or en")
    fields = _fields(data)
    if not text and not fields:
        raise ChannelError("report has neither text nor fields")
    return Report(
        report_id,
        channel,
        received_at,
        text,
        lang,
        str(data.get("caller", ""))[:64],
        lat,
        lon,
        address,
        fields,
    )


def _coordinate(data: Mapping[str, Any], keys: tuple[str, ...], limit: float) -> float | None:
    """A latitude or longitude under any of ``keys``, range-checked."""
    for key in keys:
        if key in data and data[key] is not None:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ChannelError(f"{key} must be a number")
            try:
                number = float(value)
            except ValueError:
                raise ChannelError(f"{key} must be a number") from None
            if not math.isfinite(number) or abs(number) > limit:
                raise ChannelError(f"{key} out of range")
            return number
    return None


def _fields(data: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Scalar values other than text and position, as (name, value) strings, bounded."""
    fields: list[tuple[str, str]] = []
    for key, value in data.items():
        if key in _SKIP_KEYS or key == "caller" or value is None:
            continue
        if isinstance(value, (dict, list)):
            continue  # nested structures are the adapter's business, not intake's
        if len(fields) >= MAX_FIELDS:
            raise ChannelError(f"more than {MAX_FIELDS} fields")
        text = str(value)
        if len(str(key)) > 64 or len(text) > MAX_FIELD_CHARS:
            raise ChannelError(f"field {str(key)[:64]!r} too long")
        fields.append((str(key), text))
    return tuple(fields)
