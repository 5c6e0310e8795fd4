// One wearer's page: details form, devices (bind, unbind, history), contacts (ordered),
// safe zones on the map (zone-editor.js), the audit trail, deactivation. Also the enrolment
// form for a new wearer (the details form alone, then the page once created).
//
// Clerks and admins edit; every other role reads (the server refuses their writes anyway, 403:
// hiding the controls is for clarity, not security). Edits send the `version` they were made
// against: someone else's change meanwhile answers 409 and the page reloads what is current.

import { h, clear, formatTime } from './dom.js';
import { t, tEnum } from './i18n.js';
import * as api from './api.js';
import { ZoneEditor } from './zone-editor.js';
import { regionOptions } from './wearers.js';

const SEXES = ['female', 'male'];
const LIVING = ['alone', 'empty_nest', 'with_family', 'care_home'];
const CARE = ['special_difficulty', 'low_income', 'disabled', 'dementia', 'over_80'];
const KINDS = ['bracelet', 'watch', 'fall_sensor', 'home_sensor', 'pendant'];
const PROTOCOLS = ['mqtt', 'watch3g', 'gt06'];
const REASONS = ['moved_away', 'deceased', 'other'];
const CHANNELS = ['sms', 'voice', 'email'];

export class WearerPage {
  /** ctx: config(), canEdit(), regions(), regionName(code), onBack(), onOpen(id), onSaved() */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.wearer = null;
    this.zoneEditor = null;
  }

  leave() {
    if (this.zoneEditor) this.zoneEditor.destroy();
    this.zoneEditor = null;
  }

  async show(id) {
    this.leave();
    this.id = id;
    clear(this.root).append(h('p', { class: 'muted' }, t('detail.loading')));
    try {
      const [w, audit] = await Promise.all([api.wearer(id), api.wearerAudit(id).catch((err) => ({ error: err }))]);
      if (this.id !== id) return;
      this.wearer = w;
      this.audit = audit;
      this.render();
    } catch (err) {
      if (this.id !== id) return;
      clear(this.root).append(this.backLink(), h('p', { class: 'load-error', role: 'alert' }, t('err.wearer', { msg: api.errorText(err) })));
    }
  }

  /** The enrolment form: a new wearer. */
  showNew() {
    this.leave();
    this.id = null;
    this.wearer = null;
    const form = this.detailsForm(null);
    clear(this.root).append(this.backLink(),
      h('div', { class: 'wearer-page', dataset: { testid: 'wearer-new-page' } },
        h('h2', null, t('wearer.newHeading')), h('section', { class: 'card' }, form)));
  }

  backLink() {
    return h('button', { type: 'button', class: 'btn link back', dataset: { testid: 'wearers-back' },
      onclick: () => this.ctx.onBack() }, t('wearer.back'));
  }

  rerender() {
    if (this.wearer) this.render();
  }

  render() {
    const w = this.wearer;
    const edit = this.editable();
    this.leave();
    this.zoneEditor = new ZoneEditor({
      config: this.ctx.config(), canEdit: edit,
      onSave: (zoneId, zone) => this.act(() => api.putZone(w.id, zoneId, zone)),
      onDelete: (zoneId) => this.act(() => api.deleteZone(w.id, zoneId)),
    });
    this.message = h('p', { class: 'action-error', role: 'alert', dataset: { testid: 'wearer-error' }, hidden: true });
    clear(this.root).append(this.backLink(),
      h('div', { class: 'wearer-page', dataset: { testid: 'wearer-page', wearerId: w.id, active: String(w.active !== false), editable: String(edit) } },
        h('div', { class: 'detail-header' },
          h('h2', null, h('span', { class: 'subject' }, w.name), h('span', { class: 'muted mono' }, w.id)),
          h('span', { class: `status-chip ${w.active === false ? '' : 'st-resolved'}` },
            w.active === false ? t('wearer.inactive', { reason: tEnum('reason', w.deactivation_reason), at: formatTime(w.deactivated_at) }) : t('wearers.activeState')),
          w.active === false && w.deactivation_note ? h('span', { class: 'muted' }, w.deactivation_note) : null,
          h('span', { class: 'muted small record-meta' }, t('wearer.meta', { created: formatTime(w.created_at), updated: formatTime(w.updated_at), version: w.version }))),
        this.message,
        h('div', { class: 'wearer-grid' },
          h('section', { class: 'card' }, h('h3', null, t('wearer.details')), this.detailsForm(w)),
          h('div', { class: 'wearer-right' }, this.devicesCard(), this.contactsCard(), edit ? this.deactivateCard() : null)),
        this.zoneEditor.element(w),
        this.auditCard()));
    this.zoneEditor.mount();
  }

  editable() {
    return this.ctx.canEdit() && (!this.wearer || this.wearer.active !== false);
  }

  showError(msg) {
    if (!this.message) return;
    this.message.hidden = !msg;
    this.message.textContent = msg || '';
  }

  /** Run a write; reload the page after it (or after a 409: someone changed it meanwhile). */
  async act(fn) {
    try {
      const out = await fn();
      await this.show(this.wearer.id);
      this.ctx.onSaved();
      return out;
    } catch (err) {
      if (err.status === 409) {
        const msg = api.errorText(err);
        await this.show(this.wearer.id);
        this.showError(msg);
      } else {
        this.showError(api.errorText(err));
      }
      throw new Error(api.errorText(err));
    }
  }

  // --- Details ----------------------------------------------------------------------------

  detailsForm(w) {
    const edit = this.ctx.canEdit() && (!w || w.active !== false);
    const v = w || { care_categories: [], conditions: [], timezone: 'Asia/Shanghai' };
    const dis = !edit;
    const input = (name, attrs = {}) => h('input', { name, value: v[name] ?? '', disabled: dis, dataset: { testid: `f-${name}` }, ...attrs });
    const select = (name, values, prefix) => h('select', { name, disabled: dis, dataset: { testid: `f-${name}` } },
      h('option', { value: '' }, '—'), values.map((x) => h('option', { value: x, selected: v[name] === x }, tEnum(prefix, x))));
    const g = v.guardian || {};
    const fields = [
      !w ? ['wf.id', input('id', { required: true, pattern: '[A-Za-z0-9_.:\\-]{1,64}', placeholder: 'W-0001', class: 'mono' })] : null,
      ['wf.name', input('name', { required: true, maxlength: 100 })],
      ['wf.sex', select('sex', SEXES, 'sex')],
      ['wf.birth_year', input('birth_year', { type: 'number', min: 1900, max: 2100 })],
      ['wf.birth_date', input('birth_date', { type: 'date' })],
      ['wf.id_card', h('span', { class: 'idcard' },
        w && w.id_card_masked ? h('span', { class: 'mono', dataset: { testid: 'idcard-masked' } }, w.id_card_masked) : null,
        edit ? input('id_card', { value: '', autocomplete: 'off', maxlength: 32, class: 'mono',
          placeholder: t(w && w.id_card_masked ? 'wf.id_card.replace' : 'wf.id_card.new') }) : null,
        !edit && !(w && w.id_card_masked) ? '—' : null)],
      ['wf.phone', input('phone', { type: 'tel' })],
      ['wf.address', input('address', { maxlength: 500 })],
      ['wf.region', h('select', { name: 'region', disabled: dis, required: true, dataset: { testid: 'f-region' } },
        h('option', { value: '' }, '—'), regionOptions(this.ctx.regions(), v.region),
        v.region && !this.ctx.regions().some((r) => r.code === v.region) ? h('option', { value: v.region, selected: true }, v.region) : null)],
      ['wf.living_situation', select('living_situation', LIVING, 'living')],
      ['wf.care_categories', h('span', { class: 'checks' }, CARE.map((c) => h('label', null,
        h('input', { type: 'checkbox', name: 'care_categories', value: c, checked: (v.care_categories || []).includes(c), disabled: dis }),
        tEnum('care', c))))],
      ['wf.conditions', h('input', { name: 'conditions', value: (v.conditions || []).join('、'), disabled: dis,
        placeholder: t('wf.conditions.help'), dataset: { testid: 'f-conditions' } })],
      ['wf.guardian', h('span', { class: 'inline-fields' },
        h('input', { name: 'guardian_name', value: g.name || '', placeholder: t('wf.guardian.name'), disabled: dis, dataset: { testid: 'f-guardian-name' } }),
        h('input', { name: 'guardian_phone', type: 'tel', value: g.phone || '', placeholder: t('wf.guardian.phone'), disabled: dis }),
        h('input', { name: 'guardian_relation', value: g.relation || '', placeholder: t('wf.guardian.relation'), disabled: dis }))],
      ['wf.home', h('span', { class: 'inline-fields' },
        h('input', { name: 'home_lat', type: 'number', step: 'any', value: v.home ? v.home.lat : '', placeholder: t('wf.lat'), disabled: dis }),
        h('input', { name: 'home_lon', type: 'number', step: 'any', value: v.home ? v.home.lon : '', placeholder: t('wf.lon'), disabled: dis }))],
      ['wf.timezone', input('timezone')],
      ['wf.notes', h('textarea', { name: 'notes', rows: 3, maxlength: 2000, disabled: dis, dataset: { testid: 'f-notes' } }, v.notes || '')],
    ].filter(Boolean);
    const err = h('p', { class: 'action-error', role: 'alert', hidden: true, dataset: { testid: 'details-error' } });
    const ok = h('span', { class: 'action-ok', role: 'status' });
    const save = edit ? h('button', { type: 'submit', class: 'btn primary', dataset: { testid: 'details-save' } },
      t(w ? 'wf.save' : 'wf.create')) : null;
    const form = h('form', { class: 'details-form', novalidate: true, dataset: { testid: 'details-form' } },
      h('div', { class: 'form-grid' }, fields.map(([label, control]) => [h('label', { class: 'field-label' }, t(label)), control])),
      err, edit ? h('div', { class: 'row-buttons' }, save, ok) : null);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.hidden = true;
      ok.textContent = '';
      let body;
      try {
        body = readDetails(form, w);
      } catch (e) {
        err.hidden = false;
        err.textContent = e.message;
        return;
      }
      save.disabled = true;
      try {
        if (!w) {
          const created = await api.createWearer(body);
          this.ctx.onSaved();
          this.ctx.onOpen(created.id);
          return;
        }
        await this.act(() => api.updateWearer(w.id, body));
      } catch (e) {
        err.hidden = false;
        err.textContent = e instanceof api.ApiError ? api.errorText(e) : e.message;
      } finally {
        save.disabled = false;
      }
    });
    return form;
  }

  // --- Devices ------------------------------------------------------------------------------

  devicesCard() {
    const w = this.wearer;
    const edit = this.editable();
    const rows = (w.devices || []).map((d) => h('tr', { dataset: { testid: 'bound-device', deviceId: d.id } },
      h('td', { class: 'mono' }, d.id),
      h('td', null, tEnum('kind', d.kind)),
      h('td', null, [d.model, d.protocol].filter(Boolean).join(' · ') || '—'),
      h('td', { class: 'mono' }, [d.imei, d.sim].filter(Boolean).join(' / ') || '—'),
      h('td', null, d.handed_out_on || '—'),
      edit ? h('td', null, h('button', { type: 'button', class: 'btn link danger', dataset: { testid: 'unbind' },
        onclick: (e) => this.unbindForm(e.target, d) }, t('dev.unbind'))) : null));
    if (!rows.length) rows.push(h('tr', null, h('td', { colspan: 6, class: 'muted' }, t('dev.none'))));
    const history = (w.bindings || []).map((b) => h('li', { dataset: { testid: 'binding', deviceId: b.device_id } },
      h('span', { class: 'mono' }, b.device_id), ' ',
      t('dev.bound', { at: formatTime(b.bound_at), by: b.bound_by || '—' }),
      b.unbound_at ? ['; ', t('dev.unbound', { at: formatTime(b.unbound_at), by: b.unbound_by || '—', reason: b.unbind_reason || '—' })] : ''));
    return h('section', { class: 'card', dataset: { testid: 'devices-card' } },
      h('h3', null, t('dev.heading')),
      h('table', { class: 'table' }, h('thead', null, h('tr', null,
        ['dev.id', 'dev.kind', 'dev.model', 'dev.imei', 'dev.handedOut', edit ? 'dev.actions' : null].filter(Boolean).map((k) => h('th', null, t(k))))),
      h('tbody', null, rows)),
      edit ? this.bindForm() : null,
      h('h4', null, t('dev.history')),
      history.length ? h('ul', { class: 'bindings' }, history) : h('p', { class: 'muted' }, t('dev.history.none')));
  }

  unbindForm(button, d) {
    const cell = button.parentElement;
    const reason = h('input', { type: 'text', maxlength: 200, placeholder: t('dev.unbind.reason'), dataset: { testid: 'unbind-reason' } });
    const form = h('form', { class: 'inline-form' }, reason,
      h('button', { type: 'submit', class: 'btn danger', dataset: { testid: 'unbind-confirm' } }, t('dev.unbind')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (!reason.value.trim()) { reason.focus(); return; }
      this.act(() => api.unbindDevice(d.id, reason.value.trim())).catch(() => {});
    });
    clear(cell).append(form);
    reason.focus();
  }

  /** Bind by device id: an id already registered is bound as it is; a new one is registered
   *  (kind, model, IMEI...) in the wearer's region and bound. */
  bindForm() {
    const w = this.wearer;
    const id = h('input', { name: 'device_id', required: true, class: 'mono', placeholder: t('dev.id.placeholder'), dataset: { testid: 'bind-device-id' } });
    const kind = h('select', { name: 'kind', dataset: { testid: 'bind-kind' } }, KINDS.map((k) => h('option', { value: k }, tEnum('kind', k))));
    const proto = h('select', { name: 'protocol' }, h('option', { value: '' }, '—'), PROTOCOLS.map((p) => h('option', { value: p }, p)));
    const coord = h('select', { name: 'coord_system', dataset: { testid: 'bind-coord' } },
      ['wgs84', 'gcj02'].map((c) => h('option', { value: c }, t(`coord.${c}`))));
    const model = h('input', { name: 'model', placeholder: t('dev.model') });
    const imei = h('input', { name: 'imei', class: 'mono', inputmode: 'numeric', placeholder: 'IMEI', dataset: { testid: 'bind-imei' } });
    const sim = h('input', { name: 'sim', type: 'tel', placeholder: t('dev.sim') });
    const handed = h('input', { name: 'handed_out_on', type: 'date', value: new Date().toISOString().slice(0, 10) });
    const status = h('p', { class: 'muted small' }, t('dev.bind.help'));
    const submit = h('button', { type: 'submit', class: 'btn primary', dataset: { testid: 'bind-submit' } }, t('dev.bind'));
    const form = h('form', { class: 'bind-form', novalidate: true, dataset: { testid: 'bind-form' } },
      h('h4', null, t('dev.bind.heading')),
      h('div', { class: 'inline-fields' }, id, kind, model),
      h('div', { class: 'inline-fields' }, imei, sim, proto),
      h('div', { class: 'inline-fields' }, h('label', { class: 'field-label' }, t('dev.handedOut')), handed, coord),
      status, submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const deviceId = id.value.trim();
      if (!deviceId) { id.focus(); return; }
      submit.disabled = true;
      try {
        await this.act(async () => {
          try {
            await api.device(deviceId);
          } catch (err) {
            if (err.status !== 404) throw err;
            const body = { id: deviceId, kind: kind.value, region: w.region, coord_system: coord.value };
            if (model.value.trim()) body.model = model.value.trim();
            if (proto.value) body.protocol = proto.value;
            if (imei.value.trim()) body.imei = imei.value.trim();
            if (sim.value.trim()) body.sim = sim.value.trim();
            if (handed.value) body.handed_out_on = handed.value;
            await api.createDevice(body);
          }
          return api.bindDevice(deviceId, w.id);
        });
      } catch { /* shown by act() */ } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  // --- Contacts -----------------------------------------------------------------------------

  contactsCard() {
    const edit = this.editable();
    this.contacts = (this.wearer.contacts || []).map((c) => ({ ...c, channels: [...(c.channels || ['sms'])] }));
    this.contactsList = h('ol', { class: 'contacts', dataset: { testid: 'contacts' } });
    this.renderContacts();
    const err = h('p', { class: 'action-error', role: 'alert', hidden: true });
    const save = h('button', { type: 'button', class: 'btn primary', dataset: { testid: 'contacts-save' }, onclick: async () => {
      err.hidden = true;
      const body = this.contacts.map((c) => {
        const o = { name: c.name.trim(), phone: c.phone.trim(), language: c.language || 'zh', channels: c.channels };
        if (c.relation && c.relation.trim()) o.relation = c.relation.trim();
        if (c.email && c.email.trim()) o.email = c.email.trim();
        return o;
      });
      save.disabled = true;
      try {
        await this.act(() => api.putContacts(this.wearer.id, body));
      } catch (e) {
        err.hidden = false;
        err.textContent = e.message;
      } finally {
        save.disabled = false;
      }
    } }, t('contacts.save'));
    return h('section', { class: 'card', dataset: { testid: 'contacts-card' } },
      h('h3', null, t('contacts.heading')), h('p', { class: 'muted small' }, t('contacts.help')),
      this.contactsList, err,
      edit ? h('div', { class: 'row-buttons' },
        h('button', { type: 'button', class: 'btn', dataset: { testid: 'contact-add' }, onclick: () => {
          if (this.contacts.length >= 10) return;
          this.contacts.push({ name: '', phone: '', relation: '', email: '', language: 'zh', channels: ['sms'] });
          this.renderContacts();
        } }, t('contacts.add')), save) : null);
  }

  renderContacts() {
    const edit = this.editable();
    const list = this.contacts;
    const items = list.map((c, i) => {
      if (!edit) {
        return h('li', { dataset: { testid: 'contact' } }, h('strong', null, c.name), ' ', c.relation ? `(${c.relation}) ` : '',
          h('span', { class: 'mono' }, c.phone), ' · ', c.channels.map((ch) => tEnum('channel', ch)).join('、'),
          c.email ? ` · ${c.email}` : '', ` · ${c.language === 'en' ? 'English' : '中文'}`);
      }
      const bind = (field) => (e) => { c[field] = e.target.value; };
      const move = (d) => () => {
        const j = i + d;
        if (j < 0 || j >= list.length) return;
        [list[i], list[j]] = [list[j], list[i]];
        this.renderContacts();
      };
      return h('li', { class: 'contact-edit', dataset: { testid: 'contact' } },
        h('div', { class: 'inline-fields' },
          h('input', { value: c.name, placeholder: t('contacts.name'), oninput: bind('name'), dataset: { testid: 'contact-name' } }),
          h('input', { value: c.relation || '', placeholder: t('contacts.relation'), oninput: bind('relation') }),
          h('input', { type: 'tel', value: c.phone, placeholder: t('contacts.phone'), oninput: bind('phone'), dataset: { testid: 'contact-phone' } })),
        h('div', { class: 'inline-fields' },
          h('input', { type: 'email', value: c.email || '', placeholder: t('contacts.email'), oninput: bind('email') }),
          h('select', { onchange: bind('language') }, [['zh', '中文'], ['en', 'English']].map(([k, l]) => h('option', { value: k, selected: c.language === k }, l))),
          CHANNELS.map((ch) => h('label', { class: 'check' }, h('input', { type: 'checkbox', checked: c.channels.includes(ch),
            onchange: (e) => { c.channels = e.target.checked ? [...new Set([...c.channels, ch])] : c.channels.filter((x) => x !== ch); } }),
          tEnum('channel', ch)))),
        h('div', { class: 'row-buttons' },
          h('button', { type: 'button', class: 'btn link', disabled: i === 0, onclick: move(-1), 'aria-label': t('contacts.up') }, '↑'),
          h('button', { type: 'button', class: 'btn link', disabled: i === list.length - 1, onclick: move(1), 'aria-label': t('contacts.down') }, '↓'),
          h('button', { type: 'button', class: 'btn link danger', onclick: () => { list.splice(i, 1); this.renderContacts(); } }, t('contacts.remove'))));
    });
    if (!items.length) items.push(h('li', { class: 'muted' }, t('contacts.none')));
    clear(this.contactsList).append(...items);
  }

  // --- Deactivation and audit -----------------------------------------------------------------

  deactivateCard() {
    const reason = h('select', { dataset: { testid: 'deactivate-reason' } }, h('option', { value: '' }, t('deact.choose')),
      REASONS.map((r) => h('option', { value: r }, tEnum('reason', r))));
    const note = h('input', { type: 'text', maxlength: 500, placeholder: t('deact.note') });
    const err = h('p', { class: 'action-error', role: 'alert', hidden: true });
    const form = h('form', { class: 'deactivate-form', novalidate: true },
      h('p', { class: 'muted small' }, t('deact.help')), h('div', { class: 'inline-fields' }, reason, note), err,
      h('button', { type: 'submit', class: 'btn danger', dataset: { testid: 'deactivate' } }, t('deact.submit')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (!reason.value) {
        err.hidden = false;
        err.textContent = t('deact.required');
        return;
      }
      if (!window.confirm(t('deact.confirm', { name: this.wearer.name }))) return;
      this.act(() => api.deactivateWearer(this.wearer.id, reason.value, note.value.trim() || null)).catch(() => {});
    });
    return h('details', { class: 'card deactivate' }, h('summary', null, t('deact.heading')), form);
  }

  auditCard() {
    const a = this.audit || {};
    let body;
    if (a.error) body = h('p', { class: 'load-error' }, t('err.audit', { msg: api.errorText(a.error) }));
    else if (!(a.entries || []).length) body = h('p', { class: 'muted' }, t('detail.audit.none'));
    else body = h('ol', { class: 'audit-trail reg-audit' }, a.entries.map(auditEntry));
    return h('section', { class: 'card', dataset: { testid: 'wearer-audit' } }, h('h3', null, t('wearer.audit')), body);
  }
}

function auditEntry(e) {
  const changes = diff(e.before, e.after);
  return h('li', { class: 'audit-entry', dataset: { testid: 'reg-audit-entry', action: e.action } },
    h('span', { class: 'audit-time' }, formatTime(e.at)),
    h('span', { class: 'audit-actor' }, e.actor || '—'),
    h('span', { class: 'audit-action' }, tEnum('raction', e.action), e.device_id ? h('span', { class: 'mono muted' }, ` ${e.device_id}`) : null),
    h('span', { class: 'audit-detail' }, changes.length ? h('table', { class: 'diff' }, h('tbody', null, changes.map(([k, b, a]) =>
      h('tr', null, h('td', { class: 'mono' }, k), h('td', { class: 'before' }, b), h('td', null, '→'), h('td', { class: 'after' }, a)))))
      : ''));
}

/** [field, before, after] for each top-level field that differs (values as short JSON). */
function diff(before, after) {
  const b = before && typeof before === 'object' ? before : {};
  const a = after && typeof after === 'object' ? after : {};
  const show = (v) => (v === undefined || v === null ? '—' : typeof v === 'string' ? v : JSON.stringify(v));
  const skip = new Set(['version', 'updated_at', 'created_at']);
  const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])].filter((k) => !skip.has(k));
  const same = (k) => JSON.stringify(b[k] ?? null) === JSON.stringify(a[k] ?? null);
  return keys.filter((k) => !same(k)).map((k) => [k, show(b[k]), show(a[k])]);
}

