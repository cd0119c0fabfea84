"""Casualty and loss figures in report text (Chinese and English) and structured fields.

Each figure keeps the span it was read from, so a grade can show the words behind it.
When a kind is stated more than once ("3人死亡……死亡人数升至5人") the largest floor wins:
later updates in a report only ever add casualties.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from intake.numerals import EN_NUM, ZH_NUM, Qualifier, Quantity, parse_en, parse_zh


class FigureKind(enum.Enum):
    """What a figure counts."""

    DEATHS = "deaths"
    INJURED = "injured"
    SERIOUS_INJURIES = "serious_injuries"
    ILL = "ill"  # poisoned, infected, sick: counted like serious injuries by default
    MISSING = "missing"
    TRAPPED = "trapped"
    AFFECTED = "affected"
    EVACUATED = "evacuated"
    ECONOMIC_LOSS = "economic_loss"  # yuan


@dataclass(frozen=True)
class Figure:
    """One figure: kind, value (the floor to grade by), how exact, and its evidence."""

    kind: FigureKind
    value: int
    qualifier: Qualifier
    matched: str
    start: int
    end: int
    source: str = "text"


_N = rf"(?P<n>{ZH_NUM})"
# Who was counted: a counter followed by any short noun when a casualty verb follows
# ("两名厨师受伤"), or a common people-noun with or without a counter.
_VERB_START = "受死遇罹身丧殉溺重危病中发感确出失下被不当经轻负擦转疏撤"
_PEOPLE = (
    "人|群众|村民|居民|工人|矿工|游客|学生|乘客|患者|病人|儿童|师生|人员|旅客|船员|员工|"
    "宾客|观众|老人|遇难者"
)
_WHO = (
    rf"(?:(?:名|位|个|人)[\u4e00-\u9fff]{{0,4}}?(?=[{_VERB_START}])"
    rf"|(?:名|位|个)?(?:{_PEOPLE})?)"
)
_TO = r"(?:已|共|累计|人数)?(?:升至|上升至|增至|增加到|达到|达|为|有|约|超过|共)?"
_ZH_PATTERNS: tuple[tuple[FigureKind, str], ...] = (
    (
        FigureKind.DEATHS,
        rf"{_N}{_WHO}(?:不幸|当场|经抢救无效)?(?:死亡|遇难|罹难|身亡|丧生|殉职|溺亡)",
    ),
    (FigureKind.DEATHS, rf"(?:死亡|遇难|罹难)(?:人数)?{_TO}{_N}(?:名|位)?人"),
    (FigureKind.DEATHS, rf"(?:致|造成|导致){_N}(?:人)?死"),
    (FigureKind.DEATHS, rf"{_N}具(?:遗体|尸体)"),
    (FigureKind.DEATHS, rf"{_N}死(?:亡)?[、，,]?{ZH_NUM}伤"),
    (FigureKind.INJURED, rf"{_N}{_WHO}(?:不同程度)?(?:受伤|受轻伤|轻伤|负伤|擦伤)"),
    (FigureKind.INJURED, rf"(?:受伤|伤者|伤员)(?:人数)?{_TO}{_N}(?:名|位)?人"),
    (FigureKind.INJURED, rf"死(?:亡)?[、，,]?{_N}(?:人)?伤"),
    (FigureKind.SERIOUS_INJURIES, rf"{_N}{_WHO}(?:受)?(?:重伤|伤势严重|危重|病危|伤势较重)"),
    (FigureKind.SERIOUS_INJURIES, rf"(?:重伤|危重)(?:人数)?{_TO}{_N}(?:名|位)?人"),
    (
        FigureKind.ILL,
        rf"{_N}{_WHO}(?:出现)?(?:中毒|食物中毒|发病|感染|确诊|呕吐|腹痛|腹泻|上吐下泻|发热|[^，。,]{{0,8}}症状)",
    ),
    (FigureKind.ILL, rf"(?:中毒|发病|感染|确诊|病例)(?:人数)?{_TO}{_N}(?:名|位|例)(?:人)?"),
    (FigureKind.ILL, rf"(?:接诊|收治|救治)(?:了)?{_N}(?:名|位|例)"),
    (FigureKind.MISSING, rf"{_N}{_WHO}(?:失踪|下落不明|失联)"),
    (FigureKind.MISSING, rf"(?:失踪|失联)(?:人数)?{_TO}{_N}(?:名|位)?人"),
    (FigureKind.TRAPPED, rf"{_N}{_WHO}(?:被困|受困|被埋|被压|被掩埋)"),
    (FigureKind.TRAPPED, rf"(?:被困|受困|被埋)(?:人员|群众)?{_TO}{_N}(?:名|位)?人"),
    (FigureKind.AFFECTED, rf"受灾(?:人口|群众|人数)?{_TO}{_N}(?:人|户)"),
    (FigureKind.AFFECTED, rf"{_N}(?:人|户|名群众)受灾"),
    (FigureKind.AFFECTED, rf"(?:影响|波及){_N}(?:人|户|名)"),
    (
        FigureKind.EVACUATED,
        rf"(?:紧急)?(?:转移|疏散|撤离)(?:安置)?(?:受灾|受威胁)?(?:群众|居民|人员|村民|师生)?{_TO}{_N}(?:名|位)?(?:人|户)",
    ),
    (FigureKind.EVACUATED, rf"{_N}{_WHO}(?:被)?(?:紧急)?(?:转移|疏散|撤离)"),
    (FigureKind.ECONOMIC_LOSS, rf"损失{_TO}{_N}元"),
    (FigureKind.ECONOMIC_LOSS, rf"{_N}元(?:的)?(?:直接)?(?:经济)?损失"),
)

_EN_N = rf"(?P<n>{EN_NUM})"
_NOUNS = r"(?:\s+(?!were\b|was\b|are\b|have\b|had\b|and\b)[a-z-]+){0,3}?"
_BE = (
    r"\s+(?:were\s+|was\s+|have\s+been\s+|had\s+been\s+|has\s+been\s+|have\s+|has\s+|"
    r"had\s+|are\s+|remain\s+|reportedly\s+)?"
)
_EN_PATTERNS: tuple[tuple[FigureKind, str], ...] = (
    (
        FigureKind.DEATHS,
        rf"\b{_EN_N}{_NOUNS}{_BE}(?:killed|dead|died|perished|drowned|confirmed dead)\b",
    ),
    (FigureKind.DEATHS, rf"\b(?:killing|killed|kills|claimed)\s+{_EN_N}\b"),
    (FigureKind.DEATHS, rf"\bdeath toll\s+(?:\w+\s+){{0,6}}?{_EN_N}\b"),
    (
        FigureKind.DEATHS,
        rf"\bdeath toll\b[^.;]{{0,160}}?\b(?:rose|risen|climbed|reached|stood|increased|jumped)"
        rf"\s+(?:to\s+|at\s+)?{_EN_N}\b",
    ),
    (FigureKind.DEATHS, rf"\b{_EN_N}\s+(?:deaths|fatalities|dead)\b"),
    (FigureKind.DEATHS, rf"\bbodies\s+of\s+{_EN_N}\b"),
    (FigureKind.INJURED, rf"\b{_EN_N}{_NOUNS}{_BE}(?:\w+ly\s+)?(?:injured|hurt|wounded)\b"),
    (FigureKind.INJURED, rf"\b(?:injuring|injured|wounding|wounded|hurting)\s+{_EN_N}\b"),
    (FigureKind.INJURED, rf"\b{_EN_N}\s+(?:injuries|injured)\b"),
    (
        FigureKind.SERIOUS_INJURIES,
        rf"\b{_EN_N}{_NOUNS}{_BE}(?:seriously|critically|severely|gravely|badly)\s+(?:injured|hurt|wounded|burned)\b",
    ),
    (
        FigureKind.SERIOUS_INJURIES,
        rf"\b{_EN_N}{_NOUNS}{_BE}in\s+(?:a\s+)?(?:critical|serious)\s+condition\b",
    ),
    (
        FigureKind.ILL,
        rf"\b{_EN_N}{_NOUNS}{_BE}(?:poisoned|infected|sickened|hospitali[sz]ed|fell ill|"
        r"taken ill|came down with|fell sick|got sick|became ill|became sick|developed|suffered)\b",
    ),
    (FigureKind.ILL, rf"\b{_EN_N}\s+(?:confirmed\s+|suspected\s+|new\s+)*(?:cases|infections)\b"),
    (FigureKind.ILL, rf"\b(?:sickening|sickened|poisoning|infecting)\s+(?:at least\s+)?{_EN_N}\b"),
    (FigureKind.ILL, rf"\b(?:treated|admitted)\s+{_EN_N}\b"),
    (FigureKind.ILL, rf"\b{_EN_N}{_NOUNS}\s+with\s+symptoms\b"),
    (
        FigureKind.SERIOUS_INJURIES,
        rf"\b{_EN_N}{_NOUNS}{_BE}(?:found\s+)?(?:unconscious|in\s+a\s+coma)\b",
    ),
    (FigureKind.MISSING, rf"\b{_EN_N}{_NOUNS}{_BE}(?:missing|unaccounted for)\b"),
    (FigureKind.TRAPPED, rf"\b{_EN_N}{_NOUNS}{_BE}(?:trapped|buried|stranded)\b"),
    (FigureKind.TRAPPED, rf"\b(?:trapping|burying)\s+(?:at least\s+)?{_EN_N}\b"),
    (
        FigureKind.EVACUATED,
        rf"\b{_EN_N}{_NOUNS}{_BE}(?:evacuated|relocated|displaced|moved to safety)\b",
    ),
    (FigureKind.EVACUATED, rf"\bevacuat(?:ed|ing|ion of)\s+(?:at least\s+|more than\s+)?{_EN_N}\b"),
    (FigureKind.AFFECTED, rf"\b{_EN_N}{_NOUNS}{_BE}affected\b"),
    (FigureKind.AFFECTED, rf"\baffect(?:ed|ing)\s+{_EN_N}\b"),
    (
        FigureKind.ECONOMIC_LOSS,
        rf"\b(?:loss|losses|damage)\s+(?:\w+\s+){{0,3}}?(?:rmb\s*|cny\s*|¥\s*)?{_EN_N}\s*(?:yuan|rmb|cny)\b",
    ),
    (
        FigureKind.ECONOMIC_LOSS,
        rf"(?:rmb|cny|¥)\s*{_EN_N}\s+(?:in|of)\s+(?:direct\s+)?(?:economic\s+)?(?:losses|damage)",
    ),
    (
        FigureKind.ECONOMIC_LOSS,
        rf"\b{_EN_N}\s*(?:yuan|rmb|cny)\s+(?:in|of|worth of)\s+(?:direct\s+)?"
        r"(?:economic\s+)?(?:losses|damage)",
    ),
)

# Explicit statements that nobody was hurt: they are figures too (zero), and they matter for
# grading ("no casualties" is a stated figure, so the thresholds apply exactly).
_ZERO_PATTERNS: tuple[tuple[tuple[FigureKind, ...], str], ...] = (
    (
        (FigureKind.DEATHS, FigureKind.INJURED),
        r"(?:无|未造成|没有|暂无|未发现|未有)人员伤亡|无人(?:员)?伤亡",
    ),
    ((FigureKind.DEATHS,), r"(?:无|未造成|没有)人员死亡|无人(?:死亡|遇难)"),
    ((FigureKind.TRAPPED,), r"(?:无|没有)人员被困|无人被困"),
    (
        (FigureKind.DEATHS, FigureKind.INJURED),
        r"\bno\s+(?:casualties|one\s+was\s+(?:hurt|injured|killed)|injuries\s+or\s+deaths|deaths\s+or\s+injuries)\b",
    ),
    ((FigureKind.DEATHS,), r"\bno\s+(?:deaths|fatalities)\b|\bno\s+one\s+(?:was\s+)?killed\b"),
    ((FigureKind.INJURED,), r"\bno\s+(?:injuries|one\s+(?:was\s+)?(?:hurt|injured))\b"),
)

_FIELD_KINDS = {kind.value: kind for kind in FigureKind} | {
    "dead": FigureKind.DEATHS,
    "killed": FigureKind.DEATHS,
    "wounded": FigureKind.INJURED,
    "loss_yuan": FigureKind.ECONOMIC_LOSS,
}


# Words without which a kind's patterns cannot match.  Searching for them first is far
# cheaper than running the number-led patterns, and most texts mention only a few kinds.
_ZH_NEEDLES = {
    FigureKind.DEATHS: "死|遇难|罹难|身亡|丧生|殉职|溺亡|遗体|尸体",
    FigureKind.INJURED: "伤",
    FigureKind.SERIOUS_INJURIES: "重伤|伤势|危重|病危",
    FigureKind.ILL: "中毒|发病|感染|确诊|病例|呕吐|腹痛|腹泻|上吐下泻|发热|症状|接诊|收治|救治",
    FigureKind.MISSING: "失踪|下落不明|失联",
    FigureKind.TRAPPED: "被困|受困|被埋|被压|掩埋",
    FigureKind.AFFECTED: "受灾|影响|波及",
    FigureKind.EVACUATED: "转移|疏散|撤离",
    FigureKind.ECONOMIC_LOSS: "元",
}
_EN_NEEDLES = {
    FigureKind.DEATHS: "kill|dead|died|perish|drown|death|fatalit|bodies|claimed",
    FigureKind.INJURED: "injur|hurt|wound",
    FigureKind.SERIOUS_INJURIES: "serious|critical|severe|grave|badly|unconscious|coma",
    FigureKind.ILL: (
        "poison|infect|sick|hospital|ill|developed|suffered|cases|came down|treated|admitted|"
        "symptom"
    ),
    FigureKind.MISSING: "missing|unaccounted",
    FigureKind.TRAPPED: "trapp|buri|stranded",
    FigureKind.AFFECTED: "affect",
    FigureKind.EVACUATED: "evacuat|relocat|displac|moved to safety",
    FigureKind.ECONOMIC_LOSS: "yuan|rmb|cny|¥",
}


@dataclass(frozen=True)
class _Rule:
    """One compiled figure pattern, its needle, and whether it starts with the number."""

    kind: FigureKind
    needle: re.Pattern[str]
    pattern: re.Pattern[str]
    number_led: bool


_Table = tuple[_Rule, ...]


def _table(
    patterns: tuple[tuple[FigureKind, str], ...], needles: dict[FigureKind, str], flags: int
) -> _Table:
    """Compiled rules for one language."""
    return tuple(
        _Rule(
            kind,
            re.compile(needles[kind], flags),
            re.compile(pattern, flags),
            pattern.startswith(("(?P<n>", r"\b(?P<n>")),
        )
        for kind, pattern in patterns
    )


class FigureExtractor:
    """Extracts figures from text and fields; compile once, call many times.

    Patterns that begin with the number are tried only where a number begins (found once
    per text), instead of being searched from every position: numbers are few, positions
    many, and the numeral sub-pattern is the expensive part.
    """

    def __init__(self) -> None:
        """Compile the pattern tables."""
        self._zh = _table(_ZH_PATTERNS, _ZH_NEEDLES, 0)
        self._en = _table(_EN_PATTERNS, _EN_NEEDLES, re.IGNORECASE)
        self._zh_numbers = re.compile(ZH_NUM)
        self._en_numbers = re.compile(rf"\b{EN_NUM}", re.IGNORECASE)
        self._zero = tuple((k, re.compile(p, re.IGNORECASE)) for k, p in _ZERO_PATTERNS)
        self._has_cjk = re.compile(r"[\u4e00-\u9fff]")
        self._has_latin = re.compile(r"[A-Za-z]")

    def extract(self, text: str) -> list[Figure]:
        """All figures found in ``text``, in text order (duplicates kept)."""
        text = unicodedata.normalize("NFKC", text)
        found: list[Figure] = []
        if self._has_cjk.search(text):
            self._run(self._zh, self._zh_numbers, text, found)
        if self._has_latin.search(text):
            self._run(self._en, self._en_numbers, text, found)
        for kinds, pattern in self._zero:
            for match in pattern.finditer(text):
                for kind in kinds:
                    found.append(
                        Figure(kind, 0, Qualifier.EXACT, match.group(0), match.start(), match.end())
                    )
        found.sort(key=lambda f: (f.start, f.kind.value))
        return found

    def _run(self, table: _Table, numbers: re.Pattern[str], text: str, found: list[Figure]) -> None:
        """Apply one language's rules to ``text``, appending to ``found``."""
        starts: list[int] | None = None
        present: dict[str, bool] = {}
        for rule in table:
            key = rule.needle.pattern
            if key not in present:
                present[key] = rule.needle.search(text) is not None
            if not present[key]:
                continue
            if rule.number_led:
                if starts is None:
                    starts = [m.start() for m in numbers.finditer(text)]
                matches = [m for m in map(lambda at: rule.pattern.match(text, at), starts) if m]
            else:
                matches = list(rule.pattern.finditer(text))
            for match in matches:
                figure = _figure(rule.kind, match)
                if figure is not None:
                    found.append(figure)

    def from_fields(self, fields: Iterable[tuple[str, str]]) -> list[Figure]:
        """Figures given as structured fields (``deaths=3``, ``economic_loss=5000万``)."""
        found: list[Figure] = []
        for name, raw in fields:
            kind = _FIELD_KINDS.get(name.strip().lower())
            if kind is None:
                continue
            quantity = parse_zh(raw) or parse_en(raw)
            if quantity is None:
                continue
            found.append(
                Figure(kind, quantity.floor, quantity.qualifier, f"{name}={raw}", -1, -1, "field")
            )
        return found


def _figure(kind: FigureKind, match: re.Match[str]) -> Figure | None:
    """Turn a pattern match into a figure, or None if its number does not parse."""
    raw = match.group("n")
    quantity: Quantity | None = parse_zh(raw) or parse_en(raw)
    if quantity is None:
        return None
    return Figure(
        kind, quantity.floor, quantity.qualifier, match.group(0), match.start(), match.end()
    )


def strongest(figures: Iterable[Figure]) -> dict[FigureKind, Figure]:
    """For each kind, the figure with the largest value (fields win ties: someone typed them)."""
    best: dict[FigureKind, Figure] = {}
    for figure in figures:
        current = best.get(figure.kind)
        if (
            current is None
            or figure.value > current.value
            or (figure.value == current.value and figure.source == "field")
        ):
            best[figure.kind] = figure
    return best
