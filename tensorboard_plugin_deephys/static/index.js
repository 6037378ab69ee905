// Entry point of the Deephys tab: TensorBoard imports this module in the
// plugin iframe and calls render(). Here: drawing the tab from the state, the
// click-through between views, and following TensorBoard's reloads. The state and
// its URL form are state.js's, the controls controls.js's.

import {controls, datasetList, listenToKeys, tabs, updateControls} from './controls.js';
import * as dom from './dom.js';
import {hostWindow, listen} from './host_ipc.js';
import * as model from './model.js';
import {scoresOverTime} from './plots.js';
import {clampK, decodeState, encodeState, isCurrent, missingArrays, runInfo, selectRun, state,
  viewNamed} from './state.js';
import {UrlState} from './url_state.js';
import {loadScoresOverTime} from './view_overview.js';
import {VIEWS} from './views.js';

const EMPTY = 'No Deephys data yet: add DeephysCallback(layer=...) to your Trainer and run validation.';

/** @type {import('./views.js').Navigate} the click-through between the views */
const navigate = {
  /**
   * Open the neuron view on `neuron`.
   * @param {number} neuron
   */
  neuron(neuron) {
    state.view = 'neuron';
    state.neuron = neuron;
    renderAll();
  },
  /**
   * Open the image view on image `index` of `dataset`.
   * @param {string} dataset
   * @param {number} index
   */
  image(dataset, index) {
    state.view = 'image';
    state.image = {dataset, index};
    renderAll();
  },
  /**
   * Open the category view on category `label` of `dataset`, or with `pred` on the
   * confusion set of `label` predicted as `pred` (`either`: in both directions).
   * @param {string} dataset
   * @param {number} label
   * @param {number|null} pred
   * @param {boolean} [either]
   */
  category(dataset, label, pred, either = false) {
    state.view = 'category';
    state.category = {dataset, label, pred, either: Boolean(either && pred !== null && pred !== label), page: 0};
    renderAll();
  },
  /**
   * Show page `page` of the category view.
   * @param {number} page
   */
  page(page) {
    const shown = state.category || {dataset: runInfo(state).ind, label: 0, pred: null, either: false};
    state.category = {...shown, page};
    remember();
    renderPanel();
  },
};

/** @type {import('./controls.js').TabActions} what the controls ask of the tab */
const tab = {navigate, renderAll, renderPanel, remember};

// The view state lives in the URL (TensorBoard's address bar where it can be
// reached, see url_state.js), pushed on every navigation, so a view can be
// bookmarked and the browser's back and forward buttons move between views.
const url = new UrlState();

/**
 * Record the state in the URL: a new history entry, or (push false) in place.
 * @param {{push?: boolean}} [options]
 */
function remember({push = true} = {}) {
  url.write(encodeState(state, VIEWS), {push});
}

/**
 * The shown view, loaded and drawn, after the comparison's banner or the reason it
 * is refused (A alone is then drawn).
 * @returns {Promise<Array<HTMLElement>>}
 */
async function load() {
  const view = viewNamed(VIEWS, state.view);
  const where = {run: state.run, layer: state.layer, step: state.step};
  /** @type {import('./views.js').ViewContext} */
  const context = {info: runInfo(state), state, run: state.run, navigate, where, compare: null};
  const notes = [];
  if (state.compare) {
    try {
      const comparison = await model.getCompare({...where, other: state.compare});
      if (comparison.comparable) {
        notes.push(dom.compareBanner(comparison, Boolean(view.compares)));
        context.compare = {comparison, where: {run: comparison.b.run, layer: state.layer, step: comparison.b.step}};
      } else {
        notes.push(dom.compareRefused(comparison.why));
      }
    } catch (error) {
      notes.push(dom.compareRefused(error.message));
    }
  }
  return [...notes, view.render(await view.load(context), context)];
}

/**
 * Draw the shown view in the panel (a later call makes an earlier one's result stale).
 * @returns {Promise<void>}
 */
