// "老人档案 / Elders": the elderly information database's list. One search box (name, phone,
// ID-card number, device id or IMEI: the server decides which, docs/registry-database.md), the
// region tree, care category and active filters; pages of 50 by id (`after` cursors, kept so
// "previous" goes back). Rows open the wearer page (wearer.js).

import { h, clear, ageFromBirthYear } from './dom.js';
import { t, tEnum, lang } from './i18n.js';
import * as api from './api.js';

const PAGE = 50;
const CARE = ['special_difficulty', 'low_income', 'disabled', 'dementia', 'over_80'];

export class WearersView {
  /** ctx: canEdit(), canExport(), regions() ([{code, name, level}]), regionName(code), onOpen(id), onNew() */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.filters = { q: '', region: '', care_category: '', active: 'true' };
    this.cursors = [null]; // cursor of each page shown so far; the last is the current page
    this.page = null;
    this.error = null;
    this.seq = 0;
  }

  render() {
    const f = this.filters;
    const q = h('input', { type: 'search', class: 'wearers-search', value: f.q, placeholder: t('wearers.search'),
      'aria-label': t('wearers.search'), dataset: { testid: 'wearers-search' },
      oninput: (e) => { f.q = e.target.value; this.debounced(); } });
    const regionSel = h('select', { dataset: { testid: 'wearers-region' }, 'aria-label': t('wearers.region'),
      onchange: (e) => { f.region = e.target.value; this.reload(); } },
    h('option', { value: '' }, t('wearers.region.all')),
    regionOptions(this.ctx.regions(), f.region));
    const careSel = h('select', { dataset: { testid: 'wearers-care' }, 'aria-label': t('wearers.care'),
      onchange: (e) => { f.care_category = e.target.value; this.reload(); } },
    h('option', { value: '' }, t('wearers.care.all')),
    CARE.map((c) => h('option', { value: c, selected: f.care_category === c }, tEnum('care', c))));
    const activeSel = h('select', { dataset: { testid: 'wearers-active' }, 'aria-label': t('wearers.active'),
      onchange: (e) => { f.active = e.target.value; this.reload(); } },
    [['true', 'wearers.active.yes'], ['false', 'wearers.active.no'], ['', 'wearers.active.all']]
      .map(([v, k]) => h('option', { value: v, selected: f.active === v }, t(k))));
    this.tbody = h('tbody');
    this.status = h('span', { class: 'muted' });
    this.prev = h('button', { type: 'button', class: 'btn', dataset: { testid: 'wearers-prev' },
      onclick: () => { this.cursors.pop(); this.load(); } }, t('wearers.prev'));
    this.next = h('button', { type: 'button', class: 'btn', dataset: { testid: 'wearers-next' },
      onclick: () => { this.cursors.push(this.page.next_after); this.load(); } }, t('wearers.next'));
    this.errorEl = h('p', { class: 'load-error', role: 'alert', hidden: true });
    const refocus = document.activeElement && document.activeElement.classList.contains('wearers-search');
    clear(this.root).append(
      h('div', { class: 'devices-head' }, h('h2', null, t('wearers.heading')), this.status,
        h('span', { class: 'spacer' }),
        this.ctx.canExport() ? h('span', { class: 'exports' }, t('wearers.export'),
          h('a', { class: 'btn link', href: api.exportUrl('csv', lang()), download: '', dataset: { testid: 'export-csv' } }, 'CSV'),
          h('a', { class: 'btn link', href: api.exportUrl('xlsx', lang()), download: '', dataset: { testid: 'export-xlsx' } }, 'Excel')) : null,
        this.ctx.canEdit() ? h('button', { type: 'button', class: 'btn primary', dataset: { testid: 'wearer-new' },
          onclick: () => this.ctx.onNew() }, t('wearers.new')) : null),
      h('div', { class: 'filters' }, q, regionSel, careSel, activeSel),
      this.errorEl,
      h('div', { class: 'table-scroll' }, h('table', { class: 'table wearers-table', dataset: { testid: 'wearers-table' } },
        h('thead', null, h('tr', null,
          ['wcol.name', 'wcol.id', 'wcol.age', 'wcol.region', 'wcol.phone', 'wcol.care', 'wcol.living', 'wcol.devices', 'wcol.idcard', 'wcol.state']
            .map((k) => h('th', null, t(k))))),
        this.tbody)),
      h('div', { class: 'pager' }, this.prev, this.next));
    if (refocus) q.focus();
    this.renderBody();
  }

  debounced() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.reload(), 250);
  }

  reload() {
    this.cursors = [null];
    this.load();
  }

  async load() {
    const seq = ++this.seq; // a slow answer to an older query must not overwrite a newer one
    const after = this.cursors[this.cursors.length - 1];
    try {
      const page = await api.wearers({ ...this.filters, limit: PAGE, after });
      if (seq !== this.seq) return;
      this.page = page;
      this.error = null;
    } catch (err) {
      if (seq !== this.seq) return;
      this.error = t('err.wearers', { msg: api.errorText(err) });
    }
    this.renderBody();
  }

  renderBody() {
    if (!this.tbody) return;
    const list = (this.page && this.page.wearers) || [];
    clear(this.tbody).append(...list.map((w) => this.row(w)));
    if (this.page && !list.length) this.tbody.append(h('tr', null, h('td', { colspan: 10, class: 'muted' }, t('wearers.empty'))));
    const n = this.cursors.length;
    this.status.textContent = this.page ? t('wearers.page', { page: n, n: list.length }) : t('detail.loading');
    this.prev.disabled = n <= 1;
    this.next.disabled = !(this.page && this.page.next_after);
    this.errorEl.hidden = !this.error;
    this.errorEl.textContent = this.error || '';
  }

  row(w) {
    const age = ageFromBirthYear(w.birth_year);
    const open = (ev) => { ev.preventDefault(); this.ctx.onOpen(w.id); };
    return h('tr', { class: w.active === false ? 'inactive' : '', dataset: { testid: 'wearer-row', wearerId: w.id } },
      h('td', null, h('a', { href: `#wearer/${encodeURIComponent(w.id)}`, onclick: open, dataset: { testid: 'wearer-link' } }, w.name)),
      h('td', { class: 'mono' }, w.id),
      h('td', null, [w.sex ? tEnum('sex', w.sex) : '', age !== null ? ` ${t('detail.age', { age })}` : ''].join('') || '—'),
      h('td', null, this.ctx.regionName(w.region)),
      h('td', { class: 'mono' }, w.phone || '—'),
      h('td', null, (w.care_categories || []).map((c) => h('span', { class: 'chip cond' }, tEnum('care', c)))),
      h('td', null, w.living_situation ? tEnum('living', w.living_situation) : '—'),
      h('td', { class: 'mono' }, (w.device_ids || []).join(', ') || '—'),
      h('td', { class: 'mono' }, w.id_card_masked || '—'),
      h('td', null, w.active === false ? t('wearers.inactive') : t('wearers.activeState')));
  }
}

/** The region tree as indented <option>s (codes nest by prefix; level = depth). */
export function regionOptions(regions, selected) {
  const depth = new Map();
  const sorted = [...regions].sort((a, b) => a.code.localeCompare(b.code));
  for (const r of sorted) depth.set(r.code, r.parent && depth.has(r.parent) ? depth.get(r.parent) + 1 : 0);
  return sorted.map((r) => h('option', { value: r.code, selected: r.code === selected },
    `${'\u00a0\u00a0'.repeat(depth.get(r.code))}${r.name} (${r.code})`));
}
