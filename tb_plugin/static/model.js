// Data access for the Deephys tab: fetch JSON from the plugin's routes.
// URLs are relative: the plugin iframe's <base> is ".../data/plugin/deephys/",
// so this works under any TensorBoard --path_prefix.

export class ApiError extends Error {}

async function fetchJSON(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `HTTP ${response.status}`;
    throw new ApiError(message);
  }
  return body;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') search.set(key, String(value));
  }
  return search.toString();
}

/**
 * The runs with Deephys data, and those that cannot be shown (each with its cause).
 * @returns {Promise<{runs: Array<object>, unavailable: Array<{run: string, error: string}>}>}
 */
export async function getRuns() {
  // Fetched again on every TensorBoard reload: never from the browser's cache.
  const body = await fetchJSON('./runs', {cache: 'no-store'});
  return {runs: body.runs, unavailable: body.unavailable || []};
}

export async function getNeuron({run, layer, step, neuron, k}) {
  return fetchJSON(`./neuron?${query({run, layer, step, neuron, k})}`);
}

export function thumbnailUrl({run, dataset, index, step}) {
  return `./thumbnail?${query({run, dataset, index, step})}`;
}

export async function getSummary({run, layer, step}) {
  return fetchJSON(`./summary?${query({run, layer, step})}`);
}

// The routes' own defaults hold for what the tab does not ask (how many top neurons
// an image lists, how many images a category page holds): docs/http_api.md gives
// them, and the answers say what they used (e.g. the category's page_size).

export async function getImage({run, layer, step, dataset, index, k}) {
  return fetchJSON(`./image?${query({run, layer, step, dataset, index, k})}`);
}

export async function getCategory({run, layer, step, dataset, label, pred, either, page}) {
  return fetchJSON(`./category?${query({run, layer, step, dataset, label, pred,
    either: either ? 1 : null, page})}`);
}

export async function getScoresOverTime({run, layer, dataset}) {
  return fetchJSON(`./scores_over_time?${query({run, layer, dataset})}`);
}
