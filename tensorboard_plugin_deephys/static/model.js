// Data access for the Deephys tab: fetch JSON from the plugin's routes.
// URLs are relative: the plugin iframe's <base> is ".../data/plugin/deephys/",
// so this works under any TensorBoard --path_prefix.

/** A route's answer that is not OK, with the server's words as its message. */
export class ApiError extends Error {}

/**
 * The JSON body of `url`; an ApiError with the route's `error` (or the HTTP status)
 * when the answer is not OK.
 * @param {string} url
 * @param {RequestInit} [options]
 * @returns {Promise<any>}
 */
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

/**
 * `params` as a query string, leaving out those that are null, undefined or empty.
 * @param {Object<string, unknown>} params
 * @returns {string}
 */
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

/**
 * One neuron of a layer at a step: its top images per dataset and what the neuron route gives.
 * @param {{run: string, layer: string, step: number, neuron: number, k: number}} where
 * @returns {Promise<object>}
 */
export async function getNeuron({run, layer, step, neuron, k}) {
  return fetchJSON(`./neuron?${query({run, layer, step, neuron, k})}`);
}

/**
 * The URL of one thumbnail (PNG or JPEG as stored). With `digest` (the content digest
 * of the dataset's thumbnails, where an answer gives it) the URL names its content
 * and the browser keeps the image; without, it asks again each time it shows it
 * (an ETag makes that a 304 while the images are unchanged).
 * @param {{run: string, dataset: string, index: number, step?: number, digest?: string}} where
 * @returns {string}
 */
export function thumbnailUrl({run, dataset, index, step, digest}) {
  return `./thumbnail?${query({run, dataset, index, step, digest})}`;
}

/**
 * The overview of a layer at a step: per dataset accuracy, confusion, scores, detection.
 * @param {{run: string, layer: string, step: number}} where
 * @returns {Promise<object>}
 */
export async function getSummary({run, layer, step}) {
  return fetchJSON(`./summary?${query({run, layer, step})}`);
}

// The routes' own defaults hold for what the tab does not ask (how many top neurons
// an image lists, how many images a category page holds): docs/http_api.md gives
// them, and the answers say what they used (e.g. the category's page_size).

/**
 * One image: label, prediction, top predictions, top neurons with their top `k` images.
 * @param {{run: string, layer: string, step: number, dataset: string, index: number, k?: number}} where
 * @returns {Promise<object>}
 */
export async function getImage({run, layer, step, dataset, index, k}) {
  return fetchJSON(`./image?${query({run, layer, step, dataset, index, k})}`);
}

/**
 * A category or confusion set: its neurons, a page of its images, its mistakes.
 * @param {{run: string, layer: string, step: number, dataset: string, label: number,
 *   pred: number|null, either?: boolean, page: number, fpPage?: number, fnPage?: number}} where
 *   (`fpPage`, `fnPage`: the pages of its false positives and negatives)
 * @returns {Promise<object>}
 */
export async function getCategory({run, layer, step, dataset, label, pred, either, page, fpPage, fnPage}) {
  return fetchJSON(`./category?${query({run, layer, step, dataset, label, pred,
    either: either ? 1 : null, page, fp_page: fpPage || null, fn_page: fnPage || null})}`);
}

/**
 * One category in every set side by side, InD first: each set's recall of it, its
 * images, its own top neurons and what it keeps of the InD set's top neurons.
 * @param {{run: string, layer: string, step: number, label: number, n?: number, k?: number}} where
 * @returns {Promise<object>}
 */
export async function getCategorySets({run, layer, step, label, n, k}) {
  return fetchJSON(`./category_sets?${query({run, layer, step, label, n, k})}`);
}

/**
 * One cell of a confusion matrix: `count` images labelled `label` and predicted `pred`.
 * @typedef {{label: number, pred: number, count: number}} ConfusionCell
 */

/**
 * A page of the cells of one dataset's confusion matrix that hold images, most images
 * first (`diagonal` false: the misclassified images' cells only).
 * @param {{run: string, step: number, dataset: string, diagonal?: boolean, page: number,
 *   pageSize?: number}} where
 * @returns {Promise<{num_cells: number, num_images: number, page: number, page_size: number,
 *   cells: Array<ConfusionCell>}>}
 */
export async function getConfusion({run, step, dataset, diagonal, page, pageSize}) {
  return fetchJSON(`./confusion?${query({run, step, dataset, diagonal: diagonal === false ? 0 : null,
    page, page_size: pageSize})}`);
}

/**
 * The mean scores of one OOD set at every recorded step.
 * @param {{run: string, layer: string, dataset: string}} where
 * @returns {Promise<object>}
 */
export async function getScoresOverTime({run, layer, dataset}) {
  return fetchJSON(`./scores_over_time?${query({run, layer, dataset})}`);
}

/**
 * The compare route's answer: whether two records can be shown side by side on a
 * layer (neurons matched by index), and if not why, in words.
 * @typedef {{comparable: boolean, why: string|null, matched_by: string,
 *   a: {run: string, step: number, epoch: number, stage: string},
 *   b: {run: string, step: number, epoch: number, stage: string}}} Comparison
 */

/**
 * Whether the record at `run`/`step` (A) and the one at `other` (B) compare on `layer`.
 * @param {{run: string, layer: string, step: number, other: {run: string, step: number}}} where
 * @returns {Promise<Comparison>}
 */
export async function getCompare({run, layer, step, other}) {
  return fetchJSON(`./compare?${query({run, step, layer, other_run: other.run, other_step: other.step})}`);
}
