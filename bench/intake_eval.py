"""Evaluate intake's classifier and grader on a labelled JSON-lines file.

Usage: python bench/intake_eval.py --data tests/data/intake/test.jsonl [--rules conf/intake]

Each line: {"text", "lang", "category", optional "grade"}.  Prints accuracy per category and
per language, the confusion matrix, macro-F1 per language and overall, grading agreement on
rows with a gold grade, and throughput (figures + classification + grade) on one core.
Last line: accuracy=X macro_f1=Y reports_per_s=Z
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intake.model import Category  # noqa: E402
from intake.pipeline import Intake  # noqa: E402

CATS = [c.value for c in Category]


def macro_f1(pairs: list[tuple[str, str]]) -> float:
    """Macro-averaged F1 over the four categories (absent predictions count as wrong)."""
    scores = []
    for cat in CATS:
        tp = sum(1 for g, p in pairs if g == cat and p == cat)
        fp = sum(1 for g, p in pairs if g != cat and p == cat)
        fn = sum(1 for g, p in pairs if g == cat and p != cat)
        if tp + fp + fn == 0:
            continue
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def main() -> int:
    """Run the evaluation and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--rules", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=20, help="passes for the throughput figure")
    parser.add_argument("--show-errors", action="store_true")
    args = parser.parse_args()
    intake = Intake.from_dir(args.rules)
    rows = [
        json.loads(line)
        for line in args.data.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    results = []
    for row in rows:
        _, cls, grade = intake.assess_text(row["text"], (), row.get("lang"))
        predicted = cls.category.value if cls.category else "none"
        results.append((row, predicted, grade.grade.name))
        if args.show_errors and predicted != row["category"]:
            print(f"  MISS {row['id']}: gold={row['category']} got={predicted} {row['text'][:70]}")
        if args.show_errors and "grade" in row and row["grade"] != grade.grade.name:
            print(
                f"  GRADE {row['id']}: gold={row['grade']} got={grade.grade.name} "
                f"{row['text'][:70]}"
            )
    pairs = [(r["category"], p) for r, p, _ in results]
    print(f"rows: {len(rows)}")
    for lang in sorted({r.get("lang", "?") for r in rows}):
        sub = [(r["category"], p) for r, p, _ in results if r.get("lang", "?") == lang]
        acc = sum(g == p for g, p in sub) / len(sub)
        print(f"lang={lang}: n={len(sub)} accuracy={acc:.3f} macro_f1={macro_f1(sub):.3f}")
        for cat in CATS:
            cat_rows = [(g, p) for g, p in sub if g == cat]
            if cat_rows:
                print(
                    f"  {cat:17s} n={len(cat_rows):3d} "
                    f"accuracy={sum(g == p for g, p in cat_rows) / len(cat_rows):.3f}"
                )
    print("confusion matrix (rows gold, columns predicted):")
    cols = [*CATS, "none"]
    counts = Counter(pairs)
    print(" " * 18 + " ".join(f"{c[:8]:>8s}" for c in cols))
    for gold in CATS:
        print(f"{gold:17s} " + " ".join(f"{counts[(gold, c)]:8d}" for c in cols))
    graded = [(r["grade"], g) for r, _, g in results if "grade" in r]
    if graded:
        agree = sum(a == b for a, b in graded) / len(graded)
        print(f"grading agreement on {len(graded)} rows stating figures: {agree:.3f}")
    start = time.perf_counter()
    for _ in range(args.repeat):
        for row in rows:
            intake.assess_text(row["text"], (), row.get("lang"))
    rate = args.repeat * len(rows) / (time.perf_counter() - start)
    accuracy = sum(g == p for g, p in pairs) / len(pairs)
    print(f"accuracy={accuracy:.3f} macro_f1={macro_f1(pairs):.3f} reports_per_s={rate:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
