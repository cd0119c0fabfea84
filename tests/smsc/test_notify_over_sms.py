"""Officials' notifications reach their phones through the SMS service (a real SMSC).

A fire report activates the shipped response plans; the on-duty officials of 119
and 120 (conf/roster.toml) are texted through the SMPP bind to the SMSC
simulator, and the simulator's own record shows one message per official.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from smscpeer import PASSWORD, SYSTEM_ID, WAIT, SmscFactory

from dispatch.config import parse_settings
from dispatch.daemon import Daemon
from dispatch.notify import NotificationChanged
from dispatch.reports import NewReport
from intake.model import Channel

ROOT = Path(__file__).resolve().parents[2]


async def test_plan_notifications_go_out_as_sms(db_url: str, tmp_path: Path, reactor: Any,
                                                smsc_factory: SmscFactory,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sim = await smsc_factory("--receipts")
    monkeypatch.setenv("TEST_SMSC_PASSWORD", PASSWORD)
    daemon = Daemon(parse_settings({
        "node": {"data_dir": str(tmp_path / "var")},
        "database": {"url": db_url, "auto_migrate": True},
        "http": {"port": 0}, "ssh": {"enabled": False},
        "sms": {"sender_id": "12110",
                "smpp": [{"name": "sim", "host": "127.0.0.1", "port": sim.port,
                          "system_id": SYSTEM_ID, "password_env": "TEST_SMSC_PASSWORD",
                          "receipt_ids": "hex-as-decimal"}],
                "routes": [{"prefix": "+86", "transports": ["sim"]}]},
        "dispatch": {"plans_dir": str(ROOT / "conf/plans"),
                     "units_file": str(ROOT / "conf/units.toml"),
                     "roster_file": str(ROOT / "conf/roster.toml")},
    }, "test"), reactor=reactor)
    sent: asyncio.Queue[NotificationChanged] = asyncio.Queue()

    def watch(envelope: Any) -> None:
        if isinstance(envelope.event, NotificationChanged) and envelope.event.status == "sent":
            sent.put_nowait(envelope.event)

    await daemon.start()
    try:
        assert daemon.sms is not None
        await daemon.sms.transports["sim"].pool.wait_bound(WAIT)  # type: ignore[attr-defined]
        daemon.hub.listen(watch)
        await daemon.reports.submit(NewReport(
            Channel.API, "东城街道一栋居民楼起火，三人死亡，十二人受伤", dt.datetime.now(dt.UTC),
            caller="+8613800000001", lat=23.0205, lon=113.7518), actor="taker")
        people = set()
        while len(people) < 2:
            event = await asyncio.wait_for(sent.get(), WAIT)
            people.add(event.person)
        assert people == {"张值班", "王医生"}
        dump = tmp_path / "handsets.json"
        await sim.command(f"dump {dump}")
        handsets = json.loads(dump.read_text())  # {number: messages its handset got}
        # One message each, although the plan's text is longer than the part cap allows:
        # it was cut to fit (sms.encoding.fit_text keeps the acknowledgement link whole).
        assert handsets == {"8613900119001": 1, "8613900120001": 1}, handsets
    finally:
        await daemon.stop()
