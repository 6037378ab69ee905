// The controls of the Deephys tab: the run, layer and step pickers, the neuron and
// Top k fields, "where neurons fire", the dataset list, the view tabs, the ← and →
// keys, and their event wiring. They change the state (state.js) and ask the tab
// (index.js) to record and redraw it through `tab`.

import * as dom from './dom.js';
import {clampK, compareText, parseCompare, parseInteger, runInfo, selectRun, state} from './state.js';
import {VIEWS} from './views.js';

/**
 * What the controls ask of the tab (index.js).
 * @typedef {object} TabActions
 * @property {import('./views.js').Navigate} navigate the click-through between views
 * @property {(options?: {push?: boolean}) => void} renderAll redraw the whole tab (recording the state)
 * @property {() => Promise<void>} renderPanel redraw the shown view
 * @property {(options?: {push?: boolean}) => void} remember record the state in the URL
 */

/**
 * The run selector's options.
 * @returns {Array<{value: string, text: string}>}
 */
function runOptions() {
  return state.runs.map((r) => ({value: r.run, text: r.run}));
}

/**
 * The layer selector's options.
 * @param {import('./state.js').RunInfo} info
 * @returns {Array<{value: string, text: string}>}
 */
function layerOptions(info) {
  return info.layers.map((l) => ({value: l, text: l}));
}

const STAGE_NAMES = {validate: 'validate', test: 'test'}; // fit: the default, not named

/**
 * The step selector's options.
 * @param {import('./state.js').RunInfo} info
 * @returns {Array<{value: number, text: string}>}
 */
function stepOptions(info) {
  return info.steps.map((s) => ({value: s.step,
    text: `step ${s.step} (epoch ${s.epoch}${STAGE_NAMES[s.stage] ? `, ${STAGE_NAMES[s.stage]}` : ''})`}));
}

/**
 * The comparison selector's options: none, then every recorded step of every run
 * (the shown run's first), as `RUN@STEP`.
 * @returns {Array<{value: string, text: string}>}
 */
function compareOptions() {
  const runs = [...state.runs.filter((r) => r.run === state.run), ...state.runs.filter((r) => r.run !== state.run)];
  return [{value: '', text: 'none'}, ...runs.flatMap((info) => stepOptions(info).map(({value, text}) => ({
    value: compareText({run: info.run, step: value}),
    text: info.run === state.run ? `this run: ${text}` : `${info.run}: ${text}`,
  })))];
}

/**
 * The bar of controls, wired.
 * @param {TabActions} tab
 * @returns {HTMLElement}
 */
export function controls(tab) {
  const info = runInfo(state);
  const bar = dom.el('div', {className: 'controls'});
  const runSel = dom.labeledSelect('Run', 'run-select', runOptions(), state.run);
  const layerSel = dom.labeledSelect('Layer', 'layer-select', layerOptions(info), state.layer);
  const stepSel = dom.labeledSelect('Step', 'step-select', stepOptions(info), state.step);
  const compareSel = dom.labeledSelect('Compare with', 'compare-select', compareOptions(), compareText(state.compare));
  compareSel.select.title = 'B: another step of this run, or a step of another run with the same layer, sets and width';
  const neuronInput = /** @type {HTMLInputElement} */ (dom.el('input', {attrs: {id: 'neuron-input', type: 'number', min: 0, value: state.neuron}}));
  const kInput = /** @type {HTMLInputElement} */ (dom.el('input', {attrs: {id: 'k-input', type: 'number', min: 1, max: info.top_k, value: state.k,
    title: `1 to ${info.top_k}: the callback kept the top ${info.top_k} images of each neuron (DeephysCallback(top_k=...))`}}));
  const kNote = dom.el('span', {className: 'control-note', attrs: {id: 'k-note', role: 'status', 'aria-live': 'polite'}});
  const mapsInput = /** @type {HTMLInputElement} */ (dom.el('input', {attrs: {id: 'maps-input', type: 'checkbox'}}));
  mapsInput.checked = state.maps;
  const prev = dom.el('button', {text: '◀', attrs: {id: 'neuron-prev', 'aria-label': 'previous neuron'}});
  const next = dom.el('button', {text: '▶', attrs: {id: 'neuron-next', 'aria-label': 'next neuron'}});
  bar.append(
    runSel.wrapper,
    layerSel.wrapper,
    stepSel.wrapper,
    compareSel.wrapper,
    dom.el('label', {text: 'Neuron', attrs: {for: 'neuron-input'}}, [prev, neuronInput, next]),
    dom.el('label', {text: 'Top k', attrs: {for: 'k-input'}}, [kInput]),
    kNote,
    dom.el('label', {text: 'Where neurons fire', attrs: {for: 'maps-input',
      title: 'over the top images, the neuron\'s activation at each spatial or token position (layers with maps)'}}, [mapsInput]),
  );
  mapsInput.addEventListener('change', () => {
    state.maps = mapsInput.checked;
    state.page.root.classList.toggle('show-maps', state.maps);
    tab.remember({push: false});
    tab.renderPanel(); // the view says when its layer has no maps
  });
  runSel.select.addEventListener('change', () => {
    selectRun(state, state.runs.find((r) => r.run === runSel.select.value));
    tab.renderAll();
  });
  layerSel.select.addEventListener('change', () => {
    state.layer = layerSel.select.value;
    tab.remember();
    tab.renderPanel();
  });
  stepSel.select.addEventListener('change', () => {
    state.step = Number(stepSel.select.value);
    tab.remember();
    tab.renderPanel();
  });
  compareSel.select.addEventListener('change', () => {
    state.compare = parseCompare(compareSel.select.value, state.runs);
    tab.remember();
    tab.renderPanel();
  });
  neuronInput.addEventListener('change', () => tab.navigate.neuron(parseInteger(neuronInput.value, state.neuron)));
  prev.addEventListener('click', () => tab.navigate.neuron(Math.max(0, state.neuron - 1)));
  next.addEventListener('click', () => tab.navigate.neuron(state.neuron + 1));
  kInput.addEventListener('change', () => {
    const top = runInfo(state).top_k;
    const asked = parseInteger(kInput.value, state.k);
    state.k = clampK(asked, top);
    kInput.value = String(state.k);
    kNote.textContent = asked === state.k ? ''
      : `Top k is ${state.k}: it goes from 1 to ${top}, the top images the callback kept of each neuron.`;
    tab.remember({push: false});
    if (state.view === 'neuron' || state.view === 'image') tab.renderPanel();
  });
  return bar;
}

