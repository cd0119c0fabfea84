"""Numerals and figure extraction: tables of texts and values, and a Hypothesis property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intake.figures import FigureExtractor, FigureKind, strongest
from intake.numerals import Qualifier, parse_en, parse_number, parse_zh

ZH_NUMERALS = [
    ("12", 12, Qualifier.EXACT),
    ("1,200", 1200, Qualifier.EXACT),
    ("1.2万", 12000, Qualifier.EXACT),
    ("5000万", 50_000_000, Qualifier.EXACT),
    ("1亿", 100_000_000, Qualifier.EXACT),
    ("3亿5000万", 350_000_000, Qualifier.EXACT),
    ("十二", 12, Qualifier.EXACT),
    ("三十余", 30, Qualifier.OVER),
    ("两百多", 200, Qualifier.OVER),
    ("一百零五", 105, Qualifier.EXACT),
    ("一万二千", 12000, Qualifier.EXACT),
    ("数十", 20, Qualifier.OVER),
    ("十几", 11, Qualifier.OVER),
    ("上百", 100, Qualifier.OVER),
    ("近30", 29, Qualifier.UNDER),
    ("约500", 500, Qualifier.ABOUT),
    ("百余", 100, Qualifier.OVER),
    ("３０", 30, Qualifier.EXACT),
]
EN_NUMERALS = [
    ("twelve", 12, Qualifier.EXACT),
    ("1.2 million", 1_200_000, Qualifier.EXACT),
    ("more than 30", 30, Qualifier.OVER),
    ("dozens", 24, Qualifier.OVER),
    ("a dozen", 12, Qualifier.EXACT),
    ("hundreds", 200, Qualifier.OVER),
    ("two hundred and five", 205, Qualifier.EXACT),
    ("nearly 30", 29, Qualifier.UNDER),
    ("twenty-one", 21, Qualifier.EXACT),
    ("about 40", 40, Qualifier.ABOUT),
]


@pytest.mark.parametrize(("text", "floor", "qualifier"), ZH_NUMERALS)
def test_zh_numerals(text: str, floor: int, qualifier: Qualifier) -> None:
    q = parse_zh(text)
    assert q is not None and q.floor == floor and q.qualifier is qualifier


@pytest.mark.parametrize(("text", "floor", "qualifier"), EN_NUMERALS)
def test_en_numerals(text: str, floor: int, qualifier: Qualifier) -> None:
    q = parse_en(text)
    assert q is not None and q.floor == floor and q.qualifier is qualifier


@pytest.mark.parametrize("text", ["", "abc", "人", "3,12", "十万火急的"])
def test_not_numerals(text: str) -> None:
    assert parse_number(text) is None


@given(st.text(max_size=30))
def test_any_text_parses_or_none(text: str) -> None:
    result = parse_number(text)
    assert result is None or result.value >= 0


@given(st.text(max_size=200))
def test_extractor_never_raises(text: str) -> None:
    for figure in FigureExtractor().extract(text):
        assert figure.value >= 0 and 0 <= figure.start <= figure.end


FIGURES = [
    (
        "事故造成3人死亡、12人受伤，其中2人重伤",
        {FigureKind.DEATHS: 3, FigureKind.INJURED: 12, FigureKind.SERIOUS_INJURIES: 2},
    ),
    ("已致三十余人遇难，两百多户受灾", {FigureKind.DEATHS: 30, FigureKind.AFFECTED: 200}),
    ("直接经济损失约5000万元", {FigureKind.ECONOMIC_LOSS: 50_000_000}),
    ("致3死5伤", {FigureKind.DEATHS: 3, FigureKind.INJURED: 5}),
    ("紧急转移安置群众1.2万人", {FigureKind.EVACUATED: 12000}),
    ("本次火灾无人员伤亡", {FigureKind.DEATHS: 0, FigureKind.INJURED: 0}),
    ("8名矿工被困井下，十二名人员失踪", {FigureKind.TRAPPED: 8, FigureKind.MISSING: 12}),
    ("两名厨师受轻伤", {FigureKind.INJURED: 2}),
    ("60多名宾客出现腹痛腹泻", {FigureKind.ILL: 60}),
    (
        "The blast killed 12 people and injured more than 30.",
        {FigureKind.DEATHS: 12, FigureKind.INJURED: 30},
    ),
    (
        "Three workers are missing and 2 were seriously injured",
        {FigureKind.MISSING: 3, FigureKind.INJURED: 2, FigureKind.SERIOUS_INJURIES: 2},
    ),
    (
        "Nearly 30 people died; losses of 1.2 million yuan",
        {FigureKind.DEATHS: 29, FigureKind.ECONOMIC_LOSS: 1_200_000},
    ),
    ("the death toll from the floods had climbed to 47", {FigureKind.DEATHS: 47}),
    ("no casualties were reported", {FigureKind.DEATHS: 0, FigureKind.INJURED: 0}),
    ("evacuated 3,000 residents", {FigureKind.EVACUATED: 3000}),
]


@pytest.mark.parametrize(("text", "expected"), FIGURES)
def test_figures(text: str, expected: dict[FigureKind, int]) -> None:
    best = strongest(FigureExtractor().extract(text))
    assert {k: f.value for k, f in best.items()} == expected
    for figure in best.values():
        assert figure.matched and figure.matched in text


def test_figures_from_fields() -> None:
    figures = FigureExtractor().from_fields(
        [("deaths", "三十余"), ("economic_loss", "5000万"), ("x", "1")]
    )
    assert {(f.kind, f.value) for f in figures} == {
        (FigureKind.DEATHS, 30),
        (FigureKind.ECONOMIC_LOSS, 50_000_000),
    }
