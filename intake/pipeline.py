"""One entry point for the daemon: assess a report (figures, classification, grade, place)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from intake.classify import Classifier, Correction
from intake.config import IntakeRules, load_rules
from intake.correlate import Correlator
from intake.figures import Figure, FigureExtractor
from intake.gazetteer import Gazetteer
from intake.grade import Grader
from intake.model import Classification, GradeResult, Location, Report, ReportRef


@dataclass(frozen=True)
class Assessment:
    """Everything intake concluded about one report."""

    report_id: str
    figures: tuple[Figure, ...]
    classification: Classification
    grade: GradeResult
    location: Location

    def ref(self, report: Report) -> ReportRef:
        """The reference correlation keeps for this report."""
        return ReportRef(
            report.report_id,
            report.received_at,
            self.grade.grade,
            self.classification.category,
            self.classification.subtype,
            self.location.lat,
            self.location.lon,
            self.classification.agencies,
        )


class Intake:
    """Figure extraction, classification, grading, location and correlation, wired together."""

    def __init__(
        self, rules: IntakeRules, corrections: Mapping[str, Correction] | None = None
    ) -> None:
        """Build every component from validated rules."""
        self.rules = rules
        self.figures = FigureExtractor()
        self.classifier = Classifier(rules.categories, corrections)
        self.grader = Grader(rules.grading)
        self.gazetteer = Gazetteer(rules.places)
        self.correlator = Correlator(rules.correlation, self.grader)

    @classmethod
    def from_dir(
        cls,
        rules_dir: Path | str | None = None,
        corrections: Mapping[str, Correction] | None = None,
    ) -> Intake:
        """Load rules from ``rules_dir`` (package defaults for missing files) and build."""
        return cls(load_rules(rules_dir), corrections)

    def assess_text(
        self, text: str, fields: tuple[tuple[str, str], ...] = (), lang: str | None = None
    ) -> tuple[tuple[Figure, ...], Classification, GradeResult]:
        """Figures, classification and grade for bare text (what ``dispatchd classify`` does)."""
        figures = tuple(self.figures.extract(text)) + tuple(self.figures.from_fields(fields))
        classification = self.classifier.classify(text, fields, lang, figures)
        return figures, classification, self.grader.grade(text, figures)

    def assess(self, report: Report) -> Assessment:
        """Assess one report."""
        figures, classification, grade = self.assess_text(report.text, report.fields, report.lang)
        return Assessment(
            report.report_id, figures, classification, grade, self.gazetteer.locate(report)
        )
