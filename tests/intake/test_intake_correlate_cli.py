"""Correlation with a stepped ``now``, merge/split, gazetteer, config errors, CLI round trip."""

from __future__ import annotations

import io
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from intake.cli import run_classify
from intake.config import ALL_FILES, IntakeConfigError, load_rules
from intake.correlate import Action, CorrelationError, haversine_km
from intake.model import Category, Channel, Grade, Report, ReportRef
from intake.pipeline import Intake

T0 = datetime(2026, 11, 21, 8, 0, 0)
REPO_CONF = Path(__file__).resolve().parents[2] / "conf" / "intake"


@pytest.fixture(scope="module")
def intake() -> Intake:
    return Intake.from_dir(REPO_CONF)


def ref(
    rid: str,
    minutes: float,
    lat: float | None = 23.03,
    lon: float | None = 113.78,
    category: Category | None = Category.ACCIDENT,
    grade: Grade = Grade.IV,
) -> ReportRef:
    return ReportRef(
        rid, T0 + timedelta(minutes=minutes), grade, category, "building_fire", lat, lon, ("119",)
    )


def test_haversine() -> None:
    assert haversine_km(23.0, 113.0, 23.0, 113.0) == 0
    assert abs(haversine_km(0, 0, 0, 1) - 111.19) < 0.1


def test_join_open_and_window(intake: Intake) -> None:
    c = intake.correlator
    first = c.place(ref("r1", 0), [], T0, "inc1")
    assert first.action is Action.OPEN and first.incident.report_count == 1
    near = c.place(ref("r2", 10, lat=23.034), [first.incident], T0 + timedelta(minutes=10), "inc2")
    assert near.action is Action.JOIN and near.incident.incident_id == "inc1"
    assert near.incident.report_count == 2 and near.distance_km is not None and near.distance_km < 1
    assert "km" in near.reason
    far = c.place(ref("r3", 11, lat=23.2), [near.incident], T0 + timedelta(minutes=11), "inc3")
    assert far.action is Action.OPEN and far.incident.incident_id == "inc3"
    late = c.place(ref("r4", 75), [near.incident], T0 + timedelta(minutes=75), "inc4")
    assert late.action is Action.OPEN  # 65 min after the last report > 60 min window
    other = c.place(ref("r5", 12, category=Category.PUBLIC_HEALTH), [near.incident], T0, "inc5")
    assert other.action is Action.OPEN  # incompatible category
    unlocated = c.place(ref("r6", 12, lat=None, lon=None), [near.incident], T0, "inc6")
    assert unlocated.action is Action.OPEN


def test_grade_rises_with_reports_and_surge(intake: Intake) -> None:
    c = intake.correlator
    incident = c.place(ref("r0", 0), [], T0, "inc").incident
    decision = c.place(ref("r1", 1, grade=Grade.II), [incident], T0 + timedelta(minutes=1), "x")
    assert decision.incident.grade is Grade.II and decision.grade_changed
    incident = c.place(ref("s0", 0), [], T0, "surge").incident
    for i in range(1, 10):
        incident = c.place(ref(f"s{i}", i), [incident], T0 + timedelta(minutes=i), "x").incident
    assert incident.report_count == 10 and incident.grade is Grade.III
    assert any(r.rule == "surge" for r in incident.grade_reasons)


def test_merge_and_split(intake: Intake) -> None:
    c = intake.correlator
    a = c.place(ref("a1", 0), [], T0, "A").incident
    b = c.place(ref("b1", 5, lat=23.5, grade=Grade.III), [], T0, "B").incident
    merged = c.merge(a, b, T0 + timedelta(minutes=6), operator="op1")
    assert merged.action is Action.MERGE and merged.incident.report_ids == ("a1", "b1")
    assert (
        merged.incident.grade is Grade.III and merged.retired_id == "B" and "op1" in merged.reason
    )
    split = c.split(merged.incident, ["b1"], T0 + timedelta(minutes=7), "C")
    assert split.incident.report_ids == ("a1",) and split.incident.grade is Grade.IV
    assert split.other is not None and split.other.report_ids == ("b1",)
    with pytest.raises(CorrelationError):
        c.split(merged.incident, ["zz"], T0, "D")
    with pytest.raises(CorrelationError):
        c.split(merged.incident, ["a1", "b1"], T0, "D")
    with pytest.raises(CorrelationError):
        c.merge(a, a, T0)


