"""A TETRA radio gateway over the PEI (ETSI EN 300 392-5) on an :class:`~hardware.atport.AtDevice`.

Theory of operation
-------------------
Dispatchers never key the radio directly: :meth:`TetraGateway.request_ptt`
goes through the :class:`~radio.floor.FloorControl` core, and only the
core's :class:`~radio.floor.Key` / :class:`~radio.floor.Unkey` actions turn
into AT commands, run one after another by a worker task:

* ``Key``: with a call up on the group, ``AT+CTXD=<cc>,0`` (transmit demand);
  without one, ``AT+CTSDC=...`` then ``ATD<gssi>`` (the call set-up grants
  transmission; ``+CTCC`` names the call instance).
* ``Unkey``: ``AT+CUTXC=<cc>`` (transmission ceased); ``ATH`` when the call
  instance is unknown (a dial that never said which call it made).

The radio's answers feed back: ``+CTXG`` not granted, or granted to someone
else while we transmit (pre-empted on air), ``+CDTXC`` we did not ask for
and ``+CTCR`` on our call all revoke the floor, which unkeys.

Fail-safe: the radio is never left keyed.

* Link lost (the port closed: :class:`~hardware.at.AtLinkDown`): the core's
  ``lost(gateway)`` revokes every grant and refuses requests; the call
  instances we had keyed are remembered and, when the link returns, the
  *first* commands written are ``AT+CUTXC`` for them, then ``ATH``.
* Start-up: the same reconciliation runs unconditionally (``ATH`` releases
  whatever a crashed predecessor left keyed) before the radio is initialised
  (``ATE0``, ``AT+CMEE=1``, ``AT+CTOM=0``, ``AT+CTSP``, ``AT+CTGS``).
* Stop, or a crash of the service task: ``finally`` revokes every grant and
  writes the release straight away, not through the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hardware.at import (
    AtCommandError,
    AtError,
    AtLinkDown,
    AtSettings,
    AtTimeout,
    Resynchronised,
    Unsolicited,
)
from hardware.at import (
    Event as AtEvent,
)
from hardware.atport import AtDevice
from hardware.serial import PortFactory, twisted_serial_port
from radio.floor import (
    Event as FloorEvent,
)
from radio.floor import (
    FloorControl,
    FloorSettings,
    Key,
    Priority,
    Unkey,
)
from radio.sds import decode_text, encode_text

__all__ = [
    "CallReleased", "GatewayEvent", "GatewayFault", "GroupsAttached", "IncomingGroupCall",
    "LinkDown", "LinkUp",
    "RadioError", "RadioEvent", "RadioKeyed", "RadioUnkeyed", "SdsReceived", "TalkerChanged",
    "TetraGateway", "TetraSettings",
]

log = logging.getLogger(__name__)

TX_GRANTED, TX_NOT_GRANTED, TX_QUEUED, TX_GRANTED_TO_OTHER = 0, 1, 2, 3
_MAX_URC_FIELDS = 32


class RadioError(ValueError):
    """A gateway request that cannot be carried out (bad number, unknown group)."""


@dataclass(frozen=True)
class TetraSettings:
    """One TETRA terminal on a serial port and the talkgroups it carries."""

    name: str
    device: str
    groups: tuple[str, ...]
    baudrate: int = 115200
    retry_s: float = 5.0
    command_timeout_s: float = 5.0
    release_timeout_s: float = 2.0
    #: ``AT+CTSP`` arguments: register for SDS Simple Text Messaging (protocol 2).
    service_profiles: tuple[str, ...] = ("1,3,2",)
    #: ``AT+CTSDC`` for a half-duplex group call (EN 300 392-5 6.15.x).
    call_setup: str = "0,0,0,1,1,0,1,1,0,0"
    sds_ai_service: int = 12
    #: ``+CTICN`` priority level at or above which a handset's call is an emergency.
    emergency_priority: int = 15
    #: How often an unanswered ``AT+CUTXC`` is written again before giving up.
    release_attempts: int = 3
    floor: FloorSettings = field(default_factory=FloorSettings)

    def __post_init__(self) -> None:
        """Talkgroups and SDS services are digits only: they go down the command channel."""
        if not self.groups or not all(_digits(g) for g in self.groups):
            raise RadioError(f"{self.name}: talkgroups must be GSSIs (digits): {self.groups}")
        if self.sds_ai_service not in (9, 10, 11, 12, 13):
            raise RadioError(f"{self.name}: bad SDS AI service {self.sds_ai_service}")


# --- events the gateway reports (floor events are reported as they are) -------------------


@dataclass(frozen=True)
class LinkUp:
    """The radio answered and is initialised."""

    gateway: str


@dataclass(frozen=True)
class LinkDown:
    """The serial link to the radio was lost."""

    gateway: str
    why: str


@dataclass(frozen=True)
class GroupsAttached:
    """``AT+CTGS`` accepted: the radio listens to these groups."""

    gateway: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class RadioKeyed:
    """The radio confirmed our transmission on ``group`` (``+CTXG`` granted)."""

    gateway: str
    group: str
    cc: int


@dataclass(frozen=True)
class RadioUnkeyed:
    """We told the radio to stop transmitting on ``group``."""

    gateway: str
    group: str
    cc: int | None


@dataclass(frozen=True)
class IncomingGroupCall:
    """Someone opened a group call (``+CTICN``)."""

    gateway: str
    group: str
    cc: int
    calling: str
    priority: int = 0
    emergency: bool = False


@dataclass(frozen=True)
class TalkerChanged:
    """Who talks on ``group`` (``None``: nobody; ``"self"``: us)."""

    gateway: str
    group: str
    cc: int
    talker: str | None


@dataclass(frozen=True)
class CallReleased:
    """The group call ended (``+CTCR``)."""

    gateway: str
    group: str | None
    cc: int
    cause: int | None


@dataclass(frozen=True)
class SdsReceived:
    """An SDS arrived (``+CTSDSR``); ``text`` is ``None`` if it is not simple text."""

    gateway: str
    calling: str
    called: str
    text: str | None
    user_data: str


@dataclass(frozen=True)
class GatewayFault:
    """Something failed on the radio side (a command refused, a malformed code)."""

    gateway: str
    detail: str


GatewayEvent = (LinkUp | LinkDown | GroupsAttached | RadioKeyed | RadioUnkeyed
                | IncomingGroupCall | TalkerChanged | CallReleased | SdsReceived | GatewayFault)
RadioEvent = GatewayEvent | FloorEvent


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _fields(value: str) -> list[str]:
    return [f.strip().strip('"') for f in value.split(",", _MAX_URC_FIELDS)]


def _int(text: str) -> int | None:
    return int(text) if _digits(text) and len(text) < 10 else None


class _LossWatch:
    """Sits between the serial port and the link's protocol to see the port close."""

    def __init__(self, inner: Any, on_lost: Callable[[Any], None]) -> None:
        self.inner = inner
        self.on_lost = on_lost

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        try:
            self.on_lost(reason)
        finally:
            self.inner.connectionLost(reason)


