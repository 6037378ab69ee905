// Plots of the Deephys tab, as SVG: the overview's score densities and its mean
// scores across steps.

import {el, formatRaw, message, percent, svg, svgText} from './dom.js';

/**
 * A density as bars on axes (the paper's Fig. 3): x over the density's edges (one
 * range for every OOD card, so their shapes compare), y the share of values per bin.
 * @param {string} title
 * @param {{edges: Array<number>, density: Array<number|null>, count: number}|null} density
 * @param {string} unit what is counted, e.g. "neurons"
 * @returns {HTMLElement}
 */
export function densityPlot(title, density, unit = 'neurons') {
  const width = 240;
  const height = 120;
  const margin = {left: 40, right: 8, top: 8, bottom: 30};
  const box = el('figure', {className: 'density', attrs: {'data-title': title}}, [
    el('figcaption', {className: 'density-title', text: title}),
  ]);
  if (!density || !density.count) {
    box.appendChild(message('empty', 'no values'));
    return box;
  }
  const edges = density.edges;
  const widths = edges.slice(1).map((e, i) => e - edges[i]);
  const shares = density.density.map((v, i) => (v || 0) * widths[i]); // fraction per bin
  const yTicks = niceTicks([0, Math.max(...shares)], 2);
  const top = yTicks[yTicks.length - 1] || 1;
  const [x0, x1] = [edges[0], edges[edges.length - 1]];
  const x = (v) => margin.left + ((v - x0) / (x1 - x0)) * (width - margin.left - margin.right);
  const y = (v) => height - margin.bottom - (v / top) * (height - margin.top - margin.bottom);
  const plot = svg('svg', {class: 'density-plot', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `${title}: share of ${density.count} ${unit} per bin`});
  shares.forEach((share, i) => {
    const bar = svg('rect', {x: x(edges[i]), y: y(share), width: Math.max(x(edges[i + 1]) - x(edges[i]) - 1, 1),
      height: y(0) - y(share), 'data-share': share});
    const tip = svg('title');
    tip.textContent = `${formatRaw(edges[i])}–${formatRaw(edges[i + 1])}: ${percent(share)} of the ${unit}`;
    bar.appendChild(tip);
    plot.appendChild(bar);
  });
  const bottom = y(0);
  plot.appendChild(svg('path', {class: 'axis-line', d: `M${margin.left},${margin.top}V${bottom}H${width - margin.right}`}));
  for (const value of niceTicks([x0, x1], 4).filter((v) => v >= x0 - 1e-9 && v <= x1 + 1e-9)) {
    plot.append(svg('path', {class: 'axis-line', d: `M${x(value)},${bottom}v4`}),
      svgText(String(+value.toPrecision(4)), {class: 'tick x', x: x(value), y: bottom + 14, 'text-anchor': 'middle'}));
  }
  for (const value of yTicks) {
    plot.append(svg('path', {class: 'grid-line', d: `M${margin.left},${y(value)}H${width - margin.right}`}),
      svgText(`${+(value * 100).toPrecision(3)}%`, {class: 'tick y', x: margin.left - 4, y: y(value) + 4, 'text-anchor': 'end'}));
  }
  plot.appendChild(svgText(`share of ${density.count} ${unit}`, {class: 'axis-title', x: margin.left, y: height - 2}));
  box.appendChild(plot);
  return box;
}

// The mean scores across steps: one small line chart per score, one line per OOD
// set, and the exact numbers in a table under "show numbers".
const SCORES_OVER_TIME = [
  {key: 'novelty', title: 'mean novelty', format: formatRaw, tick: (v) => String(+v.toPrecision(4))},
  {key: 'spurious', title: 'mean spurious score', format: formatRaw, tick: (v) => String(+v.toPrecision(4))},
  {key: 'activation_ratio', title: 'mean activation ratio', format: percent,
    tick: (v) => `${+(v * 100).toPrecision(4)}%`},
];
const SERIES_COLORS = 6; // style.css's --series-0 … --series-5, reused in turn

/**
 * One OOD set's mean scores at every recorded step (the scores_over_time route's answer).
 * @typedef {{dataset: string, points: Array<{step: number, epoch: number, novelty: number|null,
 *   spurious: number|null, activation_ratio: number|null}>}} ScoreSeries
 */

/**
 * The overview's mean scores across steps (also redrawn alone when steps arrive).
 * @param {Array<ScoreSeries>} over one series per OOD set
 * @returns {HTMLElement}
 */
export function scoresOverTime(over) {
  const box = el('div', {className: 'over-time'}, [el('h3', {text: 'Mean scores across steps'})]);
  const legend = el('ul', {className: 'legend', attrs: {'aria-label': 'OOD sets'}});
  over.forEach((series, i) => {
    legend.appendChild(el('li', {className: `series-${i % SERIES_COLORS}`, attrs: {'data-dataset': series.dataset}}, [
      el('span', {className: 'swatch', attrs: {'aria-hidden': 'true'}}),
      el('span', {className: 'name', text: series.dataset}),
    ]));
  });
  box.appendChild(legend);
  box.appendChild(el('div', {className: 'plots'}, SCORES_OVER_TIME.map((score) => linePlot(score, over))));
  box.appendChild(el('details', {className: 'over-time-numbers'}, [
    el('summary', {text: 'show numbers'}),
    scoresOverTimeTable(over),
  ]));
  return box;
}

