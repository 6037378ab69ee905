// The neuron view: one neuron's top images in every dataset side by side, with its
// scores on each OOD set, its top categories, and where it never fires.

import {activate, className, el, formatRaw, imageLegend, leftOutNotes, message, percent, roleLabel, sideLabel} from './dom.js';
import * as model from './model.js';
import {activationHistogram} from './plots.js';
import {imageTile, mapNoteElements, mapScale} from './thumbnails.js';

/** @type {import('./views.js').View} */
export const neuron = {
  name: 'neuron',
  title: 'Neuron',
  /**
   * Nothing of its own: the neuron and Top k are the controls' (every view keeps them).
   * @returns {Object<string, string>}
   */
  encode: () => ({}),
  /**
   * Nothing of its own.
   * @returns {object}
   */
  decode: () => ({}),
  /**
   * The shown neuron with Top k images per dataset.
   * @param {import('./views.js').ViewContext} context
   * @returns {Promise<object>}
   */
  load: async ({where, state, compare}) => {
    const ask = (/** @type {object} */ at) => model.getNeuron({...at, neuron: state.neuron, k: state.k});
    if (!compare) return ask(where);
    const [a, b] = await Promise.all([ask(where), ask(compare.where)]);
    return {...a, compared: b};
  },
  /**
   * Draw the view.
   * @param {object} data the neuron route's answer (with `compared`: B's, where compared)
   * @param {import('./views.js').ViewContext} context
   * @returns {HTMLElement}
   */
  render: (data, {run, navigate, state, compare}) =>
    render(data, run, navigate, state.maps, compare ? {data: data.compared, run: compare.where.run} : null),
  compares: true,
};

/**
 * The most active categories of the neuron on one dataset, each opening its
 * category view.
 * @param {Array<{label: number, mean: number, normalized: number|null}>} categories
 * @param {string} dataset
 * @param {Array<string>} names
 * @param {Partial<import('./views.js').Navigate>} on
 * @returns {HTMLElement}
 */
function topCategories(categories, dataset, names, on) {
  const list = el('ol', {className: 'top-categories', attrs: {'aria-label': `top categories on ${dataset}`}});
  for (const c of categories) {
    const value = c.normalized === null ? `raw mean ${formatRaw(c.mean)}` : `mean ${percent(c.normalized)} of the InD max`;
    const item = el('li', {className: 'clickable', attrs: {tabindex: 0, 'data-label': c.label,
      title: 'open this category'}}, [
      el('span', {className: 'name', text: className(names, c.label)}),
      el('span', {className: 'value', text: value}),
    ]);
    activate(item, () => on.category && on.category(dataset, c.label, null));
    list.appendChild(item);
  }
  return el('details', {className: 'categories'}, [el('summary', {text: 'top categories'}), list]);
}

/**
 * A few images as tiles, each with its normalized activation (raw where the neuron is
 * dead on InD).
 * @param {Array<{index: number, label: number, prediction: number, activation: number,
 *   normalized: number|null, map?: object}>} images
 * @param {string} dataset the images' dataset
 * @param {{step: number, class_names: Array<string>}} data the neuron route's answer
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {number} scale the activation a map draws fully opaque (thumbnails.js's mapScale)
 * @returns {HTMLElement}
 */
function tiles(images, dataset, data, run, on, scale) {
  const grid = el('div', {className: 'grid'});
  for (const image of images) {
    grid.appendChild(imageTile({run, dataset, step: data.step, names: data.class_names, image, on, scale,
      value: {
        text: image.normalized === null ? `raw ${formatRaw(image.activation)}` : percent(image.normalized),
        title: `activation ${formatRaw(image.activation)} (raw); the percentage is of the neuron's InD maximum`,
      }}));
  }
  return grid;
}

