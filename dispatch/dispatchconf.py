"""The dispatch files in ``conf/``: units and depots, response plans (预案), duty roster.

Each file is TOML, validated once at start-up (and by ``dispatchd check-config``) into
frozen models.  Every mistake becomes one line naming the file, the plan (or unit), the key
path and what is wrong, e.g.::

    conf/plans/fire.toml: plan "fire-II": units[0].count: must be at least 1 (got 0)

and the whole set is raised as one :class:`~dispatch.config.ConfigError` (exit code 2).

``units.toml``::

    [[unit]]                 # one per unit
    id = "E-101"             # letters, digits, - _ . (unique)
    name = "东城消防站 1号水罐车"
    agency = "119"           # intake's agency codes: 110 119 120 122 emergency ...
    type = "fire_engine"     # what plans ask for
    station = "东城消防站"
    lat = 23.02
    lon = 113.75             # the home station; a unit starts there
    radio_id = "1001001"     # optional contacts: TETRA/DMR id, SIP URI, phone, satphone
    sip_uri = "sip:e101@ecc.example"
    phone = "+8613800000001"
    satphone = "+870776000001"
    capabilities = ["water", "hazmat"]

    [[depot]]                # resource depots (应急物资库)
    id = "D-1"
    name = "市应急物资储备库"
    agency = "emergency"
    lat = 23.0
    lon = 113.7
    stock = { sandbag = 20000, tent = 300 }

``plans/*.toml`` — see :class:`PlanSpec`; ``roster.toml`` — see :class:`OfficialSpec`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dispatch.config import ConfigError, DispatchSettings
from intake.model import Category, Grade

MAX_FILE_BYTES = 1024 * 1024
MAX_PLAN_FILES = 500

Ident = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Code = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")]
# Names go into mail headers and SMS: no control characters (newlines included).
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Label = Annotated[str, Field(max_length=128, pattern=_PRINTABLE)]
Phone = Annotated[str, Field(max_length=20, pattern=r"^(\+?[0-9]{3,19})?$")]
Lat = Annotated[float, Field(ge=-90, le=90)]
Lon = Annotated[float, Field(ge=-180, le=180)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class UnitSpec(_Strict):
    """A unit as ``units.toml`` describes it (its home station and contacts)."""

    id: Ident
    name: Label
    agency: Code
    type: Code
    station: Label = ""
    lat: Annotated[float, Field(ge=-90, le=90, strict=False)]
    lon: Annotated[float, Field(ge=-180, le=180, strict=False)]
    radio_id: Annotated[str | None, Field(max_length=32, pattern=r"^[0-9A-Za-z:._-]+$")] = None
    sip_uri: Annotated[str, Field(max_length=255, pattern=r"^(sips?:[^\s<>\"]+)?$")] = ""
    phone: Phone = ""
    satphone: Phone = ""
    capabilities: Annotated[tuple[Code, ...], Field(strict=False, max_length=32)] = ()


class DepotSpec(_Strict):
    """A resource depot and its stock."""

    id: Ident
    name: Label
    agency: Code
    lat: Annotated[float, Field(ge=-90, le=90, strict=False)]
    lon: Annotated[float, Field(ge=-180, le=180, strict=False)]
    stock: Annotated[dict[Code, Annotated[int, Field(ge=0, le=10**9)]],
                     Field(max_length=500)] = {}


class UnitsFile(_Strict):
    """The whole ``units.toml``."""

    unit: Annotated[tuple[UnitSpec, ...], Field(strict=False, max_length=10_000)] = ()
    depot: Annotated[tuple[DepotSpec, ...], Field(strict=False, max_length=1000)] = ()


class NotifySpec(_Strict):
    """Whom a plan notifies: the on-duty official of ``role`` at ``agency``."""

    agency: Code
    role: Code = "duty_officer"


class UnitNeed(_Strict):
    """Units of one type (and optionally with capabilities) a plan asks for."""

    type: Code
    count: Annotated[int, Field(ge=1, le=50)]
    capabilities: Annotated[tuple[Code, ...], Field(strict=False, max_length=8)] = ()


class ConferenceSpec(_Strict):
    """A conference the plan proposes to open, with whom to invite (SIP URIs or unit ids)."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    participants: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=255)], ...],
                            Field(strict=False, max_length=64)] = ()


