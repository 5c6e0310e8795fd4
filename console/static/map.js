// An SVG map of one alert: position, safe zones, recent track, scale bar, north up.
//
// Projection: local equirectangular around the alert position, x = R·Δlon·cos(lat0),
// y = R·Δlat (metres), north up, one scale for both axes. Over the few kilometres an alert
// spans this is within a fraction of a percent of the true distances, and circles of radius r
// metres stay circles, so safe zones draw exactly as the detector sees them.
//
// Tiles (only when /console/config names a tile_url): standard XYZ web-mercator tiles, each
// placed by projecting its corner coordinates with the same local projection. Mercator and
// this projection differ by well under a pixel inside one tile at street zoom levels, so the
// geometry lines up with the streets. Without a tile_url nothing is fetched at all.

import { s, h, formatTime } from './dom.js';
import { t } from './i18n.js';

const R = 6371008.8; // mean Earth radius, metres
const DEG = Math.PI / 180;
const W = 560;
const H = 340;
const MIN_EXTENT_M = 300; // a lone point still shows its neighbourhood
const MAX_TILES = 64;

/** position {lat, lon} (red marker), zones, track [{ts, lat, lon, accuracy_m}] oldest first;
 *  null when there is nothing to draw. */
export function renderMap({ position, zones = [], track = [], tileUrl = null }) {
  track = track.filter((p) => isNum(p.lat) && isNum(p.lon));
  const origin = position || track[track.length - 1] || zoneAnchor(zones);
  if (!origin) return null;
  const lat0 = origin.lat;
  const lon0 = origin.lon;
  const cos0 = Math.cos(lat0 * DEG);
  const proj = (lat, lon) => [R * (lon - lon0) * DEG * cos0, R * (lat - lat0) * DEG];

  // Extent in metres of everything we draw.
  const xs = [0];
  const ys = [0];
  const add = (x, y) => { xs.push(x); ys.push(y); };
  for (const p of track) add(...proj(p.lat, p.lon));
  for (const z of zones) {
    if (z.kind === 'circle' && z.center && isNum(z.radius_m)) {
      const [x, y] = proj(z.center.lat, z.center.lon);
      add(x - z.radius_m, y - z.radius_m);
      add(x + z.radius_m, y + z.radius_m);
    } else if (z.points) {
      for (const [la, lo] of z.points) add(...proj(la, lo));
    }
  }
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = 0.12;
  const dx = Math.max(x1 - x0, MIN_EXTENT_M) * (1 + 2 * pad);
  const dy = Math.max(y1 - y0, MIN_EXTENT_M) * (1 + 2 * pad);
  const k = Math.min(W / dx, H / dy); // pixels per metre
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const toScreen = ([x, y]) => [W / 2 + (x - cx) * k, H / 2 - (y - cy) * k];
  const pt = (lat, lon) => toScreen(proj(lat, lon));
  const f = (n) => n.toFixed(1);

  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`, class: 'map', role: 'img', 'aria-label': t('detail.map'),
    preserveAspectRatio: 'xMidYMid meet',
  });
  svg.append(s('rect', { x: 0, y: 0, width: W, height: H, class: 'map-bg' }));

  if (tileUrl) {
    const unproject = (sx, sy) => {
      const x = cx + (sx - W / 2) / k;
      const y = cy - (sy - H / 2) / k;
      return { lat: lat0 + y / R / DEG, lon: lon0 + x / (R * cos0) / DEG };
    };
    svg.append(tiles(tileUrl, unproject(0, 0), unproject(W, H), k, lat0, pt));
  }

  // A faint 100 m-ish grid helps judge distance when there are no tiles.
  if (!tileUrl) svg.append(grid(k));

  const gz = s('g', { class: 'map-zones' });
  for (const z of zones) {
    const active = activeWindow(z);
    const label = [t('map.zone'), z.zone_id || z.id, active ? t('map.active', { window: active }) : null]
      .filter(Boolean).join(' · ');
    let shape = null;
    let anchor = null;
    if (z.kind === 'circle' && z.center && isNum(z.radius_m)) {
      anchor = pt(z.center.lat, z.center.lon);
      shape = s('circle', { cx: f(anchor[0]), cy: f(anchor[1]), r: f(z.radius_m * k), class: 'zone' });
      anchor = [anchor[0], anchor[1] - z.radius_m * k];
    } else if (Array.isArray(z.points) && z.points.length > 2) {
      const pts = z.points.map(([la, lo]) => pt(la, lo));
      shape = s('polygon', { points: pts.map((p) => p.map(f).join(',')).join(' '), class: 'zone' });
      anchor = pts.reduce((a, p) => (p[1] < a[1] ? p : a));
    }
    if (!shape) continue;
    shape.append(s('title', null, label));
    gz.append(shape);
    if (active) {
      gz.append(s('text', { x: f(anchor[0]), y: f(Math.max(12, anchor[1] - 4)), class: 'zone-label' },
        t('map.active', { window: active })));
    }
  }
  svg.append(gz);

  if (track.length) {
    const pts = track.map((p) => pt(p.lat, p.lon));
    const gt = s('g', { class: 'map-track' });
    if (pts.length > 1) {
      gt.append(s('polyline', { points: pts.map((p) => p.map(f).join(',')).join(' '), class: 'track' }));
    }
    track.forEach((p, i) => {
      if (i === track.length - 1) return;
      gt.append(s('circle', { cx: f(pts[i][0]), cy: f(pts[i][1]), r: 2.5, class: 'track-pt' },
        s('title', null, formatTime(p.ts))));
    });
    const last = track[track.length - 1];
    const lp = pts[pts.length - 1];
    if (isNum(last.accuracy_m) && last.accuracy_m > 0) {
      gt.append(s('circle', { cx: f(lp[0]), cy: f(lp[1]), r: f(last.accuracy_m * k), class: 'accuracy' }));
    }
    gt.append(s('circle', { cx: f(lp[0]), cy: f(lp[1]), r: 6, class: 'track-last' },
      s('title', null, `${t('map.latest')} ${formatTime(last.ts)}`)));
    svg.append(gt);
  }

  if (position) {
    const [px, py] = pt(position.lat, position.lon);
    svg.append(s('g', { class: 'map-position' },
      s('circle', { cx: f(px), cy: f(py), r: 14, class: 'pos-ring' }),
      s('circle', { cx: f(px), cy: f(py), r: 7, class: 'pos-dot' },
        s('title', null, `${t('map.position')} ${position.lat.toFixed(5)}, ${position.lon.toFixed(5)}`))));
  }

  svg.append(scaleBar(k), northArrow());

  const legend = h('div', { class: 'map-legend' },
    position ? h('span', { class: 'lg lg-pos' }, t('map.position')) : null,
    track.length ? h('span', { class: 'lg lg-track' }, t('map.track')) : null,
    track.length ? h('span', { class: 'lg lg-last' }, t('map.latest')) : null,
    zones.length ? h('span', { class: 'lg lg-zone' }, t('map.zone')) : null,
    position ? h('span', { class: 'coords' }, `${position.lat.toFixed(5)}, ${position.lon.toFixed(5)}`) : null);
  return h('div', { class: 'map-wrap', dataset: { testid: 'map' } }, svg, legend);
}

function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

/** "HH:MM-HH:MM" from `active` or from `active_from`/`active_to`; null = always active. */
function activeWindow(z) {
  if (z.active) return z.active;
  return z.active_from && z.active_to ? `${z.active_from}-${z.active_to}` : null;
}

function zoneAnchor(zones) {
  for (const z of zones) {
    if (z.center) return z.center;
    if (z.points && z.points.length) return { lat: z.points[0][0], lon: z.points[0][1] };
  }
  return null;
}

/** 1, 2 or 5 × 10^n metres, the largest not longer than `maxM`. */
function niceLength(maxM) {
  const p = 10 ** Math.floor(Math.log10(maxM));
  for (const m of [5, 2, 1]) if (m * p <= maxM) return m * p;
  return p;
}

function metres(m) {
  return m >= 1000 ? `${m / 1000} km` : `${m} m`;
}

function scaleBar(k) {
  const len = niceLength((W * 0.25) / k);
  const px = len * k;
  const x = 14;
  const y = H - 16;
  return s('g', { class: 'scale-bar', 'aria-label': `${t('map.scale')} ${metres(len)}` },
    s('rect', { x: x - 6, y: y - 20, width: px + 12, height: 28, class: 'map-chip' }),
    s('path', { d: `M${x},${y - 5}V${y}H${(x + px).toFixed(1)}V${y - 5}`, class: 'scale-line' }),
    s('text', { x: (x + px / 2).toFixed(1), y: y - 8, class: 'scale-text' }, metres(len)));
}

function northArrow() {
  const x = W - 24;
  const y = 16;
  return s('g', { class: 'north' },
    s('rect', { x: x - 14, y: y - 8, width: 28, height: 44, class: 'map-chip' }),
    s('path', { d: `M${x},${y}L${x + 7},${y + 18}L${x},${y + 13}L${x - 7},${y + 18}Z`, class: 'north-arrow' }),
    s('text', { x, y: y + 32, class: 'north-text' }, t('map.north')));
}

function grid(k) {
  const step = niceLength((W / 5) / k) * k; // about five lines across
  const g = s('g', { class: 'grid' });
  for (let x = step; x < W; x += step) g.append(s('line', { x1: x.toFixed(1), y1: 0, x2: x.toFixed(1), y2: H }));
  for (let y = step; y < H; y += step) g.append(s('line', { x1: 0, y1: y.toFixed(1), x2: W, y2: y.toFixed(1) }));
  return g;
}

// --- XYZ tiles (web mercator) -------------------------------------------------------------------

function lon2tile(lon, z) {
  return ((lon + 180) / 360) * 2 ** z;
}
function lat2tile(lat, z) {
  const r = lat * DEG;
  return ((1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2) * 2 ** z;
}
function tile2lon(x, z) {
  return (x / 2 ** z) * 360 - 180;
}
function tile2lat(y, z) {
  const n = Math.PI - (2 * Math.PI * y) / 2 ** z;
  return Math.atan(Math.sinh(n)) / DEG;
}

function tiles(template, nw, se, k, lat0, pt) {
  const g = s('g', { class: 'tiles' });
  // Zoom whose ground resolution (m per 256-px tile pixel) best matches ours (1/k m per unit).
  const z = Math.max(0, Math.min(19, Math.round(Math.log2(156543.034 * Math.cos(lat0 * DEG) * k))));
  const xa = Math.floor(lon2tile(nw.lon, z));
  const xb = Math.floor(lon2tile(se.lon, z));
  const ya = Math.floor(lat2tile(nw.lat, z));
  const yb = Math.floor(lat2tile(se.lat, z));
  if ((xb - xa + 1) * (yb - ya + 1) > MAX_TILES) return g;
  const n = 2 ** z;
  for (let x = xa; x <= xb; x++) {
    for (let y = ya; y <= yb; y++) {
      if (y < 0 || y >= n) continue;
      const wx = ((x % n) + n) % n;
      const [sx0, sy0] = pt(tile2lat(y, z), tile2lon(x, z));
      const [sx1, sy1] = pt(tile2lat(y + 1, z), tile2lon(x + 1, z));
      const url = template.replace('{z}', z).replace('{x}', wx).replace('{y}', y)
        .replace('{s}', 'abc'[(wx + y) % 3]).replace('{r}', '');
      const img = s('image', {
        href: url, x: sx0.toFixed(1), y: sy0.toFixed(1), width: (sx1 - sx0 + 0.5).toFixed(1),
        height: (sy1 - sy0 + 0.5).toFixed(1), preserveAspectRatio: 'none',
      });
      img.addEventListener('error', () => img.remove()); // a missing tile leaves the geometry
      g.append(img);
    }
  }
  return g;
}
