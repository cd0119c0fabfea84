"""Grading threshold edges, modifiers, surges; classification tables; corrections."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from intake.classify import Correction
from intake.model import Category, Grade
from intake.pipeline import Intake


@pytest.fixture(scope="module")
def intake() -> Intake:
    return Intake.from_dir(None)


def grade_of(intake: Intake, text: str) -> Grade:
    return intake.assess_text(text)[2].grade


@pytest.mark.parametrize(
    ("deaths", "grade"),
    [
        (0, Grade.IV),
        (2, Grade.IV),
        (3, Grade.III),
        (9, Grade.III),
        (10, Grade.II),
        (29, Grade.II),
        (30, Grade.I),
        (31, Grade.I),
    ],
)
def test_death_edges(intake: Intake, deaths: int, grade: Grade) -> None:
    assert grade_of(intake, f"工厂发生事故，造成{deaths}人死亡。") is grade
    assert grade_of(intake, f"The accident killed {deaths} people.") is grade


@pytest.mark.parametrize(
    ("injured", "grade"),
    [
        (9, Grade.IV),
        (10, Grade.III),
        (49, Grade.III),
        (50, Grade.II),
        (99, Grade.II),
        (100, Grade.I),
    ],
)
def test_serious_injury_edges(intake: Intake, injured: int, grade: Grade) -> None:
    assert grade_of(intake, f"事故造成{injured}人重伤") is grade
    assert grade_of(intake, f"{injured} people were seriously injured") is grade


@pytest.mark.parametrize(
    ("loss", "grade"),
    [
        ("999万", Grade.IV),
        ("1000万", Grade.III),
        ("4999万", Grade.III),
        ("5000万", Grade.II),
        ("9999万", Grade.II),
        ("1亿", Grade.I),
        ("1.2亿", Grade.I),
    ],
)
def test_loss_edges(intake: Intake, loss: str, grade: Grade) -> None:
    assert grade_of(intake, f"火灾造成直接经济损失{loss}元") is grade


def test_missing_counts_with_deaths(intake: Intake) -> None:
    result = intake.assess_text("洪水造成25人死亡、5人失踪")[2]
    assert result.grade is Grade.I
    assert any("30" in r.detail for r in result.reasons)


def test_chinese_numerals_grade(intake: Intake) -> None:
    assert grade_of(intake, "已致三十余人遇难") is Grade.I
    assert grade_of(intake, "近30人死亡") is Grade.II
    assert grade_of(intake, "十二名工人死亡") is Grade.II


def test_modifiers_only_when_no_figures(intake: Intake) -> None:
    no_figures = intake.assess_text("化工厂发生泄漏")[2]
    assert no_figures.grade is Grade.III and not no_figures.figures_stated
    stated = intake.assess_text("化工厂发生泄漏，2人死亡")[2]
    assert stated.grade is Grade.IV and stated.figures_stated
    assert any(not r.applied and r.rule.startswith("modifier") for r in stated.reasons)


def test_surge_raises_capped(intake: Intake) -> None:
    t0 = datetime(2026, 1, 1, 8, 0)
    times = [t0 + timedelta(minutes=i) for i in range(9)]
    assert intake.grader.surge(Grade.IV, times)[0] is Grade.IV
    grade, reason = intake.grader.surge(Grade.IV, [*times, t0 + timedelta(minutes=9)])
    assert grade is Grade.III and reason is not None
    assert intake.grader.surge(Grade.III, [t0] * 10)[0] is Grade.II
    assert intake.grader.surge(Grade.II, [t0] * 10)[0] is Grade.II  # cap


CLASSIFY = [
    ("东城街道一栋高层住宅起火，有人被困", "accident", "building_fire", {"119"}),
    ("常平镇发生3车追尾事故，2人受伤", "accident", "traffic_accident", {"122", "120"}),
    ("山林起火，过火面积约10公顷", "natural_disaster", "forest_fire", {"119", "forestry"}),
    ("学校食堂午餐后30余名学生出现呕吐腹泻", "public_health", "food_poisoning", {"120"}),
    ("有人持刀砍人，嫌疑人已逃跑", "social_security", "violence", {"110"}),
    ("强降雨导致村庄被洪水围困", "natural_disaster", "flood", set()),
    ("养殖场发现非洲猪瘟疫情", "public_health", "animal_epidemic", {"agriculture"}),
    (
        "A magnitude 6.2 earthquake struck the county, killing 12",
        "natural_disaster",
        "earthquake",
        {"120"},
    ),
    (
        "Protesters blocked the road demanding unpaid wages",
        "social_security",
        "mass_incident",
        {"110"},
    ),
    ("Fire broke out at a chemical plant, toxic fumes", "accident", "hazardous_chemicals", {"119"}),
    (
        "Police said a man stabbed three people at the metro station",
        "social_security",
        "violence",
        {"110", "120"},
    ),
    ("A norovirus outbreak sickened dozens of pupils", "public_health", "epidemic", set()),
    ("Power is out across several districts", "accident", "utility_outage", {"utility"}),
]


@pytest.mark.parametrize(("text", "category", "subtype", "agencies"), CLASSIFY)
def test_classify_table(
    intake: Intake, text: str, category: str, subtype: str, agencies: set[str]
) -> None:
    figures, cls, _ = intake.assess_text(text)
    assert cls.category is Category(category)
    assert cls.subtype == subtype
    assert agencies <= set(cls.agencies)
    assert any(e.kind == "term" for e in cls.evidence)


def test_fields_take_precedence(intake: Intake) -> None:
    cls = intake.classifier.classify("有人报警", fields=[("category", "自然灾害")])
    assert cls.category is Category.NATURAL_DISASTER and cls.evidence[0].kind == "field"
    cls = intake.classifier.classify("smoke", fields=[("subtype", "forest_fire")])
    assert cls.subtype == "forest_fire"


def test_sensor_type_field_is_scanned(intake: Intake) -> None:
    cls = intake.classifier.classify("", fields=[("type", "smoke detector"), ("device", "B12")])
    assert cls.subtype == "building_fire"


def test_unclassifiable_text(intake: Intake) -> None:
    cls = intake.classifier.classify("你好")
    assert cls.category is None and cls.confidence == 0.0


def test_correction_wins_and_is_evidence() -> None:
    fresh = Intake.from_dir(None)
    text = "仓库那边烟很大"
    key = fresh.classifier.add_correction(
        text, Correction(Category.SOCIAL_SECURITY, "crime", "op7", "arson")
    )
    cls = fresh.classifier.classify(" 仓库那边烟很大。")  # same fingerprint
    assert cls.corrected and cls.category is Category.SOCIAL_SECURITY and cls.subtype == "crime"
    assert cls.evidence[0].kind == "correction"
    assert key in fresh.classifier.corrections()
    with pytest.raises(ValueError):
        fresh.classifier.add_correction(text, Correction(Category.ACCIDENT, "crime"))
