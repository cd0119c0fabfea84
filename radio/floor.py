"""PTT floor control per talkgroup: a sans-I/O core.

Theory of operation
-------------------
Each talkgroup is a small state machine (:class:`GroupState`): ``IDLE``,
``TALKING`` (one talker holds the floor and the gateway has been told to key)
or ``HANG`` (the talker let go; for ``hang_time_s`` the group stays reserved
for them, so a reply goes out without a fight).  Inputs (:class:`Input`) are
dispatched through ``_TABLE``, keyed by (state, input).

* One talker per group.  A request while someone talks either pre-empts them
  (strictly higher :class:`Priority`: commander > dispatcher > field unit; a
  handset's emergency call outranks everyone) or joins the queue, ordered by
  priority then arrival.  Every queue change reports positions.
* When the talker releases, the head of the queue is granted at once; with an
  empty queue the group hangs, reserved for the previous talker (and anyone
  who would have pre-empted them).
* A talker holding longer than ``tx_timeout_s`` is cut off (:class:`FloorTimedOut`).
* Fail-safe: :meth:`FloorControl.lost` (a gateway's link went) and
  :meth:`FloorControl.revoke_all` end every grant with an explicit
  :class:`Unkey`.

The invariant the gateway relies on: a :class:`FloorGranted` is always
followed, in the same list, by :class:`Key` for that group; every grant that
ends (released, pre-empted, timed out, revoked) emits :class:`Unkey` before
any later :class:`Key` of that group.  So the radio is never keyed without a
grant and a grant never exists without a key command issued.

The core never reads the clock: every call takes ``now`` (seconds, any
monotonic origin); :meth:`FloorControl.get_timer` says when to call
:meth:`FloorControl.handle_timer` next.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Action", "Event", "FloorCancelled", "FloorControl", "FloorDenied", "FloorError",
    "FloorEvent", "FloorGranted", "FloorPreempted", "FloorQueued", "FloorReleased",
    "FloorRevoked", "FloorSettings", "FloorTimedOut", "GroupState", "Key", "Priority",
    "QueuePosition", "Unkey",
]


class Priority(enum.IntEnum):
    """Who may pre-empt whom: a larger value wins."""

    FIELD_UNIT = 1
    DISPATCHER = 2
    COMMANDER = 3
    EMERGENCY = 4


class GroupState(enum.Enum):
    """Where one talkgroup's floor is."""

    IDLE = "idle"
    TALKING = "talking"
    HANG = "hang"


class Input(enum.Enum):
    """What can happen to a talkgroup's floor."""

    REQUEST = "request"
    RELEASE = "release"
    TX_TIMEOUT = "tx_timeout"
    HANG_EXPIRED = "hang_expired"


class FloorError(ValueError):
    """A caller misused the core (settings out of range)."""


@dataclass(frozen=True)
class FloorSettings:
    """Timers and limits of floor control."""

    hang_time_s: float = 2.0
    tx_timeout_s: float = 60.0
    max_queue: int = 16

    def __post_init__(self) -> None:
        """Refuse settings that would make the core misbehave."""
        if self.hang_time_s < 0 or self.tx_timeout_s <= 0 or self.max_queue < 0:
            raise FloorError(f"bad floor settings: {self}")


# --- events: the audited floor events, then the gateway's commands -------------------------


@dataclass(frozen=True)
class FloorGranted:
    """``who`` holds the floor of ``group``."""

    group: str
    who: str
    priority: Priority
    at: float
    why: str = "granted"


@dataclass(frozen=True)
class FloorDenied:
    """``who`` was refused the floor (unknown group, gateway down, queue full, revoked)."""

    group: str
    who: str
    at: float
    why: str


@dataclass(frozen=True)
class FloorQueued:
    """``who`` waits for the floor at ``position`` (1 = next)."""

    group: str
    who: str
    position: int
    at: float
    why: str = "floor busy"


@dataclass(frozen=True)
class QueuePosition:
    """``who``'s place in the queue changed."""

    group: str
    who: str
    position: int
    at: float


@dataclass(frozen=True)
class FloorCancelled:
    """``who`` withdrew a queued request."""

    group: str
    who: str
    at: float
    why: str = "cancelled"