/**
 * The mean scores across steps as a table: one row per OOD set and step.
 * @param {Array<ScoreSeries>} over
 * @returns {HTMLElement}
 */
function scoresOverTimeTable(over) {
  const table = el('table', {className: 'table'});
  table.appendChild(el('tr', {}, ['OOD set', 'step', 'epoch', 'novelty', 'spurious', 'activation ratio']
    .map((t) => el('th', {text: t}))));
  for (const series of over) {
    for (const p of series.points) {
      table.appendChild(el('tr', {attrs: {'data-dataset': series.dataset, 'data-step': p.step}}, [
        el('td', {text: series.dataset}), el('td', {text: p.step}), el('td', {text: p.epoch}),
        el('td', {text: formatRaw(p.novelty)}), el('td', {text: formatRaw(p.spurious)}),
        el('td', {text: percent(p.activation_ratio)}),
      ]));
    }
  }
  return table;
}

/**
 * Round tick values (steps of 1, 2 or 5 times a power of ten) spanning `values`.
 * @param {Array<number>} values
 * @param {number} [count] about how many steps between the ticks
 * @returns {Array<number>}
 */
export function niceTicks(values, count = 4) {
  let low = values.length ? Math.min(...values) : 0;
  let high = values.length ? Math.max(...values) : 1;
  if (high - low < 1e-12) {
    const pad = Math.abs(high) * 0.1 || 1;
    low -= pad;
    high += pad;
  }
  const rough = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const first = Math.floor(low / step);
  const last = Math.ceil(high / step);
  return Array.from({length: last - first + 1}, (_, i) => (first + i) * step);
}

/**
 * At most `count` items of `items`, evenly spread, first and last included.
 * @template T
 * @param {Array<T>} items
 * @param {number} count
 * @returns {Array<T>}
 */
function spread(items, count) {
  if (items.length <= count) return items;
  return Array.from({length: count}, (_, i) => items[Math.round((i * (items.length - 1)) / (count - 1))]);
}

/**
 * One score against step, one line (and a dot per recorded step) per OOD set.
 * @param {{key: string, title: string, format: (v: number) => string, tick: (v: number) => string}} score
 *   one of SCORES_OVER_TIME
 * @param {Array<ScoreSeries>} over
 * @returns {HTMLElement}
 */
function linePlot({key, title, format, tick}, over) {
  const width = 300;
  const height = 170;
  const margin = {left: 52, right: 12, top: 10, bottom: 38};
  const steps = [...new Map(over.flatMap((s) => s.points.map((p) => [p.step, p.epoch])))]
    .sort((a, b) => a[0] - b[0]);
  const [x0, x1] = steps.length > 1 ? [steps[0][0], steps[steps.length - 1][0]] : [steps[0][0] - 1, steps[0][0] + 1];
  const values = over.flatMap((s) => s.points.map((p) => p[key])).filter((v) => v !== null && Number.isFinite(v));
  const yTicks = niceTicks(values);
  const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
  const x = (step) => margin.left + ((step - x0) / (x1 - x0)) * (width - margin.left - margin.right);
  const y = (value) => height - margin.bottom - ((value - y0) / (y1 - y0)) * (height - margin.top - margin.bottom);
  const plot = svg('svg', {class: 'line-plot', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `${title} of each OOD set across steps`, 'data-score': key});
  // axes, ticks and their labels
  const bottom = height - margin.bottom;
  plot.appendChild(svg('path', {class: 'axis-line', d: `M${margin.left},${margin.top}V${bottom}H${width - margin.right}`}));
  for (const [step, epoch] of spread(steps, 6)) {
    const label = svg('text', {class: 'tick', x: x(step), y: bottom + 13, 'text-anchor': 'middle'});
    label.textContent = String(step);
    const sub = svg('text', {class: 'tick sub', x: x(step), y: bottom + 24, 'text-anchor': 'middle'});
    sub.textContent = `ep ${epoch}`;
    plot.append(svg('path', {class: 'axis-line', d: `M${x(step)},${bottom}v4`}), label, sub);
  }
  for (const value of yTicks) {
    const label = svg('text', {class: 'tick', x: margin.left - 6, y: y(value) + 4, 'text-anchor': 'end'});
    label.textContent = tick(value);
    plot.append(svg('path', {class: 'grid-line', d: `M${margin.left},${y(value)}H${width - margin.right}`}), label);
  }
  const xTitle = svg('text', {class: 'axis-title', x: width - margin.right, y: height - 2, 'text-anchor': 'end'});
  xTitle.textContent = 'step (epoch)';
  plot.appendChild(xTitle);
  // the series: a line through the defined values, a dot (with a tooltip) on each
  over.forEach((series, i) => {
    const group = svg('g', {class: `series series-${i % SERIES_COLORS}`, 'data-dataset': series.dataset});
    let d = '';
    let pen = 'M';
    for (const p of series.points) {
      const v = p[key];
      if (v === null || !Number.isFinite(v)) {
        pen = 'M'; // undefined here: break the line
        continue;
      }
      d += `${pen}${x(p.step).toFixed(1)},${y(v).toFixed(1)}`;
      pen = 'L';
      const dot = svg('circle', {cx: x(p.step), cy: y(v), r: 3, 'data-step': p.step, 'data-epoch': p.epoch,
        'data-value': v});
      const tip = svg('title');
      tip.textContent = `${series.dataset}, step ${p.step} (epoch ${p.epoch}): ${title} ${format(v)}`;
      dot.appendChild(tip);
      group.appendChild(dot);
    }
    group.insertBefore(svg('path', {class: 'line', d}), group.firstChild);
    plot.appendChild(group);
  });
  return el('figure', {className: 'score-plot', attrs: {'data-score': key}}, [
    el('figcaption', {text: title}),
    plot,
  ]);
}

