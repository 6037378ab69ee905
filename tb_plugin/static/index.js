// Entry point of the Deephys tab: TensorBoard imports this module in the
// plugin iframe and calls render().

import * as model from './model.js';
import {hostWindow, UrlState} from './url_state.js';
import * as views from './views.js';

const VIEWS = [
  ['overview', 'Overview'],
  ['neuron', 'Neuron'],
  ['image', 'Image'],
  ['category', 'Category'],
];

const state = {
  runs: [],
  run: null,
  layer: null,
  step: null,
  view: 'neuron',
  neuron: 0,
  k: 12,
  image: null, // {dataset, index}
  category: null, // {dataset, label, pred, page}
  request: 0,
};

function runInfo() {
  return state.runs.find((r) => r.run === state.run) || null;
}

// Click-through between the views.
const navigate = {
  neuron(neuron) {
    state.view = 'neuron';
    state.neuron = neuron;
    renderAll();
  },
  image(dataset, index) {
    state.view = 'image';
    state.image = {dataset, index};
    renderAll();
  },
  category(dataset, label, pred) {
    state.view = 'category';
    state.category = {dataset, label, pred, page: 0};
    renderAll();
  },
  page(page) {
    state.category = {...state.category, page};
    remember();
    renderPanel();
  },
};

let root = null;

// The view state lives in the URL (TensorBoard's address bar where it can be
// reached, see url_state.js), pushed on every navigation, so a view can be
// bookmarked and the browser's back and forward buttons move between views.
const url = new UrlState();

/** The state as the URL's string values. */
function encodeState() {
  const data = {view: state.view, run: state.run, layer: state.layer, step: String(state.step),
    neuron: String(state.neuron), k: String(state.k)};
  if (state.image) data.image = `${state.image.index}@${state.image.dataset}`;
  if (state.category) {
    const c = state.category;
    data.category = `${c.label}:${c.pred ?? ''}:${c.page}@${c.dataset}`;
  }
  return data;
}

/** Set the state from the URL's values; false (state unchanged) for an unknown run. */
// A non-negative integer from URL text (which may hold anything), else the fallback.
function wholeNumber(text, fallback) {
  const value = Math.floor(Number(text));
  return Number.isFinite(value) && value >= 0 ? value : fallback;
}

function decodeState(data) {
  const run = state.runs.find((r) => r.run === data.run);
  if (!run) return false;
  state.run = run.run;
  state.layer = run.layers.includes(data.layer) ? data.layer : run.layers[0];
  const step = Number(data.step);
  state.step = run.steps.some((s) => s.step === step) ? step : run.steps[run.steps.length - 1].step;
  state.view = VIEWS.some(([name]) => name === data.view) ? data.view : 'neuron';
  state.neuron = wholeNumber(data.neuron, 0);
  state.k = Math.min(run.top_k, Math.max(1, wholeNumber(data.k, 12)));
  const image = (data.image || '').match(/^(\d+)@(.*)$/s);
  state.image = image ? {index: Number(image[1]), dataset: image[2]} : null;
  const category = (data.category || '').match(/^(\d+):(\d*):(\d+)@(.*)$/s);
  state.category = category
    ? {label: Number(category[1]), pred: category[2] === '' ? null : Number(category[2]),
      page: Number(category[3]), dataset: category[4]}
    : null;
  return true;
}

/** Whether the URL's values are the current state. */
function isCurrent(data) {
  const current = encodeState();
  const keys = Object.keys(current);
  return keys.length === Object.keys(data).length && keys.every((key) => data[key] === current[key]);
}

/** Record the state in the URL: a new history entry, or (push false) in place. */
function remember({push = true} = {}) {
  url.write(encodeState(), {push});
}

function controls() {
  const info = runInfo();
  const bar = views.el('div', {className: 'controls'});
  const runSel = views.labeledSelect('Run', 'run-select', state.runs.map((r) => ({value: r.run, text: r.run})), state.run);
  const layerSel = views.labeledSelect('Layer', 'layer-select', info.layers.map((l) => ({value: l, text: l})), state.layer);
  const stepSel = views.labeledSelect(
    'Step',
    'step-select',
    info.steps.map((s) => ({value: s.step, text: `step ${s.step} (epoch ${s.epoch})`})),
    state.step,
  );
  const neuronInput = views.el('input', {attrs: {id: 'neuron-input', type: 'number', min: 0, value: state.neuron}});
  const kInput = views.el('input', {attrs: {id: 'k-input', type: 'number', min: 1, max: info.top_k, value: state.k}});
  const prev = views.el('button', {text: '◀', attrs: {id: 'neuron-prev', 'aria-label': 'previous neuron'}});
  const next = views.el('button', {text: '▶', attrs: {id: 'neuron-next', 'aria-label': 'next neuron'}});
  bar.append(
    runSel.wrapper,
    layerSel.wrapper,
    stepSel.wrapper,
    views.el('label', {text: 'Neuron', attrs: {for: 'neuron-input'}}, [prev, neuronInput, next]),
    views.el('label', {text: 'Top k', attrs: {for: 'k-input'}}, [kInput]),
  );
  runSel.select.addEventListener('change', () => {
    state.run = runSel.select.value;
    const r = runInfo();
    state.layer = r.layers[0];
    state.step = r.steps[r.steps.length - 1].step;
    state.image = null;
    state.category = null;
    renderAll();
  });
  layerSel.select.addEventListener('change', () => {
    state.layer = layerSel.select.value;
    remember();
    renderPanel();
  });
  stepSel.select.addEventListener('change', () => {
    state.step = Number(stepSel.select.value);
    remember();
    renderPanel();
  });
  const setNeuron = (value) => navigate.neuron(Math.max(0, Number.isFinite(value) ? Math.floor(value) : 0));
  neuronInput.addEventListener('change', () => setNeuron(Number(neuronInput.value)));
  prev.addEventListener('click', () => setNeuron(state.neuron - 1));
  next.addEventListener('click', () => setNeuron(state.neuron + 1));
  kInput.addEventListener('change', () => {
    state.k = Math.min(info.top_k, Math.max(1, Math.floor(Number(kInput.value)) || 1));
    kInput.value = state.k;
    remember({push: false});
    if (state.view === 'neuron') renderPanel();
  });
  return bar;
}