class TetraGateway:
    """A TETRA terminal as a dispatch gateway: floor-controlled PTT, group calls, SDS."""

    def __init__(self, settings: TetraSettings, reactor: Any,
                 on_event: Callable[[RadioEvent], None], *,
                 port_factory: PortFactory = twisted_serial_port,
                 at_settings: AtSettings | None = None) -> None:
        """Describe the gateway; nothing is opened until :meth:`start`."""
        self.settings = settings
        self.name = settings.name
        self.floor = FloorControl({g: settings.name for g in settings.groups}, settings.floor)
        self._on_event = on_event
        self._port_factory = port_factory
        self.device = AtDevice(settings.name, settings.device, reactor, settings=at_settings,
                               baudrate=settings.baudrate, retry_s=settings.retry_s,
                               port_factory=self._open_port, on_event=self._at_event)
        self._actions: asyncio.Queue[Key | Unkey] = asyncio.Queue()
        self._calls: dict[int, str] = {}          # call instance -> group
        self._keyed: dict[str, int | None] = {}   # group -> call instance we keyed
        self._must_release: set[int] = set()      # keyed when the link went
        self._ceasing: dict[int, int] = {}        # call instance -> +CDTXC we asked for
        self._dialling: asyncio.Future[int] | None = None
        self._dialling_group: str | None = None
        self._attached: tuple[str, ...] = ()
        self._up = False
        self._last_error: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._service: asyncio.Task[None] | None = None
        self._bring_up: asyncio.Task[None] | None = None
        self._stopping = False
        # Requests are refused until the radio has been reconciled and initialised.
        self.floor.lost(self.name, 0.0)

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the port, reconcile (release anything keyed), initialise; ``OSError`` if absent."""
        self._stopping = False
        await self.device.start()
        self._service = asyncio.get_running_loop().create_task(self._serve())
        if self._bring_up is not None:
            await asyncio.shield(self._bring_up)

    async def stop(self) -> None:
        """Unkey (revoking every grant), then close the port."""
        self._stopping = True
        service, self._service = self._service, None
        if service is not None:
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service  # its ``finally`` runs the fail-safe
        else:
            await self._fail_safe("gateway stopping")
        if self._bring_up is not None:
            self._bring_up.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await self.device.stop()
        # A restart begins from nothing known: requests wait for the reconciliation, whose
        # ATH ends whatever calls the radio still has (another node may have made them).
        self._calls.clear()
        self._up = False
        self._report_all(self.floor.lost(self.name, self._now()))

    def health(self) -> dict[str, Any]:
        """Link state, attached groups, keyed groups, last error."""
        health = self.device.health()
        health.update({
            "ready": self._up,
            "attached_groups": list(self._attached),
            "keyed_groups": sorted(self._keyed),
            "unconfirmed_releases": sorted(self._must_release),
            "talkers": {g: self.floor.talker(g) for g in self.floor.groups},
            "last_error": self._last_error or health.get("last_error"),
        })
        return health

    # --- dispatcher side --------------------------------------------------------------------

    def request_ptt(self, group: str, who: str, priority: Priority) -> list[FloorEvent]:
        """``who`` presses PTT on ``group``; the floor events are returned and reported."""
        return self._apply(self.floor.request(group, who, priority, self._now()))

    def release_ptt(self, group: str, who: str) -> list[FloorEvent]:
        """``who`` lets go of PTT on ``group`` (or withdraws a queued request)."""
        return self._apply(self.floor.release(group, who, self._now()))

    def cancel_ptt(self, group: str, who: str) -> list[FloorEvent]:
        """``who`` withdraws a queued request."""
        return self._apply(self.floor.cancel(group, who, self._now()))

    def revoke_all(self, reason: str) -> list[FloorEvent]:
        """End every grant and queue on this radio (unkeying it): the caller's fail-safe."""
        return self._apply(self.floor.revoke_all(reason, self._now()))

    async def hang_up(self, group: str) -> None:
        """End the group call on ``group``: revoke its floor (unkey), then ``ATH``.

        The PEI's ``ATH`` ends the radio's calls; other groups' calls that it
        takes down come back as ``+CTCR`` and revoke their floors too.
        """
        if group not in self.floor.groups:
            raise RadioError(f"{self.name}: not a configured talkgroup: {group!r}")
        self._apply(self.floor.revoke(group, "call ended by dispatcher", self._now()))
        await self.device.command("ATH", timeout=self.settings.command_timeout_s)

    async def send_sds(self, called: str, text: str) -> int | None:
        """Send ``text`` as Simple Text SDS to ``called`` (ISSI or GSSI); the radio's reference."""
        if not _digits(called) or len(called) > 8:
            raise RadioError(f"not a TETRA address: {called!r}")
        bits, user_data = encode_text(text)
        timeout = self.settings.command_timeout_s
        await self.device.command(f"AT+CTSDS={self.settings.sds_ai_service},0",
                                  timeout=timeout)
        response = await self.device.command(f"AT+CMGS={called},{bits}", payload=user_data,
                                             timeout=timeout)
        for line in response.lines:
            if line.startswith("+CMGS:"):
                fields = _fields(line[6:])
                return _int(fields[-1]) if fields else None
        return None

    # --- the link ---------------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _open_port(self, protocol: Any, device: str, reactor: Any, *, baudrate: int) -> Any:
        port = self._port_factory(_LossWatch(protocol, self._link_lost), device, reactor,
                                  baudrate=baudrate)
        # The link records its protocol once this returns; the task runs after that.
        self._bring_up = asyncio.get_running_loop().create_task(self._reconcile_and_init())
        return port

    def _link_lost(self, reason: Any) -> None:
        why = getattr(reason, "getErrorMessage", lambda: str(reason))()
        self._up = False
        if self._stopping:
            return  # our own close: the fail-safe has already run
        self._must_release.update(cc for cc in self._keyed.values() if cc is not None)
        self._keyed.clear()
        self._calls.clear()
        self._ceasing.clear()
        if self._dialling is not None and not self._dialling.done():
            self._dialling.set_exception(AtLinkDown(f"{self.name}: link lost while dialling"))
        self._last_error = f"link lost: {why}"
        self._report(LinkDown(self.name, why))
        self._apply(self.floor.lost(self.name, self._now()))

    async def _reconcile_and_init(self) -> None:
        """Release transmission first, unconditionally, then initialise the radio."""
        timeout = self.settings.command_timeout_s
        try:
            for cc in sorted(self._must_release):
                await self._best_effort(f"AT+CUTXC={cc}")
            await self._best_effort("ATH")
            self._must_release.clear()
            await self.device.command("ATE0", timeout=timeout)
            await self.device.command("AT+CMEE=1", timeout=timeout)
            for optional in ("AT+CTOM=0", *(f"AT+CTSP={p}" for p in
                                            self.settings.service_profiles)):
                if not await self._best_effort(optional):
                    self._report(GatewayFault(self.name, f"radio refused {optional}"))
            attach = ",".join(f"1,{g}" for g in self.settings.groups)
            await self.device.command(f"AT+CTGS={attach}", timeout=timeout)
        except AtError as exc:
            self._last_error = f"initialisation failed: {exc}"
            self._report(GatewayFault(self.name, self._last_error))
            log.warning("TETRA initialisation failed", extra={"device": self.name,
                                                              "error": str(exc)})
            if not isinstance(exc, AtLinkDown) and not self._stopping:
                # The link is up but the radio would not cooperate: try again later
                # (a link loss brings its own retry when the port reopens).
                loop = asyncio.get_running_loop()
                loop.call_later(self.settings.retry_s, self._retry_init)
            return
        self._attached = self.settings.groups
        self._up = True
        self.floor.restored(self.name)
        self._report(LinkUp(self.name))
        self._report(GroupsAttached(self.name, self._attached))

    def _at_event(self, event: AtEvent) -> None:
        if isinstance(event, Resynchronised) and self._must_release and not self._stopping:
            # The radio answers again after going silent: finish the releases it missed.
            asyncio.get_running_loop().create_task(self._release_pending())

    async def _release_pending(self) -> None:
        for cc in sorted(self._must_release):
            try:
                await self._best_effort(f"AT+CUTXC={cc}")
            except AtError as exc:
                self._last_error = f"release of call {cc} unconfirmed: {exc}"
                return
            self._must_release.discard(cc)

    def _retry_init(self) -> None:
        if not self._stopping and not self._up and self.device.link.connected:
            self._bring_up = asyncio.get_running_loop().create_task(self._reconcile_and_init())

    async def _best_effort(self, command: str) -> bool:
        """Write a command whose refusal is fine (no such call); silence or a dead link is not."""
        try:
            await self.device.command(command, timeout=self.settings.release_timeout_s)
        except AtCommandError as exc:
            log.info("release refused", extra={"device": self.name, "command": command,
                                               "error": str(exc)})
            return False
        return True

    # --- the service task: actions and unsolicited codes ------------------------------------

    async def _serve(self) -> None:
        reason = "gateway stopping"
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._run_actions())
                tasks.create_task(self._read_unsolicited())
        except Exception as exc:  # a bug: the radio is unkeyed below and the gateway stays down
            reason = "gateway crashed"
            self._last_error = f"service crashed: {exc!r}"
            log.exception("TETRA gateway service crashed", extra={"device": self.name})
        finally:
            if reason == "gateway crashed":
                self._up = False
                self._report_all(self.floor.lost(self.name, self._now()))
            await self._fail_safe(reason)

    async def _fail_safe(self, reason: str) -> None:
        """Revoke every grant and write the releases now (not through the worker)."""
        self._report_all(self.floor.revoke_all(reason, self._now()))
        keyed, self._keyed = dict(self._keyed), {}
        for group, cc in keyed.items():
            try:
                await self._best_effort("ATH" if cc is None else f"AT+CUTXC={cc}")
            except AtError as exc:
                if cc is not None:
                    self._must_release.add(cc)
                self._last_error = f"could not release {group}: {exc}"
            self._report(RadioUnkeyed(self.name, group, cc))

    async def _run_actions(self) -> None:
        while True:
            action = await self._actions.get()
            if isinstance(action, Key) and action.group not in self.floor.keyed():
                continue  # revoked before it reached the radio: never key for a dead grant
            try:
                if isinstance(action, Key):
                    await self._key(action.group)
                else:
                    await self._unkey(action.group)
            except AtLinkDown:
                continue  # _link_lost has revoked the floor and remembered what to release
            except (AtError, TimeoutError) as exc:
                self._last_error = f"{type(action).__name__} {action.group}: {exc}"
                self._report(GatewayFault(self.name, self._last_error))
                if isinstance(action, Key):
                    self._apply(self.floor.revoke(action.group, "radio refused to key",
                                                  self._now()))

    async def _key(self, group: str) -> None:
        cc = next((c for c, g in self._calls.items() if g == group), None)
        # Marked before anything is written: a crash from here on still unkeys.
        self._keyed[group] = cc
        timeout = self.settings.command_timeout_s
        if cc is not None:
            await self.device.command(f"AT+CTXD={cc},0", timeout=timeout)
            return
        self._dialling = asyncio.get_running_loop().create_future()
        self._dialling_group = group
        try:
            await self.device.command(f"AT+CTSDC={self.settings.call_setup}", timeout=timeout)
            await self.device.command(f"ATD{group}", timeout=timeout)
            async with asyncio.timeout(timeout):
                cc = await self._dialling
        finally:
            self._dialling = None
            self._dialling_group = None
        self._calls[cc] = group

    async def _unkey(self, group: str) -> None:
        if group not in self._keyed:
            return
        cc = self._keyed.pop(group)
        self._report(RadioUnkeyed(self.name, group, cc))
        if cc is None:
            await self._best_effort("ATH")
            return
        # The +CDTXC that answers this is ours, not the radio ending a later transmission:
        # the next Key may already be on the wire when the URC is read.
        self._ceasing[cc] = self._ceasing.get(cc, 0) + 1
        for attempt in range(1, self.settings.release_attempts + 1):
            try:
                if not await self._best_effort(f"AT+CUTXC={cc}"):
                    self._expect_no_cdtxc(cc)
                return
            except AtTimeout:
                if attempt == self.settings.release_attempts:
                    self._must_release.add(cc)
                    raise
            except AtLinkDown:
                self._must_release.add(cc)
                raise

    async def _read_unsolicited(self) -> None:
        while True:
            urc = await self.device.unsolicited.get()
            try:
                self._on_urc(urc)
            except Exception:  # a bug must not stop the radio being served
                log.exception("bug handling an unsolicited code",
                              extra={"device": self.name, "urc": urc.name})

    def _on_urc(self, urc: Unsolicited) -> None:
        handler = _URC_HANDLERS.get(urc.name)
        if handler is None:
            return
        fields = _fields(urc.value)
        cc = _int(fields[0]) if fields else None
        if cc is None:
            self._report(GatewayFault(self.name, f"malformed {urc.name}: {urc.value[:80]}"))
            return
        handler(self, cc, fields, urc)

    def _on_ctcc(self, cc: int, fields: list[str], urc: Unsolicited) -> None:
        group = self._dialling_group
        if self._dialling is None or self._dialling.done() or group is None:
            return
        # Recorded here, not when the dialler resumes: the +CTXG that follows is read first.
        self._calls[cc] = group
        if group in self._keyed:
            self._keyed[group] = cc
        self._dialling.set_result(cc)

    def _on_cticn(self, cc: int, fields: list[str], urc: Unsolicited) -> None:
        if len(fields) < 12:
            self._report(GatewayFault(self.name, f"short +CTICN: {urc.value[:80]}"))
            return
        group, calling = fields[11], fields[4]
        priority = (_int(fields[12]) if len(fields) > 12 else None) or 0
        emergency = priority >= self.settings.emergency_priority
        self._calls[cc] = group
        self._report(IncomingGroupCall(self.name, group, cc, calling, priority, emergency))
        if emergency and group in self.floor.groups:
            # A handset's emergency call overrides every dispatcher on the group.
            self._apply(self.floor.revoke(group, f"emergency call from {calling}", self._now()))

    def _on_ctxg(self, cc: int, fields: list[str], urc: Unsolicited) -> None:
        group = self._calls.get(cc)
        grant = _int(fields[1]) if len(fields) > 1 else None
        if group is None or grant is None:
            return
        ours = self._keyed.get(group, -1) == cc
        if grant == TX_GRANTED and ours:
            self._report(RadioKeyed(self.name, group, cc))
            self._report(TalkerChanged(self.name, group, cc, "self"))
        elif grant == TX_NOT_GRANTED and ours:
            self._apply(self.floor.revoke(group, "radio did not grant transmission", self._now()))
        elif grant == TX_GRANTED_TO_OTHER:
            talker = fields[5] if len(fields) > 5 else None
            self._report(TalkerChanged(self.name, group, cc, talker))
            if ours:
                self._apply(self.floor.revoke(group, f"pre-empted on air by {talker}",
                                              self._now()))

    def _expect_no_cdtxc(self, cc: int) -> None:
        left = self._ceasing.get(cc, 0) - 1
        if left > 0:
            self._ceasing[cc] = left
        else:
            self._ceasing.pop(cc, None)

    def _on_cdtxc(self, cc: int, fields: list[str], urc: Unsolicited) -> None:
        group = self._calls.get(cc)
        if group is None:
            return
        self._report(TalkerChanged(self.name, group, cc, None))
        if cc in self._ceasing:
            self._expect_no_cdtxc(cc)  # the answer to our own AT+CUTXC
        elif self._keyed.get(group, -1) == cc:
            self._apply(self.floor.revoke(group, "radio ended our transmission", self._now()))

    def _on_ctcr(self, cc: int, fields: list[str], urc: Unsolicited) -> None:
        group = self._calls.pop(cc, None)
        self._ceasing.pop(cc, None)
        cause = _int(fields[1]) if len(fields) > 1 else None
        self._report(CallReleased(self.name, group, cc, cause))
        if group is not None and self._keyed.get(group, -1) == cc:
            # The call is gone, so is the transmission: nothing left to release.
            self._keyed.pop(group)
            self._apply(self.floor.revoke(group, "group call released", self._now()))

    def _on_ctsdsr(self, ai: int, fields: list[str], urc: Unsolicited) -> None:
        if len(fields) < 6 or not urc.extra_lines:
            self._report(GatewayFault(self.name, f"short +CTSDSR: {urc.value[:80]}"))
            return
        user_data = urc.extra_lines[0].strip()
        text = decode_text(user_data, _int(fields[5]))
        self._report(SdsReceived(self.name, fields[1], fields[3], text, user_data))

    # --- plumbing ---------------------------------------------------------------------------

    def _apply(self, events: list[FloorEvent]) -> list[FloorEvent]:
        """Queue the core's key commands, report its events, re-arm its timer."""
        for event in events:
            if isinstance(event, Key | Unkey) and not self._stopping:
                self._actions.put_nowait(event)
        self._report_all(events)
        self._arm()
        return events

    def _report_all(self, events: list[FloorEvent]) -> None:
        for event in events:
            self._report(event)

    def _report(self, event: RadioEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a broken subscriber must not stop the radio being unkeyed
            log.exception("radio event callback failed", extra={"device": self.name})

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.floor.get_timer()
        if when is not None and not self._stopping:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        self._timer = None
        self._apply(self.floor.handle_timer(max(self._now(), when)))


_UrcHandler = Callable[[TetraGateway, int, list[str], Unsolicited], None]
_URC_HANDLERS: dict[str, _UrcHandler] = {
    "+CTCC": TetraGateway._on_ctcc,
    "+CTICN": TetraGateway._on_cticn,
    "+CTXG": TetraGateway._on_ctxg,
    "+CDTXC": TetraGateway._on_cdtxc,
    "+CTCR": TetraGateway._on_ctcr,
    "+CTSDSR": TetraGateway._on_ctsdsr,
}
