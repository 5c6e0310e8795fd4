// The alert detail panel (right column): actions, wearer, device, times, evidence, deliveries
// and the audit trail.
//
// The action forms are built once per selected alert and only updated afterwards: live
// updates re-render the other sections many times while an officer types a note, and that
// must never wipe what they typed.

import * as api from './api.js';
import { h, clear, formatTime, relSpan, ageFromBirthYear, parseTs } from './dom.js';
import { t, tEnum } from './i18n.js';
import { renderMap } from './map.js';
import { renderAccelPlot } from './plot.js';
import { subjectName, outcomeText } from './queue.js';

const OUTCOMES = ['false_alarm', 'safe', 'helped_on_site', 'ambulance', 'police', 'other'];

export class DetailPanel {
  /**
   * deps: getAlert(id) (the store's copy), me() (user name), names (wearer id -> name),
   * devices (device id -> device), mapConfig() (GET /console/config: the tile source),
   * onAlertChanged(alert) (an action's answer),
   * onDetail(detail) (a detail arrived).
   */
  constructor(root, deps) {
    this.root = root;
    this.deps = deps;
    this.seq = 0;
    this.renderEmpty();
  }

  renderEmpty() {
    this.id = null;
    this.els = null;
    clear(this.root).append(h('p', { class: 'detail-empty' }, t('detail.empty')));
  }

  /** Select an alert: build the panel and load its detail and evidence. */
  show(id) {
    if (id !== this.id) {
      Object.assign(this, { id, detail: null, evidence: null, evidenceError: null, loadError: null,
        conflict: null, conflictKey: null, evidenceKey: null });
      this.build();
    }
    return this.refresh();
  }

