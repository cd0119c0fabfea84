"""Rule-and-lexicon classifier: GB/T 35561 category, subtype and agencies, with evidence.

Theory of operation
-------------------
Every lexicon term (``conf/intake/lexicon.csv``) carries a weight for one subtype.  The
text is scanned once per language with one compiled alternation (longest terms first, so
"森林火灾" wins over "火灾" at the same position); each distinct term found adds its weight to
its subtype.  Subtype scores add up to category scores; the best category wins, then its best
subtype, ties broken by the subtype's configured priority.  Agencies are the subtype's
defaults plus those named by trigger words and by stated casualty figures.

Precedence: an operator's correction for the same text (by fingerprint) beats structured
fields (``category``/``subtype`` given by a form or a sensor), which beat the lexicon.  Each
source is reported as evidence, so a call taker sees why.

Why no statistical model: the corpus we can ship is small and partly written by us; a
character n-gram model trained on it learned our phrasing more than the events (it gained on
our own test split and lost on unseen sources), while weighted lexicons written from domain
knowledge transfer across sources and stay editable by operators.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from intake.config import CategoryRules, LexiconEntry
from intake.figures import Figure
from intake.model import Category, Classification, Evidence, Report, fingerprint
from intake.textmatch import TermSet, words_of

#: Longest text scanned; reports are short, and this bounds the work per report.
MAX_TEXT_CHARS = 20_000

#: Structured fields whose values are scanned together with the text (sensor alert types,
#: form titles).
TEXT_FIELDS = ("type", "event", "event_type", "alarm", "alert", "title", "subject", "sensor_type")


@dataclass(frozen=True)
class Correction:
    """An operator's correction of a classification, kept so the same text is classified so."""

    category: Category
    subtype: str | None
    operator: str = ""
    note: str = ""


@dataclass(frozen=True)
class _Hit:
    """One lexicon term found in the text."""

    entries: tuple[LexiconEntry, ...]
    matched: str
    start: int
    end: int


_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class _EnTerm:
    """An English term split into words; the last word may be plural or a ``*`` stem."""

    words: tuple[str, ...]
    wildcard: bool
    entries: tuple[LexiconEntry, ...]

    def match_at(self, words: list[str], i: int) -> bool:
        """True if the term's words start at ``words[i]``."""
        n = len(self.words)
        if i + n > len(words):
            return False
        for k in range(n - 1):
            if words[i + k] != self.words[k]:
                return False
        last, word = self.words[-1], words[i + n - 1]
        if self.wildcard:
            return word.startswith(last)
        return word == last or word == last + "s" or word == last + "es"


class _Matcher:
    """Longest-first term matcher for one language; maps each hit back to its entries.

    Chinese is scanned character by character with an index on the first character;
    English word by word with an index on the first three letters of the first word.  Both
    are far faster in CPython than one alternation of hundreds of terms.
    """

    def __init__(self, entries: Iterable[LexiconEntry], lang: str) -> None:
        """Group entries by term and index them."""
        by_term: dict[str, list[LexiconEntry]] = {}
        for entry in entries:
            by_term.setdefault(entry.term, []).append(entry)
        self._lang = lang
        self._zh: dict[str, list[tuple[str, tuple[LexiconEntry, ...]]]] = {}
        self._en: dict[str, list[_EnTerm]] = {}
        for term in sorted(by_term, key=lambda t: (-len(t), t)):
            group = tuple(by_term[term])
            if lang == "zh":
                self._zh.setdefault(term[0], []).append((term, group))
            else:
                words = tuple(_WORD.findall(term.rstrip("*")))
                if words:
                    en = _EnTerm(words, term.endswith("*"), group)
                    self._en.setdefault(words[0][:3], []).append(en)
        for terms in self._en.values():
            terms.sort(key=lambda t: (-len(t.words), -len(t.words[-1])))

    def hits(self, text: str) -> list[_Hit]:
        """Every non-overlapping term occurrence in ``text`` (already folded)."""
        return self._zh_hits(text) if self._lang == "zh" else self._en_hits(text)

    def _zh_hits(self, text: str) -> list[_Hit]:
        """Scan for Chinese terms, longest first at each position."""
        found: list[_Hit] = []
        index = self._zh
        i, n = 0, len(text)
        while i < n:
            candidates = index.get(text[i])
            if candidates:
                for term, group in candidates:
                    if text.startswith(term, i):
                        found.append(_Hit(group, term, i, i + len(term)))
                        i += len(term)
                        break
                else:
                    i += 1
            else:
                i += 1
        return found

    def _en_hits(self, text: str) -> list[_Hit]:
        """Scan for English terms word by word, longest first at each word."""
        found: list[_Hit] = []
        spans = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]
        words = [w for w, _, _ in spans]
        i, n = 0, len(words)
        while i < n:
            for term in self._en.get(words[i][:3], ()):
                if term.match_at(words, i):
                    j = i + len(term.words) - 1
                    start, end = spans[i][1], spans[j][2]
                    found.append(_Hit(term.entries, text[start:end], start, end))
                    i = j + 1
                    break
            else:
                i += 1
        return found


