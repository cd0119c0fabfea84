"""Overload control: a saturated B2BUA sheds new calls with 503 instead of collapsing.

The guard's rules run on stepped samples; the daemon is then really stalled
(SIGSTOP, the way a CPU-starved process looks from the outside) and a real
SIPp carrier's 12345 call gets 503 + Retry-After while its 110 call still
comes in and is answered.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
from b2bua_helpers import SipDaemon, SippServer, errors, free_port, register_agents
from test_b2bua_sipp import call, trunk, wait_for

from telephony.b2bua.overload import OverloadGuard, OverloadSettings


def test_late_samples_shed_low_priority_then_everything_then_recover() -> None:
    guard = OverloadGuard(OverloadSettings(shed_lag_s=0.3, shed_all_lag_s=2.0,
                                           keep_priority=30, hold_s=2.0))
    guard.sample(0.0, 0.01)
    assert guard.admit(0.0, 10) and guard.admit(0.0, 30)
    guard.sample(1.0, 0.5)  # a backlog: 12345 (10) and 122 (20) are shed, 110 (30) kept
    assert guard.state(1.0) == "shedding"
    assert not guard.admit(1.1, 10) and not guard.admit(1.1, 20) and guard.admit(1.1, 30)
    guard.sample(1.5, 0.01)  # one good sample does not end it (hold)
    assert not guard.admit(2.9, 10)
    assert guard.admit(3.1, 10) and guard.state(3.1) == "ok"
    guard.sample(4.0, 2.5)  # collapse ahead: even emergency calls go to the backup centre
    assert guard.state(4.0) == "shedding_all" and not guard.admit(4.0, 30)
    assert guard.state(6.1) == "ok"
    assert guard.counts == {"shed": 4, "shed_emergency": 1, "overloads": 2}
    assert guard.health(6.1)["max_lag_ms"] == 2500.0


def test_zero_thresholds_never_shed() -> None:
    guard = OverloadGuard(OverloadSettings(shed_lag_s=0, shed_all_lag_s=0))
    guard.sample(0.0, 30.0)
    assert guard.state(0.0) == "ok" and guard.admit(0.0, 0)


def test_emergency_calls_are_kept_when_all_lag_is_zero() -> None:
    guard = OverloadGuard(OverloadSettings(shed_lag_s=0.2, shed_all_lag_s=0, hold_s=1.0))
    guard.sample(0.0, 10.0)
    assert guard.state(0.0) == "shedding" and guard.admit(0.0, 30) and not guard.admit(0.0, 29)


def _overload(sip: SipDaemon) -> dict[str, Any]:
    health = httpx.get(f"{sip.proc.url}/health").json()
    detail: dict[str, Any] = health["services"]["sip"]["detail"]["calls"]["overload"]
    return detail


async def test_a_stalled_daemon_sheds_12345_with_503_and_still_takes_110(
        tmp_path: Path, started: list[object]) -> None:  # noqa: F811 - the fixture
    carrier = free_port()
    sip = SipDaemon(tmp_path, agents={"alice": ["police"]}, trunks=trunk(carrier),
                    extra_sip="session_expires = 90\n[sip.overload]\nlag_ms = 300\n"
                              "all_lag_ms = 0\nhold_s = 20\nretry_after_s = 7")
    started.append(sip)
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    assert (await register_agents(sip, tmp_path, {"alice": agent_port}))[0] == 0
    # A busy machine can make start-up itself late enough to shed for a while: wait it out.
    await wait_for(lambda: _overload(sip)["state"] == "ok", "no overload", timeout=120)

    sip.proc.signal(signal.SIGSTOP)  # what a CPU-starved daemon looks like from outside
    await asyncio.sleep(1.5)
    sip.proc.signal(signal.SIGCONT)
    state = await wait_for(lambda: (o := _overload(sip))["state"] != "ok" and o,
                           "the stall seen as overload")
    assert state["state"] == "shedding" and state["max_lag_ms"] >= 1000

    code, out = await call(sip, tmp_path, "expect_503_retry.xml", "12345", carrier)
    assert code == 0, out + errors(tmp_path)
    code, out = await call(sip, tmp_path, "trunk_call.xml", "110", carrier, "-d", "200")
    assert code == 0, out + errors(tmp_path)
    shed = await asyncio.to_thread(_overload, sip)
    assert (shed["shed"], shed["shed_emergency"]) == (1, 0)
    refused = await wait_for(lambda: sip.rows(
        "SELECT details FROM audit_log WHERE action = 'call.refused'"), "the refusal audited")
    assert "overloaded" in str(refused[0][0]) and "12345" in str(refused[0][0])
