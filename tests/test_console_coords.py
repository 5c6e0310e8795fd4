"""The console's coordinate conversion (console/static/coords.js on the vendored gcoord), run in
headless Chromium from the console as the package serves it, and the tile settings it reads.

Reference points, WGS-84 -> GCJ-02, as published by two independent implementations:

- googollee/eviltransform, ``python/tests/test_eviltransform.py`` (``TESTS``: Shanghai, Shenzhen,
  Beijing; the same three pairs are in its Go, JS and C tests);
- wandergis/coordtransform, ``test/app.js`` (``wgs84togcj02(116.404, 39.915)``:
  ``[116.41024449916938, 39.91640428150164]``).

GCJ-02 -> WGS-84 has no closed form; the console must bring a drawn point back to within 1 m of
where it was (the zones the detector checks are stored in WGS-84).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, Route

from console.app import mount_console
from console.settings import ConsoleConfig, MapTiles
from foundation.http_server import HttpServer

#: (WGS-84 lat, lon, GCJ-02 lat, lon, source)
REFERENCE = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215, "eviltransform: Shanghai"),
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363, "eviltransform: Shenzhen"),
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657, "eviltransform: Beijing"),
    (39.915, 116.404, 39.91640428150164, 116.41024449916938, "coordtransform: test/app.js"),
]

AMAP = MapTiles(url="https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1"
                    "&style=8&x={x}&y={y}&z={z}",
                attribution="© 高德地图", coord_system="gcj02", max_zoom=18, subdomains="1234")


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    app = FastAPI()
    mount_console(app, tiles=AMAP)
    with HttpServer(app, host="127.0.0.1", port=0) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture
def page(browser: Browser, served: str) -> Iterator[Page]:
    page = browser.new_page()
    # Offline, as in a control room without internet: every outside request is refused.
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(served)
               else route.abort())
    page.goto(served + "/")
    yield page
    page.close()


def run(page: Page, body: str, arg: object = None) -> Any:
    """Evaluate `body` with `c` = the coords.js module (as the page imports it) and `arg`."""
    return page.evaluate(f"async (arg) => {{ const c = await import('/static/coords.js'); {body} }}",
                         arg)


def test_wgs84_to_gcj02_matches_the_published_reference_points(page: Page) -> None:
    out = run(page, """return arg.map(([lat, lon, glat, glon]) => {
        const g = c.toDisplay(lat, lon, 'gcj02');
        return [c.distanceM(g, {lat: glat, lon: glon}), c.distanceM(g, {lat, lon})]; });""",
              [r[:4] for r in REFERENCE])
    for (error_m, offset_m), ref in zip(out, REFERENCE, strict=True):
        assert error_m < 0.01, f"{ref[4]}: {error_m:.4f} m from the published GCJ-02 point"
        # The reason for all this: drawn unconverted, the point is on the wrong street.
        assert 300 < offset_m < 700, f"{ref[4]}: GCJ-02 offset {offset_m:.0f} m"


def test_gcj02_back_to_wgs84_is_within_a_metre_of_the_reference(page: Page) -> None:
    out = run(page, """return arg.map(([lat, lon, glat, glon]) =>
        c.distanceM(c.fromDisplay(glat, glon, 'gcj02'), {lat, lon}));""",
              [r[:4] for r in REFERENCE])
    assert max(out) < 1.0, out


def test_round_trip_over_china_stays_under_a_metre(page: Page) -> None:
    """A grid over China (lat 18-53, lon 74-134, 0.5 degree): WGS-84 -> GCJ-02 -> WGS-84."""
    worst = run(page, """let worst = 0; let n = 0;
        for (let lat = 18; lat <= 53; lat += 0.5) for (let lon = 74; lon <= 134; lon += 0.5) {
          const g = c.toDisplay(lat, lon, 'gcj02');
          const w = c.fromDisplay(g.lat, g.lon, 'gcj02');
          worst = Math.max(worst, c.distanceM(w, {lat, lon})); n++; }
        return [worst, n];""")
    assert worst[1] == 71 * 121
    assert worst[0] < 1.0, f"worst round trip {worst[0]:.3f} m"


def test_wgs84_tiles_and_places_outside_china_are_left_alone(page: Page) -> None:
    out = run(page, """return [c.toDisplay(37.5, 122.1, 'wgs84'), c.fromDisplay(37.5, 122.1, 'wgs84'),
        c.toDisplay(51.5007, -0.1246, 'gcj02')];""")
    assert out[0] == {"lat": 37.5, "lon": 122.1} and out[1] == {"lat": 37.5, "lon": 122.1}
    # GCJ-02 is defined in China only: London stays where it is.
    assert out[2] == {"lat": 51.5007, "lon": -0.1246}
    assert "unknown coordinate system" in run(
        page, "try { c.toDisplay(1, 2, 'bd09x'); return ''; } catch (e) { return e.message; }")


def test_zones_convert_vertex_by_vertex_and_circles_keep_their_radius(page: Page) -> None:
    out = run(page, """const z = {id: 'home', kind: 'polygon', points: [[37.5, 122.1], [37.51, 122.1], [37.51, 122.11]]};
        const g = c.mapZone(z, (la, lo) => c.toDisplay(la, lo, 'gcj02'));
        const back = c.mapZone(g, (la, lo) => c.fromDisplay(la, lo, 'gcj02'));
        const circle = c.mapZone({kind: 'circle', center: {lat: 37.5, lon: 122.1}, radius_m: 200},
                                 (la, lo) => c.toDisplay(la, lo, 'gcj02'));
        return {id: g.id, n: g.points.length,
                moved: c.distanceM({lat: g.points[0][0], lon: g.points[0][1]}, {lat: 37.5, lon: 122.1}),
                back: Math.max(...back.points.map(([la, lo], i) =>
                   c.distanceM({lat: la, lon: lo}, {lat: z.points[i][0], lon: z.points[i][1]}))),
                radius: circle.radius_m};""")
    assert out["id"] == "home" and out["n"] == 3 and out["radius"] == 200
    assert out["moved"] > 300 and out["back"] < 1.0


def test_the_page_loads_leaflet_offline_under_its_policy(browser: Browser, served: str) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error"
            and "status of 404" not in m.text else None)   # /console/me: no accounts here
    page.on("pageerror", lambda e: errors.append(str(e)))
    outside: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(served):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()
    page.route("**/*", offline)
    page.goto(served + "/")
    page.wait_for_function("() => window.L && window.L.PM")
    assert page.evaluate("() => window.L.version") == "1.9.4"
    assert errors == [] and outside == []
    page.close()


def test_console_config_declares_the_tiles_and_the_policy_allows_each_subdomain(
        served: str) -> None:
    config = httpx.get(served + "/console/config").json()
    assert config == {"tile_url": AMAP.url, "tile_attribution": "© 高德地图",
                      "tile_coord_system": "gcj02", "tile_max_zoom": 18,
                      "tile_subdomains": "1234", "language_default": "zh"}
    csp = httpx.get(served + "/").headers["content-security-policy"]
    img = next(d for d in csp.split("; ") if d.startswith("img-src"))
    assert img == ("img-src 'self' data: " + " ".join(
        f"https://webrd0{n}.is.autonavi.com" for n in "1234"))
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    for path in ("vendor/leaflet/leaflet.js", "vendor/leaflet-geoman/leaflet-geoman.min.js",
                 "vendor/gcoord/gcoord.esm-browser.prod.js", "vendor/leaflet/images/layers.png"):
        assert httpx.get(f"{served}/static/{path}").status_code == 200, path


def test_the_console_section_reads_the_tile_settings() -> None:
    import msgspec

    c = msgspec.convert({"tile_url": "https://t{s}.tianditu.gov.cn/vec_w/wmts?x={x}&y={y}&l={z}",
                         "tile_subdomains": "01234567", "tile_attribution": "天地图"},
                        ConsoleConfig)
    assert c.tiles().coord_system == "wgs84"          # Tianditu: CGCS2000, no conversion
    assert len(c.tiles().origins()) == 8
    assert ConsoleConfig().tiles().origins() == []    # the demo: no tiles, nothing fetched
    for bad in ({"tile_coord_system": "bd09"}, {"tile_url": "javascript:alert(1)"},
                {"tile_subdomains": "a b"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, ConsoleConfig)
    assert json.loads(msgspec.json.encode(AMAP))["coord_system"] == "gcj02"


def test_a_map_removed_while_it_frames_its_zones_throws_nothing(page: Page) -> None:
    """The console redraws a wearer's or an alert's map whenever the record changes, often
    right after framing the zones. Removed during a zoom animation, a Leaflet map throws from
    its transition callback ("Cannot read properties of undefined (reading '_leaflet_pos')",
    seen once in CI after a zone was saved): the console's maps have no animations, and a
    removal stops what is still moving."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.wait_for_function("() => window.L")
    page.evaluate("""async () => {
        const { createMap } = await import('/static/leafmap.js');
        const el = document.createElement('div');
        el.style.cssText = 'width: 400px; height: 300px';
        document.body.append(el);
        const view = createMap(el, {}, { center: { lat: 37.5, lon: 122.1 } });
        const zone = window.L.circle([37.5, 122.1], { radius: 50 }).addTo(view.map);
        view.map.fitBounds(zone.getBounds(), { maxZoom: 18 });
        await new Promise((r) => setTimeout(r, 30));
        view.remove();
        await new Promise((r) => setTimeout(r, 600));
    }""")
    assert errors == []