/** The details form as WearerIn (new) or WearerPatch (`version` + the fields that changed). */
function readDetails(form, w) {
  const f = form.elements;
  const str = (name) => (f[name] ? f[name].value.trim() : '');
  const num = (name) => (str(name) === '' ? null : Number(str(name)));
  const out = {
    name: str('name'),
    sex: str('sex') || null,
    birth_year: num('birth_year'),
    birth_date: str('birth_date') || null,
    phone: str('phone') || null,
    address: str('address') || null,
    region: str('region'),
    living_situation: str('living_situation') || null,
    care_categories: [...form.querySelectorAll('input[name=care_categories]:checked')].map((x) => x.value),
    conditions: str('conditions').split(/[,，、;；]/).map((x) => x.trim()).filter(Boolean),
    guardian: str('guardian_name') ? { name: str('guardian_name'), phone: str('guardian_phone') || null,
      relation: str('guardian_relation') || null } : null,
    notes: str('notes') || null,
    timezone: str('timezone') || 'Asia/Shanghai',
    home: null,
  };
  if (!out.name) throw new Error(t('wf.name.required'));
  if (!out.region) throw new Error(t('wf.region.required'));
  if (str('home_lat') !== '' || str('home_lon') !== '') {
    const lat = num('home_lat');
    const lon = num('home_lon');
    if (!Number.isFinite(lat) || !Number.isFinite(lon)) throw new Error(t('wf.home.invalid'));
    out.home = { lat, lon };
  }
  if (out.birth_date && !out.birth_year) out.birth_year = Number(out.birth_date.slice(0, 4));
  if (str('id_card')) out.id_card = str('id_card'); // a new number replaces the stored one
  if (!w) {
    out.id = str('id');
    if (!out.id) throw new Error(t('wf.id.required'));
    for (const k of Object.keys(out)) if (out[k] === null) delete out[k];
    return out;
  }
  const patch = { version: w.version };
  for (const [k, v] of Object.entries(out)) {
    if (k === 'id_card' || JSON.stringify(v) !== JSON.stringify(w[k] ?? (Array.isArray(v) ? [] : null))) patch[k] = v;
  }
  return patch;
}