async function renderPanel() {
  const target = state.page.root.querySelector('#neuron-panel');
  const request = ++state.request;
  target.replaceChildren(dom.message('loading', 'Loading…'));
  try {
    const shown = await load();
    if (request !== state.request) return; // the user picked something else meanwhile
    target.replaceChildren(...dom.incompleteNotice(missingArrays(state)), ...shown);
  } catch (error) {
    if (request !== state.request) return;
    target.replaceChildren(...dom.incompleteNotice(missingArrays(state)), dom.message('error', error.message));
  }
}

/**
 * The empty tab's words, naming the runs that hold Deephys data but cannot be shown.
 * @returns {string}
 */
function emptyText() {
  const causes = state.unavailable.map((u) => `${u.run}: ${u.error}`);
  return causes.length ? `${EMPTY} Not shown: ${causes.join('; ')}.` : EMPTY;
}

/** Bring the notice of runs that cannot be shown up to date (text only: names are user data). */
function showUnavailable() {
  const old = state.page.root.querySelector('#unavailable-runs');
  const notice = dom.unavailableRuns(state.unavailable);
  if (old) old.replaceWith(notice);
}

/**
 * Draw the whole tab: the controls, the notices, the datasets, the view tabs and the
 * shown view; recorded in the URL first as a new history entry unless `push` is false.
 * @param {{push?: boolean}} [options]
 */
function renderAll({push = true} = {}) {
  if (push) remember();
  const info = runInfo(state);
  const root = state.page.root;
  root.classList.toggle('show-maps', state.maps);
  root.replaceChildren(
    controls(tab),
    dom.unavailableRuns(state.unavailable),
    dom.samplingNotice(info.sampling),
    datasetList(info),
    tabs(tab),
    dom.el('div', {attrs: {id: 'neuron-panel'}}),
  );
  renderPanel();
}

/**
 * Show one message instead of the tab (nothing redrawn when it is already shown).
 * @param {string} kind 'error' or 'empty'
 * @param {string} text
 */
function showMessage(kind, text) {
  const root = state.page.root;
  state.page.phase = kind;
  state.request++; // a panel still loading has nowhere to go
  const shown = root.children.length === 1 ? root.firstElementChild : null;
  if (shown && shown.classList.contains(kind) && shown.textContent === text) return;
  root.replaceChildren(dom.message(kind, text));
}

/**
 * Show the tab at the state of the URL's `data` (its defaults where they name no run).
 * @param {Object<string, string>} data
 */
function show(data) {
  if (!decodeState(state, data, VIEWS)) {
    selectRun(state, state.runs[0]);
    state.k = clampK(state.k, runInfo(state).top_k);
  }
  state.page.phase = 'shown';
  if (!state.page.listening) {
    state.page.listening = true;
    url.onPop((data) => {
      // Entries without our state (before the tab was opened) and entries of the
      // same state (TensorBoard switching dashboards) leave the view as it is.
      if (state.page.phase === 'shown' && !isCurrent(state, data, VIEWS) && decodeState(state, data, VIEWS)) {
        renderAll({push: false});
      }
    });
    listenToKeys(tab);
  }
  remember({push: false}); // the URL names the view even before the first click
  renderAll({push: false});
}

/**
 * Redraw the overview's scores across steps alone (its table keeps its sorting and filter).
 * @returns {Promise<void>}
 */
async function updateScoresOverTime() {
  const view = state.page.root.querySelector('#neuron-panel > .overview-view');
  if (!view) return; // another view, or the overview still loading (it fetches them itself)
  const request = state.request;
  const over = await loadScoresOverTime({run: state.run, layer: state.layer}, runInfo(state));
  if (request !== state.request || !view.isConnected) return;
  const old = view.querySelector('.over-time');
  const box = over.length ? scoresOverTime(over) : null;
  const wasOpen = /** @type {HTMLDetailsElement|null} */ (old?.querySelector('details.over-time-numbers'))?.open;
  if (box && wasOpen) {
    /** @type {HTMLDetailsElement} */ (box.querySelector('details.over-time-numbers')).open = true;
  }
  if (old && box) old.replaceWith(box);
  else if (old) old.remove();
  else if (box) [...view.querySelectorAll('.cards')].pop().after(box); // after B's cards where compared
}

