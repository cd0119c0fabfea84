#!/usr/bin/env python3
"""Calls per second through Kamailio with one dispatchd node and with two; calls lost at a death.

Builds the loopback cluster of ``scripts/cluster`` (private PostgreSQL, Kamailio
with the shipped conf/kamailio/kamailio.cfg, ``dispatchd run`` nodes) in a
temporary directory, registers ``--agents`` call takers through Kamailio (their
Contact is one SIPp UAS that answers everything) and drives a SIPp carrier
(127.0.0.2, the trunk known by its source address) through Kamailio to hotline
110.  Each configuration climbs a ladder of rates (``--start``, ``--step`` up
to ``--max-rate``, ``--duration`` seconds each, calls held ``--hold`` ms) until
one is not sustained: more than 0.1 % failed, or SIPp's setup rate fell short of
``--min-setup`` (95 %) of the asked one; then ``--refine`` halvings of the gap
(down, halving, if even the first rate fails).  Its ceiling is the best sustained
rate.  First one node behind Kamailio, then two (each on a fresh database).
Then the two-node cluster runs at ``--death-rate`` calls/s while one node is
SIGKILLed: the failed calls are the ones that died with it (its live calls, and
the ones Kamailio sent it before it was marked down).

Every rate prints one line: SIPp's figures, load1 at its end, and the CPU per
call of each part, measured from /proc until the nodes are idle again (so the
CDR, audit and voice report written after a call count): each node's (per call
it was offered), Kamailio's (all its processes), PostgreSQL's (postmaster and
backends), the carrier SIPp's and the agents' SIPp's.  On a 2-core machine two
nodes can only gain 1.6x if the others stay small beside a node's share.

    python bench/cluster_calls.py [--start 25 --step 25 --max-rate 250] [--duration 15]

Profiling one node of the two-node layout: ``--rates 150 --two-only --once
--profile DIR`` skips the one-node ladder and the death run, runs each rate once,
and leaves py-spy collapsed stacks of each node in ``DIR/n1.txt`` and ``DIR/n2.txt``
(py-spy samples the nodes: their CPU per call reads higher while profiled).

Last line: ``one_node_cps=X two_node_cps=Y ratio=R death_failed=F death_calls=N
cpu_ms_per_call_one=A cpu_ms_per_call_two=B load1_one=L1 load1_two=L2``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.machinery
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
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


def _seconds(value: str) -> float:
    """SIPp's ElapsedTime (``HH:MM:SS``, ``HH:MM:SS:micro`` or seconds) in seconds."""
    parts = [float(p) for p in value.strip().split(":")]
    if len(parts) >= 3:
        micro = parts[3] / 1e6 if len(parts) > 3 else 0.0
        return parts[0] * 3600 + parts[1] * 60 + parts[2] + micro
    return parts[0]


def stats(path: Path) -> dict[str, float]:
    """Totals from a SIPp -stf file, and the setup rate while calls were being placed.

    SIPp's cumulative ``CallRate(C)`` divides by the whole run, the last calls'
    hold time included, so it reads low; the setup rate here is the calls placed
    by the last periodic row before the final call was placed, over its elapsed time.
    """
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    last = rows[-1]
    placed = float(last["OutgoingCall(C)"])
    rate = float(last["CallRate(C)"])
    creating = [r for r in rows if 0 < float(r["OutgoingCall(C)"]) < placed]
    if creating:
        elapsed = _seconds(creating[-1]["ElapsedTime(C)"])
        if elapsed >= 1.0:
            rate = float(creating[-1]["OutgoingCall(C)"]) / elapsed
    return {"ok": float(last["SuccessfulCall(C)"]), "failed": float(last["FailedCall(C)"]),
            "rate": rate, "placed": placed}


