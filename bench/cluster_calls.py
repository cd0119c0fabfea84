#!/usr/bin/env python3
"""Calls per second through Kamailio with one dispatchd node and with two; calls lost at a death.

Builds the loopback cluster of ``scripts/cluster`` (private PostgreSQL, Kamailio
with the shipped conf/kamailio/kamailio.cfg, ``dispatchd run`` nodes) in a
temporary directory, registers ``--agents`` call takers through Kamailio (their
Contact is one SIPp UAS that answers everything) and drives a SIPp carrier
through Kamailio to hotline 110 at rising rates, ``--duration`` seconds each,
each call held ``--hold`` ms.  A rate counts as sustained when fewer than 0.1 %
of its calls failed.  First with one node behind Kamailio, then with two.
Then the two-node cluster runs at ``--death-rate`` calls/s while one node is
SIGKILLed: the failed calls are the ones that died with it (its live calls,
and the ones Kamailio sent it before it was marked down).

    python bench/cluster_calls.py [--rates 25,50,75,100,125,150] [--duration 15]

Beside the rates, the nodes' CPU per call (all of it: the call, and the CDR, audit and
voice report written after it, measured from /proc until the nodes are idle again) with
one node and with two: on a machine whose cores are already busy, that, not the rate,
says what a second node costs and what it can add.

Last line: ``one_node_cps=X two_node_cps=Y ratio=R death_failed=F death_calls=N
cpu_ms_per_call_one=A cpu_ms_per_call_two=B``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.machinery
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SIPP_DIR = ROOT / "tests" / "b2bua" / "sipp"
PASSWORD = "bench-password-1"


def load_script() -> ModuleType:
    """``scripts/cluster`` as a module (the same layout a newcomer starts)."""
    loader = importlib.machinery.SourceFileLoader("cluster_script",
                                                  str(ROOT / "scripts" / "cluster"))
    spec = importlib.util.spec_from_loader("cluster_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cluster_script"] = module
    loader.exec_module(module)
    return module


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats(path: Path) -> dict[str, float]:
    """Totals from the last row of a SIPp -stf file."""
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    last = rows[-1]
    return {"ok": float(last["SuccessfulCall(C)"]), "failed": float(last["FailedCall(C)"]),
            "rate": float(last["CallRate(C)"])}


def sipp_load(kam_port: int, rate: int, calls: int, hold: int, stf: Path, cwd: Path,
              timeout: float) -> subprocess.Popen[bytes]:
    """A SIPp carrier calling 110 through Kamailio."""
    return subprocess.Popen(
        ["sipp", f"127.0.0.1:{kam_port}", "-sf", str(SIPP_DIR / "trunk_call.xml"), "-s", "110",
         "-i", "127.0.0.2", "-p", str(free_port()), "-mp", str(free_port()), "-r", str(rate),
         "-m", str(calls), "-d", str(hold), "-trace_stat", "-stf", str(stf), "-fd", "1",
         "-recv_timeout", "10000", "-timeout", f"{int(timeout)}s", "-nostdin"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Bench:
    """The cluster under test and its peers."""

    def __init__(self, tmp: Path, agents: int) -> None:
        self.script = load_script()
        self.tmp = tmp
        self.agents = [f"a{i}" for i in range(agents)]
        self.layout = self.script.Layout(
            tmp / "cluster", pg_port=free_port(socket.SOCK_STREAM), kam_port=free_port(),
            nodes=[("n1", free_port(), free_port(socket.SOCK_STREAM)),
                   ("n2", free_port(), free_port(socket.SOCK_STREAM))],
            agents=self.agents, heartbeat_s=1.0, dead_after_s=4.0, media=False)
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.kamailio: subprocess.Popen[bytes] | None = None
        self.uas_port = free_port()
        self.uas: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """PostgreSQL, the schema and accounts, the agents' phone."""
        self.layout.run_dir.mkdir(parents=True)
        self.script.start_pg(self.layout)
        asyncio.run(self.script.prepare_db(self.layout, PASSWORD))
        self.uas = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / "agent_uas.xml"), "-i", "127.0.0.1", "-p",
             str(self.uas_port), "-nostdin", "-mp", str(free_port())], cwd=self.tmp,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def fresh_database(self, name: str) -> None:
        """Point the nodes at a new, empty database (stop running nodes first).

        Each configuration starts from an empty database: the work after a call
        (voice reports joining incidents) grows with what is stored, so a second
        run on the first run's data would not be a fair comparison.
        """
        for proc in self.nodes.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        self.nodes.clear()
        subprocess.run(self.script._as_pg([
            str(self.script.pg_bindir() / "createdb"), "-h", "127.0.0.1", "-p",
            str(self.layout.pg_port), "-U", "postgres", name]), check=True,
            capture_output=True, timeout=60)
        self.layout.database = (f"postgresql://postgres@127.0.0.1:{self.layout.pg_port}/"
                                f"{name}")
        asyncio.run(self.script.prepare_db(self.layout, PASSWORD))

    def node(self, name: str) -> None:
        """Start one node."""
        _, sip, http = next(n for n in self.layout.nodes if n[0] == name)
        proc = self.script.start_node(self.layout, name, sip, http)
        self.nodes[name] = proc

    def front(self, names: list[str]) -> None:
        """(Re)start Kamailio with ``names`` behind it."""
        if self.kamailio is not None:
            self.kamailio.terminate()
            self.kamailio.wait(20)
        saved = self.layout.nodes
        self.layout.nodes = [n for n in saved if n[0] in names]
        try:
            self.kamailio = self.script.start_kamailio(self.layout)
        finally:
            self.layout.nodes = saved

    def register(self) -> None:
        """Every agent's phone registers through Kamailio."""
        (self.tmp / "agents.csv").write_text("SEQUENTIAL\n" + "".join(
            f"{a};[authentication username={a} password={PASSWORD}];{self.uas_port}\n"
            for a in self.agents))
        subprocess.run(["sipp", f"127.0.0.1:{self.layout.kam_port}", "-sf",
                        str(SIPP_DIR / "register_agent.xml"), "-inf",
                        str(self.tmp / "agents.csv"), "-i", "127.0.0.1", "-p",
                        str(free_port()), "-m", str(len(self.agents)), "-r", "50", "-nostdin"],
                       cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=300, check=False)
        time.sleep(2.0)  # a benchmark, not a test: let the logins reach every node

    def cpu_s(self) -> float:
        """CPU seconds the running nodes have used (user + system)."""
        import os

        total = 0
        for proc in self.nodes.values():
            if proc.poll() is None:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def settle(self) -> None:
        """Wait until the nodes are idle again (their record writers have caught up)."""
        last = self.cpu_s()
        for _ in range(60):
            time.sleep(3)
            now = self.cpu_s()
            if now - last < 0.05 * len(self.nodes):
                return
            last = now

    def cpu_per_call(self, rate: int, calls: int, hold: int) -> float:
        """Node CPU ms per call, all of it: the call and the records written after it."""
        self.settle()
        before = self.cpu_s()
        stf = self.tmp / f"cpu-{len(self.nodes)}.csv"
        sipp_load(self.layout.kam_port, rate, calls, hold, stf, self.tmp,
                  calls / rate * 3 + 30).wait(calls / rate * 4 + 60)
        self.settle()
        return (self.cpu_s() - before) * 1000 / calls

    def ladder(self, label: str, rates: list[int], duration: int, hold: int) -> float:
        """The highest sustained rate (SIPp's achieved call rate)."""
        best = 0.0
        for rate in rates:
            self.settle()
            stf = self.tmp / f"{label}-{rate}.csv"
            proc = sipp_load(self.layout.kam_port, rate, rate * duration, hold, stf, self.tmp,
                             duration * 3 + 30)
            proc.wait(duration * 4 + 60)
            s = stats(stf)
            total = s["ok"] + s["failed"]
            failed_pct = 100.0 * s["failed"] / total if total else 100.0
            print(f"{label}: rate={rate} achieved={s['rate']:.1f} ok={s['ok']:.0f} "
                  f"failed={s['failed']:.0f} failed_pct={failed_pct:.3f}", flush=True)
            if failed_pct < 0.1 and total >= rate * duration:
                best = max(best, s["rate"])
            else:
                break
        return best

    def death(self, rate: int, seconds: int, hold: int) -> tuple[int, int]:
        """Calls failed when n2 is SIGKILLed a third of the way through a run."""
        stf = self.tmp / "death.csv"
        calls = rate * seconds
        proc = sipp_load(self.layout.kam_port, rate, calls, hold, stf, self.tmp,
                         seconds * 3 + 60)
        time.sleep(seconds / 3)
        self.nodes["n2"].send_signal(signal.SIGKILL)
        self.nodes["n2"].wait(30)
        proc.wait(seconds * 4 + 120)
        s = stats(stf)
        return int(s["failed"]), int(s["ok"] + s["failed"])

    def stop(self) -> None:
        """Everything down."""
        if self.kamailio is not None:
            self.kamailio.terminate()
            self.kamailio.wait(20)
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.uas is not None:
            self.uas.terminate()
            self.uas.wait(10)
        self.script.stop_pg(self.layout)


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="25,50,75,100,125,150,175,200")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--hold", type=int, default=1000, help="call length, ms")
    parser.add_argument("--agents", type=int, default=0)
    parser.add_argument("--death-rate", type=int, default=0,
                        help="calls/s during the node's death (default: half of two-node)")
    args = parser.parse_args()
    # A plain `kill` must still stop the cluster this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: apt-get install -y sip-tester kamailio")
    rates = [int(r) for r in args.rates.split(",")]
    agents = args.agents or max(40, int(max(rates) * (args.hold / 1000 + 0.5) * 2))
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as name:
        os.chmod(name, 0o755)  # PostgreSQL runs as its own user when we are root
        bench = Bench(Path(name), agents)
        try:
            bench.start()
            bench.node("n1")
            bench.front(["n1"])
            bench.register()
            cpu_one = bench.cpu_per_call(rates[0], rates[0] * args.duration, args.hold)
            print(f"one_node: cpu_ms_per_call={cpu_one:.1f}", flush=True)
            one = bench.ladder("one_node", rates, args.duration, args.hold)
            bench.fresh_database("dispatchd_two")
            bench.node("n1")
            bench.node("n2")
            bench.front(["n1", "n2"])
            bench.register()
            cpu_two = bench.cpu_per_call(rates[0], rates[0] * args.duration, args.hold)
            print(f"two_nodes: cpu_ms_per_call={cpu_two:.1f}", flush=True)
            two = bench.ladder("two_nodes", rates, args.duration, args.hold)
            rate = args.death_rate or max(10, int(two / 2))
            failed, total = bench.death(rate, max(30, args.duration * 2), args.hold)
            print(f"death: rate={rate} calls={total} failed={failed}", flush=True)
        finally:
            bench.stop()
    ratio = two / one if one else 0.0
    print(f"one_node_cps={one:.0f} two_node_cps={two:.0f} ratio={ratio:.2f} "
          f"death_failed={failed} death_calls={total} cpu_ms_per_call_one={cpu_one:.0f} "
          f"cpu_ms_per_call_two={cpu_two:.0f}")


if __name__ == "__main__":
    main()
