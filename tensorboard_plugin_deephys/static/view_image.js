// The image view: one image, its label and the model's top predictions, and its most
// active neurons, each with its top images (as many as Top k) in InD and in the
// image's own set.

import {activate, className, el, imageLegend, leftOutNotes, message, percent, probabilityPercent, roleLabel} from './dom.js';
import * as model from './model.js';
import {imageTile, mapNoteElements, mapScale, thumbnailImage} from './thumbnails.js';

/** @type {import('./views.js').View} */
export const image = {
  name: 'image',
  title: 'Image',
  /**
   * The shown image as `INDEX@DATASET`.
   * @param {import('./state.js').TabState} state
   * @returns {Object<string, string>}
   */
  encode: (state) => (state.image ? {image: `${state.image.index}@${state.image.dataset}`} : {}),
  /**
   * The image that the URL's `image` names, or null.
   * @param {Object<string, string>} data
   * @returns {{image: {index: number, dataset: string}|null}}
   */
  decode(data) {
    const match = (data.image || '').match(/^(-?\d+)@(.*)$/s); // negative: answered in words
    return {image: match ? {index: Number(match[1]), dataset: match[2]} : null};
  },
  /**
   * The shown image (image 0 of the InD set when none is chosen), with Top k images per neuron.
   * @param {import('./views.js').ViewContext} context
   * @returns {Promise<object>}
   */
  load({where, state, info}) {
    const shown = state.image || {dataset: info.ind, index: 0};
    return model.getImage({...where, ...shown, k: state.k});
  },
  /**
   * Draw the view.
   * @param {object} data the image route's answer
   * @param {import('./views.js').ViewContext} context
   * @returns {HTMLElement}
   */
  render: (data, {run, navigate, info}) => render(data, run, navigate, info.datasets),
};

/**
 * Pick any image by dataset and index.
 * @param {{dataset: string, index: number}} data
 * @param {Array<string>} datasets
 * @param {Partial<import('./views.js').Navigate>} on
 * @returns {HTMLElement}
 */
