"""An evacuation broadcast end to end: CampaignService + SmsService (SMPP binds) → SMSC simulator.

Every recipient row is stored (SQLite in a temporary directory, or ``--db URL``),
claimed, submitted through the daemon's own SMS service (an SmppPool of
``--binds`` binds) to the smpp.twisted3 simulator, and its outcome committed,
exactly as in the daemon.  Phase "open": no throttling; phase "smsc-200": the
simulator answers ESME_RTHROTTLED above 200 submit_sm/s.  One line per phase;
the last line is the open phase:
``recipients=N submit_per_s=X all_submitted_s=Y rss_mb=Z``.

    /work/venv/bin/python bench/sms_broadcast.py [--n 45000] [--throttled-n 45000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dispatch.audit import AuditTrail  # noqa: E402
from dispatch.campaigns import CampaignService, CampaignStateChanged, RecipientIn  # noqa: E402
from dispatch.config import parse_settings  # noqa: E402
from dispatch.sms_service import SmsService  # noqa: E402
from dispatch.storage import Database  # noqa: E402

TEXT = "【应急】东城区洪水预警：请立即撤离到高地，避开河道。编号{i}"
SYSTEM_ID, PASSWORD = "bench", "bench"


def rss_mb() -> float:
    """Peak resident set size of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Simulator:
    """scripts/smsc-sim as a subprocess, driven over its stdin/stdout."""

    async def start(self, *flags: str) -> int:
        """Start it; return its port."""
        self.proc = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "smsc-sim"), "--system-id", SYSTEM_ID, "--password",
            PASSWORD, *flags, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1 << 20)
        first = await self.event()
        return int(first["port"])

    async def event(self) -> dict[str, Any]:
        """The next JSON line."""
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the SMSC simulator exited (scripts/smsc-sim --setup?)")
        result: dict[str, Any] = json.loads(line)
        return result

    async def stats(self) -> dict[str, Any]:
        """Its counters."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        while (event := await self.event()).get("event") != "stats":
            pass
        return event

    async def close(self) -> None:
        """Stop it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


async def phase(name: str, n: int, binds: int, window: int, db_url: str,
                throttle: int) -> dict[str, float]:
    """One broadcast of ``n`` recipients; return the figures."""
    sim = Simulator()
    port = await sim.start("--throttle", str(throttle), "--max-binds", str(binds))
    settings = parse_settings({"sms": {"sender_id": "12110", "smpp": [{
        "name": "sim", "host": "127.0.0.1", "port": port, "system_id": SYSTEM_ID,
        "password_env": "BENCH_SMSC_PASSWORD", "binds": binds, "window": window}]}}, "bench")
    db = Database(db_url)
    await db.upgrade()
    done = asyncio.Event()

    def publish(event: object) -> None:
        if isinstance(event, CampaignStateChanged) and event.status == "completed":
            done.set()

    async def no_receipts(ids: list[str], state: str) -> bool:
        return False

    async def no_messages(sms: object) -> None:
        return None

    sms = SmsService(settings.sms, on_receipt=no_receipts, on_message=no_messages,
                     environ={"BENCH_SMSC_PASSWORD": PASSWORD})
    concurrency = binds * window
    campaigns = CampaignService(db, AuditTrail(publish, time.time), publish, time.time,
                                "bench", sms, batch=max(200, 2 * concurrency),
                                concurrency=concurrency, max_attempts=1000)
    await sms.start()
    await sms.transports["sim"].pool.wait_bound(20, all_binds=True)  # type: ignore[attr-defined]
    await campaigns.start()
    t0 = time.perf_counter()
    people = (RecipientIn(f"+86139{i:08d}", "zh", TEXT.format(i=i)) for i in range(n))
    cid = await campaigns.create(f"bench {name}", people, actor="bench", public=False)
    created = time.perf_counter()
    await done.wait()
    finished = time.perf_counter()
    stats = await sim.stats()
    counts = await campaigns.counts(cid)
    await campaigns.stop()
    await sms.stop()
    await sim.close()
    await db.close()
    figures = {"recipients": n, "create_s": round(created - t0, 2),
               "all_submitted_s": round(finished - t0, 2),
               "submit_per_s": round(n / (finished - created), 1),
               "accepted": stats.get("accepted", 0), "throttled": stats.get("throttled", 0),
               "duplicates": stats.get("duplicates", 0),
               "submitted_rows": counts.get("submitted", 0), "rss_mb": round(rss_mb(), 1)}
    print(f"phase={name} " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    return figures


async def main() -> None:
    """Both phases; the open one's figures last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=45_000)
    parser.add_argument("--throttled-n", type=int, default=45_000,
                        help="recipients of the 200/s phase (0 skips it)")
    parser.add_argument("--binds", type=int, default=4)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryDirectory() as tmp:
        throttled = None
        if args.throttled_n:
            url = args.db or f"sqlite:///{tmp}/throttled.db"
            throttled = await phase("smsc-200", args.throttled_n, args.binds, args.window,
                                    url, 200)
        url = args.db or f"sqlite:///{tmp}/open.db"
        opened = await phase("open", args.n, args.binds, args.window, url, 0)
    if throttled is not None:
        print(f"throttled: recipients={throttled['recipients']} "
              f"submit_per_s={throttled['submit_per_s']} "
              f"all_submitted_s={throttled['all_submitted_s']}")
    print(f"recipients={opened['recipients']} submit_per_s={opened['submit_per_s']} "
          f"all_submitted_s={opened['all_submitted_s']} rss_mb={opened['rss_mb']}")


if __name__ == "__main__":
    asyncio.run(main())
