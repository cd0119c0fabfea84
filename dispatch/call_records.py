"""Call records (CDR), call audit rows and voice reports, written off the call path.

:class:`CallRecorder` takes the B2BUA's and the ACD's events from a queue and
writes them in batches: everything queued at that moment goes into one
transaction (CDR inserts and updates, audit rows), so a burst of calls costs
a handful of commits instead of several per call.  The writes are SQLAlchemy
Core statements, one multi-row statement per table per batch; a live call's CDR is
kept in memory as column values, so its later events need no SELECT (a CDR of
an earlier run is read back once per batch).  Then each answered or
abandoned emergency call is filed as a ``voice`` report (caller number,
hotline, queue, times; ``source_ref`` is the call id, so a report is never
filed twice) and the report id is written on the CDR.  If a batch fails,
its events are retried one by one so one bad event cannot take the others
with it.  The queue is large; if it ever fills, the overflow is counted and
logged as an error, never silently lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from dispatch.audit import AuditBatch, AuditTrail
from dispatch.incidents import IncidentService, LinkKind
from dispatch.models import CallRecordRow, ReportRow
from dispatch.reports import NewReport, ReportService
from dispatch.storage import Database, update_many
from intake.model import Channel
from telephony.acd.events import Abandoned, AgentState, AgentStateChanged, CallFinished
from telephony.b2bua.events import (
    CallAnswered,
    CallMediaDead,
    CallMonitor,
    CallOffered,
    CallPreempted,
    CallRefused,
    CallReleased,
    CallRequeued,
    CallTransferFailed,
    CallTransferred,
)
from telephony.media.anchor import RecordingFailed, RecordingFinished
from telephony.registrar.events import AuthFailed, SourceBlocked

log = logging.getLogger(__name__)

QUEUE_SIZE = 200_000
BATCH = 500
LINGER_S = 0.2
"""A batch smaller than :data:`BATCH` waits this long for company (group commit); the
default of ``[sip] records_linger_ms``.  A crash (SIGKILL, power) can lose the call events
of this window; SIGTERM loses none (:meth:`CallRecorder.stop` writes everything)."""
LIVE_ROWS = 50_000
"""CDR rows of unfinished calls kept between batches, so an update needs no SELECT."""
RECORDS_FLUSH_S = 60.0
"""How long :meth:`CallRecorder.stop` may take to write what is queued."""
_OPERATOR_STATES = (AgentState.LOGGED_OUT, AgentState.NOT_READY)
CLUSTER_MIRROR = "cluster:"  # reason of the changes dispatch.acd_store's mirror makes
RECORDED = (CallOffered, CallAnswered, CallReleased, Abandoned, CallFinished, AgentStateChanged,
            AuthFailed, SourceBlocked, CallMonitor, CallMediaDead, RecordingFinished,
            RecordingFailed, CallTransferred, CallTransferFailed, CallPreempted, CallRefused,
            CallRequeued)


Row = dict[str, Any]
"""A CDR row's column values, kept in memory (no ORM object per call)."""
Filing = tuple[str, str, dict[str, str], Row | None]
"""A voice report owed: call id, text, extra fields, the CDR row if in hand."""
_CDR = cast(Table, CallRecordRow.__table__)
_MUTABLE = ("agent_id", "outcome", "queue", "cause", "released_by", "answered_at",
            "released_at", "timeline")
"""The CDR columns a call's later events change (``report_id`` is written apart)."""
_FETCHED = (CallAnswered, CallFinished, CallReleased, CallTransferred, RecordingFinished)
"""Events that change a CDR written by an earlier batch."""


def _ts(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)


@dataclass
class _Batch:
    """What one batch of events changes, gathered in memory and then written at once."""

    audit: AuditBatch
    rows: dict[str, Row] = field(default_factory=dict)
    """Working copies of the CDRs this batch touches."""
    new: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)
    filings: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    links: list[tuple[str, str, str]] = field(default_factory=list)


