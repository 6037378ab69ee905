// Entry point of the Deephys tab: TensorBoard imports this module in the
// plugin iframe and calls render().

import * as dom from './dom.js';
import {hostWindow, listen} from './host_ipc.js';
import * as model from './model.js';
import {scoresOverTime} from './plots.js';
import {UrlState} from './url_state.js';
import {loadScoresOverTime} from './view_overview.js';
import {DEFAULT_VIEW, VIEWS, viewNamed} from './views.js';

const state = {
  runs: [],
  unavailable: [], // runs with Deephys data that cannot be shown: {run, error}
  run: null,
  layer: null,
  step: null,
  view: DEFAULT_VIEW,
  neuron: 0,
  k: 12,
  maps: false, // draw where neurons fire over the top images (layers with maps)
  image: null, // {dataset, index}
  category: null, // {dataset, label, pred, either, page}
  request: 0,
};

// What the tab shows: 'loading' (the first fetch of the runs), 'error' (they could
// not be fetched), 'empty' (no Deephys data yet) or 'shown' (the controls and views).
let phase = 'loading';

const EMPTY = 'No Deephys data yet: add DeephysCallback(layer=...) to your Trainer and run validation.';

function runInfo() {
  return state.runs.find((r) => r.run === state.run) || null;
}

/** Select `run` with its defaults: first layer, latest step, no image or category. */
function selectRun(run) {
  state.run = run.run;
  state.layer = run.layers[0];
  state.step = run.steps[run.steps.length - 1].step;
  state.image = null;
  state.category = null;
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
  category(dataset, label, pred, either = false) {
    state.view = 'category';
    state.category = {dataset, label, pred, either: Boolean(either && pred !== null && pred !== label), page: 0};
    renderAll();
  },
  page(page) {
    const shown = state.category || {dataset: runInfo().ind, label: 0, pred: null, either: false};
    state.category = {...shown, page};
    remember();
    renderPanel();
  },
};

let root = null;

// The view state lives in the URL (TensorBoard's address bar where it can be
// reached, see url_state.js), pushed on every navigation, so a view can be
// bookmarked and the browser's back and forward buttons move between views.
const url = new UrlState();

/** The state as the URL's string values: the controls', then each view's own. */
function encodeState() {
  const data = {view: state.view, run: state.run, layer: state.layer, step: String(state.step),
    neuron: String(state.neuron), k: String(state.k)};
  if (state.maps) data.maps = '1';
  for (const view of VIEWS) Object.assign(data, view.encode(state));
  return data;
}

// A non-negative integer from URL text or a field (which may hold anything), else the fallback.
function wholeNumber(text, fallback) {
  const value = Math.floor(Number(text));
  return Number.isFinite(value) && value >= 0 ? value : fallback;
}

// An integer from URL text or a field, negative ones too (the server answers one that
// is out of range in words, as it does for one too large), else the fallback.
function integer(text, fallback) {
  const value = Math.trunc(Number(text));
  return text !== '' && Number.isFinite(value) ? value : fallback;
}

/**
 * Set the state from the URL's values (a URL that names a view but no run opens the
 * first run); false (state unchanged) for an unknown run, or values without ours.
 */