class BroadcastSpec(_Strict):
    """A public broadcast the plan proposes ({address} and {incident} are filled in)."""

    template: Annotated[str, Field(min_length=1, max_length=1000)]
    radius_km: Annotated[float, Field(gt=0, le=200, strict=False)] = 3.0


class PlanSpec(_Strict):
    """One response plan (预案): when it applies and what it does.

    ``grade`` is the least severe grade that activates it (an incident of that grade or a
    more severe one); ``subtype`` omitted means any subtype of the category.
    """

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=_PRINTABLE)]
    category: Category
    subtype: Annotated[str | None, Field(max_length=64, pattern=r"^[a-z0-9_]+$")] = None
    grade: Grade
    notify: Annotated[tuple[NotifySpec, ...], Field(strict=False, max_length=64)] = ()
    units: Annotated[tuple[UnitNeed, ...], Field(strict=False, max_length=32)] = ()
    talkgroups: Annotated[tuple[Annotated[str, Field(pattern=r"^[0-9A-Za-z_.-]{1,32}$")], ...],
                          Field(strict=False, max_length=32)] = ()
    conference: ConferenceSpec | None = None
    broadcast: BroadcastSpec | None = None

    @field_validator("category", mode="before")
    @classmethod
    def _category(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return Category(value)
            except ValueError:
                names = ", ".join(c.value for c in Category)
                raise ValueError(f"unknown category {value!r} (one of {names})") from None
        return value

    @field_validator("grade", mode="before")
    @classmethod
    def _grade(cls, value: Any) -> Any:
        if isinstance(value, str | int) and not isinstance(value, bool):
            try:
                return Grade.parse(str(value))
            except ValueError:
                raise ValueError(f"unknown grade {value!r} (I, II, III or IV)") from None
        return value

    def matches(self, category: str | None, subtype: str | None, grade: int) -> bool:
        """True if an incident of this category/subtype at ``grade`` activates the plan."""
        return (category == self.category.value
                and (self.subtype is None or self.subtype == subtype)
                and grade <= self.grade.value)


class PlanFile(_Strict):
    """One file of ``plans/``: any number of ``[[plan]]`` tables."""

    plan: Annotated[tuple[dict[str, Any], ...], Field(strict=False, max_length=1000)] = ()


class OfficialSpec(_Strict):
    """An official on the duty roster (值班表): ``rank`` 1 is called first."""

    agency: Code
    role: Code = "duty_officer"
    rank: Annotated[int, Field(ge=1, le=100)] = 1
    person: Annotated[str, Field(min_length=1, max_length=64, pattern=_PRINTABLE)]
    email: Annotated[str, Field(max_length=254, pattern=r"^([^@\s<>]+@[^@\s<>]+)?$")] = ""
    phone: Phone = ""


class RosterFile(_Strict):
    """The whole ``roster.toml``."""

    official: Annotated[tuple[OfficialSpec, ...], Field(strict=False, max_length=10_000)] = ()


@dataclass(frozen=True)
class DispatchFiles:
    """Everything loaded from the dispatch files."""

    units: tuple[UnitSpec, ...] = ()
    depots: tuple[DepotSpec, ...] = ()
    plans: tuple[PlanSpec, ...] = ()
    officials: tuple[OfficialSpec, ...] = ()

    def plans_for(self, category: str | None, subtype: str | None,
                  grade: int) -> list[PlanSpec]:
        """Plans an incident of this kind and grade activates."""
        return [p for p in self.plans if p.matches(category, subtype, grade)]


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _errors(exc: ValidationError, prefix: str) -> list[str]:
    lines = []
    for err in exc.errors():
        where = _loc(tuple(err["loc"]))
        where = f"{where}: " if where else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"{prefix}{where}unknown key")
        elif err["type"] == "missing":
            lines.append(f"{prefix}{where}required key is missing")
        elif (err["type"] == "string_pattern_mismatch"
              and (err.get("ctx") or {}).get("pattern") == _PRINTABLE):
            lines.append(f"{prefix}{where}control characters (such as newlines) are not "
                         f"allowed (got {err['input']!r})")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{prefix}{where}{msg} (got {err['input']!r})")
    return lines


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        return None
    if len(raw) > MAX_FILE_BYTES:
        problems.append(f"{path}: file is larger than {MAX_FILE_BYTES} bytes")
        return None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text (byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: invalid TOML: {exc}")
    return None


def _load_units(path: Path, problems: list[str]) -> UnitsFile:
    data = _read_toml(path, problems)
    if data is None:
        return UnitsFile()
    try:
        units = UnitsFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_errors(exc, f"{path}: "))
        return UnitsFile()
    for kind, ids in (("unit", [u.id for u in units.unit]),
                      ("depot", [d.id for d in units.depot])):
        seen: set[str] = set()
        for i, ident in enumerate(ids):
            if ident in seen:
                problems.append(f"{path}: {kind}[{i}].id: {ident!r} is used twice")
            seen.add(ident)
    radios: set[str] = set()
    for i, unit in enumerate(units.unit):
        if unit.radio_id is not None and unit.radio_id in radios:
            problems.append(f"{path}: unit[{i}].radio_id: {unit.radio_id!r} is used twice")
        radios.add(unit.radio_id or "")
    return units


