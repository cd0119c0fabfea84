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
from typing import TYPE_CHECKING, Any

from dispatch import logs
from dispatch.api import AppContext, create_app
from dispatch.audit import AuditTrail
from dispatch.auth import UserStore
from dispatch.campaigns import CampaignService
from dispatch.commands import ConsoleContext, builtin_commands
from dispatch.commands_intake import add_intake_commands
from dispatch.config import (
    RELOADABLE,
    ConfigError,
    Settings,
    changed_keys,
    load_settings,
    read_districts,
)
from dispatch.events import ConfigReloaded, EventHub
from dispatch.httpserver import HttpService
from dispatch.metrics import Metrics
from dispatch.radio_service import RadioService
from dispatch.reports import ReportService
from dispatch.residents import ResidentService
from dispatch.runtime import settle_heap
from dispatch.services import RequiredServiceFailed, ServiceManager
from dispatch.sms_service import SmsService, report_sink
from dispatch.storage import Database

if TYPE_CHECKING:
    from dispatch.media_service import MediaService

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
RADIO_STOP_TIMEOUT_S = 10.0


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
        self._district_cache: dict[str, Any] | None = None
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
        self.cluster: Any = None
        if settings.cluster.enabled:
            from dispatch.clusterwire import build_cluster

            # Events cross nodes, dead nodes are taken over (see dispatch/cluster.py).
            self.cluster = build_cluster(self)
            self.services.add(self.cluster, required=True)
        rules = Path(settings.intake.rules_dir) if settings.intake.rules_dir else None
        self.reports = ReportService(self.db, self.audit, self.hub.publish, clock, rules)
        self.services.add(self.reports, required=True)
        # The SMS transports start before the campaign engine and stop after it, so the
        # batch in flight at a stop settles on a live link.  Without transports
        # campaigns are stored, approved and wait.
        self.sms: SmsService | None = None
        if settings.sms.enabled:
            self.sms = SmsService(settings.sms, on_receipt=self._sms_receipt,
                                  on_message=report_sink(self.reports), reactor=reactor)
            self.services.add(self.sms, required=False, retry_s=30.0)
        window = sum(b.window * b.binds for b in settings.sms.smpp) + 4 * len(settings.sms.modems)
        concurrency = max(16, min(window, 2000))
        self.campaigns = CampaignService(self.db, self.audit, self.hub.publish, clock,
                                         settings.node.name, self.sms,
                                         batch=max(200, 2 * concurrency),
                                         concurrency=concurrency)
        self.services.add(self.campaigns, required=True)
        if self.cluster is not None:
            from dispatch.clusterwire import wire_campaigns

            wire_campaigns(self.cluster, self.campaigns)
        from dispatch.dispatchwire import build_dispatch

        # Incidents, units, plans (预案), roster and notifications; a bad plan file → exit 2.
        self.dispatch = build_dispatch(settings, self.db, self.audit, self.hub.publish, clock)
        for service in (self.dispatch.roster, self.dispatch.units, self.dispatch.notifications,
                        self.dispatch.plans):
            self.services.add(service, required=True)
        self.hub.listen(self.dispatch.plans.on_event)
        if self.sms is not None:
            # Officials' and units' notifications go out over the same SMS transports.
            self.dispatch.notifications.sms = self.sms
        sms = settings.sms
        self.residents = ResidentService(
            self.db, self.audit, clock, templates_file=sms.templates_file,
            districts_file=sms.districts_file, default_country=sms.default_country,
            opt_out_override=sms.opt_out_override, node=settings.node.name)
        self.services.add(self.residents, required=False, retry_s=60.0)
        from dispatch.plan_broadcast import PlanBroadcasts

        # A dispatcher confirming a plan's broadcast stores a campaign for a commander.
        self.plan_broadcasts = PlanBroadcasts(self.residents, self.campaigns)
        self.hub.listen(self.plan_broadcasts)
        self._add_devices()
        self.radio: RadioService | None = None
        if settings.radio.gateways:
            self.radio = RadioService(settings.radio, reactor=reactor, db=self.db,
                                      audit=self.audit, publish=self.hub.publish,
                                      reports=self.reports, clock=clock)
            # Optional: a missing radio is an alarm in /health, never a reason to refuse calls.
            # In a cluster one node drives the gateways (a lease); the others stand by.
            radio_service: Any = self.radio
            if self.cluster is not None:
                from dispatch.clusterwire import leased_radio

                radio_service = leased_radio(self.cluster, self.radio, self.services)
            self.services.add(radio_service, required=False, retry_s=30.0)
            from dispatch.radio_glue import PositionFeed, RadioFirstNotifier

            self.radio.add_position_hook(PositionFeed(self.dispatch.units))
            if self.dispatch.units.notifier is not None:
                self.dispatch.units.notifier = RadioFirstNotifier(self.radio,
                                                                  self.dispatch.units.notifier)
        self.commands = builtin_commands(ConsoleContext(
            db=self.db, users=self.users, audit=self.audit, publish=self.hub.publish,
            health=self.services.health, clock=clock))
        add_intake_commands(self.commands, self.db, self.campaigns)
        from dispatch.dispatchwire import add_console_commands

        add_console_commands(self.commands, self.dispatch)
        if self.radio is not None:
            from dispatch.clusterwire import radio_relay
            from dispatch.radio_commands import add_radio_commands

            # In a cluster the console's radio commands go to the node driving the radios.
            self.radio_relay = radio_relay(self)
            add_radio_commands(self.commands, self.radio, self.radio_relay)
        if settings.ssh.enabled:
            self._add_ssh()
        if settings.email_intake.enabled:
            from dispatch.email_intake import EmailIntake

            mail = settings.email_intake
            self.email = EmailIntake(self.reports, host=mail.host, port=mail.port,
                                     max_message_bytes=mail.max_message_bytes,
                                     recipients=mail.recipients)
            self.services.add(self.email, required=False, retry_s=30.0)
        self.media: MediaService | None = None
        if settings.media.enabled:
            from dispatch.media_service import MediaService

            # Required: a node that cannot anchor media cannot take calls.
            self.media = MediaService(settings.media, self.hub.publish, self.metrics.registry)
            self.services.add(self.media, required=True)
            if settings.media.record and settings.media.recording_retention_days > 0:
                from dispatch.recording_retention import RecordingSweeper

                self.services.add(RecordingSweeper(
                    Path(settings.media.recordings_dir), settings.media.recording_retention_days,
                    self.db, self.audit, clock, self.hub.publish), required=False, retry_s=60.0)
        self.sip: Any = None
        self.conferences: Any = None
        if settings.sip.enabled:
            self._add_sip()
            from dispatch.call_commands import add_call_commands

            add_call_commands(self.commands, self.sip)
            if self.radio is not None:  # RoIP devices configured by account: registered here
                from dispatch.radio_glue import registrar_resolver

                sip: Any = self.sip
                self.radio.use_sip_resolver(registrar_resolver(sip.registrar, sip.b2bua.wall))
            from dispatch.clusterwire import wire_sip

            # Call takers' states survive a restart and are shared across nodes.
            self.services.add(wire_sip(self, self.cluster), required=False, retry_s=30.0)
        self.patches: Any = None
        if self.radio is not None and self.media is not None:
            from dispatch.radio_patch import wire_patches

            # Talkgroups as legs of calls and conferences (radio audio through the mixer).
            self.patches = wire_patches(self.radio, self.media.engine, self.hub.publish,
                                        self.hub.listen, self.media.subscribe, self.sip,
                                        self.commands, clock, self.radio_relay)
            self.services.add(self.patches, required=False)
        if self.radio is not None and self.media is not None and self.conferences is not None \
                and self.radio.satphones:
            from dispatch.satphone_legs import wire_satphone_legs

            # Satphone calls as conference legs (sound card by AT, or the dock's SIP side).
            self.services.add(wire_satphone_legs(self.radio, self.media.engine, self.conferences,
                                                 self.hub.listen), required=False)
        self.services.add(self.http, required=True)

    async def _sms_receipt(self, message_ids: list[str], state: str) -> bool:
        return await self.campaigns.on_receipt(message_ids, state)

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
        # With [media] enabled every call's audio is anchored in our mixer (force-in,
        # recording); without it the SDP is relayed and the phones talk directly.
        from dispatch.incidents import IncidentService
        from dispatch.sip_service import SipService

        media = self.media
        self.sip = SipService(
            self.settings.sip, self.settings.telephony(), self.db, self.audit, self.reports,
            self.hub.publish, self.clock, anchor=media.anchor if media else None,
            media_events=media.subscribe if media else None,
            hold_prompt=self.settings.media.hold_prompt if media else None,
            tones=(self.settings.media.join_tone, self.settings.media.leave_tone),
            incidents=IncidentService(self.db, self.audit, self.hub.publish, self.clock))
        # Required: a command centre whose hotlines cannot listen must not pretend to run.
        self.services.add(self.sip, required=True)
        if media is not None:
            from dispatch.conference_service import ConferenceService

            self.conferences = ConferenceService(
                self.sip.b2bua.conferences, self.settings.sip.domain, self.db, self.audit,
                self.clock, incidents=self.dispatch.incidents, units=self.dispatch.units)
            self.hub.listen(self.conferences)
            self.services.add(self.conferences, required=False, retry_s=30.0)
            from dispatch.conference_commands import add_conference_commands

            add_conference_commands(self.commands, self.conferences)

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
        app = create_app(AppContext(
            db=self.db, users=self.users, audit=self.audit, hub=self.hub, metrics=self.metrics,
            health=self.services.health, clock=self.clock,
            session_ttl_s=self.settings.http.session_ttl_s,
            max_body_bytes=self.settings.http.max_body_bytes,
            node=self.settings.node.name, version=self.version, reports=self.reports,
            campaigns=self.campaigns, dispatch=self.dispatch.context(),
            residents=self.residents, radio=self.radio,
            webhook_secret=self.settings.intake.webhook_secret,
            districts=self._districts, sip=self.sip, conferences=self.conferences,
            patches=self.patches,
        ))
        if self.cluster is not None:
            from dispatch.clusterwire import forward_calls

            # A supervisor on this node forces into a call on another (media stays there).
            forward_calls(app, self.cluster, self.sip, self.radio)
        return app

    def _districts(self) -> dict[str, Any] | None:
        """The console map's district layer, read once (checked when the config loaded)."""
        path = self.settings.console.districts_geojson
        if path is None:
            return None
        if self._district_cache is None:
            self._district_cache = read_districts(path)
        return self._district_cache

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
        """Unkey every radio first, then stop every service in reverse order."""
        if self.radio is not None:
            # PTT must fail safe before anything else is torn down.
            try:
                async with asyncio.timeout(RADIO_STOP_TIMEOUT_S):
                    await self.radio.stop_radios()
            except Exception:
                log.exception("radios did not stop cleanly")
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
            settle_heap()  # start-up's objects out of the collector's way (dispatch/runtime.py)
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
                                               for k in ("node", "database", "http", "devices",
                                                         "sms", "radio", "media",
                                                         "console", "dispatch")})
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
