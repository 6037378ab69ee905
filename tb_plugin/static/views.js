// DOM building for the Deephys tab. Everything that comes from user data
// (run, dataset, layer and class names) is inserted with textContent, never as HTML.

import {thumbnailUrl} from './model.js';

export function el(tag, {className, text, attrs} = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.appendChild(child);
  return node;
}

export function labeledSelect(label, id, options, selected) {
  const select = el('select', {attrs: {id}});
  for (const {value, text} of options) {
    const option = el('option', {text, attrs: {value}});
    if (String(value) === String(selected)) option.selected = true;
    select.appendChild(option);
  }
  return {wrapper: el('label', {text: label, attrs: {for: id}}, [select]), select};
}

export function message(kind, text) {
  return el('div', {className: `message ${kind}`, text, attrs: {role: kind === 'error' ? 'alert' : 'status'}});
}

/**
 * A notice of the runs that hold Deephys data but cannot be shown, each with its cause;
 * an empty placeholder when there are none (so it can be replaced in place).
 * @param {Array<{run: string, error: string}>} unavailable
 * @returns {HTMLElement}
 */
export function unavailableRuns(unavailable) {
  if (!unavailable.length) return el('div', {attrs: {id: 'unavailable-runs', hidden: ''}});
  const notice = el('div', {className: 'message warning', attrs: {id: 'unavailable-runs', role: 'status'}});
  notice.append(el('span', {text: `${unavailable.length === 1 ? 'A run' : `${unavailable.length} runs`} cannot be shown: `}));
  const list = el('ul');
  for (const {run, error} of unavailable) list.append(el('li', {text: `${run}: ${error}`}));
  notice.append(list);
  return notice;
}

/**
 * A notice that the shown step's record is incomplete: the arrays it lists that the
 * log lacks (a damaged or truncated event file). Nothing when it is complete.
 * @param {Array<string>|undefined} missing tag names
 * @returns {Array<HTMLElement>}
 */
export function incompleteNotice(missing) {
  if (!missing || !missing.length) return [];
  const shown = missing.slice(0, 5).join(', ') + (missing.length > 5 ? ', …' : '');
  const text = `This record is incomplete: ${missing.length} of its arrays are missing (${shown}). ` +
    'An event file of the run is damaged or truncated (deephys-lightning scores LOGDIR says where); ' +
    'what needs them says so.';
  return [el('div', {className: 'message warning incomplete', text, attrs: {role: 'status'}})];
}

function percent(value) {
  return value === null || value === undefined ? 'n/a' : `${(value * 100).toFixed(1)}%`;
}

/** Run ``action`` on click and on Enter/Space, for keyboard users too. */
export function activate(node, action) {
  node.addEventListener('click', action);
  node.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      action();
    }
  });
}

/** @type {Map<string, Promise<string>>} why a dataset's thumbnails failed, asked once */
const thumbnailFailures = new Map();

/** @type {WeakMap<Element, Set<string>>} the failures a view has a notice of */
const failureNotices = new WeakMap();

/**
 * Whether ``view`` has its notice of the failure ``key`` already (it has from now on).
 * @param {Element} view
 * @param {string} key
 * @returns {boolean}
 */
function noticed(view, key) {
  const keys = failureNotices.get(view) || new Set();
  failureNotices.set(view, keys);
  const seen = keys.has(key);
  keys.add(key);
  return seen;
}

/**
 * Why a thumbnail request failed, in the server's words (its 4xx JSON ``error``).
 * @param {string} url
 * @returns {Promise<string>}
 */
