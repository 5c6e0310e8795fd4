// Small DOM and formatting helpers shared by the views. Text always goes in via textContent
// (never innerHTML), so names, notes and error texts from the server cannot inject markup.

import { t, lang } from './i18n.js';

/**
 * h('div', {class: 'x', dataset: {testid: 'y'}, onclick: fn}, child, 'text', [more])
 * Attributes starting with "on" become listeners; null/false attributes and children are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** The SVG counterpart of h(): numbers are written as attributes as they are. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

// --- Time -----------------------------------------------------------------------------------

export function parseTs(iso) {
  if (!iso) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

const fmtCache = new Map();
function fmt(kind) {
  const key = `${lang()}:${kind}`;
  if (!fmtCache.has(key)) {
    const locale = lang() === 'zh' ? 'zh-CN' : 'en-GB';
    const opts = kind === 'time'
      ? { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false }
      : { month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
          hour12: false };
    fmtCache.set(key, new Intl.DateTimeFormat(locale, opts));
  }
  return fmtCache.get(key);
}

/** Local wall-clock time; the date is added when it is not today. */
export function formatTime(iso) {
  const ms = parseTs(iso);
  if (ms === null) return '—';
  const d = new Date(ms);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return fmt(sameDay ? 'time' : 'datetime').format(d);
}

/** "3 分钟前" / "3 min ago". */
export function relTime(iso, now = Date.now()) {
  const ms = parseTs(iso);
  if (ms === null) return t('time.never');
  const sec = Math.max(0, (now - ms) / 1000);
  if (sec < 60) return t('time.justNow');
  if (sec < 3600) return t('time.minutes', { n: Math.floor(sec / 60) });
  if (sec < 86400) return t('time.hours', { n: Math.floor(sec / 3600) });
  return t('time.days', { n: Math.floor(sec / 86400) });
}

/** A span whose relative time the page ticker keeps fresh (see refreshRelTimes). */
export function relSpan(iso, cls = 'rel') {
  return h('time', { class: cls, datetime: iso || '', title: formatTime(iso), 'data-rel': iso || '' },
    relTime(iso));
}

export function refreshRelTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('[data-rel]')) el.textContent = relTime(el.dataset.rel, now);
}

export function ageFromBirthYear(year) {
  if (!year) return null;
  return new Date().getFullYear() - year;
}
