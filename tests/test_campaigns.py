"""The campaign engine on SQLite and PostgreSQL: approval, retries, cancel, crash recovery.

The SMSC here is a model (``ModelSmsc``) that counts what each number would receive and
honours ``replace_if_present`` as SMPP 3.4 §5.2.23 describes; the engine against the real
SMSC simulator over SMPP, killed with SIGKILL, is tested with the SMPP transport.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from dispatch.audit import AuditTrail, query
from dispatch.campaigns import (
    CampaignError,
    CampaignService,
    CampaignStateChanged,
    OutcomeUnknown,
    PermanentFailure,
    RecipientIn,
    TemporaryFailure,
)
from dispatch.storage import Database


class ModelSmsc:
    """What each handset would receive; a pending message with the same tag is replaced."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.pending: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, bool]] = []
        self.script: dict[str, list[Exception]] = {}
        self.accept_then_fail: dict[str, Exception] = {}

    async def submit(self, msisdn: str, text: str, *, tag: str, replace: bool,
                     priority: int) -> list[str]:
        self.calls.append((msisdn, replace))
        message_id = f"m{len(self.calls)}"
        await asyncio.sleep(0)
        if self.script.get(msisdn):
            raise self.script[msisdn].pop(0)
        key = (tag, msisdn)
        if not (replace and key in self.pending):
            self.received[msisdn] += 1
        self.pending.add(key)
        if msisdn in self.accept_then_fail:  # taken by the SMSC, but the answer is lost
            raise self.accept_then_fail.pop(msisdn)
        return [message_id]


def people(n: int) -> list[RecipientIn]:
    return [RecipientIn(f"+86138{i:08d}", "zh", f"撤离通知 {i}") for i in range(n)]


class Harness:
    """A campaign service with its events, on one database."""

    def __init__(self, db: Database, smsc: ModelSmsc | None, node: str = "n1") -> None:
        self.events: list[object] = []
        self.done = asyncio.Event()
        self.audit = AuditTrail(self._publish, time.time)
        self.service = CampaignService(db, self.audit, self._publish, time.time, node, smsc,
                                       batch=50, retry_base_s=0.01, max_attempts=3)

    def _publish(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, CampaignStateChanged) and event.status in ("completed", "cancelled"):
            self.done.set()


async def test_two_person_rule_then_everyone_once(database: Database) -> None:
    smsc = ModelSmsc()
    h = Harness(database, smsc)
    await h.service.start()
    try:
        cid = await h.service.create("东城洪水撤离", people(300) + people(5), actor="cmd1")
        await asyncio.sleep(0.05)
        assert smsc.calls == [], "nothing goes out before approval"
        with pytest.raises(CampaignError) as err:
            await h.service.approve(cid, actor="cmd1")
        assert err.value.status == 403
        await h.service.approve(cid, actor="cmd2")
        await asyncio.wait_for(h.done.wait(), 30)
    finally:
        await h.service.stop()
    assert set(smsc.received.values()) == {1} and len(smsc.received) == 300
    assert await h.service.counts(cid) == {"submitted": 300}
    async with database.session() as s:
        actions = [r.action for r in await query(s, subject=f"campaign:{cid}")]
    assert actions == ["campaign.completed", "campaign.approved", "campaign.created"]


async def test_retries_failures_and_unknown_outcomes(database: Database) -> None:
    smsc = ModelSmsc()
    crowd = people(20)
    smsc.script[crowd[0].msisdn] = [TemporaryFailure("ESME_RTHROTTLED")]
    smsc.script[crowd[1].msisdn] = [PermanentFailure("ESME_RINVDSTADR")]
    smsc.script[crowd[2].msisdn] = [TemporaryFailure("x")] * 5
    smsc.accept_then_fail[crowd[3].msisdn] = OutcomeUnknown("no submit_sm_resp")
    h = Harness(database, smsc)
    await h.service.start()
    try:
        await h.service.create("Officials", crowd, actor="sys", public=False)
        await asyncio.wait_for(h.done.wait(), 30)
    finally:
        await h.service.stop()
    assert smsc.received[crowd[0].msisdn] == 1
    assert smsc.received[crowd[1].msisdn] == 0 and smsc.received[crowd[2].msisdn] == 0
    assert smsc.received[crowd[3].msisdn] == 1, "the resend after an unknown outcome replaced"
    assert (crowd[3].msisdn, True) in smsc.calls
    assert sum(smsc.received.values()) == 18


