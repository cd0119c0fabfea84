"""Loading and validating intake's rule files (TOML and CSV) into typed, frozen settings.

Each file is looked up first in the rules directory the caller passes (normally the
repository's or the site's ``conf/intake/``) and otherwise taken from the package defaults
in ``intake/defaults/``, so an installed daemon works with no configuration at all.  A file
found in the rules directory replaces the default file as a whole.

Every problem raises :class:`IntakeConfigError` naming the file, the key (or CSV line) and
what is wrong, so the daemon can stop with a message an administrator can act on.
"""

from __future__ import annotations

import csv
import io
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from intake.figures import FigureKind
from intake.model import Category, Grade
from intake.nb import ModelError, NaiveBayes

CATEGORIES_FILE = "categories.toml"
LEXICON_FILE = "lexicon.csv"
GRADING_FILE = "grading.toml"
CORRELATION_FILE = "correlation.toml"
GAZETTEER_FILE = "gazetteer.csv"
MODEL_FILE = "nb_model.json"
ALL_FILES = (
    CATEGORIES_FILE,
    LEXICON_FILE,
    GRADING_FILE,
    CORRELATION_FILE,
    GAZETTEER_FILE,
    MODEL_FILE,
)

#: Hard limit on a rule file, so a mistaken path (a log, a dump) fails fast and clearly.
MAX_FILE_BYTES = 4 * 1024 * 1024


class IntakeConfigError(ValueError):
    """A rule file is missing, unreadable or invalid."""

    def __init__(self, file: str, key: str, message: str) -> None:
        """Record where the problem is; the string form names file, key and problem."""
        super().__init__(f"{file}: {key}: {message}")
        self.file = file
        self.key = key
        self.message = message


@dataclass(frozen=True)
class AgencyDef:
    """An agency that can be concerned by an incident."""

    code: str
    name_zh: str
    name_en: str


@dataclass(frozen=True)
class SubtypeDef:
    """A subtype of one category, with the agencies concerned by default."""

    subtype_id: str
    category: Category
    name_zh: str
    name_en: str
    agencies: tuple[str, ...]
    priority: int


@dataclass(frozen=True)
class LexiconEntry:
    """One weighted term for one subtype."""

    lang: str
    term: str
    subtype: str
    weight: float


@dataclass(frozen=True)
class ModelSettings:
    """The statistical fallback: how much it counts and the model itself."""

    weight: float
    min_posterior: float
    min_known: int
    model: NaiveBayes


@dataclass(frozen=True)
class Redirect:
    """In a context named by any word of ``when``, ``source``'s score counts for ``target``."""

    when: tuple[str, ...]
    source: str
    target: str


@dataclass(frozen=True)
class CategoryRules:
    """Everything the classifier needs."""

    agencies: dict[str, AgencyDef]
    subtypes: dict[str, SubtypeDef]
    lexicon: tuple[LexiconEntry, ...]
    agency_triggers: dict[str, tuple[str, ...]]
    figure_agencies: dict[FigureKind, tuple[str, ...]]
    redirects: tuple[Redirect, ...] = ()
    model: ModelSettings | None = None


@dataclass(frozen=True)
class Scale:
    """A figure-based grading rule: least values for grades I, II and III."""

    name: str
    label: str
    figures: tuple[FigureKind, ...]
    grade_i: float
    grade_ii: float
    grade_iii: float

    def grade_for(self, value: float) -> Grade:
        """The grade this scale gives to ``value``."""
        if value >= self.grade_i:
            return Grade.I
        if value >= self.grade_ii:
            return Grade.II
        if value >= self.grade_iii:
            return Grade.III
        return Grade.IV


@dataclass(frozen=True)
class ModifierGroup:
    """Words naming a hazard or a sensitive place."""

    name: str
    label: str
    terms: tuple[str, ...]