function imagePicker(data, datasets, on) {
  const select = /** @type {HTMLSelectElement} */ (el('select', {attrs: {id: 'image-dataset'}}));
  for (const name of datasets) {
    const option = /** @type {HTMLOptionElement} */ (el('option', {text: name, attrs: {value: name}}));
    if (name === data.dataset) option.selected = true;
    select.appendChild(option);
  }
  const index = /** @type {HTMLInputElement} */ (el('input', {attrs: {id: 'image-index', type: 'number', min: 0, value: data.index}}));
  const go = el('button', {text: 'open', attrs: {id: 'image-open'}});
  // Any whole number goes to the server, which answers one that is out of range in words.
  const open = () => on.image && on.image(select.value, Math.floor(Number(index.value)) || 0);
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

/**
 * A link to category `label` of `dataset` (with `pred`, to the confusion set of
 * `label` predicted as `pred`), showing the class name or `text`.
 * @param {Array<string>} names
 * @param {number} label
 * @param {string} dataset
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {{pred?: number|null, text?: string}} [options]
 * @returns {HTMLElement}
 */
function categoryLink(names, label, dataset, on, {pred = null, text} = {}) {
  const attrs = {tabindex: 0, title: pred === null ? 'open this category' : 'open this confusion set', 'data-label': label};
  if (pred !== null) attrs['data-pred'] = pred;
  const link = el('span', {className: 'category-link clickable', text: text ?? className(names, label), attrs});
  activate(link, () => on.category && on.category(dataset, label, pred));
  return link;
}

/**
 * The model's top predictions for the image with their probabilities (softmax of
 * its outputs), or why they are not shown.
 * @param {Array<{label: number, probability: number}>|null|undefined} top
 * @param {Array<string>} names the class names
 * @param {{label: number, dataset: string}} data the image route's answer
 * @param {Partial<import('./views.js').Navigate>} on
 * @returns {HTMLElement}
 */
function topPredictions(top, names, data, on) {
  if (!top) {
    return message('empty', 'Top predictions: not in this log (it was written before they were recorded).');
  }
  if (!top.length) return message('empty', 'Top predictions: none (the classifier outputs are not finite).');
  const list = el('ol', {className: 'top-predictions', attrs: {'aria-label': 'top predictions'}});
  for (const {label, probability} of top) {
    const bar = el('div', {className: 'bar'});
    bar.style.setProperty('--fill', String(Math.max(0, Math.min(1, probability))));
    list.appendChild(el('li', {className: label === data.label ? 'is-label' : '', attrs: {'data-label': label}}, [
      categoryLink(names, label, data.dataset, on), bar, el('span', {className: 'value', text: probabilityPercent(probability)}),
    ]));
  }
  return el('div', {className: 'predictions'}, [el('div', {className: 'facts-title', text: 'top predictions (probability)'}), list]);
}

/**
 * What pushed the prediction: through the linear head the layer feeds, the neurons
 * with the largest contributions (activation × weight) to the predicted class's logit
 * and to the true class's, and the margin between the two; or why there is none.
 * @param {{available: boolean, why?: string|null, margin?: number|null,
 *   predicted?: Array<{neuron: number, value: number|null}>,
 *   label?: Array<{neuron: number, value: number|null}>}} pushes
 * @param {Array<string>} names the class names
 * @param {{label: number, prediction: number|null}} data the image route's answer
 * @param {Partial<import('./views.js').Navigate>} on
 * @returns {HTMLElement}
 */
function pushesPanel(pushes, names, data, on) {
  if (!pushes.available) {
    return message('empty', `What pushed the prediction: not shown (${pushes.why})`);
  }
  const column = (/** @type {string} */ title, /** @type {Array<{neuron: number, value: number|null}>} */ rows) => {
    const list = el('ol', {className: 'pushes'});
    for (const row of rows) {
      const item = el('li', {className: 'clickable', attrs: {tabindex: 0, 'data-neuron': row.neuron, title: 'open the neuron view'}}, [
        el('span', {className: 'name', text: `neuron ${row.neuron}`}),
        el('span', {className: 'value', text: row.value === null ? 'n/a' : `${row.value >= 0 ? '+' : ''}${row.value.toFixed(3)}`}),
      ]);
      activate(item, () => on.neuron && on.neuron(row.neuron));
      list.appendChild(item);
    }
    return el('div', {className: 'push-column'}, [el('div', {className: 'facts-title', text: title}), list]);
  };
  const predicted = className(names, data.prediction);
  const truth = className(names, data.label);
  const wrong = data.prediction !== data.label;
  const margin = pushes.margin === null || pushes.margin === undefined ? null : pushes.margin;
  const summary = wrong && margin !== null
    ? `The head scores "${predicted}" ${margin.toFixed(3)} above "${truth}": each neuron adds activation × weight to each logit.`
    : 'Each neuron adds activation × weight to each class logit.';
  return el('section', {className: 'pushes-panel'}, [
    el('h3', {text: 'What pushed the prediction (through the linear head)'}),
    el('div', {className: 'note', text: summary}),
    el('div', {className: 'push-columns'}, [
      column(`towards the prediction "${predicted}"`, pushes.predicted || []),
      ...(wrong ? [column(`towards the label "${truth}"`, pushes.label || [])] : []),
    ]),
  ]);
}

/**
 * The image view: its picker, the image with its label and prediction, its top
 * predictions, and its most active neurons with their top images.
 * @param {object} data the image route's answer
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {Array<string>} datasets the run's datasets
 * @returns {HTMLElement}
 */
function render(data, run, on, datasets) {
  const names = data.class_names;
  const root = el('section', {className: 'image-view', attrs: {'data-dataset': data.dataset, 'data-index': data.index}});
  root.appendChild(imagePicker(data, datasets, on));
  root.appendChild(el('h2', {text: `Image ${data.index} of ${data.dataset} (${roleLabel(data.role)}) — step ${data.step}`}));
  const correct = data.label === data.prediction;
  const predicted = data.prediction !== null && data.prediction !== undefined;
  const prediction = predicted
    ? el('div', {}, [el('span', {text: 'prediction: '}), categoryLink(names, data.prediction, data.dataset, on),
      el('span', {text: ` (${correct ? 'right' : 'wrong'}`})])
    : el('div', {className: 'no-prediction', text: 'prediction: none (its classifier outputs are NaN or infinite)'});
  if (predicted && !correct) {
    prediction.append(el('span', {text: ': '}), categoryLink(names, data.label, data.dataset, on,
      {pred: data.prediction, text: 'images with this confusion'}));
  }
  if (predicted) prediction.append(el('span', {text: ')'}));
  root.appendChild(el('div', {className: `subject ${correct ? 'right' : 'wrong'}`}, [
    thumbnailImage({run, dataset: data.dataset, index: data.index, step: data.step, lazy: false}),
    el('div', {className: 'facts'}, [
      el('div', {}, [el('span', {text: 'label: '}), categoryLink(names, data.label, data.dataset, on)]),
      prediction,
      el('div', {text: `index in the dataset: ${data.position}`}),
    ]),
    topPredictions(data.top_predictions, names, data, on),
  ]));
  if (data.pushes) root.appendChild(pushesPanel(data.pushes, names, data, on));
  root.appendChild(imageLegend());
  for (const note of leftOutNotes(data.left_out)) root.appendChild(note);
  const list = el('div', {className: 'top-neurons'});
  for (const top of data.top_neurons) {
    const value = top.normalized;
    const bar = el('div', {className: 'bar'});
    bar.style.setProperty('--fill', String(Math.max(0, Math.min(1, value || 0))));
    const header = el('header', {className: 'clickable', attrs: {tabindex: 0, title: 'open the neuron view', 'data-neuron': top.neuron}}, [
      el('span', {className: 'name', text: `neuron ${top.neuron}`}),
      bar,
      el('span', {className: 'value', text: percent(value), attrs: {title: 'activation on this image, as a share of the neuron\'s InD maximum'}}),
    ]);
    activate(header, () => on.neuron && on.neuron(top.neuron));
    const rows = el('div', {className: 'sources'});
    const scale = mapScale(Object.values(top.top_images).flat()); // one scale per neuron
    for (const [source, images] of Object.entries(top.top_images)) {
      const grid = el('div', {className: 'grid'});
      for (const shown of images) {
        grid.appendChild(imageTile({run, dataset: source, step: data.step, names, image: shown, on, scale,
          value: {text: percent(shown.normalized)}}));
      }
      rows.appendChild(el('div', {className: 'source', attrs: {'data-dataset': source}}, [el('div', {className: 'name', text: source}), grid]));
    }
    list.appendChild(el('div', {className: 'top-neuron'}, [header, rows]));
  }
  root.appendChild(list);
  list.before(...mapNoteElements(data.top_neurons.flatMap((top) => Object.values(top.top_images).flat())));
  return root;
}
