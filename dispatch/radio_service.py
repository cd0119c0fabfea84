"""The radio service: TETRA and satphone gateways, talkgroups, floor control, radio intake.

Theory of operation
-------------------
:class:`RadioService` builds one :class:`~radio.tetra.TetraGateway` per
``[[radio.gateways]]`` of kind ``tetra`` (it carries the talkgroups that name
it, plus its extra ``groups``) and one :class:`~radio.satphone.SatphoneGateway`
per satphone.  Gateways report everything through one callback; this service
turns each report into

* an event on the :class:`~dispatch.events.EventHub` (topics ``radio.*``,
  ``satphone.*``, ``unit.position``), and
* an audit row (every floor event, keying, gateway loss and return, emergency,
  SDS and satphone call), written by a journal task through a bounded queue
  so the loop never waits on the database; and
* for incoming SDS text, satphone SMS and handset emergency calls, a Report
  through :class:`~dispatch.reports.ReportService` (channels ``radio_sds``,
  ``satphone_sms``, ``radio_call``; the caller is the ISSI or number).

Location reports (LIP short location reports in an SDS) become
:class:`UnitPosition` events and call every *position hook*: a function
``hook(radio_id: str, lat: float, lon: float, at: datetime.datetime)`` added
with :meth:`RadioService.add_position_hook` (the dispatch/units helper's entry
point).  A unit's last position is attached to its next SDS report.

Fail-safe (the radio is never left keyed):

* stop: :meth:`RadioService.stop_radios` (the daemon calls it before any other
  service stops) stops every TETRA gateway, whose own stop revokes every grant
  and writes ``AT+CUTXC``/``ATH`` at once;
* a crash: an exception in one of this service's event handlers, or the
  journal task dying, revokes every grant on the affected gateway(s) (which
  unkeys them) and the service keeps serving;
* gateway lost and start-up reconciliation: inside the gateway (``lost()``
  revokes; the first command after (re)opening the port is the release).

Audio: a talkgroup joins a conference as a leg through
:class:`radio.audio.RadioAudioLeg` -- 20 ms frames of 8 kHz 16-bit mono PCM,
transmitted only between ``RadioKeyed`` and ``RadioUnkeyed``, received while
another talker is on air.  Sound-card gateways (``kind = "soundcard"``,
:class:`radio.soundcard.SoundcardGateway`) and RoIP devices (``kind = "roip"``,
:class:`radio.roip.RoipGateway`, kept with them in ``soundcards``: the audio
gateways) carry it (:meth:`RadioService.audio_leg`), and so do TETRA terminals
and satphones with an ``audio`` table (:mod:`dispatch.radio_audio`);
:mod:`dispatch.radio_patch` patches them.  See :mod:`radio.audio` for where each
gateway's audio physically is.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy.exc import SQLAlchemyError

from dispatch.audit import AuditTrail
from dispatch.auth import Role
from dispatch.config import RadioGatewaySettings, RadioSettings
from dispatch.radio_audio import TerminalAudio
from dispatch.reports import NewReport, ReportService
from dispatch.storage import Database
from hardware.serial import PortFactory, twisted_serial_port
from hardware.soundcard import AudioDevice, ControlLines, PyAudioDevice, SerialControlLines
from intake.model import Channel
from radio import floor
from radio.dmr import (
    DmrCallEnded,
    DmrCallStarted,
    DmrFault,
    DmrGateway,
    DmrLinkDown,
    DmrLinkUp,
    DmrSettings,
)
from radio.dmr_bridge import BridgeMember, DmrBridge
from radio.floor import FloorSettings, Priority
from radio.lip import PID_LIP, LipError, decode_lip
from radio.roip import Resolver, RoipGateway, RoipSettings
from radio.satphone import (
    CallStateChanged,
    RegistrationChanged,
    SatFault,
    SatLinkDown,
    SatLinkUp,
    SatphoneGateway,
    SatphoneSettings,
    SbdReceived,
    SignalChanged,
    SmsReceived,
)
from radio.soundcard import SoundcardGateway, SoundcardSettings
from radio.terminal_audio import TetraGroupLeg
from radio.tetra import (
    CallReleased,
    GatewayFault,
    IncomingGroupCall,
    LinkDown,
    LinkUp,
    RadioKeyed,
    RadioUnkeyed,
    SdsReceived,
    TalkerChanged,
    TetraGateway,
    TetraSettings,
)
from telephony.roip_link import open_link

log = logging.getLogger(__name__)

PositionHook = Callable[[str, float, float, dt.datetime], None]
AudioFactory = Callable[[RadioGatewaySettings], AudioDevice]
LinesFactory = Callable[[RadioGatewaySettings], ControlLines]


def pyaudio_device(gw: RadioGatewaySettings) -> AudioDevice:
    """The real sound card of a ``soundcard`` gateway (pyaudio, opened at start)."""
    assert gw.soundcard is not None
    sc = gw.soundcard
    return PyAudioDevice(rate=sc.audio_rate, input_device=sc.audio_input,
                         output_device=sc.audio_output)


def serial_lines(gw: RadioGatewaySettings) -> ControlLines:
    """The real PTT/COS lines of a ``soundcard`` gateway (pyserial, opened at start)."""
    assert gw.soundcard is not None and gw.device is not None
    sc = gw.soundcard
    return SerialControlLines(gw.device, ptt=sc.ptt_line, cos=sc.cos_line,
                              cos_active_low=sc.cos_active_low)
#: The sound-card factories used when none is passed (tests put a frame-fed card here).
SOUND_CARDS: list[Any] = [pyaudio_device, serial_lines]
JOURNAL_SIZE = 10_000
REPORT_ATTEMPTS = 5
#: Whose press wins: commander > dispatcher > field unit.
ROLE_PRIORITY: dict[Role, Priority] = {
    Role.ADMIN: Priority.COMMANDER, Role.COMMANDER: Priority.COMMANDER,
    Role.SUPERVISOR: Priority.DISPATCHER, Role.DISPATCHER: Priority.DISPATCHER,
    Role.CALL_TAKER: Priority.FIELD_UNIT,
}
_PRIORITY_NAMES = {"field_unit": Priority.FIELD_UNIT, "dispatcher": Priority.DISPATCHER,
                   "commander": Priority.COMMANDER}


class RadioServiceError(Exception):
    """A request the radio service refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Talkgroup:
    """A configured talkgroup: its GSSI on one TETRA gateway and who may key it."""

    name: str
    gssi: str
    gateway: str
    agency: str
    min_priority: Priority


