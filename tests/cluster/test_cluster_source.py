"""Trunks known by source address, behind a real Kamailio (X-Dispatchd-Source).

The loopback cluster of ``scripts/cluster`` knows its carrier by the address
127.0.0.2 only (no digest).  Every packet reaches a node from Kamailio
(127.0.0.1, the nodes' ``[sip] proxies``), which names the real source in
X-Dispatchd-Source.  SIPp plays the carrier and the impostors:

* the carrier (SIPp on 127.0.0.2) calls 110 through Kamailio: the call lands on
  the trunk and an agent answers; its CDR names the trunk;
* an impostor on 127.0.0.3 sends the header claiming 127.0.0.2 *through
  Kamailio*: Kamailio replaces it, so the call is challenged (407);
* the impostor sends the same INVITE *straight to a node*: the node ignores
  the header (and logs it), so the call is challenged too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from clusterpeer import SIPP_DIR, Cluster, free_port
from sqlalchemy import select
from test_cluster_loopback import CARRIER, _all_ready, agent_uas, register, sipp, until

from dispatch.models import CallRecordRow
from dispatch.storage import Database

HERE = Path(__file__).resolve().parent
IMPOSTOR = "127.0.0.3"


def _spoof(target: str, cwd: Path) -> Any:
    return sipp(target, "-sf", str(HERE / "sipp" / "trunk_call_407.xml"), "-s", "110",
                "-key", "spoof", f"{CARRIER}:5060", "-i", IMPOSTOR, "-p", str(free_port()),
                "-m", "1", "-recv_timeout", "10000", "-timeout", "60s", cwd=cwd)


async def test_a_source_address_trunk_works_behind_kamailio_and_a_spoofed_header_does_not(
        cluster_factory: Any, tmp_path: Path) -> None:
    agents = ["a0"]
    c: Cluster = await cluster_factory(agents)
    sup = await asyncio.to_thread(c.token, "sup", "supervisor")
    uas_port = free_port()
    uas = agent_uas(tmp_path, uas_port)
    try:
        await asyncio.to_thread(register, c, agents, uas_port, tmp_path)
        await until(lambda: _all_ready(c, "n1", sup, agents), "agent ready")
        calls = 4  # round robin: both nodes get some
        done = await asyncio.to_thread(
            sipp, f"127.0.0.1:{c.sip_port}", "-sf", str(SIPP_DIR / "trunk_call.xml"),
            "-s", "110", "-i", CARRIER, "-p", str(free_port()), "-mp", str(free_port()),
            "-m", str(calls), "-r", "2", "-l", "1", "-d", "300", "-trace_msg",
            "-recv_timeout", "15000", "-timeout", "120s", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        db = Database(c.layout.db_url)
        try:
            async def carrier_cdrs() -> list[CallRecordRow]:
                async with db.session() as s:
                    rows = list(await s.scalars(select(CallRecordRow).where(
                        CallRecordRow.released_at.is_not(None))))
                return rows if len(rows) >= calls else []

            rows = await until(carrier_cdrs, "the carrier's CDRs")
            assert {r.trunk for r in rows} == {"carrier"}
            assert all(r.answered_at is not None for r in rows)

            via_kamailio = await asyncio.to_thread(_spoof, f"127.0.0.1:{c.sip_port}", tmp_path)
            assert via_kamailio.returncode == 0, via_kamailio.stderr[-2000:]
            _, n1_sip, _ = c.layout.nodes[0]
            direct = await asyncio.to_thread(_spoof, f"127.0.0.1:{n1_sip}", tmp_path)
            assert direct.returncode == 0, direct.stderr[-2000:]
            ignored = await asyncio.to_thread(
                c.nodes["n1"].read_until,
                lambda e: "not from a configured proxy" in str(e.get("msg", "")), 30)
            assert ignored is not None and IMPOSTOR in str(ignored.get("msg"))
            async with db.session() as s:
                spoofed = list(await s.scalars(select(CallRecordRow).where(
                    CallRecordRow.caller.like("%1390013%"))))
            assert [r.trunk for r in spoofed if r.trunk] == []
        finally:
            await db.close()
    finally:
        uas.terminate()
        await asyncio.to_thread(uas.wait, 10)
