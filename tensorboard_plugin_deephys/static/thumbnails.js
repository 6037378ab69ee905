// Thumbnails in the views: an image tile with its right / wrong border and its
// "label → prediction" caption, and what a tile shows when its image cannot be
// loaded.

import {activate, className, el, message, svg} from './dom.js';
import {thumbnailUrl} from './model.js';

/** @type {Map<string, Promise<string>>} why a dataset's thumbnails failed, asked once */
const thumbnailFailures = new Map();

/** @type {WeakMap<Element, Set<string>>} the failures a view has a notice of */
const failureNotices = new WeakMap();

/**
 * Whether `view` has its notice of the failure `key` already (it has from now on).
 * @param {Element} view
 * @param {string} key
 * @returns {boolean}
 */
function noticed(view, key) {
  const keys = failureNotices.get(view) || new Set();
  failureNotices.set(view, keys);
  const seen = keys.has(key);
  keys.add(key);
  return seen;
}

/**
 * Why a thumbnail request failed, in the server's words (its 4xx JSON `error`).
 * @param {string} url
 * @returns {Promise<string>}
 */
function thumbnailFailure(url) {
  return fetch(url).then(async (response) => {
    if (response.ok) return 'the image could not be shown';
    try {
      return (await response.json()).error || `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }, (error) => `the server could not be reached (${error})`);
}

/**
 * A thumbnail `<img>` that, when its image cannot be loaded (missing or damaged
 * files, an unreachable store, no fsspec backend), is replaced by "No image" (the
 * reason on hover), and its view gets one notice per dataset with the reason, as text.
 * `digest`: the content digest of the dataset's thumbnails, where the answer shown
 * gives it (the URL then names its content: model.js's thumbnailUrl).
 * @param {{run: string, dataset: string, index: number, step?: number, digest?: string,
 *   lazy?: boolean}} where
 * @returns {HTMLImageElement}
 */
export function thumbnailImage({run, dataset, index, step, digest, lazy = true}) {
  const src = thumbnailUrl({run, dataset, index, step, digest});
  const attrs = {src, alt: `${dataset} image ${index}`};
  if (lazy) attrs.loading = 'lazy';
  const img = /** @type {HTMLImageElement} */ (el('img', {attrs}));
  img.addEventListener('error', () => {
    const key = JSON.stringify([run, dataset, step]);
    if (!thumbnailFailures.has(key)) thumbnailFailures.set(key, thumbnailFailure(src));
    thumbnailFailures.get(key).then((reason) => {
      const view = img.closest('section') || img.parentElement;
      img.replaceWith(el('div', {className: 'thumbnail-error', text: 'No image', attrs: {title: reason}}));
      if (view && !noticed(view, key)) {
        const notice = message('warning', `The images of ${dataset} cannot be shown: ${reason}`);
        notice.classList.add('thumbnails-unavailable');
        view.prepend(notice);
      }
    });
  }, {once: true});
  return img;
}

/**
 * Where a neuron fires on an image: its map over the layer's spatial (or token)
 * positions as a grid of cells over the thumbnail, each as opaque as its activation
 * is a share of `scale`. Shown while the tab's "where neurons fire" is on.
 * @param {{shape: Array<number>, values: Array<number|null>}} map row-major raw activations
 * @param {number} scale the activation drawn fully opaque (the largest of the maps shown together)
 * @returns {SVGElement}
 */
export function mapOverlay(map, scale) {
  const [h, w] = map.shape.length === 2 ? map.shape : [1, map.shape[0]];
  const overlay = svg('svg', {class: 'map', viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none',
    'aria-hidden': 'true', 'data-shape': `${h}x${w}`});
  map.values.forEach((value, i) => {
    const share = scale > 0 && value !== null ? Math.max(0, Math.min(1, value / scale)) : 0;
    overlay.appendChild(svg('rect', {x: i % w, y: Math.floor(i / w), width: 1, height: 1,
      'fill-opacity': (0.75 * share).toFixed(3)}));
  });
  return overlay;
}

/**
 * Whether a map has a spatial extent to draw: a map of one cell (a layer pooled to
 * 1 x 1, or a single token) would paint the whole image one colour, so it is not drawn.
 * @param {{shape: Array<number>}} map
 * @returns {boolean}
 */
export function mapHasExtent(map) {
  return map.shape.reduce((cells, side) => cells * side, 1) > 1;
}

/** The most positions a strip of tokens is pooled to (spatial_maps.MAX_TOKENS). */
const MAX_STRIP = 49;

/**
 * What a view says, once, about the maps of its images that are not drawn as a grid
 * over the image: maps of 1 x 1 (not drawn), and token strips (`1 x w`: a layer's
 * tokens that are not a square grid, or a log written before square token grids were
 * kept as grids). Plain strings, to be inserted as text; none for grids.
 * @param {Array<{map?: {shape: Array<number>}}>} images
 * @returns {Array<string>}
 */
export function mapNotes(images) {
  /** @type {Set<string>} */
  const notes = new Set();
  for (const image of images) {
    if (!image.map) continue;
    const [h, w] = image.map.shape.length === 2 ? image.map.shape : [1, image.map.shape[0]];
    if (!mapHasExtent(image.map)) {
      notes.add('Where neurons fire: this layer has no spatial extent at this resolution ' +
        '(its maps are 1 × 1 cell), so no map is drawn over the images.');
    } else if (h === 1) {
      notes.add(stripNote(w));
    }
  }
  return [...notes];
}

/**
 * The note of a strip of `w` cells.
 * @param {number} w
 * @returns {string}
 */
function stripNote(w) {
  const side = Math.round(Math.sqrt(w));
  const classSide = Math.round(Math.sqrt(w - 1));
  const square = side * side === w || (classSide >= 2 && classSide * classSide === w - 1);
  if (w >= MAX_STRIP) {
    return `Where neurons fire: tokens shown as a strip of ${w} cells, left to right: this layer's tokens ` +
      `(more than ${MAX_STRIP}, pooled) are not a square grid` +
      (square ? ', or the log was written before token grids were kept as grids.' : '.');
  }
  if (square) {
    return `Where neurons fire: tokens shown as a strip of ${w} cells, left to right: ` +
      'the log was written before square token grids were kept as grids.';
  }
  return `Where neurons fire: tokens shown as a strip, left to right: this layer's ${w} tokens are not a square grid.`;
}

/**
 * The notes of `mapNotes` as elements (shown while "where neurons fire" is on).
 * @param {Array<{map?: {shape: Array<number>}}>} images
 * @returns {Array<HTMLElement>}
 */
export function mapNoteElements(images) {
  return mapNotes(images).map((text) => {
    const note = message('empty', text);
    note.classList.add('map-note');
    return note;
  });
}

/**
 * The largest activation in the maps of `images` (those that have one), 0 if none.
 * @param {Array<{map?: {values: Array<number|null>}}>} images
 * @returns {number}
 */
export function mapScale(images) {
  let top = 0;
  for (const image of images) {
    for (const value of image.map?.values || []) if (value !== null && value > top) top = value;
  }
  return top;
}

/**
 * One image as a tile: its thumbnail with a green (right) or red (wrong) border
 * (and, when the image has a map of more than one cell, where the neuron fires over it), an optional
 * value line, and "label → prediction"; a click opens the image view.
 * @param {{run: string, dataset: string, step: number, names: Array<string>,
 *   image: {index: number, label: number, prediction: number, map?: object},
 *   value?: {text: string, title?: string}, on?: {image?: Function}, scale?: number,
 *   digest?: string}} tile
 * @returns {HTMLElement}
 */
export function imageTile({run, dataset, step, names, image, value, on = {}, scale = 0, digest}) {
  const correct = image.label === image.prediction;
  const caption = [];
  if (value) caption.push(el('span', {className: 'value', text: value.text, attrs: value.title ? {title: value.title} : {}}));
  const labels = `${className(names, image.label)} → ${className(names, image.prediction)}`;
  caption.push(el('span', {className: 'label', text: labels, attrs: {title: labels}}));
  const figure = el('figure', {
    className: `image clickable ${correct ? 'right' : 'wrong'}`,
    attrs: {'data-index': image.index, tabindex: 0, title: 'open the image view'},
  }, [el('div', {className: 'thumb'}, [
    thumbnailImage({run, dataset, index: image.index, step, digest}),
    ...(image.map && mapHasExtent(image.map) ? [mapOverlay(image.map, scale)] : []),
  ]), el('figcaption', {}, caption)]);
  activate(figure, () => on.image && on.image(dataset, image.index));
  return figure;
}
