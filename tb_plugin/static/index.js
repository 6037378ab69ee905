// Entry point of the Deephys tab: TensorBoard imports this module in the
// plugin iframe and calls render().

import * as model from './model.js';
import * as views from './views.js';

const state = {runs: [], run: null, layer: null, step: null, neuron: 0, k: 12, request: 0};

function runInfo() {
  return state.runs.find((r) => r.run === state.run) || null;
}

function controls(root) {
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
    renderAll(root);
  });
  layerSel.select.addEventListener('change', () => {
    state.layer = layerSel.select.value;
    renderNeuron(root);
  });
  stepSel.select.addEventListener('change', () => {
    state.step = Number(stepSel.select.value);
    renderNeuron(root);
  });
  const setNeuron = (value) => {
    state.neuron = Math.max(0, Number.isFinite(value) ? Math.floor(value) : 0);
    neuronInput.value = state.neuron;
    renderNeuron(root);
  };
  neuronInput.addEventListener('change', () => setNeuron(Number(neuronInput.value)));
  prev.addEventListener('click', () => setNeuron(state.neuron - 1));
  next.addEventListener('click', () => setNeuron(state.neuron + 1));
  kInput.addEventListener('change', () => {
    state.k = Math.min(info.top_k, Math.max(1, Math.floor(Number(kInput.value)) || 1));
    kInput.value = state.k;
    renderNeuron(root);
  });
  return bar;
}

async function renderNeuron(root) {
  const target = root.querySelector('#neuron-panel');
  const request = ++state.request;
  target.replaceChildren(views.message('loading', 'Loading…'));
  try {
    const data = await model.getNeuron({
      run: state.run, layer: state.layer, step: state.step, neuron: state.neuron, k: state.k,
    });
    if (request !== state.request) return; // the user picked something else meanwhile
    target.replaceChildren(views.neuronView(data, state.run));
  } catch (error) {
    if (request !== state.request) return;
    target.replaceChildren(views.message('error', error.message));
  }
}

function renderAll(root) {
  const info = runInfo();
  root.replaceChildren(
    controls(root),
    views.datasetList(info),
    views.el('div', {attrs: {id: 'neuron-panel'}}),
  );
  renderNeuron(root);
}

export async function render() {
  const stylesheet = document.createElement('link');
  stylesheet.rel = 'stylesheet';
  stylesheet.href = './static/style.css';
  document.head.appendChild(stylesheet);
  const root = views.el('main', {attrs: {id: 'deephys'}});
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
  state.run = state.runs[0].run;
  const info = runInfo();
  state.layer = info.layers[0];
  state.step = info.steps[info.steps.length - 1].step;
  state.k = Math.min(state.k, info.top_k);
  renderAll(root);
}