@pytest.mark.parametrize(
    ("text", "place_id"),
    [
        ("东城街道东城中路一栋楼起火", "dongcheng_mid_rd"),
        ("Fire near Humen Railway Station", "humen_station"),
        ("常平镇某工厂", "changping"),
    ],
)
def test_gazetteer(intake: Intake, text: str, place_id: str) -> None:
    location = intake.gazetteer.resolve(text)
    assert location.resolved and location.place_id == place_id and location.source == "gazetteer"


def test_locate_prefers_channel_then_flags_unresolved(intake: Intake) -> None:
    report = Report("r", Channel.SMS, T0, "起火了", lat=22.9, lon=113.8)
    assert intake.gazetteer.locate(report).source == "channel"
    lost = Report("r", Channel.VOICE, T0, "somewhere over there")
    assert intake.gazetteer.locate(lost).source == "unresolved"
    assessed = intake.assess(Report("r", Channel.WEB_FORM, T0, "着火了", address="虎门镇"))
    assert assessed.location.place_id == "humen"


def test_shipped_conf_matches_package_defaults() -> None:
    defaults = Path(__file__).resolve().parents[2] / "intake" / "defaults"
    for name in ALL_FILES:
        assert (REPO_CONF / name).read_bytes() == (defaults / name).read_bytes(), name


BAD = [
    ("grading.toml", "[scales.x]\nfigures=['deaths']\nI=3\nII=10\nIII=30\n", "scales.x"),
    ("grading.toml", "not toml [", "not valid TOML"),
    ("lexicon.csv", "zh,火,no_such_subtype,1\n", "unknown subtype"),
    ("lexicon.csv", "fr,feu,building_fire,1\n", "lang must be"),
    ("lexicon.csv", "zh,火,building_fire,heavy\n", "weight is not a number"),
    (
        "categories.toml",
        "[agencies.110]\nname_zh='x'\nname_en='y'\n[subtypes.a]\ncategory='weather'\n"
        "name_zh='a'\nname_en='a'\nagencies=[]\n",
        "unknown category",
    ),
    (
        "correlation.toml",
        "distance_km = -1\nwindow_minutes = 60\nunlocated_joins = false\n",
        "positive",
    ),
    ("gazetteer.csv", "a,town,甲,A,,91,113\n", "out of range"),
    ("gazetteer.csv", "a,planet,甲,A,,23,113\n", "kind must be"),
]


@pytest.mark.parametrize(("name", "content", "needle"), BAD)
def test_config_errors_name_file_and_key(
    tmp_path: Path, name: str, content: str, needle: str
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(IntakeConfigError) as info:
        load_rules(tmp_path)
    assert name in str(info.value) and needle in str(info.value)


def test_partial_override_falls_back_to_defaults(tmp_path: Path) -> None:
    shutil.copy(REPO_CONF / "correlation.toml", tmp_path / "correlation.toml")
    rules = load_rules(tmp_path)
    assert rules.categories.lexicon and rules.places


def test_cli_round_trip() -> None:
    lines = [
        {"id": 1, "text": "东城街道一栋高层住宅起火，3人死亡，直接经济损失约1200万元"},
        {"text": "A landslide buried 4 houses; 31 people missing", "lang": "en"},
        {"text": "你好"},
    ]
    stdin = io.StringIO("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n")
    stdout = io.StringIO()
    assert run_classify(stdin, stdout, REPO_CONF) == 0
    out = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert len(out) == 3
    assert out[0]["id"] == 1 and out[0]["category"] == "accident" and out[0]["grade"] == "III"
    assert out[0]["reasons"] and "119" in out[0]["agencies"]
    assert (
        out[1]["category"] == "natural_disaster"
        and out[1]["subtype"] == "landslide"
        and out[1]["grade"] == "I"
    )
    assert out[2]["category"] is None and out[2]["grade"] == "IV"
    for row in out:
        assert set(row) >= {"category", "subtype", "agencies", "grade", "reasons"}


def test_cli_bad_lines_and_bad_config(tmp_path: Path) -> None:
    stdout = io.StringIO()
    stdin = io.StringIO(
        'not json\n[1]\n{"text": 5}\n{"text": "起火"}\n' + '{"text": "' + "x" * 70000 + '"}\n'
    )
    assert run_classify(stdin, stdout) == 1
    out = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [o.get("line") for o in out] == [1, 2, 3, None, 5]
    assert out[3]["category"] == "accident"
    (tmp_path / "grading.toml").write_text("oops [", encoding="utf-8")
    err = io.StringIO()
    assert run_classify(io.StringIO(""), io.StringIO(), tmp_path, err) == 2
    assert "grading.toml" in err.getvalue()
