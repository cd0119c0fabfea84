#!/usr/bin/env python3
"""Calls per second through the B2BUA: SIPp carrier -> trunk -> hotline queue -> SIPp agents.

Starts ``dispatchd run`` (SQLite, one process), creates ``--agents`` SIP
accounts, registers them all with SIPp (their Contact is one SIPp UAS that
answers every call), then drives a SIPp UAC through the trunk to hotline 110
at rising rates, ``--duration`` seconds each, each call held ``--hold`` ms.
A rate counts as sustained when fewer than 0.1 % of its calls failed.  Beside
it, the same SIPp pair talking directly (built-in uac -> uas): the load tool's
own ceiling on this machine.

    python bench/sip_calls.py [--rates 50,100,200,300] [--duration 30] [--hold 1000]
    python bench/sip_calls.py --held 2000 --rates 100     # concurrency, then SIGTERM

A rate is sustained when fewer than 0.1 % of its calls failed and retransmissions
stayed under 5 % of its calls (no retransmission storm); N is the highest rate
sustained, measured as the rate at which SIPp actually set calls up (calls per
second over the seconds in which it started calls; SIPp's own cumulative
``CallRate(C)``, which also counts the hold time of the last calls, is printed
beside it).  Each rate line also shows the daemon's CPU time per call (all its
threads) and the load average, since other work on the machine skews the rates.

``--held N`` holds N calls at once instead (callers and call takers that wait for
dispatchd's BYE), then SIGTERMs the daemon with them all up and reads the
database: every CDR must be there, released, with its audit rows.

Last line: ``calls_per_s=N failed_pct=X concurrent_max=M direct_calls_per_s=D``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from daemonproc import DaemonProcess  # noqa: E402

SIPP_DIR = ROOT / "tests" / "b2bua" / "sipp"
PASSWORD = "bench-password"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A UDP port free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats(path: Path) -> dict[str, float]:
    """Totals from the last row of a SIPp -stf file (``-fd 1``), the peak of CurrentCall,
    and the set-up rate over the seconds in which calls were started."""
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    current = header.index("CurrentCall")
    started = [float(r[header.index("OutgoingCall(P)")]) for r in rows[1:]]
    busy = [n for n in started if n > 0]
    return {
        "setup_rate": sum(busy) / len(busy) if busy else 0.0,
        "ok": float(last[header.index("SuccessfulCall(C)")]),
        "failed": float(last[header.index("FailedCall(C)")]),
        "retrans": float(last[header.index("Retransmissions(C)")]),
        "rate": float(last[header.index("CallRate(C)")]),
        "peak": max(float(r[current]) for r in rows[1:]),
    }


async def make_accounts(db_url: str, agents: list[str], realm: str) -> None:
    """Create the agents' SIP accounts straight in the database (the CLI, in bulk)."""
    from dispatch.sip_store import SqlCredentialStore
    from dispatch.storage import Database

    db = Database(db_url)
    await db.upgrade()
    store = SqlCredentialStore(db, time.time)
    for agent in agents:
        await store.add(agent, realm, PASSWORD)
    await db.close()


def telephony_config(trunk_port: int, agents: list[str]) -> str:
    """``[sip]`` and telephony: one trunk, hotline 110, one queue, every agent in it."""
    lines = [
        '[sip]\nenabled = true\ndomain = "dispatch.test"\nagent_login_on_register = true',
        'max_calls = 100000\nlisten = [{transport = "udp", host = "127.0.0.1", port = 0}]',
        '[sip.registrar]\nexempt_networks = ["127.0.0.0/8"]\nmax_failures = 1000',
        '[routing]\nfallback = "110"', '[[hotlines]]\nnumber = "110"\nqueue = "police"',
        '[[queues]]\nname = "police"\nwrap_up = 0\nring_timeout = 5',
        f'[[trunks]]\nname = "carrier"\naddress = "127.0.0.1:{trunk_port}"\n'
        f"source_port = {trunk_port}\nmax_calls = 100000",
    ]
    lines += [f'[[agents]]\nid = "{a}"\nqueues = ["police"]' for a in agents]
    return "\n".join(lines) + "\n"


