// Monitoring charts with uPlot (vendored, MIT): a function's calls, errors, duration
// percentiles, cold starts and instances over time, from /console/api/functions/NAME/series.
import { api, h } from './lib.js';

const COLORS = ['#2f5bd3', '#d92d20', '#f79009', '#12b76a', '#7a5af8'];
export const RANGES = [['15m', 15], ['1h', 60], ['6h', 360], ['24h', 1440]];

/** 20000 → 20k, 0.5 → 0.5: axis labels that fit. */
const short = (v) => (Math.abs(v) >= 1e6 ? `${+(v / 1e6).toFixed(1)}M` : Math.abs(v) >= 1e4 ? `${+(v / 1e3).toFixed(1)}k` : `${+v.toFixed(2)}`);

/** A line chart in `el`: xs in epoch seconds, series [{label, values}]. Returns the uPlot. */
export function lineChart(el, title, xs, series, opts = {}) {
  const box = h('div', { class: 'chart', 'data-chart': title }, h('h3', {}, title));
  el.append(box);
  const width = Math.max(280, (box.clientWidth || 360) - 16);
  const u = new window.uPlot({
    width, height: 180,
    scales: { x: { time: true }, y: { range: (_, min, max) => [0, Math.max(opts.minMax ?? 1, max ?? 0) * 1.1] } },
    axes: [{}, { size: 56, values: (_, ticks) => ticks.map(short) }],
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
      fill: opts.fill ? COLORS[i % COLORS.length] + '22' : undefined, points: { show: xs.length < 80 } }))],
    legend: { live: false },
  }, [xs, ...series.map((s) => s.values)], box);
  return u;
}

/** Charts that follow the container's width. */
export function resizer(root, charts) {
  const fit = () => charts.forEach((c) => c.setSize({ width: Math.max(280, c.root.parentElement.clientWidth - 16), height: 180 }));
  window.addEventListener('resize', fit);
  return () => window.removeEventListener('resize', fit);
}

export async function monitorView(panel, name) {
  const range = h('select', { 'aria-label': 'range', id: 'range' }, RANGES.map(([l, m]) => h('option', { value: m, selected: m === 60 }, `last ${l}`)));
  const grid = h('div', { class: 'charts', id: 'function-charts' });
  const note = h('p', { class: 'muted' });
  let charts = [], unresize = () => {};
  const draw = async () => {
    const minutes = Number(range.value);
    const to = Date.now(), from = to - minutes * 60_000;
    const step = Math.max(10, Math.round((minutes * 60) / 60));
    const s = (await api('GET', `/console/api/functions/${encodeURIComponent(name)}/series`, { query: { from, to, step } })).data;
    grid.replaceChildren();
    unresize();
    const calls = s.invocations.reduce((a, b) => a + b, 0);
    note.textContent = `${calls} invocations in the window, ${step} s per point.${s.truncated ? ' Only the newest 10,000 invocations are counted.' : ''}`;
    charts = [
      lineChart(grid, 'Invocations and errors', s.t, [{ label: 'invocations', values: s.invocations }, { label: 'errors', values: s.errors }], { fill: true }),
      lineChart(grid, 'Duration (ms)', s.t, [{ label: 'p50', values: s.p50Ms }, { label: 'p95', values: s.p95Ms }, { label: 'p99', values: s.p99Ms }]),
      lineChart(grid, 'Cold starts', s.t, [{ label: 'cold starts', values: s.coldStarts }], { fill: true }),
      lineChart(grid, 'Instances', s.t, [{ label: 'instances', values: s.instances }]),
    ];
    unresize = resizer(grid, charts);
  };
  range.addEventListener('change', draw);
  panel.append(h('div', { class: 'row' }, range, h('button', { type: 'button', onclick: draw }, 'Refresh'), note), grid);
  await draw();
  const timer = setInterval(() => { if (document.visibilityState === 'visible') draw(); }, 15_000);
  return () => { clearInterval(timer); unresize(); };
}
