"""Hotline routing: which hotline (and queue) an incoming call is for.

Pure logic over validated settings; the B2BUA passes strings it took from
the request (Request-URI user, To user, the first Diversion header, the
caller's number, the trunk and line) and gets a :class:`Route`.

Order of decisions:

1. Ringdown lines first: a configured caller number, or a trunk + line id,
   goes straight to its destination queue with no digits looked at (a
   hospital's or chemical plant's red phone).
2. Each called-number candidate, in order Request-URI user, To user,
   Diversion number, is normalised (``tel:``/``sip:`` and parameters dropped,
   visual separators removed, ``+86``/``0086`` stripped, the trunk's area
   codes stripped) and then rewritten by the trunk's rules (first full match
   wins).  The first candidate naming a configured hotline wins.  Trunks
   disagree on where they put the dialled number, so a later candidate may
   win when an earlier one is a trunk's own pilot number.
3. Otherwise the configured fallback, keeping the first non-empty candidate
   as the called number for the record.

Priorities: a larger number is more urgent.  Defaults: 110/119/120 = 30,
122 = 20, 12345 = 10, anything else 0 (each hotline may set its own).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telephony.acd.config import ConfigError, Table
from telephony.acd.events import Language

__all__ = [
    "DEFAULT_PRIORITIES",
    "MAX_NUMBER_LENGTH",
    "ConfigError",
    "Hotline",
    "Ringdown",
    "Route",
    "RouteKind",
    "Router",
    "RoutingSettings",
    "RewriteRule",
    "TrunkSettings",
    "diversion_number",
    "load_routing_settings",
    "normalise_number",
]

DEFAULT_PRIORITIES: Mapping[str, int] = {"110": 30, "119": 30, "120": 30, "122": 20, "12345": 10}
"""Default urgency by hotline number; larger is more urgent."""

MAX_NUMBER_LENGTH = 64
"""Longer "numbers" are not numbers; they normalise to the empty string."""

_SEPARATORS = re.compile(r"[\s\-.()/\[\]]")
_NUMBER = re.compile(r"\+?[0-9*#]+")


class RouteKind(enum.Enum):
    """How a route was found."""

    HOTLINE = "hotline"
    RINGDOWN = "ringdown"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class Hotline:
    """A number the public calls (``[[hotlines]]``)."""

    number: str
    name_zh: str
    name_en: str
    queue: str
    priority: int
    agency: str
    language: str | None = None  # queue announcements for its callers ("zh"/"en")


@dataclass(frozen=True, slots=True)
class Ringdown:
    """A line that rings a queue as soon as it calls in (``[[ringdowns]]``)."""

    name: str
    queue: str
    priority: int
    caller: str | None = None
    trunk: str | None = None
    line: str | None = None
    hotline: str = ""  # hotline number to file the call under, if any


@dataclass(frozen=True, slots=True)
class RewriteRule:
    """``pattern`` must match the whole normalised number; ``replace`` may use \\1."""

    pattern: re.Pattern[str]
    replace: str


@dataclass(frozen=True, slots=True)
class TrunkSettings:
    """Per-trunk number handling (``[[trunks]]``)."""

    name: str
    area_codes: tuple[str, ...] = ()
    rewrite: tuple[RewriteRule, ...] = ()


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """Hotlines, ringdown lines, trunks and the fallback hotline."""

    hotlines: tuple[Hotline, ...]
    fallback: Hotline
    ringdowns: tuple[Ringdown, ...] = ()
    trunks: tuple[TrunkSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """Where a call goes: the hotline it counts under, its queue and priority."""

    kind: RouteKind
    called: str
    hotline: Hotline
    queue: str
    priority: int
    ringdown: Ringdown | None = None


def normalise_number(raw: str, area_codes: tuple[str, ...] = ()) -> str:
    """Reduce a dialled/URI number to plain digits as dialled nationally.

    Drops a ``tel:``/``sip:`` scheme, URI parameters and host, separators,
    ``+86``/``0086``, then the first matching area code (with its trunk 0, or
    without it after a country code) when something is left after it.  Returns
    "" for anything that is not a number.
    """
    text = raw.strip()
    if len(text) > MAX_NUMBER_LENGTH:
        return ""
    for scheme in ("tel:", "sip:", "sips:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
    text = text.split(";", 1)[0].split("@", 1)[0]
    text = _SEPARATORS.sub("", text)
    if not _NUMBER.fullmatch(text):
        return ""
    international = False
    for prefix in ("+86", "0086"):
        if text.startswith(prefix):
            text, international = text[len(prefix):], True
            break
    text = text.lstrip("+")
    for code in area_codes:
        forms = (code, code[1:]) if international and code.startswith("0") else (code,)
        for form in forms:
            if text.startswith(form) and len(text) > len(form):
                return text[len(form):]
    return text


def diversion_number(header_value: str) -> str:
    """The user part of the first entry of a Diversion header value ("" if none)."""
    if len(header_value) > 4 * MAX_NUMBER_LENGTH:
        return ""
    first = header_value.split(",", 1)[0].strip()
    match = re.search(r"<([^>]*)>", first)
    uri = match.group(1) if match else first.split(";", 1)[0]
    return uri.strip()


class Router:
    """Routes calls with validated :class:`RoutingSettings`."""

    def __init__(self, settings: RoutingSettings) -> None:
        """Index the settings for lookups."""
        self.settings = settings
        self._hotlines = {h.number: h for h in settings.hotlines}
        self._trunks = {t.name: t for t in settings.trunks}
        self._by_caller = {r.caller: r for r in settings.ringdowns if r.caller}
        self._by_line = {(r.trunk, r.line): r for r in settings.ringdowns if r.line}

    def route(
        self,
        request_uri_user: str = "",
        to_user: str = "",
        diversion: str = "",
        caller: str = "",
        trunk: str = "",
        line: str = "",
    ) -> Route:
        """Route one incoming call; ``diversion`` is the first Diversion number or value."""
        codes = self._trunks[trunk].area_codes if trunk in self._trunks else ()
        ringdown = self._by_line.get((trunk, line)) if line else None
        if ringdown is None and caller:
            ringdown = self._by_caller.get(normalise_number(caller, codes))
        if ringdown is not None:
            hotline = self._hotlines.get(ringdown.hotline, self.settings.fallback)
            return Route(RouteKind.RINGDOWN, ringdown.hotline, hotline, ringdown.queue,
                         ringdown.priority, ringdown)
        first = ""
        for raw in (request_uri_user, to_user, diversion_number(diversion)):
            number = self.called_number(raw, trunk)
            first = first or number
            found = self._hotlines.get(number)
            if found is not None:
                return Route(RouteKind.HOTLINE, number, found, found.queue, found.priority)
        fb = self.settings.fallback
        return Route(RouteKind.FALLBACK, first, fb, fb.queue, fb.priority)

    def called_number(self, raw: str, trunk: str = "") -> str:
        """Normalise ``raw`` for ``trunk`` and apply its rewrite rules."""
        settings = self._trunks.get(trunk)
        number = normalise_number(raw, settings.area_codes if settings else ())
        for rule in settings.rewrite if settings and number else ():
            if rule.pattern.fullmatch(number):
                return rule.pattern.sub(rule.replace, number, count=1)
        return number


# --- configuration ----------------------------------------------------------


def _digits(t: Table, name: str, required: bool = False) -> Any:
    value = t.text(name) if required else t.text(name, None)
    if value is not None and normalise_number(value) != value:
        raise ConfigError(t.key(name), f"must be a plain national number, not {value!r}")
    return value


def _hotline(t: Table) -> Hotline:
    t.only(("number", "name_zh", "name_en", "queue", "priority", "agency", "language"))
    number = _digits(t, "number", required=True)
    return Hotline(
        number=number,
        name_zh=t.text("name_zh", number),
        name_en=t.text("name_en", number),
        queue=t.text("queue"),
        priority=t.integer("priority", DEFAULT_PRIORITIES.get(number, 0)),
        agency=t.text("agency", ""),
        language=None if (lang := t.choice("language", Language, None)) is None else lang.value,
    )


def _ringdown(t: Table) -> Ringdown:
    t.only(("name", "caller", "trunk", "line", "queue", "priority", "hotline"))
    ringdown = Ringdown(
        name=t.text("name"),
        queue=t.text("queue"),
        priority=t.integer("priority", 30),
        caller=_digits(t, "caller"),
        trunk=t.text("trunk", None),
        line=t.text("line", None),
        hotline=t.text("hotline", ""),
    )
    if ringdown.caller is None and ringdown.line is None:
        raise ConfigError(t.key("caller"), "a ringdown needs caller or trunk + line")
    if ringdown.line is not None and ringdown.trunk is None:
        raise ConfigError(t.key("trunk"), "is required with line")
    return ringdown


def _trunk(t: Table) -> TrunkSettings:
    t.only(("name", "area_codes", "rewrite"))
    rules = []
    for rt in t.tables("rewrite"):
        rt.only(("match", "replace"))
        try:
            pattern = re.compile(rt.text("match"))
        except re.error as exc:
            raise ConfigError(rt.key("match"), f"bad regular expression: {exc}") from None
        replace = rt.data.get("replace", "")
        if not isinstance(replace, str):
            raise ConfigError(rt.key("replace"), "must be a string")
        try:
            pattern.sub(replace, "")  # parses the template: bad group references fail here
        except (re.error, IndexError) as exc:
            raise ConfigError(rt.key("replace"), f"bad replacement: {exc}") from None
        rules.append(RewriteRule(pattern, replace))
    codes = t.strings("area_codes", ())
    for i, code in enumerate(codes):
        if not code.isdigit():
            raise ConfigError(f"{t.key('area_codes')}[{i}]", f"must be digits, not {code!r}")
    return TrunkSettings(t.text("name"), codes, tuple(rules))


def load_routing_settings(
    root: Mapping[str, Any], queues: set[str] | None = None
) -> RoutingSettings:
    """Validate ``[[hotlines]]``, ``[[ringdowns]]``, ``[[trunks]]`` and ``[routing]``.

    With ``queues``, every queue named must be one of them.
    """
    top = Table(root, "")
    hotlines = [_hotline(t) for t in top.tables("hotlines")]
    seen: dict[str, int] = {}
    for i, h in enumerate(hotlines):
        if h.number in seen:
            raise ConfigError(f"hotlines[{i}].number", f"duplicate hotline {h.number}")
        seen[h.number] = i
    ringdowns = [_ringdown(t) for t in top.tables("ringdowns")]
    trunks = [_trunk(t) for t in top.tables("trunks")]
    routing = Table(root.get("routing", {}), "routing")
    routing.only(("fallback",))
    fallback_number = routing.text("fallback")
    if fallback_number not in seen:
        raise ConfigError("routing.fallback", f"no hotline numbered {fallback_number!r}")
    if queues is not None:
        for i, h in enumerate(hotlines):
            if h.queue not in queues:
                raise ConfigError(f"hotlines[{i}].queue", f"no queue named {h.queue!r}")
        for i, r in enumerate(ringdowns):
            if r.queue not in queues:
                raise ConfigError(f"ringdowns[{i}].queue", f"no queue named {r.queue!r}")
    for i, r in enumerate(ringdowns):
        if r.hotline and r.hotline not in seen:
            raise ConfigError(f"ringdowns[{i}].hotline", f"no hotline numbered {r.hotline!r}")
    return RoutingSettings(
        tuple(hotlines), hotlines[seen[fallback_number]], tuple(ringdowns), tuple(trunks)
    )
