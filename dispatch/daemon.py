"""The daemon: composition root and lifecycle.

:class:`Daemon` builds every service from the settings, starts them in
dependency order (database, devices, HTTP last so ``/health`` can see them
all), waits for a signal, and stops them in reverse.  SIGTERM/SIGINT stop;
SIGHUP re-reads the configuration file, applies what can change at run time
and says, in the log and in an event, what needs a restart.

The Twisted asyncio reactor must already be installed on the running loop
(:func:`install_reactor`) before a daemon that opens serial devices starts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from dispatch import logs
from dispatch.api import AppContext, create_app
from dispatch.audit import AuditTrail
from dispatch.auth import UserStore
from dispatch.campaigns import CampaignService
from dispatch.commands import ConsoleContext, builtin_commands
from dispatch.config import RELOADABLE, ConfigError, Settings, changed_keys, load_settings
from dispatch.events import ConfigReloaded, EventHub
from dispatch.httpserver import HttpService
from dispatch.metrics import Metrics
from dispatch.reports import ReportService
from dispatch.services import RequiredServiceFailed, ServiceManager
from dispatch.storage import Database

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def dispatchd_version() -> str:
    """The installed package's version (``0+unknown`` when run from a bare tree)."""
    try:
        return version("dispatchd")
    except PackageNotFoundError:
        return "0+unknown"


def install_reactor(loop: asyncio.AbstractEventLoop) -> Any:
    """Install Twisted's asyncio reactor on ``loop`` (once per process) and return it."""
    import sys

    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        return reactor
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)  # type: ignore[no-untyped-call]
    from twisted.internet import reactor

    return reactor


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A bug in a callback or task must be seen (as a bug) but never stop the loop.
    exc = context.get("exception")
    log.error("unhandled error in the event loop (a bug): %s", context.get("message", ""),
              exc_info=exc if isinstance(exc, BaseException) else None)


class DatabaseService:
    """The database as a service: checks (or upgrades) the schema at start."""

    name = "database"

    def __init__(self, db: Database, auto_migrate: bool) -> None:
        """Wrap an engine; ``auto_migrate`` upgrades an old schema instead of refusing."""
        self.db = db
        self.auto_migrate = auto_migrate
        self.revision: str | None = None

    async def start(self) -> None:
        """Connect and make sure the schema is the one this code needs."""
        status = await self.db.ensure_schema(self.auto_migrate)
        self.revision = status.current

    async def stop(self) -> None:
        """Close the pool."""
        await self.db.close()

    def health(self) -> dict[str, Any]:
        """Dialect and schema revision."""
        return {"dialect": self.db.dialect, "schema": self.revision}


