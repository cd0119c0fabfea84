"""The gazetteer's trie pattern finds exactly what the plain alternation of names finds.

The trie is a speed-up (one branch per character instead of every name at every
character); a Hypothesis property holds it to the alternation's matches, positions
and whole-word rule for Latin names, on made-up names and on the shipped gazetteer.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from intake.gazetteer import alternation, trie_pattern
from intake.pipeline import Intake

ALPHABET = "ab路东 -1\n"
names = st.lists(st.text(ALPHABET, min_size=1, max_size=6).filter(str.strip),
                 min_size=1, max_size=12, unique=True)


def matches(pattern: str, text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group(0)) for m in re.finditer(pattern, text)]


@settings(max_examples=400, deadline=None)
@given(names, st.lists(st.integers(0, 30), max_size=10), st.text(ALPHABET, max_size=12))
def test_trie_and_alternation_agree(words: list[str], picks: list[int], noise: str) -> None:
    text = noise.join(words[i % len(words)] for i in picks) + noise
    assert matches(trie_pattern(words), text) == matches(alternation(words), text)


def test_the_longest_name_wins_and_latin_names_are_whole_words() -> None:
    pattern = trie_pattern(["east", "east lake", "东城", "东城街道"])
    assert matches(pattern, "东城街道 near east lake, not eastlake") == [
        (0, "东城街道"), (10, "east lake")]
    assert matches(pattern, "northeast") == []


def test_the_shipped_gazetteer_matches_as_before() -> None:
    gazetteer = Intake.from_dir(None, {}).gazetteer
    names = list(gazetteer._by_name)
    text = " / ".join(names) + " dongguanx xdongguan 东城街道东城"
    assert matches(gazetteer._re.pattern, text) == matches(alternation(names), text)
    assert gazetteer.resolve("Fire near Dongcheng Subdistrict").source == "gazetteer"
