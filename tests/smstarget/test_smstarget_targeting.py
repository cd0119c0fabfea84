"""Targeting: geometry validation, grid index against brute force, unions and opt-out."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms.recipients import Recipient
from sms.targeting import (
    AreaTarget,
    CircleTarget,
    DistrictCatalogue,
    DistrictTarget,
    GroupTarget,
    NumbersTarget,
    RecipientIndex,
    SpatialIndex,
    Target,
    TargetError,
    geometry_of,
    haversine_m,
    load_districts,
    parse_geometry,
    points_in_area,
)

DISTRICTS = Path(__file__).resolve().parents[2] / "conf" / "sms" / "districts.geojson"
SQUARE = [[113.70, 23.00], [113.80, 23.00], [113.80, 23.10], [113.70, 23.10], [113.70, 23.00]]
HOLE = [[113.74, 23.04], [113.76, 23.04], [113.76, 23.06], [113.74, 23.06], [113.74, 23.04]]


def scalar_in_ring(x: float, y: float, ring: list[tuple[float, float]]) -> bool:
    """Textbook ray casting, one point at a time (the reference for the vectorised test)."""
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:], strict=False):
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def shipped_districts() -> DistrictCatalogue:
    with open(DISTRICTS, encoding="utf-8") as f:
        return DistrictCatalogue.from_geojson(json.load(f))


# --- geometry validation ---------------------------------------------------------------

@pytest.mark.parametrize(("geometry", "fragment"), [
    ({"type": "Point", "coordinates": [1, 2]}, "not Polygon"),
    ({"type": "Polygon", "coordinates": []}, "non-empty"),
    ({"type": "Polygon", "coordinates": [SQUARE[:3]]}, "at least 4"),
    ({"type": "Polygon", "coordinates": [SQUARE[:4]]}, "not closed"),
    ({"type": "Polygon", "coordinates": [[[200, 0], [1, 0], [1, 1], [200, 0]]]}, "longitude"),
    ({"type": "Polygon", "coordinates": [[[0, 95], [1, 0], [1, 1], [0, 95]]]}, "latitude"),
    ({"type": "Polygon", "coordinates": [[[0, 0], ["a", 0], [1, 1], [0, 0]]]}, "[lon, lat]"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]}, "no area"),
    ({"type": "Polygon", "coordinates": [[[-170, 0], [170, 0], [170, 1], [-170, 0]]]},
     "antimeridian"),
    ({"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE[:4]]]}, "MultiPolygon[1]"),
])
def test_bad_geometries_are_refused(geometry: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_geometry(geometry)
    assert fragment in str(info.value)


def test_vertex_limit() -> None:
    with pytest.raises(TargetError, match="too many vertices"):
        parse_geometry({"type": "Polygon", "coordinates": [SQUARE, HOLE]}, max_vertices=8)
    assert len(parse_geometry({"type": "Polygon", "coordinates": [SQUARE, HOLE]},
                              max_vertices=10).polygons) == 1


def test_hole_excludes_points() -> None:
    area = parse_geometry({"type": "Polygon", "coordinates": [SQUARE, HOLE]})
    lon = np.array([113.75, 113.72, 113.90])
    lat = np.array([23.05, 23.02, 23.05])
    assert points_in_area(lon, lat, area).tolist() == [False, True, False]


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"lat": 91, "lon": 0, "radius_m": 10}, "centre"),
    ({"lat": 0, "lon": 0, "radius_m": 0}, "radius"),
    ({"lat": 0, "lon": 0, "radius_m": math.inf}, "radius"),
])
def test_bad_circles(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(TargetError, match=fragment):
        CircleTarget(**kwargs)


def test_haversine_known_distance() -> None:
    # One degree of latitude is about 111.2 km on the mean sphere.
    d = haversine_m(23.0, 113.0, np.array([24.0]), np.array([113.0]))
    assert abs(float(d[0]) - 111_195) < 5


# --- index against brute force ---------------------------------------------------------

@st.composite
def star_polygons(draw: st.DrawFn) -> dict[str, Any]:
    """A star-shaped polygon (simple by construction), sometimes with a hole around its centre."""
    cx = draw(st.floats(113.5, 114.0))
    cy = draw(st.floats(22.6, 23.1))
    n = draw(st.integers(3, 24))
    radii = draw(st.lists(st.floats(0.005, 0.3), min_size=n, max_size=n))
    ring = [[cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n)]
            for k, r in enumerate(radii)]
    ring.append(ring[0])
    rings = [ring]
    if draw(st.booleans()):
        h = min(radii) / 3
        hole = [[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h],
                [cx - h, cy - h]]
        rings.append(hole)
    return {"type": "Polygon", "coordinates": rings}


points_strategy = st.integers(0, 2000).map(
    lambda seed: (np.random.default_rng(seed).uniform(22.5, 23.2, 3000),
                  np.random.default_rng(seed + 1).uniform(113.4, 114.1, 3000)))


@settings(max_examples=60, deadline=None)
@given(points_strategy, st.lists(star_polygons(), min_size=1, max_size=3),
       st.integers(1, 64))
def test_index_area_query_equals_brute_force(points: tuple[np.ndarray, np.ndarray],
                                             polys: list[dict[str, Any]],
                                             per_cell: int) -> None:
    lat, lon = points
    multi = {"type": "MultiPolygon", "coordinates": [p["coordinates"] for p in polys]}
    area = parse_geometry(multi)
    index = SpatialIndex(lat, lon, points_per_cell=per_cell)
    expected = np.flatnonzero(points_in_area(lon, lat, area))
    assert index.in_area(area).tolist() == expected.tolist()


@settings(max_examples=60, deadline=None)
@given(points_strategy, st.floats(22.4, 23.3), st.floats(113.3, 114.2), st.floats(1, 60_000),
       st.integers(1, 64))
def test_index_circle_query_equals_brute_force(points: tuple[np.ndarray, np.ndarray],
                                               lat0: float, lon0: float, radius: float,
                                               per_cell: int) -> None:
    lat, lon = points
    index = SpatialIndex(lat, lon, points_per_cell=per_cell)
    expected = np.flatnonzero(haversine_m(lat0, lon0, lat, lon) <= radius)
    assert index.in_circle(lat0, lon0, radius).tolist() == expected.tolist()


@settings(max_examples=100, deadline=None)
@given(star_polygons(), st.floats(22.3, 23.5), st.floats(113.2, 114.3))
def test_vectorised_ray_casting_matches_scalar(poly: dict[str, Any], lat: float,
                                               lon: float) -> None:
    area = parse_geometry(poly)
    rings = [[(float(x), float(y)) for x, y in r] for r in poly["coordinates"]]
    expected = scalar_in_ring(lon, lat, rings[0]) and not any(
        scalar_in_ring(lon, lat, h) for h in rings[1:])
    assert bool(points_in_area(np.array([lon]), np.array([lat]), area)[0]) == expected


def test_points_on_grid_edges_and_empty_index() -> None:
    lat = np.array([23.0, 23.0, 23.1, 23.1, 23.05])
    lon = np.array([113.7, 113.8, 113.7, 113.8, 113.75])
    index = SpatialIndex(lat, lon, points_per_cell=1)
    area = parse_geometry({"type": "Polygon", "coordinates": [
        [[113.6, 22.9], [113.9, 22.9], [113.9, 23.2], [113.6, 23.2], [113.6, 22.9]]]})
    assert index.in_area(area).tolist() == [0, 1, 2, 3, 4]
    far = parse_geometry({"type": "Polygon", "coordinates": [
        [[100.0, 10.0], [101.0, 10.0], [101.0, 11.0], [100.0, 10.0]]]})
    assert index.in_area(far).tolist() == []
    empty = SpatialIndex(np.zeros(0), np.zeros(0))
    assert empty.in_area(area).tolist() == [] and empty.in_circle(23, 113, 1000).tolist() == []


# --- registry targets ------------------------------------------------------------------

def registry() -> list[Recipient]:
    return [
        Recipient("+8613800000001", lat=23.045, lon=113.750, district="莞城街道",
                  groups=frozenset({"三防责任人"})),
        Recipient("+8613800000002", language="en", lat=23.046, lon=113.751),
        Recipient("+8613800000003", lat=23.045, lon=113.750, opt_out=True),
        Recipient("+8613800000004", district="莞城街道"),  # no coordinates
        Recipient("+8613800000005", lat=22.82, lon=113.67, groups=frozenset({"三防责任人", "村长"})),
        Recipient("+8613800000006", lat=22.50, lon=113.00),
    ]


def test_district_catalogue_lookup() -> None:
    cat = shipped_districts()
    assert cat.get("441900006") is cat.get("莞城街道") is cat.get("guancheng")
    assert len(list(cat)) == 5
    with pytest.raises(TargetError, match="unknown district"):
        cat.get("火星")


def test_district_target_includes_registered_residents_without_coordinates() -> None:
    index = RecipientIndex(registry(), shipped_districts())
    res = index.resolve([DistrictTarget("莞城街道")])
    assert res.positions.tolist() == [0, 1, 3] and res.opted_out == 1


def test_union_counts_each_resident_once_and_honours_opt_out() -> None:
    index = RecipientIndex(registry(), shipped_districts())
    targets: list[Target] = [
        CircleTarget(23.045, 113.750, 500), GroupTarget("三防责任人"),
        NumbersTarget.parse(["13800000002", "+8613900000009", "139 0000 0009"]),
        DistrictTarget("Humen")]
    res = index.resolve(targets)
    assert res.positions.tolist() == [0, 1, 4]
    assert res.extra_msisdns == ("+8613900000009",)
    assert res.per_target == (3, 2, 2, 1)
    assert res.opted_out == 1 and res.count == 4
    forced = index.resolve(targets, override_opt_out=True)
    assert forced.positions.tolist() == [0, 1, 2, 4] and forced.opted_out == 0
    external = index.resolve(targets, opt_out=frozenset({"+8613900000009"}))
    assert external.extra_msisdns == () and external.opted_out == 2
    preview = index.preview(targets)
    assert preview.count == 4 and preview.by_language == (("zh", 3), ("en", 1))
    assert [r.msisdn for r in index.recipients_of(res)][0] == "+8613800000001"


def test_area_target_and_errors() -> None:
    index = RecipientIndex(registry())
    area = parse_geometry({"type": "Polygon", "coordinates": [SQUARE, HOLE]})
    assert index.resolve([AreaTarget(area)]).positions.tolist() == []
    with pytest.raises(TargetError, match="no target"):
        index.resolve([])
    with pytest.raises(TargetError, match="group"):
        index.resolve([GroupTarget("nobody")])
    with pytest.raises(TargetError, match="number 1"):
        NumbersTarget.parse(["12"])
    with pytest.raises(TargetError, match="twice"):
        RecipientIndex([Recipient("+8613800000001"), Recipient("+8613800000001")])


def test_load_districts_and_geometry_of(tmp_path: Path) -> None:
    cat = load_districts(str(DISTRICTS))
    targets: list[Target] = [DistrictTarget("长安镇"), CircleTarget(23.0, 113.7, 100),
                             GroupTarget("村长")]
    areas, circles = geometry_of(targets, cat)
    assert len(areas) == 1 and len(areas[0].polygons) == 2 and len(circles) == 1
    bad = tmp_path / "bad.geojson"
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TargetError, match="not a GeoJSON object"):
        load_districts(str(bad))
    bad.write_text('{"type": "FeatureCollection", "features": [{"properties": {}}]}')
    with pytest.raises(TargetError, match="feature 0"):
        load_districts(str(bad))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-200, 200) | st.floats(allow_nan=True)
    | st.text(max_size=5),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.sampled_from(["type", "coordinates", "features", "properties",
                                       "geometry", "code", "name"]), children, max_size=4),
    max_leaves=40)
geometry_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["Polygon", "MultiPolygon", "Point"]), "coordinates": json_values})


@settings(max_examples=300, deadline=None)
@given(geometry_like | st.dictionaries(st.text(max_size=3), json_values, max_size=3))
def test_any_geometry_parses_or_raises_target_error(obj: dict[str, Any]) -> None:
    try:
        area = parse_geometry(obj)
    except TargetError:
        return
    assert area.polygons


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"type": st.just("FeatureCollection"),
                              "features": st.lists(json_values | st.fixed_dictionaries(
                                  {"properties": json_values, "geometry": geometry_like}),
                                  max_size=3)}))
def test_any_feature_collection_loads_or_raises_target_error(obj: dict[str, Any]) -> None:
    with contextlib.suppress(TargetError):
        DistrictCatalogue.from_geojson(obj)


@pytest.mark.parametrize("geometry", [None, [], "Polygon", 3])
def test_feature_geometry_must_be_an_object(geometry: Any) -> None:
    doc = {"type": "FeatureCollection", "features": [
        {"properties": {"code": "1", "name": "x"}, "geometry": geometry}]}
    with pytest.raises(TargetError, match="feature 0"):
        DistrictCatalogue.from_geojson(doc)
