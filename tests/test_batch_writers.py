"""The hot write paths' batch mechanisms, on SQLite and PostgreSQL.

* :class:`~dispatch.audit.AuditBatch`: one INSERT for many audit rows, announced after
  commit with the ids the database gave them, never announced on rollback;
* :class:`~dispatch.call_records.CallRecorder`: a CDR written by an earlier run (not in
  memory) is read once and updated; a failed batch is retried event by event;
* ``ReportService.submit_many``: an incident in the database joined by several reports of
  one batch is updated once with all of them (the batch keeps it in memory);
* :class:`~dispatch.acd_store.AcdCluster`: agent states gathered for an interval, the
  newest per agent written, and a stop writes at once what was gathered;
* :class:`~dispatch.plans.PlanService`: an incident change no plan can match costs no read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from dispatch.acd_store import AcdCluster
from dispatch.audit import AuditTrail
from dispatch.call_records import CallRecorder
from dispatch.dispatchconf import DispatchSettings, load_dispatch_files
from dispatch.events import AuditRecorded, Envelope
from dispatch.models import AcdAgentRow, AuditEntry, CallRecordRow, IncidentRow, ReportRow
from dispatch.reports import IncidentChanged, NewReport, ReportService
from dispatch.storage import Database
from intake.model import Channel
from telephony.acd.events import (
    AgentState,
    AgentStateChanged,
    CallFinished,
    CallOutcome,
    CallRecord,
    TimelineEntry,
    TimelineKind,
)
from telephony.b2bua.events import CallAnswered, CallOffered

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0
FIRE = "东城街道一栋居民楼起火，三人死亡，十二人受伤"
FIRE_AGAIN = "东城那栋楼还在烧，浓烟很大，有人被困"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


async def test_an_audit_batch_is_one_insert_announced_with_its_ids(database: Database) -> None:
    heard: list[object] = []
    trail = AuditTrail(heard.append, Clock())
    async with database.session() as s:
        trail.record(s, actor="alice", action="x.single", subject="s:0")
    batch = trail.batch()
    for i in range(3):
        batch.record(actor="sip", action="x.batch", subject=f"s:{i + 1}", details={"i": i})
    async with database.session() as s:
        await batch.write(s)
        assert heard[1:] == []  # nothing announced before the commit
    async with database.session() as s:
        rows = {r.subject: r.id for r in await s.scalars(select(AuditEntry))}
    announced = [e for e in heard if isinstance(e, AuditRecorded)]
    assert [(e.subject, e.id) for e in announced] == sorted(rows.items(), key=lambda kv: kv[1])
    assert [e.details for e in announced[1:]] == [{"i": 0}, {"i": 1}, {"i": 2}]

    rolled_back = trail.batch()
    rolled_back.record(actor="sip", action="x.lost", subject="s:9")
    with pytest.raises(RuntimeError):
        async with database.session() as s:
            await rolled_back.write(s)
            raise RuntimeError("the transaction fails after the audit rows")
    assert len(heard) == 4
    async with database.session() as s:
        assert await s.scalar(select(AuditEntry).where(AuditEntry.action == "x.lost")) is None

    # The same through a Core transaction (the batch writers' path), and its rollback.
    core = trail.batch()
    core.record(actor="sip", action="x.core", subject="s:5")
    async with database.transaction() as tx:
        await core.write(tx)
        assert len(heard) == 4
    async with database.session() as s:
        row = await s.scalar(select(AuditEntry).where(AuditEntry.action == "x.core"))
    assert row is not None and isinstance(heard[-1], AuditRecorded) and heard[-1].id == row.id
    core.record(actor="sip", action="x.lost", subject="s:9")
    with pytest.raises(RuntimeError):
        async with database.transaction() as tx:
            await core.write(tx)
            raise RuntimeError("the transaction fails after the audit rows")
    assert len(heard) == 5


def _finished(call_id: str, at: float) -> CallFinished:
    return CallFinished(CallRecord(
        call_id, "13800138000", "110", 1, at, CallOutcome.ANSWERED, "police", "a1", at + 2,
        at + 9, "caller_hangup", (TimelineEntry(at + 2, TimelineKind.ANSWERED, "police", "a1"),)))


async def test_a_cdr_of_an_earlier_run_is_read_once_and_updated(database: Database) -> None:
    clock = Clock()
    trail = AuditTrail(lambda e: None, clock)
    reports = ReportService(database, trail, lambda e: None, clock)
    await reports.start()
    first = CallRecorder(database, trail, reports, clock)
    await first.start()
    for i in range(3):
        first.enqueue(CallOffered(f"c{i}", f"sip-{i}", "138", "110", "110", "police", 1,
                                  "carrier", "hotline", T0))
    await first.stop()
    # A new run holds nothing in memory: the answer and the end read the rows back.
    again = CallRecorder(database, trail, reports, clock)
    await again.start()
    for i in range(3):
        again.enqueue(CallAnswered(f"c{i}", "a1", "police", 2.0, T0 + 2))
        again.enqueue(_finished(f"c{i}", T0))
    await again.stop()
    assert again.errors == 0
    async with database.session() as s:
        rows = list(await s.scalars(select(CallRecordRow).order_by(CallRecordRow.id)))
    assert [(r.outcome, r.agent_id, r.cause) for r in rows] == [
        ("answered", "a1", "caller_hangup")] * 3
    assert all(r.answered_at is not None and r.released_at is not None for r in rows)
    assert rows[0].timeline[0]["kind"] == "answered"
    # The answers came without their offers in this run, so the voice reports are owed:
    # the next start files them, each CDR linked in the transaction storing its report.
    third = CallRecorder(database, trail, reports, clock)
    await third.start()
    await third.stop()
    async with database.session() as s:
        rows = list(await s.scalars(select(CallRecordRow).order_by(CallRecordRow.id)))
        refs = dict((await s.execute(select(ReportRow.id, ReportRow.source_ref))).all())
    assert [refs.get(r.report_id or "") for r in rows] == ["c0", "c1", "c2"]


async def test_a_failed_batch_is_retried_event_by_event(database: Database) -> None:
    clock = Clock()
    trail = AuditTrail(lambda e: None, clock)
    reports = ReportService(database, trail, lambda e: None, clock)
    await reports.start()
    recorder = CallRecorder(database, trail, reports, clock)
    await recorder.start()
    recorder.enqueue(CallOffered("c1", "sip-1", "138", "110", "110", "police", 1, "carrier",
                                 "callback", T0))
    await recorder.queue.join()
    # The same call offered again cannot be inserted: the batch (and its retry) fail.
    recorder.enqueue(CallAnswered("c1", "a9", "police", 1.0, T0 + 1))
    recorder.enqueue(CallOffered("c1", "sip-1", "138", "110", "110", "police", 1, "carrier",
                                 "callback", T0))
    await recorder.queue.join()
    assert recorder.errors == 1  # the duplicate offer, alone on its retry
    async with database.session() as s:
        row = await s.get(CallRecordRow, "c1")
    assert row is not None and row.agent_id == "a9"  # the answer, retried alone, is stored
    assert recorder._live.get("c1", {"agent_id": "a9"})["agent_id"] == "a9"
    await recorder.stop()


async def test_reports_of_a_batch_join_a_stored_incident_once(daemon: Any) -> None:
    at = dt.datetime.now(dt.UTC)
    first = await daemon.reports.submit(
        NewReport(Channel.VOICE, FIRE, at, lat=23.0205, lon=113.7518, source_ref="r0"),
        actor="sip")
    done = await daemon.reports.submit_many([
        NewReport(Channel.VOICE, FIRE_AGAIN, at, lat=23.0206, lon=113.7519, source_ref="r1"),
        NewReport(Channel.VOICE, FIRE_AGAIN, at, lat=23.0207, lon=113.7517, source_ref="r2"),
    ], actor="sip")
    assert {d.incident_id for d in done} == {first.incident_id}
    async with daemon.db.session() as s:
        incident = await s.get(IncidentRow, first.incident_id)
        members = set(await s.scalars(select(ReportRow.source_ref).where(
            ReportRow.incident_id == first.incident_id)))
    assert incident is not None and incident.report_count == 3
    assert members == {"r0", "r1", "r2"}


class _Agents:
    """Only what the store's restore needs: nobody is configured."""

    def agent_action(self, agent_id: str, action: str, reason: str = "") -> None:
        raise KeyError(agent_id)


