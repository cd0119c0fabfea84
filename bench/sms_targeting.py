"""Benchmark: resolve broadcast areas over a million synthetic residents.

Run from the repository root:  python bench/sms_targeting.py [residents]
Residents are spread over a Dongguan-sized box (half uniform, half clustered
near three town centres) and indexed with RecipientIndex; resolves the shipped
Guancheng district, a 3 km circle, and a union (two districts, a circle and the
flood-duty group), each through RecipientIndex.resolve (union, de-duplication
and opt-out included).  Prints figures; the last line is
``residents=N resolve_ms=X`` with X the worst of the three (best of 3 runs each).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sms.recipients import Recipient  # noqa: E402
from sms.targeting import (  # noqa: E402
    CircleTarget,
    DistrictCatalogue,
    DistrictTarget,
    GroupTarget,
    RecipientIndex,
    Target,
)

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


def registry(lat: np.ndarray, lon: np.ndarray) -> list[Recipient]:
    """Synthetic registry: one resident per point; 1 in 20 is a flood-duty officer."""
    duty = frozenset({"三防责任人"})
    none: frozenset[str] = frozenset()
    return [Recipient(f"+86138{i:08d}", lat=float(a), lon=float(o),
                      language="en" if i % 50 == 0 else "zh", opt_out=i % 1000 == 0,
                      groups=duty if i % 20 == 0 else none)
            for i, (a, o) in enumerate(zip(lat.tolist(), lon.tolist(), strict=True))]


def best_ms(fn: Callable[[], int]) -> tuple[float, int]:
    """Best wall time of RUNS calls, in ms, and the result size."""
    best = float("inf")
    size = 0
    for _ in range(RUNS):
        t0 = time.perf_counter()
        size = fn()
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best, size


def main() -> None:
    """Build the registry index, resolve the three target sets, print figures."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    lat, lon = residents(count)
    recipients = registry(lat, lon)
    with open(ROOT / "conf" / "sms" / "districts.geojson", encoding="utf-8") as f:
        catalogue = DistrictCatalogue.from_geojson(json.load(f))
    t0 = time.perf_counter()
    index = RecipientIndex(recipients, catalogue)
    build_ms = (time.perf_counter() - t0) * 1000
    print(f"index_build_ms={build_ms:.0f} grid={index.spatial.nx}x{index.spatial.ny}")
    cases: list[tuple[str, list[Target]]] = [
        ("district_guancheng", [DistrictTarget("莞城街道")]),
        ("circle_3km", [CircleTarget(23.025, 113.790, 3000.0)]),
        ("union", [DistrictTarget("Dongcheng"), DistrictTarget("Guancheng"),
                   CircleTarget(22.815, 113.670, 3000.0), GroupTarget("三防责任人")]),
    ]
    worst = 0.0
    for name, targets in cases:
        ms, size = best_ms(lambda t=targets: index.resolve(t).count)  # type: ignore[misc]
        worst = max(worst, ms)
        print(f"{name}: recipients={size} resolve_ms={ms:.1f}")
    print(f"residents={count} resolve_ms={worst:.1f}")


if __name__ == "__main__":
    main()
