// The devices view: the officer's regions' devices, online state, battery, last seen, worn.
// Default order puts what needs attention first (offline, not worn, low battery); column
// headers sort; a text filter narrows. A district can hold thousands of devices, so at most
// MAX_ROWS rows are drawn (the filter reaches the rest). Below the table, "Unregistered
// devices" (issue #7): ids that published on our regions' topics without being registered there;
// their readings are refused, their alarms raised anyway (docs/registry.md).

import { h, clear, relSpan, formatTime, parseTs } from './dom.js';
import { t, tEnum } from './i18n.js';

const LOW_BATTERY = 20;
const MAX_ROWS = 500;
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const battery = (d) => num(d.battery_pct) ?? 999;
const worn = (d) => (d.worn === false ? 0 : d.worn === true ? 2 : 1);

const UNREG_COLUMNS = ['ucol.device', 'ucol.region', 'ucol.readings', 'ucol.alarms', 'ucol.lastSeen', 'ucol.registry'];

const COLUMNS = [
  ['dcol.state', (d) => (d.online ? 1 : 0)],
  ['dcol.device', (d) => d.device_id || ''],
  ['dcol.kind', (d) => d.kind || ''],
  ['dcol.wearer', (d) => (d.wearer && d.wearer.name) || ''],
  ['dcol.region', (d) => d.region || ''],
  ['dcol.battery', battery],
  ['dcol.worn', worn],
  ['dcol.lastSeen', (d) => parseTs(d.last_seen) ?? 0],
];

function attentionOrder(a, b) {
  return (!!a.online - !!b.online) || (Math.min(worn(a), 1) - Math.min(worn(b), 1))
    || (battery(a) - battery(b)) || String(a.device_id).localeCompare(String(b.device_id));
}

export class DevicesView {
  constructor(root) {
    this.root = root;
    this.devices = [];
    this.error = null;
    this.sort = null; // {col, dir}; null = attention order
    this.filter = '';
    this.unregistered = [];
    this.unregisteredError = null;
  }

  setUnregistered(list, error) {
    if (list) this.unregistered = list;
    this.unregisteredError = error;
  }

  setData(devices, error) {
    if (devices) {
      this.devices = devices;
      this.loadedAt = new Date().toISOString();
    }
    this.error = error;
  }

