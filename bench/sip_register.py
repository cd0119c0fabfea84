"""SIPp digest REGISTER load against the endpoint + registrar at rising rates.

Run: PYTHONPATH=. python bench/sip_register.py [seconds_per_step] [rate ...]
Needs ``sipp`` (Debian ``sip-tester``).  The registrar (memory stores, 1,000
users, rate limit lifted since every call comes from 127.0.0.1) runs on this
process's event loop; SIPp runs ``tests/siptransport/sipp/register_digest.xml``
(REGISTER, 401, REGISTER with MD5 digest, 200) at each rate in turn.  One call
is two REGISTER transactions.  Steps stop once more than 1 % of calls fail.

Prints one line per step; the last line is ``register_per_s=N failed_pct=X``:
the successful authenticated registrations per second at the best step whose
failures stayed within 1 % (both REGISTERs of a call count as one).
"""

from __future__ import annotations

import asyncio
import csv
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from telephony.registrar import (
    MemoryBindingStore,
    MemoryCredentialStore,
    Registrar,
    RegistrarSettings,
)
from telephony.sip.transport import ListenAddress, MethodRouter, SipEndpoint, TransportSettings

SCENARIO = Path(__file__).resolve().parent.parent / "tests/siptransport/sipp/register_digest.xml"
REALM = "dispatch.test"
USERS = {f"u{n:04d}": f"pw-{n:04d}-secret" for n in range(1000)}


async def start_server() -> tuple[SipEndpoint, Registrar]:
    """Endpoint on UDP 127.0.0.1:0 with the registrar behind it."""
    endpoint = SipEndpoint(TransportSettings(listen=(ListenAddress("UDP", "127.0.0.1", 0),)))
    settings = RegistrarSettings(realm=REALM, rate=1e9, burst=1e9, max_failures=10**9)
    registrar = Registrar(settings, b"bench-secret-bench-secret-32byte", MemoryBindingStore(),
                          MemoryCredentialStore.from_passwords(REALM, USERS, ("MD5",)))
    router = MethodRouter(endpoint)
    router.route("REGISTER", registrar)
    endpoint.user = router
    registrar.attach(endpoint)
    await endpoint.start()
    return endpoint, registrar


async def run_step(
    sipp: str, port: int, rate: int, seconds: float, tmp: Path
) -> tuple[int, int, float]:
    """One SIPp run; returns (successful, failed, wall seconds)."""
    calls = max(1, int(rate * seconds))
    stat = tmp / f"stat-{rate}.csv"
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sipp, f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-inf", str(tmp / "users.csv"),
        "-i", "127.0.0.1", "-p", "0", "-m", str(calls), "-r", str(rate), "-l", str(rate * 5),
        "-nostdin", "-recv_timeout", "5000", "-timeout", f"{int(seconds * 4 + 20)}s",
        "-trace_stat", "-stf", str(stat),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=str(tmp),
    )
    await proc.wait()
    wall = time.perf_counter() - started
    with stat.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    return (int(last[header.index("SuccessfulCall(C)")]),
            int(last[header.index("FailedCall(C)")]), wall)


async def main(seconds: float, rates: list[int]) -> None:
    """Run every step and print the figures."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp not found: apt-get install sip-tester")
    logging.basicConfig(level=logging.ERROR)
    endpoint, registrar = await start_server()
    port = endpoint.address("UDP").port
    best = (0.0, 0.0)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        lines = ["SEQUENTIAL"] + [f"{u};[authentication username={u} password={p}]"
                                  for u, p in USERS.items()]
        (tmp / "users.csv").write_text("\n".join(lines) + "\n")
        try:
            for rate in rates:
                ok, failed, wall = await run_step(sipp, port, rate, seconds, tmp)
                per_s = ok / wall if wall > 0 else 0.0
                failed_pct = 100.0 * failed / max(1, ok + failed)
                print(f"rate={rate}/s calls={ok + failed} ok={ok} failed={failed} "
                      f"wall={wall:.2f}s register_per_s={per_s:.0f} failed_pct={failed_pct:.2f}",
                      flush=True)
                if failed_pct > 1.0:
                    break
                best = max(best, (per_s, failed_pct))
        finally:
            bindings = await registrar.bindings.count()
            await endpoint.stop()
            await registrar.stop()
    print(f"bindings={bindings} server_bugs={endpoint.stats.bugs}")
    print(f"register_per_s={best[0]:.0f} failed_pct={best[1]:.2f}")


if __name__ == "__main__":
    step = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    chosen = [int(r) for r in sys.argv[2:]] or [100, 250, 500, 1000, 1500, 2000]
    asyncio.run(main(step, chosen))