/**
 * A neuron's activations on one set as a histogram (share of the set's images per
 * bin) on the bins shared by every set, with the InD set's histogram drawn over it
 * as an outline, so that the two compare on one axis.
 * @param {{edges: Array<number>, counts: Array<number>}} distribution this set's
 * @param {{edges: Array<number>, counts: Array<number>}|null} ind the InD set's (null: this is InD)
 * @param {string} name this set's name
 * @returns {HTMLElement}
 */
export function activationHistogram(distribution, ind, name) {
  const width = 220;
  const height = 110;
  const margin = {left: 36, right: 6, top: 6, bottom: 28};
  const box = el('figure', {className: 'activation-histogram', attrs: {'data-dataset': name}});
  const shares = (d) => {
    const total = d.counts.reduce((a, b) => a + b, 0);
    return d.counts.map((c) => (total ? c / total : 0));
  };
  const mine = shares(distribution);
  const theirs = ind ? shares(ind) : null;
  const edges = distribution.edges;
  const [x0, x1] = [edges[0], edges[edges.length - 1]];
  const yTicks = niceTicks([0, Math.max(...mine, ...(theirs || []))], 2);
  const top = yTicks[yTicks.length - 1] || 1;
  const x = (v) => margin.left + (x1 > x0 ? (v - x0) / (x1 - x0) : 0) * (width - margin.left - margin.right);
  const y = (v) => height - margin.bottom - (v / top) * (height - margin.top - margin.bottom);
  const plot = svg('svg', {class: 'histogram', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `activations on ${name}${ind ? ', InD outlined' : ''}: share of images per bin`});
  mine.forEach((share, i) => {
    const bar = svg('rect', {class: 'bin', x: x(edges[i]), y: y(share), width: Math.max(x(edges[i + 1]) - x(edges[i]) - 0.5, 0.5),
      height: y(0) - y(share), 'data-share': share});
    const tip = svg('title');
    tip.textContent = `${formatRaw(edges[i])}–${formatRaw(edges[i + 1])}: ${percent(share)} of ${name}` +
      (theirs ? `, ${percent(theirs[i])} of InD` : '');
    bar.appendChild(tip);
    plot.appendChild(bar);
  });
  if (theirs) {
    let d = `M${x(edges[0])},${y(0)}`;
    theirs.forEach((share, i) => {
      d += `V${y(share)}H${x(edges[i + 1])}`;
    });
    plot.appendChild(svg('path', {class: 'ind-outline', d: `${d}V${y(0)}`}));
  }
  const bottom = y(0);
  plot.appendChild(svg('path', {class: 'axis-line', d: `M${margin.left},${margin.top}V${bottom}H${width - margin.right}`}));
  for (const value of [x0, x1]) {
    plot.appendChild(svgText(formatRaw(value), {class: 'tick x', x: x(value), y: bottom + 12,
      'text-anchor': value === x0 ? 'start' : 'end'}));
  }
  for (const value of yTicks) {
    plot.append(svg('path', {class: 'grid-line', d: `M${margin.left},${y(value)}H${width - margin.right}`}),
      svgText(`${+(value * 100).toPrecision(3)}%`, {class: 'tick y', x: margin.left - 3, y: y(value) + 4, 'text-anchor': 'end'}));
  }
  plot.appendChild(svgText('activation (raw)', {class: 'axis-title', x: width - margin.right, y: height - 2, 'text-anchor': 'end'}));
  box.appendChild(plot);
  if (ind) {
    box.appendChild(el('figcaption', {className: 'histogram-legend'}, [
      el('span', {className: 'swatch this', attrs: {'aria-hidden': 'true'}}), el('span', {text: name}),
      el('span', {className: 'swatch ind', attrs: {'aria-hidden': 'true'}}), el('span', {text: 'InD'}),
    ]));
  }
  return box;
}