async def test_crash_mid_batch_neither_skips_nor_duplicates(database: Database) -> None:
    smsc = ModelSmsc()
    first = Harness(database, smsc)  # no start(): we drive it by hand, then it "dies"
    cid = await first.service.create("Typhoon", people(120), actor="sys", public=False)
    claimed = await first.service._claim()
    for c in claimed[:30]:  # the SMSC took 30 before the process was killed
        await smsc.submit(c.msisdn, c.text, tag=c.tag, replace=c.replace, priority=c.priority)
    second = Harness(database, smsc)  # the restarted daemon (same node)
    await second.service.start()
    try:
        await asyncio.wait_for(second.done.wait(), 30)
    finally:
        await second.service.stop()
    assert len(smsc.received) == 120 and set(smsc.received.values()) == {1}
    resent = {m for m, replace in smsc.calls if replace}
    assert resent == {c.msisdn for c in claimed}, "in-flight rows were resent with replace"
    assert await second.service.counts(cid) == {"submitted": 120}


async def test_cancel_mid_flight(database: Database) -> None:
    smsc = ModelSmsc()
    h = Harness(database, smsc)
    cid = await h.service.create("Test", people(100), actor="a", public=False)
    claimed = await h.service._claim()
    assert await h.service.cancel(cid, actor="b", reason="wrong area") == 50
    with pytest.raises(CampaignError):
        await h.service.cancel(cid, actor="b")
    assert await h.service.counts(cid) == {"submitting": len(claimed), "cancelled": 50}
    assert await h.service._claim() == []


async def test_campaign_api_roles_and_two_person_rule(daemon: Any) -> None:
    import httpx

    from dispatch.auth import Role

    tokens = {}
    async with httpx.AsyncClient(base_url=daemon.base_url) as c:
        for name, role in [("sup", Role.SUPERVISOR), ("cmd", Role.COMMANDER),
                           ("ct", Role.CALL_TAKER)]:
            await daemon.users.add_user(name, role, f"{name}-password", actor="t")
            r = await c.post("/api/v1/auth/login", json={"username": name,
                                                         "password": f"{name}-password"})
            tokens[name] = {"Authorization": f"Bearer {r.json()['token']}"}
        body = {"title": "长安镇化工厂泄漏 就地避险", "recipients": [
            {"msisdn": "13800138000", "text": "请关闭门窗，就地避险"},
            {"msisdn": "+86 138-0013-8000", "text": "dup"},
            {"msisdn": "008613800138001", "lang": "en", "text": "Shelter in place"}]}
        assert (await c.post("/api/v1/campaigns", json=body, headers=tokens["ct"])).status_code == 403
        bad = {**body, "recipients": [{"msisdn": "12", "text": "x"}]}
        r = await c.post("/api/v1/campaigns", json=bad, headers=tokens["sup"])
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "msisdn"
        r = await c.post("/api/v1/campaigns", json=body, headers=tokens["sup"])
        assert r.status_code == 201, r.text
        created = r.json()
        assert (created["status"], created["recipients"]) == ("pending_approval", 2)
        cid = created["id"]
        r = await c.post(f"/api/v1/campaigns/{cid}/approve", headers=tokens["sup"])
        assert r.status_code == 403, "a supervisor may not approve"
        r = await c.post(f"/api/v1/campaigns/{cid}/approve", headers=tokens["cmd"])
        assert r.status_code == 200 and r.json()["status"] == "sending"
        assert r.json()["approved_by"] == "cmd"
        r = await c.post(f"/api/v1/campaigns/{cid}/approve", headers=tokens["cmd"])
        assert r.status_code == 409
        r = await c.post(f"/api/v1/campaigns/{cid}/cancel", json={"reason": "drill"},
                         headers=tokens["cmd"])
        assert r.json()["status"] == "cancelled" and r.json()["counts"] == {"cancelled": 2}
