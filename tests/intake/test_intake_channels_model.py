"""Channel normalisation (signed sensor alerts, forms), the naive Bayes model, redirects."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intake.channels import ChannelError, parse_sensor_alert, report_from_form, sign
from intake.model import Category, Channel
from intake.nb import ModelError, NaiveBayes, train
from intake.pipeline import Intake

T0 = datetime(2026, 11, 21, 8, 0)
SECRET = b"s3cret"


def test_signed_alert_round_trip() -> None:
    body = json.dumps(
        {
            "type": "smoke detector",
            "sensor_id": "B12-3F",
            "lat": 23.03,
            "lon": 113.78,
            "text": "烟感报警 3楼",
        }
    ).encode()
    for signature in (sign(body, SECRET), "sha256=" + sign(body, SECRET).upper()):
        report = parse_sensor_alert(body, signature, SECRET, T0, "r1")
        assert report.channel is Channel.SENSOR and report.lat == 23.03
        assert report.field("sensor_id") == "B12-3F" and report.field("type") == "smoke detector"
    assessed = Intake.from_dir(None).assess(report)
    assert assessed.classification.subtype == "building_fire"
    assert assessed.location.source == "channel"


@pytest.mark.parametrize(
    ("body", "signature", "status"),
    [
        (b'{"text": "x"}', "00", 401),
        (b'{"text": "x"}', "sha256=\u00e9\u00e9", 401),  # not ASCII: refused, not a TypeError
        (b"not json", None, 400),
        (b"[1, 2]", None, 400),
        (b'{"text": "x", "lat": 91, "lon": 1}', None, 400),
        (b'{"text": "x", "lat": 23}', None, 400),
        (b'{"lat": "abc", "lon": 1}', None, 400),
        (b"{}", None, 400),
        (b"x" * 70000, None, 413),
    ],
)
def test_alert_errors(body: bytes, signature: str | None, status: int) -> None:
    with pytest.raises(ChannelError) as info:
        parse_sensor_alert(body, signature or sign(body, SECRET), SECRET, T0, "r")
    assert info.value.status == status


def test_empty_secret_refuses() -> None:
    with pytest.raises(ChannelError):
        parse_sensor_alert(b"{}", sign(b"{}", b""), b"", T0, "r")


@given(st.binary(max_size=300))
def test_any_signed_bytes_give_report_or_channel_error(body: bytes) -> None:
    with contextlib.suppress(ChannelError):
        parse_sensor_alert(body, sign(body, SECRET), SECRET, T0, "r")


def test_form() -> None:
    report = report_from_form(
        {"message": "我家被盗", "address": "虎门镇", "phone_type": "mobile"},
        Channel.WEB_FORM,
        T0,
        "w1",
    )
    assert report.text == "我家被盗" and report.fields == (("phone_type", "mobile"),)
    assert Intake.from_dir(None).assess(report).location.place_id == "humen"


def test_model_json_round_trip_and_errors() -> None:
    model = train(
        [
            ("地震 房屋倒塌", Category.NATURAL_DISASTER),
            ("持刀抢劫", Category.SOCIAL_SECURITY),
            ("食物中毒 呕吐", Category.PUBLIC_HEALTH),
            ("货车追尾", Category.ACCIDENT),
        ]
    )
    again = NaiveBayes.from_json(model.to_json())
    posterior, known = again.posterior("又发生地震了")
    assert known > 0 and max(posterior, key=lambda c: posterior[c]) is Category.NATURAL_DISASTER
    for bad in ("{}", "[]", '{"format": "intake-nb-1", "classes": ["x"]}', "nonsense"):
        with pytest.raises(ModelError):
            NaiveBayes.from_json(bad)


def test_model_fallback_is_evidence_and_low_confidence() -> None:
    intake = Intake.from_dir(None)
    cls = intake.classifier.classify("桥下的水已经快到桥面了，对岸有人在屋顶上")
    assert cls.category is not None
    if not any(e.kind == "term" for e in cls.evidence):
        assert cls.confidence < 0.5 and any(e.kind == "model" for e in cls.evidence)


def test_redirect_fire_in_forest() -> None:
    cls = Intake.from_dir(None).classifier.classify("The hill behind the village is on fire")
    assert cls.subtype == "forest_fire"
    assert any(e.kind == "context" for e in cls.evidence)