@dataclass(frozen=True)
class GradingRules:
    """Scales, modifiers and surge settings."""

    scales: tuple[Scale, ...]
    modifiers_when_figures: bool
    modifier_raise: int
    modifier_cap: Grade
    modifier_groups: tuple[ModifierGroup, ...]
    surge_reports: int
    surge_window_minutes: float
    surge_cap: Grade


@dataclass(frozen=True)
class CorrelationRules:
    """Distance, time window and category compatibility for correlation."""

    distance_km: float
    window_minutes: float
    unlocated_joins: bool
    distance_by_category: dict[Category, float]
    compatible: dict[Category, frozenset[Category]]


@dataclass(frozen=True)
class Place:
    """A gazetteer entry: a district, town, street or landmark with coordinates."""

    place_id: str
    kind: str
    name_zh: str
    name_en: str
    aliases: tuple[str, ...]
    lat: float
    lon: float


@dataclass(frozen=True)
class IntakeRules:
    """All of intake's configuration, validated."""

    categories: CategoryRules
    grading: GradingRules
    correlation: CorrelationRules
    places: tuple[Place, ...]


def load_rules(rules_dir: Path | str | None = None) -> IntakeRules:
    """Load and validate every rule file, ``rules_dir`` overriding the package defaults."""
    directory = Path(rules_dir) if rules_dir is not None else None
    categories = _parse_categories(*_read(directory, CATEGORIES_FILE))
    lexicon = _parse_lexicon(*_read(directory, LEXICON_FILE), categories.subtypes)
    categories = replace(
        categories, lexicon=lexicon, model=_load_model(directory, categories_table(directory))
    )
    return IntakeRules(
        categories=categories,
        grading=_parse_grading(*_read(directory, GRADING_FILE)),
        correlation=_parse_correlation(*_read(directory, CORRELATION_FILE)),
        places=_parse_gazetteer(*_read(directory, GAZETTEER_FILE)),
    )


def categories_table(directory: Path | None) -> dict[str, Any]:
    """The ``[model]`` table of categories.toml (empty when absent)."""
    file, text = _read(directory, CATEGORIES_FILE)
    table = _toml(file, text).get("model", {})
    if not isinstance(table, dict):
        raise IntakeConfigError(file, "model", "expected a table")
    return table


def _load_model(directory: Path | None, table: dict[str, Any]) -> ModelSettings | None:
    """Load the naive Bayes fallback if ``[model] enabled = true``."""
    file = CATEGORIES_FILE
    if not table or not _get(file, table, "enabled", "model", bool):
        return None
    weight = float(_get(file, table, "weight", "model", (int, float)))
    floor = float(_get(file, table, "min_posterior", "model", (int, float)))
    min_known = _get(file, table, "min_known", "model", int)
    if weight < 0 or not 0 <= floor <= 1:
        raise IntakeConfigError(file, "model", "weight must be ≥ 0 and min_posterior in [0, 1]")
    model_file, text = _read(directory, MODEL_FILE)
    try:
        return ModelSettings(weight, floor, min_known, NaiveBayes.from_json(text))
    except ModelError as exc:
        raise IntakeConfigError(model_file, "-", str(exc)) from exc


def find_rules_dir(start: Path | str) -> Path | None:
    """The nearest ``conf/intake`` directory at or above ``start`` (a file or a directory)."""
    here = Path(start).resolve()
    for candidate in (here, *here.parents):
        found = candidate / "conf" / "intake"
        if found.is_dir():
            return found
    return None


def _read(directory: Path | None, name: str) -> tuple[str, str]:
    """(display name, text) of a rule file from ``directory`` or the package defaults."""
    if directory is not None and (directory / name).is_file():
        path = directory / name
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise IntakeConfigError(str(path), "-", f"larger than {MAX_FILE_BYTES} bytes")
            return str(path), path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise IntakeConfigError(str(path), "-", f"cannot read: {exc}") from exc
    resource = resources.files("intake").joinpath("defaults", name)
    return f"intake/defaults/{name}", resource.read_text(encoding="utf-8")


