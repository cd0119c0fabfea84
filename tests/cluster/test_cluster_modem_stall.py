"""A node stopped (SIGSTOP) mid-campaign on a GSM modem writes no AT+CMGS when it wakes.

Each real ``dispatchd run`` node of the loopback cluster sends through its own
GSM modem (an emulator on a pty, answering a little slowly, as modems do).  An
evacuation campaign starts; the node that claimed it is stopped while its
modem is busy and the rest of its batch waits behind it.  The other node takes
it over and sends everything.  Woken, the stopped node must not write another
``AT+CMGS`` (its modems hold while it may not act, then its batch is abandoned):
its modem sees no new submit command.  A modem cannot replace a message, so
the handsets the stopped node had already texted may be texted again by the
survivor (the campaign's rows were not yet updated) — nobody else is, and
nobody is skipped.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from clusterpeer import ROOT, Cluster, approved_campaign, until

from dispatch.models import CampaignRow
from dispatch.storage import Database
from hardware.emulators import GsmModemEmulator
from hardware.emulators.base import Faults
from sms.pdu import SmsSubmit, decode_pdu

sys.path.insert(0, str(ROOT / "tests" / "radio"))
from radioharness import Plugged  # noqa: E402

RECIPIENTS = 40
MODEMS = """
[sms]
[[sms.modems]]
name = "gsm1"
device = "{dir}/ttyGSM-{{node}}"
command_timeout_s = 10
"""


def numbers(modem: GsmModemEmulator, upto: int | None = None) -> list[str]:
    """The handsets the modem texted (its first ``upto`` messages)."""
    found = []
    for sent in modem.sent[:upto]:
        pdu = decode_pdu(sent.pdu)
        assert isinstance(pdu, SmsSubmit)
        found.append(pdu.destination)
    return found


def submits(modem: GsmModemEmulator, start: int = 0) -> list[str]:
    """The AT+CMGS commands the modem received from ``start`` on."""
    return [c for c in modem.commands[start:] if c.startswith("AT+CMGS")]


async def test_a_node_stopped_mid_campaign_writes_no_cmgs_when_it_wakes(
        cluster_factory: Any, tmp_path: Path) -> None:
    plugs = {n: Plugged(GsmModemEmulator(faults=Faults(delay=0.05)), tmp_path / f"ttyGSM-{n}")
             for n in ("n1", "n2")}
    for plug in plugs.values():
        plug.plug()
    modems = {n: plug.emulator for n, plug in plugs.items()}
    db: Database | None = None
    try:
        c: Cluster = await cluster_factory([], MODEMS.format(dir=tmp_path))
        sup = await asyncio.to_thread(c.token, "sup", "supervisor")
        cmd = await asyncio.to_thread(c.token, "cmd", "commander")
        cid = await approved_campaign(c.url("n1"), sup, cmd, "136", RECIPIENTS)
        # One node claims the whole batch; stop it while its modem works through it.
        sender = await until(lambda: next((n for n, m in modems.items() if len(m.sent) >= 3),
                                          None), "a node to start sending")
        other = "n2" if sender == "n1" else "n1"
        stalled = c.nodes[sender]
        stalled.proc.send_signal(signal.SIGSTOP)
        db = Database(c.layout.db_url)
        try:
            await c.taken_over(other, sender)
            c.drain(other)

            async def completed() -> bool:
                assert db is not None
                async with db.session() as s:
                    row = await s.get(CampaignRow, cid)
                return row is not None and row.status == "completed"

            # The survivor sends the whole campaign while the stalled node is stopped.
            await until(completed, "the campaign completed by the survivor", timeout=300)
            # Whatever the stalled node wrote before the stop has reached its modem by now.
            mark, sent_before = len(modems[sender].commands), len(modems[sender].sent)
        finally:
            stalled.proc.send_signal(signal.SIGCONT)
        # The fencing handlers run after the node logs that it was taken over.
        dropped = await asyncio.to_thread(
            stalled.read_until, lambda e: str(e.get("msg", "")).startswith(
                "campaign sender fenced off"), 60)
        assert dropped is not None, "the woken node did not abandon the batch it held"
        assert any(str(e.get("msg", "")).startswith("this node was declared dead while it "
                                                    "stalled") for e in stalled.lines)
        c.drain(sender)
        # Woken, it wrote no AT+CMGS: its modem held, then its batch was abandoned.  (A
        # submit whose AT+CMGS was written before the stop may still get its PDU.)
        assert submits(modems[sender], mark) == [], modems[sender].commands[mark:]
        assert len(modems[sender].sent) - sent_before <= 1
        stalled_texted = set(numbers(modems[sender]))
        got = Counter(numbers(modems[sender]) + numbers(modems[other]))
        assert set(got) == {f"+86136{i:08d}" for i in range(RECIPIENTS)}, "none skipped"
        twice = {n for n, count in got.items() if count > 1}
        assert twice <= stalled_texted and all(got[n] == 2 for n in twice), got
        assert len(numbers(modems[other])) == RECIPIENTS  # the survivor sent the lot
        print(f"stalled node texted {len(stalled_texted)} handsets before it stopped; "
              f"the survivor texted all {RECIPIENTS}")
    finally:
        if db is not None:
            await db.close()
        for modem in modems.values():
            modem.close()

