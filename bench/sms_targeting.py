"""Benchmark: resolve broadcast areas over a million synthetic residents.

Run from the repository root:  python bench/sms_targeting.py [residents]
Residents are spread over a Dongguan-sized box (denser near three town
centres); resolves the shipped Guancheng district polygon, a 3 km circle and
the union of both with a second district.  Prints figures; the last line is
``residents=N resolve_ms=X`` with X the worst of the three (best of 3 runs each).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sms.targeting import DistrictCatalogue, SpatialIndex  # noqa: E402

BOX = (113.50, 22.60, 114.20, 23.15)  # min_lon, min_lat, max_lon, max_lat
CENTRES = ((113.752, 23.040), (113.790, 23.025), (113.670, 22.815))
RUNS = 3


def residents(count: int, seed: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Half uniform over the box, half clustered around town centres."""
    rng = np.random.default_rng(seed)
    half = count // 2
    lon = rng.uniform(BOX[0], BOX[2], count)
    lat = rng.uniform(BOX[1], BOX[3], count)
    which = rng.integers(0, len(CENTRES), count - half)
    centres = np.array(CENTRES)[which]
    lon[half:] = np.clip(centres[:, 0] + rng.normal(0, 0.03, count - half), BOX[0], BOX[2])
    lat[half:] = np.clip(centres[:, 1] + rng.normal(0, 0.03, count - half), BOX[1], BOX[3])
    return lat, lon


def best_ms(fn: object) -> tuple[float, int]:
    """Best wall time of RUNS calls, in ms, and the result size."""
    best = float("inf")
    size = 0
    for _ in range(RUNS):
        t0 = time.perf_counter()
        size = len(fn())  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best, size


def main() -> None:
    """Build the index, run the three queries, print figures."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    lat, lon = residents(count)
    t0 = time.perf_counter()
    index = SpatialIndex(lat, lon)
    build_ms = (time.perf_counter() - t0) * 1000
    print(f"build_ms={build_ms:.1f} grid={index.nx}x{index.ny}")
    with open(ROOT / "conf" / "sms" / "districts.geojson", encoding="utf-8") as f:
        catalogue = DistrictCatalogue.from_geojson(json.load(f))
    guancheng = catalogue.get("莞城街道").area
    dongcheng = catalogue.get("Dongcheng").area

    def union() -> np.ndarray:
        parts = [index.in_area(guancheng), index.in_area(dongcheng),
                 index.in_circle(22.815, 113.670, 3000.0)]
        return np.unique(np.concatenate(parts))

    worst = 0.0
    for name, fn in (("district", lambda: index.in_area(guancheng)),
                     ("circle_3km", lambda: index.in_circle(23.025, 113.790, 3000.0)),
                     ("union", union)):
        ms, size = best_ms(fn)
        worst = max(worst, ms)
        print(f"{name}: matched={size} ms={ms:.1f}")
    print(f"residents={count} resolve_ms={worst:.1f}")


if __name__ == "__main__":
    main()