class Daemon:
    """One dispatchd process: its settings, services and event hub."""

    def __init__(
        self,
        settings: Settings,
        config_path: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        reactor: Any = None,
    ) -> None:
        """Compose every service from ``settings``; nothing starts yet."""
        self.settings = settings
        self.config_path = config_path
        self.clock = clock
        self.reactor = reactor
        self.version = dispatchd_version()
        self.hub = EventHub(clock=clock, queue_size=settings.http.event_queue)
        self.services = ServiceManager(self.hub.publish, clock)
        self.audit = AuditTrail(self.hub.publish, clock)
        url = settings.database_url()
        self.db = Database(url, echo=settings.database.echo, pool_size=settings.database.pool_size)
        self.users = UserStore(self.db, self.audit, clock,
                               max_failures=settings.auth.max_failures,
                               lockout_s=settings.auth.lockout_s)
        self.metrics = Metrics(self._snapshot, version=self.version, node=settings.node.name)
        self.http = HttpService(self._make_app, settings.http.host, settings.http.port)
        self._stop = asyncio.Event()
        self._reload_requested = False

        self.services.add(DatabaseService(self.db, settings.auto_migrate(url)), required=True)
        rules = Path(settings.intake.rules_dir) if settings.intake.rules_dir else None
        self.reports = ReportService(self.db, self.audit, self.hub.publish, clock, rules)
        self.services.add(self.reports, required=True)
        # The SMS transports (SMPP, modem pool) attach their sender when they land;
        # until then campaigns are stored, approved and wait.
        self.campaigns = CampaignService(self.db, self.audit, self.hub.publish, clock,
                                         settings.node.name, None)
        self.services.add(self.campaigns, required=True)
        self._add_devices()
        self.commands = builtin_commands(ConsoleContext(
            db=self.db, users=self.users, audit=self.audit, publish=self.hub.publish,
            health=self.services.health, clock=clock))
        if settings.ssh.enabled:
            self._add_ssh()
        if settings.email_intake.enabled:
            from dispatch.email_intake import EmailIntake

            mail = settings.email_intake
            self.email = EmailIntake(self.reports, host=mail.host, port=mail.port,
                                     max_message_bytes=mail.max_message_bytes,
                                     recipients=mail.recipients)
            self.services.add(self.email, required=False, retry_s=30.0)
        self.sip: Any = None
        if settings.sip.enabled:
            self._add_sip()
        self.services.add(self.http, required=True)

    def _add_devices(self) -> None:
        for device in self.settings.devices:
            from twisted.internet.protocol import Protocol

            from hardware.serial import SerialLink

            name = f"device:{device.name}"
            link = SerialLink(
                name, device.port, Protocol, self.reactor,
                baudrate=device.baudrate, retry_s=device.retry_s,
                on_down=functools.partial(self.services.mark_failed, name),
                on_up=functools.partial(self.services.mark_running, name),
            )
            self.services.add(link, required=device.required, retry_s=device.retry_s)

    def _add_sip(self) -> None:
        from dispatch.sip_service import SipService

        self.sip = SipService(self.settings.sip, self.settings.telephony(), self.db, self.audit,
                              self.reports, self.hub.publish, self.clock)
        # Required: a command centre whose hotlines cannot listen must not pretend to run.
        self.services.add(self.sip, required=True)

    def _add_ssh(self) -> None:
        from dispatch.sshconsole import SshConsole

        ssh = self.settings.ssh
        host_key = Path(ssh.host_key or Path(self.settings.node.data_dir) / "ssh_host_ed25519_key")
        self.ssh = SshConsole(self.commands, self.users, host=ssh.host, port=ssh.port,
                              host_key=host_key, idle_timeout_s=ssh.idle_timeout_s,
                              max_sessions=ssh.max_sessions)
        # Optional: a console that cannot listen must not take the hotlines down.
        self.services.add(self.ssh, required=False, retry_s=30.0)

    def _snapshot(self) -> dict[str, Any]:
        return {**self.services.health(), "subscribers": self.hub.subscriber_count,
                "published": dict(self.hub.published)}

    def _make_app(self) -> Any:
        return create_app(AppContext(
            db=self.db, users=self.users, audit=self.audit, hub=self.hub, metrics=self.metrics,
            health=self.services.health, clock=self.clock,
            session_ttl_s=self.settings.http.session_ttl_s,
            max_body_bytes=self.settings.http.max_body_bytes,
            node=self.settings.node.name, version=self.version, reports=self.reports,
            campaigns=self.campaigns,
            webhook_secret=self.settings.intake.webhook_secret,
            sip=self.sip,
        ))

    async def start(self) -> None:
        """Start every service; raise :class:`RequiredServiceFailed`."""
        log.info("dispatchd starting", extra={"version": self.version,
                                              "node": self.settings.node.name,
                                              "pid": os.getpid()})
        try:
            await self.services.start_all()
        except RequiredServiceFailed:
            await self.stop()
            raise
        log.info("dispatchd ready")

    async def stop(self) -> None:
        """Stop every service in reverse order and close consoles' event streams."""
        self.hub.close_all()
        await self.services.stop_all()
        log.info("dispatchd stopped")

    def request_stop(self) -> None:
        """Ask :meth:`serve` to stop (signal handlers call this)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask :meth:`serve` to re-read the configuration."""
        self._reload_requested = True
        self._stop.set()

    async def serve(self) -> int:
        """Run until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        handled = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
                   signal.SIGHUP: self.request_reload}
        for sig, handler in handled.items():
            loop.add_signal_handler(sig, handler)
        loop.set_exception_handler(_log_loop_exception)
        try:
            try:
                await self.start()
            except RequiredServiceFailed as exc:
                log.error(str(exc))
                return EXIT_FAILED
            while True:
                await self._stop.wait()
                self._stop.clear()
                if not self._reload_requested:
                    break
                self._reload_requested = False
                await self.reload()
            await self.stop()
            return EXIT_OK
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    async def reload(self) -> list[str]:
        """Re-read the configuration file; apply what can change; returns keys needing restart."""
        if self.config_path is None:
            log.info("reload: running on embedded defaults, nothing to re-read")
            return []
        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the running configuration: %s", problem)
            return []
        changed = changed_keys(self.settings, new)
        applied = [k for k in changed if k in RELOADABLE]
        restart = [k for k in changed if k not in RELOADABLE]
        if "log.level" in applied or "log.format" in applied:
            logs.configure(new.log.level, new.log.format)
        self.users.max_failures = new.auth.max_failures
        self.users.lockout_s = new.auth.lockout_s
        self.settings = new.model_copy(update={k: getattr(self.settings, k)
                                               for k in ("node", "database", "http", "devices")})
        async with self.db.session() as s:
            self.audit.record(s, actor="system", action="config.reloaded",
                              subject=f"config:{Path(self.config_path).name}",
                              details={"applied": applied, "needs_restart": restart})
        self.hub.publish(ConfigReloaded(tuple(applied), tuple(restart)))
        log.info("configuration reloaded", extra={"applied": applied})
        if restart:
            log.warning("changed settings need a restart to take effect",
                        extra={"needs_restart": restart})
        return restart