def _toml(file: str, text: str) -> dict[str, Any]:
    """Parse TOML or raise a config error naming the file."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise IntakeConfigError(file, "-", f"not valid TOML: {exc}") from exc


def _get(
    file: str, table: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...]
) -> Any:
    """``table[key]`` checked for presence and type; ``path`` names the key in errors."""
    if key not in table:
        raise IntakeConfigError(file, f"{path}.{key}" if path else key, "missing")
    value = table[key]
    if (
        isinstance(value, bool)
        and kind is not bool
        and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise IntakeConfigError(
            file, f"{path}.{key}", f"expected {_kind_name(kind)}, got a boolean"
        )
    if not isinstance(value, kind):
        raise IntakeConfigError(
            file,
            f"{path}.{key}" if path else key,
            f"expected {_kind_name(kind)}, got {type(value).__name__}",
        )
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    """Human name of an expected type."""
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "a table",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _str_list(file: str, table: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    """A list of strings under ``key``."""
    values = _get(file, table, key, path, list)
    for index, item in enumerate(values):
        if not isinstance(item, str) or not item.strip():
            raise IntakeConfigError(file, f"{path}.{key}[{index}]", "expected a non-empty string")
    return tuple(values)


def _category(file: str, key: str, value: str) -> Category:
    """Parse a category name or raise naming the allowed values."""
    try:
        return Category(value)
    except ValueError:
        allowed = ", ".join(c.value for c in Category)
        raise IntakeConfigError(
            file, key, f"unknown category {value!r}; use one of {allowed}"
        ) from None


def _grade(file: str, key: str, value: Any) -> Grade:
    """Parse a grade (I..IV) or raise."""
    try:
        return Grade.parse(str(value))
    except ValueError:
        raise IntakeConfigError(file, key, f"not a grade {value!r}; use I, II, III or IV") from None


def _parse_categories(file: str, text: str) -> CategoryRules:
    """Validate categories.toml (the lexicon is attached afterwards)."""
    data = _toml(file, text)
    agencies: dict[str, AgencyDef] = {}
    for code, table in _get(file, data, "agencies", "", dict).items():
        path = f"agencies.{code}"
        agencies[code] = AgencyDef(
            code, _get(file, table, "name_zh", path, str), _get(file, table, "name_en", path, str)
        )
    subtypes: dict[str, SubtypeDef] = {}
    for sub_id, table in _get(file, data, "subtypes", "", dict).items():
        path = f"subtypes.{sub_id}"
        category = _category(file, f"{path}.category", _get(file, table, "category", path, str))
        codes = _str_list(file, table, "agencies", path)
        for code in codes:
            if code not in agencies:
                raise IntakeConfigError(file, f"{path}.agencies", f"unknown agency {code!r}")
        subtypes[sub_id] = SubtypeDef(
            sub_id,
            category,
            _get(file, table, "name_zh", path, str),
            _get(file, table, "name_en", path, str),
            codes,
            _get(file, table, "priority", path, int) if "priority" in table else 0,
        )
    return CategoryRules(
        agencies,
        subtypes,
        (),
        _parse_triggers(file, data, agencies),
        _parse_figure_agencies(file, data, agencies),
        _parse_redirects(file, data, subtypes),
    )


def _parse_triggers(
    file: str, data: dict[str, Any], agencies: dict[str, AgencyDef]
) -> dict[str, tuple[str, ...]]:
    """[agency_triggers.<code>] terms = [...]."""
    triggers: dict[str, tuple[str, ...]] = {}
    for code, table in data.get("agency_triggers", {}).items():
        if code not in agencies:
            raise IntakeConfigError(file, f"agency_triggers.{code}", "unknown agency")
        triggers[code] = _str_list(file, table, "terms", f"agency_triggers.{code}")
    return triggers


def _parse_figure_agencies(
    file: str, data: dict[str, Any], agencies: dict[str, AgencyDef]
) -> dict[FigureKind, tuple[str, ...]]:
    """[figure_agencies] kind = [codes]."""
    figure_agencies: dict[FigureKind, tuple[str, ...]] = {}
    for kind_name in data.get("figure_agencies", {}):
        try:
            kind = FigureKind(kind_name)
        except ValueError:
            raise IntakeConfigError(
                file, f"figure_agencies.{kind_name}", "unknown figure kind"
            ) from None
        codes = _str_list(file, data["figure_agencies"], kind_name, "figure_agencies")
        for code in codes:
            if code not in agencies:
                raise IntakeConfigError(
                    file, f"figure_agencies.{kind_name}", f"unknown agency {code!r}"
                )
        figure_agencies[kind] = codes
    return figure_agencies


def _parse_redirects(
    file: str, data: dict[str, Any], subtypes: dict[str, SubtypeDef]
) -> tuple[Redirect, ...]:
    """[[redirects]] when = [...], from = subtype, to = subtype."""
    found: list[Redirect] = []
    tables = data.get("redirects", [])
    if not isinstance(tables, list):
        raise IntakeConfigError(file, "redirects", "expected [[redirects]] tables")
    for index, table in enumerate(tables):
        path = f"redirects[{index}]"
        source = _get(file, table, "from", path, str)
        target = _get(file, table, "to", path, str)
        for key, value in (("from", source), ("to", target)):
            if value not in subtypes:
                raise IntakeConfigError(file, f"{path}.{key}", f"unknown subtype {value!r}")
        found.append(Redirect(_str_list(file, table, "when", path), source, target))
    return tuple(found)


def _parse_lexicon(
    file: str, text: str, subtypes: dict[str, SubtypeDef]
) -> tuple[LexiconEntry, ...]:
    """Validate lexicon.csv: lang,term,subtype,weight with # comments and a header row."""
    entries: list[LexiconEntry] = []
    lines = [ln for ln in text.splitlines()]
    rows = csv.reader(io.StringIO("\n".join(lines)))
    for line_no, row in enumerate(rows, start=1):
        if (
            not row
            or row[0].lstrip().startswith("#")
            or row == ["lang", "term", "subtype", "weight"]
        ):
            continue
        key = f"line {line_no}"
        if len(row) != 4:
            raise IntakeConfigError(
                file, key, f"expected 4 columns lang,term,subtype,weight, got {len(row)}"
            )
        lang, term, subtype, weight_text = (cell.strip() for cell in row)
        if lang not in ("zh", "en"):
            raise IntakeConfigError(file, key, f"lang must be zh or en, got {lang!r}")
        if not term:
            raise IntakeConfigError(file, key, "empty term")
        if subtype not in subtypes:
            raise IntakeConfigError(file, key, f"unknown subtype {subtype!r} (see categories.toml)")
        try:
            weight = float(weight_text)
        except ValueError:
            raise IntakeConfigError(file, key, f"weight is not a number: {weight_text!r}") from None
        entries.append(LexiconEntry(lang, term if lang == "zh" else term.lower(), subtype, weight))
    if not entries:
        raise IntakeConfigError(file, "-", "no lexicon entries")
    return tuple(entries)


