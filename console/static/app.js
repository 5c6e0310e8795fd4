// Entry point of the duty console: session, page state, and the wiring between the live
// stream, the alert store and the views.
//
// Data flow: the list endpoints and the SSE stream both feed AlertStore (store.js), which
// decides which copy of an alert is newest; after every change the queue, the alarm, the title
// and (when the changed alert is open in the panel) the detail are brought up to date.

import * as api from './api.js';
import { LiveStream } from './live.js';
import { AlertStore } from './store.js';
import { AlertList } from './queue.js';
import { DetailPanel } from './detail.js';
import { DevicesView } from './devices.js';
import { WearersView } from './wearers.js';
import { WearerPage } from './wearer.js';
import { ImportView } from './import.js';
import { Alarm } from './sound.js';
import { t, lang, setLang, storedLang, onLangChange, LANGS } from './i18n.js';
import { refreshRelTimes } from './dom.js';

// Belt and braces: the list is refetched even while the stream is up, often when it is not.
const POLL_CONNECTED_MS = 120000;
const POLL_DISCONNECTED_MS = 15000;
const DEVICES_POLL_MS = 60000;

const $ = (id) => document.getElementById(id);

const state = {
  user: null,
  config: { tile_url: null, language_default: 'zh' },
  view: 'alerts',
  selectedId: null,
  connection: 'offline',
  listError: null,
  names: new Map(),   // wearer id -> name (from devices and alert details)
  devices: new Map(), // device id -> device
  regions: [],        // region nodes in scope and their ancestors (GET /api/v1/regions)
  timers: [],
};

// Registry pages (issue #12): clerks and admins write; supervisors export; everyone reads.
const role = () => (state.user && state.user.role) || '';
const canEdit = () => ['clerk', 'admin'].includes(role());
const canExport = () => ['clerk', 'supervisor', 'admin'].includes(role());
const VIEWS = ['alerts', 'devices', 'wearers', 'wearer', 'import'];

const store = new AlertStore();
const alarm = new Alarm();
const queueList = new AlertList($('queue'), 'alert-row');
const resolvedList = new AlertList($('resolved'), 'resolved-row');
const devicesView = new DevicesView($('devices-view'));
const regionName = (code) => {
  const r = state.regions.find((x) => x.code === code);
  return r ? r.name : code || '—';
};
const registryCtx = {
  config: () => state.config, canEdit, canExport, regions: () => state.regions, regionName,
  onOpen: (id) => { location.hash = `#wearer/${encodeURIComponent(id)}`; },
  onNew: () => { location.hash = '#wearer-new'; },
  onBack: () => { location.hash = '#wearers'; },
  onSaved: () => { wearersView.load(); },
  onImported: () => { wearersView.load(); },
};
const wearersView = new WearersView($('wearers-view'), registryCtx);
const wearerPage = new WearerPage($('wearer-view'), registryCtx);
const importView = new ImportView($('import-view'), registryCtx);
const detail = new DetailPanel($('detail'), {
  getAlert: (id) => store.get(id),
  me: () => (state.user ? state.user.name : ''),
  names: state.names,
  devices: state.devices,
  mapConfig: () => state.config,
  onAlertChanged: (alert) => applyAlert(alert, false),
  onDetail: (d) => { if (d.wearer && learnName(d.wearer)) renderQueue(); },
});
const stream = new LiveStream({
  url: api.STREAM_URL,
  onAlert: (data) => applyAlert(data.alert, true),
  onResync: (why) => resync(why),
  onState: (s) => setConnection(s),
  onGaveUp: () => checkSession(),
});

// --- Session ----------------------------------------------------------------------------------

async function boot() {
  setLang(storedLang() || 'zh');
  wireControls();
  try {
    state.config = { ...state.config, ...(await api.config()) };
  } catch (err) {
    console.warn('no console config: maps without tiles', err);
  }
  if (!storedLang() && LANGS.includes(state.config.language_default)) setLang(state.config.language_default);
  try {
    startSession(await api.me());
  } catch (err) {
    showLogin(err.status === 401 ? '' : api.errorText(err));
  }
}