  /** The store's copy changed (stream or list): update at once, reload the detail shortly. */
  update(alert) {
    if (alert.id !== this.id) return;
    this.renderTop();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 250);
  }

  /** The freshest summary: the store's copy or the fetched detail, whichever is newer. */
  current() {
    const a = this.deps.getAlert(this.id);
    const d = this.detail && this.detail.id === this.id ? this.detail : null;
    if (!a || !d) return a || d;
    return (parseTs(d.updated_at) ?? 0) > (parseTs(a.updated_at) ?? 0) ? d : a;
  }

  async refresh() {
    const id = this.id;
    if (id === null) return;
    const seq = ++this.seq;
    const a = this.current();
    // The evidence only changes with new events: fetch it again only when one arrived.
    const key = a ? `${a.last_ts}|${a.event_count}` : null;
    const needEvidence = !this.evidence || !key || key !== this.evidenceKey;
    const [det, ev, cmds] = await Promise.allSettled([
      api.alertDetail(id), needEvidence ? api.evidence(id) : this.evidence, api.deviceCommands(id)]);
    if (seq !== this.seq || id !== this.id) return; // a newer selection or refresh won
    this.loadError = det.status === 'rejected' ? api.errorText(det.reason) : null;
    if (det.status === 'fulfilled') {
      this.detail = det.value;
      this.deps.onDetail(det.value);
    }
    this.evidenceError = ev.status === 'rejected' ? api.errorText(ev.reason) : null;
    if (ev.status === 'fulfilled') {
      this.evidence = ev.value;
      this.evidenceKey = key;
    }
    // Commands are an extra: a service without them (503) just shows no command box.
    this.commands = cmds.status === 'fulfilled' ? cmds.value : null;
    this.renderTop();
    this.renderInfo();
  }

  /** Language switch: rebuild everything but keep what was typed. */
  rerender() {
    if (!this.els) return this.renderEmpty();
    const fields = ['note', 'resolveNote', 'outcome', 'cmdNumber'];
    const typed = fields.map((f) => this.els[f].value);
    this.build();
    fields.forEach((f, i) => { this.els[f].value = typed[i]; });
  }

  build() {
    const e = {};
    const form = (cls, submit, ...children) => h('form', { class: cls,
      onsubmit: (ev) => { ev.preventDefault(); submit(); } }, ...children);
    e.header = h('header', { class: 'detail-header' });
    e.conflict = h('div', { class: 'conflict', role: 'alert', dataset: { testid: 'conflict-message' } });
    e.stateLine = h('div', { class: 'state-line' });
    e.error = h('div', { class: 'action-error', role: 'alert', dataset: { testid: 'action-error' }, hidden: true });
    e.ok = h('div', { class: 'action-ok', role: 'status', hidden: true });
    e.ack = h('button', { type: 'button', class: 'btn primary big', dataset: { testid: 'ack-button' },
      onclick: () => this.act(e.ack, (id) => api.acknowledge(id)) }, t('act.ack'));
    e.outcome = h('select', { dataset: { testid: 'resolve-outcome' }, 'aria-label': t('act.outcome') },
      h('option', { value: '' }, t('act.outcome.choose')),
      OUTCOMES.map((o) => h('option', { value: o }, tEnum('outcome', o))));
    e.resolveNote = h('input', { type: 'text', maxlength: 2000, dataset: { testid: 'resolve-note' },
      placeholder: t('act.resolveNote'), 'aria-label': t('act.resolveNote') });
    e.resolve = h('button', { type: 'submit', class: 'btn', dataset: { testid: 'resolve-button' } }, t('act.resolve'));
    e.note = h('textarea', { rows: 2, maxlength: 2000, dataset: { testid: 'note-input' },
      placeholder: t('act.note.placeholder'), 'aria-label': t('act.note'),
      onkeydown: (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) this.addNote(); } });
    e.noteSubmit = h('button', { type: 'submit', class: 'btn', dataset: { testid: 'note-submit' } }, t('act.note.submit'));
    e.resolveForm = form('resolve-form', () => this.resolve(),
      h('label', { class: 'field-label' }, t('act.outcome')), e.outcome, e.resolveNote, e.resolve);
    e.locate = h('button', { type: 'button', class: 'btn', dataset: { testid: 'cmd-locate' },
      onclick: () => this.command(e.locate, 'locate') }, t('cmd.locate'));
    e.call = h('button', { type: 'button', class: 'btn', dataset: { testid: 'cmd-call' },
      onclick: () => this.command(e.call, 'call_back') }, t('cmd.call'));
    e.cmdNumber = h('input', { type: 'tel', maxlength: 21, pattern: '\\+?[0-9]{3,20}', dataset: { testid: 'cmd-number' },
      placeholder: t('cmd.number'), 'aria-label': t('cmd.number') });
    e.cmdList = h('ul', { class: 'cmd-list', dataset: { testid: 'cmd-list' } });
    e.commands = h('div', { class: 'commands', dataset: { testid: 'device-commands' }, hidden: true },
      h('label', { class: 'field-label' }, t('cmd.title')), h('div', { class: 'cmd-buttons' }, e.locate, e.cmdNumber, e.call),
      e.cmdList);
    e.actions = h('section', { class: 'card actions' }, e.conflict, e.stateLine, e.ack, e.resolveForm,
      form('note-form', () => this.addNote(), h('label', { class: 'field-label' }, t('act.note')), e.note, e.noteSubmit),
      e.commands, e.error, e.ok);
    for (const k of ['facts', 'evidence', 'deliveries', 'audit']) e[k] = h('div', { class: k });
    e.loadError = h('div', { class: 'load-error', role: 'alert', hidden: true });
    this.els = e;
    clear(this.root).append(h('article', { class: 'detail', dataset: { testid: 'alert-detail', alertId: this.id } },
      e.header, e.loadError,
      h('div', { class: 'detail-grid' },
        h('div', { class: 'detail-left' }, e.actions, e.facts),
        h('div', { class: 'detail-right' }, e.evidence)),
      e.deliveries, e.audit));
    this.renderTop();
    this.renderInfo();
  }

  /** Header and actions: cheap, so they follow every change at once. */
  renderTop() {
    const a = this.current();
    const e = this.els;
    e.actions.hidden = !a;
    if (!a) {
      clear(e.header).append(h('h2', null, `#${this.id}`), h('span', { class: 'muted' }, t('detail.loading')));
      return;
    }
    const name = this.detail && this.detail.wearer ? this.detail.wearer.name : subjectName(a, this.deps.names);
    clear(e.header).append(
      h('span', { class: `prio prio-${a.priority}`, title: t(`priority.${a.priority}`) }, t('priority', { p: a.priority })),
      h('h2', null, tEnum('type', a.type), h('span', { class: 'subject' }, name)),
      h('span', { class: `status-chip st-${a.status}` }, tEnum('status', a.status)),
      h('span', { class: 'muted' }, `${t('detail.region')} ${a.region} · #${a.id}`),
      h('button', { type: 'button', class: 'btn link', onclick: () => this.refresh() }, t('detail.refresh')));
    this.root.firstChild.dataset.status = a.status;

    const mine = a.status === 'acknowledged' && a.acknowledged_by === this.deps.me();
    const other = a.status === 'acknowledged' && a.acknowledged_by && !mine;
    // The obvious next step is the primary button: claim an open alert, resolve one's own.
    e.ack.hidden = a.status !== 'open';
    e.resolveForm.hidden = a.status === 'resolved';
    e.resolve.className = mine ? 'btn primary big' : 'btn';
    // A 409's answer stands until the alert's state or owner changes; then the state speaks.
    if (this.conflict && ownerKey(a) !== this.conflictKey) this.conflict = null;
    setText(e.conflict, this.conflict || (other ? t('act.claimedBy', { owner: a.acknowledged_by }) : ''));
    let state = mine ? t('act.mine') : '';
    if (a.status === 'resolved') {
      state = [a.resolved_by ? t('act.resolvedBy', { owner: a.resolved_by }) : t('act.alreadyResolved'),
        a.outcome && t('act.resolvedOutcome', { outcome: outcomeText(a.outcome) })].filter(Boolean).join(' · ');
    }
    setText(e.stateLine, state);
    e.stateLine.classList.toggle('mine', mine);
    this.renderCommands();
  }

  /** The device-command box: buttons, the number field when no centre number is set, states. */
  renderCommands() {
    const e = this.els;
    const c = this.commands;
    e.commands.hidden = !c;
    if (!c) return;
    e.cmdNumber.hidden = Boolean(c.callback_number);
    const rows = c.commands.slice(-5).map((x) => h('li', { class: `cmd cmd-${x.status}`,
      dataset: { testid: 'cmd-row', status: x.status, command: x.command } },
    h('span', null, tEnum('cmd.name', x.command)), ' · ',
    h('span', { class: 'cmd-status' }, tEnum('cmdstatus', x.status)),
    x.reason ? h('span', { class: 'err-text' }, ` ${x.reason}`) : null,
    ' ', relSpan(x.updated_at)));
    clear(e.cmdList).append(...(rows.length ? rows : [h('li', { class: 'muted' }, t('cmd.none'))]));
  }

  /** Send a command to the alert's device; its states follow through the trail's stream. */
  async command(button, name) {
    const number = name === 'call_back' && !(this.commands && this.commands.callback_number)
      ? this.els.cmdNumber.value.trim() : '';
    if (name === 'call_back' && !number && !(this.commands && this.commands.callback_number)) {
      this.message(t('cmd.number.required'));
      return this.els.cmdNumber.focus();
    }
    const id = this.id;
    const label = button.textContent;
    button.disabled = true;
    button.textContent = t('act.busy');
    this.message('');
    try {
      this.commands = await api.sendCommand(id, name, number || undefined);
      if (id === this.id) this.renderCommands();
    } catch (err) {
      if (id === this.id) this.message(api.errorText(err));
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  message(error, ok = '') {
    setText(this.els.error, error);
    setText(this.els.ok, ok);
  }

  /** Run one action: disable its button, show errors, turn a 409 into "claimed by X". */
  async act(button, fn) {
    const id = this.id;
    const label = button.textContent;
    button.disabled = true;
    button.textContent = t('act.busy');
    this.message('');
    try {
      // The answer goes into the store, whose update refreshes this panel.
      this.deps.onAlertChanged(await fn(id));
      return true;
    } catch (err) {
      if (id !== this.id) return false;
      const b = err.body || {};
      if (err.status === 409) {
        this.conflict = b.status === 'resolved'
          ? (b.owner ? t('act.resolvedBy', { owner: b.owner }) : t('act.alreadyResolved'))
          : t('act.claimedBy', { owner: b.owner || '?' });
        this.conflictKey = ownerKey(this.current());
      } else {
        this.message(api.errorText(err));
      }
      this.refresh();
      return false;
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  async resolve() {
    const { outcome, resolveNote } = this.els;
    if (!outcome.value) {
      this.message(t('act.outcome.required'));
      return outcome.focus();
    }
    const note = resolveNote.value.trim() || undefined;
    if (await this.act(this.els.resolve, (id) => api.resolve(id, outcome.value, note))) {
      outcome.value = '';
      resolveNote.value = '';
    }
  }

  async addNote() {
    const { note } = this.els;
    if (!note.value.trim()) {
      this.message(t('act.note.empty'));
      return note.focus();
    }
    if (await this.act(this.els.noteSubmit, (id) => api.addNote(id, note.value.trim()))) {
      note.value = '';
      this.message('', t('act.note.saved'));
    }
  }

  // --- Information sections -------------------------------------------------------------

  renderInfo() {
    const e = this.els;
    setText(e.loadError, this.loadError);
    const a = this.current();
    const d = this.detail;
    if (!a) return;
    clear(e.facts).append(this.wearerCard(d), this.deviceCard(a), this.timesCard(a));
    this.renderEvidence(a, d);
    const deliveries = (d && d.deliveries) || [];
    clear(e.deliveries).append(card(t('detail.deliveries'), deliveries.length
      ? h('table', { class: 'table deliveries-table', dataset: { testid: 'deliveries' } },
        h('thead', null, h('tr', null, ['col.recipient', 'col.channel', 'col.address', 'col.status',
          'col.attempts', 'col.sentAt', 'col.error'].map((k) => h('th', null, t(k))))),
        h('tbody', null, deliveries.map(deliveryRow)))
      : h('p', { class: 'muted' }, t(d ? 'detail.deliveries.none' : 'detail.loading'))));
    const audit = (d && d.audit) || [];
    clear(e.audit).append(card(t('detail.audit'),
      h('ol', { class: 'audit-trail', dataset: { testid: 'audit-trail' } }, audit.map(auditRow)),
      audit.length ? null : h('p', { class: 'muted' }, t(d ? 'detail.audit.none' : 'detail.loading'))));
  }

  wearerCard(d) {
    const w = d && d.wearer;
    if (!w) return card(t('detail.wearer'), d ? h('p', { class: 'muted' }, t('detail.noWearer')) : null);
    const age = ageFromBirthYear(w.birth_year);
    return card(t('detail.wearer'),
      h('p', { class: 'wearer-name' }, w.name,
        age !== null ? h('span', null, t('detail.age', { age })) : null,
        w.birth_year ? h('span', { class: 'muted' }, t('detail.birth', { year: w.birth_year })) : null),
      h('div', { class: 'conditions' }, h('span', { class: 'field-label' }, t('detail.conditions')),
        (w.conditions || []).length
          ? w.conditions.map((c) => h('span', { class: 'chip cond' }, c))
          : h('span', { class: 'muted' }, t('detail.none'))),
      h('p', { class: 'muted small' }, w.id));
  }

  deviceCard(a) {
    const dev = this.deps.devices.get(a.device_id);
    const rows = [[t('detail.device'), a.device_id]];
    if (dev) {
      rows.push([t('dcol.kind'), dev.kind || '—'],
        [t('dcol.state'), t(dev.online ? 'devices.online' : 'devices.offline')],
        [t('dcol.battery'), typeof dev.battery_pct === 'number' ? `${Math.round(dev.battery_pct)}%` : '—'],
        [t('dcol.worn'), t(dev.worn === true ? 'devices.worn' : dev.worn === false ? 'devices.notWorn' : 'devices.unknown')],
        [t('dcol.lastSeen'), relSpan(dev.last_seen)]);
    }
    return card(t('detail.device'), dl(rows));
  }

  timesCard(a) {
    const rows = [
      [t('detail.openedAt'), formatTime(a.opened_at)],
      [t('detail.firstTs'), formatTime(a.first_ts)],
      [t('detail.lastTs'), formatTime(a.last_ts)],
      [t('detail.eventCount'), String(a.event_count)],
    ];
    if (a.acknowledged_at) rows.push([t('detail.ackAt'), `${formatTime(a.acknowledged_at)} · ${a.acknowledged_by || ''}`]);
    if (a.resolved_at) rows.push([t('detail.resolvedAt'), `${formatTime(a.resolved_at)} · ${a.resolved_by || ''}`]);
    if (a.outcome) rows.push([t('detail.outcome'), outcomeText(a.outcome)]);
    return card(t('detail.times'), dl(rows));
  }

  renderEvidence(a, d) {
    const ev = this.evidence || {};
    const parts = [];
    if (this.evidenceError) parts.push(h('p', { class: 'load-error' }, t('detail.evidence.error', { msg: this.evidenceError })));
    if (ev.accel) {
      // A fall the watch detected itself comes without raw samples: say so rather than hide it.
      parts.push(h('h4', null, t('detail.accel')),
        renderAccelPlot(ev.accel) || h('p', { class: 'muted' }, t('detail.accel.none')));
    }
    const position = ev.position || (typeof a.lat === 'number' ? { lat: a.lat, lon: a.lon } : null);
    const track = (ev.track && ev.track.length) ? ev.track : (d && d.positions) || [];
    const map = renderMap({ position, zones: ev.zones || [], track, config: this.deps.mapConfig() });
    if (map) parts.push(h('h4', null, t('detail.map')), map);
    const facts = eventFacts(ev.event);
    if (facts.length) parts.push(h('h4', null, t('detail.event')), dl(facts));
    if (!parts.length) parts.push(h('p', { class: 'muted' }, t('detail.evidence.none')));
    clear(this.els.evidence).append(card(t('detail.evidence'), parts));
  }
}

// --- Helpers --------------------------------------------------------------------------------

function setText(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

function card(title, ...children) {
  return h('section', { class: 'card' }, h('h3', null, title), ...children);
}

function dl(rows) {
  return h('dl', null, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

function ownerKey(a) {
  return a ? `${a.status}|${a.acknowledged_by || ''}` : '';
}

function deliveryRow(x) {
  return h('tr', { class: `dl-${x.status}`, dataset: { testid: 'delivery-row', status: x.status } },
    h('td', null, recipientText(x.recipient)),
    h('td', null, tEnum('channel', x.channel)),
    h('td', { class: 'mono' }, x.address || ''),
    h('td', null, h('span', { class: `dstatus ds-${x.status}` }, tEnum('dstatus', x.status))),
    h('td', { class: 'num' }, String(x.attempts ?? '')),
    h('td', null, x.sent_at ? formatTime(x.sent_at) : '—'),
    h('td', { class: 'err-text' }, x.last_error || ''));
}

function auditRow(x) {
  return h('li', { class: `audit-entry act-${x.action}`, dataset: { testid: 'audit-entry', action: x.action } },
    h('time', { class: 'audit-time', datetime: x.at }, formatTime(x.at)),
    h('span', { class: 'audit-actor' }, x.actor),
    h('span', { class: 'audit-action' }, tEnum('action', x.action)),
    h('span', { class: 'audit-detail' }, auditSummary(x.detail || {})));
}

/** "dispatch" -> 12349 调度中心, "family:2" -> 家属 2, "community" -> 社区工作人员. */
function recipientText(r) {
  const m = /^family:(\w+)$/.exec(r || '');
  if (m) return t('recipient.family', { n: m[1] === 'all' ? t('recipient.all') : m[1] });
  return tEnum('recipient', r);
}

/** One line saying what an audit entry did, from the details the actions record. */
function auditSummary(d) {
  const parts = [];
  const add = (cond, text) => { if (cond) parts.push(text()); };
  add(d.event_type, () => tEnum('type', d.event_type));
  add(d.severity, () => d.severity);
  add(typeof d.step === 'number', () => `#${d.step + 1}`);
  add(d.action, () => tEnum('escal', d.action));
  add(Array.isArray(d.targets) && d.targets.length, () => `→ ${d.targets.map(recipientText).join(', ')}`);
  add(d.recipient, () => recipientText(d.recipient));
  add(d.channel, () => tEnum('channel', d.channel));
  add(d.attempt, () => `#${d.attempt}`);
  add(d.outcome, () => outcomeText(d.outcome));
  add(d.claim_timeout_s, () => `${d.claim_timeout_s} s`);
  for (const k of ['count', 'after_cycles', 'reason', 'error']) add(d[k] !== undefined, () => String(d[k]));
  const note = typeof d.note === 'string' && d.note ? h('q', { class: 'note-text' }, d.note) : null;
  if (!parts.length && !note) {
    const rest = Object.keys(d).length ? JSON.stringify(d) : '';
    return rest.length > 160 ? `${rest.slice(0, 160)}…` : rest;
  }
  return h('span', null, parts.join(' · '), parts.length && note ? ' ' : '', note);
}

/** The detection event as label/value pairs: scalars, its `evidence` object flattened. */
function eventFacts(event) {
  const out = [];
  const walk = (obj, prefix) => {
    for (const [k, v] of Object.entries(obj || {})) {
      if (out.length >= 14 || (!prefix && (k === 'id' || k === 'device_id'))) continue;
      if (v && typeof v === 'object' && !Array.isArray(v)) {
        if (!prefix) walk(v, `${k}.`);
      } else if (!Array.isArray(v) || v.length <= 6) {
        let val = Array.isArray(v) ? v.join(', ') : String(v);
        if (k === 'event_type' || k === 'type') val = tEnum('type', v);
        else if (k === 'ts' || k.endsWith('_at')) val = formatTime(v);
        out.push([`${prefix}${k}`, val]);
      }
    }
  };
  walk(event, '');
  return out;
}
