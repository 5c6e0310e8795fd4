// Coordinates between what the service stores and what the map's tiles are drawn in.
//
// The service stores and sends WGS-84 (GPS) positions and zones. Chinese map tiles (Amap/Gaode,
// Tencent) are drawn in GCJ-02, the obfuscated datum Chinese law requires for published maps: a
// WGS-84 point drawn on them as is lands 300-600 m off. The tile source declares its system
// (`[console] tile_coord_system`, GET /console/config); the map converts every position and
// vertex for display and converts what an officer draws back to WGS-84 before it is saved.
// Tianditu (CGCS2000, within centimetres of WGS-84) and OSM-style tiles need nothing.
//
// The arithmetic is gcoord's (vendored, vendor/gcoord/README.md): WGS-84 -> GCJ-02 is the
// published closed form; GCJ-02 -> WGS-84 has none and gcoord inverts it iteratively, which
// round-trips to well under a metre (tests/test_console_coords.py).
//
// Circles keep their radius: the GCJ-02 offset changes by millimetres across a few hundred
// metres, so a circle of r metres around the converted centre is the same circle on the ground.

import gcoord from './vendor/gcoord/gcoord.esm-browser.prod.js';

export const SYSTEMS = ['wgs84', 'gcj02'];

const GCOORD = { wgs84: gcoord.WGS84, gcj02: gcoord.GCJ02 };

function check(system) {
  if (!SYSTEMS.includes(system)) throw new Error(`unknown coordinate system ${system}`);
}

function convert(lat, lon, from, to) {
  check(from);
  check(to);
  if (from === to) return { lat, lon };
  // gcoord takes and returns [lon, lat].
  const [x, y] = gcoord.transform([lon, lat], GCOORD[from], GCOORD[to]);
  return { lat: y, lon: x };
}

/** A stored WGS-84 position as drawn on tiles in `system`. */
export function toDisplay(lat, lon, system) {
  return convert(lat, lon, 'wgs84', system);
}

/** A position picked or drawn on tiles in `system`, back to WGS-84 for storage. */
export function fromDisplay(lat, lon, system) {
  return convert(lat, lon, system, 'wgs84');
}

/** Great-circle distance in metres (haversine, mean Earth radius). */
export function distanceM(a, b) {
  const R = 6371008.8;
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const s = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * R * Math.asin(Math.min(1, Math.sqrt(s)));
}

/** A zone ({kind, center, radius_m, points}) converted with `fn(lat, lon)`. */
export function mapZone(zone, fn) {
  const out = { ...zone };
  if (zone.center) out.center = fn(zone.center.lat, zone.center.lon);
  if (Array.isArray(zone.points)) {
    out.points = zone.points.map(([lat, lon]) => {
      const p = fn(lat, lon);
      return [p.lat, p.lon];
    });
  }
  return out;
}
