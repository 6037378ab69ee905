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

function percent(value) {
  return value === null || value === undefined ? 'n/a' : `${(value * 100).toFixed(1)}%`;
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

export function neuronView(data, run) {
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
          text: `novelty ${formatRaw(dataset.novelty)} · spurious ${formatRaw(dataset.spurious)}`,
          attrs: {title: 'novelty: InD max category mean − OOD max category mean; ' +
            'spurious: 1 − |Spearman| of the category means (n/a: undefined)'},
        }),
      );
    }
    const grid = el('div', {className: 'grid'});
    for (const image of dataset.images) {
      const correct = image.label === image.prediction;
      const labelName = data.class_names[image.label] ?? String(image.label);
      const predName = data.class_names[image.prediction] ?? String(image.prediction);
      const img = el('img', {
        attrs: {
          src: thumbnailUrl({run, dataset: dataset.name, index: image.index, step: data.step}),
          alt: `${dataset.name} image ${image.index}`,
          loading: 'lazy',
        },
      });
      grid.appendChild(
        el('figure', {className: `image ${correct ? 'right' : 'wrong'}`, attrs: {'data-index': image.index}}, [
          img,
          el('figcaption', {}, [
            el('span', {
              className: 'value',
              text: image.normalized === null ? `raw ${formatRaw(image.activation)}` : percent(image.normalized),
              attrs: {title: `activation ${formatRaw(image.activation)}`},
            }),
            el('span', {className: 'label', text: `${labelName} → ${predName}`}),
          ]),
        ]),
      );
    }
    if (!dataset.images.length) grid.appendChild(message('empty', 'no images'));
    columns.appendChild(
      el('div', {className: 'column', attrs: {'data-dataset': dataset.name}}, [header, grid]),
    );
  }
  root.appendChild(columns);
  return root;
}
