"""Broadcast throughput of the SMPP transport against the smpp.twisted3 SMSC simulator.

Phase "open": N submits with no throttling; phase "smsc-200": the simulator
answers ESME_RTHROTTLED above 200 submit_sm/s and the transport backs off
and resubmits; phase "client-190" (optional): the transport's own token
bucket keeps under the SMSC's limit.  Prints one line per phase and, last,
``recipients=N submit_per_s=X all_submitted_s=Y rss_mb=Z`` for the open phase.

    /work/venv/bin/python bench/smpp_submit.py [--n 45000] [--throttled-n 45000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sms.smpp import SessionSettings  # noqa: E402
from sms.transport import SmppClient, SmppSettings, SubmitError  # noqa: E402

TEXT = "【应急】洪水预警：请立即撤离到高地，避开河道。"
SYSTEM_ID, PASSWORD = "bench", "bench"


def rss_mb() -> float:
    """Peak resident set size of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def command(proc: asyncio.subprocess.Process, line: str) -> None:
    """Send a control line to the simulator and wait for its ok."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()
    while json.loads(await proc.stdout.readline()).get("event") != "ok":
        pass


async def phase(name: str, port: int, n: int, window: int, rate: float) -> dict[str, float]:
    """Submit ``n`` messages through one bind; return the figures."""
    session = SessionSettings(window=window, response_timeout=30.0, throttle_pause=0.1,
                              throttle_pause_max=1.0)
    client = SmppClient(SmppSettings(name=name, host="127.0.0.1", port=port,
                                     system_id=SYSTEM_ID, password=PASSWORD, source="12110",
                                     session=session, rate_limit=rate,
                                     max_temporary_retries=1000))
    await client.start()
    await client.wait_bound(20)
    numbers = iter(f"+86139{i:08d}" for i in range(n))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for number in numbers:
            try:
                await client.submit(number, TEXT, registered_delivery=False)
            except SubmitError:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window * 4)))
    elapsed = time.perf_counter() - start
    retries = client.counters.temporary_retries
    await client.stop()
    return {"recipients": n, "submit_per_s": n / elapsed, "all_submitted_s": elapsed,
            "rss_mb": rss_mb(), "failures": failures, "throttle_retries": retries}


def line(name: str, fig: dict[str, float]) -> str:
    """One result line."""
    return (f"phase={name} recipients={fig['recipients']} submit_per_s={fig['submit_per_s']:.0f} "
            f"all_submitted_s={fig['all_submitted_s']:.1f} rss_mb={fig['rss_mb']:.0f} "
            f"failures={fig['failures']} throttle_retries={fig['throttle_retries']}")


async def main() -> None:
    """Run the phases against one simulator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=45_000)
    parser.add_argument("--throttled-n", type=int, default=None,
                        help="messages in the throttled phases (default: --n)")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--client-limit", action="store_true",
                        help="also run a phase with the client's token bucket at 190/s")
    args = parser.parse_args()
    throttled_n = args.throttled_n if args.throttled_n is not None else args.n
    setup = subprocess.run([str(ROOT / "scripts" / "smsc-sim"), "--setup"], check=False)
    if setup.returncode:
        raise SystemExit("cannot set up the SMSC simulator (scripts/smsc-sim --setup)")
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "smsc-sim"), "--system-id", SYSTEM_ID, "--password", PASSWORD,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    port = json.loads(await proc.stdout.readline())["port"]
    try:
        open_fig = await phase("open", port, args.n, args.window, 0.0)
        print(line("open", open_fig), flush=True)
        if throttled_n:
            await command(proc, "throttle 200")
            print(line("smsc-200", await phase("smsc-200", port, throttled_n, args.window, 0.0)),
                  flush=True)
            if args.client_limit:
                print(line("client-190", await phase("client-190", port, throttled_n,
                                                     args.window, 190.0)), flush=True)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()
    print(f"recipients={open_fig['recipients']} submit_per_s={open_fig['submit_per_s']:.0f} "
          f"all_submitted_s={open_fig['all_submitted_s']:.1f} rss_mb={open_fig['rss_mb']:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