@dataclass(frozen=True)
class FloorPreempted:
    """``who`` lost the floor to ``by`` (higher priority)."""

    group: str
    who: str
    by: str
    at: float
    why: str


@dataclass(frozen=True)
class FloorReleased:
    """``who`` let go of the floor."""

    group: str
    who: str
    at: float
    why: str = "released"


@dataclass(frozen=True)
class FloorTimedOut:
    """``who`` held the floor longer than the transmit time-out and was cut off."""

    group: str
    who: str
    at: float
    held_s: float
    why: str = "transmit time-out"


@dataclass(frozen=True)
class FloorRevoked:
    """``who``'s grant was ended by the system (gateway lost, shutdown, radio refused)."""

    group: str
    who: str
    at: float
    why: str


@dataclass(frozen=True)
class Key:
    """Command for the gateway: start transmitting on ``group``."""

    group: str


@dataclass(frozen=True)
class Unkey:
    """Command for the gateway: stop transmitting on ``group``."""

    group: str


FloorEvent = (FloorGranted | FloorDenied | FloorQueued | QueuePosition | FloorCancelled
              | FloorPreempted | FloorReleased | FloorTimedOut | FloorRevoked)
Action = Key | Unkey
Event = FloorEvent | Action


@dataclass(frozen=True)
class _Request:
    who: str
    priority: Priority
    seq: int


@dataclass
class _Group:
    name: str
    gateway: str
    state: GroupState = GroupState.IDLE
    talker: _Request | None = None
    granted_at: float = 0.0
    tx_deadline: float | None = None
    hang_owner: _Request | None = None
    hang_until: float | None = None
    queue: list[_Request] = field(default_factory=list)

    def positions(self) -> dict[str, int]:
        return {r.who: i + 1 for i, r in enumerate(self.queue)}


Handler = Callable[["FloorControl", _Group, "_Request | None", float, list[Event]], None]


