"""Compiling operator-written word lists into one search pattern."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable


def fold(text: str) -> str:
    """NFKC and case folding, so full-width letters and capitals match the word lists."""
    return unicodedata.normalize("NFKC", text).casefold()


def compile_terms(terms: Iterable[str]) -> re.Pattern[str]:
    """One pattern matching any term: Chinese anywhere, Latin words only as whole words.

    Longer terms come first so the reported evidence is the most specific one.  The pattern
    is applied to text passed through :func:`fold`.
    """
    parts = []
    for term in sorted({fold(t) for t in terms if t.strip()}, key=lambda t: (-len(t), t)):
        if re.search(r"[a-z0-9]", term):
            parts.append(rf"(?<![a-z0-9]){re.escape(term)}(?![a-z0-9])")
        else:
            parts.append(re.escape(term))
    return re.compile("|".join(parts) if parts else "(?!)")
