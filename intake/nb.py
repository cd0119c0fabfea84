"""A small multinomial naive Bayes model over character and word n-grams, as a fallback.

The lexicon decides when it finds words; callers' colloquial reports often contain none of
them ("水快到桥面了", "we felt a jolt").  This model, trained on the labelled rows in
``tests/data/intake/`` and shipped as ``intake/defaults/nb_model.json``, adds a bounded
number of points to each category's score so that such reports still get a category, and
breaks near-ties.  It is plain JSON (no pickle) and loads offline.

Features: Chinese character unigrams and bigrams; English lower-cased words with a crude
suffix strip, and word bigrams.  Log-scores are divided by a temperature that grows with
the number of known features, because naive Bayes posteriors on a few hundred training rows
are absurdly confident otherwise.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from intake.model import Category
from intake.textmatch import fold

#: Largest model file accepted (bytes of JSON).
MAX_MODEL_CHARS = 8 * 1024 * 1024

_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_WORD = re.compile(r"[a-z]+")
_STOP_WORDS = (
    "a an the and or of to in on at for from by with is are was were be been has have had it "
    "its this that there their they we our my me i he she his her them you your as after "
    "into over up out some all about"
)
_STOP = frozenset(_STOP_WORDS.split(" "))


def _stem(word: str) -> str:
    """A crude English suffix strip, enough to fold plural and tense variants together."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def features(text: str) -> list[str]:
    """The n-gram features of a text."""
    folded = fold(text)
    found: list[str] = []
    for run in _CJK_RUN.findall(folded):
        found.extend(run)
        found.extend(run[i : i + 2] for i in range(len(run) - 1))
    words = [_stem(w) for w in _WORD.findall(folded) if w not in _STOP and len(w) > 1]
    found.extend(f"w:{w}" for w in words)
    found.extend(f"b:{a}_{b}" for a, b in zip(words, words[1:], strict=False))
    return found


class ModelError(ValueError):
    """The model file is not a valid naive Bayes model."""


@dataclass(frozen=True)
class NaiveBayes:
    """Log priors, per-feature log likelihoods and the per-class unseen-feature default."""

    classes: tuple[Category, ...]
    log_prior: tuple[float, ...]
    log_default: tuple[float, ...]
    log_likelihood: dict[str, tuple[float, ...]]

    def posterior(self, text: str) -> tuple[dict[Category, float], int]:
        """Tempered posterior per category and the number of known features used."""
        totals = list(self.log_prior)
        known = 0
        for feature in features(text):
            row = self.log_likelihood.get(feature)
            if row is None:
                continue
            known += 1
            for i, value in enumerate(row):
                totals[i] += value
        if known == 0:
            return {c: 1.0 / len(self.classes) for c in self.classes}, 0
        temperature = max(1.0, known / 4.0)
        top = max(totals)
        weights = [math.exp((t - top) / temperature) for t in totals]
        norm = sum(weights)
        return {c: w / norm for c, w in zip(self.classes, weights, strict=True)}, known

    def to_json(self) -> str:
        """Serialise (rounded to keep the shipped file small)."""
        return json.dumps(
            {
                "format": "intake-nb-1",
                "classes": [c.value for c in self.classes],
                "log_prior": [round(v, 4) for v in self.log_prior],
                "log_default": [round(v, 4) for v in self.log_default],
                "log_likelihood": {
                    f: [round(v, 3) for v in row] for f, row in sorted(self.log_likelihood.items())
                },
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> NaiveBayes:
        """Load a model, checking its shape; raise ModelError."""
        if len(text) > MAX_MODEL_CHARS:
            raise ModelError("model file too large")
        try:
            data = json.loads(text)
            if data.get("format") != "intake-nb-1":
                raise ModelError("unknown model format")
            classes = tuple(Category(c) for c in data["classes"])
            prior = tuple(float(v) for v in data["log_prior"])
            default = tuple(float(v) for v in data["log_default"])
            table = {
                str(f): tuple(float(v) for v in row) for f, row in data["log_likelihood"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"invalid model: {exc}") from exc
        if not (len(classes) == len(prior) == len(default)) or any(
            len(row) != len(classes) for row in table.values()
        ):
            raise ModelError("inconsistent model dimensions")
        return cls(classes, prior, default, table)


def train(
    rows: Iterable[tuple[str, Category]],
    alpha: float = 0.5,
    min_count: int = 1,
    min_spread: float = 0.0,
) -> NaiveBayes:
    """Fit a multinomial naive Bayes model on (text, category) rows.

    Features whose log-likelihoods differ by less than ``min_spread`` between the most and
    least likely class are dropped: common characters (一, 了, 下) say nothing about the
    category but would let the model "recognise" any text at all.
    """
    classes = tuple(Category)
    doc_counts: Counter[Category] = Counter()
    feature_counts: dict[Category, Counter[str]] = {c: Counter() for c in classes}
    for text, category in rows:
        doc_counts[category] += 1
        feature_counts[category].update(features(text))
    vocabulary = Counter[str]()
    for counter in feature_counts.values():
        vocabulary.update(counter)
    kept = sorted(f for f, n in vocabulary.items() if n >= min_count)
    total_docs = sum(doc_counts.values())
    prior = tuple(math.log((doc_counts[c] + 1) / (total_docs + len(classes))) for c in classes)
    denominators = [sum(feature_counts[c].values()) + alpha * len(kept) for c in classes]
    default = tuple(math.log(alpha / d) for d in denominators)
    table = {
        f: tuple(
            math.log((feature_counts[c][f] + alpha) / denominators[i])
            for i, c in enumerate(classes)
        )
        for f in kept
    }
    if min_spread > 0:
        table = {f: row for f, row in table.items() if max(row) - min(row) >= min_spread}
    return NaiveBayes(classes, prior, default, table)