function showLogin(message) {
  for (const id of ['tabs', 'logout', 'sound-banner']) $(id).hidden = true;
  for (const v of VIEWS) $(`${v}-view`).hidden = true;
  wearerPage.leave();
  $('login-view').hidden = false;
  $('user').textContent = '';
  showLoginError(message);
  document.title = t('app.title');
  $('login-username').focus();
}

function showLoginError(message) {
  $('login-error').textContent = message || '';
  $('login-error').hidden = !message;
}

async function onLoginSubmit(ev) {
  ev.preventDefault();
  const username = $('login-username').value.trim();
  const password = $('login-password');
  const button = $('login-submit');
  if (!username || !password.value) return;
  button.disabled = true;
  showLoginError('');
  try {
    const session = await api.login(username, password.value);
    password.value = '';
    startSession(session);
  } catch (err) {
    password.value = '';
    password.focus();
    showLoginError(err.status === 401 ? t('login.wrong') : t('login.failed', { msg: api.errorText(err) }));
  } finally {
    button.disabled = false;
  }
}

function startSession(session) {
  state.user = session.user;
  api.setCsrf(session.csrf_token);
  if (!storedLang() && LANGS.includes(state.user.language)) setLang(state.user.language);
  $('login-view').hidden = true;
  $('tabs').hidden = false;
  $('logout').hidden = false;
  renderUser();
  $('tab-import').hidden = !canEdit();
  loadRegions();
  if (!route()) showView(state.view === 'wearer' ? 'wearers' : state.view);
  updateSoundBanner();
  // The stream's open event loads the list too; loading now as well shows the queue even if
  // the stream cannot connect.
  stream.start();
  loadAlerts();
  loadDevices();
  const hash = /^#(\d+)$/.exec(location.hash);
  if (hash) select(Number(hash[1]));
  state.timers.push(setInterval(refreshRelTimes, 15000), setInterval(loadDevices, DEVICES_POLL_MS));
  schedulePoll();
}

/** Session gone (logout, expiry): stop everything live and return to the login form. */
function endSession(message) {
  if (!state.user) return;
  state.user = null;
  api.setCsrf(null);
  stream.stop();
  alarm.stop();
  state.timers.forEach(clearInterval);
  state.timers = [];
  clearTimeout(state.pollTimer);
  state.selectedId = null;
  store.clear();
  queueList.reset();
  resolvedList.reset();
  detail.renderEmpty();
  history.replaceState(null, '', location.pathname + location.search);
  document.body.classList.remove('has-urgent');
  showLogin(message);
}

async function onLogout() {
  try {
    await api.logout();
    endSession('');
  } catch (err) {
    // Shown on the login form: the server may still hold the session.
    endSession(api.errorText(err));
  }
}

/** The stream was refused: find out whether it is because we are logged out. */
async function checkSession() {
  try {
    await api.me();
  } catch (err) {
    if (err.status === 401) endSession(t('login.expired'));
  }
}

api.setUnauthorizedHandler(() => endSession(t('login.expired')));

// --- Alerts: loading and merging ----------------------------------------------------------

let loading = null;
let loadAgain = false;
let lastErrorResync = 0;

/** Fetch the unresolved list and the recent resolved; concurrent calls coalesce into one more. */
function loadAlerts() {
  if (loading) {
    loadAgain = true;
    return loading;
  }
  loading = (async () => {
    do {
      loadAgain = false;
      const startedAt = Date.now();
      try {
        const [active, resolved] = await Promise.all([api.activeAlerts(), api.resolvedAlerts()]);
        if (!state.user) return;
        store.replaceActive(active.alerts, startedAt, active.truncated);
        store.mergeResolved(resolved);
        state.listError = null;
      } catch (err) {
        if (!state.user) return;
        state.listError = t('err.list', { msg: api.errorText(err) });
      }
      afterChange(false);
      const sel = store.get(state.selectedId);
      if (sel) detail.update(sel);
    } while (loadAgain && state.user);
  })().finally(() => { loading = null; });
  return loading;
}

function resync(why) {
  if (!state.user) return;
  // While the server is down the browser retries every few seconds: one refetch per burst.
  if (why === 'error' && Date.now() - lastErrorResync < 5000) return;
  if (why === 'error') lastErrorResync = Date.now();
  loadAlerts();
}

