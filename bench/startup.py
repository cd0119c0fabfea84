#!/usr/bin/env python3
"""How fast ``dispatchd run`` is ready, and how fast SIGTERM stops it.

Starts the daemon N times in a fresh directory (first run creates and migrates
the SQLite database; later runs reuse it), measures process start -> the
``http listening`` log line -> ``/health`` 200, then SIGTERM -> exit.  The
issue's targets: ready in < 3 s, exit 0 within 5 s.

    python bench/startup.py [--runs 5]

Last line: ``ready_ms_p50=N ready_ms_max=M stop_ms_max=S exit_codes=...``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from daemonproc import DaemonProcess  # noqa: E402


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ready, stops, codes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "d.toml")
        config.write_text("[http]\nport = 0\n")
        for i in range(args.runs):
            started = time.monotonic()
            proc = DaemonProcess(Path(tmp), config)
            try:
                port = proc.wait_ready()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    assert r.status == 200
                ready.append((time.monotonic() - started) * 1000)
                code, took = proc.stop()
                stops.append(took * 1000)
                codes.append(code)
            finally:
                proc.kill()
            print(f"run {i + 1}: ready {ready[-1]:.0f} ms, stop {stops[-1]:.0f} ms, exit {code}")
    print(f"ready_ms_p50={statistics.median(ready):.0f} ready_ms_max={max(ready):.0f} "
          f"stop_ms_max={max(stops):.0f} exit_codes={','.join(map(str, sorted(set(codes))))}")


if __name__ == "__main__":
    main()
