"""Notifications to officials and units: delivery, acknowledgement and escalation.

Theory of operation.  A notification is stored first (``pending``), then delivered by
:meth:`NotificationService.run_once` — by email (aiosmtplib: STARTTLS or TLS, optional
login) and/or SMS (an injected :class:`TextSender`).  A failed delivery is retried after
``retry_s``, doubling each time, up to ``max_attempts`` (then ``failed``).  An official's
notification carries a signed acknowledgement link (``/ack/<token>``, HMAC-SHA256 of the
notification id) and must be acknowledged through it or with the API/console command; if it
is not acknowledged by ``ack_due_at`` (``ack_timeout_minutes`` after it was created) it is
marked ``escalated`` and a new notification goes to the next-ranked official on duty for
the same agency and role; with nobody left it becomes ``unanswered`` and the consoles are
told.  Every step is audited under the incident's subject.

``run_once(now)`` takes the time as an argument, so the escalation timeline is tested on a
stepped clock; the daemon calls it every ``tick_s`` seconds and whenever a notification
is created.  Unit orders (:class:`UnitNotifier`) use the same rows (``target_kind="unit"``)
but are not escalated: a unit that does not answer is the dispatcher's to chase.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import re
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, ClassVar, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.audit import AuditTrail
from dispatch.config import SmtpSettings
from dispatch.models import NotificationRow
from dispatch.roster import Official, RosterService
from dispatch.storage import Database, after_commit
from dispatch.units import UnitContact

log = logging.getLogger(__name__)

MAX_TEXT = 2000
MAX_BATCH = 100
_HEADER_BAD = re.compile(r"[\x00-\x1f\x7f]")
OPEN_STATES = ("pending", "sent", "failed")
LEASE_S = 300


class TextSender(Protocol):
    """Sends one SMS (the SMS transports implement this)."""

    async def send(self, msisdn: str, text: str) -> None:
        """Send ``text`` to ``msisdn``; raise on failure."""
        ...


class Mailer(Protocol):
    """Sends one email."""

    async def send(self, to: str, subject: str, body: str) -> None:
        """Send; raise on failure."""
        ...


class SmtpMailer:
    """Email through an SMTP server with aiosmtplib (STARTTLS/TLS, optional login)."""

    def __init__(self, settings: SmtpSettings, password: str | None = None) -> None:
        """``password`` comes from the environment (see ``SmtpSettings.password_env``)."""
        self.settings = settings
        self.password = password

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.settings.ca_file)
        return context

    async def send(self, to: str, subject: str, body: str) -> None:
        """Send one plain-text UTF-8 message; raises aiosmtplib/OS errors."""
        import aiosmtplib

        for value in (to, subject):
            if _HEADER_BAD.search(value):
                raise ValueError("control characters in a mail header")
        cfg = self.settings
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = cfg.sender, to, subject
        message.set_content(body)
        await aiosmtplib.send(
            message, hostname=cfg.host, port=cfg.port, timeout=cfg.timeout_s,
            use_tls=cfg.security == "tls", start_tls=cfg.security == "starttls",
            tls_context=self._tls() if cfg.security != "none" else None,
            username=cfg.username, password=self.password if cfg.username else None)


class AckSigner:
    """Signs and checks acknowledgement tokens: ``<id>.<hmac>``."""

    def __init__(self, secret: bytes) -> None:
        """``secret``: at least 16 bytes, the same on every node."""
        if len(secret) < 16:
            raise ValueError("the acknowledgement secret must be at least 16 bytes")
        self._secret = secret

    def token(self, notification_id: str) -> str:
        """The token for a notification id."""
        mac = hmac.new(self._secret, notification_id.encode(), hashlib.sha256).hexdigest()
        return f"{notification_id}.{mac[:40]}"

    def verify(self, token: str) -> str | None:
        """The notification id of a good token, else ``None``."""
        # Tokens we issue are ASCII; anything else (a fuzzed or mangled link) is refused
        # here, before hmac.compare_digest, which raises TypeError on non-ASCII text.
        if len(token) > 100 or token.count(".") != 1 or not token.isascii():
            return None
        nid, _ = token.split(".")
        return nid if hmac.compare_digest(self.token(nid), token) else None


@dataclass(frozen=True)
class NotificationChanged:
    """A notification was created, sent, failed, acknowledged, escalated or went unanswered."""

    topic: ClassVar[str] = "notification.changed"
    notification_id: str
    incident_id: str | None
    person: str
    status: str
    detail: str


class NotFound(LookupError):
    """No such notification."""


def notification_json(row: NotificationRow) -> dict[str, Any]:
    """A notification as the API shows it."""
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() if v else None

    return {"id": row.id, "incident_id": row.incident_id, "plan_id": row.plan_id,
            "target_kind": row.target_kind, "agency": row.agency, "role": row.role,
            "rank": row.rank, "person": row.person, "channel": row.channel,
            "email": row.address, "phone": row.phone, "subject": row.subject,
            "status": row.status, "attempts": row.attempts, "created_at": iso(row.created_at),
            "sent_at": iso(row.sent_at), "ack_due_at": iso(row.ack_due_at),
            "acked_at": iso(row.acked_at), "acked_by": row.acked_by,
            "escalated_to": row.escalated_to, "last_error": row.last_error}


class NotificationService:
    """Stores, delivers, acknowledges and escalates notifications."""

    name = "notifications"

    def __init__(self, db: Database, audit: AuditTrail, publish: Callable[[object], object],
                 clock: Callable[[], float], roster: RosterService, signer: AckSigner, *,
                 mailer: Mailer | None = None, sms: TextSender | None = None,
                 ack_timeout_s: float = 600.0, max_attempts: int = 5, retry_s: float = 30.0,
                 tick_s: float = 5.0, public_url: str = "http://127.0.0.1:8080") -> None:
        """Keep the parts; the delivery loop starts with :meth:`start`."""
        self.db, self.audit, self.publish, self.clock = db, audit, publish, clock
        self.roster, self.signer = roster, signer
        self.mailer, self.sms = mailer, sms
        self.ack_timeout_s, self.max_attempts, self.retry_s = ack_timeout_s, max_attempts, retry_s
        self.tick_s, self.public_url = tick_s, public_url.rstrip("/")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.counts = {"sent": 0, "failed_attempts": 0, "escalated": 0, "acknowledged": 0}

    def _at(self, now: float | None = None) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock() if now is None else now, dt.UTC)

    async def start(self) -> None:
        """Start the delivery and escalation loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop (undelivered notifications stay stored and resume at start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def health(self) -> dict[str, Any]:
        """Counters since start."""
        return dict(self.counts)

    def wake(self) -> None:
        """Run a delivery round soon (new notifications are waiting)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a bug or a database outage: log it, keep the loop
                log.exception("notification round failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick_s):
                    await self._wake.wait()
            self._wake.clear()

    # ------------------------------------------------------------ creating

    async def notify_official(self, official: Official, *, incident_id: str | None,
                              plan_id: str | None, subject: str, text: str, actor: str,
                              now: float | None = None) -> str:
        """Store a notification to an on-duty official; it is delivered by the loop."""
        async with self.db.session() as s:
            row = self.add(s, official, incident_id, plan_id, subject, text, actor,
                            self._at(now))
        self._wake.set()
        return row.id

    def add(self, s: AsyncSession, official: Official, incident_id: str | None,
             plan_id: str | None, subject: str, text: str, actor: str,
             at: dt.datetime) -> NotificationRow:
        """Add a notification to ``official`` inside the caller's transaction."""
        channels = [c for c, ok in (("email", bool(official.email and self.mailer)),
                                    ("sms", bool(official.phone and self.sms))) if ok]
        nid = str(uuid.uuid4())
        link = f"{self.public_url}/ack/{self.signer.token(nid)}"
        body = f"{text[:MAX_TEXT]}\n\nAcknowledge: {link}\n(or in the console: notify ack {nid})"
        row = NotificationRow(
            id=nid, incident_id=incident_id, plan_id=plan_id, target_kind="official",
            agency=official.agency, role=official.role, rank=official.rank,
            person=official.person, channel="+".join(channels) or "none",
            address=official.email, phone=official.phone, subject=subject[:200], text=body,
            status="pending", attempts=0, next_attempt_at=at, created_at=at,
            ack_due_at=at + dt.timedelta(seconds=self.ack_timeout_s))
        s.add(row)
        self.audit.record(s, actor=actor, action="notification.created",
                          subject=f"incident:{incident_id}" if incident_id else "notification",
                          details={"notification": nid, "person": official.person,
                                   "agency": official.agency, "role": official.role,
                                   "rank": official.rank, "channel": row.channel,
                                   "plan": plan_id})
        self._announce(s, row, "created")
        return row

    def _announce(self, s: AsyncSession, row: NotificationRow, detail: str) -> None:
        event = NotificationChanged(row.id, row.incident_id, row.person, row.status, detail)
        after_commit(s, lambda: self.publish(event))

    async def notify_unit(self, unit: UnitContact, incident_id: str, text: str) -> str:
        """The :class:`~dispatch.units.UnitNotifier` of the daemon: record, then SMS the unit.

        Radio SDS and calls are wired by the radio and telephony services; until then a
        unit without a phone (or with no SMS sender) gets a recorded ``none`` notification
        the dispatcher sees, and is told by voice.
        """
        at = self._at()
        nid = str(uuid.uuid4())
        channel = "sms" if unit.phone and self.sms else "none"
        async with self.db.session() as s:
            row = NotificationRow(
                id=nid, incident_id=incident_id, plan_id=None, target_kind="unit",
                agency=unit.agency, role="unit", rank=0, person=unit.unit_id, channel=channel,
                address="", phone=unit.phone, subject=f"order for {unit.unit_id}",
                text=text[:MAX_TEXT], status="pending" if channel != "none" else "recorded",
                attempts=0, next_attempt_at=at if channel != "none" else None, created_at=at,
                ack_due_at=None)
            s.add(row)
            self.audit.record(s, actor="system", action="unit.notified",
                              subject=f"incident:{incident_id}",
                              details={"notification": nid, "unit": unit.unit_id,
                                       "channel": channel})
            self._announce(s, row, "created")
        # Sent by the loop at once, so a slow SMS transport never holds up an assignment.
        self.wake()
        return nid

    # ------------------------------------------------------------ the round

    async def run_once(self, now: float | None = None) -> None:
        """Deliver what is due and escalate what is overdue, as of ``now``."""
        async with self._lock:
            at = self._at(now)
            await self._deliver_due(at)
            if await self._escalate_due(at):
                await self._deliver_due(at)  # the next official hears now, not a tick later

    async def _deliver_due(self, at: dt.datetime) -> None:
        # Claim the due rows by pushing their next attempt past a lease: a second node
        # sharing the database skips them (and takes over if this one dies mid-send).
        async with self.db.session() as s:
            due = (await s.scalars(select(NotificationRow).where(
                NotificationRow.status == "pending", NotificationRow.next_attempt_at <= at)
                .order_by(NotificationRow.created_at).limit(MAX_BATCH)
                .with_for_update(skip_locked=True))).all()
            for row in due:
                row.next_attempt_at = at + dt.timedelta(seconds=LEASE_S)
        for row in due:
            errors = await self._send(row)
            await self._store_attempt(row.id, errors, at)

    async def _send(self, row: NotificationRow) -> dict[str, str]:
        """Try every channel of one notification; the errors by channel (empty: all sent)."""
        errors: dict[str, str] = {}
        channels = [c for c in row.channel.split("+") if c != "none"]
        for channel in channels:
            try:
                if channel == "email" and self.mailer is not None:
                    await self.mailer.send(row.address, row.subject, row.text)
                elif channel == "sms" and self.sms is not None:
                    await self.sms.send(row.phone, f"{row.subject}: {row.text}"[:MAX_TEXT])
                else:
                    errors[channel] = "no transport"
            except Exception as exc:  # any transport failure is retried later
                errors[channel] = f"{type(exc).__name__}: {exc}"[:200]
        if channels and len(errors) < len(channels):
            return {}  # reached on at least one channel: that is delivered
        return errors or {"none": "no channel to reach this person"}

    async def _store_attempt(self, nid: str, errors: dict[str, str], at: dt.datetime) -> None:
        async with self.db.session() as s:
            row = await s.get(NotificationRow, nid)
            if row is None or row.status != "pending":
                return
            row.attempts += 1
            subject = f"incident:{row.incident_id}" if row.incident_id else "notification"
            if not errors:
                row.status, row.sent_at, row.next_attempt_at = "sent", at, None
                self.counts["sent"] += 1
                self.audit.record(s, actor="system", action="notification.sent",
                                  subject=subject, details={"notification": nid,
                                                            "person": row.person,
                                                            "channel": row.channel,
                                                            "attempt": row.attempts})
                self._announce(s, row, f"sent by {row.channel}")
                return
            self.counts["failed_attempts"] += 1
            row.last_error = "; ".join(f"{k}: {v}" for k, v in errors.items())[:200]
            if row.attempts >= self.max_attempts or "none" in errors:
                row.status, row.next_attempt_at = "failed", None
                if row.ack_due_at is not None:
                    # Unreachable: do not wait out the timeout before trying the next one.
                    row.ack_due_at = min(row.ack_due_at, at)
            else:
                delay = self.retry_s * 2 ** (row.attempts - 1)
                row.next_attempt_at = at + dt.timedelta(seconds=delay)
            self.audit.record(s, actor="system", action="notification.attempt_failed",
                              subject=subject, details={"notification": nid,
                                                        "person": row.person,
                                                        "attempt": row.attempts,
                                                        "error": row.last_error,
                                                        "gave_up": row.status == "failed"})
            self._announce(s, row, row.last_error)

    async def _escalate_due(self, at: dt.datetime) -> int:
        async with self.db.session() as s:
            overdue = (await s.scalars(select(NotificationRow).where(
                NotificationRow.target_kind == "official",
                NotificationRow.status.in_(OPEN_STATES),
                NotificationRow.ack_due_at <= at).order_by(NotificationRow.ack_due_at)
                .limit(MAX_BATCH))).all()
        escalated = 0
        for row in overdue:
            nxt = await self.roster.next_after(row.agency, row.role, row.rank)
            async with self.db.session() as s:
                current = await s.scalar(select(NotificationRow).where(
                    NotificationRow.id == row.id).with_for_update())
                if current is None or current.status not in OPEN_STATES:
                    continue
                subject = f"incident:{row.incident_id}" if row.incident_id else "notification"
                waited = round((at - current.created_at).total_seconds() / 60, 1)
                if nxt is None:
                    current.status = "unanswered"
                    self.audit.record(s, actor="system", action="notification.unanswered",
                                      subject=subject,
                                      details={"notification": row.id, "person": row.person,
                                               "waited_min": waited,
                                               "why": f"nobody on duty after rank {row.rank} "
                                                      f"for {row.agency}/{row.role}"})
                    self._announce(s, current, "unacknowledged and nobody left to escalate to")
                    continue
                new = self.add(s, nxt, row.incident_id, row.plan_id,
                                f"[ESCALATED] {row.subject}"[:200],
                                f"Not acknowledged by {row.person} in {waited} min.\n"
                                + row.text.split("\n\nAcknowledge:")[0], "system", at)
                current.status, current.escalated_to = "escalated", new.id
                self.counts["escalated"] += 1
                escalated += 1
                self.audit.record(s, actor="system", action="notification.escalated",
                                  subject=subject,
                                  details={"notification": row.id, "from": row.person,
                                           "to": nxt.person, "to_notification": new.id,
                                           "waited_min": waited})
                self._announce(s, current, f"escalated to {nxt.person}")
        return escalated

    # ------------------------------------------------------------ acknowledgement

    async def acknowledge(self, nid: str, *, actor: str, via: str) -> NotificationRow:
        """Acknowledge a notification (idempotent); ``NotFound`` if unknown.

        A late acknowledgement of an escalated notification is still recorded (who knew,
        when), but does not recall the escalation.
        """
        async with self.db.session() as s:
            row = await s.scalar(select(NotificationRow).where(NotificationRow.id == nid)
                                 .with_for_update())
            if row is None:
                raise NotFound(nid)
            if row.acked_at is not None:
                return row
            row.acked_at, row.acked_by = self._at(), actor
            if row.status in (*OPEN_STATES, "unanswered", "recorded"):
                row.status = "acknowledged"
            self.counts["acknowledged"] += 1
            self.audit.record(s, actor=actor, action="notification.acknowledged",
                              subject=f"incident:{row.incident_id}" if row.incident_id
                              else "notification",
                              details={"notification": nid, "person": row.person, "via": via,
                                       "status": row.status})
            self._announce(s, row, f"acknowledged via {via}")
            return row

    async def acknowledge_token(self, token: str, *, source: str) -> NotificationRow:
        """Acknowledge through a signed link; ``NotFound`` for a bad or unknown token."""
        nid = self.signer.verify(token)
        if nid is None:
            raise NotFound("bad acknowledgement link")
        async with self.db.session() as s:
            row = await s.get(NotificationRow, nid)
        if row is None:
            raise NotFound(nid)
        return await self.acknowledge(nid, actor=f"{row.person} (link)", via=f"link {source}")

    async def recent(self, *, incident_id: str | None = None, status: str | None = None,
                   limit: int = 200) -> list[NotificationRow]:
        """Notifications, newest first."""
        stmt = select(NotificationRow).order_by(NotificationRow.created_at.desc(),
                                                NotificationRow.id).limit(limit)
        if incident_id is not None:
            stmt = stmt.where(NotificationRow.incident_id == incident_id)
        if status is not None:
            stmt = stmt.where(NotificationRow.status == status)
        async with self.db.session() as s:
            return list((await s.scalars(stmt)).all())