def config(tmp: Path, trunk_port: int, agents: list[str], event_loop: str = "asyncio") -> Path:
    """A daemon config: :func:`telephony_config` in a node with no HTTP or SSH."""
    node = "\n".join([f'[node]\ndata_dir = "{tmp / "var"}"\nevent_loop = "{event_loop}"',
                      "[http]\nport = 0",
                      "[ssh]\nenabled = false", '[log]\nlevel = "info"'])
    path = tmp / "dispatchd.toml"
    path.write_text(node + "\n" + telephony_config(trunk_port, agents))
    return path


def sipp(*args: str, cwd: Path, timeout: float) -> int:
    """Run SIPp to completion."""
    done = subprocess.run([shutil.which("sipp") or "sipp", *args, "-nostdin"], cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    return done.returncode


def direct_ceiling(tmp: Path, seconds: int) -> float:
    """SIPp's built-in uac -> uas on this machine (the load tool's ceiling)."""
    port = free_port()
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port),
                            "-nostdin"], cwd=tmp, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        stf = tmp / "direct.csv"
        sipp(f"127.0.0.1:{port}", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()),
             "-r", "5000", "-m", str(5000 * seconds), "-trace_stat", "-stf", str(stf),
             "-timeout", f"{seconds * 3}s", cwd=tmp, timeout=seconds * 4 + 30)
        return stats(stf)["rate"]
    finally:
        uas.terminate()
        uas.wait(10)


