// A Leaflet map on the console's tile source, in the tiles' coordinate system.
//
// Leaflet and Leaflet-Geoman are classic scripts (static/vendor/, loaded by index.html before
// the modules) and leave `L` on window. Nothing is fetched unless /console/config names a
// tile_url: without one the map is the same Leaflet map on a plain background (the demo).
//
// Every coordinate crosses here: `toMap` takes a stored WGS-84 position to where it is drawn
// on these tiles, `fromMap` takes a drawn or clicked position back to WGS-84 (coords.js).

import { toDisplay, fromDisplay } from './coords.js';
import { t } from './i18n.js';

export function leaflet() {
  const L = window.L;
  if (!L) throw new Error('Leaflet did not load (static/vendor/leaflet/leaflet.js)');
  return L;
}

/** Map in `el` for `config` (GET /console/config), centred on `center` ({lat, lon}, WGS-84). */
export function createMap(el, config, { center, zoom = 16 } = {}) {
  const L = leaflet();
  const system = config.tile_coord_system === 'gcj02' ? 'gcj02' : 'wgs84';
  const maxZoom = config.tile_max_zoom || 18;
  // No zoom or fade animations: the console redraws a wearer's or an alert's map when its
  // record changes, and a map removed while an animation is still running throws from
  // Leaflet's transition callbacks ("reading '_leaflet_pos'"). A duty console gains nothing
  // from the animation and must not log errors.
  const map = L.map(el, {
    maxZoom, minZoom: 3, attributionControl: !!config.tile_url,
    zoomAnimation: false, fadeAnimation: false, markerZoomAnimation: false,
  });
  if (config.tile_url) {
    L.tileLayer(config.tile_url, {
      maxZoom, subdomains: config.tile_subdomains || 'abc', attribution: config.tile_attribution || '',
    }).addTo(map);
  } else {
    el.classList.add('map-plain');
  }
  L.control.scale({ metric: true, imperial: false }).addTo(map);
  const view = {
    L,
    map,
    system,
    toMap: (lat, lon) => {
      const p = toDisplay(lat, lon, system);
      return L.latLng(p.lat, p.lon);
    },
    fromMap: (ll) => fromDisplay(ll.lat, ll.lng, system),
  };
  map.setView(view.toMap(center.lat, center.lon), zoom);
  el.dataset.coordSystem = system;
  view.remove = () => {
    map.stop();   // a pan still running (inertia after a drag) would fire on a removed map
    map.remove();
  };
  el.setAttribute('aria-label', t('zones.map'));
  return view;
}
