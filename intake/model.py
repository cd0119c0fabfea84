"""Value objects of intake: reports, locations, classifications, grades, incidents.

Everything here is a frozen dataclass or an enum so that a decision can be handed to the
daemon (which persists and audits it) without anyone mutating it on the way.
"""

from __future__ import annotations

import enum
import hashlib
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime


class Channel(enum.Enum):
    """How a report reached the command centre."""

    VOICE = "voice"
    SMS = "sms"
    EMAIL = "email"
    RADIO_SDS = "radio_sds"
    SATPHONE_SMS = "satphone_sms"
    RADIO_CALL = "radio_call"  # a handset's emergency call (TETRA emergency button)
    API = "api"
    WEB_FORM = "web_form"
    SENSOR = "sensor"


class Category(enum.Enum):
    """The four GB/T 35561 categories of public emergency (突发事件)."""

    NATURAL_DISASTER = "natural_disaster"
    ACCIDENT = "accident"
    PUBLIC_HEALTH = "public_health"
    SOCIAL_SECURITY = "social_security"

    @property
    def zh(self) -> str:
        """The category's Chinese name as written in GB/T 35561."""
        return _CATEGORY_ZH[self]


_CATEGORY_ZH = {
    Category.NATURAL_DISASTER: "自然灾害",
    Category.ACCIDENT: "事故灾难",
    Category.PUBLIC_HEALTH: "公共卫生事件",
    Category.SOCIAL_SECURITY: "社会安全事件",
}


class Grade(enum.IntEnum):
    """Severity grade I-IV; a smaller value is more severe (I = 特别重大)."""

    I = 1  # noqa: E741 - the national scale is written in Roman numerals
    II = 2
    III = 3
    IV = 4

    @property
    def zh(self) -> str:
        """Chinese name: 特别重大 / 重大 / 较大 / 一般."""
        return _GRADE_ZH[self]

    @property
    def colour(self) -> str:
        """Warning colour: red / orange / yellow / blue."""
        return _GRADE_COLOUR[self]

    def raised(self, steps: int = 1) -> Grade:
        """The grade ``steps`` levels more severe, never beyond I."""
        return Grade(max(1, self.value - steps))

    @classmethod
    def parse(cls, text: str) -> Grade:
        """Parse ``I``..``IV``, ``1``..``4``, a Chinese name or a colour; raise ValueError."""
        key = text.strip()
        for grade in cls:
            if (
                key.upper() == grade.name
                or key == str(grade.value)
                or key
                in (
                    grade.zh,
                    grade.colour,
                )
            ):
                return grade
        raise ValueError(f"not a grade: {text!r}")


_GRADE_ZH = {Grade.I: "特别重大", Grade.II: "重大", Grade.III: "较大", Grade.IV: "一般"}
_GRADE_COLOUR = {Grade.I: "red", Grade.II: "orange", Grade.III: "yellow", Grade.IV: "blue"}


@dataclass(frozen=True)
class Location:
    """Where a report says the event is.

    ``source`` is ``"channel"`` (coordinates came with the report), ``"gazetteer"`` (address
    text resolved), or ``"unresolved"`` (the call taker must place it: ``lat``/``lon`` None).
    """

    lat: float | None
    lon: float | None
    source: str
    text: str = ""
    matched: str = ""
    place_id: str = ""

    @property
    def resolved(self) -> bool:
        """True when there are coordinates to correlate and map with."""
        return self.lat is not None and self.lon is not None


@dataclass(frozen=True)
class Report:
    """One contact from the public or the field, normalised across channels.

    ``fields`` carries structured values a form, sensor or call taker supplied (for example
    ``{"deaths": "3", "category": "accident"}``); the classifier and grader read them as well
    as ``text``.
    """

    report_id: str
    channel: Channel
    received_at: datetime
    text: str
    lang: str | None = None
    caller: str = ""
    lat: float | None = None
    lon: float | None = None
    address: str = ""
    fields: tuple[tuple[str, str], ...] = ()

    def field(self, name: str) -> str | None:
        """The value of structured field ``name`` or None."""
        for key, value in self.fields:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Evidence:
    """A piece of text (or a field, or a correction) that supported a decision."""

    kind: str
    matched: str
    detail: str = ""
    start: int = -1
    end: int = -1


@dataclass(frozen=True)
class Classification:
    """The category, subtype and agencies for one report, with what supported them."""

    category: Category | None
    subtype: str | None
    agencies: tuple[str, ...]
    confidence: float
    evidence: tuple[Evidence, ...] = ()
    scores: tuple[tuple[str, float], ...] = ()
    corrected: bool = False


@dataclass(frozen=True)
class GradeReason:
    """Why a grade was given: which rule, what value, which grade it implied."""

    rule: str
    grade: Grade
    detail: str
    evidence: str = ""
    applied: bool = True


@dataclass(frozen=True)
class GradeResult:
    """A grade and every reason considered (``applied`` False for reasons only noted)."""

    grade: Grade
    reasons: tuple[GradeReason, ...]
    figures_stated: bool


@dataclass(frozen=True)
class ReportRef:
    """What an incident remembers of each attached report (enough to re-derive on split)."""

    report_id: str
    received_at: datetime
    grade: Grade
    category: Category | None = None
    subtype: str | None = None
    lat: float | None = None
    lon: float | None = None
    agencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class IncidentSnapshot:
    """An incident as correlation sees it: immutable; every operation returns a new one."""

    incident_id: str
    category: Category | None
    subtype: str | None
    lat: float | None
    lon: float | None
    opened_at: datetime
    last_report_at: datetime
    reports: tuple[ReportRef, ...]
    grade: Grade
    agencies: tuple[str, ...] = ()
    closed: bool = False
    grade_reasons: tuple[GradeReason, ...] = field(default=())

    @property
    def report_ids(self) -> tuple[str, ...]:
        """Ids of the attached reports, in arrival order."""
        return tuple(ref.report_id for ref in self.reports)

    @property
    def report_count(self) -> int:
        """How many reports are attached."""
        return len(self.reports)


def fingerprint(text: str) -> str:
    """A stable key for a text, so an operator's correction applies to the same text again.

    NFKC-folds, lower-cases and drops whitespace and punctuation, so that full-width digits,
    spacing and a trailing full stop do not defeat the match.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(ch for ch in folded if ch.isalnum())
    return hashlib.sha256(kept.encode("utf-8")).hexdigest()[:32]