class CallRecorder:
    """The batch writer of CDRs, call audit rows and voice reports (module docs)."""

    def __init__(self, db: Database, audit: AuditTrail, reports: ReportService,
                 clock: Callable[[], float], incidents: IncidentService | None = None,
                 linger_s: float = LINGER_S) -> None:
        self.db = db
        self.linger_s = linger_s
        self.incidents = incidents
        self._links: list[tuple[str, str, str]] = []
        self.audit = audit
        self.reports = reports
        self.clock = clock
        self.queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_SIZE)
        self.errors = 0
        self.dropped = 0
        self.written = 0
        self.owed = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._offered: dict[str, CallOffered] = {}
        self._released: dict[str, CallReleased] = {}
        self._transferred: set[str] = set()
        # Column values of live calls' committed CDRs, so an update needs no SELECT.
        self._live: dict[str, Row] = {}

    def enqueue(self, event: object) -> None:
        """Queue an event for writing (never blocks the call path)."""
        if not isinstance(event, RECORDED):
            return
        if isinstance(event, AgentStateChanged) and (not (
                event.old in _OPERATOR_STATES or event.new in _OPERATOR_STATES)
                or event.reason.startswith(CLUSTER_MIRROR)):
            # ringing/busy/wrap-up are in the CDR timeline; the audit keeps log-ins.  A
            # cluster node holding an agent for another node's call is not an operator's act.
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("call records: queue full, event not stored",
                      extra={"event": type(event).__name__})

    async def start(self) -> None:
        """File the reports a previous run left owed, then start the writer task."""
        await self.refile()
        self._task = asyncio.ensure_future(self._loop())

    async def refile(self) -> int:
        """File a voice report for every answered/abandoned CDR that has none.

        The CDR is committed before its report is filed, so a stop or crash in
        between leaves a CDR without a report; this finds and files them (the
        call id as ``source_ref`` makes a second filing impossible).
        """
        async with self.db.session() as s:
            conn = await s.connection()
            rows = [dict(r) for r in (await conn.execute(select(_CDR).where(
                _CDR.c.report_id.is_(None), _CDR.c.hotline != "",
                _CDR.c.outcome.in_(("answered", "abandoned"))))).mappings()]
        owed: list[Filing] = []
        for row in rows:
            if row["outcome"] == "answered":
                text = (f"Voice call to {row['hotline']} from {row['caller'] or 'unknown'}, "
                        f"answered by {row['agent_id']}")
            else:
                text = (f"Abandoned voice call to {row['hotline']} from "
                        f"{row['caller'] or 'unknown'}: call back")
            owed.append((row["id"], text,
                         {"outcome": row["outcome"] or "", "agent": row["agent_id"]}, row))
        for start in range(0, len(owed), BATCH):
            await self._file_reports(owed[start:start + BATCH])
        if rows:
            log.info("call records: filed reports left owed", extra={"count": len(rows)})
        return len(rows)

    async def stop(self, timeout: float = RECORDS_FLUSH_S) -> None:
        """Write every queued CDR and audit row, then stop.

        While stopping, voice reports are not filed: their CDRs are committed
        without a report id, and :meth:`refile` files them at the next start,
        so a stop costs one commit per batch, not several per answered call.
        """
        if self._task is None:
            return
        self._stopping = True
        pending = self.queue.qsize()
        try:
            async with asyncio.timeout(timeout):
                await self.queue.join()
        except TimeoutError:
            log.error("call records not flushed at stop", extra={"pending": self.queue.qsize()})
        else:
            log.info("call records flushed", extra={"rows": pending, "owed": self.owed})
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def health(self) -> dict[str, Any]:
        """Queue depth and counters."""
        return {"pending": self.queue.qsize(), "written": self.written, "errors": self.errors,
                "dropped": self.dropped, "owed": self.owed}

    async def _loop(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if self.queue.qsize() < BATCH and not self._stopping:
                # Group commit: a lone event waits a moment so a burst shares a commit.
                await asyncio.sleep(self.linger_s)
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._write_batch(batch)
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _write_batch(self, batch: list[object]) -> None:
        b = _Batch(self.audit.batch())
        try:
            async with self.db.transaction() as tx:
                await self._fetch(tx.conn, b, batch)
                for event in batch:
                    self._apply(b, event)
                await self._store(tx.conn, b)
                await b.audit.write(tx)
            self.written += len(batch)
        except Exception:
            self._live.clear()  # what the batch changed was rolled back: read rows again
            if len(batch) == 1:
                self.errors += 1
                log.exception("call records: could not store %s", type(batch[0]).__name__)
                return
            log.warning("call records: batch of %d failed; retrying one by one", len(batch))
            for event in batch:
                await self._write_batch([event])
            return
        for call_id in b.touched:
            row = b.rows[call_id]
            if row.get("_done"):
                self._live.pop(call_id, None)
            elif call_id in self._live or len(self._live) < LIVE_ROWS:
                self._live[call_id] = row
        filings = b.filings
        if self._stopping:
            self.owed += len(filings)  # refile() files them at the next start
            filings = []
        await self._file_reports([(call_id, text, extra,
                                   b.rows.get(call_id) or self._live.get(call_id))
                                  for call_id, text, extra in filings])
        for call_id, path, sha256 in b.links:
            try:
                await self._link_recording(call_id, path, sha256)
            except Exception:
                self.errors += 1
                log.exception("call records: recording of %s not linked", call_id)

    async def _fetch(self, conn: AsyncConnection, b: _Batch, batch: list[object]) -> None:
        """Read, in one SELECT, the CDRs of earlier batches this batch changes and that
        are not held in memory (after a restart, or beyond :data:`LIVE_ROWS`)."""
        offered = {e.call_id for e in batch if isinstance(e, CallOffered)}
        wanted: set[str] = set()
        for event in batch:
            if isinstance(event, CallReleased) and not self._writes_release(event.call_id):
                continue  # the ACD's CallFinished writes the release
            if isinstance(event, _FETCHED):
                call_id = (event.record.call_id if isinstance(event, CallFinished)
                           else event.room if isinstance(event, RecordingFinished)
                           else event.call_id)
                if call_id not in offered and call_id not in self._live:
                    wanted.add(call_id)
        if not wanted:
            return
        found = await conn.execute(select(_CDR)
                                   .where(_CDR.c.id.in_(wanted)))
        for row in found.mappings():
            b.rows[row["id"]] = dict(row)

    def _writes_release(self, call_id: str) -> bool:
        """True when a CallReleased changes the CDR (a transfer's or a call-back's end)."""
        offered = self._offered.get(call_id)
        return call_id in self._transferred or (offered is not None
                                                and offered.route == "callback")

    async def _store(self, conn: AsyncConnection, b: _Batch) -> None:
        """One executemany INSERT of the new CDRs, one executemany UPDATE of the others."""
        inserts = [{k: v for k, v in b.rows[i].items() if not k.startswith("_")}
                   for i in b.touched if i in b.new]
        updates = [b.rows[i] for i in b.touched if i not in b.new]
        if inserts:
            await conn.execute(insert(_CDR), inserts)
        await update_many(conn, _CDR, "id", _MUTABLE, updates)

    async def _link_recording(self, call_id: str, path: str, sha256: str) -> None:
        """Link a call's recording to the incident its voice report joined."""
        if self.incidents is None:
            return
        async with self.db.session() as s:
            row = await s.get(CallRecordRow, call_id)
            report = await s.get(ReportRow, row.report_id) if row and row.report_id else None
        if report is None or report.incident_id is None:
            log.info("call records: recording of %s has no incident to join", call_id)
            return
        parts = path.replace("\\", "/").split("/")
        ref = "/".join(parts[-2:])[-160:]  # recordings_dir/<day>/<file>: day/file is unique
        await self.incidents.link(report.incident_id, LinkKind.RECORDING, ref, actor="sip",
                                  note=f"call {call_id} sha256 {sha256}")

    def _row(self, b: _Batch, call_id: str) -> Row | None:
        """The batch's working copy of a CDR (marked touched: it will be written)."""
        row = b.rows.get(call_id)
        if row is None:
            live = self._live.get(call_id)
            if live is None:
                return None
            row = b.rows[call_id] = dict(live)  # a copy: a failed batch leaves _live as it was
        b.touched.add(call_id)
        return row

    def _apply(self, b: _Batch, event: object) -> None:
        if isinstance(event, CallOffered):
            self._offered[event.call_id] = event
            b.rows[event.call_id] = {
                "id": event.call_id, "sip_call_id": event.sip_call_id[:200],
                "caller": event.caller, "called": event.called, "hotline": event.hotline,
                "queue": event.queue, "trunk": event.trunk, "priority": event.priority,
                "agent_id": "", "outcome": None, "cause": "", "released_by": "",
                "offered_at": _ts(event.at), "answered_at": None, "released_at": None,
                "report_id": None, "timeline": []}
            b.new.add(event.call_id)
            b.touched.add(event.call_id)
            b.audit.record(actor="system", action="call.offered",
                           subject=f"call:{event.call_id}",
                           details={"caller": event.caller, "hotline": event.hotline,
                                    "queue": event.queue, "trunk": event.trunk,
                                    "route": event.route})
        elif isinstance(event, CallAnswered):
            self._answered(b, event)
        elif isinstance(event, Abandoned):
            e = event.entry
            b.filings.append((e.call_id, f"Abandoned voice call to {e.hotline} from "
                              f"{e.caller or 'unknown'} after {e.wait:.0f} s waiting: call back",
                              {"wait_s": f"{e.wait:.1f}", "outcome": "abandoned"}))
        elif isinstance(event, CallTransferred | CallTransferFailed):
            self._transfer(b, event)
        elif isinstance(event, CallReleased) and event.call_id in self._transferred:
            self._after_transfer(b, event)
        elif isinstance(event, CallReleased):
            self._released[event.call_id] = event
            offered = self._offered.get(event.call_id)
            if offered is not None and offered.route == "callback":
                self._finish(b, event.call_id, None, event)
        elif isinstance(event, CallFinished):
            self._finish(b, event.record.call_id, event,
                         self._released.get(event.record.call_id))
        elif isinstance(event, AgentStateChanged):
            b.audit.record(actor=f"agent:{event.agent_id}", action="agent.state",
                           subject=f"agent:{event.agent_id}",
                           details={"from": event.old.value, "to": event.new.value,
                                    "reason": event.reason})
        elif isinstance(event, CallMonitor | CallMediaDead | RecordingFinished | RecordingFailed):
            self._media(b, event)
        elif isinstance(event, CallPreempted):
            b.audit.record(actor="system", action="call.preempted",
                           subject=f"call:{event.call_id}",
                           details={"action": event.action, "why": event.why,
                                    "agent": event.agent_id,
                                    "for_call": event.urgent_call_id,
                                    "for_hotline": event.urgent_hotline})
        elif isinstance(event, CallRequeued):
            b.audit.record(actor="system", action="call.requeued",
                           subject=f"call:{event.call_id}",
                           details={"agent": event.agent_id, "why": event.why})
        elif isinstance(event, CallRefused):
            # Refused before any queue (trunk limit, overload, no SDP): no CDR, but traced.
            b.audit.record(actor="system", action="call.refused",
                           subject=f"sip:{event.sip_call_id}"[:128],
                           details={"caller": event.caller, "called": event.called,
                                    "trunk": event.trunk, "status": event.status,
                                    "reason": event.reason})
        elif isinstance(event, AuthFailed | SourceBlocked):
            action = "sip.auth_failed" if isinstance(event, AuthFailed) else "sip.blocked"
            b.audit.record(actor="system", action=action, subject=f"source:{event.source}",
                           details={"event": type(event).__name__})

    def _media(self, b: _Batch,
               event: CallMonitor | CallMediaDead | RecordingFinished | RecordingFailed) -> None:
        """Force-in steps, dead media and recordings: audit rows, and the CDR's recording."""
        if isinstance(event, CallMonitor):
            b.audit.record(actor=event.actor or "system",
                           action=f"call.monitor_{event.step}", subject=f"call:{event.call_id}",
                           details={"leg": event.leg_id, "account": event.account,
                                    "mode": event.mode, "detail": event.detail})
        elif isinstance(event, CallMediaDead):
            b.audit.record(actor="system", action="call.dead_media",
                           subject=f"call:{event.call_id}",
                           details={"leg": event.leg_id, "silent_s": round(event.silent_s, 1)})
        elif isinstance(event, RecordingFinished):
            row = self._row(b, event.room)
            if row is not None:
                row["timeline"] = [*(row["timeline"] or []), {
                    "kind": "recording", "path": event.path, "sha256": event.sha256,
                    "duration_s": round(event.duration_s, 2)}]
                b.links.append((event.room, event.path, event.sha256))
            b.audit.record(actor="system", action="call.recorded",
                           subject=f"call:{event.room}",
                           details={"path": event.path, "sha256": event.sha256,
                                    "duration_s": round(event.duration_s, 2)})
        else:
            b.audit.record(actor="system", action="call.recording_failed",
                           subject=f"call:{event.room}",
                           details={"path": event.path, "error": event.error[:200]})

    def _answered(self, b: _Batch, e: CallAnswered) -> None:
        row = self._row(b, e.call_id)
        if row is not None:
            row["answered_at"] = _ts(e.at)
            row["agent_id"] = e.agent_id
        b.audit.record(actor=f"agent:{e.agent_id}", action="call.answered",
                       subject=f"call:{e.call_id}",
                       details={"queue": e.queue, "wait_s": round(e.wait, 3)})
        offered = self._offered.get(e.call_id)
        if offered is not None and offered.route != "callback":
            b.filings.append((e.call_id, f"Voice call to {offered.hotline} from "
                              f"{offered.caller or 'unknown'}, answered by {e.agent_id} after "
                              f"{e.wait:.0f} s", {"agent": e.agent_id,
                                                  "wait_s": f"{e.wait:.1f}",
                                                  "outcome": "answered"}))

    def _finish(self, b: _Batch, call_id: str, finished: CallFinished | None,
                released: CallReleased | None) -> None:
        row = self._row(b, call_id)
        self._released.pop(call_id, None)
        offered = self._offered.pop(call_id, None)
        if row is None:
            return
        row["_done"] = call_id not in self._transferred
        if finished is not None:
            record = finished.record
            row["outcome"] = record.outcome.value if record.outcome else None
            row["queue"] = record.queue or row["queue"]
            row["agent_id"] = record.agent_id or row["agent_id"]
            kept = [t for t in row["timeline"] or []
                    if t.get("kind") in ("recording", "transferred")]
            row["timeline"] = [{"kind": t.kind.value, "queue": t.queue, "agent": t.agent_id,
                                "cause": t.cause, "after_s": round(t.at - record.arrived, 3)}
                               for t in record.timeline] + kept
            cause = record.cause
        else:
            row["outcome"] = "answered" if row["answered_at"] is not None else "failed"
            cause = ""
        row["cause"] = (released.cause if released else cause)[:64]
        row["released_by"] = (released.by if released else "")[:64]
        row["released_at"] = _ts(released.at if released else self.clock())
        if call_id in self._transferred:
            row["outcome"] = "transferred"  # its release is written when the caller's leg ends
            return
        b.audit.record(actor=row["released_by"] or "system", action="call.released",
                       subject=f"call:{call_id}",
                       details={"outcome": row["outcome"], "cause": row["cause"],
                                "route": offered.route if offered else ""})

    def _transfer(self, b: _Batch, event: CallTransferred | CallTransferFailed) -> None:
        """A blind transfer: a CDR step and an audit row (and the outcome, when done)."""
        ok = isinstance(event, CallTransferred)
        details: dict[str, Any] = {"agent": event.agent_id, "target": event.target}
        if isinstance(event, CallTransferFailed):
            details["status"] = event.status
            if event.reason:
                details["reason"] = event.reason
        b.audit.record(actor=event.by or f"agent:{event.agent_id}",
                       action="call.transferred" if ok else "call.transfer_failed",
                       subject=f"call:{event.call_id}", details=details)
        if not ok:
            return
        self._transferred.add(event.call_id)
        row = self._row(b, event.call_id)
        if row is not None:
            row["outcome"] = "transferred"
            row["timeline"] = [*(row["timeline"] or []), {
                "kind": "transferred", "agent": event.agent_id, "target": event.target,
                "by": event.by}]

    def _after_transfer(self, b: _Batch, event: CallReleased) -> None:
        """The caller's leg of a transferred call ended: the CDR's release."""
        self._transferred.discard(event.call_id)
        self._offered.pop(event.call_id, None)
        row = self._row(b, event.call_id)
        if row is None:
            return
        row["_done"] = True
        row["outcome"] = "transferred"
        row["cause"] = "transferred"
        row["released_by"] = event.by[:64]
        row["released_at"] = _ts(event.at)
        row["timeline"] = [*(row["timeline"] or []), {"kind": "released_after_transfer",
                                                      "cause": event.cause, "by": event.by}]
        b.audit.record(actor=event.by or "system", action="call.released",
                       subject=f"call:{event.call_id}",
                       details={"outcome": "transferred", "cause": event.cause})

    async def _file_reports(self, filings: list[Filing]) -> None:
        """File the voice reports of committed CDRs as one batch, and link each CDR.

        A failure leaves the CDRs without a report id, so :meth:`refile` files
        them at the next start; it never loses the CDR itself.
        """
        missing = [call_id for call_id, _, _, known in filings if known is None]
        found: dict[str, Row] = {}
        if missing:
            async with self.db.transaction() as tx:
                result = await tx.conn.execute(select(_CDR)
                                            .where(_CDR.c.id.in_(missing)))
                found = {r["id"]: dict(r) for r in result.mappings()}
        news: list[NewReport] = []
        call_ids: list[str] = []
        for call_id, text, extra, known in filings:
            row = known if known is not None else found.get(call_id)
            if row is None:
                continue
            fields = {"call_id": call_id, "hotline": row["hotline"], "queue": row["queue"],
                      "trunk": row["trunk"], "called": row["called"], **extra}
            news.append(NewReport(Channel.VOICE, text, row["offered_at"], caller=row["caller"],
                                  fields=tuple(sorted(fields.items())), source_ref=call_id,
                                  said=False))
            call_ids.append(call_id)
        if not news:
            return
        linked: list[bool] = []

        async def link(conn: AsyncConnection, report_ids: list[str]) -> None:
            # In the transaction that stores the reports: a CDR and its report id commit
            # together, at no extra transaction.
            await update_many(conn, _CDR, "id", ("report_id",), [
                {"id": call_id, "report_id": report_id}
                for call_id, report_id in zip(call_ids, report_ids, strict=True)])
            linked.append(True)

        try:
            done = await self.reports.submit_many(news, actor="sip", on_stored=link)
            if not linked:  # the batch fell back to one-by-one submits
                async with self.db.transaction() as tx:
                    await update_many(tx.conn, _CDR, "id", ("report_id",), [
                        {"id": call_id, "report_id": d.report_id}
                        for call_id, d in zip(call_ids, done, strict=True)])
        except Exception:
            self.errors += 1
            log.exception("call records: %d voice reports not filed (refiled at next start)",
                          len(news))
