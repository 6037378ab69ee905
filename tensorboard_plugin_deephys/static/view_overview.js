// The overview: per dataset its accuracy and confusion matrix; per OOD set its
// scores' headline numbers and densities and the OOD detection table; the mean
// scores across steps; and the table of every neuron's scores.

import {activate, className, el, formatRaw, leftOutNotes, message, percent, roleLabel, sideLabel} from './dom.js';
import * as model from './model.js';
import {densityPlot, scoresOverTime} from './plots.js';

/**
 * The mean scores of every OOD set of the run at every step (those that fail left out).
 * @param {{run: string, layer: string}} where
 * @param {import('./state.js').RunInfo} info the run's entry
 * @returns {Promise<Array<import('./plots.js').ScoreSeries>>}
 */
export async function loadScoresOverTime({run, layer}, info) {
  const over = await Promise.all(
    info.datasets.filter((d) => d !== info.ind).map((dataset) =>
      model.getScoresOverTime({run, layer, dataset}).catch(() => null)),
  );
  return over.filter(Boolean);
}

/** @type {import('./views.js').View} */
export const overview = {
  name: 'overview',
  title: 'Overview',
  /**
   * Nothing of its own.
   * @returns {Object<string, string>}
   */
  encode: () => ({}),
  /**
   * Nothing of its own.
   * @returns {object}
   */
  decode: () => ({}),
  /**
   * The summary of the shown step and the mean scores across steps.
   * @param {import('./views.js').ViewContext} context
   * @returns {Promise<{summary: object, over: Array<import('./plots.js').ScoreSeries>}>}
   */
  async load({where, info, compare}) {
    const [summary, over, other] = await Promise.all([model.getSummary(where), loadScoresOverTime(where, info),
      compare ? model.getSummary(compare.where) : null]);
    return {summary, over, other};
  },
  /**
   * Draw the view.
   * @param {{summary: object, over: Array<import('./plots.js').ScoreSeries>, other: object|null}} data what
   *   load gave (`other`: B's summary, where compared)
   * @param {import('./views.js').ViewContext} context
   * @returns {HTMLElement}
   */
  render: ({summary, over, other}, {navigate}) => render(summary, over, navigate, other),
  compares: true,
};

/**
 * The overview: a card per dataset, the mean scores across steps, the neuron table;
 * where compared, A's cards then B's, each labelled, and B's scores in the table.
 * @param {object} data the summary route's answer
 * @param {Array<import('./plots.js').ScoreSeries>} over
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {object|null} [other] B's summary, where compared
 * @returns {HTMLElement}
 */
function render(data, over, on, other = null) {
  const root = el('section', {className: 'overview-view'});
  const stage = data.stage === 'test' || data.stage === 'validate' ? `, ${data.stage}` : '';
  root.appendChild(el('h2', {text: `Overview — layer ${data.layer}, step ${data.step} (epoch ${data.epoch}${stage})`}));
  if (other) {
    root.append(el('h3', {className: 'side-label side-a', text: sideLabel('A', data)}), cards(data, on, 'a'),
      // B's cards open no view: the views show A, B beside it
      el('h3', {className: 'side-label side-b', text: sideLabel('B', other)}), cards(other, {}, 'b'));
  } else {
    root.appendChild(cards(data, on));
  }
  if (over && over.length) root.appendChild(scoresOverTime(over));
  root.appendChild(neuronTable(data, on, other));
  return root;
}

/**
 * A card per dataset of one summary.
 * @param {object} data the summary route's answer
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {string} [side] 'a' or 'b' where compared
 * @returns {HTMLElement}
 */