function tabs() {
  const bar = views.el('nav', {className: 'views', attrs: {'aria-label': 'views'}});
  for (const [name, title] of VIEWS) {
    const button = views.el('button', {
      className: name === state.view ? 'selected' : '',
      text: title,
      attrs: {id: `view-${name}`, 'aria-pressed': name === state.view},
    });
    button.addEventListener('click', () => {
      state.view = name;
      renderAll();
    });
    bar.appendChild(button);
  }
  return bar;
}

async function load() {
  const where = {run: state.run, layer: state.layer, step: state.step};
  const info = runInfo();
  switch (state.view) {
    case 'overview': {
      const summary = await model.getSummary(where);
      const over = await Promise.all(
        info.datasets.filter((d) => d !== info.ind).map((dataset) =>
          model.getScoresOverTime({run: state.run, layer: state.layer, dataset}).catch(() => null)),
      );
      return views.overviewView(summary, over.filter(Boolean), navigate);
    }
    case 'image': {
      const image = state.image || {dataset: info.ind, index: 0};
      return views.imageView(await model.getImage({...where, ...image}), state.run, navigate, info.datasets);
    }
    case 'category': {
      const category = state.category || {dataset: info.ind, label: 0, pred: null, page: 0};
      return views.categoryView(await model.getCategory({...where, ...category}), state.run, navigate);
    }
    default:
      return views.neuronView(
        await model.getNeuron({...where, neuron: state.neuron, k: state.k}), state.run, navigate);
  }
}

async function renderPanel() {
  const target = root.querySelector('#neuron-panel');
  const request = ++state.request;
  target.replaceChildren(views.message('loading', 'Loading…'));
  try {
    const view = await load();
    if (request !== state.request) return; // the user picked something else meanwhile
    target.replaceChildren(view);
  } catch (error) {
    if (request !== state.request) return;
    target.replaceChildren(views.message('error', error.message));
  }
}

function renderAll({push = true} = {}) {
  if (push) remember();
  const info = runInfo();
  root.replaceChildren(
    controls(),
    views.datasetList(info),
    tabs(),
    views.el('div', {attrs: {id: 'neuron-panel'}}),
  );
  renderPanel();
}

export async function render() {
  const stylesheet = document.createElement('link');
  stylesheet.rel = 'stylesheet';
  stylesheet.href = './static/style.css';
  document.head.appendChild(stylesheet);
  root = views.el('main', {attrs: {id: 'deephys'}});
  document.body.appendChild(root);
  root.appendChild(views.message('loading', 'Loading Deephys runs…'));
  try {
    state.runs = await model.getRuns();
  } catch (error) {
    root.replaceChildren(views.message('error', `Could not load runs: ${error.message}`));
    return;
  }
  if (!state.runs.length) {
    root.replaceChildren(
      views.message('empty', 'No Deephys data yet: add DeephysCallback(layer=...) to your Trainer and run validation.'),
    );
    return;
  }
  if (!decodeState(await url.read())) {
    state.run = state.runs[0].run;
    const info = runInfo();
    state.layer = info.layers[0];
    state.step = info.steps[info.steps.length - 1].step;
    state.k = Math.min(state.k, info.top_k);
  }
  url.onPop((data) => {
    // Entries without our state (before the tab was opened) and entries of the
    // same state (TensorBoard switching dashboards) leave the view as it is.
    if (!isCurrent(data) && decodeState(data)) renderAll({push: false});
  });
  followDarkMode();
  document.addEventListener('keydown', (event) => {
    // ← and → step through neurons in the neuron view (not while typing in a field).
    if (state.view !== 'neuron' || ['INPUT', 'SELECT', 'TEXTAREA'].includes(event.target.tagName)) return;
    if (event.key === 'ArrowRight') navigate.neuron(state.neuron + 1);
    if (event.key === 'ArrowLeft') navigate.neuron(Math.max(0, state.neuron - 1));
  });
  remember({push: false}); // the URL names the view even before the first click
  renderAll({push: false});
}

// TensorBoard marks dark mode with a class on its own page's body; follow it.
function followDarkMode() {
  const host = hostWindow()?.document.body; // none across origins: keep the system preference
  if (!host) return;
  const apply = () => document.documentElement.classList.toggle('dark', host.classList.contains('dark-mode'));
  apply();
  new MutationObserver(apply).observe(host, {attributes: true, attributeFilter: ['class']});
}
