#!/usr/bin/env python3
"""CPU per call of the SIP path alone: endpoint, transactions, registrar, B2BUA, ACD.

``bench/sip_calls.py`` measures the whole daemon, where writing call records,
audit rows and voice reports to the database costs most of the CPU and varies
with the machine's load.  This one composes the telephony side exactly as
``dispatch/sip_service.py`` does (same config file, same classes) but with the
registrar's in-memory stores and no event hub or record writer behind the
B2BUA's events, in this process, on one asyncio loop.  The peers are real:
SIPp registers the agents (digest) and answers as their softphones; a SIPp UAC
calls hotline 110 through the trunk.  The figure is this process's CPU time
(user + system, so the kernel's share of the UDP sends counts) divided by the
calls, so it stays meaningful on a busy machine; the wall rate is not a target.

    python bench/sip_b2bua_cpu.py [--rate 100] [--calls 3000] [--hold 200] [--uvloop]
                                  [--no-settle]

As in the daemon, the start-up heap is frozen (:func:`dispatch.runtime.settle_heap`)
once the agents are registered; ``--no-settle`` leaves CPython's collector as is.

Last line: ``sip_cpu_ms_per_call=X calls=N failed=F retrans=R``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sip_calls import telephony_config  # noqa: E402

from dispatch.config import load_settings  # noqa: E402
from dispatch.runtime import settle_heap  # noqa: E402
from telephony.b2bua.anchor import PassThroughAnchor  # noqa: E402
from telephony.b2bua.core import B2bua, B2buaSettings  # noqa: E402
from telephony.registrar.core import Registrar, RegistrarSettings  # noqa: E402
from telephony.registrar.events import BindingAdded  # noqa: E402
from telephony.registrar.store import MemoryBindingStore, MemoryCredentialStore  # noqa: E402
from telephony.routing import Router  # noqa: E402
from telephony.sip.transport import (  # noqa: E402
    ListenAddress,
    MethodRouter,
    SipEndpoint,
    TransportSettings,
)

SIPP_DIR = ROOT / "tests" / "b2bua" / "sipp"
PASSWORD = "bench-password"
DOMAIN = "dispatch.test"


def free_port() -> int:
    """A UDP port free a moment ago."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """The telephony side of the SIP service, wired as dispatch/sip_service.py wires it."""

    def __init__(self, tmp: Path, trunk_port: int, agents: list[str]) -> None:
        path = tmp / "dispatchd.toml"
        path.write_text(telephony_config(trunk_port, agents))
        settings = load_settings(str(path))
        sip, telephony = settings.sip, settings.telephony()
        reg = sip.registrar
        self.events = 0
        self.registrar = Registrar(
            RegistrarSettings(realm=DOMAIN, domain=DOMAIN, exempt_networks=reg.exempt_networks,
                              max_failures=reg.max_failures, rate=reg.rate, burst=reg.burst),
            b"bench-secret-of-32-bytes-or-so!!", MemoryBindingStore(),
            MemoryCredentialStore.from_passwords(DOMAIN, {a: PASSWORD for a in agents}),
            on_event=self._registrar_event, clock=time.time)
        self.b2bua = B2bua(
            B2buaSettings(sip.domain, sip.max_calls, float(sip.session_expires),
                          sip.ringback_180, sip.user_agent, hold_prompt=None,
                          min_se=sip.min_se),
            self.registrar, Router(telephony.routing), self._acd(telephony), telephony.trunks,
            PassThroughAnchor(), on_event=self._event, wall_clock=time.time)
        self.endpoint = SipEndpoint(TransportSettings(
            listen=(ListenAddress("UDP", "127.0.0.1", 0),),
            allow=("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "UPDATE", "INFO",
                   "REFER", "PRACK")))
        router = MethodRouter(self.endpoint, fallback=self.b2bua)
        router.route("REGISTER", self.registrar)
        self.endpoint.user = router
        self.registrar.attach(self.endpoint)
        self.b2bua.attach(self.endpoint)

    @staticmethod
    def _acd(telephony: object) -> object:
        from telephony.acd.engine import AcdEngine

        return AcdEngine(telephony.acd)  # type: ignore[attr-defined]

    def _event(self, event: object) -> None:
        self.events += 1

    def _registrar_event(self, event: object) -> None:
        self.events += 1
        if isinstance(event, BindingAdded):
            agent = event.binding.aor.removeprefix("sip:").split("@", 1)[0]
            self.b2bua.agent_action(agent, "login", reason="registered")

    async def start(self) -> int:
        """Listen; the bound port."""
        await self.endpoint.start()
        await self.registrar.start()
        await self.b2bua.start()
        return self.endpoint.bound[0].port

    async def stop(self) -> None:
        """Release everything."""
        await self.b2bua.stop()
        await self.registrar.stop()
        await self.endpoint.stop()


async def sipp(*args: str, cwd: Path) -> int:
    """Run SIPp to completion without blocking the loop."""
    proc = await asyncio.create_subprocess_exec(
        shutil.which("sipp") or "sipp", *args, "-nostdin", cwd=cwd,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return await proc.wait()


def sipp_totals(path: Path) -> dict[str, float]:
    """Successful, failed and retransmission totals from a SIPp -stf file."""
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, last = rows[0], rows[-1]
    return {k: float(last[header.index(f"{k}(C)")])
            for k in ("SuccessfulCall", "FailedCall", "Retransmissions")}


class GcClock:
    """Seconds spent in the cyclic garbage collector (gc.callbacks), per generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._began
            self.counts[info["generation"]] += 1

    def reset(self) -> None:
        """Start counting from zero."""
        self.seconds, self.counts = [0.0, 0.0, 0.0], [0, 0, 0]