# --- events published on the hub ------------------------------------------------------------


@dataclass(frozen=True)
class RadioFloorChanged:
    """A floor event of a talkgroup (granted, queued, pre-empted, released, revoked ...)."""

    topic: ClassVar[str] = "radio.floor"
    talkgroup: str
    gateway: str
    event: str
    who: str
    priority: str | None = None
    position: int | None = None
    by: str | None = None
    why: str = ""


@dataclass(frozen=True)
class RadioKeyChanged:
    """The radio carrying ``talkgroup`` went on air (``keyed``) or stopped transmitting."""

    topic: ClassVar[str] = "radio.keyed"
    talkgroup: str
    gateway: str
    keyed: bool


@dataclass(frozen=True)
class RadioTalker:
    """Who talks on ``talkgroup`` on air (``None``: nobody, ``"self"``: our console)."""

    topic: ClassVar[str] = "radio.talker"
    talkgroup: str
    gateway: str
    talker: str | None


@dataclass(frozen=True)
class RadioGatewayChanged:
    """A gateway came up, was lost, or failed (alarm)."""

    topic: ClassVar[str] = "radio.gateway"
    gateway: str
    kind: str
    state: str
    detail: str = ""


@dataclass(frozen=True)
class RadioGroupCall:
    """A handset opened a group call."""

    topic: ClassVar[str] = "radio.call"
    talkgroup: str
    gateway: str
    calling: str
    priority: int
    emergency: bool


@dataclass(frozen=True)
class RadioEmergency:
    """A handset's emergency call: high priority, the floor was taken from every console."""

    topic: ClassVar[str] = "radio.emergency"
    talkgroup: str
    gateway: str
    calling: str
    priority: str = "high"


@dataclass(frozen=True)
class RadioSds:
    """An SDS text arrived from a handset."""

    topic: ClassVar[str] = "radio.sds"
    gateway: str
    calling: str
    called: str
    text: str


@dataclass(frozen=True)
class UnitPosition:
    """A unit reported where it is."""

    topic: ClassVar[str] = "unit.position"
    radio_id: str
    lat: float
    lon: float
    at: dt.datetime
    gateway: str
    error_m: float | None = None
    velocity_kmh: float | None = None
    direction_deg: float | None = None


@dataclass(frozen=True)
class SatphoneStatus:
    """A satphone's signal, registration or call changed, or an SMS arrived."""

    topic: ClassVar[str] = "satphone.status"
    gateway: str
    what: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class _Journal:
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


def _floor_event_name(event: object) -> str:
    return {floor.FloorGranted: "granted", floor.FloorDenied: "denied",
            floor.FloorQueued: "queued", floor.QueuePosition: "queue_position",
            floor.FloorCancelled: "cancelled", floor.FloorPreempted: "preempted",
            floor.FloorReleased: "released", floor.FloorTimedOut: "timed_out",
            floor.FloorRevoked: "revoked"}[type(event)]