function schedulePoll() {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(() => {
    if (!state.user) return;
    loadAlerts();
    schedulePoll();
  }, state.connection === 'connected' ? POLL_CONNECTED_MS : POLL_DISCONNECTED_MS);
}

/** One alert from the stream or from an action's answer. */
function applyAlert(alert, fromStream) {
  if (!state.user || !alert || typeof alert.id !== 'number') return;
  // Both are newer than any list fetch still in flight: `live` protects them in the merge.
  if (store.upsert(alert, { live: true }) === 'stale') return;
  if (alert.id === state.selectedId) {
    store.markSeen(alert.id); // open in the panel: it is being looked at
    detail.update(store.get(alert.id));
  }
  afterChange(fromStream);
}

function afterChange(animate) {
  renderQueue(animate);
  const urgent = store.urgentUnclaimed().length;
  alarm.set(urgent > 0);
  document.body.classList.toggle('has-urgent', urgent > 0);
  document.title = `(${store.active().length}) ${urgent ? '⚠ ' : ''}${t('app.title')}`;
  updateSoundBanner();
}

function select(id) {
  state.selectedId = id;
  store.markSeen(id);
  history.replaceState(null, '', `#${id}`);
  if (state.view !== 'alerts') showView('alerts');
  renderQueue();
  detail.show(id);
}

// --- Rendering ------------------------------------------------------------------------------

function renderQueue(animate = false) {
  if (!state.user) return;
  const ctx = { selectedId: state.selectedId, unseen: store.unseen, names: state.names,
    me: state.user.name, lang: lang(), onSelect: select, animate };
  const active = store.active();
  const resolved = store.resolved();
  queueList.render(active, ctx);
  resolvedList.render(resolved, { ...ctx, animate: false });
  const open = active.filter((a) => a.status === 'open').length;
  $('queue-counts').textContent = t('queue.counts', { open, ack: active.length - open });
  $('queue-empty').hidden = active.length > 0 || !store.loaded;
  $('queue-more').hidden = !store.truncated;
  $('queue-more').textContent = t('queue.more', { n: active.length });
  $('resolved-empty').hidden = resolved.length > 0;
  $('list-error').hidden = !state.listError;
  $('list-error').textContent = state.listError || '';
}

function updateSoundBanner() {
  const el = $('sound-banner');
  const urgent = state.user && store.urgentUnclaimed().length > 0;
  el.hidden = !state.user || (alarm.supported && alarm.ready);
  el.disabled = !alarm.supported;
  el.classList.toggle('urgent', !!urgent);
  el.textContent = t(!alarm.supported ? 'sound.unsupported' : urgent ? 'sound.enable.urgent' : 'sound.enable');
}

function setConnection(s) {
  const changed = (state.connection === 'connected') !== (s === 'connected');
  state.connection = s;
  $('conn').dataset.state = s;
  $('conn-label').textContent = t(`conn.${s}`);
  if (state.user && changed) schedulePoll();
}

function renderUser() {
  const u = state.user;
  $('user').textContent = u.display_name || u.name;
  $('user').title = `${u.name} · ${u.role || ''} · ${t('header.regions', { regions: (u.regions || []).join(', ') })}`;
}

function showView(view) {
  if (state.view === 'wearer' && view !== 'wearer') wearerPage.leave();
  state.view = view;
  for (const v of VIEWS) $(`${v}-view`).hidden = view !== v;
  const tab = view === 'wearer' ? 'wearers' : view;
  for (const v of ['alerts', 'devices', 'wearers', 'import']) $(`tab-${v}`).setAttribute('aria-selected', String(tab === v));
  if (view === 'devices') {
    devicesView.render();
    loadDevices();
  }
  if (view === 'wearers') {
    wearersView.render();
    wearersView.load();
  }
  if (view === 'import') importView.render();
}

/** The registry pages live in the address (#wearers, #wearer/ID, #wearer-new, #import), so a
 *  wearer's page can be reloaded, bookmarked and left with the browser's back button. */
