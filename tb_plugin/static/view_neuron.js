// The neuron view: one neuron's top images in every dataset side by side, with its
// scores on each OOD set, its top categories, and where it never fires.

import {activate, className, el, formatRaw, imageLegend, message, percent} from './dom.js';
import * as model from './model.js';
import {imageTile} from './thumbnails.js';

/** @type {import('./views.js').View} */
export const neuron = {
  name: 'neuron',
  title: 'Neuron',
  encode: () => ({}), // the neuron and Top k are the controls' (every view keeps them)
  decode: () => ({}),
  load: ({where, state}) => model.getNeuron({...where, neuron: state.neuron, k: state.k}),
  render: (data, {run, navigate}) => render(data, run, navigate),
};

/**
 * The most active categories of the neuron on one dataset, each opening its
 * category view.
 * @param {Array<{label: number, mean: number, normalized: number|null}>} categories
 * @param {string} dataset
 * @param {Array<string>} names
 * @param {{category?: Function}} on
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

function render(data, run, on) {
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
  root.appendChild(imageLegend());
  const columns = el('div', {className: 'columns'});
  for (const dataset of data.datasets) {
    const header = el('header', {}, [
      el('span', {className: `role ${dataset.role}`, text: dataset.role === 'ind' ? 'InD' : 'OOD'}),
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
            'spurious: 1 − |Spearman| of the category means (n/a: undefined)'},
        }),
      );
    }
    const body = [header];
    if (dataset.fires === false) {
      body.push(message('empty', `Never fires on this set: its highest activation is ${formatRaw(dataset.max)} ` +
        '(at most 0), so no image stands out.'));
    } else {
      const grid = el('div', {className: 'grid'});
      for (const image of dataset.images) {
        grid.appendChild(imageTile({run, dataset: dataset.name, step: data.step, names: data.class_names, image, on,
          value: {
            text: image.normalized === null ? `raw ${formatRaw(image.activation)}` : percent(image.normalized),
            title: `activation ${formatRaw(image.activation)} (raw); the percentage is of the neuron's InD maximum`,
          }}));
      }
      if (!dataset.images.length) grid.appendChild(message('empty', 'no images'));
      body.push(grid);
      if (dataset.top_categories && dataset.top_categories.length) {
        body.push(topCategories(dataset.top_categories, dataset.name, data.class_names, on));
      }
    }
    columns.appendChild(el('div', {className: 'column', attrs: {'data-dataset': dataset.name}}, body));
  }
  root.appendChild(columns);
  return root;
}