def _change(agent: str, old: AgentState, new: AgentState) -> Envelope:
    return Envelope(0, T0, "agent_state_changed", AgentStateChanged(agent, old, new, T0, "call"))


async def test_agent_states_are_gathered_and_the_newest_written(database: Database) -> None:
    store = AcdCluster(database, _Agents(), "n1", Clock(), flush_s=3600)
    await store.start()
    steps = [AgentState.READY, AgentState.RINGING, AgentState.BUSY, AgentState.WRAP_UP,
             AgentState.READY]
    for old, new in zip(steps, steps[1:], strict=False):
        store.on_local(_change("alice", old, new))
        await asyncio.sleep(0)  # the writer runs between changes, as on a live loop
    store.on_local(_change("bob", AgentState.READY, AgentState.NOT_READY))
    await asyncio.sleep(0)
    assert store.written == 0  # gathering: nothing written in the interval yet
    await store.stop()  # the stop ends the interval at once
    assert store.written == 2
    async with database.session() as s:
        rows = {r.agent_id: r.state for r in await s.scalars(select(AcdAgentRow))}
    assert rows == {"alice": "ready", "bob": "not_ready"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_change_no_plan_can_match_reads_nothing(database: Database) -> None:
    from test_dispatch import World

    files = load_dispatch_files(DispatchSettings(
        plans_dir=str(ROOT / "conf/plans"), units_file=str(ROOT / "conf/units.toml"),
        roster_file=str(ROOT / "conf/roster.toml")))
    w = await World(database, files).start()
    unclassified = IncidentChanged("i1", "open", "new", None, "IV", "blue", 1, None, None)
    fire = IncidentChanged("i2", "open", "new", "accident", "III", "yellow", 1, None,
                           "building_fire")
    legacy = Envelope(0, T0, "incident.changed", type("Old", (), {"incident_id": "i3"})())
    w.plans.on_event(Envelope(0, T0, "incident.changed", unclassified))
    assert not w.plans._tasks
    w.plans.on_event(Envelope(0, T0, "incident.changed", fire))
    w.plans.on_event(legacy)  # an event that does not say what the incident is: checked
    assert len(w.plans._tasks) == 2
    await w.plans.stop()
    async with database.session() as s:
        assert (await s.execute(text("SELECT count(*) FROM plan_activations"))).scalar() == 0
