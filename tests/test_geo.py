"""Geofence geometry against independent references, plus cases with known answers.

References (none shares code with ``detectors.geo``, and none uses its local frames):

* circles: geographiclib's WGS-84 geodesic (Karney) from the fix to the centre, minus the radius;
* polygons: containment by shapely ``contains_xy`` in (lon, lat) degrees with the ring and the
  fixes unwrapped around the ring so the antimeridian never splits it; distance as the smallest
  3-D Euclidean distance in Earth-centred WGS-84 coordinates to the boundary, densified along each
  edge (straight in lon/lat) into chords short enough to be within 1 cm of the curve, then turned
  into an arc. That 3-D reference is itself checked against geographiclib here.

Tolerances (see ``docs/geofence-geometry.md``): the sign must agree wherever the reference puts
the fix more than ``SIGN_BAND_M`` from the boundary; polygon distances must agree within
``ABS_TOL_M + REL_TOL |d| + |tan lat| d^2 / 2R``. The last term is the method's own model: the
metric is taken at the fix's latitude rather than halfway to the boundary, which matters only
far from the zone or near a pole.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
import shapely  # type: ignore[import-untyped]
from geographiclib.geodesic import Geodesic  # type: ignore[import-untyped]

from detectors.geo import EARTH_RADIUS_M, ZoneSet, haversine_m
from schemas.registry import Point, Zone

FloatArray = npt.NDArray[np.float64]

SEED = int(os.environ.get("GEO_TEST_SEED", "20240603"))
SIGN_BAND_M = 0.02  # reference accuracy (1 cm chord sag) plus margin
ABS_TOL_M = 0.02    # polygons; circles are held to 1 cm
REL_TOL = 1e-4

WGS84 = Geodesic.WGS84
_A, _F = 6_378_137.0, 1 / 298.257223563
_E2 = _F * (2 - _F)

CITIES = [(37.50, 122.10), (39.90, 116.40), (45.75, 126.65), (23.13, 113.26), (52.97, 122.53),
          (18.25, 109.50), (43.80, 87.60), (31.23, 121.47)]  # Weihai ... Mohe, Sanya, Urumqi


@pytest.fixture
def rng() -> Iterator[np.random.Generator]:
    print(f"GEO_TEST_SEED={SEED}")
    yield np.random.default_rng(SEED)


# ---------------------------------------------------------------- independent references


def ecef_ref(lat: FloatArray, lon: FloatArray) -> FloatArray:
    """(..., 3) Earth-centred coordinates on WGS-84, written out from the textbook formula."""
    p, q = np.deg2rad(lat), np.deg2rad(lon)
    n = _A / np.sqrt(1 - _E2 * np.sin(p) ** 2)
    return np.stack([n * np.cos(p) * np.cos(q), n * np.cos(p) * np.sin(q),
                     n * (1 - _E2) * np.sin(p)], axis=-1)


def wrap(d: FloatArray) -> FloatArray:
    return np.asarray(np.mod(np.asarray(d) + 180.0, 360.0) - 180.0)


def densify(ring: FloatArray) -> FloatArray:
    """(m, 2) lat/lon points along the closed ring, straight in (unwrapped) lon/lat, spaced so a
    3-D chord is within 1 cm of the curve: sag = s^2 k / 8 with curvature k <= (1 + tan lat)/R."""
    lat = ring[:, 0]
    lon = ring[0, 1] + wrap(ring[:, 1] - ring[0, 1])
    pts = np.column_stack([lat, lon])
    pts = np.vstack([pts, pts[:1]])
    k = (1 + np.tan(np.deg2rad(np.abs(lat).max()))) / EARTH_RADIUS_M
    spacing = min(500.0, math.sqrt(8 * 0.01 / k))
    out = []
    for a, b in itertools.pairwise(pts):
        length = haversine_m(a[0], a[1], b[0], b[1]) * 1.01 + 1
        n = max(1, math.ceil(float(length) / spacing))
        s = np.arange(n)[:, None] / n
        out.append(a + s * (b - a))
    out.append(pts[-1:])
    return np.vstack(out)


def ref_polygon(ring: FloatArray, lat: FloatArray, lon: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(signed distance by the 3-D reference with shapely's sign, unsigned 3-D distance)."""
    lon_u = ring[0, 1] + wrap(ring[:, 1] - ring[0, 1])
    mid = (lon_u.min() + lon_u.max()) / 2
    poly = shapely.Polygon(np.column_stack([lon_u, ring[:, 0]]))
    shapely.prepare(poly)
    inside = shapely.contains_xy(poly, mid + wrap(lon - mid), lat)
    bnd = ecef_ref(*densify(ring).T)
    a, ab = bnd[:-1], np.diff(bnd, axis=0)
    ab2 = np.maximum((ab * ab).sum(axis=1), 1e-300)
    p = ecef_ref(lat, lon)
    chord = np.empty(len(lat))
    step = max(1, 2_000_000 // len(a))
    for i in range(0, len(p), step):
        w = p[i:i + step, None, :] - a[None]
        t = np.clip((w * ab).sum(axis=2) / ab2, 0, 1)
        e = w - t[..., None] * ab
        chord[i:i + step] = np.sqrt((e * e).sum(axis=2).min(axis=1))
    dist = 2 * EARTH_RADIUS_M * np.arcsin(chord / (2 * EARTH_RADIUS_M))
    return np.where(inside, -dist, dist), dist


def geodesic_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return float(WGS84.Inverse(lat1, lon1, lat2, lon2, Geodesic.DISTANCE)["s12"])


# ---------------------------------------------------------------- random zones and fixes


@dataclass
class Case:
    zone: Zone
    lat: FloatArray
    lon: FloatArray
    tan_lat: float  # |tan| of the zone's latitude, for the error model


def _offset(lat0: float, lon0: float, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Approximate lat/lon of local metres (only used to place test data, not as a reference)."""
    lat = np.clip(lat0 + np.rad2deg(y / EARTH_RADIUS_M), -89.999, 89.999)
    lon = wrap(lon0 + np.rad2deg(x / (EARTH_RADIUS_M * np.cos(np.deg2rad(lat)))))
    return lat, lon


def _place(rng: np.random.Generator, nasty: bool) -> tuple[float, float]:
    if not nasty:
        c = CITIES[rng.integers(len(CITIES))]
        return c[0] + rng.uniform(-0.5, 0.5), c[1] + rng.uniform(-0.5, 0.5)
    match rng.integers(3):
        case 0:  # astride the antimeridian
            return rng.uniform(-70, 70), float(wrap(np.asarray(180 + rng.uniform(-0.05, 0.05))))
        case 1:  # near a pole
            return rng.choice([-1, 1]) * rng.uniform(80, 88), rng.uniform(-180, 180)
        case _:
            return rng.uniform(-80, 80), rng.uniform(-180, 180)


def _fixes(rng: np.random.Generator, lat0: float, lon0: float, size: float, edge: FloatArray,
           n: int) -> tuple[FloatArray, FloatArray]:
    """Half spread over a disk of 2.5 zone sizes, half within +-(1 m .. 2 %) of the boundary."""
    m = n // 2
    r = size * 2.5 * np.sqrt(rng.uniform(0, 1, m))
    a = rng.uniform(0, 2 * np.pi, m)
    lat1, lon1 = _offset(lat0, lon0, r * np.cos(a), r * np.sin(a))
    j = rng.integers(len(edge) - 1, size=n - m)
    u = rng.uniform(0, 1, n - m)[:, None]
    p, q = edge[j], edge[j + 1]
    q = np.column_stack([q[:, 0], p[:, 1] + wrap(q[:, 1] - p[:, 1])])
    on = p + u * (q - p)
    jitter = rng.uniform(-1, 1, (n - m, 2)) * max(1.0, 0.02 * size)
    lat2, lon2 = _offset(0, 0, jitter[:, 0], jitter[:, 1])
    return (np.concatenate([lat1, np.clip(on[:, 0] + lat2, -89.999, 89.999)]),
            np.concatenate([lon1, wrap(on[:, 1] + lon2)]))


def random_polygon(rng: np.random.Generator, i: int, nasty: bool, n_fix: int) -> Case:
    lat0, lon0 = _place(rng, nasty)
    size = float(np.exp(rng.uniform(np.log(20), np.log(20_000))))
    n = int(rng.integers(3, 40))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = size * rng.uniform(0.3 if rng.random() < 0.5 else 0.9, 1.0, n)  # star: often concave
    lat, lon = _offset(lat0, lon0, rad * np.cos(ang), rad * np.sin(ang))
    ring = np.column_stack([lat, lon])
    if rng.random() < 0.2:
        ring = np.vstack([ring, ring[:1]])  # closed ring
    if rng.random() < 0.2:
        ring = np.insert(ring, 1, ring[1], axis=0)  # repeated vertex
    closed = np.vstack([ring, ring[:1]])
    flat, flon = _fixes(rng, lat0, lon0, size, closed, n_fix)
    zone = Zone(id=f"p{i}", kind="polygon", points=[(float(a), float(b)) for a, b in ring])
    return Case(zone, flat, flon, abs(math.tan(math.radians(lat0))))


def random_circle(rng: np.random.Generator, i: int, nasty: bool, n_fix: int) -> Case:
    lat0, lon0 = _place(rng, nasty)
    radius = float(np.exp(rng.uniform(np.log(20), np.log(20_000))))
    r = radius * np.where(rng.random(n_fix) < 0.5, rng.uniform(0, 2.5, n_fix),
                          1 + rng.uniform(-0.02, 0.02, n_fix))
    a = rng.uniform(0, 2 * np.pi, n_fix)
    lat, lon = _offset(lat0, lon0, r * np.cos(a), r * np.sin(a))
    zone = Zone(id=f"c{i}", kind="circle", center=Point(lat0, lon0), radius_m=radius)
    return Case(zone, lat, lon, abs(math.tan(math.radians(lat0))))


def _run(cases: list[Case]) -> FloatArray:
    zs = ZoneSet.build([c.zone for c in cases])
    idx = np.concatenate([np.full(len(c.lat), i, dtype=np.intp) for i, c in enumerate(cases)])
    lat, lon = np.concatenate([c.lat for c in cases]), np.concatenate([c.lon for c in cases])
    perm = np.random.default_rng(SEED).permutation(len(idx))  # mixed order, as a batch arrives
    out = np.empty(len(idx))
    out[perm] = zs.signed_distance_m(idx[perm], lat[perm], lon[perm])
    return out


# ---------------------------------------------------------------- reference tests


def test_polygons_match_shapely_and_3d_reference(rng: np.random.Generator) -> None:
    cases = [random_polygon(rng, i, nasty=i % 3 == 0, n_fix=400) for i in range(260)]
    got = _run(cases)
    ref = np.concatenate([ref_polygon(np.asarray(c.zone.points), c.lat, c.lon)[0] for c in cases])
    tan_lat = np.concatenate([np.full(len(c.lat), c.tan_lat) for c in cases])
    assert len(got) >= 100_000
    far = np.abs(ref) > SIGN_BAND_M
    wrong = far & ((got < 0) != (ref < 0))
    assert not wrong.any(), (got[wrong][:5], ref[wrong][:5])
    err = np.abs(got - ref)
    model = tan_lat * ref**2 / (2 * EARTH_RADIUS_M)
    near = np.abs(ref) < 100
    print(f"polygons: {len(got)} fixes ({near.sum()} within 100 m of the boundary), signs agree "
          f"beyond {SIGN_BAND_M} m; max error {err[near].max():.4f} m within 100 m, "
          f"{err.max():.2f} m overall; max error / tolerance "
          f"{(err / (ABS_TOL_M + REL_TOL * np.abs(ref) + model)).max():.2f}")
    assert (err <= ABS_TOL_M + REL_TOL * np.abs(ref) + model).all()


def test_circles_match_geographiclib(rng: np.random.Generator) -> None:
    cases = [random_circle(rng, i, nasty=i % 3 == 0, n_fix=100) for i in range(200)]
    got = _run(cases)
    ref = np.array([geodesic_m(c.zone.center.lat, c.zone.center.lon, la, lo) - c.zone.radius_m
                    for c in cases if c.zone.center is not None and c.zone.radius_m is not None
                    for la, lo in zip(c.lat.tolist(), c.lon.tolist(), strict=True)])
    err = np.abs(got - ref)
    print(f"circles: {len(got)} fixes; max error {err.max():.4f} m")
    far = np.abs(ref) > SIGN_BAND_M
    assert np.array_equal(got[far] < 0, ref[far] < 0)
    assert (err <= 0.01 + 1e-6 * np.abs(ref)).all()


def test_3d_reference_agrees_with_geographiclib(rng: np.random.Generator) -> None:
    """The polygon reference's distance (3-D chord as an arc) is within 1 cm of the geodesic."""
    for _ in range(300):
        lat0, lon0 = _place(rng, nasty=bool(rng.random() < 0.5))
        d = float(np.exp(rng.uniform(np.log(1), np.log(50_000))))
        g = WGS84.Direct(lat0, lon0, float(rng.uniform(0, 360)), d)
        c = np.linalg.norm(ecef_ref(np.array(lat0), np.array(lon0))
                           - ecef_ref(np.array(g["lat2"]), np.array(g["lon2"])))
        assert abs(2 * EARTH_RADIUS_M * math.asin(c / (2 * EARTH_RADIUS_M)) - d) < 0.01


# ---------------------------------------------------------------- known answers


def _zones(*zones: Zone) -> ZoneSet:
    return ZoneSet.build(list(zones))


def _one(zs: ZoneSet, i: int, lat: float, lon: float) -> float:
    return float(zs.signed_distance_m(np.array([i]), np.array([lat]), np.array([lon]))[0])


def _circle(lat: float, lon: float, r: float) -> Zone:
    return Zone(id="c", kind="circle", center=Point(lat, lon), radius_m=r)


def _poly(*pts: tuple[float, float]) -> Zone:
    return Zone(id="p", kind="polygon", points=list(pts))


SQUARE = _poly((37.50, 122.10), (37.51, 122.10), (37.51, 122.11), (37.50, 122.11))  # Weihai


def test_haversine_known_values() -> None:
    assert haversine_m(0, 0, 1, 0) == pytest.approx(EARTH_RADIUS_M * math.pi / 180, rel=1e-12)
    assert haversine_m(10, 179.9, 10, -179.9) == pytest.approx(haversine_m(10, -0.1, 10, 0.1))
    assert haversine_m(0, 0, 0, 180) == pytest.approx(EARTH_RADIUS_M * math.pi)
    out = haversine_m(np.zeros((3, 1)), 0, np.zeros(4), np.arange(4.0))
    assert out.shape == (3, 4) and out[0, 0] == 0


@pytest.mark.parametrize("lat,lon", [(37.5, 122.1), (10.0, 179.9999), (-33.0, -180.0)])
def test_circle_known_answers(lat: float, lon: float) -> None:
    zs = _zones(_circle(lat, lon, 50.0))
    north = WGS84.Direct(lat, lon, 0, 100)
    east = WGS84.Direct(lat, lon, 90, 30)  # crosses the antimeridian for the second case
    assert _one(zs, 0, north["lat2"], north["lon2"]) == pytest.approx(50.0, abs=1e-3)
    assert _one(zs, 0, east["lat2"], east["lon2"]) == pytest.approx(-20.0, abs=1e-3)
    assert _one(zs, 0, lat, lon) == pytest.approx(-50.0, abs=1e-6)


def test_circle_at_the_pole() -> None:
    zs = _zones(_circle(90.0, 0.0, 500.0))
    for lon in (-180.0, 0.0, 45.0, 180.0):
        assert _one(zs, 0, 89.99, lon) == pytest.approx(geodesic_m(90, 0, 89.99, 45) - 500, abs=1e-2)
    assert _one(zs, 0, 90.0, 123.0) == pytest.approx(-500.0, abs=1e-6)


def test_polygon_known_answers() -> None:
    """100 m off the east edge (a meridian) along the perpendicular geodesic, either side."""
    zs = _zones(SQUARE)
    out = WGS84.Direct(37.505, 122.11, 90, 100)
    inn = WGS84.Direct(37.505, 122.11, 270, 100)
    assert _one(zs, 0, out["lat2"], out["lon2"]) == pytest.approx(100.0, abs=0.01)
    assert _one(zs, 0, inn["lat2"], inn["lon2"]) == pytest.approx(-100.0, abs=0.01)
    north = WGS84.Direct(37.51, 122.105, 0, 30)
    assert _one(zs, 0, north["lat2"], north["lon2"]) == pytest.approx(30.0, abs=0.01)
    # The centre is nearest to the east and west edges: half the square's width.
    half = geodesic_m(37.505, 122.10, 37.505, 122.11) / 2
    assert _one(zs, 0, 37.505, 122.105) == pytest.approx(-half, abs=0.01)


def test_points_on_the_boundary_are_about_zero() -> None:
    zs = _zones(SQUARE)
    lat = np.array([37.50, 37.51, 37.505, 37.50, 37.5075])
    lon = np.array([122.10, 122.11, 122.10, 122.1025, 122.11])
    assert np.abs(zs.signed_distance_m(np.zeros(5, np.intp), lat, lon)).max() < 5e-3


def test_concave_notch_is_outside() -> None:
    u = _poly((0, 0), (0, 0.03), (0.03, 0.03), (0.03, 0.02), (0.01, 0.02), (0.01, 0.01),
              (0.03, 0.01), (0.03, 0))  # a U opening to the north; the notch is at lon 0.015
    zs = _zones(u)
    assert _one(zs, 0, 0.02, 0.015) == pytest.approx(geodesic_m(0.02, 0.01, 0.02, 0.015), abs=0.01)
    assert _one(zs, 0, 0.005, 0.015) < -500
    assert _one(zs, 0, 0.02, 0.005) < -500


def test_closed_repeated_and_open_rings_agree(rng: np.random.Generator) -> None:
    pts = [(37.50, 122.10), (37.51, 122.10), (37.51, 122.11), (37.50, 122.11)]
    zs = _zones(_poly(*pts), _poly(*pts, pts[0]), _poly(pts[0], *pts[:2], pts[1], *pts[2:]))
    lat, lon = rng.uniform(37.49, 37.52, 1000), rng.uniform(122.09, 122.12, 1000)
    d = [zs.signed_distance_m(np.full(1000, i, np.intp), lat, lon) for i in range(3)]
    assert np.allclose(d[0], d[1], atol=1e-6) and np.allclose(d[0], d[2], atol=1e-6)


def test_antimeridian_is_a_longitude_shift(rng: np.random.Generator) -> None:
    """The ellipsoid is symmetric about its axis: a ring astride 180 must measure like the same
    ring moved to 0, for fixes moved with it."""
    ring = [(-16.0, 179.99), (-15.98, 179.995), (-15.99, -179.98), (-16.01, -179.99)]
    moved = [(a, float(wrap(np.asarray(b - 180.0)))) for a, b in ring]
    zs = _zones(_poly(*ring), _poly(*moved), _circle(-16.0, 180.0, 900), _circle(-16.0, 0, 900))
    lat = rng.uniform(-16.03, -15.96, 2000)
    lon = wrap(180 + rng.uniform(-0.04, 0.04, 2000))
    lon_moved = wrap(lon - 180)
    for a, b in ((0, 1), (2, 3)):
        d_a = zs.signed_distance_m(np.full(2000, a, np.intp), lat, lon)
        d_b = zs.signed_distance_m(np.full(2000, b, np.intp), lat, lon_moved)
        assert np.allclose(d_a, d_b, atol=2e-3)
        assert (d_a < 0).any() and (d_a > 0).any()


def test_degenerate_and_polar_rings_do_not_crash() -> None:
    zs = _zones(
        _poly((37.5, 122.1), (37.5, 122.1), (37.5, 122.1)),           # one point
        _poly((37.5, 122.1), (37.51, 122.1), (37.52, 122.1)),         # a segment, no area
        _poly((89.9, 0), (89.9, 90), (89.9, 180), (89.9, -90)),       # around the north pole
        _poly((-89.99, 0), (-90, 0), (-89.99, 10)),                   # touching the south pole
    )
    lat = np.array([37.5, 37.505, 90.0, 89.95, -90.0, -89.995])
    lon = np.array([122.101, 122.1, 0.0, 45.0, 0.0, 5.0])
    for i in range(len(zs)):
        d = zs.signed_distance_m(np.full(6, i, np.intp), lat, lon)
        assert np.isfinite(d).all()
    d = zs.signed_distance_m(np.array([0, 1]), lat[:2], lon[:2])
    assert d[0] == pytest.approx(geodesic_m(37.5, 122.1, 37.5, 122.101), abs=0.01)
    assert 0 <= d[1] < 0.01
    # Documented: a ring around a pole is its (lat, lon) shape and does not contain the pole.
    assert _one(zs, 2, 90.0, 0.0) >= 0


def test_many_vertices_match_a_circle() -> None:
    """A 2,000-gon inscribed in a 5 km geodesic circle, queried by few and by many fixes, runs
    the blocked and the chunked paths; within 300 m of the boundary (where the metric term of the
    error is < 1 cm) it differs from the circle by its sagitta at most."""
    lat0, lon0, r = 37.5, 122.1, 5000.0
    ring = [(g["lat2"], g["lon2"]) for g in
            (WGS84.Direct(lat0, lon0, az, r) for az in np.linspace(0, 360, 2000, endpoint=False))]
    zs = _zones(_poly(*ring), _circle(lat0, lon0, r))
    rng = np.random.default_rng(SEED)
    for n in (3, 40_000):
        a, d = rng.uniform(0, 2 * np.pi, n), r + rng.uniform(-300, 300, n)
        lat, lon = _offset(lat0, lon0, d * np.cos(a), d * np.sin(a))
        poly = zs.signed_distance_m(np.zeros(n, np.intp), lat, lon)
        circ = zs.signed_distance_m(np.ones(n, np.intp), lat, lon)
        sagitta = r * (1 - math.cos(math.pi / 2000))
        assert np.all(poly - circ >= -0.02) and np.all(poly - circ <= sagitta + 0.02)


def test_batches_mixed_and_split_agree(rng: np.random.Generator) -> None:
    zs = _zones(SQUARE, _circle(37.5, 122.1, 300), _poly((37.49, 122.09), (37.52, 122.095),
                                                        (37.5, 122.12)))
    k = 50_000
    idx = rng.integers(0, 3, k).astype(np.intp)
    lat, lon = rng.uniform(37.48, 37.53, k), rng.uniform(122.08, 122.13, k)
    whole = zs.signed_distance_m(idx, lat, lon)
    for i in range(3):
        sel = idx == i
        assert np.array_equal(zs.signed_distance_m(idx[sel], lat[sel], lon[sel]), whole[sel])


def test_empty_inputs_and_bad_arguments() -> None:
    empty = np.array([], dtype=np.intp), np.array([]), np.array([])
    zs0 = ZoneSet.build([])
    assert len(zs0) == 0
    assert zs0.signed_distance_m(*empty).shape == (0,)
    zs = _zones(SQUARE, _circle(37.5, 122.1, 300))
    assert len(zs) == 2
    out = zs.signed_distance_m(*empty)
    assert out.shape == (0,) and out.dtype == np.float64
    with pytest.raises(ValueError):
        zs.signed_distance_m(np.array([0, 1]), np.array([37.5]), np.array([122.1]))
    with pytest.raises(IndexError):
        zs.signed_distance_m(np.array([2]), np.array([37.5]), np.array([122.1]))
