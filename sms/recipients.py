"""Importing the residents/subscribers registry from CSV.

Theory of operation: :func:`iter_registry` reads a CSV text stream one row at
a time (the file is never loaded whole) and yields, per data row, either a
:class:`Recipient`, a :class:`Duplicate` (the number was already seen; the
caller merges its groups into the first record), or a :class:`RowError`
(row number, column, what is wrong).  It keeps only a set of the numbers seen,
so a caller that persists in batches (the campaign engine) can import a
million rows in a few tens of megabytes.  :func:`import_registry` is the
convenience that collects everything into an :class:`ImportReport`, merging
duplicates' groups into the first record.

Limits are hard: file size (counted as characters read), row count, field
length and header size each have a named way out (:class:`RegistryLimitError`)
which stops the import, whatever ``stop_on_error`` says, because a file that
breaks a limit is not the registry the operator meant to load.

The opt-out list is honoured by marking records (``opt_out=True``); whether a
highest-severity alert overrides it is the caller's decision at targeting time
(:mod:`sms.targeting`), never this module's.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, TextIO

from .encoding import check_text
from .errors import EncodingError, MsisdnError, SmsError
from .msisdn import normalise_msisdn

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")

REQUIRED_COLUMNS = ("phone",)
KNOWN_COLUMNS = ("phone", "name", "language", "address", "lat", "lon", "district", "groups",
                 "opt_out")
GROUP_SEPARATOR = ";"
_TRUE = frozenset({"1", "true", "yes", "y", "是", "t"})
_FALSE = frozenset({"", "0", "false", "no", "n", "否", "f"})
_LANGUAGE_ALIASES: dict[str, Language] = {
    "zh": "zh", "zh-cn": "zh", "zh_cn": "zh", "cn": "zh", "中文": "zh", "chinese": "zh",
    "en": "en", "en-us": "en", "en_us": "en", "en-gb": "en", "english": "en", "英文": "en",
}


class RegistryError(SmsError, ValueError):
    """The registry file cannot be imported."""


class RegistryLimitError(RegistryError):
    """A hard limit (file size, rows, field length, header) was exceeded; the import stops."""


class RegistryRowError(RegistryError):
    """A row is invalid and the import was asked to stop on the first error."""

    def __init__(self, error: RowError) -> None:
        """Carry the :class:`RowError` that stopped the import."""
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """Hard limits on one import; the defaults fit a city of a few million."""

    max_chars: int = 512 * 1024 * 1024
    max_rows: int = 5_000_000
    max_field_chars: int = 512
    max_line_chars: int = 64 * 1024
    max_groups: int = 32
    max_columns: int = 64
    max_errors_kept: int = 10_000


@dataclass(frozen=True, slots=True)
class Recipient:
    """One resident or subscriber; ``msisdn`` is E.164 and unique within a registry."""

    msisdn: str
    name: str = ""
    language: Language = "zh"
    address: str = ""
    lat: float | None = None
    lon: float | None = None
    district: str = ""
    groups: frozenset[str] = field(default_factory=frozenset)
    opt_out: bool = False
    row: int = 0


@dataclass(frozen=True, slots=True)
class RowError:
    """Why data row ``row`` (1-based, header excluded) was refused; ``column`` may be ''."""

    row: int
    column: str
    message: str

    def __str__(self) -> str:
        """``row 12, column lat: ...`` — the form shown to the operator."""
        where = f"row {self.row}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Row ``row`` repeats ``msisdn`` first seen at ``first_row``; its groups are to be merged."""

    msisdn: str
    first_row: int
    row: int
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import produced: recipients in file order, merged duplicates and row errors.

    ``errors_dropped`` counts errors beyond ``ImportLimits.max_errors_kept``.
    """

    imported: tuple[Recipient, ...]
    merged: tuple[Duplicate, ...]
    errors: tuple[RowError, ...]
    rows_read: int
    errors_dropped: int = 0


class _LimitedReader:
    """A line source that refuses to read past ``limit`` characters or one over-long line.

    A stream with ``readline`` is read at most ``max_line`` characters at a
    time, so a file without newlines cannot make us buffer all of it.
    """

    def __init__(self, inner: TextIO | Iterable[str], limit: int, max_line: int) -> None:
        self._readline = getattr(inner, "readline", None)
        self._lines = None if self._readline is not None else iter(inner)
        self._limit = limit
        self._max_line = max_line
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._readline is not None:
            line: str = self._readline(self._max_line + 1)
            if not line:
                raise StopIteration
        else:
            assert self._lines is not None
            line = next(self._lines)
        if len(line) > self._max_line:
            raise RegistryLimitError(f"a line is longer than {self._max_line} characters")
        self.count += len(line)
        if self.count > self._limit:
            raise RegistryLimitError(f"registry is larger than {self._limit} characters")
        return line


def _parse_bool(text: str) -> bool | None:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def _parse_coordinate(text: str, low: float, high: float) -> float | None:
    """Float in [low, high], or None for an empty cell; ValueError otherwise."""
    if not text.strip():
        return None
    value = float(text)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{text!r} is outside {low}..{high}")
    return value


class _RowParser:
    """Turns one CSV dict row into a Recipient or a RowError (no state across rows)."""

    def __init__(self, limits: ImportLimits, default_country: str,
                 opt_out: frozenset[str]) -> None:
        self._limits = limits
        self._country = default_country
        self._opt_out = opt_out
        # Interning shared values keeps a million records small: most residents
        # share a handful of districts and group combinations.
        self._districts: dict[str, str] = {}
        self._groups: dict[frozenset[str], frozenset[str]] = {}

    def _check_fields(self, row_no: int, row: dict[str, str]) -> RowError | None:
        """Field length and control characters; the clean row is checked in one pass."""
        limit = self._limits.max_field_chars
        try:
            check_text("".join(row.values()))
            if max(map(len, row.values()), default=0) <= limit:
                return None
        except EncodingError:
            pass
        for column, value in row.items():
            if len(value) > limit:
                return RowError(row_no, column, f"longer than {limit} characters")
            try:
                check_text(value)
            except EncodingError as exc:
                return RowError(row_no, column, str(exc))
        return None

    def parse(self, row_no: int, row: dict[str, str]) -> Recipient | RowError:
        """Validate every column of ``row``; the first problem found is reported."""
        problem = self._check_fields(row_no, row)
        if problem is not None:
            return problem
        try:
            msisdn = normalise_msisdn(row.get("phone", ""), self._country)
        except MsisdnError as exc:
            return RowError(row_no, "phone", exc.reason)
        raw_lang = row.get("language", "").strip().lower()
        language = _LANGUAGE_ALIASES.get(raw_lang or "zh")
        if language is None:
            return RowError(row_no, "language", f"{raw_lang!r} is not zh or en")
        coords: list[float | None] = []
        for column, low, high in (("lat", -90.0, 90.0), ("lon", -180.0, 180.0)):
            try:
                coords.append(_parse_coordinate(row.get(column, ""), low, high))
            except ValueError as exc:
                return RowError(row_no, column, f"not a coordinate: {exc}")
        if (coords[0] is None) != (coords[1] is None):
            return RowError(row_no, "lat" if coords[0] is None else "lon",
                            "lat and lon must both be given or both be empty")
        groups = frozenset(g.strip() for g in row.get("groups", "").split(GROUP_SEPARATOR)
                           if g.strip())
        if len(groups) > self._limits.max_groups:
            return RowError(row_no, "groups", f"more than {self._limits.max_groups} groups")
        district = row.get("district", "").strip()
        opted = _parse_bool(row.get("opt_out", ""))
        if opted is None:
            return RowError(row_no, "opt_out", f"{row['opt_out']!r} is not a yes/no value")
        return Recipient(
            msisdn=msisdn, name=row.get("name", "").strip(), language=language,
            address=row.get("address", "").strip(), lat=coords[0], lon=coords[1],
            district=self._districts.setdefault(district, district),
            groups=self._groups.setdefault(groups, groups),
            opt_out=opted or msisdn in self._opt_out, row=row_no)


def _read_header(reader: Iterator[list[str]], limits: ImportLimits) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise RegistryError("registry is empty (no header row)") from None
    if len(header) > limits.max_columns:
        raise RegistryLimitError(f"header has {len(header)} columns, limit {limits.max_columns}")
    names = [h.strip().lstrip("\ufeff").strip().lower() for h in header]
    for required in REQUIRED_COLUMNS:
        if required not in names:
            raise RegistryError(f"header has no {required!r} column (found {names})")
    seen: set[str] = set()
    for name in names:
        if name in seen and name:
            raise RegistryError(f"header repeats column {name!r}")
        seen.add(name)
    return names


def normalise_opt_out(numbers: Iterable[str], default_country: str = "86") -> frozenset[str]:
    """E.164 forms of an opt-out list; raises :class:`MsisdnError` naming a bad entry."""
    return frozenset(normalise_msisdn(n, default_country) for n in numbers if n.strip())


def iter_registry(stream: TextIO | Iterable[str], *, limits: ImportLimits = ImportLimits(),
                  default_country: str = "86", opt_out: Collection[str] = frozenset(),
                  stop_on_error: bool = False) -> Iterator[Recipient | Duplicate | RowError]:
    """Stream the registry in ``stream`` (text, UTF-8 decoded; a BOM is ignored).

    ``opt_out`` holds E.164 numbers (see :func:`normalise_opt_out`) marked
    ``opt_out=True`` whatever their row says.  With ``stop_on_error`` the first
    bad row raises :class:`RegistryRowError`; limits always raise
    :class:`RegistryLimitError`.
    """
    source = _LimitedReader(stream, limits.max_chars, limits.max_line_chars)
    reader = csv.reader(source, strict=True)
    try:
        names = _read_header(reader, limits)
        parser = _RowParser(limits, default_country, frozenset(opt_out))
        first_row: dict[str, int] = {}
        for row_no, cells in enumerate(reader, start=1):
            if row_no > limits.max_rows:
                raise RegistryLimitError(f"registry has more than {limits.max_rows} rows")
            if not any(c.strip() for c in cells):
                continue  # blank lines (often at the end of hand-edited files)
            result = _check_row(row_no, names, cells, limits, parser)
            if isinstance(result, Recipient):
                first = first_row.setdefault(result.msisdn, row_no)
                if first != row_no:
                    yield Duplicate(result.msisdn, first, row_no, result.groups)
                    continue
            elif stop_on_error:
                raise RegistryRowError(result)
            yield result
    except csv.Error as exc:
        raise RegistryError(f"line {reader.line_num}: malformed CSV: {exc}") from exc


def _check_row(row_no: int, names: list[str], cells: list[str], limits: ImportLimits,
               parser: _RowParser) -> Recipient | RowError:
    if len(cells) > len(names):
        return RowError(row_no, "", f"{len(cells)} cells but the header has {len(names)}")
    if len(cells) > limits.max_columns:
        return RowError(row_no, "", f"more than {limits.max_columns} cells")
    row = {name: cell for name, cell in zip(names, cells, strict=False) if name}
    return parser.parse(row_no, row)


def import_registry(stream: TextIO | Iterable[str], *, limits: ImportLimits = ImportLimits(),
                    default_country: str = "86", opt_out: Collection[str] = frozenset(),
                    stop_on_error: bool = False) -> ImportReport:
    """Import the whole registry into memory (see :func:`iter_registry` for arguments).

    Duplicates' groups are merged into the first record for that number; the
    first row's other columns win.
    """
    records: dict[str, Recipient] = {}
    merged: list[Duplicate] = []
    errors: list[RowError] = []
    dropped = 0
    rows = 0
    for item in iter_registry(stream, limits=limits, default_country=default_country,
                              opt_out=opt_out, stop_on_error=stop_on_error):
        rows += 1
        if isinstance(item, Recipient):
            records[item.msisdn] = item
        elif isinstance(item, Duplicate):
            merged.append(item)
            first = records[item.msisdn]
            if not item.groups <= first.groups:
                records[item.msisdn] = replace(first, groups=first.groups | item.groups)
        elif len(errors) < limits.max_errors_kept:
            errors.append(item)
        else:
            dropped += 1
    return ImportReport(tuple(records.values()), tuple(merged), tuple(errors), rows, dropped)


def open_registry(path: str, limits: ImportLimits = ImportLimits()) -> TextIO:
    """Open a registry file as UTF-8 (BOM stripped), refusing one larger than the limit."""
    size = os.path.getsize(path)
    if size > limits.max_chars * 4:  # 4 bytes per character at most in UTF-8
        raise RegistryLimitError(f"{path} is {size} bytes, too large to be a registry")
    return open(path, encoding="utf-8-sig", newline="")
