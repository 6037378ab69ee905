// The category view: a category (or a confusion set) of one dataset, picked by
// dataset and class name with type-ahead; for a category, first the category across
// every set side by side (InD first: each set's recall of it, its images, its own
// top neurons, and what it keeps of the InD set's top neurons, the neurons that lose
// most flagged); then the picked set's most active neurons, its images, and for a
// category its false positives and false negatives by the model's confidence, a page
// of each at a time.

import {activate, className, el, formatRaw, imageLegend, message, percent, probabilityPercent,
  roleLabel} from './dom.js';
import * as model from './model.js';
import {imageTile} from './thumbnails.js';

/** @type {import('./views.js').View} */
export const category = {
  name: 'category',
  title: 'Category',
  /**
   * The shown category as `LABEL:PRED:PAGE[:either][:fpN][:fnN]@DATASET` (PRED empty for
   * a category; `fpN`, `fnN`: the pages of its false positives and negatives, when not 0).
   * @param {import('./state.js').TabState} state
   * @returns {Object<string, string>}
   */
  encode(state) {
    const c = state.category;
    if (!c) return {};
    const pages = `${c.fpPage ? `:fp${c.fpPage}` : ''}${c.fnPage ? `:fn${c.fnPage}` : ''}`;
    return {category: `${c.label}:${c.pred ?? ''}:${c.page}${c.either ? ':either' : ''}${pages}@${c.dataset}`};
  },
  /**
   * The category that the URL's `category` names, or null.
   * @param {Object<string, string>} data
   * @returns {{category: {label: number, pred: number|null, page: number, dataset: string,
   *   either: boolean, fpPage: number, fnPage: number}|null}}
   */
  decode(data) {
    const match = (data.category || '').match(/^(\d+):(\d*):(\d+)(:either)?(?::fp(\d+))?(?::fn(\d+))?@(.*)$/s);
    return {category: match
      ? {label: Number(match[1]), pred: match[2] === '' ? null : Number(match[2]),
        page: Number(match[3]), dataset: match[7],
        either: Boolean(match[4]) && match[2] !== '' && match[2] !== match[1],
        fpPage: Number(match[5] || 0), fnPage: Number(match[6] || 0)}
      : null};
  },
  /**
   * The shown category (class 0 of the InD set when none is chosen), and for a
   * category (no `pred`) the category across every set.
   * @param {import('./views.js').ViewContext} context
   * @returns {Promise<{one: object, sets: object|null}>}
   */
  async load({where, state, info}) {
    const shown = state.category || {dataset: info.ind, label: 0, pred: null, page: 0};
    const [one, sets] = await Promise.all([
      model.getCategory({...where, ...shown}),
      shown.pred === null ? model.getCategorySets({...where, label: shown.label}) : null,
    ]);
    return {one, sets};
  },
  /**
   * Draw the view.
   * @param {{one: object, sets: object|null}} data the category route's answer, and the
   *   category_sets route's (null for a confusion set)
   * @param {import('./views.js').ViewContext} context
   * @returns {HTMLElement}
   */
  render: ({one, sets}, {run, navigate, info, state}) =>
    render(one, sets, run, navigate, info.datasets, (kind, page) => showMistakes(state, navigate, info, kind, page)),
};

/**
 * Show page `page` of the shown category's false positives (`kind` 'fp') or false
 * negatives ('fn'): the state keeps it (and the URL with it, through `navigate.page`,
 * which keeps the category's other fields).
 * @param {import('./state.js').TabState} state
 * @param {Partial<import('./views.js').Navigate>} navigate
 * @param {import('./state.js').RunInfo} info
 * @param {string} kind
 * @param {number} page
 */
function showMistakes(state, navigate, info, kind, page) {
  const shown = state.category || {dataset: info.ind, label: 0, pred: null, either: false, page: 0};
  state.category = {...shown, [kind === 'fp' ? 'fpPage' : 'fnPage']: page};
  if (navigate.page) navigate.page(shown.page);
}

/**
 * The class that `text` names: a class name (any case), or a class number; null
 * when it names none.
 * @param {string} text
 * @param {Array<string>} names
 * @returns {number|null}
 */
export function classFromText(text, names) {
  const input = text.trim();
  if (/^\d+$/.test(input) && Number(input) < names.length) return Number(input);
  const exact = names.indexOf(input);
  if (exact >= 0) return exact;
  const lower = input.toLowerCase();
  const folded = names.findIndex((name) => name.toLowerCase() === lower);
  return folded >= 0 ? folded : null;
}

