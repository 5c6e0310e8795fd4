// A small SVG line plot of a fall's acceleration magnitude (g) around the impact.
// t_ms is relative to the alert, so the impact is t = 0: marked by a vertical line; the peak is
// labelled with its value. 1 g (standing still) is drawn as a reference line, which is what
// makes the free-fall dip before the impact and the stillness after it readable.

import { s, h } from './dom.js';
import { t } from './i18n.js';

const W = 560;
const H = 190;
const M = { left: 38, right: 12, top: 14, bottom: 30 };

/** @param {{t_ms: number[], g: number[]}} accel  @returns {HTMLElement|null} */
export function renderAccelPlot(accel) {
  if (!accel || !Array.isArray(accel.t_ms) || !Array.isArray(accel.g)) return null;
  const n = Math.min(accel.t_ms.length, accel.g.length);
  const pts = [];
  for (let i = 0; i < n; i++) {
    const x = Number(accel.t_ms[i]);
    const y = Number(accel.g[i]);
    if (Number.isFinite(x) && Number.isFinite(y)) pts.push([x, y]);
  }
  if (pts.length < 2) return null;

  const tMin = Math.min(...pts.map((p) => p[0]), 0);
  const tMax = Math.max(...pts.map((p) => p[0]), 0);
  const gMax = Math.max(2, ...pts.map((p) => p[1])) * 1.1;
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const X = (v) => M.left + ((v - tMin) / (tMax - tMin || 1)) * pw;
  const Y = (v) => M.top + ph - (v / gMax) * ph;
  const f = (v) => v.toFixed(1);

  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'plot', role: 'img',
    'aria-label': t('detail.accel') });

  // Axes and ticks: g every 1 (or 2 when large), time in whole seconds or half seconds.
  const gStep = gMax > 8 ? 2 : 1;
  for (let g = 0; g <= gMax; g += gStep) {
    svg.append(s('line', { x1: M.left, x2: W - M.right, y1: f(Y(g)), y2: f(Y(g)),
      class: g === 1 ? 'plot-ref' : 'plot-grid' }));
    svg.append(s('text', { x: M.left - 5, y: f(Y(g) + 3), class: 'plot-ylabel' }, `${g}`));
  }
  const span = (tMax - tMin) / 1000;
  const tStep = span > 6 ? 2000 : span > 3 ? 1000 : 500;
  for (let v = Math.ceil(tMin / tStep) * tStep; v <= tMax; v += tStep) {
    svg.append(s('text', { x: f(X(v)), y: H - 14, class: 'plot-xlabel' }, (v / 1000).toString()));
  }
  svg.append(s('text', { x: W - M.right, y: H - 2, class: 'plot-axis-title' }, t('plot.time')));
  svg.append(s('text', { x: 4, y: M.top - 3, class: 'plot-axis-title start' }, 'g'));

  // The impact (t = 0).
  const x0 = X(0);
  svg.append(s('line', { x1: f(x0), x2: f(x0), y1: M.top, y2: M.top + ph, class: 'plot-impact' }));
  svg.append(s('text', { x: f(x0 + 4), y: M.top + ph - 4, class: 'plot-impact-label' }, t('plot.impact')));

  svg.append(s('polyline', { points: pts.map(([x, y]) => `${f(X(x))},${f(Y(y))}`).join(' '),
    class: 'plot-line' }));

  const peak = pts.reduce((a, p) => (p[1] > a[1] ? p : a));
  const px = X(peak[0]);
  const nearRight = px > W - 90;
  svg.append(s('circle', { cx: f(px), cy: f(Y(peak[1])), r: 4, class: 'plot-peak' }));
  svg.append(s('text', { x: f(nearRight ? px - 6 : px + 6), y: f(Y(peak[1]) + 4),
    class: `plot-peak-label${nearRight ? ' end' : ''}` }, t('plot.peak', { g: peak[1].toFixed(1) })));

  return h('div', { class: 'plot-wrap', dataset: { testid: 'accel-plot' } }, svg);
}
