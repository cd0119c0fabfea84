"""Composition of the dispatch services (incidents, units, plans, roster, notifications, stats).

:func:`build_dispatch` loads and checks the dispatch files (``ConfigError`` → exit 2) and
builds every service from ``[dispatch]``; the daemon adds them to its service manager and
hooks :meth:`PlanService.on_event` to the event hub.  The acknowledgement secret comes from
the environment variable named by ``dispatch.ack_secret_env``, else from
``<data_dir>/ack_secret`` (created, mode 0600, on first start), so links stay valid across
restarts; nodes sharing a database must share the secret (set the variable).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dispatch.api_dispatch import DispatchContext
from dispatch.audit import AuditTrail
from dispatch.auth import Permission
from dispatch.commands import Command, CommandError, Commands, Invocation
from dispatch.config import Settings
from dispatch.dispatchconf import DispatchFiles, load_dispatch_files
from dispatch.incidents import IncidentService
from dispatch.notify import AckSigner, NotificationService, SmtpMailer, TextSender
from dispatch.plans import PlanService
from dispatch.roster import RosterService
from dispatch.stats import StatsService
from dispatch.storage import Database
from dispatch.units import UnitService


def ack_secret(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """The secret that signs acknowledgement links (environment, else a kept file)."""
    env = os.environ if environ is None else environ
    value = env.get(settings.dispatch.ack_secret_env)
    if value:
        return value.encode()
    path = Path(settings.node.data_dir) / "ack_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text(encoding="utf-8").strip().encode()


@dataclass(frozen=True)
class DispatchServices:
    """The dispatch services of one daemon."""

    files: DispatchFiles
    incidents: IncidentService
    units: UnitService
    plans: PlanService
    roster: RosterService
    notifications: NotificationService
    stats: StatsService

    def context(self) -> DispatchContext:
        """What the HTTP routes need."""
        return DispatchContext(self.incidents, self.units, self.plans, self.roster,
                               self.notifications, self.stats, self.files)


def build_dispatch(settings: Settings, db: Database, audit: AuditTrail,
                   publish: Callable[[object], object], clock: Callable[[], float], *,
                   sms: TextSender | None = None) -> DispatchServices:
    """Load the dispatch files and compose the services (nothing starts yet)."""
    cfg = settings.dispatch
    files = load_dispatch_files(cfg)
    incidents = IncidentService(db, audit, publish, clock)
    roster = RosterService(db, audit, publish, clock, files.officials)
    mailer = SmtpMailer(cfg.smtp, cfg.smtp.password()) if cfg.email else None
    notifications = NotificationService(
        db, audit, publish, clock, roster, AckSigner(ack_secret(settings)), mailer=mailer,
        sms=sms, ack_timeout_s=cfg.ack_timeout_minutes * 60, max_attempts=cfg.max_attempts,
        retry_s=cfg.retry_s, tick_s=cfg.tick_s, public_url=cfg.public_url)
    units = UnitService(db, audit, publish, clock, incidents, road_factor=cfg.road_factor,
                        notifier=notifications, seed_units=files.units,
                        seed_depots=files.depots)
    plans = PlanService(db, audit, publish, clock, files, incidents, units, roster,
                        notifications)
    stats = StatsService(db, cfg.shifts, cfg.utc_offset_hours)
    return DispatchServices(files, incidents, units, plans, roster, notifications, stats)


def add_console_commands(table: Commands, services: DispatchServices) -> None:
    """Console commands: notifications (list, acknowledge) and units."""
    from dispatch.notify import NotFound

    async def notifications(inv: Invocation) -> str:
        rows = await services.notifications.recent(limit=50)
        return "\n".join(f"{r.id}  {r.status:<12} {r.person:<16} {r.channel:<10} {r.subject}"
                         for r in rows) or "(none)"

    async def ack(inv: Invocation) -> str:
        if len(inv.args) != 1:
            raise CommandError("usage: notify ack NOTIFICATION_ID", 2)
        try:
            row = await services.notifications.acknowledge(inv.args[0], actor=inv.principal.name,
                                                           via="console")
        except NotFound:
            raise CommandError(f"no notification {inv.args[0]}") from None
        return f"notification {row.id} acknowledged ({row.person})"

    async def units(inv: Invocation) -> str:
        rows = await services.units.list_units()
        return "\n".join(f"{r.id:<10} {r.type:<14} {r.agency:<8} {r.status:<14} "
                         f"{r.incident_id or ''}" for r in rows) or "(none)"

    table.add(Command(("show", "notifications"), Permission.NOTIFICATIONS_READ,
                      "the newest notifications and their state", notifications))
    table.add(Command(("notify", "ack"), Permission.NOTIFICATIONS_ACK,
                      "acknowledge a notification for its official", ack, "ID"))
    table.add(Command(("show", "units"), Permission.UNITS_READ, "units and their status",
                      units))