/**
 * The run's datasets: InD or OOD, name, and how many images were recorded.
 * @param {import('./state.js').RunInfo} info
 * @returns {HTMLElement}
 */
export function datasetList(info) {
  const list = dom.el('ul', {className: 'datasets', attrs: {'aria-label': 'datasets'}});
  for (const name of info.datasets) {
    const role = name === info.ind ? 'ind' : 'ood';
    list.appendChild(
      dom.el('li', {className: `dataset ${role}`, attrs: {'data-dataset': name}}, [
        dom.el('span', {className: 'role', text: dom.roleLabel(role)}),
        dom.el('span', {className: 'name', text: name}),
        dom.el('span', {className: 'count', text: `${info.num_images[name]} images`}),
      ]),
    );
  }
  return list;
}

/**
 * The view tabs, the shown one pressed.
 * @param {TabActions} tab
 * @returns {HTMLElement}
 */
export function tabs(tab) {
  const bar = dom.el('nav', {className: 'views', attrs: {'aria-label': 'views'}});
  for (const {name, title} of VIEWS) {
    const button = dom.el('button', {
      className: name === state.view ? 'selected' : '',
      text: title,
      attrs: {id: `view-${name}`, 'aria-pressed': name === state.view},
    });
    button.addEventListener('click', () => {
      state.view = name;
      tab.renderAll();
    });
    bar.appendChild(button);
  }
  return bar;
}

/**
 * ← and → step through neurons in the neuron view (not while typing in a field),
 * from now on.
 * @param {TabActions} tab
 */
export function listenToKeys(tab) {
  document.addEventListener('keydown', (event) => {
    if (state.page.phase !== 'shown' || state.view !== 'neuron') return;
    const target = /** @type {HTMLElement} */ (event.target);
    if (['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName)) return;
    if (event.key === 'ArrowRight') tab.navigate.neuron(state.neuron + 1);
    if (event.key === 'ArrowLeft') tab.navigate.neuron(Math.max(0, state.neuron - 1));
  });
}

/**
 * Replace the options of `select` where they changed, and select `selected`.
 * @param {HTMLSelectElement} select
 * @param {Array<{value: unknown, text: string}>} options
 * @param {unknown} selected
 */
function setOptions(select, options, selected) {
  const same = select.options.length === options.length &&
    options.every(({value, text}, i) => select.options[i].value === String(value) && select.options[i].text === text);
  if (!same) select.replaceChildren(...options.map(({value, text}) => dom.el('option', {text, attrs: {value}})));
  select.value = String(selected);
}

/**
 * Bring the controls and the dataset list up to date with `state.runs` in place:
 * the panel, the focus and whatever is typed in a field stay as they are.
 */
export function updateControls() {
  const info = runInfo(state);
  const root = state.page.root;
  setOptions(root.querySelector('#run-select'), runOptions(), state.run);
  setOptions(root.querySelector('#layer-select'), layerOptions(info), state.layer);
  setOptions(root.querySelector('#step-select'), stepOptions(info), state.step);
  setOptions(root.querySelector('#compare-select'), compareOptions(), compareText(state.compare));
  root.querySelector('#k-input').setAttribute('max', String(info.top_k));
  root.querySelector('#sampling-notice').replaceWith(dom.samplingNotice(info.sampling));
  const datasets = root.querySelector('ul.datasets');
  const fresh = datasetList(info);
  if (!datasets.isEqualNode(fresh)) datasets.replaceWith(fresh);
}
