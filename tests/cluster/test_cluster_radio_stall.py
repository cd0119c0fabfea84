"""A node stalled (SIGSTOP) while driving a keyed radio: nothing is keyed by two nodes.

Both real ``dispatchd run`` nodes of the loopback cluster are configured with
the same TETRA gateway (the emulator's pty); the radio lease decides which one
drives it.  n1 keys talkgroup 9001 and is stopped past ``dead_after_s``: n2
takes the node over and, at its next look at the lease, the radios — its first
command is a hang-up, so the radio is unkeyed.  n1 is then woken: it must find
it was taken over and let go of the gateway without keying anything; a PTT
pressed on n1 (even the one that waited in its socket during the stall) goes
to n2, which keys the radio once.  n1 stands by rather than leaving its radio
service stopped: when n2 is killed in turn, n1 takes the gateway back (its first
command a release) and keys it again, once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
from clusterpeer import ROOT, Cluster, until

sys.path.insert(0, str(ROOT / "tests" / "radio"))
from radioharness import Plugged  # noqa: E402

from hardware.emulators import TetraRadioEmulator  # noqa: E402

RADIO = """
[[radio.gateways]]
name = "tetra1"
kind = "tetra"
device = "{device}"
retry_s = 0.2
hang_time_s = 0.0

[[radio.talkgroups]]
name = "fire"
gssi = "9001"
gateway = "tetra1"
"""
KEYING = ("ATD", "AT+CTXD")


async def ptt(url: str, headers: dict[str, str], release: bool = False) -> httpx.Response:
    """Press (or release) PTT on talkgroup fire through ``url``'s API."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await client.request("DELETE" if release else "POST",
                                    "/api/v1/radio/talkgroups/fire/ptt", headers=headers)


