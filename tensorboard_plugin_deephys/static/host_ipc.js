// TensorBoard's plugin API, as the iframe side of it: one message channel to the
// host page, the way the plugin lib's plugin-guest.ts opens it.
//
// The host (tensorboard/components/experimental/plugin_util/plugin-host-ipc.ts)
// takes a port posted to its window with the message 'experimental.bootstrap' and
// keeps one connection per port: a second bootstrap would get every broadcast
// twice, so this module opens the channel once and is its only user. Messages are
// JSON strings `{type, id, payload, error, isReply}`; each side numbers its own
// requests, and the other answers with a message of the same id and isReply true.
//
// Requests the host answers: 'experimental.GetURLPluginData' (url_state.js).
// Broadcasts it sends, waiting for a reply: 'experimental.RunsChanged' (the run
// names, when they change) and 'experimental.DataReloaded' (after every reload:
// its reload button and its auto reload, once the plugins listing and runs are
// fetched again).

const TIMEOUT_MS = 300;

/**
 * TensorBoard's window when this iframe may read and write it, else null.
 * @returns {Window|null}
 */
export function hostWindow() {
  try {
    if (window.parent === window) return null;
    void window.parent.location.href; // throws across origins
    return window.parent;
  } catch (_) {
    return null;
  }
}

/**
 * The open channel to the host, one per page.
 * @typedef {{port: MessagePort, nextId: number, waits: Map<number, (payload: unknown) => void>,
 *   listeners: Map<string, Array<(payload: unknown) => void>>}} Channel
 */

/**
 * This module's own state: the channel (null until first used), whether the host ever
 * spoke, and whether a request to it went unanswered (a host that is reachable but
 * deaf, not TensorBoard, is not waited for twice).
 * @type {{channel: Channel|null, heard: boolean, unanswered: boolean}}
 */
const link = {channel: null, heard: false, unanswered: false};

/**
 * Post `message` to the host as the plugin lib does: a JSON string with every field.
 * @param {MessagePort} port
 * @param {{type: string, id: number, payload?: unknown, isReply: boolean}} message
 */
function send(port, message) {
  port.postMessage(JSON.stringify({payload: null, error: null, ...message}));
}

/**
 * Take a message from the host: a reply to one of our requests, or a broadcast
 * (answered at once, then handed to its listeners).
 * @param {MessageEvent} event
 */
function onMessage(event) {
  let message = null;
  try {
    message = JSON.parse(event.data);
  } catch (_) {
    return;
  }
  if (!message || typeof message !== 'object') return;
  link.heard = true;
  const channel = link.channel;
  if (message.isReply) {
    const wait = channel.waits.get(message.id);
    if (!wait) return;
    channel.waits.delete(message.id);
    wait(message.error ? null : message.payload);
    return;
  }
  // Answer at once (the host waits for every frame's reply), with nothing, as the
  // plugin lib does for types it has no listener for; then tell the listeners.
  send(channel.port, {type: message.type, id: message.id, isReply: true});
  for (const callback of channel.listeners.get(message.type) || []) {
    try {
      callback(message.payload);
    } catch (error) {
      console.warn(`Deephys: ${message.type}:`, error);
    }
  }
}

/**
 * The channel to the host, opened on first use; null without a reachable host.
 * @returns {Channel|null}
 */
function connect() {
  if (link.channel) return link.channel;
  const host = hostWindow();
  if (!host) return null;
  const {port1, port2} = new MessageChannel();
  link.channel = {port: port1, nextId: 0, waits: new Map(), listeners: new Map()};
  port1.addEventListener('message', onMessage);
  port1.start();
  host.postMessage('experimental.bootstrap', '*', [port2]);
  return link.channel;
}

/**
 * Ask the host: resolves to its answer's payload, or null when there is no host,
 * the answer is an error, or none comes within `timeoutMs`.
 * @param {string} type e.g. 'experimental.GetURLPluginData'
 * @param {unknown} [payload]
 * @param {{timeoutMs?: number}} [options]
 * @returns {Promise<any>}
 */
export function request(type, payload = null, {timeoutMs = TIMEOUT_MS} = {}) {
  const channel = connect();
  if (!channel || (link.unanswered && !link.heard)) return Promise.resolve(null);
  return new Promise((resolve) => {
    const id = channel.nextId++;
    const timer = setTimeout(() => {
      channel.waits.delete(id);
      link.unanswered = true;
      resolve(null);
    }, timeoutMs);
    channel.waits.set(id, (answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
    send(channel.port, {type, id, payload, isReply: false});
  });
}

/**
 * Call `callback(payload)` on each host broadcast of `type`. Returns whether there
 * is a host to listen to (outside TensorBoard nothing is ever broadcast).
 * @param {string} type e.g. 'experimental.DataReloaded'
 * @param {(payload: unknown) => void} callback
 * @returns {boolean}
 */
export function listen(type, callback) {
  const channel = connect();
  if (!channel) return false;
  if (!channel.listeners.has(type)) channel.listeners.set(type, []);
  channel.listeners.get(type).push(callback);
  return true;
}