class FloorControl:
    """Floor control for a set of talkgroups, each carried by a named gateway."""

    def __init__(self, groups: Mapping[str, str], settings: FloorSettings | None = None) -> None:
        """``groups`` maps talkgroup -> gateway name; every gateway starts up."""
        self.settings = settings or FloorSettings()
        self._groups = {g: _Group(g, gw) for g, gw in groups.items()}
        self._down: set[str] = set()
        self._seq = itertools.count()

    # --- queries ----------------------------------------------------------------------------

    def state(self, group: str) -> GroupState:
        """The floor state of ``group``."""
        return self._groups[group].state

    def talker(self, group: str) -> str | None:
        """Who holds the floor of ``group`` (``None`` if nobody)."""
        talker = self._groups[group].talker
        return talker.who if talker is not None else None

    def talker_priority(self, group: str) -> Priority | None:
        """The priority of whoever holds the floor of ``group``."""
        talker = self._groups[group].talker
        return talker.priority if talker is not None else None

    def queue(self, group: str) -> tuple[str, ...]:
        """Who waits for ``group``'s floor, next first."""
        return tuple(r.who for r in self._groups[group].queue)

    def keyed(self) -> frozenset[str]:
        """Groups whose gateway has been told to key and not yet to unkey."""
        return frozenset(g.name for g in self._groups.values() if g.state is GroupState.TALKING)

    @property
    def groups(self) -> tuple[str, ...]:
        """The talkgroups this core controls."""
        return tuple(self._groups)

    # --- inputs from dispatchers ------------------------------------------------------------

    def request(self, group: str, who: str, priority: Priority, now: float) -> list[Event]:
        """``who`` presses PTT on ``group``."""
        g = self._groups.get(group)
        if g is None:
            return [FloorDenied(group, who, now, "unknown talkgroup")]
        if g.gateway in self._down:
            return [FloorDenied(group, who, now, f"gateway {g.gateway} is down")]
        events: list[Event] = []
        _TABLE[(g.state, Input.REQUEST)](self, g, _Request(who, priority, next(self._seq)),
                                        now, events)
        return events

    def release(self, group: str, who: str, now: float) -> list[Event]:
        """``who`` lets go of PTT on ``group`` (a queued ``who`` withdraws instead)."""
        g = self._groups.get(group)
        if g is None:
            return []
        if g.talker is None or g.talker.who != who:
            return self.cancel(group, who, now)
        events: list[Event] = []
        _TABLE[(g.state, Input.RELEASE)](self, g, None, now, events)
        return events

    def cancel(self, group: str, who: str, now: float) -> list[Event]:
        """``who`` withdraws a queued request (nothing happens if they are not queued)."""
        g = self._groups.get(group)
        if g is None or who not in g.positions():
            return []
        before = g.positions()
        g.queue = [r for r in g.queue if r.who != who]
        events: list[Event] = [FloorCancelled(group, who, now)]
        self._report_positions(g, before, now, events)
        return events

    # --- fail-safe --------------------------------------------------------------------------

    def revoke(self, group: str, reason: str, now: float) -> list[Event]:
        """End ``group``'s grant and queue (the radio refused or dropped our transmission)."""
        g = self._groups.get(group)
        if g is None:
            return []
        events: list[Event] = []
        if g.talker is not None:
            events += [FloorRevoked(group, g.talker.who, now, reason), Unkey(group)]
        events += [FloorDenied(group, r.who, now, reason) for r in g.queue]
        self._reset(g)
        return events

    def revoke_all(self, reason: str, now: float) -> list[Event]:
        """End every grant everywhere, each with an :class:`Unkey` (shutdown, crash)."""
        events: list[Event] = []
        for group in self._groups:
            events += self.revoke(group, reason, now)
        return events

    def lost(self, gateway: str, now: float) -> list[Event]:
        """``gateway``'s link is gone: revoke its groups and refuse requests until restored."""
        self._down.add(gateway)
        events: list[Event] = []
        for g in self._groups.values():
            if g.gateway == gateway:
                events += self.revoke(g.name, f"gateway {gateway} lost", now)
        return events

    def restored(self, gateway: str) -> None:
        """``gateway`` is usable again (its link is up and the radio reconciled)."""
        self._down.discard(gateway)

    # --- timers -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None``."""
        times = [t for g in self._groups.values() for t in (g.tx_deadline, g.hang_until)
                 if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every deadline at or before ``now``."""
        events: list[Event] = []
        for g in self._groups.values():
            if g.tx_deadline is not None and now >= g.tx_deadline:
                _TABLE[(g.state, Input.TX_TIMEOUT)](self, g, None, now, events)
            if g.hang_until is not None and now >= g.hang_until:
                _TABLE[(g.state, Input.HANG_EXPIRED)](self, g, None, now, events)
        return events

    # --- transitions ------------------------------------------------------------------------

    def _grant(self, g: _Group, req: _Request, now: float, events: list[Event],
               why: str = "granted") -> None:
        g.state = GroupState.TALKING
        g.talker = req
        g.granted_at = now
        g.tx_deadline = now + self.settings.tx_timeout_s
        g.hang_owner = None
        g.hang_until = None
        events += [FloorGranted(g.name, req.who, req.priority, now, why), Key(g.name)]

    def _reset(self, g: _Group) -> None:
        g.state = GroupState.IDLE
        g.talker = g.hang_owner = None
        g.tx_deadline = g.hang_until = None
        g.queue = []

    def _end_talk(self, g: _Group, now: float, events: list[Event]) -> None:
        """The talker is gone (released, timed out): serve the queue or hang."""
        previous = g.talker
        g.talker = None
        g.tx_deadline = None
        if g.queue:
            before = g.positions()
            head = g.queue.pop(0)
            self._grant(g, head, now, events, "next in queue")
            self._report_positions(g, before, now, events)
        elif self.settings.hang_time_s > 0 and previous is not None:
            g.state = GroupState.HANG
            g.hang_owner = previous
            g.hang_until = now + self.settings.hang_time_s
        else:
            g.state = GroupState.IDLE

    def _enqueue(self, g: _Group, req: _Request, now: float, events: list[Event],
                 why: str) -> None:
        if any(r.who == req.who for r in g.queue):
            events.append(QueuePosition(g.name, req.who, g.positions()[req.who], now))
            return
        if len(g.queue) >= self.settings.max_queue:
            events.append(FloorDenied(g.name, req.who, now, "queue full"))
            return
        before = g.positions()
        g.queue.append(req)
        g.queue.sort(key=lambda r: (-r.priority, r.seq))
        events.append(FloorQueued(g.name, req.who, g.positions()[req.who], now, why))
        self._report_positions(g, before, now, events, skip=req.who)

    def _report_positions(self, g: _Group, before: dict[str, int], now: float,
                          events: list[Event], skip: str | None = None) -> None:
        for who, position in g.positions().items():
            if who != skip and before.get(who) != position:
                events.append(QueuePosition(g.name, who, position, now))

    def _on_request_idle(self, g: _Group, req: _Request | None, now: float,
                         events: list[Event]) -> None:
        assert req is not None
        self._grant(g, req, now, events)

    def _on_request_talking(self, g: _Group, req: _Request | None, now: float,
                            events: list[Event]) -> None:
        assert req is not None and g.talker is not None
        if req.who == g.talker.who:
            # A second press by the talker never re-keys; an emergency declared while
            # talking raises their priority, so nobody below it may cut them off.
            if req.priority > g.talker.priority:
                g.talker = _Request(req.who, req.priority, g.talker.seq)
            return
        if req.priority > g.talker.priority:
            loser = g.talker
            g.queue = [r for r in g.queue if r.who != req.who]
            events += [FloorPreempted(g.name, loser.who, req.who, now,
                                      f"{req.priority.name.lower()} outranks "
                                      f"{loser.priority.name.lower()}"), Unkey(g.name)]
            self._grant(g, req, now, events, "pre-empted a lower priority")
            return
        self._enqueue(g, req, now, events, f"{g.talker.who} is talking")

    def _on_request_hang(self, g: _Group, req: _Request | None, now: float,
                         events: list[Event]) -> None:
        assert req is not None and g.hang_owner is not None
        owner = g.hang_owner
        # Nobody is on air during hang time, so an emergency call never waits for it.
        if (req.who == owner.who or req.priority > owner.priority
                or req.priority is Priority.EMERGENCY):
            g.queue = [r for r in g.queue if r.who != req.who]
            self._grant(g, req, now, events, "hang time reserved" if req.who == owner.who
                        else "outranks the hang-time reservation")
            return
        self._enqueue(g, req, now, events, f"hang time reserved for {owner.who}")

    def _on_release_talking(self, g: _Group, req: _Request | None, now: float,
                            events: list[Event]) -> None:
        assert g.talker is not None
        events += [FloorReleased(g.name, g.talker.who, now), Unkey(g.name)]
        self._end_talk(g, now, events)

    def _on_tx_timeout(self, g: _Group, req: _Request | None, now: float,
                       events: list[Event]) -> None:
        assert g.talker is not None
        events += [FloorTimedOut(g.name, g.talker.who, now, now - g.granted_at), Unkey(g.name)]
        self._end_talk(g, now, events)

    def _on_hang_expired(self, g: _Group, req: _Request | None, now: float,
                         events: list[Event]) -> None:
        g.state = GroupState.IDLE
        g.hang_owner = None
        g.hang_until = None
        if g.queue:
            before = g.positions()
            head = g.queue.pop(0)
            self._grant(g, head, now, events, "next in queue")
            self._report_positions(g, before, now, events)

    def _ignore(self, g: _Group, req: _Request | None, now: float, events: list[Event]) -> None:
        """Inputs that mean nothing in this state (a stale timer, a release with no talker)."""


_TABLE: dict[tuple[GroupState, Input], Handler] = {
    (GroupState.IDLE, Input.REQUEST): FloorControl._on_request_idle,
    (GroupState.IDLE, Input.RELEASE): FloorControl._ignore,
    (GroupState.IDLE, Input.TX_TIMEOUT): FloorControl._ignore,
    (GroupState.IDLE, Input.HANG_EXPIRED): FloorControl._ignore,
    (GroupState.TALKING, Input.REQUEST): FloorControl._on_request_talking,
    (GroupState.TALKING, Input.RELEASE): FloorControl._on_release_talking,
    (GroupState.TALKING, Input.TX_TIMEOUT): FloorControl._on_tx_timeout,
    (GroupState.TALKING, Input.HANG_EXPIRED): FloorControl._ignore,
    (GroupState.HANG, Input.REQUEST): FloorControl._on_request_hang,
    (GroupState.HANG, Input.RELEASE): FloorControl._ignore,
    (GroupState.HANG, Input.TX_TIMEOUT): FloorControl._ignore,
    (GroupState.HANG, Input.HANG_EXPIRED): FloorControl._on_hang_expired,
}
