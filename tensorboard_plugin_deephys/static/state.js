// The Deephys tab's state and its form in the URL: the one state object (what the
// tab shows and how the page stands), the one parser of numbers typed in the URL or
// a field, the Top k clamp, the state as the URL's string values and back, and
// those values in a TensorBoard hash or the iframe's own hash and back.
//
// Pure: no window, no document, no imports, so that node's test runner loads it
// (tests/js/state.test.mjs). Reading and writing the address bar is url_state.js's.

/** The view a URL that names none (or an unknown one) opens. */
export const DEFAULT_VIEW = 'neuron';

/** Top k where the URL names none. */
export const DEFAULT_K = 12;

/**
 * One run as the runs route lists it (the fields the tab reads).
 * @typedef {{run: string, layers: Array<string>, steps: Array<{step: number, epoch: number, stage?: string,
 *   missing?: Array<string>}>, top_k: number, datasets: Array<string>, ind: string,
 *   num_images: Object<string, number>, sampling?: object|null}} RunInfo
 */

/**
 * A view as the URL form needs it (views.js's View has these and more).
 * @typedef {{name: string, encode: (state: TabState) => Object<string, string>,
 *   decode: (data: Object<string, string>) => object}} ViewCodec
 */

/**
 * How the page stands, beside what it shows.
 * @typedef {object} PageState
 * @property {string} phase 'loading' (the first fetch of the runs), 'error' (they could not be
 *   fetched), 'empty' (no Deephys data yet) or 'shown' (the controls and views)
 * @property {HTMLElement|null} root the tab's element
 * @property {boolean} listening whether back/forward and the keyboard are listened to (from the first show)
 * @property {Promise<Object<string, string>>|null} firstRead the URL's state, read while the runs are
 *   fetched the first time
 * @property {Promise<void>|null} refreshing the refresh under way
 * @property {boolean} refreshAgain whether a reload came during it
 */

/**
 * The tab's state.
 * @typedef {object} TabState
 * @property {Array<RunInfo>} runs
 * @property {Array<{run: string, error: string}>} unavailable runs with Deephys data that cannot be shown
 * @property {string|null} run
 * @property {string|null} layer
 * @property {number|null} step
 * @property {string} view
 * @property {number} neuron
 * @property {number} k
 * @property {boolean} maps draw where neurons fire over the top images (layers with maps)
 * @property {{dataset: string, index: number}|null} image
 * @property {{dataset: string, label: number, pred: number|null, either: boolean, page: number,
 *   fpPage?: number, fnPage?: number}|null} category (`fpPage`, `fnPage`: the pages of a
 *   category's false positives and negatives)
 * @property {Compare|null} compare the record the shown one is compared with (B), or none
 * @property {number} request the number of the latest panel load (a newer one makes it stale)
 * @property {PageState} page
 */

/**
 * The other record of a comparison (B): a step of this run or of another.
 * @typedef {{run: string, step: number}} Compare
 */

/**
 * A fresh state: nothing shown yet.
 * @returns {TabState}
 */
export function initialState() {
  return {
    runs: [],
    unavailable: [],
    run: null,
    layer: null,
    step: null,
    view: DEFAULT_VIEW,
    neuron: 0,
    k: DEFAULT_K,
    maps: false,
    image: null,
    category: null,
    compare: null,
    request: 0,
    page: {phase: 'loading', root: null, listening: false, firstRead: null, refreshing: null, refreshAgain: false},
  };
}

/** @type {TabState} the tab's one state, owned here */
export const state = initialState();

/**
 * An integer from URL text or a field (which may hold anything), else `fallback`.
 * Refused: empty text, text that is not a finite number, and numbers below `min`
 * (checked before rounding towards zero). Negative numbers pass unless `min` says
 * otherwise: the server answers one out of range in words, as it does one too large.
 * @param {string|undefined} text
 * @param {number} fallback
 * @param {{min?: number}} [options]
 * @returns {number}
 */
export function parseInteger(text, fallback, {min = -Infinity} = {}) {
  const number = Number(text);
  return text !== '' && Number.isFinite(number) && number >= min ? Math.trunc(number) : fallback;
}

/**
 * Top k within 1 and the run's `topK` (the images the callback kept of each neuron).
 * @param {number} k
 * @param {number} topK
 * @returns {number}
 */
export function clampK(k, topK) {
  return Math.min(topK, Math.max(1, k));
}

/**
 * The view named `name`, or the default view.
 * @template {{name: string}} V
 * @param {Array<V>} views
 * @param {string|undefined} name
 * @returns {V}
 */
export function viewNamed(views, name) {
  return views.find((v) => v.name === name) || views.find((v) => v.name === DEFAULT_VIEW);
}

/**
 * The shown run's entry, or null.
 * @param {TabState} state
 * @returns {RunInfo|null}
 */
export function runInfo(state) {
  return state.runs.find((r) => r.run === state.run) || null;
}

/**
 * Select `run` with its defaults: first layer, latest step, no image or category.
 * @param {TabState} state
 * @param {RunInfo} run
 */
export function selectRun(state, run) {
  state.run = run.run;
  state.layer = run.layers[0];
  state.step = run.steps[run.steps.length - 1].step;
  state.image = null;
  state.category = null;
}

/**
 * The arrays the shown step's record lists that the log lacks (the runs route's check).
 * @param {TabState} state
 * @returns {Array<string>}
 */
export function missingArrays(state) {
  const shown = (runInfo(state)?.steps || []).find((s) => s.step === state.step);
  return (shown && shown.missing) || [];
}

/**
 * A comparison as the URL keeps it: `RUN@STEP` (a run name may hold `@`: the last one
 * splits), or '' for none.
 * @param {Compare|null} compare
 * @returns {string}
 */
