"""Exporting a broadcast as an OASIS CAP 1.2 alert (Common Alerting Protocol).

Theory of operation: :func:`build_alert` turns a frozen :class:`CapAlert` into
the XML of CAP 1.2 (namespace :data:`CAP_NS`), elements in the order the
schema's sequences require, with one ``<info>`` per language (zh-CN, en-US)
that share category, event code, urgency, severity, certainty and areas.

Severity comes from the incident grade (GB/T 35561 特别重大/重大/较大/一般):

====== ========= ==========
grade  colour    CAP
====== ========= ==========
I      red       Extreme
II     orange    Severe
III    yellow    Moderate
IV     blue      Minor
====== ========= ==========

CAP has no polygon holes: an area's holes are dropped, so the exported area is
the exterior ring (a superset — over-warning is the safe side).  Polygons are
written ``lat,lon`` pairs (CAP's order, unlike GeoJSON's) closing on the first
point; circles as ``lat,lon radius_km``.  Times carry a numeric zone offset;
UTC is ``-00:00`` as CAP §3.3.2 asks (``Z`` is not allowed).
"""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import SmsError
from .targeting import Area, CircleTarget

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
MAX_TEXT_CHARS = 4000
# CAP §3.2.1: identifier and sender must not contain spaces, commas or < &.
_TOKEN = re.compile(r"^[^\s,<&]{1,256}$")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class CapError(SmsError, ValueError):
    """The alert cannot be expressed in CAP 1.2 as given."""


class Grade(enum.Enum):
    """Incident grade (GB/T 35561 / 国家突发事件分级): I is the most serious."""

    I = "I"  # noqa: E741 - the grade's official name
    II = "II"
    III = "III"
    IV = "IV"


GRADE_SEVERITY = {Grade.I: "Extreme", Grade.II: "Severe", Grade.III: "Moderate",
                  Grade.IV: "Minor"}
STATUSES = frozenset({"Actual", "Exercise", "System", "Test", "Draft"})
MSG_TYPES = frozenset({"Alert", "Update", "Cancel", "Ack", "Error"})
SCOPES = frozenset({"Public", "Restricted", "Private"})
CATEGORIES = frozenset({"Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env",
                        "Transport", "Infra", "CBRNE", "Other"})
URGENCIES = frozenset({"Immediate", "Expected", "Future", "Past", "Unknown"})
CERTAINTIES = frozenset({"Observed", "Likely", "Possible", "Unlikely", "Unknown"})
RESPONSE_TYPES = frozenset({"Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor",
                            "Assess", "AllClear", "None"})
CAP_LANGUAGES = {"zh": "zh-CN", "en": "en-US"}


@dataclass(frozen=True, slots=True)
class CapInfo:
    """The texts of one language."""

    language: str
    event: str
    headline: str
    description: str
    instruction: str


@dataclass(frozen=True, slots=True, eq=False)
class CapAlert:
    """Everything a broadcast contributes to its CAP alert.

    ``sent`` and ``expires`` must be timezone-aware; ``infos`` has one entry
    per language (``zh``/``en`` or an RFC 3066 tag); ``areas`` are polygons and
    ``circles`` circles, described together by ``area_desc``.
    """

    identifier: str
    sender: str
    sent: datetime
    grade: Grade
    categories: tuple[str, ...]
    infos: tuple[CapInfo, ...]
    area_desc: str
    areas: tuple[Area, ...] = ()
    circles: tuple[CircleTarget, ...] = ()
    status: str = "Actual"
    msg_type: str = "Alert"
    scope: str = "Public"
    urgency: str = "Immediate"
    certainty: str = "Observed"
    response_types: tuple[str, ...] = ()
    expires: datetime | None = None
    sender_name: str = ""
    references: tuple[tuple[str, str, datetime], ...] = ()


def format_time(value: datetime) -> str:
    """CAP dateTime: seconds precision, numeric offset, UTC as ``-00:00``."""
    offset = value.utcoffset()
    if offset is None:
        raise CapError(f"time {value.isoformat()} has no timezone")
    text = value.replace(microsecond=0).isoformat()
    return text[:-6] + "-00:00" if offset == timedelta(0) else text


