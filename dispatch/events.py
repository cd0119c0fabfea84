"""Domain events: services publish them, dispatch fans them out.

A service (SIP, radio, SMS, intake) reports what happens as frozen dataclass
instances through a ``publish`` callable it is given; it never imports this
module.  The :class:`EventHub` stamps each event with a sequence number and a
time, hands it to in-process listeners, and copies it into the bounded queue
of every subscriber (WebSocket consoles).  A subscriber that falls too far
behind is cut off rather than allowed to grow memory or stall the loop; its
console reconnects and reloads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Listener = Callable[["Envelope"], None]


_TOPICS: dict[type, str] = {}
_FIELDS: dict[type, tuple[str, ...] | None] = {}
"""Field names of each dataclass type seen (None: not a dataclass), looked up once."""
_PLAIN = frozenset({str, int, float, bool, type(None)})


def topic_of(event: object) -> str:
    """An event's topic: its ``topic`` class attribute, else its class name in snake case."""
    cls = type(event)
    topic = getattr(cls, "topic", None)
    if isinstance(topic, str):
        return topic
    topic = _TOPICS.get(cls)
    if topic is None:
        topic = _TOPICS[cls] = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    return topic


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, datetimes and containers as plain JSON data."""
    cls = type(value)
    if cls in _PLAIN:
        return value
    try:
        names = _FIELDS[cls]
    except KeyError:
        names = _FIELDS[cls] = (
            tuple(f.name for f in dataclasses.fields(value))
            if dataclasses.is_dataclass(value) and not isinstance(value, type) else None)
    if names is not None:
        return {name: to_jsonable(getattr(value, name)) for name in names}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Envelope:
    """An event as it leaves the hub: sequence, time, topic and the event."""

    seq: int
    at: float
    topic: str
    event: object

    def to_json(self) -> dict[str, Any]:
        """The wire form sent to consoles."""
        data = to_jsonable(self.event)
        return {"seq": self.seq, "at": self.at, "topic": self.topic, "data": data}


class SubscriberOverflow(Exception):
    """A subscriber did not keep up and was cut off."""


@dataclass(eq=False)
class Subscription:
    """A bounded queue of envelopes for one consumer, filtered by topic prefix."""

    prefixes: tuple[str, ...]
    queue: asyncio.Queue[Envelope | None]
    overflowed: bool = False
    closed: bool = False

    def wants(self, topic: str) -> bool:
        """True if this subscription asked for ``topic`` (or asked for everything)."""
        return not self.prefixes or topic.startswith(self.prefixes)

    async def __aiter__(self) -> AsyncIterator[Envelope]:
        """Yield envelopes until the hub closes; raise if we fell behind."""
        while True:
            item = await self.queue.get()
            if item is None:
                if self.overflowed:
                    raise SubscriberOverflow("event subscriber fell behind and was cut off")
                return
            yield item


@dataclass
class EventHub:
    """Fan-out of domain events to listeners and subscribers."""

    clock: Clock
    queue_size: int = 1000
    _seq: int = 0
    _listeners: list[Listener] = field(default_factory=list)
    _subs: set[Subscription] = field(default_factory=set)
    published: dict[str, int] = field(default_factory=dict)

    def publish(self, event: object) -> Envelope:
        """Publish one event; never blocks and never raises for a bad listener."""
        self._seq += 1
        env = Envelope(self._seq, self.clock(), topic_of(event), event)
        self.published[env.topic] = self.published.get(env.topic, 0) + 1
        for listener in list(self._listeners):
            try:
                listener(env)
            except Exception:  # a listener's bug must not stop the others
                log.exception("event listener failed", extra={"topic": env.topic})
        for sub in list(self._subs):
            if sub.wants(env.topic):
                self._offer(sub, env)
        return env

    def deliver_remote(self, topic: str, at: float, data: dict[str, Any]) -> Envelope:
        """Hand an event another node published (already JSON data) to the subscribers.

        In-process listeners never see it: they act on this node's events only,
        so a plan or a campaign is never triggered twice by one event.
        """
        self._seq += 1
        env = Envelope(self._seq, at, topic, data)
        for sub in list(self._subs):
            if sub.wants(topic):
                self._offer(sub, env)
        return env

    def _offer(self, sub: Subscription, env: Envelope) -> None:
        # Keep one slot free for the closing None, so a cut-off is always seen.
        if sub.queue.qsize() >= self.queue_size - 1:
            sub.overflowed = True
            self._close(sub)
            log.warning("event subscriber cut off: queue full", extra={"topic": env.topic})
            return
        sub.queue.put_nowait(env)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` synchronously for every event; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def subscribe(self, prefixes: Iterable[str] = ()) -> Subscription:
        """A new bounded subscription to topics starting with any of ``prefixes``."""
        sub = Subscription(tuple(prefixes), asyncio.Queue(maxsize=self.queue_size))
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to ``sub``."""
        self._subs.discard(sub)

    def _close(self, sub: Subscription) -> None:
        if not sub.closed:
            sub.closed = True
            self._subs.discard(sub)
            sub.queue.put_nowait(None)

    def close_all(self) -> None:
        """End every subscription (at shutdown)."""
        for sub in list(self._subs):
            self._close(sub)

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are live."""
        return len(self._subs)


# Events of dispatch itself.  Other packages define their own.


@dataclass(frozen=True)
class ServiceStateChanged:
    """A service started, failed, recovered or stopped."""

    topic: ClassVar[str] = "service.state"
    service: str
    state: str
    required: bool
    error: str | None


@dataclass(frozen=True)
class AuditRecorded:
    """A line was appended to the audit trail (published after commit)."""

    topic: ClassVar[str] = "audit.recorded"
    id: int
    at: dt.datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


@dataclass(frozen=True)
class DutyLogAdded:
    """An operator wrote in the duty log."""

    topic: ClassVar[str] = "duty_log.added"
    id: int
    at: dt.datetime
    author: str
    text: str


@dataclass(frozen=True)
class ConfigReloaded:
    """SIGHUP re-read the configuration."""

    topic: ClassVar[str] = "config.reloaded"
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]