function decodeState(data) {
  if (data.run === undefined && data.view === undefined) return false;
  const run = state.runs.find((r) => r.run === (data.run ?? state.runs[0]?.run));
  if (!run) return false;
  state.run = run.run;
  state.layer = run.layers.includes(data.layer) ? data.layer : run.layers[0];
  const step = Number(data.step);
  state.step = run.steps.some((s) => s.step === step) ? step : run.steps[run.steps.length - 1].step;
  state.view = viewNamed(data.view).name;
  state.neuron = integer(data.neuron ?? '', 0);
  state.k = Math.min(run.top_k, Math.max(1, wholeNumber(data.k, 12)));
  state.maps = data.maps === '1';
  for (const view of VIEWS) Object.assign(state, view.decode(data));
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

// The options of the run, layer and step selectors.
const runOptions = () => state.runs.map((r) => ({value: r.run, text: r.run}));
const layerOptions = (info) => info.layers.map((l) => ({value: l, text: l}));
const STAGE_NAMES = {validate: 'validate', test: 'test'}; // fit: the default, not named
const stepOptions = (info) => info.steps.map((s) => ({value: s.step,
  text: `step ${s.step} (epoch ${s.epoch}${STAGE_NAMES[s.stage] ? `, ${STAGE_NAMES[s.stage]}` : ''})`}));

function controls() {
  const info = runInfo();
  const bar = dom.el('div', {className: 'controls'});
  const runSel = dom.labeledSelect('Run', 'run-select', runOptions(), state.run);
  const layerSel = dom.labeledSelect('Layer', 'layer-select', layerOptions(info), state.layer);
  const stepSel = dom.labeledSelect('Step', 'step-select', stepOptions(info), state.step);
  const neuronInput = dom.el('input', {attrs: {id: 'neuron-input', type: 'number', min: 0, value: state.neuron}});
  const kInput = dom.el('input', {attrs: {id: 'k-input', type: 'number', min: 1, max: info.top_k, value: state.k,
    title: `1 to ${info.top_k}: the callback kept the top ${info.top_k} images of each neuron (DeephysCallback(top_k=...))`}});
  const kNote = dom.el('span', {className: 'control-note', attrs: {id: 'k-note', role: 'status', 'aria-live': 'polite'}});
  const mapsInput = dom.el('input', {attrs: {id: 'maps-input', type: 'checkbox'}});
  mapsInput.checked = state.maps;
  const prev = dom.el('button', {text: '◀', attrs: {id: 'neuron-prev', 'aria-label': 'previous neuron'}});
  const next = dom.el('button', {text: '▶', attrs: {id: 'neuron-next', 'aria-label': 'next neuron'}});
  bar.append(
    runSel.wrapper,
    layerSel.wrapper,
    stepSel.wrapper,
    dom.el('label', {text: 'Neuron', attrs: {for: 'neuron-input'}}, [prev, neuronInput, next]),
    dom.el('label', {text: 'Top k', attrs: {for: 'k-input'}}, [kInput]),
    kNote,
    dom.el('label', {text: 'Where neurons fire', attrs: {for: 'maps-input',
      title: 'over the top images, the neuron\'s activation at each spatial or token position (layers with maps)'}}, [mapsInput]),
  );
  mapsInput.addEventListener('change', () => {
    state.maps = mapsInput.checked;
    root.classList.toggle('show-maps', state.maps);
    remember({push: false});
    renderPanel(); // the view says when its layer has no maps
  });
  runSel.select.addEventListener('change', () => {
    selectRun(state.runs.find((r) => r.run === runSel.select.value));
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
  neuronInput.addEventListener('change', () => navigate.neuron(integer(neuronInput.value, state.neuron)));
  prev.addEventListener('click', () => navigate.neuron(Math.max(0, state.neuron - 1)));
  next.addEventListener('click', () => navigate.neuron(state.neuron + 1));
  kInput.addEventListener('change', () => {
    const top = runInfo().top_k;
    const asked = integer(kInput.value, state.k);
    state.k = Math.min(top, Math.max(1, asked));
    kInput.value = state.k;
    kNote.textContent = asked === state.k ? ''
      : `Top k is ${state.k}: it goes from 1 to ${top}, the top images the callback kept of each neuron.`;
    remember({push: false});
    if (state.view === 'neuron' || state.view === 'image') renderPanel();
  });
  return bar;
}

/** The run's datasets: InD or OOD, name, and how many images were recorded. */
function datasetList(info) {
  const list = dom.el('ul', {className: 'datasets', attrs: {'aria-label': 'datasets'}});
  for (const name of info.datasets) {
    const role = name === info.ind ? 'InD' : 'OOD';
    list.appendChild(
      dom.el('li', {className: `dataset ${role.toLowerCase()}`, attrs: {'data-dataset': name}}, [
        dom.el('span', {className: 'role', text: role}),
        dom.el('span', {className: 'name', text: name}),
        dom.el('span', {className: 'count', text: `${info.num_images[name]} images`}),
      ]),
    );
  }
  return list;
}

function tabs() {
  const bar = dom.el('nav', {className: 'views', attrs: {'aria-label': 'views'}});
  for (const {name, title} of VIEWS) {
    const button = dom.el('button', {
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

/** The shown view, loaded and drawn. */
async function load() {
  const view = viewNamed(state.view);
  const context = {info: runInfo(), state, run: state.run, navigate,
    where: {run: state.run, layer: state.layer, step: state.step}};
  return view.render(await view.load(context), context);
}

/** The arrays the shown step's record lists that the log lacks (the runs route's check). */
function missingArrays() {
  const shown = (runInfo()?.steps || []).find((s) => s.step === state.step);
  return (shown && shown.missing) || [];
}

async function renderPanel() {
  const target = root.querySelector('#neuron-panel');
  const request = ++state.request;
  target.replaceChildren(dom.message('loading', 'Loading…'));
  try {
    const view = await load();
    if (request !== state.request) return; // the user picked something else meanwhile
    target.replaceChildren(...dom.incompleteNotice(missingArrays()), view);
  } catch (error) {
    if (request !== state.request) return;
    target.replaceChildren(...dom.incompleteNotice(missingArrays()), dom.message('error', error.message));
  }
}

/** The empty tab's words, naming the runs that hold Deephys data but cannot be shown. */
function emptyText() {
  const causes = state.unavailable.map((u) => `${u.run}: ${u.error}`);
  return causes.length ? `${EMPTY} Not shown: ${causes.join('; ')}.` : EMPTY;
}

/** Bring the notice of runs that cannot be shown up to date (text only: names are user data). */
function showUnavailable() {
  const old = root.querySelector('#unavailable-runs');
  const notice = dom.unavailableRuns(state.unavailable);
  if (old) old.replaceWith(notice);
}

function renderAll({push = true} = {}) {
  if (push) remember();
  const info = runInfo();
  root.classList.toggle('show-maps', state.maps);
  root.replaceChildren(
    controls(),
    dom.unavailableRuns(state.unavailable),
    dom.samplingNotice(info.sampling),
    datasetList(info),
    tabs(),
    dom.el('div', {attrs: {id: 'neuron-panel'}}),
  );
  renderPanel();
}

/** Show one message instead of the tab (nothing redrawn when it is already shown). */
function showMessage(kind, text) {
  phase = kind;
  state.request++; // a panel still loading has nowhere to go
  const shown = root.children.length === 1 ? root.firstElementChild : null;
  if (shown && shown.classList.contains(kind) && shown.textContent === text) return;
  root.replaceChildren(dom.message(kind, text));
}

let listening = false; // back/forward and the keyboard, listened to from the first show

/** Show the tab at the state of the URL's `data` (its defaults where they name no run). */
function show(data) {
  if (!decodeState(data)) {
    selectRun(state.runs[0]);
    state.k = Math.min(state.k, runInfo().top_k);
  }
  phase = 'shown';
  if (!listening) {
    listening = true;
    url.onPop((data) => {
      // Entries without our state (before the tab was opened) and entries of the
      // same state (TensorBoard switching dashboards) leave the view as it is.
      if (phase === 'shown' && !isCurrent(data) && decodeState(data)) renderAll({push: false});
    });
    document.addEventListener('keydown', (event) => {
      // ← and → step through neurons in the neuron view (not while typing in a field).
      if (phase !== 'shown' || state.view !== 'neuron') return;
      if (['INPUT', 'SELECT', 'TEXTAREA'].includes(event.target.tagName)) return;
      if (event.key === 'ArrowRight') navigate.neuron(state.neuron + 1);
      if (event.key === 'ArrowLeft') navigate.neuron(Math.max(0, state.neuron - 1));
    });
  }
  remember({push: false}); // the URL names the view even before the first click
  renderAll({push: false});
}

/** Replace the options of `select` where they changed, and select `selected`. */
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
function updateControls() {
  const info = runInfo();
  setOptions(root.querySelector('#run-select'), runOptions(), state.run);
  setOptions(root.querySelector('#layer-select'), layerOptions(info), state.layer);
  setOptions(root.querySelector('#step-select'), stepOptions(info), state.step);
  root.querySelector('#k-input').setAttribute('max', String(info.top_k));
  root.querySelector('#sampling-notice').replaceWith(dom.samplingNotice(info.sampling));
  const datasets = root.querySelector('ul.datasets');
  const fresh = datasetList(info);
  if (!datasets.isEqualNode(fresh)) datasets.replaceWith(fresh);
}

/** Redraw the overview's scores across steps alone (its table keeps its sorting and filter). */
async function updateScoresOverTime() {
  const view = root.querySelector('#neuron-panel > .overview-view');
  if (!view) return; // another view, or the overview still loading (it fetches them itself)
  const request = state.request;
  const over = await loadScoresOverTime({run: state.run, layer: state.layer}, runInfo());
  if (request !== state.request || !view.isConnected) return;
  const old = view.querySelector('.over-time');
  const box = over.length ? scoresOverTime(over) : null;
  if (box && old?.querySelector('details.over-time-numbers')?.open) {
    box.querySelector('details.over-time-numbers').open = true;
  }
  if (old && box) old.replaceWith(box);
  else if (old) old.remove();
  else if (box) view.querySelector('.cards').after(box);
}

let firstRead = null; // the URL's state, read while the runs are fetched the first time

/**
 * Fetch the runs and follow them: the first time, and on every TensorBoard reload.
 *
 * A reload that brings nothing new changes nothing (no redraw every 30 s of
 * auto reload). New runs and steps become selectable, and the view stays where the
 * user is, on the same step even when it was the latest: a new step is one click
 * away in the step selector, never a jump. Only where a run, layer or step is gone
 * does the view move (to the defaults, as a URL naming it would).
 */
async function refreshRuns() {
  let runs;
  try {
    const listed = await model.getRuns();
    runs = listed.runs;
    if (JSON.stringify(listed.unavailable) !== JSON.stringify(state.unavailable)) {
      state.unavailable = listed.unavailable;
      if (phase === 'shown') showUnavailable();
    }
  } catch (error) {
    // Showing the tab: keep it as it is, the next reload tries again.
    if (phase !== 'shown') showMessage('error', `Could not load runs: ${error.message}`);
    return;
  }
  if (phase !== 'shown') {
    const read = firstRead || url.read();
    firstRead = null;
    state.runs = runs;
    if (!runs.length) showMessage('empty', emptyText());
    else show(await read);
    return;
  }
  if (JSON.stringify(runs) === JSON.stringify(state.runs)) return;
  const before = encodeState();
  const steps = JSON.stringify(runInfo().steps);
  const missing = JSON.stringify(missingArrays());
  state.runs = runs;
  if (!runs.length) {
    showMessage('empty', emptyText());
    return;
  }
  if (!decodeState(before)) selectRun(runs[0]);
  if (!isCurrent(before)) {
    remember({push: false});
    renderAll({push: false});
    return;
  }
  updateControls();
  if (JSON.stringify(missingArrays()) !== missing) renderPanel(); // the notice changed
  else if (JSON.stringify(runInfo().steps) !== steps && state.view === 'overview') await updateScoresOverTime();
}

let refreshing = null; // the refresh under way
let refreshAgain = false;

/** refreshRuns(), one at a time: reloads that come meanwhile make one more. */
function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    try {
      do {
        refreshAgain = false;
        await refreshRuns();
      } while (refreshAgain);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

export async function render() {
  const stylesheet = document.createElement('link');
  stylesheet.rel = 'stylesheet';
  stylesheet.href = './static/style.css';
  document.head.appendChild(stylesheet);
  root = dom.el('main', {attrs: {id: 'deephys'}});
  document.body.appendChild(root);
  root.appendChild(dom.message('loading', 'Loading Deephys runs…'));
  followDarkMode();
  firstRead = url.read(); // TensorBoard answers while the runs are fetched
  // TensorBoard broadcasts this after each reload of its data (the reload button,
  // and its auto reload): new runs and steps show up without reloading the page.
  listen('experimental.DataReloaded', () => refresh());
  await refresh();
}

// TensorBoard marks dark mode with a class on its own page's body; follow it.
function followDarkMode() {
  const host = hostWindow()?.document.body; // none across origins: keep the system preference
  if (!host) return;
  const apply = () => document.documentElement.classList.toggle('dark', host.classList.contains('dark-mode'));
  apply();
  new MutationObserver(apply).observe(host, {attributes: true, attributeFilter: ['class']});
}