function cards(data, on, side) {
  const box = el('div', {className: 'cards', attrs: side ? {'data-side': side} : {}});
  for (const dataset of data.datasets) {
    const card = el('div', {className: `card ${dataset.role}`, attrs: {'data-dataset': dataset.name}}, [
      el('header', {}, [
        el('span', {className: `role ${dataset.role}`, text: roleLabel(dataset.role)}),
        el('span', {className: 'name', text: dataset.name}),
        el('span', {className: 'accuracy', text: `accuracy ${percent(dataset.accuracy)}`}),
        el('span', {className: 'count', text: imageCount(dataset)}),
      ]),
      ...leftOutNotes(dataset.left_out),
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
        densityPlot('novelty > 0 (units of the InD max)', dataset.densities.novelty),
        densityPlot('spurious score', dataset.densities.spurious),
      ]));
      if (dataset.detection && dataset.detection.length) card.appendChild(detectionTable(dataset.detection));
    }
    if (dataset.calibration) card.appendChild(calibrationLine(dataset));
    card.appendChild(confusionTable(dataset, data, on));
    box.appendChild(card);
  }
  return box;
}

/**
 * "N images", or "N of M images" when only part of the set was recorded.
 * @param {{num_images: number, dataset_size?: number|null}} dataset
 * @returns {string}
 */
function imageCount(dataset) {
  const size = dataset.dataset_size;
  return size !== null && size !== undefined && size > dataset.num_images
    ? `${dataset.num_images} of ${size} images` : `${dataset.num_images} images`;
}

/**
 * How well the classifier's confidence serves on a set: its calibration error, how
 * well it tells right from wrong predictions, and (OOD sets) the accuracy lost.
 * @param {{role: string, calibration: {ece: number|null, failure_auroc: number|null,
 *   aurc: number|null, accuracy_drop: number|null}}} dataset
 * @returns {HTMLElement}
 */
function calibrationLine(dataset) {
  const c = dataset.calibration;
  const number = (/** @type {number|null} */ v) => (v === null ? 'n/a' : v.toFixed(3));
  const points = c.accuracy_drop === null ? 0 : 100 * c.accuracy_drop;
  const drop = dataset.role === 'ood' && c.accuracy_drop !== null
    ? ` · accuracy ${Math.abs(points).toFixed(1)} points ${points >= 0 ? 'below' : 'above'} InD` : '';
  return el('div', {className: 'calibration', text:
    `confidence: ECE ${number(c.ece)} · failure AUROC ${number(c.failure_auroc)} · ` +
    `AURC ${number(c.aurc)}${drop}`,
  attrs: {title: 'ECE: expected calibration error of the maximum softmax probability ' +
    '(15 bins); failure AUROC: how well it ranks right predictions above wrong ones; ' +
    'AURC: area under the risk-coverage curve (lower is better)'}});
}

/**
 * Where the detectors on features were fitted, once per fit set, in words.
 * @param {Array<{fitted_on?: string, fit_images?: number, layer: string|null}>} rows
 * @returns {Array<string>}
 */
function fitNotes(rows) {
  const said = new Set();
  for (const row of rows) {
    if (row.fitted_on === 'reference') {
      said.add(`detectors on features fitted on the reference set (${row.fit_images} images); every InD image scored`);
    } else if (row.fitted_on === 'ind_half') {
      said.add(`detectors on features fitted on one half of the InD set (${row.fit_images} images), ` +
        'scored on the other half (pass DeephysCallback(reference=...) to fit on training data)');
    }
  }
  return [...said];
}

const DETECTION_COLUMNS = [
  ['auroc', 'AUROC'], ['aupr_in', 'AUPR-In'], ['aupr_out', 'AUPR-Out'], ['fpr_at_95_tpr', 'FPR@95%TPR'],
];

/**
 * One OOD set's detection rows: how well each detector tells InD from it.
 * @param {Array<{detector: string, layer: string|null, ind_images?: number, ood_images?: number,
 *   auroc: number|null, aupr_in: number|null, aupr_out: number|null, fpr_at_95_tpr: number|null}>} rows
 * @returns {HTMLElement}
 */
