// The page's alert state and the rules for merging what arrives from two sources that can
// race: full list fetches and live stream events. One rule decides everything: the copy with
// the later `updated_at` wins (ties go to the one that arrived last).
//
// The subtle case is a list fetch that started before a stream event but answers after it:
// the stream's newer copy must survive. Per alert we remember when the stream last touched it
// (`touchedAt`); a full refresh drops an unresolved alert missing from the answer only if the
// stream did not touch it after that fetch started.

import { parseTs } from './dom.js';

export class AlertStore {
  constructor() {
    this.byId = new Map();      // id -> Alert (any status)
    this.touchedAt = new Map(); // id -> Date.now() of the last stream update
    this.unseen = new Set();    // ids that appeared or reopened since the officer last looked
    this.loaded = false;        // false until the first full list: nothing is "new" before it
    this.truncated = false;
  }

  get(id) {
    return this.byId.get(id);
  }

  /**
   * Merge one alert. Returns 'new', 'changed', 'reopened' or 'stale' (ignored: older than ours).
   * `live` marks a stream update (recorded so a racing list fetch cannot undo it).
   */
  upsert(alert, { live = false } = {}) {
    const cur = this.byId.get(alert.id);
    if (cur && (parseTs(cur.updated_at) ?? 0) > (parseTs(alert.updated_at) ?? 0)) return 'stale';
    this.byId.set(alert.id, alert);
    if (live) this.touchedAt.set(alert.id, Date.now());
    let what = 'changed';
    if (!cur) what = 'new';
    else if (cur.status !== 'open' && alert.status === 'open') what = 'reopened';
    if (this.loaded && alert.status === 'open' && (what === 'new' || what === 'reopened')) {
      this.unseen.add(alert.id);
    }
    if (alert.status !== 'open') this.unseen.delete(alert.id);
    return what;
  }

  /** Replace the unresolved set with a full fetch that started at `startedAt` (Date.now()). */
  replaceActive(alerts, startedAt, truncated) {
    const ids = new Set();
    for (const a of alerts) {
      ids.add(a.id);
      this.upsert(a);
    }
    for (const [id, a] of this.byId) {
      if (a.status === 'resolved' || ids.has(id)) continue;
      if ((this.touchedAt.get(id) ?? 0) >= startedAt) continue; // the stream knows better
      // Resolved (or moved out of our regions) while we were not listening: leave the queue.
      // If it was resolved, the resolved-list fetch that follows brings it back in that list.
      this.byId.delete(id);
      this.unseen.delete(id);
    }
    this.truncated = truncated;
    this.loaded = true;
  }

  mergeResolved(alerts) {
    for (const a of alerts) this.upsert(a);
    // A whole shift of resolutions would pile up: keep the latest ones only.
    for (const a of this.resolved(Infinity).slice(100)) {
      this.byId.delete(a.id);
      this.touchedAt.delete(a.id);
    }
  }

  markSeen(id) {
    this.unseen.delete(id);
  }

  /** Unresolved alerts: priority (1 first), then newest opened first, then highest id. */
  active() {
    const list = [...this.byId.values()].filter((a) => a.status !== 'resolved');
    return list.sort((a, b) => (a.priority - b.priority)
      || ((parseTs(b.opened_at) ?? 0) - (parseTs(a.opened_at) ?? 0))
      || (b.id - a.id));
  }

  /** Resolved alerts, latest resolution first. */
  resolved(limit = 50) {
    const list = [...this.byId.values()].filter((a) => a.status === 'resolved');
    list.sort((a, b) => ((parseTs(b.resolved_at) ?? 0) - (parseTs(a.resolved_at) ?? 0)) || (b.id - a.id));
    return list.slice(0, limit);
  }

  /** Priority-1 alerts nobody has claimed yet: these drive the alarm sound and highlight. */
  urgentUnclaimed() {
    return this.active().filter((a) => a.priority === 1 && a.status === 'open');
  }

  clear() {
    this.byId.clear();
    this.touchedAt.clear();
    this.unseen.clear();
    this.loaded = false;
    this.truncated = false;
  }
}