/**
 * The images at lower activations: the bottom k, and a few from each activation
 * band (as sparse-autoencoder feature dashboards show), each folded away.
 * @param {{name: string, intervals?: Array<{low: number, high: number, images: Array<object>}>,
 *   bottom_images?: Array<object>}} dataset one dataset of the neuron route's answer
 * @param {{step: number, class_names: Array<string>}} data the neuron route's answer
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {number} scale the activation a map draws fully opaque
 * @returns {Array<HTMLElement>}
 */
function beyondTheTop(dataset, data, run, on, scale) {
  const parts = [];
  if (dataset.intervals && dataset.intervals.length) {
    const bands = el('div', {className: 'intervals'});
    for (const band of dataset.intervals) {
      bands.appendChild(el('div', {className: 'interval', attrs: {'data-low': band.low, 'data-high': band.high}}, [
        el('h4', {text: `${formatRaw(band.low)} – ${formatRaw(band.high)} (raw): ${band.images.length ? '' : 'no image'}`}),
        tiles(band.images, dataset.name, data, run, on, scale),
      ]));
    }
    parts.push(el('details', {className: 'intervals-box'}, [el('summary', {text: 'examples by activation band'}), bands]));
  }
  if (dataset.bottom_images && dataset.bottom_images.length) {
    parts.push(el('details', {className: 'bottom'}, [
      el('summary', {text: `bottom ${dataset.bottom_images.length} (lowest first)`}),
      tiles(dataset.bottom_images, dataset.name, data, run, on, scale),
    ]));
  }
  return parts;
}

/**
 * What zeroing the neuron alone does to a set's predictions through the linear head.
 * @param {{changed: number, accuracy: number|null, base_accuracy: number|null, images: number}} zeroing
 * @returns {HTMLElement}
 */
function zeroingLine(zeroing) {
  const accuracy = zeroing.accuracy === null || zeroing.base_accuracy === null ? ''
    : ` (accuracy ${percent(zeroing.base_accuracy)} → ${percent(zeroing.accuracy)})`;
  const word = zeroing.changed === 1 ? 'prediction changes' : 'predictions change';
  return el('div', {className: 'zeroing', text: `zeroed: ${zeroing.changed} of ${zeroing.images} ${word}${accuracy}`,
    attrs: {title: 'this neuron set to 0 on the recorded activations, through the linear head the layer feeds (exact)'}});
}

/**
 * The neuron view: one column per dataset with its scores, its distribution, its
 * top images and categories, and the images beyond the top; where compared, per
 * dataset A's column then B's, each labelled with its run and step.
 * @param {object} data the neuron route's answer
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {boolean} [showMaps] whether "where neurons fire" is on (to say when the layer has no maps)
 * @param {{data: object, run: string}|null} [other] B: its neuron route's answer and run
 * @returns {HTMLElement}
 */
function render(data, run, on, showMaps = false, other = null) {
  const root = el('section', {className: 'neuron-view', attrs: {'data-neuron': data.neuron}});
  root.appendChild(
    el('h2', {text: `Neuron ${data.neuron} of ${data.num_neurons} — layer ${data.layer}, step ${data.step} (epoch ${data.epoch})`}),
  );
  for (const [side, answer] of other ? [['A', data], ['B', other.data]] : [['', data]]) {
    if (answer.ind_max === null || answer.ind_max <= 0) {
      root.appendChild(
        message('empty', `${side ? `In ${side}, t` : 'T'}his neuron never fires on the in-distribution set (a dead neuron): ` +
          'normalized activations and activation ratios are undefined.'),
      );
    }
  }
  root.appendChild(imageLegend());
  const answers = other ? [data, other.data] : [data];
  // one scale for every map shown: the cells compare across sets (and across A and B)
  const shown = answers.flatMap((answer) => answer.datasets.flatMap((d) => [...d.images, ...(d.bottom_images || []),
    ...(d.intervals || []).flatMap((band) => band.images)]));
  const scale = mapScale(shown);
  root.append(...mapNoteElements(shown)); // 1 x 1 maps and token strips: said, once
  if (showMaps && !data.datasets.some((d) => d.images.some((image) => image.map))) {
    root.appendChild(message('empty', `Layer ${data.layer} has no maps of where its neurons fire: its output has ` +
      'no spatial or token positions (or the log was written before maps were recorded).'));
  }
  const columns = el('div', {className: other ? 'columns compared' : 'columns'});
  data.datasets.forEach((dataset, i) => {
    if (!other) {
      columns.appendChild(column(dataset, data, run, on, scale));
      return;
    }
    // B's sets are A's, in the same order (the compare route checked): matched by position
    const b = column(other.data.datasets[i], other.data, other.run, {}, scale);
    columns.appendChild(el('div', {className: 'compare-pair', attrs: {'data-dataset': dataset.name}}, [
      labelled(column(dataset, data, run, on, scale), 'a', sideLabel('A', {run, step: data.step, epoch: data.epoch})),
      labelled(b, 'b', sideLabel('B', {run: other.run, step: other.data.step, epoch: other.data.epoch})),
    ]));
  });
  root.appendChild(columns);
  return root;
}