/**
 * Pick a dataset and a class (and optionally the class it is predicted as) by name,
 * with type-ahead over the run's class names.
 * @param {{dataset: string, label: number, pred: number|null, class_names: Array<string>}} data
 *   the shown category
 * @param {Array<string>} datasets the run's datasets
 * @param {Partial<import('./views.js').Navigate>} on
 * @returns {HTMLElement}
 */
function categoryPicker(data, datasets, on) {
  const names = data.class_names;
  const select = /** @type {HTMLSelectElement} */ (el('select', {attrs: {id: 'category-dataset'}}));
  for (const name of datasets) {
    const option = /** @type {HTMLOptionElement} */ (el('option', {text: name, attrs: {value: name}}));
    if (name === data.dataset) option.selected = true;
    select.appendChild(option);
  }
  const list = el('datalist', {attrs: {id: 'class-names'}},
    names.map((name, i) => el('option', {attrs: {value: name, label: `class ${i}`}})));
  const label = /** @type {HTMLInputElement} */ (el('input', {attrs: {id: 'category-label', list: 'class-names',
    autocomplete: 'off', value: className(names, data.label), placeholder: 'class name or number'}}));
  const pred = /** @type {HTMLInputElement} */ (el('input', {attrs: {id: 'category-pred', list: 'class-names',
    autocomplete: 'off', value: data.pred === null ? '' : className(names, data.pred), placeholder: 'any (optional)'}}));
  const go = el('button', {text: 'open', attrs: {id: 'category-open'}});
  const feedback = el('div', {className: 'picker-feedback', attrs: {role: 'status', 'aria-live': 'polite'}});
  const open = () => {
    const a = classFromText(label.value, names);
    const b = pred.value.trim() === '' ? null : classFromText(pred.value, names);
    const unknown = a === null ? label.value : (b === null && pred.value.trim() !== '' ? pred.value : null);
    if (unknown !== null) {
      feedback.textContent = `No class is named "${unknown.trim()}": type a class name (the list offers them as ` +
        `you type) or a class number from 0 to ${names.length - 1}.`;
      return;
    }
    feedback.textContent = '';
    if (on.category) on.category(select.value, a, b);
  };
  go.addEventListener('click', open);
  for (const input of [label, pred]) {
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') open();
    });
  }
  return el('div', {className: 'picker category-picker'}, [
    el('label', {text: 'Dataset', attrs: {for: 'category-dataset'}}, [select]),
    el('label', {text: 'Class', attrs: {for: 'category-label'}}, [label]),
    el('label', {text: 'predicted as', attrs: {for: 'category-pred'}}, [pred]),
    go, list, feedback,
  ]);
}

/**
 * The false positives or false negatives of a category, most confident first.
 * @param {string} title
 * @param {{count: number, sorted_by: string, images: Array<object>}|undefined} errors
 * @param {{dataset: string, step: number, class_names: Array<string>}} data the category route's answer
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {string} kind 'false-positives' or 'false-negatives'
 * @param {(page: number) => void} turn show another page of them
 * @returns {HTMLElement|null}
 */
function mistakes(title, errors, data, run, on, kind, turn) {
  if (!errors) return null;
  const grid = el('div', {className: 'grid'});
  for (const image of errors.images) {
    grid.appendChild(imageTile({run, dataset: data.dataset, step: data.step, names: data.class_names, image, on,
      value: image.confidence === null || image.confidence === undefined ? undefined
        : {text: `${probabilityPercent(image.confidence)} sure`, title: 'the probability the model gave its prediction'}}));
  }
  if (!errors.images.length) grid.appendChild(message('empty', 'none'));
  const order = errors.sorted_by === 'confidence' ? 'most confident first'
    : 'in dataset order (this log has no prediction probabilities)';
  const page = errors.page || 0;
  const size = errors.page_size || errors.images.length;
  const pages = size ? Math.ceil(errors.count / size) : 1;
  const shown = pages > 1 ? `, ${page * size + 1}–${page * size + errors.images.length} shown` : '';
  const box = el('div', {className: `mistakes ${kind}`, attrs: {'data-kind': kind, 'data-page': page}}, [
    el('h3', {text: `${title}: ${errors.count} images (${order}${shown})`}), grid,
  ]);
  if (pages > 1) box.appendChild(pager(page, pages, turn, `mistakes-pager ${kind}`));
  return box;
}

/**
 * Previous / next buttons and "page P of N".
 * @param {number} page
 * @param {number} pages
 * @param {(page: number) => void} turn
 * @param {string} className
 * @param {string} [idPrefix] ids of the buttons (`PREFIX-prev`, `PREFIX-next`)
 * @returns {HTMLElement}
 */