class Bench:
    """The daemon under test, its agents' SIPp, and the ports and paths of one run."""

    def __init__(self, tmp: Path, agents: list[str], event_loop: str = "asyncio") -> None:
        self.tmp = tmp
        self.agents = agents
        self.trunk_port, self.agent_port = free_port(), free_port()
        self.db_url = f"sqlite:///{tmp / 'var' / 'dispatchd.db'}"
        cfg = config(tmp, self.trunk_port, agents, event_loop)
        asyncio.run(make_accounts(self.db_url, agents, "dispatch.test"))
        self.daemon = DaemonProcess(ROOT, cfg, env={"PYTHONPATH": str(ROOT)})
        self.uas: subprocess.Popen[bytes] | None = None
        self.daemon.wait_ready(60)
        self.sip_port = next(int(x["port"]) for x in self.daemon.lines
                             if x.get("msg") == "sip listening")
        # Keep reading the daemon's log so a full pipe never stalls it.
        assert self.daemon.proc.stderr is not None
        threading.Thread(target=self.daemon.proc.stderr.read, daemon=True).start()

    def register(self) -> None:
        """Start the agents' SIPp UAS and register every agent's Contact there."""
        self.uas = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / "agent_uas.xml"), "-i", "127.0.0.1", "-p",
             str(self.agent_port), "-nostdin", "-mp", str(free_port())],
            cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        missing = list(self.agents)
        for _attempt in range(3):  # a REGISTER lost on a busy machine is sent again
            (self.tmp / "agents.csv").write_text("SEQUENTIAL\n" + "".join(
                f"{a};[authentication username={a} password={PASSWORD}];{self.agent_port}\n"
                for a in missing))
            sipp(f"127.0.0.1:{self.sip_port}", "-sf", str(SIPP_DIR / "register_agent.xml"),
                 "-inf", str(self.tmp / "agents.csv"), "-i", "127.0.0.1", "-p",
                 str(free_port()), "-m", str(len(missing)), "-r", "100", cwd=self.tmp,
                 timeout=600)
            bound = set(asyncio.run(column(self.db_url, "SELECT aor FROM sip_bindings")))
            missing = [a for a in self.agents if f"sip:{a}@dispatch.test" not in bound]
            if not missing:
                break
        print(f"registered {len(self.agents) - len(missing)} of {len(self.agents)} agents",
              flush=True)

    def caller(self, scenario: str, rate: int, calls: int, stf: Path, *extra: str,
               recv_timeout_ms: int = 10000) -> subprocess.Popen[bytes]:
        """Start the carrier's SIPp UAC: ``calls`` calls to hotline 110 at ``rate``."""
        return subprocess.Popen(
            ["sipp", f"127.0.0.1:{self.sip_port}", "-sf", str(SIPP_DIR / scenario), "-s", "110",
             "-i", "127.0.0.1", "-p", str(self.trunk_port), "-mp", str(free_port()),
             "-r", str(rate), "-m", str(calls), "-trace_stat", "-stf", str(stf), "-fd", "1",
             "-recv_timeout", str(recv_timeout_ms), "-nostdin", *extra],
            cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def writer_idle(self, limit: float = 300.0) -> float:
        """Wait until the daemon's record writer has written everything queued (its
        ``/health`` shows nothing pending and nothing new written for half a second);
        the seconds waited (how far the writer lagged behind the calls)."""
        import httpx

        began = time.monotonic()
        last = None
        while time.monotonic() - began < limit:
            health = httpx.get(f"http://127.0.0.1:{self.daemon.port}/health", timeout=10).json()
            records = health["services"]["sip"]["detail"]["records"]
            now = (records["pending"], records["written"])
            if now[0] == 0 and now == last:
                break
            last = now
            time.sleep(0.5)
        return time.monotonic() - began

    def stop(self) -> float:
        """SIGTERM the daemon (and the agents' SIPp); seconds the daemon took to exit."""
        began = time.monotonic()
        self.daemon.proc.send_signal(signal.SIGTERM)
        try:
            self.daemon.proc.wait(120)
        finally:
            self.daemon.kill()
        took = time.monotonic() - began
        if self.uas is not None:
            self.uas.terminate()
            self.uas.wait(10)
        return took


def run_rates(bench: Bench, rates: list[int], duration: int, hold: int
              ) -> tuple[float, float, float]:
    """Each rate for ``duration`` s; the best sustained (rate, failed %, concurrent peak)."""
    best = (0.0, 0.0, 0.0)
    for rate in rates:
        stf = bench.tmp / f"rate{rate}.csv"
        calls = rate * duration
        cpu_before = cpu_seconds(bench.daemon.proc.pid)
        uac = bench.caller("trunk_call.xml", rate, calls, stf, "-d", str(hold),
                           "-timeout", f"{duration * 3 + 30}s")
        uac.wait(duration * 4 + 120)
        # The CPU the calls cost includes writing their records, however late.
        lag = bench.writer_idle()
        s = stats(stf)
        cpu = cpu_seconds(bench.daemon.proc.pid) - cpu_before
        total = s["ok"] + s["failed"]
        failed_pct = 100.0 * s["failed"] / total if total else 100.0
        print(f"rate={rate} setup_rate={s['setup_rate']:.1f} sipp_call_rate={s['rate']:.1f} "
              f"ok={s['ok']:.0f} failed={s['failed']:.0f} failed_pct={failed_pct:.3f} "
              f"retrans={s['retrans']:.0f} concurrent_peak={s['peak']:.0f} "
              f"daemon_cpu_ms_per_call={1000 * cpu / max(total, 1):.2f} "
              f"records_lag_s={lag:.1f} "
              f"load1={os.getloadavg()[0]:.2f}", flush=True)
        # A storm: retransmissions above 5 % of calls (a call is 7 messages to SIPp).
        if failed_pct < 0.1 and total >= calls and s["retrans"] < 0.05 * calls:
            best = max(best, (s["setup_rate"], failed_pct, s["peak"]))
        else:
            break
    return best


async def column(db_url: str, sql: str) -> list[str]:
    """The first column of every row of ``sql`` in the daemon's database."""
    from sqlalchemy import text

    from dispatch.storage import Database

    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            return [str(r[0]) for r in (await conn.execute(text(sql))).all()]
    finally:
        await db.close()


async def count(db_url: str, sql: str) -> int:
    """One number from the daemon's database."""
    from sqlalchemy import text

    from dispatch.storage import Database

    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            return int((await conn.execute(text(sql))).scalar() or 0)
    finally:
        await db.close()


def run_held(bench: Bench, held: int, rate: int) -> tuple[float, float, float]:
    """Hold ``held`` calls at once, SIGTERM the daemon, check every row was written."""
    stf = bench.tmp / "held.csv"
    # The callers wait for dispatchd's BYE however long the hold lasts.
    # (-l: SIPp's own cap on open calls defaults to 3 x rate.)
    uac = bench.caller("caller_wait_bye.xml", rate, held, stf, "-timeout", "900s",
                       "-l", str(held), recv_timeout_ms=900_000)
    answered = "SELECT count(*) FROM call_records WHERE answered_at IS NOT NULL"
    deadline = time.monotonic() + held / rate * 3 + 120
    while asyncio.run(count(bench.db_url, answered)) < held and time.monotonic() < deadline:
        time.sleep(1)
    up = stats(stf)
    print(f"held: answered={asyncio.run(count(bench.db_url, answered))} "
          f"concurrent_now={up['peak']:.0f} failed={up['failed']:.0f} "
          f"setup_rate={up['setup_rate']:.1f} load1={os.getloadavg()[0]:.2f}", flush=True)
    took = bench.stop()
    try:
        uac.wait(120)
    except subprocess.TimeoutExpired:
        uac.terminate()  # some callers never saw their BYE: counted as failed below
        uac.wait(10)
    s = stats(stf)
    rows = asyncio.run(count(bench.db_url, "SELECT count(*) FROM call_records"))
    released = asyncio.run(count(bench.db_url, "SELECT count(*) FROM call_records WHERE "
                                 "released_at IS NOT NULL"))
    shutdown = asyncio.run(count(bench.db_url, "SELECT count(*) FROM call_records WHERE "
                                 "cause = 'shutdown'"))
    audited = asyncio.run(count(bench.db_url, "SELECT count(*) FROM audit_log "
                                "WHERE action = 'call.released'"))
    failed_pct = 100.0 * s["failed"] / held
    print(f"sigterm with {held} calls up: daemon exit {bench.daemon.proc.returncode} in "
          f"{took:.1f}s, callers ok={s['ok']:.0f} failed={s['failed']:.0f}; cdr_rows={rows} "
          f"released={released} by_shutdown={shutdown} audit_released={audited}", flush=True)
    lost = held - min(rows, released, audited)
    print(f"rows_lost={lost}", flush=True)
    return (up["setup_rate"], failed_pct, up["peak"])


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,100,200,300")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--hold", type=int, default=1000, help="call length, ms")
    parser.add_argument("--held", type=int, default=0,
                        help="hold this many calls at once (at the first rate), then SIGTERM")
    parser.add_argument("--direct-seconds", type=int, default=5,
                        help="how long to measure SIPp uac -> uas directly (0: skip)")
    parser.add_argument("--profile", default="",
                        help="write py-spy collapsed stacks of the daemon here (needs py-spy)")
    parser.add_argument("--agents", type=int, default=0,
                        help="call takers (default: enough for rate x hold, x2)")
    parser.add_argument("--event-loop", default="asyncio", choices=("asyncio", "uvloop", "auto"),
                        help="the daemon's [node] event_loop")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    wanted = args.held or max(rates) * (args.hold / 1000 + 0.2)
    n_agents = args.agents or max(20, int(wanted * 1.1 if args.held else wanted * 2))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # SIPp and the daemon inherit it
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        bench = Bench(tmp, [f"a{i}" for i in range(n_agents)], args.event_loop)
        spy = None
        try:
            bench.register()
            if args.profile:
                spy = subprocess.Popen(
                    [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                     "record", "-p", str(bench.daemon.proc.pid), "-f", "raw", "-o",
                     args.profile, "--gil", "-r", "200"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if args.held:
                best = run_held(bench, args.held, rates[0])
            else:
                best = run_rates(bench, rates, args.duration, args.hold)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            if bench.daemon.proc.poll() is None:
                bench.stop()
        direct = direct_ceiling(tmp, args.direct_seconds) if args.direct_seconds else 0.0
        print(f"direct SIPp uac -> uas: {direct:.0f} calls/s")
        print(f"calls_per_s={best[0]:.0f} failed_pct={best[1]:.3f} "
              f"concurrent_max={best[2]:.0f} direct_calls_per_s={direct:.0f}")


if __name__ == "__main__":
    main()
