"""Resolving address text to coordinates with the jurisdiction's gazetteer.

Channels that give coordinates (GPS in an app, a sensor's registered position, AML from a
handset) win; otherwise the address (or, failing that, the report text) is searched for
gazetteer names in Chinese or English.  When several places are named, the most specific
kind wins (landmark > street > town > district), then the longest name.  Nothing found:
the location is "unresolved" and the call taker places it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from intake.config import Place
from intake.model import Location, Report
from intake.textmatch import fold

_SPECIFICITY = {"landmark": 4, "street": 3, "town": 2, "district": 1}


def trie_pattern(names: Iterable[str]) -> str:
    """One regular expression matching any of ``names``, the longest first at a position.

    A plain alternation of two hundred names makes the regex engine try every
    name at every character of a report; a trie shares their prefixes, so it
    tries one branch per character.  Names with Latin letters match only as
    whole words (not inside a longer word), as :func:`alternation` writes them.
    """
    trie: dict[str, Any] = {}
    for name in names:
        node = trie
        for ch in name:
            node = node.setdefault(ch, {})
        node[""] = name  # the end of a name: the key no character can be

    def branch(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + branch(child) for ch, child in sorted(node.items()) if ch]
        if "" in node:  # children first: a longer name wins over its own prefix
            name = node[""]
            alts.append(rf"(?<![a-z][\s\S]{{{len(name)}}})(?![a-z])"
                        if re.search("[a-z]", name) else "")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return branch(trie)


def alternation(names: Iterable[str]) -> str:
    """The same language as :func:`trie_pattern`, as a plain alternation (for tests)."""
    parts = []
    for name in sorted(names, key=lambda n: (-len(n), n)):
        if re.search(r"[a-z]", name):
            parts.append(rf"(?<![a-z]){re.escape(name)}(?![a-z])")
        else:
            parts.append(re.escape(name))
    return "|".join(parts) if parts else "(?!)"


class Gazetteer:
    """Name lookup over a set of places."""

    def __init__(self, places: Iterable[Place]) -> None:
        """Index every name and alias of every place."""
        self._by_name: dict[str, Place] = {}
        for place in places:
            for name in (place.name_zh, place.name_en, *place.aliases):
                if name.strip():
                    self._by_name.setdefault(fold(name.strip()), place)
        self._re = re.compile(trie_pattern(self._by_name) if self._by_name else "(?!)")

    def resolve(self, text: str) -> Location:
        """The best place named in ``text``, or an unresolved location."""
        folded = fold(text)
        best: tuple[int, int, Place, str] | None = None
        for match in self._re.finditer(folded):
            place = self._by_name[match.group(0)]
            key = (_SPECIFICITY[place.kind], len(match.group(0)))
            if best is None or key > best[:2]:
                best = (*key, place, match.group(0))
        if best is None:
            return Location(None, None, "unresolved", text=text)
        place = best[2]
        return Location(
            place.lat, place.lon, "gazetteer", text=text, matched=best[3], place_id=place.place_id
        )

    def locate(self, report: Report) -> Location:
        """A report's location: channel coordinates, else its address, else its text."""
        if report.lat is not None and report.lon is not None:
            return Location(report.lat, report.lon, "channel", text=report.address)
        if report.address:
            found = self.resolve(report.address)
            if found.resolved:
                return found
        found = self.resolve(report.text)
        if found.resolved:
            return found
        return Location(None, None, "unresolved", text=report.address or report.text)