@dataclass
class RateResult:
    """One rate of a ladder: SIPp's figures, load1 at its end, CPU per call of each part."""

    rate: int
    achieved: float
    ok: int
    failed: int
    load1: float
    nodes: dict[str, tuple[float, int]]  # node: (CPU ms per call it was offered, calls)
    peers: dict[str, float]  # kamailio, postgres, sipp_uas, sipp_carrier: CPU ms per call

    @property
    def failed_pct(self) -> float:
        """Failed calls, percent of those placed."""
        total = self.ok + self.failed
        return 100.0 * self.failed / total if total else 100.0

    def sustained(self, duration: int, min_setup: float) -> bool:
        """At most 0.1 % failed, every call placed, the setup rate ``min_setup`` of asked."""
        return (self.failed_pct <= 0.1 and self.ok + self.failed >= self.rate * duration
                and self.achieved >= min_setup * self.rate)

    def why(self, duration: int, min_setup: float) -> str:
        """Why this rate is not sustained."""
        if self.failed_pct > 0.1:
            return f"{self.failed_pct:.2f} % failed"
        if self.ok + self.failed < self.rate * duration:
            return "not every call was placed"
        return (f"setup rate {self.achieved:.1f}/s short of {min_setup:.0%} of "
                f"{self.rate}/s")

    def node_ms(self) -> float:
        """CPU ms per call of all nodes together."""
        calls = sum(c for _, c in self.nodes.values()) or 1
        return sum(ms * c for ms, c in self.nodes.values()) / calls

    def line(self) -> str:
        """The per-rate report line."""
        nodes = " ".join(f"{n}_calls={c} {n}_cpu_ms_per_call={ms:.2f}"
                         for n, (ms, c) in sorted(self.nodes.items()))
        peers = " ".join(f"{k}_cpu_ms_per_call={v:.2f}" for k, v in sorted(self.peers.items()))
        return (f"rate={self.rate} achieved={self.achieved:.1f} ok={self.ok} "
                f"failed={self.failed} failed_pct={self.failed_pct:.3f} load1={self.load1:.2f} "
                f"{nodes} {peers}")


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used; 0 if it is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_s(root: int) -> float:
    """CPU seconds of ``root``, its reaped children and its live descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
    try:
        fields = _stat_fields(root)
    except OSError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    for pid in parents:
        up, seen = parents.get(pid), 0
        while up and up != root and seen < 64:
            up, seen = parents.get(up), seen + 1
        if up == root and pid != root:
            total += cpu_s(pid)
    return total


def children_cpu_s() -> float:
    """CPU seconds of this script's reaped children (the carrier SIPp after each rate)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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

    def __init__(self, tmp: Path, agents: int, min_setup: float = 0.95) -> None:
        self.script = load_script()
        self.min_setup = min_setup
        self.once = False  # --once: each of --rates once, no ladder
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

    def node_cpu_s(self, name: str) -> float:
        """CPU seconds node ``name`` has used (user + system)."""
        proc = self.nodes.get(name)
        return cpu_s(proc.pid) if proc is not None and proc.poll() is None else 0.0

    def cpu_s(self) -> float:
        """CPU seconds the running nodes have used."""
        return sum(self.node_cpu_s(n) for n in self.nodes)

    def peers_cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by Kamailio, PostgreSQL and the agents' SIPp (with children)."""
        pg_pid = self.script_pg_pid()
        return {"kamailio": group_cpu_s(self.kamailio.pid) if self.kamailio else 0.0,
                "postgres": group_cpu_s(pg_pid) if pg_pid else 0.0,
                "sipp_uas": group_cpu_s(self.uas.pid) if self.uas else 0.0}

    def script_pg_pid(self) -> int | None:
        """The postmaster's pid (its backends are its children)."""
        try:
            return int((self.layout.run_dir / "pg" / "data" / "postmaster.pid")
                       .read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def offered(self, name: str) -> int:
        """Calls node ``name`` has been offered (its /health)."""
        _, _, http = next(n for n in self.layout.nodes if n[0] == name)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=10) as r:
                doc = json.load(r)
            return int(doc["services"]["sip"]["detail"]["calls"].get("offered", 0))
        except (OSError, KeyError, ValueError, TypeError):
            return 0

    def settle(self) -> None:
        """Wait until the nodes are idle again (their record writers have caught up)."""
        last = self.cpu_s()
        for _ in range(60):
            time.sleep(3)
            now = self.cpu_s()
            if now - last < 0.05 * len(self.nodes):
                return
            last = now

    def run_rate(self, label: str, rate: int, duration: int, hold: int) -> RateResult:
        """One rate: SIPp figures, load1, and CPU per call of every part (after settling)."""
        self.settle()
        names = sorted(self.nodes)
        before_nodes = {n: (self.node_cpu_s(n), self.offered(n)) for n in names}
        before_peers = self.peers_cpu_s()
        before_sipp = children_cpu_s()
        stf = self.tmp / f"{label}-{rate}.csv"
        proc = sipp_load(self.layout.kam_port, rate, rate * duration, hold, stf, self.tmp,
                         duration * 3 + 30)
        proc.wait(duration * 4 + 60)
        load1 = float(Path("/proc/loadavg").read_text().split()[0])
        sipp_cpu = children_cpu_s() - before_sipp  # the carrier SIPp, reaped just now
        self.settle()
        s = stats(stf)
        calls = max(s["ok"] + s["failed"], 1.0)
        per_node = {}
        for n in names:
            cpu0, offered0 = before_nodes[n]
            handled = max(self.offered(n) - offered0, 1)
            per_node[n] = ((self.node_cpu_s(n) - cpu0) * 1000 / handled, handled)
        peers = {k: (v - before_peers[k]) * 1000 / calls
                 for k, v in self.peers_cpu_s().items()}
        peers["sipp_carrier"] = sipp_cpu * 1000 / calls
        result = RateResult(rate, s["rate"], int(s["ok"]), int(s["failed"]), load1,
                            per_node, peers)
        print(f"{label}: {result.line()}", flush=True)
        return result

    def ladder(self, label: str, rates: list[int], duration: int, hold: int,
               refine: int) -> RateResult | None:
        """Rising rates until one fails, then a few halvings of the gap: the best sustained.

        A rate is sustained when at most 0.1 % of its calls failed, every call was
        placed, and SIPp's setup rate reached ``--min-setup`` of the asked one (a setup
        rate that falls short means the cluster, or the machine, could not keep up).
        If even the first rate fails, the ladder goes down (halving) instead.
        """
        best: RateResult | None = None
        good = bad = None
        r_last: list[RateResult] = []

        def attempt(rate: int) -> bool:
            nonlocal best, good, bad
            r = self.run_rate(label, rate, duration, hold)
            r_last.append(r)
            if not r.sustained(duration, self.min_setup):
                print(f"{label}: rate={rate} not sustained ({r.why(duration, self.min_setup)})",
                      flush=True)
                bad = rate if bad is None else min(bad, rate)
                return False
            good = rate if good is None else max(good, rate)
            if best is None or r.achieved > best.achieved:
                best = r
            return True

        for rate in rates:
            if not attempt(rate) and not self.once:
                break
        if self.once:
            return best or r_last[-1]
        rate = rates[0] // 2
        while good is None and rate >= 1:
            attempt(rate)
            rate //= 2
        for _ in range(refine):
            if good is None or bad is None or bad - good <= max(2, good // 20):
                break
            attempt((good + bad) // 2)
        print(f"{label}: ceiling={best.achieved if best else 0:.1f}/s (last sustained "
              f"{good}/s, first not {bad}/s)", flush=True)
        return best

    def profile(self, out: Path) -> list[subprocess.Popen[bytes]]:
        """py-spy recording each running node into ``out/<node>.txt`` (collapsed stacks)."""
        out.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        return [subprocess.Popen([spy, "record", "-p", str(proc.pid), "-f", "raw", "-o",
                                  str(out / f"{name}.txt"), "--gil", "-r", "200"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for name, proc in sorted(self.nodes.items())]

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


def rate_steps(args: argparse.Namespace) -> list[int]:
    """The rates to try, rising: ``--rates`` if given, else start, start+step, ... max."""
    if args.rates:
        return sorted(int(r) for r in args.rates.split(","))
    return list(range(args.start, args.max_rate + 1, args.step))


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="", help="explicit rates (default: a ladder)")
    parser.add_argument("--start", type=int, default=25, help="first rate of the ladder")
    parser.add_argument("--step", type=int, default=25, help="ladder step, calls/s")
    parser.add_argument("--max-rate", type=int, default=250, help="highest rate tried")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--refine", type=int, default=2,
                        help="halvings of the gap between the last good and first bad rate")
    parser.add_argument("--min-setup", type=float, default=0.95,
                        help="SIPp's setup rate must reach this share of the asked rate")
    parser.add_argument("--hold", type=int, default=1000, help="call length, ms")
    parser.add_argument("--agents", type=int, default=0)
    parser.add_argument("--death-rate", type=int, default=0,
                        help="calls/s during the node's death (default: half of two-node)")
    parser.add_argument("--profile", default="",
                        help="directory for py-spy collapsed stacks of each node of the "
                             "two-node run (n1.txt, n2.txt; needs py-spy)")
    parser.add_argument("--once", action="store_true",
                        help="run each of --rates once (no ladder): a CPU-per-call figure")
    parser.add_argument("--two-only", action="store_true",
                        help="skip the one-node ladder and the death run (profiling)")
    args = parser.parse_args()
    # A plain `kill` must still stop the cluster this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: apt-get install -y sip-tester kamailio")
    rates = rate_steps(args)
    agents = args.agents or max(40, int(max(rates) * (args.hold / 1000 + 0.5) * 2))
    print(f"cores={os.cpu_count()} load1_at_start="
          f"{Path('/proc/loadavg').read_text().split()[0]} rates={rates}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as name:
        os.chmod(name, 0o755)  # PostgreSQL runs as its own user when we are root
        bench = Bench(Path(name), agents, args.min_setup)
        bench.once = args.once
        try:
            bench.start()
            one = None
            if not args.two_only:
                bench.node("n1")
                bench.front(["n1"])
                bench.register()
                one = bench.ladder("one_node", rates, args.duration, args.hold, args.refine)
            bench.fresh_database("dispatchd_two")
            bench.node("n1")
            bench.node("n2")
            bench.front(["n1", "n2"])
            bench.register()
            spies = bench.profile(Path(args.profile)) if args.profile else []
            try:
                two = bench.ladder("two_nodes", rates, args.duration, args.hold, args.refine)
            finally:
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
            failed = total = 0
            if not args.two_only:
                best_two = two.achieved if two else 0.0
                rate = args.death_rate or max(10, int(best_two / 2))
                failed, total = bench.death(rate, max(30, args.duration * 2), args.hold)
                print(f"death: rate={rate} calls={total} failed={failed}", flush=True)
        finally:
            bench.stop()
    one_cps = one.achieved if one else 0.0
    two_cps = two.achieved if two else 0.0
    ratio = two_cps / one_cps if one_cps else 0.0
    capped = " (at --max-rate: raise it)" if two and two.rate == rates[-1] else ""
    print(f"best: one_node={one.line() if one else '-'}")
    print(f"best: two_nodes={two.line() if two else '-'}{capped}")
    if two:
        # On 2 cores one node is bound by one core (N ms per call); two nodes share both
        # cores with Kamailio, PostgreSQL and SIPp (P ms per call): 2N / (N + P) at best.
        node_ms, peers_ms = two.node_ms(), sum(two.peers.values())
        print(f"cpu_bound: node_ms_per_call={node_ms:.1f} others_ms_per_call={peers_ms:.1f} "
              f"best_ratio_on_2_cores={2 * node_ms / (node_ms + peers_ms):.2f}")
    print(f"one_node_cps={one_cps:.0f} two_node_cps={two_cps:.0f} ratio={ratio:.2f} "
          f"death_failed={failed} death_calls={total} "
          f"cpu_ms_per_call_one={one.node_ms() if one else 0:.1f} "
          f"cpu_ms_per_call_two={two.node_ms() if two else 0:.1f} "
          f"load1_one={one.load1 if one else 0:.2f} load1_two={two.load1 if two else 0:.2f}")


if __name__ == "__main__":
    main()
