// The server contract in one place: same-origin JSON over fetch, the session cookie, and the
// CSRF header every POST except login must carry.

import { t } from './i18n.js';

let csrfToken = null;
let onUnauthorized = () => {};

export function setCsrf(token) {
  csrfToken = token || null;
}

/** Called when any request (other than login and /me) answers 401: the session is gone. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** An HTTP error with the server's body kept, so callers can read `owner` from a 409. */
export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** A human sentence for a failed request, translated; FastAPI 422 lists are flattened. */
export function errorText(err) {
  if (!(err instanceof ApiError)) return err && err.message ? err.message : String(err);
  if (err.status === 0) return t('err.network');
  if (err.status === 404) return t('err.notFound');
  if (err.status === 503) return t('err.unavailable');
  return t('err.http', { status: err.status, msg: detailText(err.body) || err.message });
}

function detailText(body) {
  if (!body) return '';
  const d = body.detail;
  if (typeof d === 'string') return d;
  if (Array.isArray(d)) {
    return d.map((e) => `${(e.loc || []).slice(1).join('.')}: ${e.msg}`).join('; ');
  }
  return '';
}

async function request(method, path, { body, auth = true, retried = false, raw = null } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // `raw`: a file sent as it is ({data: Blob, type}), e.g. an import spreadsheet.
  if (raw) headers['Content-Type'] = raw.type || 'application/octet-stream';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: raw ? raw.data : body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, null, t('err.network'));
  }
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = { detail: text.slice(0, 300) }; }
    }
  }
  if (res.status === 403 && method !== 'GET' && csrfToken && !retried) {
    // A stale CSRF token (the session was renewed, e.g. a login in another tab): fetch the
    // current one and try once more. A second 403 is a real refusal and is shown.
    let fresh = null;
    try { fresh = (await me()).csrf_token; } catch { /* report the 403 below */ }
    if (fresh) {
      setCsrf(fresh);
      return request(method, path, { body, auth, raw, retried: true });
    }
  }
  if (!res.ok) {
    if (res.status === 401 && auth) onUnauthorized();
    throw new ApiError(res.status, data, detailText(data) || res.statusText || `HTTP ${res.status}`);
  }
  return data;
}

const get = (path, opts) => request('GET', path, opts);
const post = (path, body, opts) => request('POST', path, { ...opts, body });
const put = (path, body) => request('PUT', path, { body });
const patch = (path, body) => request('PATCH', path, { body });
const del = (path) => request('DELETE', path);
const enc = encodeURIComponent;

// --- Session ------------------------------------------------------------------------------

export const login = (username, password) =>
  post('/console/login', { username, password }, { auth: false });
export const me = () => get('/console/me', { auth: false });
export const logout = () => post('/console/logout', undefined, { auth: false });
export const config = () => get('/console/config', { auth: false });

// --- Alerts -------------------------------------------------------------------------------

const ALERTS = '/api/v1/alerts';

/** Unresolved alerts; follows next_before_id for at most `maxPages` pages. */
export async function activeAlerts({ limit = 200, maxPages = 5 } = {}) {
  const alerts = [];
  let before = null;
  for (let page = 0; page < maxPages; page++) {
    const q = `status=open&status=acknowledged&limit=${limit}` + (before ? `&before_id=${before}` : '');
    const data = await get(`${ALERTS}?${q}`);
    alerts.push(...(data.alerts || []));
    before = data.next_before_id;
    if (!before) return { alerts, truncated: false };
  }
  return { alerts, truncated: true };
}

export const resolvedAlerts = (limit = 50) =>
  get(`${ALERTS}?status=resolved&limit=${limit}`).then((d) => d.alerts || []);
export const alertDetail = (id) => get(`${ALERTS}/${id}`);
export const evidence = (id) => get(`${ALERTS}/${id}/evidence`);
export const acknowledge = (id, note) => post(`${ALERTS}/${id}/acknowledge`, note ? { note } : {});
export const resolve = (id, outcome, note) =>
  post(`${ALERTS}/${id}/resolve`, note ? { outcome, note } : { outcome });