function pager(page, pages, turn, className, idPrefix) {
  const prev = /** @type {HTMLButtonElement} */ (el('button', {text: 'previous', className: 'prev',
    attrs: idPrefix ? {id: `${idPrefix}-prev`} : {}}));
  const next = /** @type {HTMLButtonElement} */ (el('button', {text: 'next', className: 'next',
    attrs: idPrefix ? {id: `${idPrefix}-next`} : {}}));
  prev.disabled = page === 0;
  next.disabled = page >= pages - 1;
  prev.addEventListener('click', () => turn(page - 1));
  next.addEventListener('click', () => turn(page + 1));
  return el('div', {className: `pager ${className}`}, [prev, el('span', {text: `page ${page + 1} of ${pages}`}), next]);
}

/**
 * One category in every set side by side, InD first (the category_sets route's
 * answer): per set its recall of the category and its number of images, the InD
 * set's top neurons with their mean there and the share of their InD mean they keep
 * (those that lose most flagged in words), the set's own top neurons and its first
 * images of the category.
 * @param {object} sets the category_sets route's answer
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @returns {HTMLElement}
 */
function acrossSets(sets, run, on) {
  const names = sets.class_names;
  const name = className(names, sets.label);
  const columns = el('div', {className: 'columns set-columns'});
  for (const d of sets.datasets) {
    const ind = d.role === 'ind';
    const rows = el('tbody');
    for (const n of d.ind_neurons) {
      const flag = n.lost ? el('span', {className: 'lost-flag', text: '▼ loses most'}) : el('span');
      const row = el('tr', {className: `clickable${n.lost ? ' lost' : ''}`, attrs: {tabindex: 0,
        'data-neuron': n.neuron, 'data-kept': n.kept ?? '', 'data-lost': n.lost,
        title: `neuron ${n.neuron}: mean ${percent(n.mean)} of its InD max on ${d.name}'s ${name} images` +
          ` (${percent(n.ind_mean)} on InD's)`}}, [
        el('td', {text: n.neuron}),
        el('td', {className: 'mean', text: percent(n.mean)}),
        ...(ind ? [] : [el('td', {className: 'kept', text: percent(n.kept)}), el('td', {}, [flag])]),
      ]);
      activate(row, () => on.neuron && on.neuron(n.neuron));
      rows.appendChild(row);
    }
    const head = el('tr', {}, [el('th', {text: 'neuron'}), el('th', {text: 'mean'}),
      ...(ind ? [] : [el('th', {text: 'kept'}), el('th', {text: ''})])]);
    const own = el('ol', {className: 'set-own-neurons'});
    for (const n of d.neurons) {
      const item = el('li', {className: 'clickable', text: `neuron ${n.neuron}: ${percent(n.mean)}`,
        attrs: {tabindex: 0, 'data-neuron': n.neuron}});
      activate(item, () => on.neuron && on.neuron(n.neuron));
      own.appendChild(item);
    }
    const grid = el('div', {className: 'grid'});
    for (const image of d.images) {
      grid.appendChild(imageTile({run, dataset: d.name, step: sets.step, names, image, on}));
    }
    if (!d.images.length) grid.appendChild(message('empty', 'no images'));
    columns.appendChild(el('div', {className: `column set-column ${d.role}`, attrs: {'data-dataset': d.name, 'data-role': d.role}}, [
      el('header', {}, [el('span', {className: `role ${d.role}`, text: roleLabel(d.role)}), el('strong', {text: d.name})]),
      el('div', {className: 'set-stats', text: `accuracy on "${name}": ${percent(d.accuracy)} of ${d.num_images} images`}),
      el('h4', {text: ind ? `InD top neurons (mean of InD max)` : 'InD top neurons here (kept: share of the InD mean)'}),
      el('table', {className: 'table kept-neurons'}, [el('thead', {}, [head]), rows]),
      el('h4', {text: `its own top neurons`}), own,
      el('h4', {text: `images of "${name}"`}), grid,
    ]));
  }
  const rule = `▼ loses most: on each OOD set, the ${sets.lost_marked} InD top neurons with the lowest kept share ` +
    '(OOD mean / InD mean), among those below 100%.';
  return el('section', {className: 'category-sets', attrs: {'data-label': sets.label, 'aria-label': 'category across every set'}}, [
    el('h3', {text: `${name} across every set — which neurons carry it on InD, and what each OOD set keeps of them`}),
    el('p', {className: 'lost-rule', text: rule}),
    columns,
  ]);
}