/**
 * A column marked as one side of a comparison, its run and step above it (as text).
 * @param {HTMLElement} node
 * @param {string} side 'a' or 'b'
 * @param {string} text
 * @returns {HTMLElement}
 */
function labelled(node, side, text) {
  node.setAttribute('data-side', side);
  node.prepend(el('div', {className: `side-label side-${side}`, text}));
  return node;
}

/**
 * One dataset's column of the neuron view.
 * @param {object} dataset one dataset of the neuron route's answer
 * @param {object} data the neuron route's answer
 * @param {string} run
 * @param {Partial<import('./views.js').Navigate>} on
 * @param {number} scale the activation a map draws fully opaque
 * @returns {HTMLElement}
 */
function column(dataset, data, run, on, scale) {
  const header = el('header', {}, [
    el('span', {className: `role ${dataset.role}`, text: roleLabel(dataset.role)}),
    el('span', {className: 'name', text: dataset.name}),
  ]);
  if (dataset.max !== undefined) {
    header.appendChild(el('span', {className: 'max', text: `max ${formatRaw(dataset.max)} (raw)`}));
  }
  if (dataset.role === 'ood') {
    header.appendChild(
      el('span', {className: 'ratio', text: `activation ratio ${percent(dataset.activation_ratio)}`,
        attrs: {title: 'the neuron\'s maximum on this set divided by its maximum on InD'}}),
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
          'spurious: 1 − |Spearman| of the category means (n/a: undefined)',
        'data-novelty': String(dataset.novelty), 'data-spurious': String(dataset.spurious)},
      }),
    );
  }
  if (dataset.fire_fraction !== undefined && dataset.fire_fraction !== null) {
    header.appendChild(el('span', {className: 'fires', text: `fires on ${percent(dataset.fire_fraction)} of its images`,
      attrs: {title: 'the share of the set\'s recorded images where the activation is above 0'}}));
  }
  const body = [header, ...leftOutNotes(dataset.left_out)];
  if (dataset.zeroing) body.push(zeroingLine(dataset.zeroing));
  if (dataset.distribution) {
    const ind = data.datasets.find((d) => d.role === 'ind');
    body.push(activationHistogram(dataset.distribution, dataset.role === 'ood' ? ind?.distribution || null : null,
      dataset.name));
  }
  if (dataset.fires === false) {
    body.push(message('empty', `Never fires on this set: its highest activation is ${formatRaw(dataset.max)} ` +
      '(at most 0), so no image stands out.'));
  } else {
    const grid = tiles(dataset.images, dataset.name, data, run, on, scale);
    if (!dataset.images.length) grid.appendChild(message('empty', 'no images'));
    body.push(grid);
    if (dataset.top_categories && dataset.top_categories.length) {
      body.push(topCategories(dataset.top_categories, dataset.name, data.class_names, on));
    }
    body.push(...beyondTheTop(dataset, data, run, on, scale));
  }
  return el('div', {className: 'column', attrs: {'data-dataset': dataset.name}}, body);
}
