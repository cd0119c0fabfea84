"""Broadcast campaigns: every recipient once, through restarts and SIGKILL.

Theory of operation.  A campaign's recipients are all written to the
database (state ``queued``) before anything is sent.  The sender claims a
batch: it marks the rows ``submitting`` *and commits* before the first byte
goes to the SMSC, submits them, and commits each outcome (``submitted`` with
the SMSC's message ids, ``queued`` again with a back-off for a temporary
error, ``failed`` for a permanent one).

If the process dies between the two commits, the rows it was submitting are
the only ones whose fate is unknown: the SMSC may have taken some of them.
At start they go back to ``queued`` with ``resend_replace`` set, and are sent
again with SMPP's ``replace_if_present_flag`` and the campaign's own
``service_type`` tag: an SMSC then *replaces* a message it still holds for
that recipient instead of sending a second one.  A submit whose response
never came (the SMSC may have taken it) is treated the same way.  So no
recipient is skipped (every row ends submitted, failed or cancelled) and no
recipient gets the message twice from us — the one case left is an SMSC that
had already delivered the first copy and ignores the replace flag, which the
documentation names.

A public broadcast waits for a second person (two-person rule); notices to
officials go at once.  Every transition is audited; progress and ETA are
published as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import secrets
import string
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.audit import AuditTrail
from dispatch.fencing import Fence
from dispatch.models import CampaignRecipientRow, CampaignRow, MessageIdRow
from dispatch.storage import Database, after_commit

log = logging.getLogger(__name__)

OPEN_STATES = ("queued", "submitting")
PRIORITY_EVACUATION, PRIORITY_WARNING, PRIORITY_INFORMATION = 0, 1, 2
_TAG_ALPHABET = string.ascii_uppercase + string.digits


class TemporaryFailure(Exception):
    """The SMSC refused for now (throttled, queue full, link down): try again later."""


class PermanentFailure(Exception):
    """The SMSC refused for good (bad number, barred): do not try again."""


class OutcomeUnknown(Exception):
    """No answer came: the SMSC may or may not have taken the message."""


class SmsSender(Protocol):
    """What the engine needs of an SMS transport (SMPP pool, modem pool, router).

    A sender may also have a ``ready`` attribute: while it is false nothing is claimed.
    """

    async def submit(self, msisdn: str, text: str, *, tag: str, replace: bool,
                     priority: int) -> list[str]:
        """Send one message; return the SMSC's message ids (one per part) or raise."""