export const addNote = (id, note) => post(`${ALERTS}/${id}/notes`, { note });
/** Commands to the alert's device (locate now, call the watch) and what became of them. */
export const deviceCommands = (id) => get(`${ALERTS}/${id}/commands`);
export const sendCommand = (id, command, number) =>
  post(`${ALERTS}/${id}/commands`, number ? { command, number } : { command });

// --- Devices ------------------------------------------------------------------------------

/** All devices of our regions: a bare array, or {devices, next_after} pages followed. */
export async function devices({ maxPages = 5 } = {}) {
  const out = [];
  let after = null;
  for (let page = 0; page < maxPages; page++) {
    const d = await get('/api/v1/devices?limit=2000' + (after ? `&after=${encodeURIComponent(after)}` : ''));
    if (Array.isArray(d)) return d;
    out.push(...((d && d.devices) || []));
    after = d && d.next_after;
    if (!after) break;
  }
  return out;
}

/** Devices seen on our regions' topics without being registered there (issue #7), last 24 h. */
export const unregisteredDevices = () =>
  get('/api/v1/unregistered-devices').then((d) => (d && d.devices) || []);

// --- Registry: wearers, devices, regions, import/export (docs/registry-database.md) ----------

const WEARERS = '/api/v1/wearers';

/** One page of wearers: {wearers, next_after}; `filters` are the query parameters. */
export function wearers(filters = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  return get(`${WEARERS}?${q}`);
}
export const wearer = (id) => get(`${WEARERS}/${enc(id)}`);
export const createWearer = (body) => post(WEARERS, body);
export const updateWearer = (id, body) => patch(`${WEARERS}/${enc(id)}`, body);
export const deactivateWearer = (id, reason, note) =>
  post(`${WEARERS}/${enc(id)}/deactivate`, note ? { reason, note } : { reason });
export const putContacts = (id, contacts) => put(`${WEARERS}/${enc(id)}/contacts`, { contacts });
export const putZone = (id, zoneId, zone) => put(`${WEARERS}/${enc(id)}/zones/${enc(zoneId)}`, zone);
export const deleteZone = (id, zoneId) => del(`${WEARERS}/${enc(id)}/zones/${enc(zoneId)}`);
export const wearerAudit = (id, beforeId) =>
  get(`${WEARERS}/${enc(id)}/audit?limit=100` + (beforeId ? `&before_id=${beforeId}` : ''));

export const device = (id) => get(`/api/v1/devices/${enc(id)}`);
export const createDevice = (body) => post('/api/v1/devices', body);
export const bindDevice = (id, wearerId) => post(`/api/v1/devices/${enc(id)}/bind`, { wearer_id: wearerId });
export const unbindDevice = (id, reason) => post(`/api/v1/devices/${enc(id)}/unbind`, { reason });

/** The region nodes in scope (and their ancestors): [{code, name, parent, level}]. */
export const regions = () => get('/api/v1/regions').then((d) => (Array.isArray(d) ? d : (d && d.regions) || []));

/** Check (dryRun) or import a CSV/XLSX file of wearers; the body is the file itself. The
 *  report ({rows, valid, errors: [{row, column, value?, message}], created, ...}) comes back
 *  with 200 when the file is valid and with 422 when it is not (nothing written then). */
export async function importWearers(file, dryRun) {
  const q = `dry_run=${dryRun ? 'true' : 'false'}&filename=${enc(file.name || '')}`;
  try {
    return await request('POST', `/api/v1/imports/wearers?${q}`, { raw: { data: file, type: importType(file) } });
  } catch (err) {
    if (err instanceof ApiError && err.status === 422 && err.body && Array.isArray(err.body.errors)) return err.body;
    throw err;
  }
}

function importType(file) {
  const name = (file.name || '').toLowerCase();
  if (name.endsWith('.xlsx')) return 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet';
  if (name.endsWith('.csv')) return 'text/csv';
  return file.type || 'application/octet-stream';
}

export const exportUrl = (format, language) => `/api/v1/exports/wearers.${format}?lang=${language === 'zh' ? 'zh' : 'en'}`;

export const STREAM_URL = '/api/v1/stream';