  sorted() {
    const q = this.filter.trim().toLowerCase();
    const list = this.devices.filter((d) => !q || [d.device_id, d.kind, d.region, d.wearer && d.wearer.name]
      .some((v) => v && String(v).toLowerCase().includes(q)));
    if (!this.sort) return list.sort(attentionOrder);
    const [, value] = COLUMNS[this.sort.col];
    return list.sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      return this.sort.dir * (typeof va === 'number' ? va - vb : va.localeCompare(vb)) || attentionOrder(a, b);
    });
  }

  /** First click ascending, second descending, third back to attention order. */
  toggleSort(col) {
    const s = this.sort;
    this.sort = !s || s.col !== col ? { col, dir: 1 } : s.dir === 1 ? { col, dir: -1 } : null;
    this.render();
  }

  render() {
    const all = this.devices;
    const count = (f) => all.filter(f).length;
    const summary = t('devices.summary', { total: all.length, offline: count((d) => !d.online),
      notWorn: count((d) => d.worn === false), low: count((d) => (num(d.battery_pct) ?? 100) < LOW_BATTERY) });
    const refocus = document.activeElement && document.activeElement.classList.contains('devices-filter');
    const filter = h('input', { type: 'search', class: 'devices-filter', value: this.filter,
      placeholder: t('devices.filter'), 'aria-label': t('devices.filter'),
      oninput: (e) => { this.filter = e.target.value; this.renderBody(); } });
    const head = COLUMNS.map(([label], i) => {
      const dir = this.sort && this.sort.col === i ? this.sort.dir : 0;
      return h('th', { 'aria-sort': dir ? (dir > 0 ? 'ascending' : 'descending') : null },
        h('button', { type: 'button', class: 'th-sort', onclick: () => this.toggleSort(i) },
          t(label), dir ? (dir > 0 ? ' ▲' : ' ▼') : ''));
    });
    this.tbody = h('tbody');
    this.more = h('p', { class: 'muted', hidden: true });
    clear(this.root).append(
      h('div', { class: 'devices-head' }, h('h2', null, t('devices.heading')), h('span', { class: 'muted' }, summary),
        h('span', { class: 'muted small' }, this.loadedAt ? formatTime(this.loadedAt) : ''), filter),
      h('p', { class: 'load-error', role: 'alert', hidden: !this.error }, this.error ? t('err.devices', { msg: this.error }) : ''),
      h('div', { class: 'table-scroll' }, h('table', { class: 'table', dataset: { testid: 'devices-table' } },
        h('thead', null, h('tr', null, head)), this.tbody)),
      this.more, this.unregisteredSection());
    this.renderBody();
    if (refocus) filter.focus();
  }

  unregisteredSection() {
    const list = this.unregistered;
    const alarms = list.reduce((n, d) => n + (d.alarms || 0), 0);
    const rows = list.map(unregisteredRow);
    if (!rows.length) rows.push(h('tr', null, h('td', { colspan: UNREG_COLUMNS.length, class: 'muted' }, t('unreg.empty'))));
    const err = this.unregisteredError;
    return h('section', { class: 'unreg', dataset: { testid: 'unregistered-devices' } },
      h('div', { class: 'devices-head' }, h('h2', null, t('unreg.heading')),
        h('span', { class: alarms ? 'warn-text' : 'muted' }, t('unreg.summary', { n: list.length, alarms }))),
      h('p', { class: 'muted small' }, t('unreg.help')),
      h('p', { class: 'load-error', role: 'alert', hidden: !err }, err ? t('err.unregistered', { msg: err }) : ''),
      h('div', { class: 'table-scroll' }, h('table', { class: 'table', dataset: { testid: 'unregistered-table' } },
        h('thead', null, h('tr', null, UNREG_COLUMNS.map((k) => h('th', { class: k === 'ucol.readings' ? 'num' : null }, t(k))))),
        h('tbody', null, rows))));
  }

  renderBody() {
    const list = this.sorted();
    clear(this.tbody).append(...list.slice(0, MAX_ROWS).map(deviceRow));
    if (!list.length) this.tbody.append(h('tr', null, h('td', { colspan: COLUMNS.length, class: 'muted' }, t('devices.empty'))));
    this.more.hidden = list.length <= MAX_ROWS;
    this.more.textContent = t('devices.more', { n: MAX_ROWS, total: list.length });
  }
}

function unregisteredRow(d) {
  const reg = d.registered_region;
  const registry = reg == null ? t('unreg.notRegistered')
    : reg === d.region ? t('unreg.registeredNow') : t('unreg.registeredIn', { region: reg });
  const types = (d.alarm_types || []).map((x) => tEnum('type', x)).join(', ');
  return h('tr', { dataset: { testid: 'unregistered-row', deviceId: d.device_id, region: d.region } },
    h('td', { class: 'mono' }, d.device_id),
    h('td', null, d.region),
    h('td', { class: 'num' }, String(d.readings)),
    h('td', { class: d.alarms ? 'warn' : null }, d.alarms ? `${d.alarms} (${types})` : '0'),
    h('td', null, relSpan(d.last_seen)),
    h('td', null, registry));
}

function deviceRow(d) {
  const pct = num(d.battery_pct);
  const fill = h('span');
  fill.style.width = `${Math.max(0, Math.min(100, pct ?? 0))}%`; // CSSOM: allowed by a strict CSP
  return h('tr', { class: d.online ? '' : 'dev-offline',
    dataset: { testid: 'device-row', deviceId: d.device_id, online: String(!!d.online) } },
  h('td', null, h('span', { class: `dot ${d.online ? 'on' : 'off'}` }), t(d.online ? 'devices.online' : 'devices.offline')),
  h('td', { class: 'mono' }, d.device_id),
  h('td', null, d.kind || '—'),
  h('td', null, (d.wearer && d.wearer.name) || '—'),
  h('td', null, d.region || '—'),
  h('td', { class: pct !== null && pct < LOW_BATTERY ? 'battery low' : 'battery' },
    pct === null ? '—' : [h('span', { class: 'bar' }, fill), ` ${Math.round(pct)}%`]),
  h('td', { class: d.worn === false ? 'warn' : null },
    t(d.worn === true ? 'devices.worn' : d.worn === false ? 'devices.notWorn' : 'devices.unknown')),
  h('td', null, relSpan(d.last_seen)));
}
