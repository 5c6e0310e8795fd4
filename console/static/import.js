// "导入 / Import": a civil-affairs or street list (CSV or XLSX) checked first, imported after.
// The check is the server's dry run: every bad cell by row and column, nothing written. Import
// is offered only for a file whose check found no error, and runs all-or-nothing (the server
// validates again inside its transaction, docs/registry-database.md "Import and export").

import { h, clear } from './dom.js';
import { t } from './i18n.js';
import * as api from './api.js';

const MAX_SHOWN = 1000; // rows of the error table drawn; the count says how many there are

export class ImportView {
  /** ctx: onImported() */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.file = null;
    this.report = null;
    this.error = null;
    this.busy = false;
    this.done = null;
  }

  render() {
    const input = h('input', { type: 'file', accept: '.csv,.xlsx,.xls,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
      dataset: { testid: 'import-file' }, onchange: (e) => {
        this.file = e.target.files[0] || null;
        this.report = null;
        this.done = null;
        this.error = null;
        this.renderResult();
      } });
    this.check = h('button', { type: 'button', class: 'btn primary', dataset: { testid: 'import-check' },
      onclick: () => this.run(true) }, t('import.check'));
    this.result = h('div', { class: 'import-result' });
    clear(this.root).append(
      h('div', { class: 'devices-head' }, h('h2', null, t('import.heading'))),
      h('section', { class: 'card import-card' },
        h('p', null, t('import.help')),
        h('p', { class: 'muted small' }, t('import.columns')),
        h('div', { class: 'inline-fields' }, input, this.check)),
      this.result);
    this.renderResult();
  }

  async run(dryRun) {
    if (!this.file || this.busy) return;
    this.busy = true;
    this.error = null;
    this.renderResult();
    try {
      const report = await api.importWearers(this.file, dryRun);
      if (dryRun) this.report = report;
      else if (report.errors && report.errors.length) this.report = report; // changed meanwhile
      else {
        this.done = report;
        this.report = null;
        this.ctx.onImported();
      }
    } catch (err) {
      this.error = api.errorText(err);
    } finally {
      this.busy = false;
      this.renderResult();
    }
  }

  renderResult() {
    if (!this.result) return;
    this.check.disabled = !this.file || this.busy;
    const parts = [];
    if (this.busy) parts.push(h('p', { class: 'muted' }, t('import.busy')));
    if (this.error) parts.push(h('p', { class: 'load-error', role: 'alert', dataset: { testid: 'import-error' } }, this.error));
    if (this.done) {
      parts.push(h('p', { class: 'action-ok', role: 'status', dataset: { testid: 'import-done' } },
        t('import.done', { rows: this.done.rows, created: this.done.created, updated: this.done.updated, bound: this.done.devices_bound })));
    }
    const r = this.report;
    if (r) {
      const errors = r.errors || [];
      parts.push(h('section', { class: 'card', dataset: { testid: 'import-report', errors: String(errors.length) } },
        h('h3', null, t('import.report')),
        h('p', { class: errors.length ? 'warn-text' : 'action-ok' }, errors.length
          ? t('import.bad', { rows: r.rows, valid: r.valid, n: errors.length })
          : t('import.good', { rows: r.rows, created: r.created, updated: r.updated, bound: r.devices_bound })),
        errors.length ? h('div', { class: 'table-scroll' }, h('table', { class: 'table import-errors', dataset: { testid: 'import-errors' } },
          h('thead', null, h('tr', null, ['import.row', 'import.column', 'import.value', 'import.message'].map((k) => h('th', { class: k === 'import.row' ? 'num' : null }, t(k))))),
          h('tbody', null, errors.slice(0, MAX_SHOWN).map((e) => h('tr', { dataset: { testid: 'import-error-row', row: String(e.row) } },
            h('td', { class: 'num' }, String(e.row)), h('td', null, e.column || '—'),
            h('td', { class: 'mono' }, e.value ?? ''), h('td', null, e.message)))))) : null,
        errors.length > MAX_SHOWN ? h('p', { class: 'muted' }, t('import.more', { n: MAX_SHOWN, total: errors.length })) : null,
        !errors.length && r.rows ? h('button', { type: 'button', class: 'btn primary', disabled: this.busy,
          dataset: { testid: 'import-run' }, onclick: () => this.run(false) }, t('import.run', { rows: r.rows })) : null));
    }
    clear(this.result).append(...parts);
  }
}
