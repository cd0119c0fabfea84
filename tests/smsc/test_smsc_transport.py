"""SmppClient / SmppPool against a real SMSC (smpp.twisted3 simulator) over 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from smscpeer import PASSWORD, SYSTEM_ID, WAIT, SmscFactory, SmscSim

from sms.inbound import InboundMessage
from sms.smpp import CommandStatus, DeliveryReceipt, MessageState, SessionSettings
from sms.transport import (
    IdFormat,
    ReceiptIndex,
    ReceivedSms,
    SmppBindRefused,
    SmppClient,
    SmppPool,
    SmppSettings,
    SubmitHandle,
    SubmitOutcomeUnknownError,
)

EVAC = "请立即撤离到高地，避开河道。"
MO_TEXT = "我家在河边三号楼，一楼已经进水，老人行动不便，请派船来接我们。" * 3  # > 70 chars


def settings(port: int, *, name: str = "smsc-a", password: str = PASSWORD,
             **session: Any) -> SmppSettings:
    """Transport settings for the simulator, with quick reconnects."""
    sess = {"window": 20, "response_timeout": 5.0, "throttle_pause": 0.05,
            "throttle_pause_max": 0.5} | session
    return SmppSettings(name=name, host="127.0.0.1", port=port, system_id=SYSTEM_ID,
                        password=password, source="12110", session=SessionSettings(**sess),
                        reconnect_initial=0.05, reconnect_max=0.2)


async def bound_client(port: int, **kw: Any) -> SmppClient:
    """A started client, bound."""
    client = SmppClient(settings(port, **{k: v for k, v in kw.items()
                                          if k not in ("on_receipt", "on_message")}),
                        on_receipt=kw.get("on_receipt"), on_message=kw.get("on_message"))
    await client.start()
    await client.wait_bound(WAIT)
    return client


def numbers(n: int) -> list[str]:
    """``n`` distinct Chinese mobile numbers."""
    return [f"+86138{i:08d}" for i in range(n)]


async def test_bind_with_the_right_password_and_unbind_on_stop(smsc: SmscSim) -> None:
    client = await bound_client(smsc.port)
    health = client.health()
    assert health["bound"] and health["state"] == "bound" and health["window_size"] == 20
    assert (await smsc.stats())["binds"] == 1
    await client.stop(timeout=5)
    assert client.health()["state"] == "closed"  # unbind answered, not a dropped socket
    assert not client.bound


async def test_bind_with_a_wrong_password_is_refused(smsc: SmscSim) -> None:
    client = SmppClient(settings(smsc.port, password="wrong"))
    await client.start()
    with pytest.raises(SmppBindRefused) as info:
        await client.wait_bound(WAIT)
    assert info.value.command_status == CommandStatus.ESME_RINVPASWD
    assert "ESME_RINVPASWD" in client.health()["last_error"]
    await client.stop(timeout=2)


async def test_1000_submits_every_id_and_receipt_matched(smsc: SmscSim) -> None:
    receipts: list[DeliveryReceipt] = []
    all_in = asyncio.Event()

    def on_receipt(receipt: DeliveryReceipt) -> None:
        receipts.append(receipt)
        if len(receipts) == 1000:
            all_in.set()

    client = await bound_client(smsc.port, on_receipt=on_receipt, window=50)
    dests = numbers(1000)
    handles = await asyncio.wait_for(
        asyncio.gather(*(client.submit(d, EVAC) for d in dests)), WAIT)
    assert [h.destination for h in handles] == dests
    ids = [h.message_id for h in handles]
    assert len(set(ids)) == 1000
    index: ReceiptIndex[str] = ReceiptIndex(IdFormat.HEX_AS_DECIMAL)
    for h in handles:
        index.add(h.message_id, h.destination)
    await asyncio.wait_for(all_in.wait(), WAIT)
    # The simulator answers ids in hex and writes receipts in decimal.
    assert all(r.message_id not in ids for r in receipts)
    matched = [index.match(r.message_id) for r in receipts]
    assert sorted(m for m in matched if m is not None) == sorted(dests)
    assert {r.state for r in receipts} == {MessageState.DELIVERED}
    assert all(r.recipient == index.match(r.message_id) for r in receipts)
    stats = await smsc.stats()
    assert stats["accepted"] == 1000 and stats["duplicates"] == 0
    assert client.counters.acks_ok == 1000
    await client.stop()


async def test_throttled_smsc_loses_and_duplicates_nothing(smsc_factory: SmscFactory) -> None:
    sim = await smsc_factory("--throttle", "100")
    client = await bound_client(sim.port, window=20)
    dests = numbers(300)
    handles = await asyncio.wait_for(
        asyncio.gather(*(client.submit(d, EVAC) for d in dests)), WAIT)
    assert len({h.message_id for h in handles}) == 300
    stats = await sim.stats()
    assert stats["throttled"] > 0, "the test must actually hit the throttle"
    assert stats["accepted"] == 300 and stats["duplicates"] == 0
    assert client.counters.temporary_retries == stats["throttled"]
    await client.stop()


async def test_silent_smsc_gives_outcome_unknown_and_no_resend(smsc: SmscSim) -> None:
    await smsc.command("hostile on")
    client = await bound_client(smsc.port, response_timeout=0.3)
    with pytest.raises(SubmitOutcomeUnknownError) as info:
        await asyncio.wait_for(client.submit("+8613800138000", EVAC), WAIT)
    assert info.value.destination == "8613800138000" and info.value.status is None
    assert isinstance(info.value, TimeoutError)
    stats = await smsc.stats()
    assert stats["submit_sm"] == 1 and stats["unanswered"] == 1
    assert client.counters.outcome_unknown == 1 and client.bound  # the bind itself stays up
    await client.stop(timeout=1)


async def test_link_dropped_mid_stream_reconnects_without_duplicates(
        smsc_factory: SmscFactory) -> None:
    sim = await smsc_factory()
    await sim.command("drop-after 100")
    client = await bound_client(sim.port, window=20)
    dests = numbers(300)
    results = await asyncio.wait_for(
        asyncio.gather(*(client.submit(d, EVAC) for d in dests), return_exceptions=True), WAIT)
    accepted = [r for r in results if isinstance(r, SubmitHandle)]
    unknown = [r for r in results if isinstance(r, SubmitOutcomeUnknownError)]
    assert len(accepted) + len(unknown) == 300, [r for r in results
                                                 if not isinstance(r, SubmitHandle)][:3]
    assert len(unknown) <= 20  # at most one window was in flight when the link went
    assert len(accepted) >= 280 and client.counters.binds == 2
    assert len({h.message_id for h in accepted}) == len(accepted)
    stats = await sim.stats()
    assert stats["duplicates"] == 0 and stats["dropped"] == 1
    assert len(accepted) <= stats["accepted"] <= len(accepted) + len(unknown)
    await client.stop()


def gate_callback(gate: asyncio.Future[None], calls: list[ReceivedSms],
                  called: asyncio.Event) -> Callable[[ReceivedSms], Awaitable[None]]:
    """An on_message that records the call and waits for ``gate`` (the "database")."""
    async def on_message(sms: ReceivedSms) -> None:
        calls.append(sms)
        called.set()
        await gate
    return on_message


async def test_concatenated_chinese_mo_acked_only_after_the_callback(smsc: SmscSim) -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    calls: list[ReceivedSms] = []
    called = asyncio.Event()
    client = await bound_client(smsc.port, on_message=gate_callback(gate, calls, called))
    spec = {"id": "mo1", "sender": "+8613900139000", "dest": "12110", "text": MO_TEXT}
    await smsc.command("mo " + json.dumps(spec))
    await asyncio.wait_for(called.wait(), WAIT)
    [sms] = calls
    message: InboundMessage = sms.message
    assert message.text == MO_TEXT and message.complete and message.parts_total == 2
    assert message.sender == "+8613900139000" and sms.destination == "12110"
    # Stored-before-ack: nothing answered while the callback is still running.
    await smsc.stats()  # a round trip, so any early deliver_sm_resp would have been seen
    assert not [e for e in smsc.events if e.get("event") == "mo_resp"]
    assert client.counters.acks_ok == 0
    gate.set_result(None)
    resps = await smsc.wait_for(lambda e: e.get("event") == "mo_resp", count=2)
    assert {(e["part"], e["status"], e["attempt"]) for e in resps} == {
        (1, "ESME_ROK", 1), (2, "ESME_ROK", 1)}
    await client.stop()


async def test_failing_callback_makes_the_smsc_redeliver(smsc: SmscSim) -> None:
    calls: list[str] = []

    async def on_message(sms: ReceivedSms) -> None:
        calls.append(sms.message.text)
        if len(calls) == 1:
            raise RuntimeError("database unavailable")

    client = await bound_client(smsc.port, on_message=on_message)
    spec = {"id": "mo2", "sender": "+8613900139001", "dest": "12110", "text": "救命，被困"}
    await smsc.command("mo " + json.dumps(spec))
    resps = await smsc.wait_for(lambda e: e.get("event") == "mo_resp", count=2)
    assert [(e["status"], e["attempt"]) for e in resps] == [
        ("ESME_RX_T_APPN", 1), ("ESME_ROK", 2)]
    assert calls == ["救命，被困", "救命，被困"]
    assert client.counters.acks_error == 1 and client.counters.acks_ok == 1
    await client.stop()


async def test_pool_spreads_submits_over_binds(smsc: SmscSim) -> None:
    receipts: list[str] = []
    all_in = asyncio.Event()

    async def on_receipt(receipt: DeliveryReceipt) -> None:  # awaited before the ack
        await asyncio.sleep(0)
        receipts.append(receipt.message_id)
        if len(receipts) == 300:
            all_in.set()

    clients = [SmppClient(settings(smsc.port, name=f"bind{i}"), on_receipt=on_receipt)
               for i in range(3)]
    pool = SmppPool("carrier", clients)
    await pool.start()
    await pool.wait_bound(WAIT, all_binds=True)
    handles = await asyncio.wait_for(
        asyncio.gather(*(pool.submit(d, EVAC) for d in numbers(300))), WAIT)
    per_bind = {c.name: c.counters.accepted for c in clients}
    assert sum(per_bind.values()) == 300 and all(n > 0 for n in per_bind.values()), per_bind
    assert {h.transport for h in handles} == set(per_bind)
    await asyncio.wait_for(all_in.wait(), WAIT)
    assert len(set(receipts)) == 300
    assert sum(c.counters.acks_ok for c in clients) == 300
    health = pool.health()
    assert health["bound"] == 3 and health["queued"] == 0
    assert (await smsc.stats())["binds"] == 3
    await pool.stop()
    assert pool.health()["bound"] == 0
