"""Validation of the ACD's part of dispatchd.toml into :class:`AcdSettings`.

The daemon loads the TOML file and hands the parsed tables here; every
problem raises :class:`ConfigError` naming the key (``queues[1].ring_timeout``)
so the daemon can print file, key and reason and exit with code 2.
:class:`Table` is the small typed reader shared with :mod:`telephony.routing`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from telephony.acd.events import (
    AcdSettings,
    AgentMembership,
    AgentSettings,
    FullAction,
    Language,
    PreemptPolicy,
    QueueSettings,
    Strategy,
)

__all__ = ["ConfigError", "Table", "load_acd_settings"]

_E = TypeVar("_E", bound=enum.Enum)
_MISSING: Any = object()


class ConfigError(ValueError):
    """A configuration value is missing or wrong; ``key`` names where."""

    def __init__(self, key: str, message: str) -> None:
        """Record the offending key and what is wrong with it."""
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class Table:
    """A typed reader over one TOML table that names keys in its errors."""

    def __init__(self, data: object, path: str) -> None:
        """Wrap ``data`` found at ``path``; it must be a table."""
        if not isinstance(data, Mapping):
            raise ConfigError(path, "must be a table")
        self.data: Mapping[str, Any] = data
        self.path = path

    def key(self, name: str) -> str:
        """The full dotted name of ``name`` in this table."""
        return f"{self.path}.{name}" if self.path else name

    def _get(self, name: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        if name not in self.data:
            if default is _MISSING:
                raise ConfigError(self.key(name), "is required")
            return default
        value = self.data[name]
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(self.key(name), f"must be {what}, not a boolean")
        if not isinstance(value, kinds):
            raise ConfigError(self.key(name), f"must be {what}, not {type(value).__name__}")
        return value

    def text(self, name: str, default: Any = _MISSING) -> Any:
        """A non-empty string (or ``default`` when absent)."""
        value = self._get(name, default, (str,), "a string")
        if name in self.data and not value.strip():
            raise ConfigError(self.key(name), "must not be empty")
        return value

    def integer(self, name: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        """An integer, optionally at least ``minimum``."""
        value = self._get(name, default, (int,), "an integer")
        if isinstance(value, int) and minimum is not None and value < minimum:
            raise ConfigError(self.key(name), f"must be >= {minimum}")
        return value

    def seconds(self, name: str, default: Any = _MISSING, positive: bool = True) -> Any:
        """A number of seconds (> 0, or >= 0 when ``positive`` is False)."""
        value = self._get(name, default, (int, float), "a number of seconds")
        if isinstance(value, (int, float)) and (value <= 0 if positive else value < 0):
            raise ConfigError(self.key(name), "must be > 0" if positive else "must be >= 0")
        return None if value is None else float(value)

    def flag(self, name: str, default: Any = _MISSING) -> Any:
        """A boolean."""
        return self._get(name, default, (bool,), "true or false")

    def choice(self, name: str, kind: type[_E], default: Any = _MISSING) -> Any:
        """One of an enum's string values."""
        value = self._get(name, default, (str, kind), "a string")
        if value is None or isinstance(value, kind):  # absent with no default
            return value
        try:
            return kind(value)
        except ValueError:
            options = ", ".join(repr(m.value) for m in kind)
            raise ConfigError(self.key(name), f"must be one of {options}, not {value!r}") from None

    def strings(self, name: str, default: Any = _MISSING) -> Any:
        """A list of non-empty strings."""
        value = self._get(name, default, (list, tuple), "a list of strings")
        for i, item in enumerate(value or ()):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(f"{self.key(name)}[{i}]", "must be a non-empty string")
        return value if value is None else tuple(value)

    def tables(self, name: str) -> list[Table]:
        """An array of tables (``[[name]]``); absent means empty."""
        value = self._get(name, [], (list, tuple), "an array of tables")
        return [Table(item, f"{self.key(name)}[{i}]") for i, item in enumerate(value)]

    def only(self, names: Iterable[str]) -> None:
        """Refuse keys this table does not know (typos must not pass silently)."""
        known = set(names)
        for name in self.data:
            if name not in known:
                raise ConfigError(self.key(name), "unknown key")