/**
 * The category view: its picker, its title, the confusion set's direction, its most
 * active neurons, a page of its images (with a pager), its false positives and negatives.
 * @param {object} data the category route's answer
 * @param {object|null} sets the category_sets route's answer (null: a confusion set)
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {Array<string>} datasets the run's datasets
 * @param {(kind: string, page: number) => void} turnMistakes show another page of the
 *   false positives ('fp') or negatives ('fn')
 * @returns {HTMLElement}
 */
function render(data, sets, run, on, datasets, turnMistakes) {
  const names = data.class_names;
  const pair = data.pred !== null && data.pred !== undefined;
  const [a, b] = [className(names, data.label), pair ? className(names, data.pred) : ''];
  const what = !pair ? `category ${a}`
    : data.either ? `confusion between ${a} and ${b} (${a} → ${b} or ${b} → ${a})`
      : `label ${a} predicted as ${b}`;
  const root = el('section', {className: 'category-view', attrs: {'data-dataset': data.dataset, 'data-label': data.label}});
  root.appendChild(categoryPicker(data, datasets, on));
  if (sets) root.append(imageLegend(), acrossSets(sets, run, on));
  root.appendChild(el('h2', {text: `${what} in ${data.dataset} — ${data.num_images} images, step ${data.step}`}));
  if (pair && data.label !== data.pred && (data.either_available || data.either)) {
    const toggle = el('div', {className: 'direction', attrs: {role: 'group', 'aria-label': 'confusion set'}});
    /** @type {Array<[boolean, string]>} */
    const directions = [[false, `${a} → ${b} only`], [true, 'both directions (the paper\'s confusion set)']];
    for (const [either, text] of directions) {
      const button = /** @type {HTMLButtonElement} */ (el('button', {text, attrs: {'data-either': either, 'aria-pressed': either === data.either}}));
      button.disabled = either === data.either;
      button.addEventListener('click', () => on.category && on.category(data.dataset, data.label, data.pred, either));
      toggle.appendChild(button);
    }
    root.appendChild(toggle);
  }
  if (!sets) root.appendChild(imageLegend());
  const normalized = data.means !== 'raw';
  const neurons = el('ol', {className: 'category-neurons'});
  for (const n of data.neurons) {
    const value = normalized ? `mean ${percent(n.mean)} of its InD max` : `raw mean ${formatRaw(n.mean)}`;
    const item = el('li', {className: 'clickable', text: `neuron ${n.neuron}: ${value}`, attrs: {tabindex: 0, 'data-neuron': n.neuron}});
    activate(item, () => on.neuron && on.neuron(n.neuron));
    neurons.appendChild(item);
  }
  const grid = el('div', {className: 'grid'});
  for (const image of data.images) {
    grid.appendChild(imageTile({run, dataset: data.dataset, step: data.step, names, image, on}));
  }
  if (!data.images.length) grid.appendChild(message('empty', 'no images'));
  const pushed = [];
  if (data.pushes && data.pushes.available) {
    const list = el('ol', {className: 'pair-pushes'});
    for (const n of data.pushes.neurons) {
      const value = n.mean === null ? 'n/a' : `${n.mean >= 0 ? '+' : ''}${n.mean.toFixed(3)}`;
      const item = el('li', {className: 'clickable', text: `neuron ${n.neuron}: ${value}`, attrs: {tabindex: 0, 'data-neuron': n.neuron}});
      activate(item, () => on.neuron && on.neuron(n.neuron));
      list.appendChild(item);
    }
    pushed.push(el('h3', {text: `Pushed ${b} over ${a} (mean activation × weight difference)`}), list);
  } else if (data.pushes) {
    pushed.push(message('empty', `What pushed ${b} over ${a}: not shown (${data.pushes.why})`));
  }
  root.appendChild(el('div', {className: 'columns'}, [
    el('div', {}, [el('h3', {text: 'Most active neurons'}), neurons, ...pushed]),
    el('div', {className: 'column'}, [el('h3', {text: 'Images'}), grid]),
  ]));
  const pages = Math.ceil(data.num_images / data.page_size);
  if (pages > 1) root.appendChild(pager(data.page, pages, (page) => on.page && on.page(page), 'images-pager', 'page'));
  for (const box of [
    mistakes(`False positives in ${data.dataset} (predicted ${a}, labelled otherwise)`, data.false_positives, data, run, on,
      'false-positives', (page) => turnMistakes('fp', page)),
    mistakes(`False negatives in ${data.dataset} (labelled ${a}, predicted otherwise)`, data.false_negatives, data, run, on,
      'false-negatives', (page) => turnMistakes('fn', page)),
  ]) {
    if (box) root.appendChild(box);
  }
  return root;
}