function detectionTable(rows) {
  const table = el('table', {className: 'table detection'});
  table.appendChild(el('tr', {}, [el('th', {text: 'detector'}), ...DETECTION_COLUMNS.map(([, t]) => el('th', {text: t}))]));
  for (const row of rows) {
    const name = row.layer === null ? row.detector : `${row.detector} (${row.layer})`;
    const sampled = row.fitted_on ? `, on ${row.ind_images} InD and ${row.ood_images} OOD images` : '';
    const title = row.note || `higher score = more in-distribution${sampled}`;
    table.appendChild(el('tr', {attrs: {'data-detector': row.detector, title}}, [
      el('td', {text: name}),
      ...DETECTION_COLUMNS.map(([key]) => el('td', {text: row[key] === null ? 'n/a' : row[key].toFixed(3)})),
    ]));
  }
  const notes = [...new Set(rows.filter((row) => row.note).map((row) => `${row.detector}: ${row.note}`))];
  return el('details', {className: 'detection', attrs: {open: ''}}, [
    el('summary', {text: 'OOD detection (InD positive)'}),
    table,
    ...fitNotes(rows).map((text) => el('div', {className: 'fit-note', text})),
    ...notes.map((text) => el('div', {className: 'detector-note', text})),
  ]);
}

/** The most classes whose confusion matrix is drawn; beyond, the most confused pairs. */
const MATRIX_CLASSES = 60;
const PAIRS_PAGE = 100; // rows of the most confused pairs per page, past the summary's own

/**
 * A dataset's confusion: its matrix (folded away beyond 12 classes), each non-empty
 * cell opening its confusion set; beyond 60 classes (or where the summary has no
 * dense matrix: past 100 classes) the most confused pairs of classes instead.
 * @param {{name: string, confusion: Array<Array<number>>|null, confused_pairs?: number,
 *   misclassified?: number, top_confusions?: Array<import('./model.js').ConfusionCell>}} dataset
 * @param {{run: string, step: number, class_names: Array<string>}} data the summary route's answer
 * @param {Partial<import('./views.js').Navigate>} on
 * @returns {HTMLElement}
 */
