"""Recording retention: delete call recordings older than ``[media] recording_retention_days``.

:class:`RecordingSweeper` runs on the daemon loop: at start and then every
``interval_s`` it lists ``recordings_dir/<day>/*.wav`` in an executor (the
loop never waits on the disk), takes those whose last write is older than the
retention, deletes each WAV and its ``.sha256`` and records that:

* an audit row ``recording.expired`` (actor ``system``, the path, its age);
* on the call's CDR (the file is named ``<call id>-<time>.wav``), a timeline
  entry ``{"kind": "recording_deleted", "path", "at"}``;
* a :class:`RecordingExpired` event on the hub.

Age is measured against the injected wall clock, so tests step it.  A file
that cannot be deleted is logged and retried at the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dispatch.audit import AuditTrail
from dispatch.models import CallRecordRow
from dispatch.storage import Database

log = logging.getLogger(__name__)

DAY_S = 86400.0
MAX_PER_SWEEP = 10_000
"""Files deleted by one sweep at most (the rest wait for the next one)."""


@dataclass(frozen=True)
class RecordingExpired:
    """A recording passed its retention and was deleted."""

    topic: ClassVar[str] = "media.recording_expired"
    path: str
    call_id: str
    age_days: float


def expired(directory: Path, cutoff: float, limit: int = MAX_PER_SWEEP) -> list[tuple[Path, float]]:
    """WAV files under ``directory/<day>/`` last written before ``cutoff`` (epoch s)."""
    found: list[tuple[Path, float]] = []
    if not directory.is_dir():
        return found
    for day in sorted(directory.iterdir()):
        if not day.is_dir():
            continue
        for path in sorted(day.glob("*.wav")):
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if mtime < cutoff:
                found.append((path, mtime))
                if len(found) >= limit:
                    return found
    return found


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the day's directory, once empty


class RecordingSweeper:
    """Deletes expired recordings and records each deletion (module docs)."""

    name = "recording-retention"

    def __init__(self, directory: Path, retention_days: int, db: Database, audit: AuditTrail,
                 clock: Callable[[], float], publish: Callable[[object], object], *,
                 interval_s: float = 3600.0) -> None:
        self.directory = directory
        self.retention_s = retention_days * DAY_S
        self.db = db
        self.audit = audit
        self.clock = clock
        self.publish = publish
        self.interval_s = interval_s
        self.deleted = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Sweep now and then every ``interval_s``."""
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def health(self) -> dict[str, Any]:
        """Counters."""
        return {"retention_days": self.retention_s / DAY_S, "deleted": self.deleted,
                "failed": self.failed}

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("recording sweep failed (a bug); trying again later")
            await asyncio.sleep(self.interval_s)

    async def sweep(self) -> list[str]:
        """Delete what has expired at ``clock()``; the paths deleted."""
        now = self.clock()
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, expired, self.directory, now - self.retention_s)
        done: list[tuple[Path, float]] = []
        for path, mtime in found:
            try:
                await loop.run_in_executor(None, _delete, path)
            except OSError as exc:
                self.failed += 1
                log.error("expired recording not deleted", extra={"path": str(path),
                                                                   "error": str(exc)})
                continue
            done.append((path, mtime))
        if done:
            await self._record(done, now)
        return [str(p) for p, _ in done]

    async def _record(self, done: list[tuple[Path, float]], now: float) -> None:
        at = dt.datetime.fromtimestamp(now, dt.UTC).isoformat()
        events = []
        async with self.db.session() as s:
            for path, mtime in done:
                call_id = path.name[:36]
                age = round((now - mtime) / DAY_S, 2)
                self.audit.record(s, actor="system", action="recording.expired",
                                  subject=f"call:{call_id}",
                                  details={"path": str(path), "age_days": age,
                                           "retention_days": self.retention_s / DAY_S})
                row = await s.get(CallRecordRow, call_id)
                if row is not None:
                    row.timeline = [*(row.timeline or []), {
                        "kind": "recording_deleted", "path": str(path), "at": at,
                        "reason": "retention"}]
                events.append(RecordingExpired(str(path), call_id, age))
        self.deleted += len(done)
        log.info("expired recordings deleted", extra={"count": len(done)})
        for event in events:
            self.publish(event)