def _parse_grading(file: str, text: str) -> GradingRules:
    """Validate grading.toml."""
    data = _toml(file, text)
    scales: list[Scale] = []
    for name, table in _get(file, data, "scales", "", dict).items():
        path = f"scales.{name}"
        kinds: list[FigureKind] = []
        for kind_name in _str_list(file, table, "figures", path):
            try:
                kinds.append(FigureKind(kind_name))
            except ValueError:
                allowed = ", ".join(k.value for k in FigureKind)
                raise IntakeConfigError(
                    file, f"{path}.figures", f"unknown figure {kind_name!r}; use {allowed}"
                ) from None
        bounds = [float(_get(file, table, key, path, (int, float))) for key in ("I", "II", "III")]
        if not bounds[0] > bounds[1] > bounds[2] > 0:
            raise IntakeConfigError(file, path, "thresholds must satisfy I > II > III > 0")
        scales.append(Scale(name, str(table.get("label", name)), tuple(kinds), *bounds))
    mods = _get(file, data, "modifiers", "", dict)
    groups = tuple(
        ModifierGroup(
            name,
            str(table.get("label", name)),
            _str_list(file, table, "terms", f"modifiers.{name}"),
        )
        for name, table in mods.items()
        if isinstance(table, dict)
    )
    surge = _get(file, data, "surge", "", dict)
    reports = _get(file, surge, "reports", "surge", int)
    if reports < 2:
        raise IntakeConfigError(file, "surge.reports", "must be at least 2")
    return GradingRules(
        scales=tuple(scales),
        modifiers_when_figures=_get(file, mods, "apply_when_figures_stated", "modifiers", bool),
        modifier_raise=_get(file, mods, "raise_by", "modifiers", int),
        modifier_cap=_grade(file, "modifiers.cap", _get(file, mods, "cap", "modifiers", str)),
        modifier_groups=groups,
        surge_reports=reports,
        surge_window_minutes=float(_get(file, surge, "window_minutes", "surge", (int, float))),
        surge_cap=_grade(file, "surge.cap", _get(file, surge, "cap", "surge", str)),
    )