def _check_choice(name: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise CapError(f"{name} {value!r} is not one of {sorted(allowed)}")


def _check_text(name: str, value: str, required: bool = True) -> None:
    if required and not value.strip():
        raise CapError(f"{name} is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise CapError(f"{name} is longer than {MAX_TEXT_CHARS} characters")
    if _CONTROL.search(value):
        raise CapError(f"{name} contains a control character")


def _validate(alert: CapAlert) -> None:
    for name, token in (("identifier", alert.identifier), ("sender", alert.sender)):
        if not _TOKEN.match(token):
            raise CapError(f"{name} {token!r} must be 1-256 characters without spaces, "
                           "commas, < or &")
    _check_choice("status", alert.status, STATUSES)
    _check_choice("msgType", alert.msg_type, MSG_TYPES)
    _check_choice("scope", alert.scope, SCOPES)
    _check_choice("urgency", alert.urgency, URGENCIES)
    _check_choice("certainty", alert.certainty, CERTAINTIES)
    if not alert.categories:
        raise CapError("at least one category is needed")
    for category in alert.categories:
        _check_choice("category", category, CATEGORIES)
    for response in alert.response_types:
        _check_choice("responseType", response, RESPONSE_TYPES)
    if alert.scope != "Public":
        raise CapError("only Public scope is supported (Restricted/Private need more fields)")
    if alert.msg_type in ("Update", "Cancel") and not alert.references:
        raise CapError(f"a {alert.msg_type} must reference the alert(s) it replaces")
    if not alert.infos:
        raise CapError("at least one info (language) is needed")
    if not alert.areas and not alert.circles:
        raise CapError("the alert needs an area (polygon or circle)")
    _check_text("areaDesc", alert.area_desc)
    for info in alert.infos:
        for field_name in ("event", "headline", "description", "instruction"):
            _check_text(f"{info.language} {field_name}", getattr(info, field_name),
                        required=field_name in ("event", "headline"))


def polygon_text(ring: list[tuple[float, float]]) -> str:
    """CAP polygon: ``lat,lon`` pairs from (lon, lat) positions, closed, at least 4."""
    points = list(ring)
    if points[0] != points[-1]:
        points.append(points[0])
    if len(points) < 4:
        raise CapError("a CAP polygon needs at least 4 points (closed triangle)")
    return " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in points)


def circle_text(circle: CircleTarget) -> str:
    """CAP circle: ``lat,lon radius_km``."""
    return f"{circle.lat:.6f},{circle.lon:.6f} {circle.radius_m / 1000.0:.3f}"


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    el.text = text
    return el


def _info(root: ET.Element, alert: CapAlert, info: CapInfo) -> None:
    el = ET.SubElement(root, f"{{{CAP_NS}}}info")
    _sub(el, "language", CAP_LANGUAGES.get(info.language, info.language))
    for category in alert.categories:
        _sub(el, "category", category)
    _sub(el, "event", info.event)
    for response in alert.response_types:
        _sub(el, "responseType", response)
    _sub(el, "urgency", alert.urgency)
    _sub(el, "severity", GRADE_SEVERITY[alert.grade])
    _sub(el, "certainty", alert.certainty)
    code = ET.SubElement(el, f"{{{CAP_NS}}}eventCode")
    _sub(code, "valueName", "incidentGrade")
    _sub(code, "value", alert.grade.value)
    if alert.expires is not None:
        _sub(el, "expires", format_time(alert.expires))
    if alert.sender_name:
        _sub(el, "senderName", alert.sender_name)
    _sub(el, "headline", info.headline)
    if info.description:
        _sub(el, "description", info.description)
    if info.instruction:
        _sub(el, "instruction", info.instruction)
    area = ET.SubElement(el, f"{{{CAP_NS}}}area")
    _sub(area, "areaDesc", alert.area_desc)
    for a in alert.areas:
        for poly in a.polygons:
            ring = [(float(x), float(y)) for x, y in poly.exterior]
            _sub(area, "polygon", polygon_text(ring))
    for circle in alert.circles:
        _sub(area, "circle", circle_text(circle))


def build_alert(alert: CapAlert) -> bytes:
    """The alert as UTF-8 XML bytes (with declaration); :class:`CapError` if invalid."""
    _validate(alert)
    ET.register_namespace("", CAP_NS)
    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", alert.identifier)
    _sub(root, "sender", alert.sender)
    _sub(root, "sent", format_time(alert.sent))
    _sub(root, "status", alert.status)
    _sub(root, "msgType", alert.msg_type)
    _sub(root, "scope", alert.scope)
    if alert.references:
        for sender, ident, _sent in alert.references:
            for name, token in (("reference sender", sender), ("reference id", ident)):
                if not _TOKEN.match(token):
                    raise CapError(f"{name} {token!r} is not a CAP token")
        _sub(root, "references", " ".join(f"{s},{i},{format_time(t)}"
                                          for s, i, t in alert.references))
    for info in alert.infos:
        _info(root, alert, info)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def grade_severity(grade: Grade | str) -> str:
    """CAP severity for an incident grade (``"I"``..``"IV"`` or :class:`Grade`)."""
    try:
        return GRADE_SEVERITY[Grade(grade)]
    except ValueError:
        raise CapError(f"unknown incident grade {grade!r}") from None
