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
//
// The hash formats themselves (parsing and writing them) are state.js's.

import {hostWindow, request} from './host_ipc.js';
import {frameData, frameHash, pluginData, withPluginData} from './state.js';

/**
 * The view state as a URL keeps it.
 *
 * `read()` gives the state the page was opened with; `write(data, {push})` records
 * a new state (a new history entry with `push`); `onPop(callback)` calls back with
 * the state of the history entry the user went back or forward to.
 */
export class UrlState {
  /** Reach TensorBoard's page where it can be reached, and learn the plugin's name. */
  constructor() {
    this.host = hostWindow();
    /** @type {string} the plugin's name, as TensorBoard gave it to the iframe */
    this.plugin = new URLSearchParams(window.location.search).get('name') || 'deephys';
  }

  /**
   * The state the page was opened with.
   * @returns {Promise<Object<string, string>>}
   */
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
    return pluginData(this.host.location.hash, this.plugin);
  }

  /**
   * Record `data` as the state: a new history entry with `push`, else in place.
   * @param {Object<string, string>} data
   * @param {{push?: boolean}} [options]
   */
  write(data, {push = false} = {}) {
    const target = this.host || window;
    const url = new URL(target.location.href);
    const hash = this.host ? withPluginData(url.hash, data, this.plugin) : frameHash(data);
    if (hash === url.hash) return;
    url.hash = hash;
    // Keep TensorBoard's history state (its routing namespace) on the new entry.
    const state = target.history.state;
    if (push) target.history.pushState(state, '', url.href);
    else target.history.replaceState(state, '', url.href);
  }

  /**
   * Call back with the state of each history entry the user goes back or forward to.
   * @param {(data: Object<string, string>) => void} callback
   */
  onPop(callback) {
    const target = this.host || window;
    // The hash itself, not getURLPluginData(): popstate comes before the hashchange
    // on which TensorBoard refreshes the data that call answers with.
    target.addEventListener('popstate', () => {
      const hash = target.location.hash;
      callback(this.host ? pluginData(hash, this.plugin) : frameData(hash));
    });
  }
}