def _parse_correlation(file: str, text: str) -> CorrelationRules:
    """Validate correlation.toml."""
    data = _toml(file, text)
    distance = float(_get(file, data, "distance_km", "", (int, float)))
    window = float(_get(file, data, "window_minutes", "", (int, float)))
    if distance <= 0 or window <= 0:
        raise IntakeConfigError(file, "distance_km/window_minutes", "must be positive")
    by_category = {
        _category(file, f"distance_km_by_category.{name}", name): float(value)
        for name, value in data.get("distance_km_by_category", {}).items()
    }
    compatible: dict[Category, frozenset[Category]] = {c: frozenset({c}) for c in Category}
    for name in data.get("compatible", {}):
        category = _category(file, f"compatible.{name}", name)
        others = (
            _str_list(file, data["compatible"], name, "compatible")
            if data["compatible"][name]
            else ()
        )
        compatible[category] = frozenset(
            {category, *(_category(file, f"compatible.{name}", other) for other in others)}
        )
    return CorrelationRules(
        distance,
        window,
        bool(_get(file, data, "unlocated_joins", "", bool)),
        by_category,
        compatible,
    )


def _parse_gazetteer(file: str, text: str) -> tuple[Place, ...]:
    """Validate gazetteer.csv: id,kind,name_zh,name_en,aliases,lat,lon."""
    places: list[Place] = []
    seen: set[str] = set()
    reader = csv.reader(io.StringIO(text))
    for line_no, row in enumerate(reader, start=1):
        if not row or row[0].lstrip().startswith("#") or row[0] == "id":
            continue
        key = f"line {line_no}"
        if len(row) != 7:
            raise IntakeConfigError(
                file,
                key,
                f"expected 7 columns id,kind,name_zh,name_en,aliases,lat,lon, got {len(row)}",
            )
        place_id, kind, name_zh, name_en, aliases, lat_text, lon_text = (c.strip() for c in row)
        if place_id in seen:
            raise IntakeConfigError(file, key, f"duplicate id {place_id!r}")
        seen.add(place_id)
        if kind not in ("district", "town", "street", "landmark"):
            raise IntakeConfigError(
                file, key, f"kind must be district, town, street or landmark, got {kind!r}"
            )
        try:
            lat, lon = float(lat_text), float(lon_text)
        except ValueError:
            raise IntakeConfigError(file, key, "lat/lon are not numbers") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise IntakeConfigError(file, key, "lat/lon out of range")
        names = tuple(a.strip() for a in aliases.split("|") if a.strip())
        places.append(Place(place_id, kind, name_zh, name_en, names, lat, lon))
    return tuple(places)
