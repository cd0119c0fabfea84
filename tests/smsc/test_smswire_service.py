"""The daemon's SMS service with real peers: the SMSC simulator and a GSM modem on a pty.

SMS in (a concatenated Chinese deliver_sm, and a modem's +CMTI) becomes a report
with the sender's number; campaigns follow the routes (+852 to the modem pool,
+86 to SMPP) and fail over to the modems when the SMSC is gone.  Runs on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from smscpeer import PASSWORD, SYSTEM_ID, SmscFactory, SmscSim
from sqlalchemy import select

from dispatch.campaigns import CampaignProgress, CampaignStateChanged, RecipientIn
from dispatch.config import parse_settings
from dispatch.daemon import Daemon
from dispatch.models import ReportRow
from hardware.emulators import GsmModemEmulator
from sms.pdu import SmsSubmit, decode_pdu, encode_deliver
from sms.transport.modem import GsmModem

WAIT = 20.0
LONG_ZH = ("我是东江村村民，河堤在村口北侧出现管涌，水已经漫到路面，村里还有十几位老人没有撤出，"
           "请尽快派人和船来支援，联系电话就是这个号码。另外村东头的变压器已经泡在水里，"
           "请通知供电部门断电，谢谢！")


class Rig:
    """A started daemon with one SMPP SMSC and one modem, and what the test needs of them."""

    def __init__(self, daemon: Daemon, sim: SmscSim, modem: GsmModemEmulator) -> None:
        self.daemon, self.sim, self.modem = daemon, sim, modem
        self.finished: asyncio.Queue[str] = asyncio.Queue()
        self.progress: asyncio.Queue[CampaignProgress] = asyncio.Queue()
        daemon.hub.listen(self._event)

    def _event(self, envelope: Any) -> None:
        event = envelope.event
        if isinstance(event, CampaignStateChanged) and event.status == "completed":
            self.finished.put_nowait(event.campaign_id)
        if isinstance(event, CampaignProgress):
            self.progress.put_nowait(event)

    async def progress_until(self, cid: str, counts: dict[str, int]) -> CampaignProgress:
        """The first progress event of ``cid`` with exactly ``counts``."""
        while True:
            event = await asyncio.wait_for(self.progress.get(), WAIT)
            if event.campaign_id == cid and event.counts == counts:
                return event

    async def campaign(self, numbers: list[str], text: str) -> dict[str, int]:
        """Send to ``numbers`` (officials: no approval) and wait until it completes."""
        cid = await self.daemon.campaigns.create("routing", [
            RecipientIn(n, "zh", text) for n in numbers], actor="test", public=False)
        assert await asyncio.wait_for(self.finished.get(), WAIT) == cid
        self.last = cid
        return await self.daemon.campaigns.counts(cid)

    async def reports(self) -> list[ReportRow]:
        async with self.daemon.db.session() as s:
            return list((await s.scalars(select(ReportRow).order_by(ReportRow.received_at)))
                        .all())


@pytest_asyncio.fixture(loop_scope="session")
async def rig(db_url: str, tmp_path: Path, reactor: Any, smsc_factory: SmscFactory,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    sim = await smsc_factory("--receipts")
    modem = GsmModemEmulator(echo=True)
    device = modem.open()
    monkeypatch.setenv("TEST_SMSC_PASSWORD", PASSWORD)
    settings = parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": db_url, "auto_migrate": True},
        "http": {"port": 0}, "ssh": {"enabled": False},
        "sms": {
            "sender_id": "12110", "inbound_numbers": ["12110"],
            "smpp": [{"name": "sim", "host": "127.0.0.1", "port": sim.port,
                      "system_id": SYSTEM_ID, "password_env": "TEST_SMSC_PASSWORD",
                      "receipt_ids": "hex-as-decimal"}],
            "modems": [{"name": "gsm0", "device": device, "command_timeout_s": 10.0}],
            "routes": [{"prefix": "+852", "transports": ["modems"]},
                       {"prefix": "+86", "transports": ["sim", "modems"]}],
        },
    }, "test")
    daemon = Daemon(settings, reactor=reactor)
    await daemon.start()
    assert daemon.sms is not None
    sim_transport: Any = daemon.sms.transports["sim"]
    await sim_transport.pool.wait_bound(WAIT)
    try:
        yield Rig(daemon, sim, modem)
    finally:
        await daemon.stop()
        modem.close()


def gsm_modem(rig: Rig) -> GsmModem:
    assert rig.daemon.sms is not None
    return rig.daemon.sms.transports["modems"].pool.modems[0]  # type: ignore[attr-defined, no-any-return]


async def test_sms_in_from_the_smsc_and_the_modem_become_reports(rig: Rig) -> None:
    sim = rig.sim
    seen = len(sim.events)
    await sim.command("mo " + json.dumps({"id": "m1", "sender": "+8613800138000",
                                          "dest": "12110", "text": LONG_ZH}))
    assert len(LONG_ZH) > 70, "two parts"
    acks = await sim.wait_for(lambda e: e.get("event") == "mo_resp" and e["id"] == "m1",
                              start=seen, count=2)
    assert {a["status"] for a in acks} == {"ESME_ROK"}, "acked once stored"
    await sim.command("mo " + json.dumps({"id": "m2", "sender": "+8613800138001",
                                          "dest": "95555", "text": "not for us"}))
    await sim.wait_for(lambda e: e.get("event") == "mo_resp" and e["id"] == "m2", start=seen)

    done = asyncio.Event()
    rig.modem.on_command = lambda c: done.set() if c.startswith("AT+CMGD") else None
    await gsm_modem(rig).ensure_ready()
    rig.modem.inject_sms(encode_deliver("+8613900007777", "滨江路隧道积水，一辆公交车被困",
                                        dt.datetime(2026, 7, 1, tzinfo=dt.UTC)))
    await asyncio.wait_for(done.wait(), WAIT)

    reports = await rig.reports()
    assert [(r.channel, r.caller, r.text) for r in reports] == [
        ("sms", "+8613800138000", LONG_ZH),
        ("sms", "+8613900007777", "滨江路隧道积水，一辆公交车被困")]
    assert reports[0].fields["transport"].startswith("sim#")
    assert reports[1].fields["transport"] == "gsm0"
    assert rig.daemon.sms is not None
    assert rig.daemon.sms.counts["inbound_ignored"] == 1


async def test_routes_by_prefix_and_fails_over_to_the_modems(rig: Rig, tmp_path: Path) -> None:
    hk = [f"+8525123456{i}" for i in range(3)]
    cn = [f"+861380000000{i}" for i in range(3)]
    counts = await rig.campaign(hk + cn, "Typhoon signal 8: stay indoors")
    assert counts == {"submitted": 6}
    to_modem = sorted(d.destination for s in rig.modem.sent  # type: ignore[union-attr]
                      if isinstance(d := decode_pdu(s.pdu), SmsSubmit))
    assert to_modem == hk
    dump = tmp_path / "sim.json"
    await rig.sim.command(f"dump {dump}")
    assert set(json.loads(dump.read_text())) == {n.lstrip("+") for n in cn}
    # The SMSC's receipts arrive and are published as delivery progress (modems give none).
    done = await rig.progress_until(rig.last, {"delivered": 3, "submitted": 3})
    assert done.status == "completed" and done.eta_s == 0.0

    await rig.sim.close()  # the SMSC goes away: +86 fails over to the modem pool
    assert rig.daemon.sms is not None
    sim_transport: Any = rig.daemon.sms.transports["sim"]
    before = len(rig.modem.sent)
    counts = await rig.campaign(["+8613800000009"], "Typhoon signal 8: stay indoors")
    assert counts == {"submitted": 1}
    assert not sim_transport.up
    assert [decode_pdu(s.pdu).destination for s in rig.modem.sent[before:]] == [  # type: ignore[union-attr]
        "+8613800000009"]
    assert rig.daemon.sms.counts["sent:modems"] == 4