function thumbnailFailure(url) {
  return fetch(url).then(async (response) => {
    if (response.ok) return 'the image could not be shown';
    try {
      return (await response.json()).error || `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }, (error) => `the server could not be reached (${error})`);
}

/**
 * A thumbnail ``<img>`` that, when its image cannot be loaded (missing or damaged
 * files, an unreachable store, no fsspec backend), is replaced by "No image" (the
 * reason on hover), and its view gets one notice per dataset with the reason, as text.
 * @param {{run: string, dataset: string, index: number, step?: number, lazy?: boolean}} where
 * @returns {HTMLImageElement}
 */
export function thumbnailImage({run, dataset, index, step, lazy = true}) {
  const src = thumbnailUrl({run, dataset, index, step});
  const attrs = {src, alt: `${dataset} image ${index}`};
  if (lazy) attrs.loading = 'lazy';
  const img = /** @type {HTMLImageElement} */ (el('img', {attrs}));
  img.addEventListener('error', () => {
    const key = JSON.stringify([run, dataset, step]);
    if (!thumbnailFailures.has(key)) thumbnailFailures.set(key, thumbnailFailure(src));
    thumbnailFailures.get(key).then((reason) => {
      const view = img.closest('section') || img.parentElement;
      img.replaceWith(el('div', {className: 'thumbnail-error', text: 'No image', attrs: {title: reason}}));
      if (view && !noticed(view, key)) {
        const notice = message('warning', `The images of ${dataset} cannot be shown: ${reason}`);
        notice.classList.add('thumbnails-unavailable');
        view.prepend(notice);
      }
    });
  }, {once: true});
  return img;
}

function thumb({run, dataset, index, step, caption, title, on}) {
  const figure = el('figure', {className: 'image clickable', attrs: {tabindex: 0, title: title || 'open the image view', 'data-index': index}}, [
    thumbnailImage({run, dataset, index, step}),
    el('figcaption', {}, caption.map((text) => el('span', {text}))),
  ]);
  activate(figure, () => on.image && on.image(dataset, index));
  return figure;
}

function className(names, index) {
  return names[index] ?? String(index);
}

function formatRaw(value) {
  return value === null || value === undefined ? 'n/a' : Number(value).toPrecision(3);
}

export function datasetList(runInfo) {
  const list = el('ul', {className: 'datasets', attrs: {'aria-label': 'datasets'}});
  for (const name of runInfo.datasets) {
    const role = name === runInfo.ind ? 'InD' : 'OOD';
    const count = runInfo.num_images[name];
    list.appendChild(
      el('li', {className: `dataset ${role.toLowerCase()}`, attrs: {'data-dataset': name}}, [
        el('span', {className: 'role', text: role}),
        el('span', {className: 'name', text: name}),
        el('span', {className: 'count', text: `${count} images`}),
      ]),
    );
  }
  return list;
}

export function neuronView(data, run, on = {}) {
  const root = el('section', {className: 'neuron-view', attrs: {'data-neuron': data.neuron}});
  root.appendChild(
    el('h2', {text: `Neuron ${data.neuron} of ${data.num_neurons} — layer ${data.layer}, step ${data.step} (epoch ${data.epoch})`}),
  );
  if (data.ind_max === null || data.ind_max <= 0) {
    root.appendChild(
      message('empty', 'This neuron never fires on the in-distribution set (a dead neuron): ' +
        'normalized activations and activation ratios are undefined.'),
    );
  }
  const columns = el('div', {className: 'columns'});
  for (const dataset of data.datasets) {
    const header = el('header', {}, [
      el('span', {className: `role ${dataset.role}`, text: dataset.role === 'ind' ? 'InD' : 'OOD'}),
      el('span', {className: 'name', text: dataset.name}),
    ]);
    if (dataset.role === 'ood') {
      header.appendChild(
        el('span', {className: 'ratio', text: `activation ratio ${percent(dataset.activation_ratio)}`}),
      );
      header.appendChild(
        el('span', {
          className: 'scores',
          text: data.dead
            ? 'dead on InD: no novelty'
            : `novelty ${formatRaw(dataset.novelty)} (raw ${formatRaw(dataset.novelty_raw)}) · ` +
              `spurious ${formatRaw(dataset.spurious)}`,
          attrs: {title: 'novelty: max category mean on InD − on this set, of activations ' +
            'divided by the InD maximum (raw: of the activations themselves); ' +
            'spurious: 1 − |Spearman| of the category means (n/a: undefined)'},
        }),
      );
    }
    const grid = el('div', {className: 'grid'});
    for (const image of dataset.images) {
      const correct = image.label === image.prediction;
      const labelName = data.class_names[image.label] ?? String(image.label);
      const predName = data.class_names[image.prediction] ?? String(image.prediction);
      const img = thumbnailImage({run, dataset: dataset.name, index: image.index, step: data.step});
      const figure = el('figure', {
        className: `image clickable ${correct ? 'right' : 'wrong'}`,
        attrs: {'data-index': image.index, tabindex: 0, title: 'open the image view'},
      }, [
          img,
          el('figcaption', {}, [
            el('span', {
              className: 'value',
              text: image.normalized === null ? `raw ${formatRaw(image.activation)}` : percent(image.normalized),
              attrs: {title: `activation ${formatRaw(image.activation)}`},
            }),
            el('span', {className: 'label', text: `${labelName} → ${predName}`}),
          ]),
        ]);
      activate(figure, () => on.image && on.image(dataset.name, image.index));
      grid.appendChild(figure);
    }
    if (!dataset.images.length) grid.appendChild(message('empty', 'no images'));
    columns.appendChild(
      el('div', {className: 'column', attrs: {'data-dataset': dataset.name}}, [header, grid]),
    );
  }
  root.appendChild(columns);
  return root;
}

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, children = []) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.appendChild(child);
  return node;
}

/** A density as bars: the paper's Fig. 3 plots. */
function densityPlot(title, density) {
  const width = 220;
  const height = 80;
  const box = el('div', {className: 'density'}, [el('div', {className: 'density-title', text: title})]);
  if (!density || !density.count) {
    box.appendChild(message('empty', 'no values'));
    return box;
  }
  const values = density.density.map((v) => v || 0);
  const top = Math.max(...values, 1e-12);
  const barWidth = width / values.length;
  const bars = values.map((v, i) => {
    const h = (v / top) * (height - 4);
    return svg('rect', {x: i * barWidth, y: height - h, width: Math.max(barWidth - 1, 1), height: h});
  });
  box.appendChild(svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': title}, bars));
  const edges = density.edges;
  box.appendChild(el('div', {className: 'axis', text: `${formatRaw(edges[0])} … ${formatRaw(edges[edges.length - 1])} (${density.count} neurons)`}));
  return box;
}

export function overviewView(data, over, on = {}) {
  const root = el('section', {className: 'overview-view'});
  const stage = data.stage === 'test' || data.stage === 'validate' ? `, ${data.stage}` : '';
  root.appendChild(el('h2', {text: `Overview — layer ${data.layer}, step ${data.step} (epoch ${data.epoch}${stage})`}));
  const cards = el('div', {className: 'cards'});
  for (const dataset of data.datasets) {
    const card = el('div', {className: `card ${dataset.role}`, attrs: {'data-dataset': dataset.name}}, [
      el('header', {}, [
        el('span', {className: `role ${dataset.role}`, text: dataset.role === 'ind' ? 'InD' : 'OOD'}),
        el('span', {className: 'name', text: dataset.name}),
        el('span', {className: 'accuracy', text: `accuracy ${percent(dataset.accuracy)}`}),
        el('span', {className: 'count', text: imageCount(dataset)}),
      ]),
    ]);
    if (dataset.summary) {
      const s = dataset.summary;
      card.appendChild(el('div', {className: 'scores', text:
        `novelty ${formatRaw(s.novelty_mean)} (${percent(s.novelty_positive_fraction)} > 0; ` +
        `raw ${formatRaw(s.novelty_raw_mean)}) · ` +
        `spurious ${formatRaw(s.spurious_mean)} (${s.spurious_undefined} undefined) · ` +
        `activation ratio ${percent(s.activation_ratio_mean)}` +
        (s.dead_neurons ? ` · ${s.dead_neurons} dead neurons left out` : ''),
        attrs: {title: 'means over the live neurons; novelty in units of each neuron\'s InD maximum'}}));
      card.appendChild(el('div', {className: 'densities'}, [
        densityPlot('novelty > 0', dataset.densities.novelty),
        densityPlot('spurious', dataset.densities.spurious),
      ]));
      if (dataset.detection && dataset.detection.length) card.appendChild(detectionTable(dataset.detection));
    }
    card.appendChild(confusionTable(dataset, data.class_names, on));
    cards.appendChild(card);
  }
  root.appendChild(cards);
  if (over && over.length) root.appendChild(scoresOverTime(over));
  root.appendChild(neuronTable(data, on));
  return root;
}

/** "N images", or "N of M images" when only part of the set was recorded. */
function imageCount(dataset) {
  const size = dataset.dataset_size;
  return size !== null && size !== undefined && size > dataset.num_images
    ? `${dataset.num_images} of ${size} images` : `${dataset.num_images} images`;
}

const DETECTION_COLUMNS = [
  ['auroc', 'AUROC'], ['aupr_in', 'AUPR-In'], ['aupr_out', 'AUPR-Out'], ['fpr_at_95_tpr', 'FPR@95%TPR'],
];

/** One OOD set's detection rows: how well each detector tells InD from it. */
function detectionTable(rows) {
  const table = el('table', {className: 'table detection'});
  table.appendChild(el('tr', {}, [el('th', {text: 'detector'}), ...DETECTION_COLUMNS.map(([, t]) => el('th', {text: t}))]));
  for (const row of rows) {
    const name = row.layer === null ? row.detector : `${row.detector} (${row.layer})`;
    const sampled = row.detector === 'knn' ? `, on ${row.ind_images} InD and ${row.ood_images} OOD images` : '';
    table.appendChild(el('tr', {attrs: {'data-detector': row.detector, title: `higher score = more in-distribution${sampled}`}}, [
      el('td', {text: name}),
      ...DETECTION_COLUMNS.map(([key]) => el('td', {text: row[key] === null ? 'n/a' : row[key].toFixed(3)})),
    ]));
  }
  return el('details', {className: 'detection', attrs: {open: ''}}, [
    el('summary', {text: 'OOD detection (InD positive)'}),
    table,
  ]);
}

function confusionTable(dataset, names, on) {
  const n = dataset.confusion.length;
  const wrapper = el('details', {className: 'confusion', attrs: n <= 12 ? {open: ''} : {}}, [
    el('summary', {text: `confusion matrix (rows: label, columns: prediction)`}),
  ]);
  if (n > 60) {
    wrapper.appendChild(message('empty', `${n} classes: open a category from the neuron table or the image view`));
    return wrapper;
  }
  const table = el('table', {className: 'matrix'});
  const head = el('tr', {}, [el('th', {text: ''})]);
  for (let b = 0; b < n; b++) head.appendChild(el('th', {text: className(names, b)}));
  table.appendChild(head);
  const max = Math.max(1, ...dataset.confusion.flat());
  for (let a = 0; a < n; a++) {
    const row = el('tr', {}, [el('th', {text: className(names, a)})]);
    for (let b = 0; b < n; b++) {
      const count = dataset.confusion[a][b];
      const cell = el('td', {
        className: `cell ${a === b ? 'diagonal' : ''} ${count ? 'clickable' : ''}`,
        text: count || '',
        attrs: {'data-label': a, 'data-pred': b, tabindex: count ? 0 : -1,
          title: `${className(names, a)} → ${className(names, b)}: ${count}`},
      });
      cell.style.setProperty('--weight', String(count / max));
      if (count) activate(cell, () => on.category && on.category(dataset.name, a, b));
      row.appendChild(cell);
    }
    table.appendChild(row);
  }
  wrapper.appendChild(table);
  return wrapper;
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

/** The overview's mean scores across steps (also redrawn alone when steps arrive). */
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

/** Round tick values (steps of 1, 2 or 5 times a power of ten) spanning ``values``. */
function niceTicks(values, count = 4) {
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

/** At most ``count`` items of ``items``, evenly spread, first and last included. */
function spread(items, count) {
  if (items.length <= count) return items;
  return Array.from({length: count}, (_, i) => items[Math.round((i * (items.length - 1)) / (count - 1))]);
}

/** One score against step, one line (and a dot per recorded step) per OOD set. */
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

function neuronTable(data, on) {
  const oods = data.datasets.filter((d) => d.role === 'ood');
  const dead = new Set(data.dead || []);
  const columns = [{key: 'neuron', title: 'neuron', value: (i) => i}];
  for (const d of oods) {
    for (const [key, title] of [['novelty', 'novelty'], ['spurious', 'spurious'], ['activation_ratio', 'act. ratio']]) {
      columns.push({key: `${d.name}:${key}`, title: `${d.name} ${title}`, value: (i) => d.scores[key][i]});
    }
  }
  const box = el('div', {className: 'neuron-table'}, [el('h3', {text: 'Neurons'})]);
  const filter = el('input', {attrs: {id: 'neuron-filter', type: 'search', placeholder: 'filter: e.g. >0.5 on the sorted column, or a neuron number'}});
  box.appendChild(filter);
  const table = el('table', {className: 'table sortable'});
  box.appendChild(table);
  let sortKey = columns.length > 1 ? columns[1].key : 'neuron';
  let descending = true;
  const draw = () => {
    const column = columns.find((c) => c.key === sortKey);
    let rows = Array.from({length: data.num_neurons}, (_, i) => i);
    const text = filter.value.trim();
    const bound = text.match(/^([<>])\s*(-?[0-9.]+)$/);
    if (bound) {
      const limit = Number(bound[2]);
      rows = rows.filter((i) => {
        const v = column.value(i);
        return v !== null && (bound[1] === '>' ? v > limit : v < limit);
      });
    } else if (/^[0-9]+$/.test(text)) {
      rows = rows.filter((i) => String(i).startsWith(text));
    }
    rows.sort((a, b) => {
      const va = column.value(a);
      const vb = column.value(b);
      if (va === null && vb === null) return a - b;
      if (va === null) return 1;
      if (vb === null) return -1;
      return descending ? vb - va || a - b : va - vb || a - b;
    });
    const head = el('tr', {}, columns.map((c) => {
      const th = el('th', {className: 'clickable', text: c.title + (c.key === sortKey ? (descending ? ' ▼' : ' ▲') : ''),
        attrs: {tabindex: 0, 'data-key': c.key, 'aria-sort': c.key === sortKey ? (descending ? 'descending' : 'ascending') : 'none'}});
      activate(th, () => {
        descending = c.key === sortKey ? !descending : true;
        sortKey = c.key;
        draw();
      });
      return th;
    }));
    const body = rows.slice(0, 200).map((i) => {
      const tr = el('tr', {className: 'clickable', attrs: {tabindex: 0, 'data-neuron': i}}, columns.map((c) => {
        const v = c.value(i);
        if (c.key === 'neuron') return el('td', {text: dead.has(i) ? `${v} (dead)` : v});
        if (dead.has(i) && v === null) return el('td', {className: 'dead', text: 'dead'});
        return el('td', {text: c.key.endsWith('activation_ratio') ? percent(v) : formatRaw(v)});
      }));
      activate(tr, () => on.neuron && on.neuron(i));
      return tr;
    });
    table.replaceChildren(head, ...body);
  };
  filter.addEventListener('input', draw);
  draw();
  return box;
}

/** Pick any image by dataset and index. */
function imagePicker(data, datasets, on) {
  const select = el('select', {attrs: {id: 'image-dataset'}});
  for (const name of datasets) {
    const option = el('option', {text: name, attrs: {value: name}});
    if (name === data.dataset) option.selected = true;
    select.appendChild(option);
  }
  const index = el('input', {attrs: {id: 'image-index', type: 'number', min: 0, value: data.index}});
  const go = el('button', {text: 'open', attrs: {id: 'image-open'}});
  const open = () => on.image && on.image(select.value, Math.max(0, Math.floor(Number(index.value)) || 0));
  go.addEventListener('click', open);
  index.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') open();
  });
  return el('div', {className: 'picker'}, [
    el('label', {text: 'Dataset', attrs: {for: 'image-dataset'}}, [select]),
    el('label', {text: 'Image', attrs: {for: 'image-index'}}, [index]),
    go,
  ]);
}

export function imageView(data, run, on = {}, datasets = [data.dataset]) {
  const names = data.class_names;
  const root = el('section', {className: 'image-view', attrs: {'data-dataset': data.dataset, 'data-index': data.index}});
  root.appendChild(imagePicker(data, datasets, on));
  root.appendChild(el('h2', {text: `Image ${data.index} of ${data.dataset} (${data.role === 'ind' ? 'InD' : 'OOD'}) — step ${data.step}`}));
  const correct = data.label === data.prediction;
  root.appendChild(el('div', {className: `subject ${correct ? 'right' : 'wrong'}`}, [
    thumbnailImage({run, dataset: data.dataset, index: data.index, step: data.step, lazy: false}),
    el('div', {className: 'facts'}, [
      el('div', {text: `label: ${className(names, data.label)}`}),
      el('div', {text: `prediction: ${className(names, data.prediction)} (${correct ? 'right' : 'wrong'})`}),
      el('div', {text: `index in the dataset: ${data.position}`}),
    ]),
  ]));
  const list = el('div', {className: 'top-neurons'});
  for (const top of data.top_neurons) {
    const value = top.normalized;
    const bar = el('div', {className: 'bar'});
    bar.style.setProperty('--fill', String(Math.max(0, Math.min(1, value || 0))));
    const header = el('header', {className: 'clickable', attrs: {tabindex: 0, title: 'open the neuron view', 'data-neuron': top.neuron}}, [
      el('span', {className: 'name', text: `neuron ${top.neuron}`}),
      bar,
      el('span', {className: 'value', text: percent(value)}),
    ]);
    activate(header, () => on.neuron && on.neuron(top.neuron));
    const rows = el('div', {className: 'sources'});
    for (const [source, images] of Object.entries(top.top_images)) {
      const grid = el('div', {className: 'grid'});
      for (const image of images) {
        grid.appendChild(thumb({run, dataset: source, index: image.index, step: data.step, on,
          caption: [percent(image.normalized), `${className(names, image.label)} → ${className(names, image.prediction)}`]}));
      }
      rows.appendChild(el('div', {className: 'source'}, [el('div', {className: 'name', text: source}), grid]));
    }
    list.appendChild(el('div', {className: 'top-neuron'}, [header, rows]));
  }
  root.appendChild(list);
  return root;
}

export function categoryView(data, run, on = {}) {
  const names = data.class_names;
  const pair = data.pred !== null && data.pred !== undefined;
  const [a, b] = [className(names, data.label), pair ? className(names, data.pred) : ''];
  const what = !pair ? `category ${a}`
    : data.either ? `confusion between ${a} and ${b} (${a} → ${b} or ${b} → ${a})`
      : `label ${a} predicted as ${b}`;
  const root = el('section', {className: 'category-view'});
  root.appendChild(el('h2', {text: `${what} in ${data.dataset} — ${data.num_images} images, step ${data.step}`}));
  if (pair && data.label !== data.pred && (data.either_available || data.either)) {
    const toggle = el('div', {className: 'direction', attrs: {role: 'group', 'aria-label': 'confusion set'}});
    for (const [either, text] of [[false, `${a} → ${b} only`], [true, 'both directions (the paper\'s confusion set)']]) {
      const button = el('button', {text, attrs: {'data-either': either, 'aria-pressed': either === data.either}});
      button.disabled = either === data.either;
      button.addEventListener('click', () => on.category && on.category(data.dataset, data.label, data.pred, either));
      toggle.appendChild(button);
    }
    root.appendChild(toggle);
  }
  const normalized = data.means !== 'raw';
  const neurons = el('ol', {className: 'category-neurons'});
  for (const n of data.neurons) {
    const value = normalized ? `mean ${percent(n.mean)} of its InD max` : `raw mean ${formatRaw(n.mean)}`;
    const item = el('li', {className: 'clickable', text: `neuron ${n.neuron}: ${value}`, attrs: {tabindex: 0, 'data-neuron': n.neuron}});
    activate(item, () => on.neuron && on.neuron(n.neuron));
    neurons.appendChild(item);
  }
  root.appendChild(el('div', {className: 'columns'}, [
    el('div', {}, [el('h3', {text: 'Most active neurons'}), neurons]),
    el('div', {className: 'column'}, [el('h3', {text: 'Images'}), (() => {
      const grid = el('div', {className: 'grid'});
      for (const image of data.images) {
        grid.appendChild(thumb({run, dataset: data.dataset, index: image.index, step: data.step, on,
          caption: [`${className(names, image.label)} → ${className(names, image.prediction)}`]}));
      }
      if (!data.images.length) grid.appendChild(message('empty', 'no images'));
      return grid;
    })()]),
  ]));
  const pages = Math.ceil(data.num_images / data.page_size);
  if (pages > 1) {
    const prev = el('button', {text: 'previous', attrs: {id: 'page-prev'}});
    const next = el('button', {text: 'next', attrs: {id: 'page-next'}});
    prev.disabled = data.page === 0;
    next.disabled = data.page >= pages - 1;
    prev.addEventListener('click', () => on.page && on.page(data.page - 1));
    next.addEventListener('click', () => on.page && on.page(data.page + 1));
    root.appendChild(el('div', {className: 'pager'}, [prev, el('span', {text: `page ${data.page + 1} of ${pages}`}), next]));
  }
  return root;
}
