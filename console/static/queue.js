// The alert queue (left column): unresolved alerts in priority order, and the recently
// resolved ones below. Rows are keyed by alert id and only rebuilt when something they show
// changed, then moved into order: a live update does not reset the scroll position or the
// keyboard focus of the row the officer is on.

import { h, relSpan } from './dom.js';
import { t, tEnum } from './i18n.js';

/** Who or what the alert is about, in the most human form we know. */
export function subjectName(a, names) {
  return (a.wearer_id && names.get(a.wearer_id)) || a.subject || a.wearer_id || a.device_id;
}

export function outcomeText(outcome) {
  if (!outcome) return '';
  if (outcome.startsWith('auto:')) return t('outcome.auto', { event: outcome.slice(5).trim() });
  return tEnum('outcome', outcome);
}

function rowSignature(a, ctx) {
  return [a.updated_at, a.status, a.priority, a.acknowledged_by, a.event_count, a.outcome,
    ctx.selectedId === a.id, ctx.unseen.has(a.id), ctx.names.get(a.wearer_id), ctx.lang].join('|');
}

function buildRow(a, ctx, testid) {
  const urgent = a.priority === 1 && a.status === 'open';
  const classes = ['alert-row', `p${a.priority}`, `st-${a.status}`];
  if (urgent) classes.push('urgent');
  if (ctx.selectedId === a.id) classes.push('selected');
  if (ctx.unseen.has(a.id)) classes.push('unseen');
  let owner = null;
  if (a.status === 'acknowledged' && a.acknowledged_by) {
    owner = a.acknowledged_by === ctx.me ? t('queue.mine') : t('queue.by', { who: a.acknowledged_by });
  }
  return h('button', {
    type: 'button', class: classes.join(' '),
    dataset: { testid, alertId: a.id, priority: a.priority, status: a.status, type: a.type },
    'aria-current': ctx.selectedId === a.id ? 'true' : null,
    onclick: () => ctx.onSelect(a.id),
  },
  h('span', { class: 'row-top' },
    h('span', { class: `prio prio-${a.priority}`, title: t(`priority.${a.priority}`) },
      t('priority', { p: a.priority })),
    h('span', { class: 'row-type' }, tEnum('type', a.type)),
    ctx.unseen.has(a.id) ? h('span', { class: 'badge-new' }, t('queue.new')) : null,
    h('span', { class: 'row-time' }, relSpan(a.status === 'resolved' ? a.resolved_at : a.opened_at))),
  h('span', { class: 'row-mid' },
    h('span', { class: 'row-subject' }, subjectName(a, ctx.names)),
    h('span', { class: 'row-region' }, a.region),
    a.event_count > 1 ? h('span', { class: 'row-count' }, t('queue.events', { n: a.event_count })) : null),
  h('span', { class: 'row-bottom' },
    h('span', { class: `status-chip st-${a.status}` }, tEnum('status', a.status)),
    owner ? h('span', { class: 'row-owner' }, owner) : null,
    a.status === 'resolved' ? h('span', { class: 'row-owner' }, outcomeText(a.outcome)) : null));
}

/** Keyed list rendering shared by the queue and the resolved list. */
export class AlertList {
  constructor(container, testid) {
    this.container = container;
    this.testid = testid;
    this.rows = new Map(); // id -> {el, sig}
  }

  render(alerts, ctx) {
    const keep = new Set();
    const ordered = [];
    for (const a of alerts) {
      keep.add(a.id);
      const sig = rowSignature(a, ctx);
      let row = this.rows.get(a.id);
      if (!row || row.sig !== sig) {
        const el = buildRow(a, ctx, this.testid);
        if (row) {
          const hadFocus = row.el === document.activeElement;
          row.el.replaceWith(el);
          if (hadFocus) el.focus({ preventScroll: true });
        } else if (ctx.animate) {
          el.classList.add('arrived'); // a short flash for rows that appear live
        }
        row = { el, sig };
        this.rows.set(a.id, row);
      }
      ordered.push(row.el);
    }
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.el.remove();
        this.rows.delete(id);
      }
    }
    // Move only the rows that are out of place.
    ordered.forEach((el, i) => {
      const at = this.container.children[i];
      if (at !== el) this.container.insertBefore(el, at || null);
    });
  }

  reset() {
    this.rows.clear();
    this.container.replaceChildren();
  }
}