_QUEUE_KEYS = (
    "name", "strategy", "ring_timeout", "max_wait", "overflow_queue", "max_length",
    "on_full", "wrap_up", "no_answer_not_ready", "announce", "announce_every", "language",
    "preempt",
)


def _queue(t: Table) -> QueueSettings:
    t.only(_QUEUE_KEYS)
    return QueueSettings(
        name=t.text("name"),
        strategy=t.choice("strategy", Strategy, Strategy.LONGEST_IDLE),
        ring_timeout=t.seconds("ring_timeout", 15.0),
        max_wait=t.seconds("max_wait", None),
        overflow_queue=t.text("overflow_queue", None),
        max_length=t.integer("max_length", None, minimum=0),
        on_full=t.choice("on_full", FullAction, FullAction.OVERFLOW),
        wrap_up=t.seconds("wrap_up", 10.0, positive=False),
        no_answer_not_ready=t.flag("no_answer_not_ready", True),
        announce=t.flag("announce", True),
        announce_every=_every(t),
        language=t.choice("language", Language, Language.ZH),
        preempt=t.choice("preempt", PreemptPolicy, PreemptPolicy.REQUEUE),
    )


def _every(t: Table) -> float:
    every = t.seconds("announce_every", 30.0, positive=False)
    if 0 < every < 10:
        raise ConfigError(t.key("announce_every"), "must be 0 (on entry only) or >= 10 s")
    if every > 3600:
        raise ConfigError(t.key("announce_every"), "must be <= 3600 s")
    return float(every)


def _agent(t: Table, queue_names: set[str]) -> AgentSettings:
    t.only(("id", "name", "queues", "penalties"))
    queues = t.strings("queues", ())
    penalties = Table(t.data.get("penalties", {}), t.key("penalties"))
    members = []
    for i, name in enumerate(queues):
        if name not in queue_names:
            raise ConfigError(f"{t.key('queues')}[{i}]", f"no queue named {name!r}")
        members.append(AgentMembership(name, penalties.integer(name, 0, minimum=0)))
    for name in penalties.data:
        if name not in queues:
            raise ConfigError(penalties.key(name), "penalty for a queue the agent is not in")
    return AgentSettings(t.text("id"), t.text("name", ""), tuple(members))


def load_acd_settings(root: Mapping[str, Any]) -> AcdSettings:
    """Validate ``[[queues]]``, ``[[agents]]`` and ``[acd]`` of a parsed dispatchd.toml."""
    top = Table(root, "")
    queues = [_queue(t) for t in top.tables("queues")]
    names: set[str] = set()
    for i, q in enumerate(queues):
        if q.name in names:
            raise ConfigError(f"queues[{i}].name", f"duplicate queue {q.name!r}")
        names.add(q.name)
    for i, q in enumerate(queues):
        if q.overflow_queue is not None and q.overflow_queue not in names:
            raise ConfigError(f"queues[{i}].overflow_queue", f"no queue named {q.overflow_queue!r}")
        if q.overflow_queue == q.name:
            raise ConfigError(f"queues[{i}].overflow_queue", "a queue cannot overflow to itself")
        if q.max_wait is not None and q.overflow_queue is None:
            raise ConfigError(f"queues[{i}].max_wait", "needs overflow_queue")
    agents = [_agent(t, names) for t in top.tables("agents")]
    seen: set[str] = set()
    for i, a in enumerate(agents):
        if a.agent_id in seen:
            raise ConfigError(f"agents[{i}].id", f"duplicate agent {a.agent_id!r}")
        seen.add(a.agent_id)
    acd = Table(root.get("acd", {}), "acd")
    acd.only(("preempt_priority",))
    return AcdSettings(tuple(queues), tuple(agents), acd.integer("preempt_priority", 30))
