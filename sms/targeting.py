"""Choosing who receives a broadcast: areas, districts, groups and explicit numbers.

Theory of operation
-------------------
A :class:`RecipientIndex` is built once from the registry.  Residents with
coordinates go into a :class:`SpatialIndex`: a uniform grid over their bounding
box (about :data:`POINTS_PER_CELL` residents per cell), stored as the point
indices sorted by cell number plus a ``cell_start`` offset array, so the
residents of one grid row between two columns are one contiguous slice.  An
area query takes the grid rows under the area's bounding box, concatenates
those slices (the candidates) and runs an exact, vectorised test on them:
even-odd ray casting per polygon (holes included), haversine distance for a
circle.  Coordinates are degrees; x is longitude, y latitude, as in GeoJSON.

Areas must not cross the antimeridian (no emergency area in China does), and
a point exactly on a polygon edge may fall either side (ray-casting's
half-open rule): callers who care about the boundary draw the area a little
larger.

Targets (:class:`CircleTarget`, :class:`AreaTarget`, :class:`DistrictTarget`,
:class:`GroupTarget`, :class:`NumbersTarget`) are frozen values; a campaign is
the union of several.  :meth:`RecipientIndex.resolve` returns a
:class:`Resolution` (registry positions, numbers outside the registry, and
how many opted-out residents were left out); :meth:`RecipientIndex.preview` is
the same without the position array, for the approval screen.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .errors import MsisdnError, SmsError
from .msisdn import normalise_msisdn
from .recipients import Recipient

FloatArray: TypeAlias = npt.NDArray[np.float64]
IndexArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius
METRES_PER_DEGREE_LAT = math.pi * EARTH_RADIUS_M / 180.0
POINTS_PER_CELL = 16
MAX_GRID_CELLS = 4_000_000
DEFAULT_MAX_VERTICES = 10_000
MAX_RADIUS_M = 200_000.0
MAX_TARGETS = 64
MAX_EXPLICIT_NUMBERS = 100_000


class TargetError(SmsError, ValueError):
    """A target is invalid (bad geometry, unknown district, bad number)."""


# A ring is an (n, 2) array of (lon, lat), closed (first row == last row).
Ring: TypeAlias = FloatArray


@dataclass(frozen=True, slots=True, eq=False)
class Polygon:
    """An exterior ring and its holes (each an (n, 2) closed array of lon, lat)."""

    exterior: Ring
    holes: tuple[Ring, ...] = ()

    def bbox(self) -> tuple[float, float, float, float]:
        """(min_lon, min_lat, max_lon, max_lat) of the exterior ring."""
        lo = self.exterior.min(axis=0)
        hi = self.exterior.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


@dataclass(frozen=True, slots=True, eq=False)
class Area:
    """A union of polygons (a GeoJSON Polygon is one, a MultiPolygon several)."""

    polygons: tuple[Polygon, ...]

    def bbox(self) -> tuple[float, float, float, float]:
        """Bounding box of all the polygons."""
        boxes = [p.bbox() for p in self.polygons]
        return (min(b[0] for b in boxes), min(b[1] for b in boxes),
                max(b[2] for b in boxes), max(b[3] for b in boxes))


def _ring(raw: Any, where: str, budget: list[int]) -> Ring:
    """Validate one GeoJSON linear ring; ``budget`` is the vertices still allowed."""
    if not isinstance(raw, list) or len(raw) < 4:
        raise TargetError(f"{where}: a ring needs at least 4 positions (closed triangle)")
    budget[0] -= len(raw)
    if budget[0] < 0:
        raise TargetError(f"{where}: too many vertices")
    points: list[tuple[float, float]] = []
    for i, pos in enumerate(raw):
        if (not isinstance(pos, list) or len(pos) not in (2, 3)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pos)):
            raise TargetError(f"{where}[{i}]: a position is [lon, lat]")
        lon, lat = float(pos[0]), float(pos[1])
        if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
            raise TargetError(f"{where}[{i}]: longitude {pos[0]!r} outside -180..180")
        if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
            raise TargetError(f"{where}[{i}]: latitude {pos[1]!r} outside -90..90")
        points.append((lon, lat))
    if points[0] != points[-1]:
        raise TargetError(f"{where}: ring is not closed (first and last positions differ)")
    ring = np.array(points, dtype=np.float64)
    if np.ptp(ring[:, 0]) == 0.0 or np.ptp(ring[:, 1]) == 0.0:
        raise TargetError(f"{where}: ring has no area")
    if np.ptp(ring[:, 0]) > 180.0:
        raise TargetError(f"{where}: ring spans more than 180 degrees of longitude "
                          "(antimeridian crossing is not supported)")
    return ring


def _polygon(raw: Any, where: str, budget: list[int]) -> Polygon:
    if not isinstance(raw, list) or not raw:
        raise TargetError(f"{where}: a polygon is a non-empty list of rings")
    rings = [_ring(r, f"{where}[{i}]", budget) for i, r in enumerate(raw)]
    return Polygon(rings[0], tuple(rings[1:]))


def parse_geometry(obj: Any, *, max_vertices: int = DEFAULT_MAX_VERTICES) -> Area:
    """Validate a GeoJSON Polygon or MultiPolygon geometry (RFC 7946) into an :class:`Area`.

    Rings must be closed and have at least four positions; longitudes and
    latitudes must be in range; the whole geometry has at most ``max_vertices``
    positions.  Raises :class:`TargetError` naming the offending ring/position.
    """
    if not isinstance(obj, Mapping):
        raise TargetError("geometry is not a JSON object")
    kind = obj.get("type")
    coords = obj.get("coordinates")
    budget = [max_vertices]
    if kind == "Polygon":
        return Area((_polygon(coords, "Polygon", budget),))
    if kind == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise TargetError("MultiPolygon: coordinates must be a non-empty list of polygons")
        return Area(tuple(_polygon(p, f"MultiPolygon[{i}]", budget)
                          for i, p in enumerate(coords)))
    raise TargetError(f"geometry type {kind!r} is not Polygon or MultiPolygon")


def points_in_ring(lon: FloatArray, lat: FloatArray, ring: Ring) -> BoolArray:
    """Even-odd ray casting: True where the point is inside ``ring`` (vectorised)."""
    inside = np.zeros(lon.shape, dtype=np.bool_)
    xs, ys = ring[:, 0], ring[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(len(ring) - 1):
            x1, y1, x2, y2 = xs[k], ys[k], xs[k + 1], ys[k + 1]
            crosses = (y1 > lat) != (y2 > lat)
            # Where crosses is False the division may be 0/0; those lanes are masked.
            x_at = (x2 - x1) * (lat - y1) / (y2 - y1) + x1
            inside ^= crosses & (lon < x_at)
    return inside


def points_in_area(lon: FloatArray, lat: FloatArray, area: Area) -> BoolArray:
    """True where the point is inside any polygon of ``area`` (and outside its holes)."""
    result = np.zeros(lon.shape, dtype=np.bool_)
    for poly in area.polygons:
        inside = points_in_ring(lon, lat, poly.exterior)
        for hole in poly.holes:
            inside &= ~points_in_ring(lon, lat, hole)
        result |= inside
    return result


def haversine_m(lat1: float, lon1: float, lat: FloatArray, lon: FloatArray) -> FloatArray:
    """Great-circle distance in metres from (lat1, lon1) to each point (vectorised)."""
    p1, p2 = math.radians(lat1), np.radians(lat)
    dphi = p2 - p1
    dlmb = np.radians(lon) - math.radians(lon1)
    h = np.sin(dphi / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    result: FloatArray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
    return result


def circle_bbox(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """A (min_lon, min_lat, max_lon, max_lat) box that contains the circle."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M) * 1.001
    coslat = math.cos(math.radians(min(89.0, abs(lat) + dlat)))
    dlon = min(180.0, dlat / max(coslat, 1e-6))
    return lon - dlon, lat - dlat, lon + dlon, lat + dlat


