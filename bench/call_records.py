#!/usr/bin/env python3
"""CPU time the database side costs per call: CDRs, audit rows, voice reports, incidents.

Feeds :class:`~dispatch.call_records.CallRecorder` the events of ``--calls`` answered
emergency calls (offered, answered, released, finished), as the B2BUA and the ACD emit
them, ``--burst`` calls at a time, on SQLite (a temporary file) or ``--url``; waits until
every row is written and every voice report filed, then prints the process CPU time
(this thread and the SQLite driver's) per call.  No SIP: the figure is what the hot write
paths cost on their own.

    python bench/call_records.py [--calls 3000] [--burst 50] [--url postgresql://...]
                                 [--prefill 20000]

On a PostgreSQL server of this machine it also prints the server's CPU per call (its
backends for this engine).  Last line:
``records_cpu_ms_per_call=X [pg_cpu_ms_per_call=Y] calls=N reports=R wall_s=W``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from dispatch.audit import AuditTrail  # noqa: E402
from dispatch.call_records import CallRecorder  # noqa: E402
from dispatch.reports import ReportService  # noqa: E402
from dispatch.storage import Database  # noqa: E402
from telephony.acd.events import (  # noqa: E402
    CallFinished,
    CallOutcome,
    CallRecord,
    TimelineEntry,
    TimelineKind,
)
from telephony.b2bua.events import CallAnswered, CallOffered, CallReleased  # noqa: E402


def events(i: int, at: float, prefix: str = "call") -> list[object]:
    """One answered hotline call's events, in the order the daemon emits them."""
    call, agent = f"{prefix}-{i}", f"a{i % 200}"
    record = CallRecord(call, f"1380013{i:04d}", "110", 1, at, CallOutcome.ANSWERED, "police",
                        agent, at + 2, at + 30, "caller_hangup",
                        (TimelineEntry(at, TimelineKind.QUEUED, "police"),
                         TimelineEntry(at + 2, TimelineKind.ANSWERED, "police", agent)))
    return [CallOffered(call, f"sip-{i}", f"1380013{i:04d}", "110", "110", "police", 1,
                        "carrier", "hotline", at),
            CallAnswered(call, agent, "police", 2.0, at + 2),
            CallReleased(call, "caller_hangup", "caller", at + 30),
            CallFinished(record)]


async def server_cpu_s(db: Database) -> float | None:
    """CPU seconds of this database's PostgreSQL backends (the engine's pooled connections,
    opened for the measured calls), when the server runs on this machine; else None."""
    if db.dialect != "postgresql":
        return None
    async with db.engine.connect() as conn:
        pids = (await conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))).scalars()
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def run(url: str, calls: int, burst: int, prefill: int = 0) -> None:
    """Write ``calls`` calls' records and print the CPU they cost (after ``prefill`` calls
    that are not counted, and statistics gathered, as a database in service has them)."""
    db = Database(url)
    await db.upgrade()
    now = [time.time()]
    audit = AuditTrail(lambda e: None, lambda: now[0])
    reports = ReportService(db, audit, lambda e: None, lambda: now[0])
    await reports.start()
    recorder = CallRecorder(db, audit, reports, lambda: now[0])
    await recorder.start()
    for start in range(0, prefill, burst):
        for i in range(start, min(prefill, start + burst)):
            for event in events(i, now[0], "pre"):
                recorder.enqueue(event)
        await recorder.queue.join()
    if prefill:
        async with db.engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
            await conn.commit()
        await db.engine.dispose()  # plans made on empty tables are not kept
    cpu, wall = time.process_time(), time.monotonic()
    for start in range(0, calls, burst):
        for i in range(start, min(calls, start + burst)):
            for event in events(i, now[0]):
                recorder.enqueue(event)
        await recorder.queue.join()
        now[0] += 1.0
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    server = await server_cpu_s(db)
    await recorder.stop()
    async with db.engine.connect() as conn:
        filed = (await conn.execute(text(
            "SELECT count(*) FROM call_records WHERE report_id IS NOT NULL "
            "AND id LIKE 'call-%'"))).scalar()
    await db.close()
    pg = "" if server is None else f"pg_cpu_ms_per_call={1000 * server / calls:.3f} "
    print(f"records_cpu_ms_per_call={1000 * cpu / calls:.3f} {pg}calls={calls} "
          f"reports={filed} wall_s={wall:.1f}", flush=True)


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--burst", type=int, default=50, help="calls queued at a time")
    parser.add_argument("--url", default="", help="database URL (default: a temporary SQLite)")
    parser.add_argument("--prefill", type=int, default=0,
                        help="calls written first, not counted (a database in service)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{tmp}/bench.db"
        asyncio.run(run(url, args.calls, args.burst, args.prefill))


if __name__ == "__main__":
    main()