def cpu() -> float:
    """This process's user + system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace, tmp: Path) -> None:
    """Register the agents, place the calls, print the figures."""
    gc_clock = GcClock()
    agents = [f"a{i}" for i in range(args.agents)]
    trunk_port, agent_port = free_port(), free_port()
    stack = Stack(tmp, trunk_port, agents)
    port = await stack.start()
    uas = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SIPP_DIR / "agent_uas.xml"), "-i", "127.0.0.1", "-p",
        str(agent_port), "-nostdin", "-mp", str(free_port()), cwd=tmp,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (tmp / "agents.csv").write_text("SEQUENTIAL\n" + "".join(
            f"{a};[authentication username={a} password={PASSWORD}];{agent_port}\n"
            for a in agents))
        await sipp(f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "register_agent.xml"), "-inf",
                   str(tmp / "agents.csv"), "-i", "127.0.0.1", "-p", str(free_port()),
                   "-m", str(len(agents)), "-r", "200", cwd=tmp)
        if not args.no_settle:
            settle_heap()  # as the daemon does once started
        if args.gc_threshold:
            gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))
        ready = sum(1 for a in agents
                    if stack.b2bua.acd.agent_status(a).state.value != "logged_out")
        print(f"agents_logged_in={ready} of {len(agents)}", flush=True)
        stf = tmp / "calls.csv"
        gc_clock.reset()
        before, began = cpu(), time.monotonic()
        await sipp(f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "trunk_call.xml"), "-s", "110",
                   "-i", "127.0.0.1", "-p", str(trunk_port), "-mp", str(free_port()),
                   "-r", str(args.rate), "-m", str(args.calls), "-d", str(args.hold),
                   "-trace_stat", "-stf", str(stf), "-fd", "1", "-recv_timeout", "10000",
                   "-timeout", f"{args.calls // args.rate * 3 + 60}s", cwd=tmp)
        used, wall = cpu() - before, time.monotonic() - began
        totals = sipp_totals(stf)
        calls = totals["SuccessfulCall"] + totals["FailedCall"]
        runs = zip(gc_clock.counts, gc_clock.seconds, strict=True)
        print(f"gc_s={sum(gc_clock.seconds):.2f} gc_by_generation="
              f"{'/'.join(f'{n}x{t:.2f}s' for n, t in runs)}")
        print(f"wall_s={wall:.1f} cpu_s={used:.2f} events={stack.events} "
              f"loop={type(asyncio.get_running_loop()).__module__}", flush=True)
        print(f"sip_cpu_ms_per_call={1000 * used / max(calls, 1):.3f} calls={calls:.0f} "
              f"failed={totals['FailedCall']:.0f} retrans={totals['Retransmissions']:.0f}")
    finally:
        uas.terminate()
        await uas.wait()
        await stack.stop()


def main() -> None:
    """Parse the options and run on the chosen loop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--hold", type=int, default=200, help="call length, ms")
    parser.add_argument("--agents", type=int, default=0, help="default: rate x hold x 2, >= 20")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--gc-threshold", default="", help="gen0,gen1,gen2 to try instead")
    parser.add_argument("--no-settle", action="store_true",
                        help="leave the garbage collector as CPython sets it")
    args = parser.parse_args()
    args.agents = args.agents or max(20, int(args.rate * (args.hold / 1000 + 0.5) * 2))
    with tempfile.TemporaryDirectory() as name:
        if args.uvloop:
            import uvloop

            uvloop.run(run(args, Path(name)))
        else:
            asyncio.run(run(args, Path(name)))


if __name__ == "__main__":
    main()
