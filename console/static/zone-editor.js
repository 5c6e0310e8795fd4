// A wearer's safe zones on a Leaflet map: shown to everyone, drawn and edited by clerks and
// admins with Leaflet-Geoman (vendor/leaflet-geoman/README.md says why that plugin).
//
// Zones arrive and leave in WGS-84; the map may be on GCJ-02 tiles (leafmap.js converts both
// ways). A circle keeps its radius in metres; a polygon's vertices are converted one by one.
// Nothing is saved until the clerk presses Save: a drawn or edited shape is a draft until then,
// and Cancel puts the zone back as the server has it.

import { h, clear } from './dom.js';
import { t } from './i18n.js';
import { createMap } from './leafmap.js';

const DEFAULT_CENTER = { lat: 37.5133, lon: 122.1204 }; // Weihai, the seed deployment
const ZONE_STYLE = { color: '#2e7d32', weight: 2, dashArray: '6 4', fillOpacity: 0.13, className: 'zone-shape' };
const DRAFT_STYLE = { color: '#1565c0', weight: 3, fillOpacity: 0.15 };
const round7 = (v) => Math.round(v * 1e7) / 1e7;

export class ZoneEditor {
  /** onSave(zoneId, zoneIn) and onDelete(zoneId) return promises; the caller reloads after. */
  constructor({ config, canEdit, onSave, onDelete }) {
    this.config = config;
    this.canEdit = canEdit;
    this.onSave = onSave;
    this.onDelete = onDelete;
    this.view = null;
    this.layers = new Map(); // zone id -> Leaflet layer
    this.draft = null; // {id, layer, isNew}
  }

  /** The card: toolbar, map, zone list, draft form. Call mount() once it is in the document. */
  element(wearer) {
    this.wearer = wearer;
    this.zones = wearer.zones || [];
    this.mapEl = h('div', { class: 'zone-map', dataset: { testid: 'zone-map' } });
    this.list = h('ul', { class: 'zone-list' });
    this.form = h('div', { class: 'zone-form', hidden: true });
    this.error = h('p', { class: 'action-error', role: 'alert', hidden: true });
    const tools = this.canEdit && wearer.active !== false ? h('div', { class: 'zone-tools' },
      h('button', { type: 'button', class: 'btn', dataset: { testid: 'zone-draw-circle' },
        onclick: () => this.startDraw('Circle') }, t('zones.drawCircle')),
      h('button', { type: 'button', class: 'btn', dataset: { testid: 'zone-draw-polygon' },
        onclick: () => this.startDraw('Polygon') }, t('zones.drawPolygon')),
      h('span', { class: 'muted small zone-hint' })) : null;
    this.hint = tools ? tools.querySelector('.zone-hint') : null;
    return h('section', { class: 'card zones-card', dataset: { testid: 'zones-card' } },
      h('h3', null, t('zones.heading')),
      tools, this.error, h('div', { class: 'zone-body' }, this.mapEl, h('div', { class: 'zone-side' }, this.list, this.form)),
      h('p', { class: 'muted small' }, t(this.config.tile_coord_system === 'gcj02' ? 'zones.gcj02' : 'zones.wgs84')));
  }

  mount() {
    this.destroy();
    this.view = createMap(this.mapEl, this.config, { center: this.center() });
    const { map } = this.view;
    if (map.pm) {
      map.pm.setLang(document.documentElement.lang.startsWith('zh') ? 'zh' : 'en');
      map.pm.setGlobalOptions({ allowSelfIntersection: false, pathOptions: DRAFT_STYLE, templineStyle: DRAFT_STYLE,
        hintlineStyle: { ...DRAFT_STYLE, dashArray: '5 5' } });
      map.on('pm:create', (e) => this.created(e.layer));
    }
    if (this.wearer.home) {
      this.view.L.circleMarker(this.view.toMap(this.wearer.home.lat, this.wearer.home.lon),
        { radius: 6, color: '#fff', weight: 2, fillColor: '#0d47a1', fillOpacity: 1, pmIgnore: true, className: 'home-marker' })
        .bindTooltip(h('span', null, t('zones.home'))).addTo(map);
    }
    this.drawZones();
    this.renderList();
  }

  destroy() {
    if (this.view) this.view.remove();
    this.view = null;
    this.layers.clear();
    this.draft = null;
  }

  center() {
    if (this.wearer.home) return this.wearer.home;
    for (const z of this.zones) {
      if (z.center) return z.center;
      if (z.points && z.points.length) return { lat: z.points[0][0], lon: z.points[0][1] };
    }
    return DEFAULT_CENTER;
  }

  drawZones() {
    const { L, map, toMap } = this.view;
    for (const layer of this.layers.values()) layer.remove();
    this.layers.clear();
    for (const z of this.zones) {
      let layer = null;
      if (z.kind === 'circle' && z.center) layer = L.circle(toMap(z.center.lat, z.center.lon), { ...ZONE_STYLE, radius: z.radius_m });
      else if (z.kind === 'polygon' && z.points) layer = L.polygon(z.points.map(([la, lo]) => toMap(la, lo)), ZONE_STYLE);
      if (!layer) continue;
      // A DOM node, not a string: Leaflet writes string tooltips with innerHTML.
      layer.bindTooltip(h('span', null, zoneLabel(z)));
      layer.addTo(map);
      this.layers.set(z.id, layer);
    }
    const all = [...this.layers.values()];
    if (all.length) map.fitBounds(L.featureGroup(all).getBounds(), { padding: [24, 24], maxZoom: 17, animate: false });
  }

