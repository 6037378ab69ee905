// The category view: a category (or a confusion set) of one dataset, picked by
// dataset and class name with type-ahead; its most active neurons, its images,
// and for a category its false positives and false negatives by the model's
// confidence.

import {activate, className, el, formatRaw, imageLegend, message, percent, probabilityPercent} from './dom.js';
import * as model from './model.js';
import {imageTile} from './thumbnails.js';

/** @type {import('./views.js').View} */
export const category = {
  name: 'category',
  title: 'Category',
  /**
   * The shown category as `LABEL:PRED:PAGE[:either]@DATASET` (PRED empty for a category).
   * @param {import('./state.js').TabState} state
   * @returns {Object<string, string>}
   */
  encode(state) {
    const c = state.category;
    return c ? {category: `${c.label}:${c.pred ?? ''}:${c.page}${c.either ? ':either' : ''}@${c.dataset}`} : {};
  },
  /**
   * The category that the URL's `category` names, or null.
   * @param {Object<string, string>} data
   * @returns {{category: {label: number, pred: number|null, page: number, dataset: string,
   *   either: boolean}|null}}
   */
  decode(data) {
    const match = (data.category || '').match(/^(\d+):(\d*):(\d+)(:either)?@(.*)$/s);
    return {category: match
      ? {label: Number(match[1]), pred: match[2] === '' ? null : Number(match[2]),
        page: Number(match[3]), dataset: match[5],
        either: Boolean(match[4]) && match[2] !== '' && match[2] !== match[1]}
      : null};
  },
  /**
   * The shown category (class 0 of the InD set when none is chosen).
   * @param {import('./views.js').ViewContext} context
   * @returns {Promise<object>}
   */
  load({where, state, info}) {
    const shown = state.category || {dataset: info.ind, label: 0, pred: null, page: 0};
    return model.getCategory({...where, ...shown});
  },
  /**
   * Draw the view.
   * @param {object} data the category route's answer
   * @param {import('./views.js').ViewContext} context
   * @returns {HTMLElement}
   */
  render: (data, {run, navigate, info}) => render(data, run, navigate, info.datasets),
};

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
 * @returns {HTMLElement|null}
 */
function mistakes(title, errors, data, run, on, kind) {
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
  const shown = errors.images.length < errors.count ? `, the first ${errors.images.length} shown` : '';
  return el('div', {className: `mistakes ${kind}`, attrs: {'data-kind': kind}}, [
    el('h3', {text: `${title}: ${errors.count} images (${order}${shown})`}), grid,
  ]);
}

/**
 * The category view: its picker, its title, the confusion set's direction, its most
 * active neurons, a page of its images (with a pager), its false positives and negatives.
 * @param {object} data the category route's answer
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {Array<string>} datasets the run's datasets
 * @returns {HTMLElement}
 */
function render(data, run, on, datasets) {
  const names = data.class_names;
  const pair = data.pred !== null && data.pred !== undefined;
  const [a, b] = [className(names, data.label), pair ? className(names, data.pred) : ''];
  const what = !pair ? `category ${a}`
    : data.either ? `confusion between ${a} and ${b} (${a} → ${b} or ${b} → ${a})`
      : `label ${a} predicted as ${b}`;
  const root = el('section', {className: 'category-view', attrs: {'data-dataset': data.dataset, 'data-label': data.label}});
  root.appendChild(categoryPicker(data, datasets, on));
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
  root.appendChild(imageLegend());
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
  root.appendChild(el('div', {className: 'columns'}, [
    el('div', {}, [el('h3', {text: 'Most active neurons'}), neurons]),
    el('div', {className: 'column'}, [el('h3', {text: 'Images'}), grid]),
  ]));
  const pages = Math.ceil(data.num_images / data.page_size);
  if (pages > 1) {
    const prev = /** @type {HTMLButtonElement} */ (el('button', {text: 'previous', attrs: {id: 'page-prev'}}));
    const next = /** @type {HTMLButtonElement} */ (el('button', {text: 'next', attrs: {id: 'page-next'}}));
    prev.disabled = data.page === 0;
    next.disabled = data.page >= pages - 1;
    prev.addEventListener('click', () => on.page && on.page(data.page - 1));
    next.addEventListener('click', () => on.page && on.page(data.page + 1));
    root.appendChild(el('div', {className: 'pager'}, [prev, el('span', {text: `page ${data.page + 1} of ${pages}`}), next]));
  }
  for (const box of [
    mistakes(`False positives (predicted ${a}, labelled otherwise)`, data.false_positives, data, run, on, 'false-positives'),
    mistakes(`False negatives (labelled ${a}, predicted otherwise)`, data.false_negatives, data, run, on, 'false-negatives'),
  ]) {
    if (box) root.appendChild(box);
  }
  return root;
}