def circle_ring(lat: float, lon: float, radius_m: float, vertices: int = 64) -> Ring:
    """A closed ring approximating the circle (for maps and CAP export of a union)."""
    angles = np.linspace(0.0, 2 * math.pi, vertices + 1)
    dlat = np.degrees(radius_m / EARTH_RADIUS_M) * np.cos(angles)
    dlon = np.degrees(radius_m / EARTH_RADIUS_M) * np.sin(angles) / math.cos(math.radians(lat))
    ring = np.column_stack([lon + dlon, lat + dlat])
    ring[-1] = ring[0]
    return ring


class SpatialIndex:
    """A uniform grid over points, with exact area and circle queries.

    Built from latitude and longitude arrays (degrees); queries return the
    sorted positions of the points inside.
    """

    def __init__(self, lat: npt.ArrayLike, lon: npt.ArrayLike,
                 points_per_cell: int = POINTS_PER_CELL) -> None:
        """Index the points; ``lat`` and ``lon`` must be equal-length finite arrays."""
        self.lat: FloatArray = np.ascontiguousarray(lat, dtype=np.float64)
        self.lon: FloatArray = np.ascontiguousarray(lon, dtype=np.float64)
        if self.lat.shape != self.lon.shape or self.lat.ndim != 1:
            raise TargetError("lat and lon must be 1-D arrays of the same length")
        if not (np.isfinite(self.lat).all() and np.isfinite(self.lon).all()):
            raise TargetError("coordinates must be finite")
        n = len(self.lat)
        if n:
            self.x0, self.y0 = float(self.lon.min()), float(self.lat.min())
            width = max(float(self.lon.max()) - self.x0, 1e-9)
            height = max(float(self.lat.max()) - self.y0, 1e-9)
        else:
            self.x0 = self.y0 = 0.0
            width = height = 1.0
        cells = min(MAX_GRID_CELLS, max(1, n // max(1, points_per_cell)))
        # Square-ish cells in degrees keep the candidate set tight for round areas.
        side = math.sqrt(width * height / cells)
        self.nx = max(1, min(cells, math.ceil(width / side)))
        self.ny = max(1, min(cells, math.ceil(height / side)))
        self.cw, self.ch = width / self.nx * (1 + 1e-12), height / self.ny * (1 + 1e-12)
        cell = self._cell_y(self.lat) * self.nx + self._cell_x(self.lon)
        self.order: IndexArray = np.argsort(cell, kind="stable").astype(np.int64)
        counts = np.bincount(cell, minlength=self.nx * self.ny)
        self.cell_start: IndexArray = np.concatenate(
            [np.zeros(1, dtype=np.int64), np.cumsum(counts, dtype=np.int64)])

    def __len__(self) -> int:
        """Number of indexed points."""
        return len(self.lat)

    def _cell_x(self, lon: FloatArray) -> IndexArray:
        cx = np.floor((lon - self.x0) / self.cw).astype(np.int64)
        return np.clip(cx, 0, self.nx - 1)

    def _cell_y(self, lat: FloatArray) -> IndexArray:
        cy = np.floor((lat - self.y0) / self.ch).astype(np.int64)
        return np.clip(cy, 0, self.ny - 1)

    def candidates(self, bbox: tuple[float, float, float, float]) -> IndexArray:
        """Positions of every point in the grid cells touching ``bbox`` (a superset)."""
        min_lon, min_lat, max_lon, max_lat = bbox
        if not len(self) or max_lon < self.x0 or max_lat < self.y0:
            return np.zeros(0, dtype=np.int64)
        cx0, cx1 = (int(v) for v in self._cell_x(np.array([min_lon, max_lon])))
        cy0, cy1 = (int(v) for v in self._cell_y(np.array([min_lat, max_lat])))
        rows = np.arange(cy0, cy1 + 1, dtype=np.int64) * self.nx
        starts = self.cell_start[rows + cx0]
        ends = self.cell_start[rows + cx1 + 1]
        total = int((ends - starts).sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        # Build the concatenated slice positions without a Python loop per row.
        lengths = ends - starts
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        picked: IndexArray = self.order[np.arange(total, dtype=np.int64) + offsets]
        return picked

    def in_area(self, area: Area) -> IndexArray:
        """Sorted positions of the points inside ``area``."""
        cand = self.candidates(area.bbox())
        mask = points_in_area(self.lon[cand], self.lat[cand], area)
        return np.sort(cand[mask])

    def in_circle(self, lat: float, lon: float, radius_m: float) -> IndexArray:
        """Sorted positions of the points within ``radius_m`` metres of (lat, lon)."""
        cand = self.candidates(circle_bbox(lat, lon, radius_m))
        mask = haversine_m(lat, lon, self.lat[cand], self.lon[cand]) <= radius_m
        return np.sort(cand[mask])


@dataclass(frozen=True, slots=True)
class CircleTarget:
    """Everyone within ``radius_m`` metres of (lat, lon)."""

    lat: float
    lon: float
    radius_m: float

    def __post_init__(self) -> None:
        """Refuse out-of-range centres and radii."""
        if not (math.isfinite(self.lat) and -90 <= self.lat <= 90
                and math.isfinite(self.lon) and -180 <= self.lon <= 180):
            raise TargetError(f"circle centre ({self.lat}, {self.lon}) is out of range")
        if not (math.isfinite(self.radius_m) and 0 < self.radius_m <= MAX_RADIUS_M):
            raise TargetError(f"circle radius {self.radius_m} m is not in 0..{MAX_RADIUS_M:g}")


@dataclass(frozen=True, slots=True, eq=False)
class AreaTarget:
    """Everyone inside a polygon area (see :func:`parse_geometry`)."""

    area: Area
    label: str = ""


@dataclass(frozen=True, slots=True)
class DistrictTarget:
    """Everyone in an administrative district, by name or code."""

    key: str


@dataclass(frozen=True, slots=True)
class GroupTarget:
    """Everyone in a named group (e.g. 三防责任人)."""

    name: str


@dataclass(frozen=True, slots=True)
class NumbersTarget:
    """An explicit list of numbers (normalised to E.164 on construction)."""

    msisdns: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Iterable[str], default_country: str = "86") -> NumbersTarget:
        """Normalise every number; :class:`TargetError` names the first bad one."""
        out: list[str] = []
        for i, number in enumerate(raw):
            if i >= MAX_EXPLICIT_NUMBERS:
                raise TargetError(f"more than {MAX_EXPLICIT_NUMBERS} explicit numbers")
            try:
                out.append(normalise_msisdn(number, default_country))
            except MsisdnError as exc:
                raise TargetError(f"number {i + 1}: {exc}") from exc
        return cls(tuple(dict.fromkeys(out)))


Target: TypeAlias = CircleTarget | AreaTarget | DistrictTarget | GroupTarget | NumbersTarget


@dataclass(frozen=True, slots=True)
class District:
    """An administrative district: code, names and boundary."""

    code: str
    name: str
    name_en: str
    area: Area


class DistrictCatalogue:
    """Districts loaded from a GeoJSON FeatureCollection, found by code or either name."""

    def __init__(self, districts: Iterable[District]) -> None:
        """Index the districts; duplicate keys are refused."""
        self._by_key: dict[str, District] = {}
        for d in districts:
            for key in {d.code, d.name, d.name_en.casefold()} - {""}:
                if key in self._by_key:
                    raise TargetError(f"district key {key!r} is used twice")
                self._by_key[key] = d

    @classmethod
    def from_geojson(cls, obj: Mapping[str, Any], *,
                     max_vertices: int = DEFAULT_MAX_VERTICES) -> DistrictCatalogue:
        """Features need ``properties.code`` and ``properties.name`` (``name_en`` optional)."""
        if obj.get("type") != "FeatureCollection" or not isinstance(obj.get("features"), list):
            raise TargetError("district file is not a GeoJSON FeatureCollection")
        districts = []
        for i, feature in enumerate(obj["features"]):
            props = feature.get("properties") if isinstance(feature, dict) else None
            if not isinstance(props, dict) or not isinstance(props.get("code"), str) \
                    or not isinstance(props.get("name"), str):
                raise TargetError(f"feature {i}: properties.code and properties.name are needed")
            try:
                area = parse_geometry(feature.get("geometry"), max_vertices=max_vertices)
            except TargetError as exc:
                raise TargetError(f"feature {i} ({props['name']}): {exc}") from exc
            districts.append(District(props["code"], props["name"],
                                      str(props.get("name_en", "")), area))
        return cls(districts)

    def get(self, key: str) -> District:
        """The district with this code, Chinese name or English name (case-insensitive)."""
        found = self._by_key.get(key.strip()) or self._by_key.get(key.strip().casefold())
        if found is None:
            raise TargetError(f"unknown district {key!r}")
        return found

    def __iter__(self) -> Any:
        """Each district once."""
        return iter({id(d): d for d in self._by_key.values()}.values())


@dataclass(frozen=True, slots=True, eq=False)
class Resolution:
    """Who a set of targets reaches, each number once.

    ``positions`` are sorted indices into the registry sequence the index was
    built from; ``extra_msisdns`` are explicit numbers not in the registry;
    ``per_target`` counts each target's reach before de-duplication and
    opt-out; ``opted_out`` is how many residents were left out for opting out.
    """

    positions: IndexArray
    extra_msisdns: tuple[str, ...]
    per_target: tuple[int, ...]
    opted_out: int

    @property
    def count(self) -> int:
        """Messages to send: distinct registry residents plus extra numbers."""
        return len(self.positions) + len(self.extra_msisdns)


@dataclass(frozen=True, slots=True)
class Preview:
    """What the approver sees before sending: totals, per target and per language."""

    count: int
    per_target: tuple[int, ...]
    opted_out: int
    unregistered_numbers: int
    by_language: tuple[tuple[str, int], ...]


class RecipientIndex:
    """The registry, indexed for targeting; built once, queried for each campaign."""

    def __init__(self, recipients: Sequence[Recipient],
                 districts: DistrictCatalogue | None = None) -> None:
        """Index ``recipients`` (positions refer to this sequence) and a district catalogue."""
        self.recipients = recipients
        self.districts = districts or DistrictCatalogue(())
        n = len(recipients)
        lat = np.full(n, np.nan)
        lon = np.full(n, np.nan)
        self.opt_out: BoolArray = np.zeros(n, dtype=np.bool_)
        self.language_zh: BoolArray = np.zeros(n, dtype=np.bool_)
        groups: dict[str, list[int]] = defaultdict(list)
        by_district: dict[str, list[int]] = defaultdict(list)
        self.by_msisdn: dict[str, int] = {}
        for i, r in enumerate(recipients):
            if r.msisdn in self.by_msisdn:
                raise TargetError(f"{r.msisdn} appears twice in the registry")
            self.by_msisdn[r.msisdn] = i
            if r.lat is not None and r.lon is not None:
                lat[i], lon[i] = r.lat, r.lon
            self.opt_out[i] = r.opt_out
            self.language_zh[i] = r.language == "zh"
            for g in r.groups:
                groups[g].append(i)
            if r.district:
                by_district[r.district].append(i)
        located = np.flatnonzero(~np.isnan(lat))
        self._geo_pos: IndexArray = located.astype(np.int64)
        self.spatial = SpatialIndex(lat[located], lon[located])
        self.by_group = {g: np.array(v, dtype=np.int64) for g, v in groups.items()}
        self.by_district = {d: np.array(v, dtype=np.int64) for d, v in by_district.items()}

    def _positions(self, target: Target) -> tuple[IndexArray, tuple[str, ...]]:
        empty = np.zeros(0, dtype=np.int64)
        if isinstance(target, CircleTarget):
            return self._geo_pos[self.spatial.in_circle(target.lat, target.lon,
                                                        target.radius_m)], ()
        if isinstance(target, AreaTarget):
            return self._geo_pos[self.spatial.in_area(target.area)], ()
        if isinstance(target, DistrictTarget):
            # Inside the boundary, or registered in the district by name or code:
            # a resident without coordinates must still be reached.
            d = self.districts.get(target.key)
            inside = self._geo_pos[self.spatial.in_area(d.area)]
            listed = np.concatenate([self.by_district.get(d.name, empty),
                                     self.by_district.get(d.code, empty)])
            if not len(listed):
                return inside, ()
            return np.union1d(inside, listed), ()
        if isinstance(target, GroupTarget):
            if target.name not in self.by_group:
                raise TargetError(f"no resident is in group {target.name!r}")
            return self.by_group[target.name], ()
        known = [self.by_msisdn[m] for m in target.msisdns if m in self.by_msisdn]
        extra = tuple(m for m in target.msisdns if m not in self.by_msisdn)
        return np.unique(np.array(known, dtype=np.int64)), extra

    def resolve(self, targets: Sequence[Target], *, override_opt_out: bool = False,
                opt_out: frozenset[str] = frozenset()) -> Resolution:
        """The union of ``targets``, each resident once.

        Opted-out residents are left out unless ``override_opt_out`` (the
        caller's decision, for the highest-severity alerts); ``opt_out`` also
        applies to explicit numbers outside the registry.
        """
        if not targets:
            raise TargetError("no target given")
        if len(targets) > MAX_TARGETS:
            raise TargetError(f"more than {MAX_TARGETS} targets")
        # A boolean mask over the registry makes the union O(n) with no sort.
        chosen = np.zeros(len(self.recipients), dtype=np.bool_)
        extras: dict[str, None] = {}
        per_target: list[int] = []
        for target in targets:
            positions, extra = self._positions(target)
            chosen[positions] = True
            extras.update(dict.fromkeys(extra))
            per_target.append(len(positions) + len(extra))
        union: IndexArray = np.flatnonzero(chosen).astype(np.int64)
        skipped = 0
        extra_list = tuple(extras)
        if not override_opt_out:
            keep = ~self.opt_out[union]
            skipped = int(len(union) - keep.sum())
            union = union[keep]
            before = len(extra_list)
            extra_list = tuple(m for m in extra_list if m not in opt_out)
            skipped += before - len(extra_list)
        return Resolution(union, extra_list, tuple(per_target), skipped)

    def preview(self, targets: Sequence[Target], *, override_opt_out: bool = False,
                opt_out: frozenset[str] = frozenset()) -> Preview:
        """Counts for the approval screen (same rules as :meth:`resolve`)."""
        res = self.resolve(targets, override_opt_out=override_opt_out, opt_out=opt_out)
        zh = int(self.language_zh[res.positions].sum())
        # Numbers outside the registry have no language on record: Chinese by default.
        by_language = (("zh", zh + len(res.extra_msisdns)), ("en", len(res.positions) - zh))
        return Preview(res.count, res.per_target, res.opted_out, len(res.extra_msisdns),
                       by_language)

    def recipients_of(self, resolution: Resolution) -> Iterable[Recipient]:
        """The registry records a resolution reaches, in registry order."""
        return (self.recipients[int(i)] for i in resolution.positions)


MAX_DISTRICT_FILE_BYTES = 64 * 1024 * 1024


def load_districts(path: str, *, max_vertices: int = 200_000) -> DistrictCatalogue:
    """Read a district GeoJSON file (size-limited) into a :class:`DistrictCatalogue`."""
    with open(path, "rb") as f:
        data = f.read(MAX_DISTRICT_FILE_BYTES + 1)
    if len(data) > MAX_DISTRICT_FILE_BYTES:
        raise TargetError(f"{path} is larger than {MAX_DISTRICT_FILE_BYTES} bytes")
    try:
        obj = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TargetError(f"{path}: not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise TargetError(f"{path}: not a GeoJSON object")
    return DistrictCatalogue.from_geojson(obj, max_vertices=max_vertices)


def geometry_of(targets: Sequence[Target], districts: DistrictCatalogue,
                ) -> tuple[tuple[Area, ...], tuple[CircleTarget, ...]]:
    """The areas and circles of ``targets`` (for maps and CAP); groups and numbers have none."""
    areas: list[Area] = []
    circles: list[CircleTarget] = []
    for target in targets:
        if isinstance(target, CircleTarget):
            circles.append(target)
        elif isinstance(target, AreaTarget):
            areas.append(target.area)
        elif isinstance(target, DistrictTarget):
            areas.append(districts.get(target.key).area)
    return tuple(areas), tuple(circles)
