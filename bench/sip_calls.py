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

Last line: ``calls_per_s=N failed_pct=X concurrent_max=M direct_calls_per_s=D``
(N is the highest sustained rate measured, as SIPp's achieved call rate).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
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
    """Totals from the last row of a SIPp -stf file, and the peak of CurrentCall."""
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    current = header.index("CurrentCall")
    return {
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


def config(tmp: Path, trunk_port: int, agents: list[str]) -> Path:
    """A daemon config: one trunk, hotline 110, one queue, every agent in it."""
    lines = [
        f'[node]\ndata_dir = "{tmp / "var"}"', "[http]\nport = 0", "[ssh]\nenabled = false",
        '[log]\nlevel = "info"',
        '[sip]\nenabled = true\ndomain = "dispatch.test"\nagent_login_on_register = true',
        'max_calls = 100000\nlisten = [{transport = "udp", host = "127.0.0.1", port = 0}]',
        '[sip.registrar]\nexempt_networks = ["127.0.0.0/8"]\nmax_failures = 1000',
        '[routing]\nfallback = "110"', '[[hotlines]]\nnumber = "110"\nqueue = "police"',
        '[[queues]]\nname = "police"\nwrap_up = 0\nring_timeout = 5',
        f'[[trunks]]\nname = "carrier"\naddress = "127.0.0.1:{trunk_port}"\n'
        f"source_port = {trunk_port}\nmax_calls = 100000",
    ]
    lines += [f'[[agents]]\nid = "{a}"\nqueues = ["police"]' for a in agents]
    path = tmp / "dispatchd.toml"
    path.write_text("\n".join(lines) + "\n")
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


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,100,200,300")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--hold", type=int, default=1000, help="call length, ms")
    parser.add_argument("--profile", default="",
                        help="write py-spy collapsed stacks of the daemon here (needs py-spy)")
    parser.add_argument("--agents", type=int, default=0,
                        help="call takers (default: enough for rate x hold, x2)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    n_agents = args.agents or max(20, int(max(rates) * (args.hold / 1000 + 0.2) * 2))
    agents = [f"a{i}" for i in range(n_agents)]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        trunk_port, agent_port = free_port(), free_port()
        cfg = config(tmp, trunk_port, agents)
        asyncio.run(make_accounts(f"sqlite:///{tmp / 'var' / 'dispatchd.db'}", agents,
                                  "dispatch.test"))
        daemon = DaemonProcess(ROOT, cfg, env={"PYTHONPATH": str(ROOT)})
        uas = None
        try:
            daemon.wait_ready(60)
            sip_port = next(int(x["port"]) for x in daemon.lines
                            if x.get("msg") == "sip listening")
            # Keep reading the daemon's log so a full pipe never stalls it.
            assert daemon.proc.stderr is not None
            threading.Thread(target=daemon.proc.stderr.read, daemon=True).start()
            uas = subprocess.Popen(
                ["sipp", "-sf", str(SIPP_DIR / "agent_uas.xml"), "-i", "127.0.0.1", "-p",
                 str(agent_port), "-nostdin", "-mp", str(free_port())],
                cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            (tmp / "agents.csv").write_text("SEQUENTIAL\n" + "".join(
                f"{a};[authentication username={a} password={PASSWORD}];{agent_port}\n"
                for a in agents))
            code = sipp(f"127.0.0.1:{sip_port}", "-sf", str(SIPP_DIR / "register_agent.xml"),
                        "-inf", str(tmp / "agents.csv"), "-i", "127.0.0.1", "-p",
                        str(free_port()), "-m", str(n_agents), "-r", "50", cwd=tmp,
                        timeout=300)
            print(f"registered {n_agents} agents (sipp exit {code})", flush=True)
            spy = None
            if args.profile:
                spy = subprocess.Popen(
                    [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                     "record", "-p", str(daemon.proc.pid), "-f", "raw", "-o", args.profile, "--gil",
                     "-r", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            best = (0.0, 0.0, 0.0)
            for rate in rates:
                stf = tmp / f"rate{rate}.csv"
                calls = rate * args.duration
                cpu_before = cpu_seconds(daemon.proc.pid)
                sipp(f"127.0.0.1:{sip_port}", "-sf", str(SIPP_DIR / "trunk_call.xml"),
                     "-s", "110", "-i", "127.0.0.1", "-p", str(trunk_port),
                     "-mp", str(free_port()), "-r", str(rate), "-m", str(calls),
                     "-d", str(args.hold), "-trace_stat", "-stf", str(stf), "-fd", "1",
                     "-recv_timeout", "10000", "-timeout", f"{args.duration * 3 + 30}s",
                     cwd=tmp, timeout=args.duration * 4 + 120)
                s = stats(stf)
                cpu = cpu_seconds(daemon.proc.pid) - cpu_before
                total = s["ok"] + s["failed"]
                failed_pct = 100.0 * s["failed"] / total if total else 100.0
                print(f"rate={rate} achieved={s['rate']:.1f} ok={s['ok']:.0f} "
                      f"failed={s['failed']:.0f} failed_pct={failed_pct:.3f} "
                      f"retrans={s['retrans']:.0f} concurrent_peak={s['peak']:.0f} "
                      f"daemon_cpu_ms_per_call={1000 * cpu / max(total, 1):.2f} "
                      f"load1={os.getloadavg()[0]:.2f}", flush=True)
                if failed_pct < 0.1 and total >= calls:
                    best = max(best, (s["rate"], failed_pct, s["peak"]))
                else:
                    break
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
        finally:
            if uas is not None:
                uas.terminate()
                uas.wait(10)
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                daemon.proc.wait(30)
            finally:
                daemon.kill()
        direct = direct_ceiling(tmp, 5)
        print(f"direct SIPp uac -> uas: {direct:.0f} calls/s")
        print(f"calls_per_s={best[0]:.0f} failed_pct={best[1]:.3f} "
              f"concurrent_max={best[2]:.0f} direct_calls_per_s={direct:.0f}")


if __name__ == "__main__":
    main()
