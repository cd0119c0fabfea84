"""The audit trail (过程溯源): who did what, to what, when and why.

Every state change of an incident, call, broadcast or PTT grant is recorded
here *in the same transaction* as the change itself, so the trail and the data
can never disagree.  Rows are append-only (database triggers refuse UPDATE and
DELETE).  Once the transaction commits, each row is published as an
:class:`~dispatch.events.AuditRecorded` event for the consoles.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatch.events import AuditRecorded
from dispatch.models import AuditEntry
from dispatch.storage import Transaction, after_commit

MAX_DETAILS_KEYS = 64


class AuditTrail:
    """Writes audit rows into the caller's transaction and announces them after commit."""

    def __init__(self, publish: Callable[[object], object], clock: Callable[[], float]) -> None:
        """``publish`` takes an event; ``clock`` gives the time in seconds since the epoch."""
        self._publish = publish
        self._clock = clock

    def record(
        self,
        session: AsyncSession,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Add one audit row to ``session``'s transaction.

        ``actor`` is a user name or ``system``/a service name; ``action`` a
        dotted verb such as ``incident.grade_raised``; ``subject`` what it was
        done to (``incident:42``, ``user:alice``); ``details`` the why.
        """
        details = dict(details or {})
        if len(details) > MAX_DETAILS_KEYS:
            raise ValueError(f"audit details have more than {MAX_DETAILS_KEYS} keys")
        entry = AuditEntry(
            at=dt.datetime.fromtimestamp(self._clock(), dt.UTC),
            actor=actor[:64],
            action=action[:64],
            subject=subject[:128],
            details=details,
        )
        session.add(entry)

        def announce() -> None:
            self._publish(
                AuditRecorded(
                    id=entry.id,
                    at=entry.at,
                    actor=entry.actor,
                    action=entry.action,
                    subject=entry.subject,
                    details=entry.details,
                )
            )

        after_commit(session, announce)
        return entry

    def batch(self) -> AuditBatch:
        """A batch of audit rows for one transaction, written by one INSERT."""
        return AuditBatch(self._publish, self._clock)


class AuditBatch:
    """Audit rows gathered in memory and written by one executemany INSERT.

    For the batch writers on hot paths (call records, voice reports): the same
    rows :meth:`AuditTrail.record` writes, without an ORM object per row.
    :meth:`write` adds them to the caller's transaction and announces them once
    it has committed, so the trail and the data still commit together.
    """

    def __init__(self, publish: Callable[[object], object], clock: Callable[[], float]) -> None:
        """``publish`` and ``clock`` as for :class:`AuditTrail`."""
        self._publish = publish
        self._clock = clock
        self.rows: list[dict[str, Any]] = []

    def record(self, *, actor: str, action: str, subject: str,
               details: Mapping[str, Any] | None = None) -> None:
        """Queue one audit row (same arguments and limits as :meth:`AuditTrail.record`)."""
        details = dict(details or {})
        if len(details) > MAX_DETAILS_KEYS:
            raise ValueError(f"audit details have more than {MAX_DETAILS_KEYS} keys")
        self.rows.append({"at": dt.datetime.fromtimestamp(self._clock(), dt.UTC),
                          "actor": actor[:64], "action": action[:64],
                          "subject": subject[:128], "details": details})

    async def write(self, session: AsyncSession | Transaction) -> None:
        """Insert the queued rows in ``session``'s transaction; announce them after commit.

        The ids are needed for the announcements.  PostgreSQL returns them from
        the batched INSERT; SQLite would run one statement per row to return
        them in order, so there the rows go in with one ``executemany`` and the
        ids are read back: the transaction holds SQLite's only write lock, so
        the rows it just inserted are the newest, numbered consecutively.
        """
        rows, self.rows = self.rows, []
        if not rows:
            return
        table = cast(Table, AuditEntry.__table__)
        conn = session.conn if isinstance(session, Transaction) else await session.connection()
        if conn.dialect.name == "sqlite":
            await conn.execute(insert(table), rows)
            last = int((await conn.execute(select(func.max(table.c.id)))).scalar_one())
            ids = list(range(last - len(rows) + 1, last + 1))
        else:
            result = await conn.execute(
                insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
            ids = [int(i) for i in result.scalars()]
        for i, row in zip(ids, rows, strict=True):
            hook = partial(self._publish, AuditRecorded(id=i, **row))
            if isinstance(session, Transaction):
                session.after_commit(hook)
            else:
                after_commit(session, hook)


async def query(
    session: AsyncSession,
    *,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
    subject: str | None = None,
    actor: str | None = None,
) -> Sequence[AuditEntry]:
    """The newest audit rows first, filtered; page with ``before_id``."""
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if subject is not None:
        stmt = stmt.where(AuditEntry.subject == subject)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    return (await session.scalars(stmt)).all()
