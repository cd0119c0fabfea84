#!/usr/bin/env python3
"""Report intake latency: POST /api/v1/reports → stored, assessed, placed → 201.

Starts ``dispatchd run`` (SQLite by default, or ``--database-url``), creates a
user, then posts N reports one after another (a mix of Chinese and English,
near and far, so some open incidents and some join them) and reports the
latency of each answer.  The issue's target: persisted and acknowledged in
< 50 ms.  The answer here comes after the assessment and correlation too.

    python bench/report_latency.py [--reports 500] [--database-url URL]

Last line: ``persist_ack_ms_p50=A persist_ack_ms_p95=B persist_ack_ms_p99=C reports_per_s=D``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemonproc import DaemonProcess  # noqa: E402

TEXTS = [
    "东城街道一栋居民楼起火，三人死亡，十二人受伤",
    "长安镇化工厂储罐泄漏，附近居民闻到刺鼻气味",
    "Two cars collided on the expressway near Humen, one driver trapped",
    "学校食堂多名学生呕吐腹泻，疑似食物中毒",
    "Flash flood in the village, 40 people evacuated",
    "有人在广场持刀伤人，已有两人受伤",
]


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=500)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "d.toml")
        db = f'[database]\nurl = "{args.database_url}"\nauto_migrate = true\n' \
            if args.database_url else ""
        config.write_text(f"[http]\nport = 0\n[ssh]\nenabled = false\n{db}")
        env = {**os.environ}
        subprocess.run([sys.executable, "-m", "dispatch.cli", "user", "add", "bench", "--role",
                        "call_taker", "-c", str(config)], input="bench-password\n", text=True,
                       check=True, cwd=tmp, env=env, capture_output=True)
        proc = DaemonProcess(Path(tmp), config)
        try:
            proc.wait_ready()
            with httpx.Client(base_url=proc.url, timeout=10) as client:
                token = client.post("/api/v1/auth/login", json={
                    "username": "bench", "password": "bench-password"}).json()["token"]
                client.headers["Authorization"] = f"Bearer {token}"
                latencies = []
                started = time.perf_counter()
                for _ in range(args.reports):
                    body = {"text": rng.choice(TEXTS), "lat": 22.9 + rng.random() * 0.2,
                            "lon": 113.6 + rng.random() * 0.3}
                    t0 = time.perf_counter()
                    r = client.post("/api/v1/reports", json=body)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 201, r.text
                elapsed = time.perf_counter() - started
        finally:
            proc.stop()
            proc.kill()
    q = statistics.quantiles(latencies, n=100)
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"reports={args.reports} backend={backend}")
    print(f"persist_ack_ms_p50={q[49]:.1f} persist_ack_ms_p95={q[94]:.1f} "
          f"persist_ack_ms_p99={q[98]:.1f} reports_per_s={args.reports / elapsed:.0f}")


if __name__ == "__main__":
    main()