class Classifier:
    """Classifies report text and fields; build once from rules, call for every report."""

    def __init__(
        self, rules: CategoryRules, corrections: Mapping[str, Correction] | None = None
    ) -> None:
        """Compile the lexicon and agency triggers; ``corrections`` maps text fingerprints."""
        self._rules = rules
        self._zh = _Matcher((e for e in rules.lexicon if e.lang == "zh"), "zh")
        self._en = _Matcher((e for e in rules.lexicon if e.lang == "en"), "en")
        self._corrections: dict[str, Correction] = dict(corrections or {})
        self._agency_order = {code: i for i, code in enumerate(rules.agencies)}
        self._triggers = [(code, TermSet(terms)) for code, terms in rules.agency_triggers.items()]
        self._redirects = [(r, TermSet(r.when)) for r in rules.redirects]
        self._cjk = re.compile(r"[\u4e00-\u9fff]")
        self._latin = re.compile(r"[a-z]")

    @property
    def rules(self) -> CategoryRules:
        """The rules this classifier was built from."""
        return self._rules

    def add_correction(self, text: str, correction: Correction) -> str:
        """Record an operator's correction for ``text``; returns the fingerprint to persist."""
        if correction.subtype is not None:
            sub = self._rules.subtypes.get(correction.subtype)
            if sub is None or sub.category is not correction.category:
                raise ValueError(
                    f"subtype {correction.subtype!r} is not in {correction.category.value}"
                )
        key = fingerprint(text)
        self._corrections[key] = correction
        return key

    def corrections(self) -> dict[str, Correction]:
        """A copy of the corrections in force, by fingerprint (for the lead to persist)."""
        return dict(self._corrections)

    def classify_report(self, report: Report, figures: Iterable[Figure] = ()) -> Classification:
        """Classify a report from its text and structured fields."""
        return self.classify(report.text, report.fields, report.lang, figures)

    def classify(
        self,
        text: str,
        fields: Iterable[tuple[str, str]] = (),
        lang: str | None = None,
        figures: Iterable[Figure] = (),
    ) -> Classification:
        """Category, subtype, agencies and evidence for ``text`` (``lang`` is a hint only)."""
        fields = tuple(fields)
        extra = " ".join(value for key, value in fields if key.lower() in TEXT_FIELDS)
        folded = unicodedata.normalize("NFKC", f"{text} {extra}"[:MAX_TEXT_CHARS]).casefold()
        hits = self._hits(folded, lang)
        scores = _subtype_scores(hits)
        words = words_of(folded)
        context = self._redirect(folded, words, scores)
        evidence = [
            Evidence(
                "term",
                hit.matched,
                ", ".join(f"{e.subtype}{e.weight:+g}" for e in hit.entries),
                hit.start,
                hit.end,
            )
            for hit in hits
        ]
        evidence.extend(context)
        category, subtype, forced = self._decide(text, fields, scores, evidence)
        total = sum(v for v in scores.values() if v > 0)
        cat_score = sum(
            v
            for s, v in scores.items()
            if category is not None and self._rules.subtypes[s].category is category
        )
        if forced in ("correction", "field"):
            confidence = 1.0
        elif forced == "model":
            confidence = 0.3  # the model alone decided: worth a call taker's look
        else:
            confidence = cat_score / total if total > 0 else 0.0
        agencies = self._agencies(subtype, folded, words, figures, evidence)
        ranked = tuple(sorted(((s, round(v, 3)) for s, v in scores.items()), key=lambda p: -p[1]))
        return Classification(
            category,
            subtype,
            agencies,
            round(confidence, 3),
            tuple(evidence),
            ranked,
            corrected=forced == "correction",
        )

    def _redirect(
        self, folded: str, words: frozenset[str], scores: dict[str, float]
    ) -> list[Evidence]:
        """Move scores between subtypes where a context word says so (fire in a forest)."""
        evidence: list[Evidence] = []
        for redirect, terms in self._redirects:
            if scores.get(redirect.source, 0.0) <= 0:
                continue
            found = terms.search(folded, words)
            if found is None:
                continue
            moved = scores.pop(redirect.source)
            scores[redirect.target] = scores.get(redirect.target, 0.0) + moved
            evidence.append(
                Evidence(
                    "context",
                    found.term,
                    f"{redirect.source} counts as {redirect.target}",
                    found.start,
                    found.end,
                )
            )
        return evidence

    def _hits(self, folded: str, lang: str | None) -> list[_Hit]:
        """Lexicon hits in whichever scripts the text contains."""
        hits: list[_Hit] = []
        if lang == "zh" or self._cjk.search(folded):
            hits.extend(self._zh.hits(folded))
        if lang == "en" or self._latin.search(folded):
            hits.extend(self._en.hits(folded))
        return hits

    def _decide(
        self,
        text: str,
        fields: tuple[tuple[str, str], ...],
        scores: dict[str, float],
        evidence: list[Evidence],
    ) -> tuple[Category | None, str | None, str]:
        """Pick category and subtype: correction, then fields, then lexicon scores."""
        correction = self._corrections.get(fingerprint(text)) if self._corrections else None
        if correction is not None:
            evidence.insert(
                0,
                Evidence(
                    "correction",
                    correction.category.value,
                    f"operator {correction.operator or '?'}: {correction.note}".strip(),
                ),
            )
            return correction.category, correction.subtype, "correction"
        given = {k.lower(): v.strip() for k, v in fields}
        category = _parse_category(given.get("category", ""))
        sub_given = given.get("subtype", "")
        if sub_given in self._rules.subtypes and category in (
            None,
            self._rules.subtypes[sub_given].category,
        ):
            evidence.insert(0, Evidence("field", f"subtype={sub_given}"))
            return self._rules.subtypes[sub_given].category, sub_given, "field"
        if category is not None:
            evidence.insert(0, Evidence("field", f"category={category.value}"))
            return category, self._best_subtype(scores, category), "field"
        return self._by_score(text, scores, evidence)

    def _by_score(
        self, text: str, scores: dict[str, float], evidence: list[Evidence]
    ) -> tuple[Category | None, str | None, str]:
        """Category from lexicon scores plus the model's bounded contribution."""
        by_category: dict[Category, float] = {}
        for sub, value in scores.items():
            cat = self._rules.subtypes[sub].category
            by_category[cat] = by_category.get(cat, 0.0) + value
        lexical = any(v > 0 for v in by_category.values())
        settings = self._rules.model
        if settings is not None and settings.weight > 0:
            posterior, known = settings.model.posterior(text)
            best_model = max(posterior, key=lambda c: posterior[c])
            alone_ok = (
                known >= settings.min_known and posterior[best_model] >= settings.min_posterior
            )
            if known and (lexical or alone_ok):
                for cat, p in posterior.items():
                    by_category[cat] = by_category.get(cat, 0.0) + settings.weight * p
                evidence.append(
                    Evidence(
                        "model",
                        best_model.value,
                        f"p={posterior[best_model]:.2f}, "
                        f"{known} known n-grams, weight {settings.weight:g}",
                    )
                )
        if not by_category:
            return None, None, ""
        best = max(by_category, key=lambda c: (by_category[c], self._top_priority(scores, c)))
        if by_category[best] <= 0:
            return None, None, ""
        return best, self._best_subtype(scores, best), "" if lexical else "model"

    def _top_priority(self, scores: dict[str, float], category: Category) -> int:
        """Priority of the best-scoring subtype of ``category`` (tie-breaker)."""
        sub = self._best_subtype(scores, category)
        return self._rules.subtypes[sub].priority if sub else 0

    def _best_subtype(self, scores: dict[str, float], category: Category) -> str | None:
        """The best positively scored subtype of ``category``, or None."""
        candidates = [
            (value, self._rules.subtypes[sub].priority, sub)
            for sub, value in scores.items()
            if self._rules.subtypes[sub].category is category and value > 0
        ]
        return max(candidates)[2] if candidates else None

    def _agencies(
        self,
        subtype: str | None,
        folded: str,
        words: frozenset[str],
        figures: Iterable[Figure],
        evidence: list[Evidence],
    ) -> tuple[str, ...]:
        """Default agencies of the subtype, plus trigger words and stated figures."""
        codes: set[str] = set(self._rules.subtypes[subtype].agencies) if subtype else set()
        for code, terms in self._triggers:
            if code in codes:
                continue
            found = terms.search(folded, words)
            if found is not None:
                codes.add(code)
                evidence.append(
                    Evidence("agency", found.term, f"adds {code}", found.start, found.end)
                )
        for figure in figures:
            if figure.value <= 0:
                continue
            for code in self._rules.figure_agencies.get(figure.kind, ()):
                if code not in codes:
                    codes.add(code)
                    evidence.append(Evidence("agency", figure.matched, f"adds {code}"))
        return tuple(sorted(codes, key=lambda c: self._agency_order.get(c, 1 << 20)))


def _subtype_scores(hits: Iterable[_Hit]) -> dict[str, float]:
    """Sum of weights per subtype, each distinct term counted once."""
    seen: set[str] = set()
    scores: dict[str, float] = {}
    for hit in hits:
        for entry in hit.entries:
            key = f"{entry.lang}:{entry.term}:{entry.subtype}"
            if key in seen:
                continue
            seen.add(key)
            scores[entry.subtype] = scores.get(entry.subtype, 0.0) + entry.weight
    return scores


def _parse_category(value: str) -> Category | None:
    """A category given in a field, by code or Chinese name; None if absent or unknown."""
    value = value.strip()
    for category in Category:
        if value in (category.value, category.zh):
            return category
    return None