class RadioService:
    """Radio, satphone and DMR gateways as one daemon service."""

    name = "radio"

    def __init__(self, settings: RadioSettings, *, reactor: Any, db: Database,
                 audit: AuditTrail, publish: Callable[[object], object],
                 reports: ReportService, clock: Callable[[], float],
                 port_factory: PortFactory = twisted_serial_port,
                 audio_factory: AudioFactory | None = None,
                 lines_factory: LinesFactory | None = None,
                 sip_resolver: Resolver | None = None) -> None:
        """Build every gateway from ``settings``; nothing is opened until :meth:`start`.

        ``sip_resolver`` finds the contact a RoIP device registered under its account."""
        self.settings = settings
        self.db, self.audit, self.publish = db, audit, publish
        self.reports, self.clock = reports, clock
        self.talkgroups = {t.name: Talkgroup(t.name, t.gssi, t.gateway, t.agency,
                                             _PRIORITY_NAMES[t.min_priority])
                           for t in settings.talkgroups}
        self._by_gssi = {(t.gateway, t.gssi): t.name for t in self.talkgroups.values()}
        self.tetra: dict[str, TetraGateway] = {}
        self.satphones: dict[str, SatphoneGateway] = {}
        self.dmr: dict[str, DmrGateway] = {}
        self.bridges = _dmr_bridges(settings)
        self.soundcards: dict[str, SoundcardGateway | RoipGateway] = {}  # audio gateways
        self.kinds: dict[str, str] = {}
        self.configured: dict[str, RadioGatewaySettings] = {}
        for gw in settings.gateways:
            self.kinds[gw.name] = gw.kind
            self.configured[gw.name] = gw
            on_event = functools.partial(self._on_event, gw.name)
            if gw.kind == "dmr":
                continue  # built at start: its passphrase is read from a file then
            if gw.kind == "roip":
                self.soundcards[gw.name] = _roip(gw, settings, on_event, sip_resolver)
                continue
            if gw.kind == "soundcard":
                assert gw.soundcard is not None
                tg_gssi = next((t.gssi for t in self.talkgroups.values()
                                if t.gateway == gw.name), gw.name)
                self.soundcards[gw.name] = SoundcardGateway(SoundcardSettings(
                    gw.name, tg_gssi, gw.soundcard.vox_threshold_dbfs, gw.soundcard.vox_hang_s,
                    FloorSettings(gw.hang_time_s, gw.tx_timeout_s, gw.max_queue), gw.retry_s),
                    (audio_factory or SOUND_CARDS[0])(gw), (lines_factory or SOUND_CARDS[1])(gw),
                    on_event)
                continue
            if gw.kind == "tetra":
                groups = [t.gssi for t in self.talkgroups.values() if t.gateway == gw.name]
                self.tetra[gw.name] = TetraGateway(TetraSettings(
                    gw.name, gw.device or "", tuple(dict.fromkeys([*groups, *gw.groups])),
                    baudrate=gw.baudrate, retry_s=gw.retry_s,
                    command_timeout_s=gw.command_timeout_s,
                    emergency_priority=gw.emergency_priority,
                    floor=FloorSettings(gw.hang_time_s, gw.tx_timeout_s, gw.max_queue)),
                    reactor, on_event, port_factory=port_factory)
            else:
                self.satphones[gw.name] = SatphoneGateway(SatphoneSettings(
                    gw.name, gw.device or "", baudrate=gw.baudrate, retry_s=gw.retry_s,
                    command_timeout_s=gw.command_timeout_s, poll_s=gw.poll_s),
                    reactor, on_event, port_factory=port_factory)
        # TETRA terminals' and satphones' sound cards (gateways with an audio table).
        self.terminal_audio = TerminalAudio(settings, self.tetra, self.satphones, self._on_event)
        self.state: dict[str, str] = {name: "stopped" for name in self.kinds}
        self.last_seen: dict[str, float | None] = dict.fromkeys(self.kinds)
        self.on_air: dict[str, str | None] = {}
        self.emergencies: dict[str, tuple[int, str]] = {}   # talkgroup -> (cc, calling)
        self.positions: dict[str, UnitPosition] = {}
        # Why this node may not key now (None: it may); set in a cluster, where one node
        # drives the gateways and a node woken from a stall may have been taken over.
        self.guard: Callable[[], str | None] | None = None
        self.counts = {"reports": 0, "report_failures": 0, "audit_lost": 0, "handler_crashes": 0,
                       "bridge_dropped": 0}
        self._hooks: list[PositionHook] = []
        self._talker_hooks: list[Callable[[str, str | None], None]] = []
        self._journal: asyncio.Queue[_Journal | None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._retries: dict[str, asyncio.Task[None]] = {}
        self._intake: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._failing = False

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the journal, then every gateway; a missing device is retried, not fatal."""
        self._stopping = False
        self._journal = asyncio.Queue(JOURNAL_SIZE)
        self._start_writer()
        await self.terminal_audio.start()
        for name in self.kinds:
            await self._start_gateway(name)

    def _gateway(self, name: str) -> (TetraGateway | SatphoneGateway | DmrGateway
                                      | SoundcardGateway | RoipGateway | None):
        return (self.tetra.get(name) or self.satphones.get(name) or self.dmr.get(name)
                or self.soundcards.get(name))

    def _keyable(self, name: str) -> TetraGateway | SoundcardGateway | RoipGateway | None:
        """The gateway whose floor we control (TETRA or sound card), if ``name`` is one."""
        return self.tetra.get(name) or self.soundcards.get(name)

    def audio_leg(self, talkgroup: str) -> SoundcardGateway | RoipGateway | TetraGroupLeg:
        """The audio of ``talkgroup`` (a :class:`radio.audio.RadioAudioLeg`), or 409."""
        tg = self._talkgroup(talkgroup)
        gateway = self.soundcards.get(tg.gateway)
        if gateway is not None:
            return gateway
        leg = self.terminal_audio.group_leg(tg.gateway, tg.gssi)
        if leg is None:
            raise RadioServiceError(409, f"talkgroup {tg.name!r} has no audio path here "
                                    f"(gateway {tg.gateway!r} is {self.kinds[tg.gateway]} "
                                    "without a sound card: give a tetra gateway an "
                                    "[radio.gateways.audio] table)")
        other = leg.held_by_other
        if other is not None:
            raise RadioServiceError(409, f"talkgroup {tg.name!r} cannot be patched: TETRA "
                                    f"terminal {tg.gateway!r} carries one group call at a "
                                    f"time and its audio is patched for "
                                    f"{self._group(tg.gateway, other)!r}")
        return leg

    def terminal_of(self, talkgroup: str) -> str | None:
        """The TETRA terminal whose one sound card carries ``talkgroup``'s audio, if any."""
        tg = self._talkgroup(talkgroup)
        return tg.gateway if tg.gateway in self.terminal_audio.tetra else None

    def _make_dmr(self, name: str) -> DmrGateway:
        """A DMR peer; reading the passphrase may raise ``OSError``."""
        gw: RadioGatewaySettings = self.configured[name]
        assert gw.host is not None and gw.peer_id is not None  # checked by the settings
        ping_s = min(gw.poll_s, 5.0)
        return DmrGateway(DmrSettings(
            name, gw.host, gw.port, gw.peer_id, gw.passphrase(), gw.callsign, ping_s=ping_s,
            timeout_s=3 * ping_s, retry_s=gw.retry_s), functools.partial(self._on_event, name),
            on_frame=self._on_dmr_frame if self.bridges else None)

    def _on_dmr_frame(self, gateway: str, frame: Any) -> None:
        """Forward a frame heard on a bridged DMR talkgroup to the bridge's other members."""
        now = asyncio.get_running_loop().time()
        for bridge in self.bridges:
            streams = bridge.counts["streams"]
            for target, out in bridge.route(gateway, frame, now):
                peer = self.dmr.get(target)
                if peer is None or not peer.send_frame(out):
                    self.counts["bridge_dropped"] += 1
            if bridge.counts["streams"] != streams and bridge.active is not None:
                self._journal_add(f"dmr:{frame.source}", "radio.bridge_stream",
                                  f"dmr_bridge:{bridge.name}",
                                  {"from": f"{gateway}/{frame.destination}",
                                   "to": [f"{m.gateway}/{m.talkgroup}" for m in bridge.members
                                          if m != bridge.active.origin],
                                   "stream": frame.stream})

    async def _start_gateway(self, name: str) -> None:
        self.state[name] = "starting"
        gateway = self._gateway(name)
        try:
            if gateway is None:
                gateway = self.dmr[name] = self._make_dmr(name)
            await gateway.start()
        except OSError as exc:
            self.state[name] = "absent"
            self._alarm(name, "absent", str(exc))
            if gateway is not None:
                with contextlib.suppress(Exception):
                    await gateway.stop()
            retry_s = self.configured[name].retry_s
            self._retries[name] = asyncio.get_running_loop().create_task(
                self._retry_gateway(name, retry_s))

    async def _retry_gateway(self, name: str, retry_s: float) -> None:
        await asyncio.sleep(retry_s)
        if not self._stopping:
            await self._start_gateway(name)

    async def stop_radios(self) -> None:
        """Unkey and close every TETRA radio (first thing at shutdown); idempotent."""
        self._stopping = True
        for task in self._retries.values():
            task.cancel()
        keyable: list[TetraGateway | SoundcardGateway | RoipGateway] = [*self.tetra.values(),
                                                          *self.soundcards.values()]
        for gateway in keyable:
            try:
                await gateway.stop()
            except Exception:  # one radio's failure must not leave the next one keyed
                log.exception("radio gateway failed to stop", extra={"gateway": gateway.name})

    async def stop(self) -> None:
        """Unkey every radio, close every gateway, store what is still pending."""
        await self.stop_radios()
        await self.terminal_audio.stop()
        others: list[SatphoneGateway | DmrGateway] = [*self.satphones.values(),
                                                      *self.dmr.values()]
        for other in others:
            try:
                await other.stop()
            except Exception:
                log.exception("gateway failed to stop", extra={"gateway": other.name})
        if self._intake:
            await asyncio.wait(set(self._intake), timeout=1.0)
        if self._journal is not None and self._writer is not None and not self._writer.done():
            with contextlib.suppress(asyncio.QueueFull):
                self._journal.put_nowait(None)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(self._writer)
            self._writer.cancel()
        for name in self.kinds:
            self.state[name] = "stopped"

    def health(self) -> dict[str, Any]:
        """Every gateway's state and every talkgroup's floor."""
        gateways: dict[str, Any] = {}
        for name, kind in self.kinds.items():
            gateway = self._gateway(name)
            try:
                detail = gateway.health() if gateway is not None else {"ready": False}
                detail.update(self.terminal_audio.health(name))
            except Exception as exc:  # health must answer even for a broken gateway
                detail = {"error": str(exc)}
            gateways[name] = {"kind": kind, "state": self.state[name],
                              "last_seen": self.last_seen[name], **detail}
        return {"gateways": gateways, "talkgroups": {n: self.talkgroup_state(n)
                                                     for n in self.talkgroups},
                "dmr_bridges": {b.name: {**b.counts, "active": None if b.active is None else
                                         f"{b.active.origin.gateway}/{b.active.source}"}
                                for b in self.bridges},
                "counts": dict(self.counts)}

    # --- queries ----------------------------------------------------------------------------

    def talkgroup_state(self, name: str) -> dict[str, Any]:
        """A talkgroup's floor: talker, queue, state, who is on air, gateway health."""
        tg = self._talkgroup(name)
        emergency = self.emergencies.get(name)
        radio = self._keyable(tg.gateway)
        if radio is None:  # DMR: monitored, the air is the floor
            talker = self.on_air.get(name)
            return {"name": tg.name, "gssi": tg.gssi, "gateway": tg.gateway, "agency": tg.agency,
                    "min_priority": tg.min_priority.name.lower(),
                    "floor": "talking" if talker else "idle", "talker": talker,
                    "talker_priority": "field_unit" if talker else None, "queue": [],
                    "keyed": False, "on_air": talker, "emergency": None, "monitor_only": True,
                    "audio": False, "gateway_state": self.state[tg.gateway]}
        core = radio.floor
        priority = core.talker_priority(tg.gssi)
        return {"name": tg.name, "gssi": tg.gssi, "gateway": tg.gateway, "agency": tg.agency,
                "min_priority": tg.min_priority.name.lower(),
                "floor": core.state(tg.gssi).value, "talker": core.talker(tg.gssi),
                "talker_priority": priority.name.lower() if priority else None,
                "queue": list(core.queue(tg.gssi)), "keyed": tg.gssi in core.keyed(),
                "on_air": self.on_air.get(name),
                "emergency": None if emergency is None else emergency[1],
                "monitor_only": False, "audio": tg.gateway in self.soundcards
                or tg.gateway in self.terminal_audio.tetra,
                "gateway_state": self.state[tg.gateway]}

    def use_sip_resolver(self, resolve: Resolver) -> None:
        """RoIP devices configured by ``account`` are looked up with ``resolve`` from now on."""
        for gateway in self.soundcards.values():
            if isinstance(gateway, RoipGateway):
                gateway.resolve = resolve

    def add_position_hook(self, hook: PositionHook) -> Callable[[], None]:
        """Call ``hook(radio_id, lat, lon, at)`` for every unit position; returns a remover."""
        self._hooks.append(hook)
        return lambda: self._hooks.remove(hook)

    def add_talker_hook(self, hook: Callable[[str, str | None], None]) -> Callable[[], None]:
        """Call ``hook(talkgroup, talker)`` when who is on air changes (patches couple floors)."""
        self._talker_hooks.append(hook)
        return lambda: self._talker_hooks.remove(hook)

    def journal(self, actor: str, action: str, subject: str, details: dict[str, Any]) -> None:
        """Queue an audit row (never waits on the database)."""
        self._journal_add(actor, action, subject, details)

    # --- dispatcher requests ----------------------------------------------------------------

    def request_ptt(self, talkgroup: str, who: str, priority: Priority) -> list[dict[str, Any]]:
        """``who`` presses PTT on ``talkgroup``: the floor events that followed."""
        tg = self._talkgroup(talkgroup)
        why = None
        if priority < tg.min_priority:
            why = f"{priority.name.lower()} may not key {tg.name} " \
                  f"(needs {tg.min_priority.name.lower()})"
        elif talkgroup in self.emergencies and priority < Priority.EMERGENCY:
            why = f"emergency call from {self.emergencies[talkgroup][1]} holds the group"
        radio = self._keyable(tg.gateway)
        if why is None and radio is None:
            why = "DMR talkgroups are monitor-only (no vocoder for console audio)"
        if why is None and self.guard is not None:
            why = self.guard()
        if why is not None or radio is None:
            denied = floor.FloorDenied(tg.gssi, who, asyncio.get_running_loop().time(),
                                       why or "")
            self._on_event(tg.gateway, denied)
            return [self._describe(tg, denied)]
        events = radio.request_ptt(tg.gssi, who, priority)
        return [self._describe(tg, e) for e in events if not isinstance(e, floor.Key | floor.Unkey)]

    def release_ptt(self, talkgroup: str, who: str) -> list[dict[str, Any]]:
        """``who`` lets go of PTT (or withdraws a queued request)."""
        tg = self._talkgroup(talkgroup)
        radio = self._keyable(tg.gateway)
        if radio is None:
            return []
        events = radio.release_ptt(tg.gssi, who)
        return [self._describe(tg, e) for e in events if not isinstance(e, floor.Key | floor.Unkey)]

    async def send_sds(self, text: str, who: str, *, talkgroup: str | None = None,
                       issi: str | None = None, gateway: str | None = None) -> int | None:
        """Send an SDS text to a talkgroup or to one ISSI; the radio's message reference."""
        if talkgroup is not None:
            tg = self._talkgroup(talkgroup)
            gateway, called = tg.gateway, tg.gssi
        elif issi is not None:
            gateway = gateway or next(iter(self.tetra), None)
            called = issi
        else:
            raise RadioServiceError(422, "name a talkgroup or an issi")
        radio = self.tetra.get(gateway or "")
        if radio is None:
            raise RadioServiceError(404, f"no TETRA gateway {gateway!r}")
        reference = await radio.send_sds(called, text)
        self._journal_add(who, "radio.sds_sent", f"radio:{gateway}",
                          {"to": called, "talkgroup": talkgroup, "chars": len(text)})
        return reference

    def satphone(self, name: str) -> SatphoneGateway:
        """The satphone gateway ``name`` (:class:`RadioServiceError` 404 if there is none)."""
        phone = self.satphones.get(name)
        if phone is None:
            raise RadioServiceError(404, f"no satphone gateway {name!r}")
        return phone

    async def satphone_action(self, name: str, action: str, who: str,
                              number: str | None = None, text: str | None = None) -> Any:
        """``dial``/``answer``/``hang_up``/``sms`` on a satphone, audited."""
        phone = self.satphone(name)
        result: Any = None
        if action == "dial" and number is not None:
            await phone.dial(number)
        elif action == "answer":
            await phone.answer()
        elif action == "hang_up":
            await phone.hang_up()
        elif action == "sms" and number is not None and text is not None:
            result = await phone.send_sms(number, text)
        elif action == "sbd" and text is not None:
            result = await phone.send_sbd(text)
        else:
            raise RadioServiceError(422, f"bad satphone action {action!r}")
        self._journal_add(who, f"satphone.{action}", f"radio:{name}",
                          {"number": number, "chars": len(text) if text else None})
        return result

    def _talkgroup(self, name: str) -> Talkgroup:
        tg = self.talkgroups.get(name)
        if tg is None:
            raise RadioServiceError(404, f"no talkgroup {name!r}")
        return tg

    def _describe(self, tg: Talkgroup, event: object) -> dict[str, Any]:
        return {"talkgroup": tg.name, "event": _floor_event_name(event),
                "who": getattr(event, "who", None), "why": getattr(event, "why", ""),
                "position": getattr(event, "position", None), "by": getattr(event, "by", None)}

    # --- gateway reports --------------------------------------------------------------------

    def _on_event(self, gateway: str, event: object) -> None:
        self.last_seen[gateway] = self.clock()
        handler = _HANDLERS.get(type(event))
        try:
            # The terminal's audio gates move first: nothing else may act on a stale gate.
            self.terminal_audio.on_event(gateway, event)
            if handler is None:
                return
            handler(self, gateway, event)
        except Exception as exc:  # a bug: fail safe, keep serving
            self.counts["handler_crashes"] += 1
            log.exception("radio event handler crashed (a bug)",
                          extra={"gateway": gateway, "event": type(event).__name__})
            self._fail_safe([gateway], f"radio service fault: {type(exc).__name__}")

    def _fail_safe(self, gateways: list[str], reason: str) -> None:
        """Revoke every grant (unkeying) on ``gateways``; never recursive."""
        if self._failing:
            return
        self._failing = True
        try:
            for name in gateways:
                radio = self._keyable(name)
                if radio is not None:
                    radio.revoke_all(reason)
                self._alarm(name, "fault", reason)
        finally:
            self._failing = False

    def _group(self, gateway: str, gssi: str | None) -> str:
        return self._by_gssi.get((gateway, gssi or ""), f"{gateway}:{gssi}")

    def _on_floor(self, gateway: str, event: Any) -> None:
        name = _floor_event_name(event)
        group = self._group(gateway, event.group)
        priority = getattr(event, "priority", None)
        published = RadioFloorChanged(
            group, gateway, name, event.who, priority.name.lower() if priority else None,
            getattr(event, "position", None), getattr(event, "by", None),
            getattr(event, "why", ""))
        self.publish(published)
        system = name in ("preempted", "timed_out", "revoked", "queue_position")
        details = {k: v for k, v in (("who", event.who), ("why", published.why),
                                     ("priority", published.priority),
                                     ("position", published.position),
                                     ("by", published.by)) if v is not None}
        self._journal_add("system" if system else event.who, f"radio.floor_{name}",
                          f"talkgroup:{group}", details)

    def _on_keyed(self, gateway: str, event: RadioKeyed | RadioUnkeyed) -> None:
        group = self._group(gateway, event.group)
        keyed = isinstance(event, RadioKeyed)
        self.publish(RadioKeyChanged(group, gateway, keyed))
        self._journal_add("system", "radio.keyed" if keyed else "radio.unkeyed",
                          f"talkgroup:{group}", {"gateway": gateway, "call": event.cc})

    def _on_link(self, gateway: str, event: Any) -> None:
        if isinstance(event, LinkUp | SatLinkUp | DmrLinkUp):
            self.state[gateway] = "up"
            self._alarm(gateway, "up", "")
        elif isinstance(event, LinkDown | SatLinkDown | DmrLinkDown):
            self.state[gateway] = "down"
            self._alarm(gateway, "lost", event.why)
        else:
            self._alarm(gateway, "fault", event.detail)

    def _alarm(self, gateway: str, state: str, detail: str) -> None:
        self.publish(RadioGatewayChanged(gateway, self.kinds[gateway], state, detail))
        self._journal_add("system", f"radio.gateway_{state}", f"radio:{gateway}",
                          {"detail": detail[:500]})

    def _on_group_call(self, gateway: str, event: IncomingGroupCall) -> None:
        group = self._group(gateway, event.group)
        self.publish(RadioGroupCall(group, gateway, event.calling, event.priority,
                                    event.emergency))
        if not event.emergency:
            return
        self.emergencies[group] = (event.cc, event.calling)
        self.publish(RadioEmergency(group, gateway, event.calling))
        self._journal_add(f"issi:{event.calling}", "radio.emergency_call", f"talkgroup:{group}",
                          {"gateway": gateway, "priority": event.priority, "call": event.cc})
        text = (f"TETRA emergency call from ISSI {event.calling} on talkgroup {group} "
                f"(GSSI {event.group})")
        self._submit(Channel.RADIO_CALL, text, event.calling, gateway,
                     (("talkgroup", group), ("gssi", event.group), ("emergency", "true")))

    def _on_talker(self, gateway: str, event: TalkerChanged) -> None:
        group = self._group(gateway, event.group)
        self.on_air[group] = event.talker
        emergency = self.emergencies.get(group)
        if emergency is not None and emergency[0] == event.cc and event.talker is None:
            # The handset let go: consoles may answer the emergency caller now.
            del self.emergencies[group]
        self.publish(RadioTalker(group, gateway, event.talker))
        for hook in list(self._talker_hooks):
            hook(group, event.talker)

    def _on_call_released(self, gateway: str, event: CallReleased) -> None:
        group = self._group(gateway, event.group)
        self.on_air.pop(group, None)
        emergency = self.emergencies.get(group)
        if emergency is not None and emergency[0] == event.cc:
            del self.emergencies[group]
        self.publish(RadioTalker(group, gateway, None))

    def _on_sds(self, gateway: str, event: SdsReceived) -> None:
        if event.text is not None:
            self.publish(RadioSds(gateway, event.calling, event.called, event.text))
            self._submit(Channel.RADIO_SDS, event.text, event.calling, gateway,
                         (("called", event.called),))
            return
        if event.user_data[:2].upper() == f"{PID_LIP:02X}":
            try:
                report = decode_lip(event.user_data)
            except LipError as exc:
                self._alarm(gateway, "fault", f"bad location report from {event.calling}: {exc}")
                return
            self._position(UnitPosition(
                event.calling, report.lat, report.lon, self._now(), gateway, report.error_m,
                report.velocity_kmh, report.direction_deg))
            return
        self.publish(RadioGatewayChanged(gateway, "tetra", "fault",
                                         f"SDS from {event.calling} is neither text nor LIP"))

    def _position(self, position: UnitPosition) -> None:
        self.positions[position.radio_id] = position
        self.publish(position)
        for hook in list(self._hooks):
            try:
                hook(position.radio_id, position.lat, position.lon, position.at)
            except Exception:  # the hook's owner's bug, not a radio fault
                log.exception("position hook failed", extra={"radio_id": position.radio_id})

    def _on_dmr_call(self, gateway: str, event: DmrCallStarted | DmrCallEnded) -> None:
        source = str(event.source)
        if isinstance(event, DmrCallStarted) and event.private:
            self.publish(RadioGroupCall(f"unit:{event.destination}", gateway, source, 0, False))
            return
        group = self._group(gateway, str(event.destination))
        if group not in self.talkgroups:
            return  # traffic on a talkgroup nobody configured: not ours to show
        started = isinstance(event, DmrCallStarted)
        if not started and self.on_air.get(group) != source:
            return  # the end of a private call or of a stream we did not show
        self.on_air[group] = source if started else None
        self.publish(RadioTalker(group, gateway, source if started else None))
        kind, why = ("granted", "talking on air") if started else (
            "released", event.why if isinstance(event, DmrCallEnded) else "")
        self.publish(RadioFloorChanged(group, gateway, kind, f"dmr:{source}", "field_unit",
                                       why=why))
        self._journal_add(f"dmr:{source}", f"radio.floor_{kind}", f"talkgroup:{group}",
                          {"who": f"dmr:{source}", "why": why, "slot": event.slot,
                           "stream": event.stream})

    def _on_satphone(self, gateway: str, event: Any) -> None:
        if isinstance(event, SmsReceived):
            self.publish(SatphoneStatus(gateway, "sms", {"sender": event.sender,
                                                         "text": event.text}))
            self._submit(Channel.SATPHONE_SMS, event.text, event.sender, gateway,
                         (("complete", str(event.complete).lower()),))
        elif isinstance(event, SbdReceived):
            self.publish(SatphoneStatus(gateway, "sbd", {"text": event.text}))
            self._submit(Channel.SATPHONE_SMS, event.text, f"sbd:{gateway}", gateway,
                         (("kind", "sbd"),))
        elif isinstance(event, CallStateChanged):
            self.publish(SatphoneStatus(gateway, "call", {
                "state": event.state, "number": event.number, "incoming": event.incoming,
                "why": event.why}))
            self._journal_add("system", f"satphone.call_{event.state}", f"radio:{gateway}",
                              {"number": event.number, "incoming": event.incoming,
                               "why": event.why})
        elif isinstance(event, SignalChanged):
            self.publish(SatphoneStatus(gateway, "signal", {"signal": event.signal}))
        elif isinstance(event, RegistrationChanged):
            self.publish(SatphoneStatus(gateway, "registration", {
                "stat": event.stat, "registered": event.registered}))
            self._journal_add("system", "satphone.registration", f"radio:{gateway}",
                              {"stat": event.stat, "registered": event.registered})

    # --- intake and journal -----------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    def _submit(self, channel: Channel, text: str, caller: str, gateway: str,
                fields: tuple[tuple[str, str], ...]) -> None:
        position = self.positions.get(caller)
        lat = lon = None
        if position is not None and (self._now() - position.at).total_seconds() <= \
                self.settings.position_max_age_s:
            lat, lon = position.lat, position.lon
        # A source_ref of its own makes a retry after a database error land on the same
        # report instead of storing it twice.
        new = NewReport(channel, text[:8000], self._now(), None, caller[:64], lat, lon, "",
                        (("gateway", gateway), *fields), f"{gateway}:{uuid.uuid4()}")
        task = asyncio.get_running_loop().create_task(self._store(new, gateway))
        self._intake.add(task)
        task.add_done_callback(self._intake.discard)

    async def _store(self, new: NewReport, gateway: str) -> None:
        for attempt in range(REPORT_ATTEMPTS):
            try:
                await self.reports.submit(new, actor=f"radio:{gateway}")
                self.counts["reports"] += 1
                return
            except Exception:
                log.exception("could not store a radio report", extra={
                    "gateway": gateway, "channel": new.channel.value, "caller": new.caller,
                    "attempt": attempt + 1})
                if self._stopping:
                    break
                await asyncio.sleep(0.5 * 2 ** attempt)
        self.counts["report_failures"] += 1
        log.error("radio report lost after retries", extra={
            "gateway": gateway, "channel": new.channel.value, "caller": new.caller,
            "text": new.text[:500]})

    def _journal_add(self, actor: str, action: str, subject: str,
                     details: dict[str, Any]) -> None:
        if self._journal is None:
            return
        try:
            self._journal.put_nowait(_Journal(actor, action, subject, details))
        except asyncio.QueueFull:
            self.counts["audit_lost"] += 1
            log.error("radio audit journal full: a row was lost", extra={"action": action})

    def _start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_journal())
        self._writer.add_done_callback(self._writer_done)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("radio journal task crashed (a bug)", exc_info=exc)
        self.counts["handler_crashes"] += 1
        self._fail_safe([*self.tetra, *self.soundcards],
                        f"radio service crashed: {type(exc).__name__}")
        self._start_writer()

    async def _write_journal(self) -> None:
        assert self._journal is not None
        while True:
            batch = [await self._journal.get()]
            while not self._journal.empty() and len(batch) < 200:
                batch.append(self._journal.get_nowait())
            rows = [item for item in batch if item is not None]
            try:
                async with self.db.session() as s:
                    for row in rows:
                        self.audit.record(s, actor=row.actor, action=row.action,
                                          subject=row.subject, details=row.details)
            except (SQLAlchemyError, OSError):
                self.counts["audit_lost"] += len(rows)
                log.exception("radio audit rows could not be stored",
                              extra={"rows": len(rows)})
            if len(rows) < len(batch):
                return