def _load_plans(directory: Path, problems: list[str]) -> list[PlanSpec]:
    if not directory.is_dir():
        problems.append(f"{directory}: plans_dir is not a directory")
        return []
    files = sorted(directory.glob("*.toml"))
    if len(files) > MAX_PLAN_FILES:
        problems.append(f"{directory}: more than {MAX_PLAN_FILES} plan files")
        return []
    plans: list[PlanSpec] = []
    where: dict[str, str] = {}
    for path in files:
        data = _read_toml(path, problems)
        if data is None:
            continue
        try:
            raw = PlanFile.model_validate(data)
        except ValidationError as exc:
            problems.extend(_errors(exc, f"{path}: "))
            continue
        for i, item in enumerate(raw.plan):
            name = item.get("id") if isinstance(item.get("id"), str) else f"plan[{i}]"
            try:
                plan = PlanSpec.model_validate(item)
            except ValidationError as exc:
                problems.extend(_errors(exc, f"{path}: plan {name!r}: "))
                continue
            if plan.id in where:
                problems.append(f"{path}: plan {plan.id!r}: id: already used in {where[plan.id]}")
                continue
            where[plan.id] = str(path)
            plans.append(plan)
    return plans


def _load_roster(path: Path, problems: list[str]) -> tuple[OfficialSpec, ...]:
    data = _read_toml(path, problems)
    if data is None:
        return ()
    try:
        return RosterFile.model_validate(data).official
    except ValidationError as exc:
        problems.extend(_errors(exc, f"{path}: "))
        return ()


def load_dispatch_files(settings: DispatchSettings,
                        base: Path | None = None) -> DispatchFiles:
    """Load and cross-check the units, plans and roster files; ``ConfigError`` lists mistakes.

    Relative paths are taken from ``base`` (default: the working directory).  A plan asking
    for a unit type no unit in ``units.toml`` has is a mistake only when units are loaded.
    """
    def resolve(name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() or base is None else base / path

    problems: list[str] = []
    units = _load_units(resolve(settings.units_file), problems) if settings.units_file \
        else UnitsFile()
    plans = _load_plans(resolve(settings.plans_dir), problems) if settings.plans_dir else []
    officials = _load_roster(resolve(settings.roster_file), problems) if settings.roster_file \
        else ()
    if units.unit:
        types = {u.type for u in units.unit}
        for plan in plans:
            for i, need in enumerate(plan.units):
                if need.type not in types:
                    problems.append(
                        f"{settings.plans_dir}: plan {plan.id!r}: units[{i}].type: no unit of "
                        f"type {need.type!r} in {settings.units_file} "
                        f"(types: {', '.join(sorted(types))})")
    if problems:
        raise ConfigError(problems)
    return DispatchFiles(units.unit, units.depot, tuple(plans), officials)


def plan_summary(plan: PlanSpec) -> Mapping[str, Any]:
    """A plan as plain data (API, check-config)."""
    return plan.model_dump(mode="json")
