"""Anchored legs on one core (issue 4's benchmark): two-party G.711 calls through the mixer.

Runs the same measurement as ``bench/media_mix.py`` (the engine in this process, the phones
in another, real UDP on loopback, RTP both ways, every room recorded) and ends with the line
the issue asks for: ``legs=N loss_pct=X p99_late_ms=Y``, N being the most legs held with no
skipped tick, < 1 % of frames lost and p99 lateness <= 20 ms (0 if no size held).

Run: ``PYTHONPATH=. python bench/media_legs.py [seconds_per_size] [max_calls]``.  The
mixer's added delay (tone in -> tone out) is not measured by this script.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import media_mix  # noqa: E402 - the measurement lives next door


def main() -> None:
    """Measure rising sizes; print each, then the summary line."""
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rows = asyncio.run(media_mix.measure(seconds, limit))
    held = [r for r in rows if media_mix.sustained(r)]
    best = held[-1] if held else rows[-1]
    legs = int(2 * best["calls"]) if held else 0
    print(f"legs={legs} loss_pct={best['loss_pct']} p99_late_ms={best['p99_late_ms']}")


if __name__ == "__main__":
    main()