class CampaignError(Exception):
    """A request about a campaign that cannot be granted; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        """Keep the message and the status."""
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RecipientIn:
    """One recipient and the text rendered for them."""

    msisdn: str
    lang: str
    text: str


@dataclass(frozen=True)
class CampaignProgress:
    """How far a campaign is, with an estimate of when it is submitted."""

    topic: ClassVar[str] = "campaign.progress"
    campaign_id: str
    status: str
    counts: dict[str, int]
    submit_per_s: float
    eta_s: float | None


@dataclass(frozen=True)
class CampaignStateChanged:
    """A campaign was created, approved, cancelled or finished."""

    topic: ClassVar[str] = "campaign.state"
    campaign_id: str
    status: str
    actor: str


@dataclass(frozen=True)
class _Claimed:
    id: int
    campaign_id: str
    msisdn: str
    text: str
    tag: str
    replace: bool
    priority: int
    attempts: int
    gen: int | None = None  # the fencing token the claim was made under


class CampaignService:
    """Creates, approves and sends campaigns; a service of the daemon."""

    name = "campaigns"

    def __init__(self, db: Database, audit: AuditTrail, publish: Callable[[object], object],
                 clock: Callable[[], float], node: str, sender: SmsSender | None, *,
                 batch: int = 200, concurrency: int = 64, retry_base_s: float = 5.0,
                 max_attempts: int = 5) -> None:
        """Keep the parts; nothing runs until :meth:`start`."""
        self.db, self.audit, self.publish, self.clock = db, audit, publish, clock
        self.node = node
        self.sender = sender
        self.batch, self.concurrency = batch, concurrency
        self.retry_base_s, self.max_attempts = retry_base_s, max_attempts
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._rate: dict[str, tuple[float, int]] = {}
        self._receipt_progress: dict[str, asyncio.TimerHandle] = {}
        self._progress_tasks: set[asyncio.Task[None]] = set()
        self.submitted = 0
        self.fence: Fence | None = None  # set when clustered (dispatch/fencing.py)
        self.fenced = 0
        self._batch: asyncio.Future[list[tuple[_Claimed, str, Any]]] | None = None
        self._abandoned = False

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover rows a crash left in flight, then start sending."""
        recovered = await self.recover()
        if recovered:
            log.warning("campaign recipients in flight at the last stop will be resent with "
                        "replace_if_present", extra={"recipients": recovered})
        self._stopping = False
        if self.sender is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="campaigns")

    async def stop(self) -> None:
        """Finish the batch in flight (its outcomes are stored), then stop."""
        self._stopping = True
        self._wake.set()
        for handle in self._receipt_progress.values():
            handle.cancel()
        self._receipt_progress.clear()
        if self._task is not None:
            try:
                async with asyncio.timeout(2.5):
                    await self._task
            except TimeoutError:
                log.warning("campaign sender did not finish its batch in time; "
                            "its rows are resent with replace_if_present at the next start")

    def health(self) -> dict[str, Any]:
        """Whether a transport is attached and how much went out."""
        return {"transport": self.sender is not None, "submitted": self.submitted,
                "fenced": self.fenced}

    async def abandon_batch(self) -> None:
        """This node was taken over while it stalled: stop sending the batch in flight.

        Its rows were re-queued by the survivor; submits still waiting in a
        transport are cancelled (never written), outcomes are not stored.
        """
        if self._batch is not None and not self._batch.done():
            self._abandoned = True
            self._batch.cancel()

    async def recover(self) -> int:
        """Rows left ``submitting`` by this node go back to the queue, to be replaced."""
        async with self.db.session() as s:
            result = await s.execute(
                update(CampaignRecipientRow)
                .where(CampaignRecipientRow.state == "submitting",
                       CampaignRecipientRow.lease_owner == self.node)
                .values(state="queued", resend_replace=True, lease_owner=None, lease_gen=None,
                        updated_at=self._now()))
            return int(getattr(result, "rowcount", 0) or 0)

    # ------------------------------------------------------------ operator actions

    async def create(self, title: str, recipients: Iterable[RecipientIn], *, actor: str,
                     priority: int = PRIORITY_EVACUATION, public: bool = True,
                     incident_id: str | None = None,
                     target: dict[str, Any] | None = None) -> str:
        """Store a campaign and all its recipients (deduplicated by number)."""
        now = self._now()
        campaign_id = str(uuid.uuid4())
        seen: set[str] = set()
        rows: list[dict[str, Any]] = []
        for r in recipients:
            if r.msisdn in seen:
                continue
            seen.add(r.msisdn)
            rows.append({"campaign_id": campaign_id, "msisdn": r.msisdn, "lang": r.lang,
                         "text": r.text, "state": "queued", "attempts": 0,
                         "resend_replace": False, "next_attempt_at": now,
                         "message_ids": [], "updated_at": now})
        if not rows:
            raise CampaignError("a campaign needs at least one recipient", 422)
        status = "pending_approval" if public else "sending"
        async with self.db.session() as s:
            s.add(CampaignRow(id=campaign_id, tag=await self._new_tag(s), title=title[:200],
                              priority=priority, status=status, public=public,
                              incident_id=incident_id, target=target or {}, created_by=actor,
                              created_at=now, recipients=len(rows)))
            await s.flush()
            for start in range(0, len(rows), 5000):
                await s.execute(insert(CampaignRecipientRow), rows[start:start + 5000])
            self.audit.record(s, actor=actor, action="campaign.created",
                              subject=f"campaign:{campaign_id}",
                              details={"title": title, "recipients": len(rows),
                                       "public": public, "status": status})
            self._announce(s, campaign_id, status, actor)
        self._wake.set()
        return campaign_id

    async def _new_tag(self, s: AsyncSession) -> str:
        while True:
            tag = "".join(secrets.choice(_TAG_ALPHABET) for _ in range(5))
            if await s.scalar(select(CampaignRow.id).where(CampaignRow.tag == tag)) is None:
                return tag

    def _announce(self, s: AsyncSession, campaign_id: str, status: str, actor: str) -> None:
        event = CampaignStateChanged(campaign_id, status, actor)
        after_commit(s, lambda: self.publish(event))

    async def approve(self, campaign_id: str, *, actor: str) -> None:
        """The second person approves a public broadcast; sending starts."""
        async with self.db.session() as s:
            row = await self._get(s, campaign_id)
            if row.status != "pending_approval":
                raise CampaignError(f"campaign is {row.status}, not waiting for approval")
            if actor == row.created_by:
                raise CampaignError("two-person rule: the creator cannot approve", 403)
            row.status, row.approved_by, row.approved_at = "sending", actor, self._now()
            self.audit.record(s, actor=actor, action="campaign.approved",
                              subject=f"campaign:{campaign_id}",
                              details={"created_by": row.created_by,
                                       "recipients": row.recipients})
            self._announce(s, campaign_id, "sending", actor)
        self._wake.set()

    async def cancel(self, campaign_id: str, *, actor: str, reason: str = "") -> int:
        """Stop a campaign: recipients not yet submitted are not sent to."""
        async with self.db.session() as s:
            row = await self._get(s, campaign_id)
            if row.status not in ("pending_approval", "sending"):
                raise CampaignError(f"campaign is {row.status}")
            result = await s.execute(
                update(CampaignRecipientRow)
                .where(CampaignRecipientRow.campaign_id == campaign_id,
                       CampaignRecipientRow.state == "queued")
                .values(state="cancelled", updated_at=self._now()))
            row.status, row.finished_at = "cancelled", self._now()
            count = int(getattr(result, "rowcount", 0) or 0)
            self.audit.record(s, actor=actor, action="campaign.cancelled",
                              subject=f"campaign:{campaign_id}",
                              details={"reason": reason, "not_sent": count})
            self._announce(s, campaign_id, "cancelled", actor)
        return count

    async def _get(self, s: AsyncSession, campaign_id: str) -> CampaignRow:
        row = await s.get(CampaignRow, campaign_id)
        if row is None:
            raise CampaignError(f"no campaign {campaign_id}", 404)
        return row

    async def counts(self, campaign_id: str) -> dict[str, int]:
        """Recipients by state."""
        async with self.db.session() as s:
            rows = await s.execute(
                select(CampaignRecipientRow.state, func.count())
                .where(CampaignRecipientRow.campaign_id == campaign_id)
                .group_by(CampaignRecipientRow.state))
            return {state: int(n) for state, n in rows}

    # ------------------------------------------------------------ sending

    async def _run(self) -> None:
        while not self._stopping:
            try:
                # A transport that is not up yet (or has lost every link) is waited for:
                # rows claimed now would only use up their attempts.
                ready = getattr(self.sender, "ready", True)
                claimed = await self._claim() if ready else []
                if not claimed:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._wake.wait()
                    continue
                await self._send(claimed)
            except Exception:  # a bug or a database outage must not end sending for good
                log.exception("campaign sender failed; retrying in 1 s")
                await asyncio.sleep(1.0)
                # Whatever this node was submitting may or may not have gone out:
                # resend it with replace_if_present, as after a crash.
                with contextlib.suppress(Exception):
                    await self.recover()

    async def _claim(self) -> list[_Claimed]:
        """Mark the next batch ``submitting`` and commit, before anything is sent."""
        now = self._now()
        async with self.db.session() as s:
            stmt = (select(CampaignRecipientRow.id, CampaignRow.id, CampaignRecipientRow.msisdn,
                           CampaignRecipientRow.text, CampaignRow.tag,
                           CampaignRecipientRow.resend_replace, CampaignRow.priority,
                           CampaignRecipientRow.attempts)
                    .join(CampaignRow, CampaignRow.id == CampaignRecipientRow.campaign_id)
                    .where(CampaignRow.status == "sending",
                           CampaignRecipientRow.state == "queued",
                           CampaignRecipientRow.next_attempt_at <= now)
                    .order_by(CampaignRow.priority, CampaignRecipientRow.id)
                    .limit(self.batch))
            if self.db.dialect == "postgresql":
                # Several nodes may share the queue: each claims rows no other holds.
                stmt = stmt.with_for_update(of=CampaignRecipientRow, skip_locked=True)
            fence = self.fence
            if fence is not None and not fence.may_act():
                return []  # stalled: let the heartbeat find out whether we are still us
            claimed = [_Claimed(*row) for row in await s.execute(stmt)]
            if claimed:
                claim = (update(CampaignRecipientRow)
                         .where(CampaignRecipientRow.id.in_([c.id for c in claimed]))
                         .values(state="submitting", lease_owner=self.node,
                                 attempts=CampaignRecipientRow.attempts + 1, updated_at=now))
                if fence is None:
                    await s.execute(claim)
                else:
                    # Fencing: the claim holds only while our node row still carries
                    # the generation we announced (a survivor that took us over bumped it).
                    got = set(await s.scalars(
                        claim.where(fence.still_mine())
                        .values(lease_gen=fence.generation)
                        .returning(CampaignRecipientRow.id)))
                    claimed = [dataclasses.replace(c, gen=fence.generation)
                               for c in claimed if c.id in got]
        return claimed

    async def _send(self, claimed: Sequence[_Claimed]) -> None:
        assert self.sender is not None
        sender = self.sender
        gate = asyncio.Semaphore(self.concurrency)

        fence = self.fence

        async def one(c: _Claimed) -> tuple[_Claimed, str, Any]:
            async with gate:
                if fence is not None and not await fence.confirm(c.gen or 0):
                    # Taken over while stalled (or the database is out of reach): the
                    # row is the survivor's now; sending it here would send it twice.
                    return c, "fenced", None
                try:
                    ids = await sender.submit(c.msisdn, c.text, tag=c.tag, replace=c.replace,
                                              priority=c.priority)
                    return c, "ok", ids
                except TemporaryFailure as exc:
                    return c, "temporary", str(exc)
                except PermanentFailure as exc:
                    return c, "permanent", str(exc)
                except OutcomeUnknown as exc:
                    return c, "unknown", str(exc)
                except Exception as exc:  # a transport bug: keep the row, try again
                    log.exception("SMS transport failed unexpectedly")
                    return c, "temporary", f"{type(exc).__name__}: {exc}"

        self._batch = batch = asyncio.gather(*(one(c) for c in claimed))
        try:
            outcomes = await batch
        except asyncio.CancelledError:
            if not self._abandoned:
                raise
            self._abandoned = False
            self.fenced += len(claimed)
            log.error("campaign sender fenced off: its batch in flight was abandoned (the "
                      "node that took this one over sends it)", extra={"recipients": len(claimed)})
            return
        finally:
            self._batch = None
        fenced = sum(1 for _, kind, _ in outcomes if kind == "fenced")
        if fenced:
            self.fenced += fenced
            log.error("campaign sender fenced off: recipients claimed before a stall were not "
                      "sent by this node", extra={"recipients": fenced})
        await self._store([o for o in outcomes if o[1] != "fenced"])

    async def _store(self, outcomes: Sequence[tuple[_Claimed, str, Any]]) -> None:
        """Commit a batch's outcomes in a few bulk statements (one executemany each)."""
        if not outcomes:
            return
        now = self._now()
        changes: list[dict[str, Any]] = []
        ids: list[dict[str, Any]] = []
        for c, kind, value in outcomes:
            change: dict[str, Any] = {"id": c.id, "lease_owner": None, "lease_gen": None,
                                      "updated_at": now}
            if kind == "ok":
                change.update(state="submitted", message_ids=list(value), last_error=None)
                ids.extend({"message_id": m, "recipient_id": c.id} for m in value)
            elif kind == "permanent" or c.attempts >= self.max_attempts:
                change.update(state="failed", last_error=str(value)[:200])
            else:
                # Temporary: back off.  Unknown: the SMSC may hold a copy, so the
                # next submit must replace it rather than add a second one.
                delay = min(self.retry_base_s * 2 ** (c.attempts - 1), 300.0)
                asyncio.get_running_loop().call_later(delay, self._wake.set)
                change.update(state="queued", last_error=str(value)[:200],
                              next_attempt_at=now + dt.timedelta(seconds=delay),
                              resend_replace=c.replace or kind == "unknown")
            changes.append(change)
        async with self.db.session() as s:
            store = update(CampaignRecipientRow)
            if self.fence is not None:
                # Only rows still ours: a survivor that took us over owns the rest.
                [gen] = {c.gen for c, _, _ in outcomes}  # one batch, one claim
                store = store.where(CampaignRecipientRow.lease_owner == self.node,
                                    CampaignRecipientRow.state == "submitting",
                                    CampaignRecipientRow.lease_gen == gen
                                    ).execution_options(synchronize_session=None)
            await s.execute(store, changes)
            if ids:
                # An SMSC may reuse ids (after its own restart): the newest owner wins.
                stmt = (pg_insert if self.db.dialect == "postgresql" else sqlite_insert)(
                    MessageIdRow)
                await s.execute(stmt.on_conflict_do_update(
                    index_elements=["message_id"],
                    set_={"recipient_id": stmt.excluded.recipient_id}), ids)
            self.submitted += sum(1 for _, kind, _ in outcomes if kind == "ok")
            touched = {c.campaign_id for c, _, _ in outcomes}
            for campaign_id in touched:
                await self._progress(s, campaign_id, len(outcomes))

    async def _progress(self, s: AsyncSession, campaign_id: str, done: int) -> None:
        rows = await s.execute(
            select(CampaignRecipientRow.state, func.count())
            .where(CampaignRecipientRow.campaign_id == campaign_id)
            .group_by(CampaignRecipientRow.state))
        counts = {state: int(n) for state, n in rows}
        campaign = await s.get(CampaignRow, campaign_id)
        assert campaign is not None
        started, sent = self._rate.get(campaign_id, (time.monotonic(), 0))
        sent += done
        self._rate[campaign_id] = (started, sent)
        elapsed = max(time.monotonic() - started, 1e-3)
        rate = sent / elapsed
        left = sum(counts.get(k, 0) for k in OPEN_STATES)
        if left == 0 and campaign.status == "sending":
            campaign.status, campaign.finished_at = "completed", self._now()
            self.audit.record(s, actor="system", action="campaign.completed",
                              subject=f"campaign:{campaign_id}", details=counts)
            self._announce(s, campaign_id, "completed", "system")
            log.info("campaign completed", extra={"campaign": campaign_id, "counts": counts})
            self._rate.pop(campaign_id, None)
        event = CampaignProgress(campaign_id, campaign.status, counts, round(rate, 1),
                                 round(left / rate, 1) if left and rate > 0 else None)
        after_commit(s, lambda: self.publish(event))

    # ------------------------------------------------------------ receipts

    async def on_receipt(self, message_ids: Iterable[str], state: str) -> bool:
        """A delivery receipt: ``state`` delivered / failed / expired.  False if unknown id."""
        async with self.db.session() as s:
            recipient_id = await s.scalar(select(MessageIdRow.recipient_id)
                                          .where(MessageIdRow.message_id.in_(list(message_ids))))
            if recipient_id is None:
                return False
            row = await s.get(CampaignRecipientRow, recipient_id)
            if row is None:
                return False
            if row.state in ("submitted", "delivered"):
                row.state, row.updated_at = state, self._now()
                self._receipts_seen(row.campaign_id)
            return True

    def _receipts_seen(self, campaign_id: str) -> None:
        """Publish delivery progress at most once a second per campaign (receipts flood in)."""
        if campaign_id in self._receipt_progress:
            return
        loop = asyncio.get_running_loop()
        self._receipt_progress[campaign_id] = loop.call_later(
            1.0, lambda: self._spawn_progress(loop, campaign_id))

    def _spawn_progress(self, loop: asyncio.AbstractEventLoop, campaign_id: str) -> None:
        task = loop.create_task(self._receipt_progress_now(campaign_id))
        self._progress_tasks.add(task)
        task.add_done_callback(self._progress_tasks.discard)

    async def _receipt_progress_now(self, campaign_id: str) -> None:
        self._receipt_progress.pop(campaign_id, None)
        try:
            async with self.db.session() as s:
                campaign = await s.get(CampaignRow, campaign_id)
                if campaign is None:
                    return
                counts = await self.counts(campaign_id)
                left = sum(counts.get(k, 0) for k in OPEN_STATES)
                event = CampaignProgress(campaign_id, campaign.status, counts, 0.0,
                                         None if left else 0.0)
            self.publish(event)
        except Exception:  # progress is informative; a failure must not disturb receipts
            log.exception("delivery progress for campaign %s failed", campaign_id)