function route() {
  if (!state.user) return false;
  const hash = location.hash;
  let m;
  if (hash === '#wearers') showView('wearers');
  else if (hash === '#import' && canEdit()) showView('import');
  else if (hash === '#wearer-new' && canEdit()) {
    showView('wearer');
    wearerPage.showNew();
  } else if ((m = /^#wearer\/(.+)$/.exec(hash))) {
    showView('wearer');
    wearerPage.show(decodeURIComponent(m[1]));
  } else return false;
  return true;
}

/** Leaving the registry pages for alerts or devices: drop their address. */
function showMainView(view) {
  if (/^#(wearer|import)/.test(location.hash)) history.replaceState(null, '', location.pathname + location.search);
  showView(view);
}

async function loadRegions() {
  try {
    const list = await api.regions();
    if (!state.user) return;
    state.regions = list;
    if (state.view === 'wearers') wearersView.render();
  } catch (err) {
    console.warn('region tree not loaded: codes shown instead of names', err);
  }
}

// --- Devices --------------------------------------------------------------------------------

function learnName(w) {
  if (!w || !w.id || !w.name || state.names.get(w.id) === w.name) return false;
  state.names.set(w.id, w.name);
  return true;
}

async function loadDevices() {
  if (!state.user) return;
  const unregistered = loadUnregistered(); // alongside, failing on its own
  try {
    const list = await api.devices();
    if (!state.user) return;
    state.devices.clear();
    let learned = false;
    for (const d of list) {
      state.devices.set(d.device_id, d);
      learned = learnName(d.wearer) || learned;
    }
    devicesView.setData(list, null);
    if (learned) renderQueue();
  } catch (err) {
    if (!state.user) return;
    devicesView.setData(null, api.errorText(err));
  }
  await unregistered;
  if (state.view === 'devices') devicesView.render();
}

async function loadUnregistered() {
  try {
    const list = await api.unregisteredDevices();
    if (state.user) devicesView.setUnregistered(list, null);
  } catch (err) {
    if (state.user) devicesView.setUnregistered(null, api.errorText(err));
  }
}

// --- Controls -----------------------------------------------------------------------------

function wireControls() {
  $('login-form').addEventListener('submit', onLoginSubmit);
  $('logout').addEventListener('click', onLogout);
  $('lang').addEventListener('click', () => setLang(lang() === 'zh' ? 'en' : 'zh', { remember: true }));
  $('tab-alerts').addEventListener('click', () => showMainView('alerts'));
  $('tab-devices').addEventListener('click', () => showMainView('devices'));
  $('tab-wearers').addEventListener('click', () => {
    if (location.hash === '#wearers') showView('wearers');
    else location.hash = '#wearers';
  });
  $('tab-import').addEventListener('click', () => { location.hash = '#import'; });
  window.addEventListener('hashchange', () => route());
  $('sound-banner').addEventListener('click', enableSound);
  // Any click or key press after login is the gesture the browser needs to allow audio.
  for (const type of ['pointerdown', 'keydown']) {
    document.addEventListener(type, () => { if (state.user && !alarm.ready) enableSound(); }, true);
  }
  alarm.onReadyChange = updateSoundBanner;
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible' || !state.user) return;
    // Back from sleep or a long time hidden: catch up, and revive a dead stream.
    loadAlerts();
    if (state.connection !== 'connected') stream.reconnectNow();
  });
  onLangChange(() => {
    $('lang').textContent = t('header.lang');
    $('conn-label').textContent = t(`conn.${state.connection}`);
    document.title = t('app.title');
    if (!state.user) return;
    renderUser();
    afterChange(false);
    detail.rerender();
    if (state.view === 'devices') devicesView.render();
    if (state.view === 'wearers') wearersView.render();
    if (state.view === 'wearer') wearerPage.rerender();
    if (state.view === 'import') importView.render();
  });
  $('lang').textContent = t('header.lang');
  $('conn-label').textContent = t('conn.offline');
}

async function enableSound() {
  try {
    await alarm.enable();
  } catch (err) {
    console.error('audio could not start', err); // the banner stays up: the officer sees it
  }
  updateSoundBanner();
}

boot();
