"""Rebuild train.jsonl and test.jsonl from the hand-written TSV sources in src/.

TSV columns: category letter (N/A/H/S), expected grade (I-IV, or - when the text states no
figure), text, and for the external split the URL of the public page paraphrased.
Run from anywhere: python tests/data/intake/build_corpus.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CATEGORIES = {
    "N": "natural_disaster",
    "A": "accident",
    "H": "public_health",
    "S": "social_security",
}
SOURCE = "own example written by the intake helper, 2026-11-21 (see SOURCES.md)"
LICENCE = "Apache-2.0 (project)"


def build(split: str) -> int:
    """Write <split>.jsonl from src/<split>_zh.tsv and src/<split>_en.tsv; returns rows."""
    rows = []
    for lang in ("zh", "en"):
        path = HERE / "src" / f"{split}_{lang}.tsv"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            letter, grade, text, *url = line.split("\t")
            source, licence = SOURCE, LICENCE
            if url:
                source = f"paraphrase (facts only, own wording) of {url[0]}"
                licence = "own wording Apache-2.0; facts from the cited page"
            row = {
                "id": f"{split}-{lang}-{number:03d}",
                "lang": lang,
                "text": text,
                "category": CATEGORIES[letter],
                "source": source,
                "licence": licence,
            }
            if grade != "-":
                row["grade"] = grade
            rows.append(row)
    with open(HERE / f"{split}.jsonl", "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


if __name__ == "__main__":
    for name in ("train", "test", "external", "fresh", "fresh2", "fresh3", "fresh4"):
        build(name)
