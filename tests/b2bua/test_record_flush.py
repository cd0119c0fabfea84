"""The write-behind CDR/audit queue never loses a row, on SQLite and on PostgreSQL.

:class:`~dispatch.call_records.CallRecorder` writes CDR and audit rows in
group commits, off the call path.  These tests hold it to its promise:

* a real ``dispatchd run`` with calls up (SIPp carrier and SIPp call takers) is
  SIGTERMed: every call gets its BYE, and every CDR is in the database,
  released, with its audit rows; the voice reports the stop left owed are
  filed when the daemon starts again;
* the recorder itself, given thousands of queued events, writes every one of
  them on :meth:`stop`, however long the backlog.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from b2bua_helpers import SipDaemon, SippServer, errors, free_port, need, register_agents
from sqlalchemy import text
from test_b2bua_sipp import call, trunk, wait_for

from dispatch.audit import AuditTrail
from dispatch.call_records import CallRecorder
from dispatch.reports import ReportService
from dispatch.storage import Database
from telephony.b2bua.events import CallOffered, CallReleased

CALLS = 40


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from the daemon's database, whichever backend it is."""
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).all()]
    finally:
        await db.close()


def daemon_url(db_url: str, tmp: Path) -> str:
    """The fixture's PostgreSQL URL, or SQLite where the daemon keeps it under ``tmp``."""
    return db_url if db_url.startswith("postgresql") else ""


async def test_sigterm_with_calls_up_loses_no_cdr_or_audit_row(
    db_url: str, tmp_path: Path, started: list[object]
) -> None:
    need("sipp")
    carrier = free_port()
    agents = {f"a{i}": ["police"] for i in range(CALLS)}
    sip = SipDaemon(tmp_path, agents=agents, trunks=trunk(carrier, max_calls=CALLS),
                    database=daemon_url(db_url, tmp_path))
    started.append(sip)
    url = sip.database or f"sqlite:///{sip.db_path}"
    agent_port = free_port()
    started.append(SippServer("agent_uas.xml", agent_port, tmp_path))
    code, out = await register_agents(sip, tmp_path, {a: agent_port for a in agents})
    assert code == 0, out
    caller = asyncio.ensure_future(call(sip, tmp_path, "caller_wait_bye.xml", "110", carrier,
                                        "-r", "20", calls=CALLS, timeout=120))

    async def answered() -> int:
        return int((await query(url, "SELECT count(*) FROM call_records"
                                     " WHERE answered_at IS NOT NULL"))[0][0])

    deadline = asyncio.get_running_loop().time() + 60
    while await answered() < CALLS:
        assert asyncio.get_running_loop().time() < deadline, "calls not all answered"
        await asyncio.sleep(0.1)
    # Every call is up: stop the daemon the way systemd does.
    sip.proc.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(sip.proc.proc.wait, 90) == 0
    code, out = await caller
    assert code == 0, out + errors(tmp_path)  # every caller got its BYE and answered it
    sip.proc.read_until(lambda e: False)  # the rest of the log
    flushed = [e for e in sip.proc.lines if e.get("msg") == "call records flushed"]
    assert flushed, sip.proc.raw[-20:]
    assert not [e for e in sip.proc.lines if e.get("msg") == "call records not flushed at stop"]

    rows = await query(url, "SELECT outcome, cause, released_by, released_at IS NOT NULL,"
                            " report_id FROM call_records")
    assert len(rows) == CALLS
    assert {r[:4] for r in rows} == {("answered", "shutdown", "system", True)}
    audit = dict(await query(url, "SELECT action, count(*) FROM audit_log WHERE action IN"
                                  " ('call.offered', 'call.answered', 'call.released')"
                                  " GROUP BY action"))
    assert audit == {"call.offered": CALLS, "call.answered": CALLS, "call.released": CALLS}
    owed = [r for r in rows if r[4] is None]
    assert int(flushed[0]["owed"]) == len(owed)

    # The next start files every voice report the stop left owed, once.
    again = SipDaemon(tmp_path, agents=agents, trunks=trunk(carrier, max_calls=CALLS),
                      database=sip.database, accounts={})
    started.append(again)
    await wait_for(lambda: asyncio.run(query(
        url, "SELECT count(*) FROM call_records WHERE report_id IS NULL")) == [(0,)],
        "every CDR linked to its voice report", timeout=60)
    reports = await query(url, "SELECT count(*), count(DISTINCT source_ref) FROM reports"
                               " WHERE channel = 'voice'")
    assert reports == [(CALLS, CALLS)]


async def test_recorder_stop_writes_a_large_backlog(db_url: str) -> None:
    db = Database(db_url)
    await db.upgrade()
    now = [1_700_000_000.0]
    published: list[object] = []
    audit = AuditTrail(published.append, lambda: now[0])
    reports = ReportService(db, audit, published.append, lambda: now[0])
    await reports.start()
    recorder = CallRecorder(db, audit, reports, lambda: now[0])
    await recorder.start()
    backlog = 3000
    for i in range(backlog):
        now[0] += 0.01
        recorder.enqueue(CallOffered(f"c{i}", f"sip-{i}", "13800138000", "110", "110",
                                     "police", 1, "carrier", "callback", now[0]))
        recorder.enqueue(CallReleased(f"c{i}", "caller_hangup", "caller", now[0] + 1))
    assert recorder.queue.qsize() == 2 * backlog  # nothing written yet: all still queued
    await recorder.stop()
    assert recorder.health()["pending"] == 0 and recorder.errors == 0
    try:
        async with db.engine.connect() as conn:
            cdrs = (await conn.execute(text(
                "SELECT count(*) FROM call_records WHERE released_at IS NOT NULL"))).scalar()
            released = (await conn.execute(text(
                "SELECT count(*) FROM audit_log WHERE action = 'call.released'"))).scalar()
    finally:
        await db.close()
    assert (cdrs, released) == (backlog, backlog)