function confusionTable(dataset, data, on) {
  const names = data.class_names;
  const n = dataset.confusion ? dataset.confusion.length : names.length;
  if (!dataset.confusion || n > MATRIX_CLASSES) return confusedPairs(dataset, data, on);
  const wrapper = el('details', {className: 'confusion', attrs: n <= 12 ? {open: ''} : {}}, [
    el('summary', {text: `confusion matrix (rows: label, columns: prediction)`}),
  ]);
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

/**
 * The most confused pairs of classes of a dataset with too many classes for a matrix:
 * the summary's most frequent ones, then, on request, every pair a page at a time
 * (the confusion route); each row opens its confusion set.
 * @param {{name: string, confused_pairs?: number, misclassified?: number,
 *   top_confusions?: Array<import('./model.js').ConfusionCell>}} dataset
 * @param {{run: string, step: number, class_names: Array<string>}} data the summary route's answer
 * @param {Partial<import('./views.js').Navigate>} on
 * @returns {HTMLElement}
 */
function confusedPairs(dataset, data, on) {
  const names = data.class_names;
  const top = dataset.top_confusions || [];
  const total = dataset.confused_pairs ?? top.length;
  const images = dataset.misclassified ?? top.reduce((sum, cell) => sum + cell.count, 0);
  const wrapper = el('details', {className: 'confusion confused-pairs', attrs: {open: ''}}, [
    el('summary', {text: 'most confused pairs (label → prediction)'}),
  ]);
  const caption = el('div', {className: 'table-count', attrs: {role: 'status'}});
  const table = el('table', {className: 'table confused-pairs'});
  const pager = el('div', {className: 'pager pairs-pager'});
  const problem = el('div');
  wrapper.append(
    el('div', {className: 'confusion-note', text: `${names.length} classes: too many for a matrix. ` +
      `${images} misclassified ${images === 1 ? 'image' : 'images'} in ${total} ` +
      `${total === 1 ? 'pair' : 'pairs'} of classes, most images first.`}),
    caption, table, pager, problem);
  /**
   * Show `cells`, the rows from `start` on of the `total` pairs.
   * @param {Array<import('./model.js').ConfusionCell>} cells
   * @param {number} start
   */
  const show = (cells, start) => {
    caption.textContent = cells.length
      ? `pairs ${start + 1}–${start + cells.length} of ${total} shown` : 'no image is misclassified';
    const head = el('tr', {}, [el('th', {text: 'label'}), el('th', {text: 'predicted as'}), el('th', {text: 'images'})]);
    const rows = cells.map(({label, pred, count}) => {
      const row = el('tr', {className: 'clickable', attrs: {tabindex: 0, 'data-label': label, 'data-pred': pred,
        title: `open the images of ${className(names, label)} predicted as ${className(names, pred)}`}}, [
        el('td', {text: className(names, label)}),
        el('td', {text: className(names, pred)}),
        el('td', {text: count}),
      ]);
      activate(row, () => on.category && on.category(dataset.name, label, pred));
      return row;
    });
    table.replaceChildren(head, ...rows);
  };
  let asked = 0; // the latest page asked for: an earlier answer arriving later is dropped
  /**
   * Fetch and show page `page` of every pair (PAIRS_PAGE a page).
   * @param {number} page
   */
  const load = async (page) => {
    const mine = ++asked;
    problem.replaceChildren(message('loading', 'loading…'));
    try {
      const body = await model.getConfusion({run: data.run, step: data.step, dataset: dataset.name,
        diagonal: false, page, pageSize: PAIRS_PAGE});
      if (mine !== asked) return;
      problem.replaceChildren();
      show(body.cells, page * PAIRS_PAGE);
      const pages = Math.max(1, Math.ceil(body.num_cells / PAIRS_PAGE));
      /**
       * A pager button that shows page `to`.
       * @param {string} text 'previous' or 'next'
       * @param {number} to
       * @param {boolean} disabled
       * @returns {HTMLButtonElement}
       */
      const button = (text, to, disabled) => {
        const b = /** @type {HTMLButtonElement} */ (el('button', {text, attrs: {'data-page': text === 'previous' ? 'prev' : 'next'}}));
        b.disabled = disabled;
        b.addEventListener('click', () => load(to));
        return b;
      };
      pager.replaceChildren(button('previous', page - 1, page === 0),
        el('span', {text: `page ${page + 1} of ${pages}`}), button('next', page + 1, page >= pages - 1));
    } catch (error) {
      if (mine !== asked) return;
      problem.replaceChildren(message('error', `the confused pairs could not be read: ${error.message}`));
    }
  };
  show(top, 0);
  if (total > top.length) {
    const more = el('button', {text: `all ${total} pairs, ${PAIRS_PAGE} a page`, attrs: {'data-page': 'all'}});
    more.addEventListener('click', () => load(0));
    pager.replaceChildren(more);
  }
  return wrapper;
}

const TABLE_PAGE = 100; // rows of the neuron table per page

export const FILTER_HELP = 'Filter: >0.5 or <=0.1 (on the sorted column), a neuron number such as 12, ' +
  'a range such as 10-20, or "dead". Empty: every neuron.';

/**
 * The neuron table's filter as a test of a neuron, or an error in words.
 * @param {string} text what the user typed
 * @param {(i: number) => number|null} value the sorted column's value of neuron i
 * @param {Set<number>} dead
 * @returns {{keep: ((i: number) => boolean)|null, error: string|null}}
 */
export function parseFilter(text, value, dead) {
  const input = text.trim();
  if (!input) return {keep: null, error: null};
  const bound = input.match(/^(<=|>=|<|>)\s*(-?(?:\d+\.?\d*|\.\d+)(?:e-?\d+)?)%?$/i);
  if (bound) {
    const limit = Number(bound[2]) / (input.endsWith('%') ? 100 : 1);
    const test = {'<': (v) => v < limit, '<=': (v) => v <= limit, '>': (v) => v > limit, '>=': (v) => v >= limit}[bound[1]];
    return {keep: (i) => {
      const v = value(i);
      return v !== null && test(v);
    }, error: null};
  }
  if (/^\d+$/.test(input)) return {keep: (i) => i === Number(input), error: null};
  const range = input.match(/^(\d+)\s*[-–]\s*(\d+)$/);
  if (range) {
    const [low, high] = [Number(range[1]), Number(range[2])].sort((a, b) => a - b);
    return {keep: (i) => i >= low && i <= high, error: null};
  }
  if (input.toLowerCase() === 'dead') return {keep: (i) => dead.has(i), error: null};
  return {keep: null, error: `"${input}" is not understood. ${FILTER_HELP}`};
}

/**
 * A column of the neuron table.
 * @typedef {{key: string, title: string, unit?: string, value: (i: number) => number|null,
 *   dead?: Set<number>, percent?: boolean}} TableColumn (`dead`: the neurons whose undefined
 *   value reads "dead"; `percent`: shown as a percentage)
 */

/**
 * B − A of two values, or null where either is undefined.
 * @param {number|null} a
 * @param {number|null} b
 * @returns {number|null}
 */
export function difference(a, b) {
  return a === null || a === undefined || b === null || b === undefined ? null : b - a;
}

/**
 * The neuron table's score columns of every OOD set: novelty, spurious and activation
 * ratio; where compared (`other`: B's summary, whose sets are A's in the same order),
 * for novelty and spurious A's, B's and B − A, for the activation ratio A's and B's.
 * @param {object} data the summary route's answer (A)
 * @param {object|null} other B's, or null
 * @returns {Array<TableColumn>}
 */
function scoreColumns(data, other) {
  const deadA = new Set(data.dead || []);
  const deadB = new Set(other?.dead || []);
  const either = new Set([...deadA, ...deadB]);
  const columns = [];
  data.datasets.forEach((d, index) => {
    if (d.role !== 'ood') return;
    const b = other ? other.datasets[index] : null;
    for (const [key, title, unit] of [['novelty', 'novelty', 'units of the InD max'], ['spurious', 'spurious', '0–1'],
      ['activation_ratio', 'act. ratio', 'OOD max / InD max']]) {
      const ratio = key === 'activation_ratio';
      /** @type {(i: number) => number|null} */
      const a = (i) => d.scores[key][i];
      columns.push({key: `${d.name}:${key}`, title: `${d.name} ${title}${b ? ' A' : ''}`, unit, value: a,
        dead: deadA, percent: ratio});
      if (!b) continue;
      /** @type {(i: number) => number|null} */
      const valueB = (i) => b.scores[key][i];
      columns.push({key: `${d.name}:${key}:b`, title: `${d.name} ${title} B`, unit, value: valueB, dead: deadB,
        percent: ratio});
      if (!ratio) {
        columns.push({key: `${d.name}:${key}:diff`, title: `${d.name} ${title} B − A`, unit,
          value: (i) => difference(a(i), valueB(i)), dead: either});
      }
    }
  });
  return columns;
}

/**
 * Every neuron's scores on every OOD set: sortable, filtered, in pages; where
 * compared, B's scores and B − A beside A's (neurons matched by index).
 * @param {{num_neurons: number, dead?: Array<number>, datasets: Array<{name: string, role: string,
 *   scores?: Object<string, Array<number|null>>}>}} data the summary route's answer
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {object|null} [other] B's summary, where compared
 * @returns {HTMLElement}
 */
function neuronTable(data, on, other = null) {
  const dead = new Set(data.dead || []);
  /** @type {Array<TableColumn>} */
  const columns = [{key: 'neuron', title: 'neuron', value: (i) => i}, ...scoreColumns(data, other)];
  const box = el('div', {className: 'neuron-table'}, [el('h3', {text: 'Neurons'})]);
  const filter = /** @type {HTMLInputElement} */ (el('input', {attrs: {id: 'neuron-filter', type: 'search', placeholder: 'filter, e.g. >0.5 or 10-20',
    'aria-describedby': 'neuron-filter-help'}}));
  const help = el('div', {className: 'filter-help', text: FILTER_HELP, attrs: {id: 'neuron-filter-help'}});
  const feedback = el('div', {className: 'filter-feedback', attrs: {role: 'status', 'aria-live': 'polite'}});
  const count = el('div', {className: 'table-count', attrs: {role: 'status'}});
  const table = el('table', {className: 'table sortable'});
  const pager = el('div', {className: 'pager table-pager'});
  box.append(filter, help, feedback, count, table, pager);
  let sortKey = columns.length > 1 ? columns[1].key : 'neuron';
  let descending = true;
  let page = 0;
  const draw = () => {
    const column = columns.find((c) => c.key === sortKey);
    let rows = Array.from({length: data.num_neurons}, (_, i) => i);
    const {keep, error} = parseFilter(filter.value, column.value, dead);
    feedback.textContent = error || '';
    filter.setAttribute('aria-invalid', error ? 'true' : 'false');
    if (keep) rows = rows.filter(keep);
    rows.sort((a, b) => {
      const va = column.value(a);
      const vb = column.value(b);
      if (va === null && vb === null) return a - b;
      if (va === null) return 1;
      if (vb === null) return -1;
      return descending ? vb - va || a - b : va - vb || a - b;
    });
    const pages = Math.max(1, Math.ceil(rows.length / TABLE_PAGE));
    page = Math.min(page, pages - 1);
    const start = page * TABLE_PAGE;
    const shown = rows.slice(start, start + TABLE_PAGE);
    const of = keep ? `${rows.length} of ${data.num_neurons} neurons match` : `${data.num_neurons} neurons`;
    count.textContent = rows.length
      ? `${of}; rows ${start + 1}–${start + shown.length} shown, sorted by ${column.title}${descending ? ' (highest first)' : ' (lowest first)'}`
      : `${of}`;
    const head = el('tr', {}, columns.map((c) => {
      const th = el('th', {className: 'clickable', text: c.title + (c.key === sortKey ? (descending ? ' ▼' : ' ▲') : ''),
        attrs: {tabindex: 0, 'data-key': c.key, title: c.unit ? `${c.title} (${c.unit})` : c.title,
          'aria-sort': c.key === sortKey ? (descending ? 'descending' : 'ascending') : 'none'}});
      activate(th, () => {
        descending = c.key === sortKey ? !descending : true;
        sortKey = c.key;
        page = 0;
        draw();
      });
      return th;
    }));
    const body = shown.map((i) => {
      const tr = el('tr', {className: 'clickable', attrs: {tabindex: 0, 'data-neuron': i}}, columns.map((c) => {
        const v = c.value(i);
        if (c.key === 'neuron') return el('td', {text: dead.has(i) ? `${v} (dead)` : v});
        if (c.dead?.has(i) && v === null) return el('td', {className: 'dead', text: 'dead', attrs: {'data-key': c.key}});
        return el('td', {text: c.percent ? percent(v) : formatRaw(v), attrs: {'data-key': c.key, 'data-value': String(v)}});
      }));
      activate(tr, () => on.neuron && on.neuron(i));
      return tr;
    });
    table.replaceChildren(head, ...body);
    pager.replaceChildren();
    if (pages > 1) {
      const prev = /** @type {HTMLButtonElement} */ (el('button', {text: 'previous', attrs: {'data-page': 'prev'}}));
      const next = /** @type {HTMLButtonElement} */ (el('button', {text: 'next', attrs: {'data-page': 'next'}}));
      prev.disabled = page === 0;
      next.disabled = page >= pages - 1;
      prev.addEventListener('click', () => {
        page -= 1;
        draw();
      });
      next.addEventListener('click', () => {
        page += 1;
        draw();
      });
      pager.append(prev, el('span', {text: `page ${page + 1} of ${pages}`}), next);
    }
  };
  filter.addEventListener('input', () => {
    page = 0;
    draw();
  });
  draw();
  return box;
}
