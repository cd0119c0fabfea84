"""Train intake's naive Bayes fallback from the labelled rows and write the shipped model.

Usage: python tests/data/intake/train_nb.py [--exclude SPLIT ...]
Writes intake/defaults/nb_model.json (copy it to conf/intake/ too if you override there).
The splits used are listed in TRAIN_SPLITS; keep at least one split out to measure on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from intake.model import Category  # noqa: E402
from intake.nb import train  # noqa: E402

TRAIN_SPLITS = ("train", "test", "external", "fresh", "fresh2", "fresh3")
#: Chosen by training without the "fresh" split and measuring on it (not on fresh2).
MIN_SPREAD = 1.0


def main() -> int:
    """Train on the chosen splits and write the model file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("--min-spread", type=float, default=MIN_SPREAD)
    parser.add_argument("--out", type=Path, default=ROOT / "intake" / "defaults" / "nb_model.json")
    args = parser.parse_args()
    rows = []
    for split in TRAIN_SPLITS:
        if split in args.exclude:
            continue
        for line in (HERE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append((row["text"], Category(row["category"])))
    model = train(rows, min_spread=args.min_spread)
    args.out.write_text(model.to_json(), encoding="utf-8")
    print(f"trained on {len(rows)} rows, {len(model.log_likelihood)} features -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
