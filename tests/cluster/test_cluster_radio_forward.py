"""PTT on the standby node of a real loopback cluster keys the radio through the holder.

Both real ``dispatchd run`` nodes are configured with the same two TETRA
gateways (emulators on ptys); n1, started first, holds the radio lease and
drives them.  A dispatcher whose console is served by n2 presses and releases
PTT over HTTP and over n2's SSH console: n2 sends each command on to n1, which
keys the real (emulated) radio once per press, releases it, and audits it.  A
floor keyed through n2 and never released is still ended by the holder's
transmit time-out (the dead-man), and a request already forwarded once is never
forwarded again.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import asyncssh
import httpx
from clusterpeer import ROOT, Cluster, until
from sqlalchemy import select

from dispatch.models import AuditEntry
from dispatch.storage import Database

sys.path.insert(0, str(ROOT / "tests" / "radio"))
from radioharness import Plugged  # noqa: E402

from hardware.emulators import TetraRadioEmulator  # noqa: E402

RADIO = """
[[radio.gateways]]
name = "tetra1"
kind = "tetra"
device = "{fire}"
retry_s = 0.2
hang_time_s = 0.0

[[radio.gateways]]
name = "tetra2"
kind = "tetra"
device = "{rescue}"
retry_s = 0.2
hang_time_s = 0.0
tx_timeout_s = 1

[[radio.talkgroups]]
name = "fire"
gssi = "9001"
gateway = "tetra1"