_Handler = Callable[[RadioService, str, Any], None]
_HANDLERS: dict[type, _Handler] = {
    **{kind: RadioService._on_floor for kind in (
        floor.FloorGranted, floor.FloorDenied, floor.FloorQueued, floor.QueuePosition,
        floor.FloorCancelled, floor.FloorPreempted, floor.FloorReleased, floor.FloorTimedOut,
        floor.FloorRevoked)},
    RadioKeyed: RadioService._on_keyed, RadioUnkeyed: RadioService._on_keyed,
    LinkUp: RadioService._on_link, LinkDown: RadioService._on_link,
    GatewayFault: RadioService._on_link, SatLinkUp: RadioService._on_link,
    SatLinkDown: RadioService._on_link, SatFault: RadioService._on_link,
    IncomingGroupCall: RadioService._on_group_call, TalkerChanged: RadioService._on_talker,
    CallReleased: RadioService._on_call_released, SdsReceived: RadioService._on_sds,
    SmsReceived: RadioService._on_satphone, SbdReceived: RadioService._on_satphone,
    CallStateChanged: RadioService._on_satphone,
    SignalChanged: RadioService._on_satphone, RegistrationChanged: RadioService._on_satphone,
    DmrLinkUp: RadioService._on_link, DmrLinkDown: RadioService._on_link,
    DmrFault: RadioService._on_link, DmrCallStarted: RadioService._on_dmr_call,
    DmrCallEnded: RadioService._on_dmr_call,
}


