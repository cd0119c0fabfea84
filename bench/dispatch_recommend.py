#!/usr/bin/env python3
"""How long recommending and assigning units takes with many units (SQLite, one process).

Seeds N units of 4 types scattered over ~50 km, opens incidents, and measures
``UnitService.recommend`` (3 fire engines + 2 ambulances) and ``assign`` of the picks, then
sets them available again.  Also the escalation round ``NotificationService.run_once`` with
no mail transport and M notifications due.

    python bench/dispatch_recommend.py [--units 5000] [--rounds 50] [--notifications 500]

Last line: ``units=N recommend_ms_p50=.. recommend_ms_p95=.. assign_ms_p50=.. round_ms=..``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatch.audit import AuditTrail  # noqa: E402
from dispatch.auth import Principal, Role  # noqa: E402
from dispatch.dispatchconf import OfficialSpec, UnitNeed, UnitSpec  # noqa: E402
from dispatch.incidents import IncidentService  # noqa: E402
from dispatch.models import IncidentRow  # noqa: E402
from dispatch.notify import AckSigner, NotificationService  # noqa: E402
from dispatch.roster import RosterService  # noqa: E402
from dispatch.storage import Database  # noqa: E402
from dispatch.units import UnitService, UnitStatus  # noqa: E402

TYPES = ("fire_engine", "ambulance", "police_car", "rescue_team")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1)]


async def run(args: argparse.Namespace, tmp: str) -> str:
    """Measure and return the figures line."""
    rng = random.Random(7)
    db = Database(f"sqlite:///{tmp}/bench.db")
    await db.upgrade()
    clock = time.time
    audit = AuditTrail(lambda e: None, clock)
    incidents = IncidentService(db, audit, lambda e: None, clock)
    units = UnitService(db, audit, lambda e: None, clock, incidents, road_factor=1.3)
    specs = [UnitSpec(id=f"U{i}", name=f"unit {i}", agency="119", type=TYPES[i % 4],
                      lat=23.0 + rng.uniform(-0.25, 0.25), lon=113.75 + rng.uniform(-0.25, 0.25))
             for i in range(args.units)]
    await units.seed(specs, ())
    now = dt.datetime.now(dt.UTC)
    async with db.session() as s:
        for i in range(args.rounds):
            s.add(IncidentRow(id=f"inc{i}", status="new", category="accident",
                              subtype="building_fire", agencies=["119"], grade=3,
                              grade_reasons=[], lat=23.0 + rng.uniform(-0.2, 0.2),
                              lon=113.75 + rng.uniform(-0.2, 0.2), needs_location=False,
                              opened_at=now, last_report_at=now, report_count=1,
                              updated_at=now))
    needs = [UnitNeed(type="fire_engine", count=3), UnitNeed(type="ambulance", count=2)]
    who = Principal(1, "bench", Role.DISPATCHER)
    rec, asg = [], []
    for i in range(args.rounds):
        t = time.perf_counter()
        picks = await units.recommend(f"inc{i}", needs)
        rec.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await units.assign(f"inc{i}", [c.unit_id for c in picks], who)
        asg.append((time.perf_counter() - t) * 1000)
        for c in picks:
            await units.set_status(c.unit_id, UnitStatus.AVAILABLE, "bench")
    roster = RosterService(db, audit, lambda e: None, clock,
                           [OfficialSpec(agency="119", rank=r, person=f"p{r}") for r in (1, 2)])
    await roster.start()
    notes = NotificationService(db, audit, lambda e: None, clock, roster, AckSigner(b"b" * 32))
    official = (await roster.on_duty("119"))[0]
    for _ in range(args.notifications):
        await notes.notify_official(official, incident_id=None, plan_id=None, subject="s",
                                    text="t", actor="bench")
    t = time.perf_counter()
    await notes.run_once()
    round_ms = (time.perf_counter() - t) * 1000
    await db.close()
    print(f"recommend over {args.units} units: p50 {statistics.median(rec):.1f} ms, "
          f"p95 {pct(rec, 95):.1f} ms; assign 5 units p50 {statistics.median(asg):.1f} ms; "
          f"delivery round of {args.notifications} notifications {round_ms:.0f} ms")
    return (f"units={args.units} recommend_ms_p50={statistics.median(rec):.1f} "
            f"recommend_ms_p95={pct(rec, 95):.1f} assign_ms_p50={statistics.median(asg):.1f} "
            f"round_ms={round_ms:.0f}")


def main() -> None:
    """Parse arguments, measure, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--notifications", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(asyncio.run(run(args, tmp)))


if __name__ == "__main__":
    main()
