"""Grading I-IV from stated figures, hazards, sensitive places and surges of reports.

Theory of operation: each configured scale sums the figures it names (deaths + missing, ...)
and maps the sum through its thresholds; the most severe grade over all scales is the
report's grade, and every scale that had a figure is listed as a reason.  Hazards and
sensitive places raise a grade (capped) when no figures are stated; when figures are
stated they are listed as "noted" unless the operator configured them to apply, so that a
report stating its figures is graded by the configured thresholds exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from intake.config import GradingRules
from intake.figures import Figure, strongest
from intake.model import Grade, GradeReason, GradeResult
from intake.textmatch import TermSet, fold, words_of


def _bounded_raise(grade: Grade, steps: int, cap: Grade) -> Grade:
    """``grade`` raised by ``steps`` but not beyond ``cap``; never lowered."""
    if grade.value <= cap.value:
        return grade
    return Grade(max(grade.value - steps, cap.value))


class Grader:
    """Grades reports and incidents by the configured rules."""

    def __init__(self, rules: GradingRules) -> None:
        """Compile the modifier word lists."""
        self._rules = rules
        self._groups = [(group, TermSet(group.terms)) for group in rules.modifier_groups]

    def grade(self, text: str, figures: Iterable[Figure]) -> GradeResult:
        """Grade one report from its text (for modifiers) and its extracted figures."""
        best = strongest(figures)
        reasons: list[GradeReason] = []
        grade = Grade.IV
        for scale in self._rules.scales:
            present = [best[kind] for kind in scale.figures if kind in best]
            if not present:
                continue
            total = sum(f.value for f in present)
            scale_grade = scale.grade_for(total)
            grade = min(grade, scale_grade)
            reasons.append(
                GradeReason(
                    f"scale:{scale.name}",
                    scale_grade,
                    f"{scale.label} = {total:,.0f} (I ≥ {scale.grade_i:,.0f}, "
                    f"II ≥ {scale.grade_ii:,.0f}, III ≥ {scale.grade_iii:,.0f}) "
                    f"→ {scale_grade.name}",
                    "; ".join(f.matched for f in present),
                )
            )
        # Any stated figure (even one no scale uses, even "no casualties") means the report
        # states its figures: the thresholds decide and modifiers are only noted.
        stated = bool(best)
        if not reasons:
            reasons.append(GradeReason("default", Grade.IV, "no graded figure stated → IV"))
        folded = fold(text)
        words = words_of(folded)
        apply = not stated or self._rules.modifiers_when_figures
        for group, terms in self._groups:
            found = terms.search(folded, words)
            if found is None:
                continue
            raised = _bounded_raise(grade, self._rules.modifier_raise, self._rules.modifier_cap)
            detail = (
                f"{group.label} '{found.term}' raises to {raised.name}"
                if apply
                else f"{group.label} '{found.term}' noted; figures stated, thresholds decide"
            )
            reasons.append(GradeReason(f"modifier:{group.name}", raised, detail, found.term, apply))
            if apply:
                grade = min(grade, raised)
        return GradeResult(grade, tuple(reasons), stated)

    def surge(
        self, grade: Grade, report_times: Sequence[datetime]
    ) -> tuple[Grade, GradeReason | None]:
        """Raise an incident's grade when enough reports arrived within the surge window."""
        if not report_times:
            return grade, None
        latest = max(report_times)
        window = timedelta(minutes=self._rules.surge_window_minutes)
        recent = sum(1 for t in report_times if latest - t <= window)
        if recent < self._rules.surge_reports:
            return grade, None
        raised = _bounded_raise(grade, 1, self._rules.surge_cap)
        reason = GradeReason(
            "surge",
            raised,
            f"{recent} reports within {self._rules.surge_window_minutes:g} min "
            f"(≥ {self._rules.surge_reports}) → {raised.name}",
            applied=raised != grade,
        )
        return raised, reason