def _dmr_bridges(settings: RadioSettings) -> list[DmrBridge]:
    """The configured DMR bridges, their members resolved to gateway and talkgroup id."""
    groups = {t.name: t for t in settings.talkgroups}
    return [DmrBridge(b.name, tuple(BridgeMember(groups[m.talkgroup].gateway,
                                                 int(groups[m.talkgroup].gssi), m.slot)
                                    for m in b.members), b.hold_s)
            for b in settings.dmr_bridges]


def _roip(gw: RadioGatewaySettings, settings: RadioSettings, on_event: Callable[[object], None],
          resolve: Resolver | None) -> RoipGateway:
    """The RoIP gateway of a ``kind = "roip"`` entry (it carries its one talkgroup)."""
    assert gw.roip is not None
    r = gw.roip
    group = next((t.gssi for t in settings.talkgroups if t.gateway == gw.name), gw.name)
    return RoipGateway(RoipSettings(
        gw.name, group, uri=r.uri, account=r.account, codec=r.codec, ptt=r.ptt, cos=r.cos,
        key_digits=r.key_digits, unkey_digits=r.unkey_digits,
        cos_open_digits=r.cos_open_digits, cos_close_digits=r.cos_close_digits,
        digit_timeout_s=r.digit_timeout_s, info_content_type=r.info_content_type,
        info_key_body=r.info_key_body, info_unkey_body=r.info_unkey_body,
        info_cos_open_body=r.info_cos_open_body, info_cos_close_body=r.info_cos_close_body,
        vox_threshold_dbfs=r.vox_threshold_dbfs, vox_hang_s=r.vox_hang_s,
        local_host=r.local_host, keepalive_s=r.keepalive_s,
        request_timeout_s=r.request_timeout_s, invite_timeout_s=r.invite_timeout_s,
        retry_s=gw.retry_s, retry_max_s=r.retry_max_s,
        floor=FloorSettings(gw.hang_time_s, gw.tx_timeout_s, gw.max_queue)),
        on_event, link_factory=open_link, resolve=resolve)