/**
 * Fetch the runs and follow them: the first time, and on every TensorBoard reload.
 *
 * A reload that brings nothing new changes nothing (no redraw every 30 s of
 * auto reload). New runs and steps become selectable, and the view stays where the
 * user is, on the same step even when it was the latest: a new step is one click
 * away in the step selector, never a jump. Only where a run, layer or step is gone
 * does the view move (to the defaults, as a URL naming it would).
 * @returns {Promise<void>}
 */
async function refreshRuns() {
  const page = state.page;
  let runs;
  try {
    const listed = await model.getRuns();
    runs = listed.runs;
    if (JSON.stringify(listed.unavailable) !== JSON.stringify(state.unavailable)) {
      state.unavailable = listed.unavailable;
      if (page.phase === 'shown') showUnavailable();
    }
  } catch (error) {
    // Showing the tab: keep it as it is, the next reload tries again.
    if (page.phase !== 'shown') showMessage('error', `Could not load runs: ${error.message}`);
    return;
  }
  if (page.phase !== 'shown') {
    const read = page.firstRead || url.read();
    page.firstRead = null;
    state.runs = runs;
    if (!runs.length) showMessage('empty', emptyText());
    else show(await read);
    return;
  }
  if (JSON.stringify(runs) === JSON.stringify(state.runs)) return;
  const before = encodeState(state, VIEWS);
  const steps = JSON.stringify(runInfo(state).steps);
  const missing = JSON.stringify(missingArrays(state));
  state.runs = runs;
  if (!runs.length) {
    showMessage('empty', emptyText());
    return;
  }
  if (!decodeState(state, before, VIEWS)) selectRun(state, runs[0]);
  if (!isCurrent(state, before, VIEWS)) {
    remember({push: false});
    renderAll({push: false});
    return;
  }
  updateControls();
  if (JSON.stringify(missingArrays(state)) !== missing) renderPanel(); // the notice changed
  else if (JSON.stringify(runInfo(state).steps) !== steps && state.view === 'overview') await updateScoresOverTime();
}

/**
 * refreshRuns(), one at a time: reloads that come meanwhile make one more.
 * @returns {Promise<void>}
 */
function refresh() {
  const page = state.page;
  if (page.refreshing) {
    page.refreshAgain = true;
    return page.refreshing;
  }
  page.refreshing = (async () => {
    try {
      do {
        page.refreshAgain = false;
        await refreshRuns();
      } while (page.refreshAgain);
    } finally {
      page.refreshing = null;
    }
  })();
  return page.refreshing;
}

/**
 * Draw the tab in the iframe and follow TensorBoard's reloads (TensorBoard calls this).
 * @returns {Promise<void>}
 */
export async function render() {
  const stylesheet = document.createElement('link');
  stylesheet.rel = 'stylesheet';
  stylesheet.href = './static/style.css';
  document.head.appendChild(stylesheet);
  const root = dom.el('main', {attrs: {id: 'deephys'}});
  state.page.root = root;
  document.body.appendChild(root);
  root.appendChild(dom.message('loading', 'Loading Deephys runs…'));
  followDarkMode();
  state.page.firstRead = url.read(); // TensorBoard answers while the runs are fetched
  // TensorBoard broadcasts this after each reload of its data (the reload button,
  // and its auto reload): new runs and steps show up without reloading the page.
  listen('experimental.DataReloaded', () => refresh());
  await refresh();
}

/** TensorBoard marks dark mode with a class on its own page's body; follow it. */
function followDarkMode() {
  const host = hostWindow()?.document.body; // none across origins: keep the system preference
  if (!host) return;
  const apply = () => document.documentElement.classList.toggle('dark', host.classList.contains('dark-mode'));
  apply();
  new MutationObserver(apply).observe(host, {attributes: true, attributeFilter: ['class']});
}
