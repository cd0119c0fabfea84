"""CAP 1.2 export, validated against the official OASIS schema (tests/data/cap)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from sms.cap import (
    CAP_NS,
    CapAlert,
    CapError,
    CapInfo,
    Grade,
    build_alert,
    format_time,
    grade_severity,
)
from sms.targeting import CircleTarget, parse_geometry

SCHEMA = Path(__file__).parents[1] / "data" / "cap" / "CAP-v1.2.xsd"

CST = timezone(timedelta(hours=8))
NS = {"cap": CAP_NS}


def cap_schema() -> Any:
    return xmlschema.XMLSchema(str(SCHEMA))


AREA = parse_geometry({"type": "Polygon", "coordinates": [
    [[113.70, 23.00], [113.80, 23.00], [113.80, 23.10], [113.70, 23.10], [113.70, 23.00]],
    [[113.74, 23.04], [113.76, 23.04], [113.76, 23.06], [113.74, 23.04]]]})
ALERT = CapAlert(
    identifier="DG-EMC-2026-000123",
    sender="emc@dongguan.example.cn",
    sent=datetime(2026, 7, 21, 18, 5, 30, 123456, tzinfo=CST),
    grade=Grade.I,
    categories=("Met", "Safety"),
    response_types=("Evacuate",),
    infos=(
        CapInfo("zh", "洪水", "莞城街道洪水紧急撤离", "东江水位超警戒线1.2米。",
                "立即撤离至东莞中学安置点。"),
        CapInfo("en", "Flood", "Flood evacuation: Guancheng",
                "The Dongjiang is 1.2 m above warning level.",
                "Evacuate now to Dongguan Middle School."),
    ),
    area_desc="莞城街道 Guancheng",
    areas=(AREA,),
    circles=(CircleTarget(23.045, 113.75, 3000),),
    expires=datetime(2026, 7, 22, 6, 0, tzinfo=UTC),
    sender_name="东莞市应急管理局",
)


def test_alert_validates_against_official_schema_and_carries_the_fields() -> None:
    schema = cap_schema()
    xml = build_alert(ALERT)
    schema.validate(xml.decode("utf-8"))
    root = ET.fromstring(xml)
    assert root.tag == f"{{{CAP_NS}}}alert"
    assert root.findtext("cap:sent", namespaces=NS) == "2026-07-21T18:05:30+08:00"
    infos = root.findall("cap:info", NS)
    assert [i.findtext("cap:language", namespaces=NS) for i in infos] == ["zh-CN", "en-US"]
    assert {i.findtext("cap:severity", namespaces=NS) for i in infos} == {"Extreme"}
    polygon = infos[0].findtext("cap:area/cap:polygon", namespaces=NS)
    assert polygon is not None
    points = polygon.split(" ")
    assert points[0] == points[-1] == "23.000000,113.700000" and len(points) == 5
    assert infos[0].findtext("cap:area/cap:circle", namespaces=NS) == \
        "23.045000,113.750000 3.000"
    assert infos[1].findtext("cap:expires", namespaces=NS) == "2026-07-22T06:00:00-00:00"


@pytest.mark.parametrize("changes", [
    {"msg_type": "Cancel", "references": (("emc@dongguan.example.cn", "DG-EMC-1",
                                           datetime(2026, 7, 21, 17, 0, tzinfo=CST)),)},
    {"areas": (), "status": "Exercise", "grade": Grade.IV, "expires": None,
     "sender_name": "", "response_types": ()},
    {"circles": (), "categories": ("CBRNE", "Env")},
    {"infos": (CapInfo("en", "All clear", "All clear", "", ""),), "urgency": "Past"},
])
def test_variants_validate(changes: dict[str, Any]) -> None:
    cap_schema().validate(build_alert(replace(ALERT, **changes)).decode("utf-8"))


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"identifier": "has space"}, "identifier"),
    ({"sender": "a,b"}, "sender"),
    ({"status": "Real"}, "status"),
    ({"categories": ()}, "category"),
    ({"categories": ("Flood",)}, "category"),
    ({"urgency": "Now"}, "urgency"),
    ({"areas": (), "circles": ()}, "area"),
    ({"infos": ()}, "info"),
    ({"msg_type": "Update"}, "reference"),
    ({"sent": datetime(2026, 7, 21, 18, 0)}, "timezone"),
    ({"area_desc": " "}, "areaDesc"),
    ({"infos": (CapInfo("zh", "洪水", "a\x00b", "", ""),)}, "control"),
])
def test_invalid_alerts_are_refused(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(CapError, match=fragment):
        build_alert(replace(ALERT, **changes))


@pytest.mark.parametrize(("grade", "severity"), [
    ("I", "Extreme"), ("II", "Severe"), ("III", "Moderate"), (Grade.IV, "Minor")])
def test_grade_to_severity(grade: Grade | str, severity: str) -> None:
    assert grade_severity(grade) == severity


def test_grade_errors_and_utc_format() -> None:
    with pytest.raises(CapError):
        grade_severity("V")
    assert format_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00-00:00"


def test_schema_is_live_it_rejects_a_tampered_alert() -> None:
    """Guards the tests above: the schema does refuse what CAP forbids."""
    schema = cap_schema()
    xml = build_alert(ALERT).decode("utf-8")
    for bad in (xml.replace("<severity>Extreme<", "<severity>Huge<"),
                xml.replace("+08:00</sent>", "Z</sent>"),
                xml.replace("<status>Actual</status><msgType>Alert</msgType>",
                            "<msgType>Alert</msgType><status>Actual</status>")):
        assert bad != xml
        assert not schema.is_valid(bad)