  renderList() {
    const rows = this.zones.map((z) => h('li', { class: 'zone-row', dataset: { testid: 'zone-row', zoneId: z.id, kind: z.kind } },
      h('span', { class: 'zone-name' }, z.name || z.id),
      h('span', { class: 'muted small' }, [t(`zones.kind.${z.kind}`),
        z.kind === 'circle' ? ` ${Math.round(z.radius_m)} m` : ` ${(z.points || []).length} ${t('zones.points')}`,
        ' · ', z.active ? t('map.active', { window: z.active }) : t('zones.always')]),
      this.canEdit && this.wearer.active !== false ? h('span', { class: 'zone-actions' },
        h('button', { type: 'button', class: 'btn link', dataset: { testid: 'zone-edit' }, onclick: () => this.startEdit(z) }, t('zones.edit')),
        h('button', { type: 'button', class: 'btn link danger', dataset: { testid: 'zone-delete' }, onclick: () => this.remove(z) }, t('zones.delete'))) : null));
    if (!rows.length) rows.push(h('li', { class: 'muted' }, t('zones.none')));
    clear(this.list).append(...rows);
  }

  showError(msg) {
    this.error.hidden = !msg;
    this.error.textContent = msg || '';
  }

  // --- Drawing and editing ----------------------------------------------------------------

  startDraw(shape) {
    if (!this.view || !this.view.map.pm) return;
    this.cancelDraft();
    this.showError('');
    if (this.hint) this.hint.textContent = t(shape === 'Circle' ? 'zones.hint.circle' : 'zones.hint.polygon');
    this.view.map.pm.enableDraw(shape, { pathOptions: DRAFT_STYLE });
  }

  created(layer) {
    this.view.map.pm.disableDraw();
    if (this.hint) this.hint.textContent = '';
    this.draft = { id: null, layer, isNew: true, zone: { name: '', active: null } };
    layer.pm.enable({ allowSelfIntersection: false });
    this.renderForm();
  }

  startEdit(z) {
    this.cancelDraft();
    const layer = this.layers.get(z.id);
    if (!layer) return;
    layer.setStyle(DRAFT_STYLE);
    layer.pm.enable({ allowSelfIntersection: false });
    this.draft = { id: z.id, layer, isNew: false, zone: z };
    this.renderForm();
  }

  cancelDraft() {
    const d = this.draft;
    this.draft = null;
    if (this.view) this.view.map.pm.disableDraw();
    if (d) {
      d.layer.pm.disable();
      if (d.isNew) d.layer.remove();
      else this.drawZones(); // back to the server's shape
    }
    this.form.hidden = true;
    clear(this.form);
  }

  renderForm() {
    const z = this.draft.zone;
    const [from, to] = (z.active || '-').split('-');
    const name = h('input', { type: 'text', maxlength: 100, value: z.name || '', dataset: { testid: 'zone-name' },
      placeholder: t('zones.name.placeholder') });
    const fromIn = h('input', { type: 'time', value: from || '', dataset: { testid: 'zone-from' } });
    const toIn = h('input', { type: 'time', value: to || '', dataset: { testid: 'zone-to' } });
    const save = h('button', { type: 'submit', class: 'btn primary', dataset: { testid: 'zone-save' } }, t('zones.save'));
    const form = h('form', { class: 'zone-draft', novalidate: true },
      h('h4', null, t(this.draft.isNew ? 'zones.new' : 'zones.editing')),
      h('label', { class: 'field' }, h('span', { class: 'field-label' }, t('zones.name')), name),
      h('div', { class: 'field' }, h('span', { class: 'field-label' }, t('zones.window')),
        h('span', { class: 'time-window' }, fromIn, ' – ', toIn)),
      h('p', { class: 'muted small' }, t('zones.window.help')),
      h('div', { class: 'row-buttons' }, save,
        h('button', { type: 'button', class: 'btn', onclick: () => this.cancelDraft() }, t('zones.cancel'))));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if ((fromIn.value && !toIn.value) || (!fromIn.value && toIn.value)) {
        this.showError(t('zones.window.both'));
        return;
      }
      const body = { ...this.geometry(this.draft.layer), name: name.value.trim() || null,
        active: fromIn.value ? `${fromIn.value}-${toIn.value}` : null };
      const id = this.draft.id || newZoneId();
      save.disabled = true;
      try {
        await this.onSave(id, body);
        this.showError('');
      } catch (err) {
        this.showError(err.message);
        save.disabled = false;
      }
    });
    this.form.hidden = false;
    clear(this.form).append(form);
    name.focus();
  }

  /** The draft layer's shape in WGS-84, as ZoneIn wants it. */
  geometry(layer) {
    const { L, fromMap } = this.view;
    if (layer instanceof L.Circle) {
      const c = fromMap(layer.getLatLng());
      return { kind: 'circle', center: { lat: round7(c.lat), lon: round7(c.lon) },
        radius_m: Math.round(layer.getRadius() * 10) / 10 };
    }
    const ring = layer.getLatLngs()[0];
    return { kind: 'polygon', points: ring.map((ll) => {
      const p = fromMap(ll);
      return [round7(p.lat), round7(p.lon)];
    }) };
  }

  async remove(z) {
    if (!window.confirm(t('zones.delete.confirm', { name: z.name || z.id }))) return;
    try {
      await this.onDelete(z.id);
    } catch (err) {
      this.showError(err.message);
    }
  }
}

function zoneLabel(z) {
  return [z.name || z.id, z.active ? t('map.active', { window: z.active }) : null].filter(Boolean).join(' · ');
}

/** Zone ids are the wearer's own ([A-Za-z0-9_.:-]); the name is what people read. */
function newZoneId() {
  return `z-${Date.now().toString(36)}`;
}