async def service_health(url: str, name: str) -> dict[str, Any]:
    """One service's entry in a node's /health."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        doc = (await client.get("/health")).json()
    return dict(doc["services"][name])


async def cluster_health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        doc = (await client.get("/health")).json()
    return dict(doc["services"]["cluster"]["detail"])


async def test_a_stalled_node_never_keys_the_radio_its_survivor_drives(
        cluster_factory: Any, tmp_path: Path) -> None:
    tetra = Plugged(TetraRadioEmulator(), tmp_path / "ttyTETRA0")
    tetra.plug()
    radio = tetra.emulator
    n1 = n2 = None
    try:
        c: Cluster = await cluster_factory([], RADIO.format(device=tetra.link))
        admin = await asyncio.to_thread(c.token, "adm", "admin")
        n1, n2 = c.nodes["n1"], c.nodes["n2"]
        await tetra.command("AT+CTGS=1,9001")  # n1 (started first) drives the gateway
        r = await ptt(c.url("n1"), admin)
        assert r.status_code == 200 and r.json()["events"][0]["event"] == "granted", r.text
        await tetra.command("ATD9001")
        assert radio.calls[1].talker == "self"  # type: ignore[attr-defined]

        before = len(radio.commands)
        n1.proc.send_signal(signal.SIGSTOP)
        pressed: asyncio.Task[httpx.Response] | None = None
        try:
            await c.taken_over("n2", "n1")
            # n2's radio retry takes the lease; its first command hangs the call up.
            await until(lambda: "ATH" in radio.commands[before:], "n2 to take the radio")
            await until(lambda: radio.calls == {}, "the radio unkeyed")  # type: ignore[attr-defined]
            # ... and finishes initialising it before n1 wakes: both nodes have the emulator's
            # pty open (one device shared as two hosts cannot share a serial port), so n1,
            # woken, may read an answer meant for n2 until it closes its port.
            await until(lambda: _gateway_up(c, "n2"), "n2 to drive the radio")
            woke = len(radio.commands)
            # A dispatcher on n1's console presses PTT while n1 is stopped: the request
            # waits in the socket and is the first thing n1 handles when it wakes.
            pressed = asyncio.ensure_future(ptt(c.url("n1"), admin))
            port = int(c.url("n1").rsplit(":", 1)[1])
            await until(lambda: _bytes_waiting(port), "the PTT request to wait in n1's socket")
        finally:
            n1.proc.send_signal(signal.SIGCONT)
        assert pressed is not None
        # Woken, n1 does not key: it settles with one heartbeat first (taken over, it lets
        # go of the gateway and closes the port), then sends the press on to n2.
        r = await asyncio.wait_for(pressed, 60)
        assert r.status_code == 200 and r.headers.get("x-dispatchd-node") == "n2", r.text
        assert r.json()["events"][0]["event"] == "granted", r.text
        fenced = await asyncio.to_thread(
            n1.read_until, lambda e: str(e.get("msg", "")).startswith(
                "this node was declared dead while it stalled"), 60)
        assert fenced is not None, "the woken node did not find out it had been taken over"
        c.drain("n1")
        c.drain("n2")
        await until(lambda: keyed(radio), lambda: f"n2 keyed: {radio.commands[woke:]}")
        # n1 has let go (its fencing handlers ran, it rejoined under a new generation) and
        # stands by: its radio service waits for the lease, it is not stopped for good.
        health = await until(lambda: _rejoined(c), "n1 to rejoin after fencing")
        assert health["fenced"] == 1 and "radio" not in health["leases"]
        radio_state = await service_health(c.url("n1"), "radio")
        assert radio_state["state"] == "failed" and "standing by" in radio_state["last_error"]
        r = await ptt(c.url("n1"), admin, release=True)  # released from the same console
        assert r.status_code == 200 and r.headers.get("x-dispatchd-node") == "n2", r.text
        assert r.json()["events"][0]["event"] == "released", r.text
        await until(lambda: not keyed(radio), "the radio unkeyed by n2")
        assert [cmd for cmd in radio.commands[woke:] if cmd.startswith(KEYING)] == [
            "ATD9001"], radio.commands[woke:]

        # n2 dies: n1, standing by, takes the gateway back; its first command on the
        # reopened port is a release, and it keys once for the next press.
        killed = len(radio.commands)
        n2.proc.kill()
        await asyncio.to_thread(n2.proc.wait, 30)
        await until(lambda: _gateway_up(c, "n1"), "n1 to drive the radio again")
        assert radio.commands[killed] in ("ATH",) or radio.commands[killed].startswith(
            "AT+CUTXC"), radio.commands[killed:]
        r = await ptt(c.url("n1"), admin)
        assert r.status_code == 200 and "x-dispatchd-node" not in r.headers, r.text
        assert r.json()["events"][0]["event"] == "granted", r.text
        await until(lambda: keyed(radio), lambda: f"n1 keyed: {radio.commands[killed:]}")
        assert len([cmd for cmd in radio.commands[killed:] if cmd.startswith(KEYING)]) == 1, \
            radio.commands[killed:]
    finally:
        for proc in (n1, n2):
            if proc is not None and proc.proc.poll() is None:
                proc.signal(signal.SIGTERM)
                await asyncio.to_thread(proc.proc.wait, 60)
        radio.close()


def _bytes_waiting(port: int) -> bool:
    """True when an established connection to local ``port`` has unread bytes."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.split(":")[1], 16) == port and state == "01" and \
                int(queues.split(":")[1], 16) > 0:
            return True
    return False


def keyed(radio: Any) -> bool:
    """True while the emulated radio transmits for a node."""
    return any(t.talker == "self" for t in radio.calls.values())


async def _gateway_up(c: Cluster, node: str) -> bool:
    radio = await service_health(c.url(node), "radio")
    return bool(radio["state"] == "running" and radio["detail"]["lease_held"]
                and radio["detail"]["gateways"]["tetra1"]["state"] == "up")


async def _rejoined(c: Cluster) -> dict[str, Any] | None:
    health = await cluster_health(c.url("n1"))
    return health if health.get("fenced") and health.get("may_act") else None
