"""Numbers as people write them in reports: Arabic, Chinese, mixed, and approximate.

Handles ``12``, ``1,200``, ``1.2万``, ``5000万``, ``1亿``, ``十二``, ``三十余``, ``两百多``,
``一百零五``, ``数十``, ``十几``, ``上百``, and in English ``twelve``, ``1.2 million``,
``more than 30``, ``dozens``, ``a dozen``, ``hundreds``.

Approximate numbers carry a qualifier; :meth:`Quantity.floor` is the figure to grade by:
"三十余人" (more than thirty) grades as 30, "近30人" (nearly thirty) as 29, "数十人" (some
tens) as 20 - the least the text commits to, so a grade is never raised on a guess.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass


class Qualifier(enum.Enum):
    """How exact a written number is."""

    EXACT = "exact"
    OVER = "over"  # 余, 多, 以上, 逾, more than, dozens
    ABOUT = "about"  # 约, 左右, about, some
    UNDER = "under"  # 近, 将近, nearly, almost


@dataclass(frozen=True)
class Quantity:
    """A number found in text with its qualifier and the text it came from."""

    value: float
    qualifier: Qualifier
    text: str

    @property
    def floor(self) -> int:
        """The least whole number the text commits to (what grading uses)."""
        whole = int(self.value)
        if self.qualifier is Qualifier.UNDER and whole == self.value and whole > 0:
            return whole - 1
        return whole


_ZH_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "壹": 1,
    "二": 2,
    "贰": 2,
    "两": 2,
    "三": 3,
    "叁": 3,
    "四": 4,
    "肆": 4,
    "五": 5,
    "伍": 5,
    "六": 6,
    "陆": 6,
    "七": 7,
    "柒": 7,
    "八": 8,
    "捌": 8,
    "九": 9,
    "玖": 9,
    # 数/几 stand for "some": as a digit they mean at least two (数十 = at least 20).
    "数": 2,
    "几": 2,
}
_ZH_SMALL_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_ZH_BIG_UNITS = {"万": 10_000, "萬": 10_000, "亿": 100_000_000, "億": 100_000_000}

#: A regex fragment matching the body of a Chinese or mixed numeral (no qualifiers).
ZH_NUM_CORE = (
    r"(?:(?:[0-9]+(?:\.[0-9]+)?[十百千万亿萬億]+)+[0-9]*"
    r"|[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+(?:\.[0-9]+)?"
    r"|上[百千万]|[数几]?[零〇一二两三四五六七八九十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟萬億]+几?"
    r"|[数几][十百千万])"
)
_ZH_PREFIX = r"(?:约|大约|近|将近|接近|逾|超过|超|多达|至少|已达|达到|达|共计|共|累计|上)"
_ZH_SUFFIX = r"(?:余|多|来)"
#: Regex fragment for a Chinese numeral with its optional qualifiers (group-free).
ZH_NUM = rf"(?:{_ZH_PREFIX})?{ZH_NUM_CORE}(?:{_ZH_SUFFIX})?"

_ZH_NUM_RE = re.compile(rf"({_ZH_PREFIX})?({ZH_NUM_CORE})({_ZH_SUFFIX})?(以上|左右|上下)?")

_EN_UNITS = {
    "zero": 0,
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_EN_SCALES = {
    "hundred": 100,
    "thousand": 1000,
    "million": 1_000_000,
    "billion": 1_000_000_000,
    "m": 1_000_000,
    "mn": 1_000_000,
    "bn": 1_000_000_000,
    "k": 1000,
}
# Plural vague amounts: the least they commit to.
_EN_VAGUE = {
    "a dozen": 12,
    "dozens": 24,
    "scores": 40,
    "hundreds": 200,
    "thousands": 2000,
    "tens of thousands": 20_000,
    "hundreds of thousands": 200_000,
    "millions": 2_000_000,
}
_EN_WORD = (
    r"(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
    r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|"
    r"sixty|seventy|eighty|ninety|hundred|thousand|million|billion)"
)
_EN_PREFIX = (
    r"(?:more than|over|at least|nearly|almost|about|around|approximately|some|up to|"
    r"as many as|roughly|an estimated|close to|fewer than|less than)"
)
#: Regex fragment for an English number (digits, words or vague plural), group-free.
EN_NUM_CORE = (
    r"(?:tens of thousands|hundreds of thousands|a dozen|dozens|scores|hundreds|thousands|"
    r"millions|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?(?:million|billion|thousand|mn|bn|m|k)\b)?|"
    rf"{_EN_WORD}(?:[\s-]+(?:and[\s-]+)?{_EN_WORD})*)"
)
EN_NUM = rf"(?:{_EN_PREFIX}\s+)?{EN_NUM_CORE}(?:\s+or more)?"
_EN_NUM_RE = re.compile(rf"(?:({_EN_PREFIX})\s+)?({EN_NUM_CORE})(\s+or more)?", re.IGNORECASE)


def _zh_body_value(body: str) -> tuple[float, bool] | None:
    """Value of a Chinese/mixed numeral body and whether it used 数/几 (vague)."""
    body = body.replace(",", "").replace("，", "")
    if body.startswith("上") and len(body) == 2:  # 上百 / 上千 / 上万: at least that many
        scale = _ZH_SMALL_UNITS.get(body[1]) or _ZH_BIG_UNITS.get(body[1])
        return (float(scale), True) if scale else None
    vague = "数" in body or "几" in body
    if body.endswith("几") and len(body) > 1:  # 十几 = more than ten: at least eleven
        body = body[:-1]
        value = _zh_value(body)
        return (value + 1, True) if value is not None else None
    value = _zh_value(body)
    return (value, vague) if value is not None else None


def _zh_value(body: str) -> float | None:
    """Section-by-section value of a numeral such as 一百零五, 1.2万, 3亿5000万."""
    total = 0.0
    section = 0.0
    current: float | None = None
    i = 0
    while i < len(body):
        ch = body[i]
        if ch.isdigit() or ch == ".":
            j = i
            while j < len(body) and (body[j].isdigit() or body[j] == "."):
                j += 1
            try:
                current = float(body[i:j])
            except ValueError:
                return None
            i = j
            continue
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
            # Runs of bare digits (一一〇) read as a digit string.
            current = digit if current is None else current * 10 + digit
        elif ch in _ZH_SMALL_UNITS:
            section += (1 if current is None else current) * _ZH_SMALL_UNITS[ch]
            current = None
        elif ch in _ZH_BIG_UNITS:
            unit = _ZH_BIG_UNITS[ch]
            value = section + (current or 0)
            if value == 0:
                value = 1
            if unit == 100_000_000:
                total = (total + value) * unit
            else:
                total += value * unit
            section, current = 0.0, None
        else:
            return None
        i += 1
    return total + section + (current or 0)


def parse_zh(text: str) -> Quantity | None:
    """Parse one Chinese or mixed numeral with its qualifiers; None if it is not one."""
    folded = unicodedata.normalize("NFKC", text).strip()
    match = _ZH_NUM_RE.fullmatch(folded)
    if match is None:
        return None
    prefix, body, suffix, tail = match.groups()
    parsed = _zh_body_value(body)
    if parsed is None:
        return None
    value, vague = parsed
    qualifier = Qualifier.EXACT
    if vague or suffix or tail == "以上" or prefix in ("逾", "超过", "超", "多达", "至少", "上"):
        qualifier = Qualifier.OVER
    elif prefix in ("近", "将近", "接近"):
        qualifier = Qualifier.UNDER
    elif prefix in ("约", "大约") or tail in ("左右", "上下"):
        qualifier = Qualifier.ABOUT
    return Quantity(value, qualifier, text)


def _en_words_value(words: str) -> float | None:
    """Value of spelled-out English number words (``two hundred and five``)."""
    total = 0.0
    current = 0.0
    seen = False
    for word in re.split(r"[\s-]+", words.lower()):
        if word == "and" or not word:
            continue
        if word in _EN_UNITS:
            current += _EN_UNITS[word]
        elif word == "hundred":
            current = (current or 1) * 100
        elif word in _EN_SCALES:
            total += (current or 1) * _EN_SCALES[word]
            current = 0
        else:
            return None
        seen = True
    return total + current if seen else None


def _en_core_value(core: str) -> tuple[float, bool] | None:
    """Value of an English number body and whether it was a vague plural."""
    low = core.lower()
    if low in _EN_VAGUE:
        return float(_EN_VAGUE[low]), low != "a dozen"
    digits = re.fullmatch(
        r"((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s?(million|billion|thousand|mn|bn|m|k)?", low
    )
    if digits:
        value = float(digits.group(1).replace(",", ""))
        if digits.group(2):
            value *= _EN_SCALES[digits.group(2)]
        return value, False
    words = _en_words_value(low)
    return (words, False) if words is not None else None


def parse_en(text: str) -> Quantity | None:
    """Parse one English number with its qualifier; None if it is not one."""
    match = _EN_NUM_RE.fullmatch(text.strip())
    if match is None:
        return None
    prefix, core, or_more = match.groups()
    parsed = _en_core_value(core)
    if parsed is None:
        return None
    value, vague = parsed
    prefix = (prefix or "").lower()
    qualifier = Qualifier.EXACT
    if vague or or_more or prefix in ("more than", "over", "at least", "as many as"):
        qualifier = Qualifier.OVER
    elif prefix in ("nearly", "almost", "close to", "fewer than", "less than"):
        qualifier = Qualifier.UNDER
    elif prefix:
        qualifier = Qualifier.ABOUT
    return Quantity(value, qualifier, text)


def parse_number(text: str) -> Quantity | None:
    """Parse a numeral in either language (Chinese first, then English)."""
    return parse_zh(text) or parse_en(text)
