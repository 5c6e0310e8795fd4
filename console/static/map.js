// The map of one alert: position, safe zones, recent track, on Leaflet (vendored, like the
// wearer page's zone map; leafmap.js makes the map on the console's tile source).
//
// Everything arrives in WGS-84. On GCJ-02 tiles (Amap/Gaode, Tencent: `[console]
// tile_coord_system = "gcj02"`) leafmap.js converts every position, track point and zone
// vertex before it is drawn, or it would sit 300-600 m off the streets; the coordinates printed
// under the map stay the stored WGS-84 ones. Without a tile_url nothing is fetched: the same
// geometry on a plain background with a scale bar.
//
// The detail panel re-renders on every change to the alert (a claim, a note): the map element
// is kept while what it shows is the same, so the officer's zoom and pan survive.

import { h, formatTime } from './dom.js';
import { t } from './i18n.js';
import { createMap } from './leafmap.js';

const ZONE = { color: '#2e7d32', weight: 2, dashArray: '6 4', fillOpacity: 0.13, className: 'zone-shape' };
const MIN_EXTENT_M = 300; // a lone point still shows its neighbourhood

let kept = null; // {key, el, view}: the map last drawn

/** position {lat, lon} (red marker), zones, track [{ts, lat, lon, accuracy_m}] oldest first,
 *  config (GET /console/config); null when there is nothing to draw. */
export function renderMap({ position, zones = [], track = [], config = {} }) {
  track = track.filter((p) => isNum(p.lat) && isNum(p.lon));
  const origin = position || track[track.length - 1] || zoneAnchor(zones);
  if (!origin) return null;
  const key = JSON.stringify([position, zones, track, config.tile_url, config.tile_coord_system]);
  if (kept && kept.key === key) return kept.el;
  if (kept) kept.view.remove();

  const mapEl = h('div', { class: 'alert-map', role: 'img', 'aria-label': t('detail.map') });
  const legend = h('div', { class: 'map-legend' },
    position ? h('span', { class: 'lg lg-pos' }, t('map.position')) : null,
    track.length ? h('span', { class: 'lg lg-track' }, t('map.track')) : null,
    track.length ? h('span', { class: 'lg lg-last' }, t('map.latest')) : null,
    zones.length ? h('span', { class: 'lg lg-zone' }, t('map.zone')) : null,
    position ? h('span', { class: 'coords' }, `${position.lat.toFixed(5)}, ${position.lon.toFixed(5)}`) : null);
  const el = h('div', { class: 'map-wrap', dataset: { testid: 'map' } }, mapEl, legend);
  const view = createMap(mapEl, config, { center: origin });
  draw(view, { position, zones, track });
  kept = { key, el, view };
  // Leaflet measures its container: once the panel has put the element on the page, measure
  // again and frame what is drawn.
  requestAnimationFrame(() => {
    if (kept && kept.view === view && mapEl.isConnected) {
      view.map.invalidateSize();
      frame(view, view.bounds);
    }
  });
  return el;
}

function draw(view, { position, zones, track }) {
  const { L, map, toMap } = view;
  const bounds = L.latLngBounds([]);
  for (const z of zones) {
    let layer = null;
    if (z.kind === 'circle' && z.center && isNum(z.radius_m)) {
      layer = L.circle(toMap(z.center.lat, z.center.lon), { ...ZONE, radius: z.radius_m });
    } else if (Array.isArray(z.points) && z.points.length > 2) {
      layer = L.polygon(z.points.map(([la, lo]) => toMap(la, lo)), ZONE);
    }
    if (!layer) continue;
    const active = activeWindow(z);
    layer.addTo(map);
    // DOM nodes, not strings: Leaflet writes string tooltips with innerHTML.
    layer.bindTooltip(h('span', null, [t('map.zone'), z.name || z.zone_id || z.id].filter(Boolean).join(' · ')));
    if (active) {
      L.tooltip({ permanent: true, direction: 'top', className: 'zone-label', interactive: false })
        .setLatLng(L.latLng(layer.getBounds().getNorth(), layer.getBounds().getCenter().lng))
        .setContent(h('span', null, t('map.active', { window: active }))).addTo(map);
    }
    bounds.extend(layer.getBounds());
  }
  if (track.length) {
    const pts = track.map((p) => toMap(p.lat, p.lon));
    if (pts.length > 1) L.polyline(pts, { color: '#1e88e5', weight: 2.5, opacity: 0.8, className: 'track' }).addTo(map);
    track.forEach((p, i) => {
      if (i === track.length - 1) return;
      L.circleMarker(pts[i], { radius: 2.5, color: '#1e88e5', weight: 1.5, fillColor: '#fff', fillOpacity: 1 })
        .bindTooltip(h('span', null, formatTime(p.ts))).addTo(map);
    });
    const last = track[track.length - 1];
    const lp = pts[pts.length - 1];
    if (isNum(last.accuracy_m) && last.accuracy_m > 0) {
      L.circle(lp, { radius: last.accuracy_m, color: 'rgba(30, 136, 229, .5)', weight: 1, fillColor: '#1e88e5', fillOpacity: 0.12, interactive: false }).addTo(map);
    }
    L.circleMarker(lp, { radius: 6, color: '#fff', weight: 2, fillColor: '#0d47a1', fillOpacity: 1, className: 'track-last' })
      .bindTooltip(h('span', null, `${t('map.latest')} ${formatTime(last.ts)}`)).addTo(map);
    for (const p of pts) bounds.extend(p);
  }
  if (position) {
    const p = toMap(position.lat, position.lon);
    L.circleMarker(p, { radius: 14, color: '#c62828', weight: 2, fill: false, interactive: false, className: 'pos-ring' }).addTo(map);
    L.circleMarker(p, { radius: 7, color: '#fff', weight: 2.5, fillColor: '#c62828', fillOpacity: 1, className: 'pos-dot' })
      .bindTooltip(h('span', null, `${t('map.position')} ${position.lat.toFixed(5)}, ${position.lon.toFixed(5)}`)).addTo(map);
    bounds.extend(p);
  }
  view.bounds = bounds;
  frame(view, bounds);
}

/** Fit what is drawn, never closer than MIN_EXTENT_M across. */
function frame(view, bounds) {
  if (!bounds || !bounds.isValid()) return;
  const c = bounds.getCenter();
  const padded = bounds.extend(c.toBounds(MIN_EXTENT_M));
  view.map.fitBounds(padded, { padding: [16, 16], maxZoom: 18, animate: false });
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