[[radio.talkgroups]]
name = "rescue"
gssi = "9002"
gateway = "tetra2"
"""
KEYING = ("ATD", "AT+CTXD")
NOT_HERE = "this node does not drive the radio gateways now"


def keyed(radio: TetraRadioEmulator) -> bool:
    """True while the radio transmits for us."""
    return any(call.talker == "self" for call in radio.calls.values())


def keyings(radio: TetraRadioEmulator) -> list[str]:
    """Every command that keyed the radio."""
    return [c for c in radio.commands if c.startswith(KEYING)]


async def ssh(c: Cluster, node: str, user: str, line: str) -> str:
    """Run one console command on ``node`` as ``user`` (password login); its output."""
    port = c.layout.ssh_ports[node]
    async with asyncssh.connect("127.0.0.1", port, username=user,
                                password=f"{user}-password-1", known_hosts=None,
                                client_keys=None) as conn:
        result = await conn.run(line, check=False)
    assert result.exit_status == 0, (line, result.stdout, result.stderr)
    return str(result.stdout)


async def test_ptt_on_the_standby_node_keys_the_radio_through_the_holder(
        cluster_factory: Any, tmp_path: Path) -> None:
    fire_dev = Plugged(TetraRadioEmulator(), tmp_path / "ttyTETRA1")
    rescue_dev = Plugged(TetraRadioEmulator(), tmp_path / "ttyTETRA2")
    fire_dev.plug()
    rescue_dev.plug()
    fire, rescue = fire_dev.emulator, rescue_dev.emulator
    db: Database | None = None
    try:
        c: Cluster = await cluster_factory(
            [], RADIO.format(fire=fire_dev.link, rescue=rescue_dev.link), ssh=True)
        disp = await asyncio.to_thread(c.token, "disp", "dispatcher")
        await fire_dev.command("AT+CTGS=1,9001")  # n1 (started first) drives the gateways
        await rescue_dev.command("AT+CTGS=1,9002")
        c.drain("n1")
        c.drain("n2")
        async with httpx.AsyncClient(base_url=c.url("n2"), timeout=30) as n2:
            # HTTP: a press on n2 is keyed by n1 (the answer says which node acted).
            r = await n2.post("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
            assert r.status_code == 200, r.text
            assert r.headers.get("x-dispatchd-node") == "n1"
            assert r.json()["events"][0]["event"] == "granted"
            assert r.json()["talkgroup"]["gateway_state"] == "up"
            await until(lambda: keyed(fire), "the radio keyed through n1")
            # Reads on n2 show the holder's live floor, not n2's idle copy.
            state = (await n2.get("/api/v1/radio/talkgroups/fire", headers=disp)).json()
            assert state["talker"] == "disp" and state["floor"] == "talking", state
            # The release from the same console ends it.
            r = await n2.delete("/api/v1/radio/talkgroups/fire/ptt", headers=disp)
            assert r.status_code == 200 and r.headers.get("x-dispatchd-node") == "n1", r.text
            assert r.json()["events"][0]["event"] == "released", r.text
            await until(lambda: not keyed(fire), "the radio unkeyed")
            # A request already forwarded once is handled where it lands (n2 refuses):
            # two nodes never bounce a press between them.
            r = await n2.post("/api/v1/radio/talkgroups/fire/ptt",
                              headers={**disp, "X-Dispatchd-Forwarded": "n9"})
            assert r.status_code == 200 and "x-dispatchd-node" not in r.headers
            assert r.json()["events"][0]["event"] == "denied"
            assert NOT_HERE in r.json()["events"][0]["why"]

            # SSH: n2's console relays the same commands to n1.
            assert await ssh(c, "n2", "disp", "ptt press fire") == "fire: granted disp\n"
            await until(lambda: keyed(fire), "the radio keyed from n2's SSH console")
            assert "disp" in await ssh(c, "n2", "disp", "show talkgroups")
            assert await ssh(c, "n2", "disp", "unkey fire") == "fire: released disp\n"
            await until(lambda: not keyed(fire), "the radio unkeyed from n2's SSH console")
            assert len(keyings(fire)) == 2, f"one keying per press, no more: {keyings(fire)}"

            # Dead-man: a floor keyed through n2 and never released is ended by the
            # holder's transmit time-out (tx_timeout_s = 1 on tetra2).
            r = await n2.post("/api/v1/radio/talkgroups/rescue/ptt", headers=disp)
            assert r.json()["events"][0]["event"] == "granted", r.text
            await until(lambda: keyed(rescue), "rescue keyed")
            await until(lambda: not keyed(rescue), "the time-out to unkey rescue")
            state = (await n2.get("/api/v1/radio/talkgroups/rescue", headers=disp)).json()
            assert state["talker"] is None and state["floor"] != "talking", state
            assert keyings(rescue) == ["ATD9002"]

        # The holder audited every press and release as the dispatcher's own; the SSH
        # relay's token is on record too.
        db = Database(c.layout.db_url)

        async def audited() -> list[tuple[str, str, str]]:
            assert db is not None
            async with db.session() as s:
                # (A denial on a node that does not drive the radios is not journalled.)
                rows = await s.scalars(select(AuditEntry).where(
                    AuditEntry.action.like("radio.floor_%"),
                    AuditEntry.action != "radio.floor_denied").order_by(AuditEntry.id))
                return [(r.actor, r.action, r.subject) for r in rows]

        expected = [("disp", "radio.floor_granted", "talkgroup:fire"),
                    ("disp", "radio.floor_released", "talkgroup:fire"),
                    ("disp", "radio.floor_granted", "talkgroup:fire"),
                    ("disp", "radio.floor_released", "talkgroup:fire"),
                    ("disp", "radio.floor_granted", "talkgroup:rescue"),
                    ("system", "radio.floor_timed_out", "talkgroup:rescue")]
        await until(lambda: _equal(audited, expected), "the audit rows")
        async with db.session() as s:
            relay = list(await s.scalars(select(AuditEntry).where(
                AuditEntry.action == "token.issued", AuditEntry.subject == "user:disp")))
        assert [r.details.get("label") for r in relay if r.details.get("kind") == "relay"] == [
            "ssh relay via n2"], "one relay token, reused for the second command"
    finally:
        if db is not None:
            await db.close()
        fire.close()
        rescue.close()


async def _equal(read: Any, expected: list[tuple[str, str, str]]) -> bool:
    got = await read()
    if len(got) > len(expected):
        raise AssertionError(f"unexpected audit rows: {got}")
    return bool(got == expected)
