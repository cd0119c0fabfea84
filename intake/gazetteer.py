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

from intake.config import Place
from intake.model import Location, Report
from intake.textmatch import fold

_SPECIFICITY = {"landmark": 4, "street": 3, "town": 2, "district": 1}


class Gazetteer:
    """Name lookup over a set of places."""

    def __init__(self, places: Iterable[Place]) -> None:
        """Index every name and alias of every place."""
        self._by_name: dict[str, Place] = {}
        for place in places:
            for name in (place.name_zh, place.name_en, *place.aliases):
                if name.strip():
                    self._by_name.setdefault(fold(name.strip()), place)
        parts = []
        for name in sorted(self._by_name, key=lambda n: (-len(n), n)):
            if re.search(r"[a-z]", name):
                parts.append(rf"(?<![a-z]){re.escape(name)}(?![a-z])")
            else:
                parts.append(re.escape(name))
        self._re = re.compile("|".join(parts) if parts else "(?!)")

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
