// Where the tab keeps its view state: in TensorBoard's own address bar, so that a
// view can be bookmarked or shared, and the back and forward buttons move between
// views.
//
// TensorBoard's plugin API gives an iframe plugin read access to its part of the
// top-level URL hash: `#deephys&p.deephys.view=image&...` (the plugin lib's
// `getURLPluginData()`, message `experimental.GetURLPluginData`, answered by
// tensorboard/components/experimental/plugin_util/core-host-impl.ts). It has no
// call to write it, so the tab writes the same `p.deephys.` keys into the
// top-level URL with `history.pushState` / `replaceState`, in the format of
// TensorBoard's tf_storage (`tab&key=value`, each part URI-encoded), keeping
// TensorBoard's path, query and its other hash keys. TensorBoard keeps unknown hash
// keys when it switches dashboards, and its routing ignores a popstate that does
// not change the path or query.
//
// Where the top-level page cannot be reached (another origin, or the module opened
// outside TensorBoard), the state lives in the iframe's own hash instead: back and
// forward still work, bookmarks do not.

import {hostWindow, request} from './host_ipc.js';

const PLUGIN = new URLSearchParams(window.location.search).get('name') || 'deephys';
const PREFIX = `p.${PLUGIN}.`;

function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch (_) {
    return null; // malformed escape: not ours
  }
}

/**
 * The plugin's keys of a TensorBoard hash, parsed as tf_storage's componentToDict
 * does: `&`-separated, a part without `=` is the dashboard, others `key=value`.
 */
export function pluginData(hash) {
  const data = {};
  for (const part of hash.replace(/^#/, '').split('&')) {
    const pair = part.split('=');
    if (pair.length !== 2) continue;
    const key = decode(pair[0]);
    const value = decode(pair[1]);
    if (key !== null && value !== null && key.startsWith(PREFIX)) data[key.slice(PREFIX.length)] = value;
  }
  return data;
}

/** The state kept in the iframe's own hash (`#view=neuron&run=...`). */
function frameData(hash) {
  return Object.fromEntries(new URLSearchParams(hash.replace(/^#/, '')));
}

/** `hash` with the plugin's keys replaced by `data` (other parts kept verbatim). */
export function withPluginData(hash, data) {
  const parts = hash.replace(/^#/, '').split('&').filter((part) => {
    if (part === '') return false;
    const pair = part.split('=');
    const key = pair.length === 2 ? decode(pair[0]) : null;
    return !(key && key.startsWith(PREFIX));
  });
  if (!parts.length || parts[0].includes('=')) parts.unshift(PLUGIN); // the dashboard comes first
  for (const [key, value] of Object.entries(data)) {
    parts.push(`${encodeURIComponent(PREFIX + key)}=${encodeURIComponent(value)}`);
  }
  return `#${parts.join('&')}`;
}

/**
 * The view state as a URL keeps it.
 *
 * `read()` gives the state the page was opened with; `write(data, {push})` records
 * a new state (a new history entry with `push`); `onPop(callback)` calls back with
 * the state of the history entry the user went back or forward to.
 */
export class UrlState {
  constructor() {
    this.host = hostWindow();
  }

  async read() {
    if (!this.host) return frameData(window.location.hash);
    // The plugin lib's getURLPluginData(), over the one channel to TensorBoard
    // (host_ipc.js); no answer in time (a host page that is not TensorBoard) reads
    // the hash below.
    const answer = await request('experimental.GetURLPluginData');
    if (answer && Object.keys(answer).length) return answer;
    // TensorBoard 2.16 and later answer {} until the first hashchange: its
    // HashDeepLinker reads the hash before turning on hash mode (TensorBoard PR
    // #6401 swapped the order that PR #3811 had fixed), so read the hash itself.
    return pluginData(this.host.location.hash);
  }

  write(data, {push = false} = {}) {
    const target = this.host || window;
    const url = new URL(target.location.href);
    const hash = this.host ? withPluginData(url.hash, data) : `#${new URLSearchParams(data)}`;
    if (hash === url.hash) return;
    url.hash = hash;
    // Keep TensorBoard's history state (its routing namespace) on the new entry.
    const state = target.history.state;
    if (push) target.history.pushState(state, '', url.href);
    else target.history.replaceState(state, '', url.href);
  }

  onPop(callback) {
    const target = this.host || window;
    // The hash itself, not getURLPluginData(): popstate comes before the hashchange
    // on which TensorBoard refreshes the data that call answers with.
    target.addEventListener('popstate', () => {
      const hash = target.location.hash;
      callback(this.host ? pluginData(hash) : frameData(hash));
    });
  }
}
