// The live connection: one EventSource on /api/v1/stream, its state for the indicator, and
// recovery.
//
// Two kinds of failure look different to EventSource:
// - a dropped connection: readyState goes back to CONNECTING and the browser reconnects by
//   itself, sending Last-Event-ID so the server replays what we missed;
// - an HTTP error (401 after the session expired, 502 from a proxy, wrong content type): the
//   browser gives up for good (readyState CLOSED). We then open a new EventSource ourselves
//   with backoff; it cannot send Last-Event-ID, which is why every (re)open also triggers a
//   full list refetch (`onResync`). The app does that refetch on errors too, belt and braces.

const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];
const OFFLINE_AFTER_MS = 10000; // reconnecting longer than this shows as offline

export class LiveStream {
  /** onAlert(data), onResync('open'|'reset'|'error'), onState(state), onGaveUp() (maybe a 401). */
  constructor(callbacks) {
    Object.assign(this, callbacks, { es: null, state: null, failures: 0, downSince: null,
      lastEventId: null, stopped: true });
    this.onOnline = () => { if (this.state !== 'connected') this.reconnectNow(); };
    this.onOffline = () => this.setState('offline');
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    this.setState('reconnecting');
    this.open();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    clearTimeout(this.retryTimer);
    clearTimeout(this.offlineTimer);
    if (this.es) this.es.close();
    this.es = null;
    this.lastEventId = null; // the next session starts fresh (it may be another user)
    this.setState('offline');
  }

  /** Drop the current connection (if any) and open a fresh one at once. */
  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    if (this.es) this.es.close();
    this.open();
  }

  open() {
    // A new EventSource cannot send Last-Event-ID; ?since= asks the server for the same replay.
    const url = this.lastEventId ? `${this.url}?since=${encodeURIComponent(this.lastEventId)}` : this.url;
    const es = new EventSource(url);
    this.es = es;
    es.addEventListener('open', () => {
      if (es !== this.es) return;
      this.failures = 0;
      this.downSince = null;
      clearTimeout(this.offlineTimer);
      this.setState('connected');
      this.onResync('open');
    });
    es.addEventListener('hello', (e) => {
      if (e.lastEventId) this.lastEventId = e.lastEventId;
    });
    es.addEventListener('alert', (e) => {
      if (es !== this.es) return;
      if (e.lastEventId) this.lastEventId = e.lastEventId;
      const data = parse(e);
      if (data && data.alert) this.onAlert(data);
      else this.onResync('error'); // something we cannot read: trust the list instead
    });
    es.addEventListener('reset', (e) => {
      if (e.lastEventId) this.lastEventId = e.lastEventId;
      if (es === this.es) this.onResync('reset');
    });
    es.addEventListener('error', () => {
      if (es !== this.es || this.stopped) return;
      this.failures += 1;
      if (this.downSince === null) {
        this.downSince = Date.now();
        clearTimeout(this.offlineTimer);
        this.offlineTimer = setTimeout(() => {
          if (this.state !== 'connected') this.setState('offline');
        }, OFFLINE_AFTER_MS);
      }
      if (!navigator.onLine) this.setState('offline');
      else if (this.state === 'connected') this.setState('reconnecting');
      this.onResync('error');
      if (es.readyState === EventSource.CLOSED) {
        // The browser will not retry: we do, and let the app check whether we are logged out.
        es.close();
        const delay = BACKOFF_MS[Math.min(this.failures - 1, BACKOFF_MS.length - 1)];
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => { if (!this.stopped) this.open(); }, delay);
        this.onGaveUp();
      }
    });
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state);
  }
}

function parse(e) {
  try {
    return JSON.parse(e.data);
  } catch (err) {
    console.error('stream: unreadable event', e.type, e.data, err);
    return null;
  }
}