export function compareText(compare) {
  return compare ? `${compare.run}@${compare.step}` : '';
}

/**
 * The comparison `text` names (compareText's inverse), or null where it names no
 * recorded step of a listed run (or is empty).
 * @param {string|undefined} text
 * @param {Array<RunInfo>} runs
 * @returns {Compare|null}
 */
export function parseCompare(text, runs) {
  const at = (text || '').lastIndexOf('@');
  if (at < 0) return null;
  const run = runs.find((r) => r.run === text.slice(0, at));
  const step = parseInteger(text.slice(at + 1), NaN);
  return run && run.steps.some((s) => s.step === step) ? {run: run.run, step} : null;
}

/**
 * The state as the URL's string values: the controls', then each view's own.
 * @param {TabState} state
 * @param {Array<ViewCodec>} views
 * @returns {Object<string, string>}
 */
export function encodeState(state, views) {
  const data = {view: state.view, run: state.run, layer: state.layer, step: String(state.step),
    neuron: String(state.neuron), k: String(state.k)};
  if (state.maps) data.maps = '1';
  if (state.compare) data.compare = compareText(state.compare);
  for (const view of views) Object.assign(data, view.encode(state));
  return data;
}

/**
 * Set the state from the URL's values (a URL that names a view but no run opens the
 * first run); false (state unchanged) for an unknown run, or values without ours.
 * @param {TabState} state
 * @param {Object<string, string>} data
 * @param {Array<ViewCodec>} views
 * @returns {boolean}
 */
export function decodeState(state, data, views) {
  if (data.run === undefined && data.view === undefined) return false;
  const run = state.runs.find((r) => r.run === (data.run ?? state.runs[0]?.run));
  if (!run) return false;
  state.run = run.run;
  state.layer = run.layers.includes(data.layer) ? data.layer : run.layers[0];
  const step = Number(data.step);
  state.step = run.steps.some((s) => s.step === step) ? step : run.steps[run.steps.length - 1].step;
  state.view = viewNamed(views, data.view).name;
  state.neuron = parseInteger(data.neuron, 0);
  // An empty k (`k=`) has always read as 0, so Top k 1.
  state.k = clampK(data.k === '' ? 0 : parseInteger(data.k, DEFAULT_K, {min: 0}), run.top_k);
  state.maps = data.maps === '1';
  state.compare = parseCompare(data.compare, state.runs);
  for (const view of views) Object.assign(state, view.decode(data));
  return true;
}

/**
 * Whether the URL's values are the current state.
 * @param {TabState} state
 * @param {Object<string, string>} data
 * @param {Array<ViewCodec>} views
 * @returns {boolean}
 */
export function isCurrent(state, data, views) {
  const current = encodeState(state, views);
  const keys = Object.keys(current);
  return keys.length === Object.keys(data).length && keys.every((key) => data[key] === current[key]);
}

// The URL's values in a hash. In TensorBoard's own address bar they are the
// plugin's keys `p.PLUGIN.key=value` beside TensorBoard's, in the format of its
// tf_storage (`tab&key=value`, each part URI-encoded); in the iframe's own hash
// (outside TensorBoard, or across origins) they are plain `key=value` pairs.

/**
 * `text` URI-decoded, or null for a malformed escape (not ours).
 * @param {string} text
 * @returns {string|null}
 */
function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch (_) {
    return null;
  }
}

/**
 * The plugin's keys of a TensorBoard hash, parsed as tf_storage's componentToDict
 * does: `&`-separated, a part without `=` is the dashboard, others `key=value`.
 * @param {string} hash
 * @param {string} plugin the plugin's name (its keys are `p.PLUGIN.key`)
 * @returns {Object<string, string>}
 */
export function pluginData(hash, plugin) {
  const prefix = `p.${plugin}.`;
  /** @type {Object<string, string>} */
  const data = {};
  for (const part of hash.replace(/^#/, '').split('&')) {
    const pair = part.split('=');
    if (pair.length !== 2) continue;
    const key = decode(pair[0]);
    const value = decode(pair[1]);
    if (key !== null && value !== null && key.startsWith(prefix)) data[key.slice(prefix.length)] = value;
  }
  return data;
}

/**
 * `hash` with the plugin's keys replaced by `data` (other parts kept verbatim).
 * @param {string} hash
 * @param {Object<string, string>} data
 * @param {string} plugin the plugin's name (its keys are `p.PLUGIN.key`)
 * @returns {string}
 */
export function withPluginData(hash, data, plugin) {
  const prefix = `p.${plugin}.`;
  const parts = hash.replace(/^#/, '').split('&').filter((part) => {
    if (part === '') return false;
    const pair = part.split('=');
    const key = pair.length === 2 ? decode(pair[0]) : null;
    return !(key && key.startsWith(prefix));
  });
  if (!parts.length || parts[0].includes('=')) parts.unshift(plugin); // the dashboard comes first
  for (const [key, value] of Object.entries(data)) {
    parts.push(`${encodeURIComponent(prefix + key)}=${encodeURIComponent(value)}`);
  }
  return `#${parts.join('&')}`;
}

/**
 * The state kept in the iframe's own hash (`#view=neuron&run=...`).
 * @param {string} hash
 * @returns {Object<string, string>}
 */
export function frameData(hash) {
  return Object.fromEntries(new URLSearchParams(hash.replace(/^#/, '')));
}

/**
 * `data` as the iframe's own hash: frameData's inverse.
 * @param {Object<string, string>} data
 * @returns {string}
 */
export function frameHash(data) {
  return `#${new URLSearchParams(data)}`;
}
