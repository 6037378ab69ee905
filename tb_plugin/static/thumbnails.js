// Thumbnails in the views: an image tile with its right / wrong border and its
// "label → prediction" caption, and what a tile shows when its image cannot be
// loaded.

import {activate, className, el, message} from './dom.js';
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
 * @param {{run: string, dataset: string, index: number, step?: number, lazy?: boolean}} where
 * @returns {HTMLImageElement}
 */
export function thumbnailImage({run, dataset, index, step, lazy = true}) {
  const src = thumbnailUrl({run, dataset, index, step});
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
 * One image as a tile: its thumbnail with a green (right) or red (wrong) border,
 * an optional value line, and "label → prediction"; a click opens the image view.
 * @param {{run: string, dataset: string, step: number, names: Array<string>,
 *   image: {index: number, label: number, prediction: number},
 *   value?: {text: string, title?: string}, on?: {image?: Function}}} tile
 * @returns {HTMLElement}
 */
export function imageTile({run, dataset, step, names, image, value, on = {}}) {
  const correct = image.label === image.prediction;
  const caption = [];
  if (value) caption.push(el('span', {className: 'value', text: value.text, attrs: value.title ? {title: value.title} : {}}));
  caption.push(el('span', {className: 'label',
    text: `${className(names, image.label)} → ${className(names, image.prediction)}`}));
  const figure = el('figure', {
    className: `image clickable ${correct ? 'right' : 'wrong'}`,
    attrs: {'data-index': image.index, tabindex: 0, title: 'open the image view'},
  }, [thumbnailImage({run, dataset, index: image.index, step}), el('figcaption', {}, caption)]);
  activate(figure, () => on.image && on.image(dataset, image.index));
  return figure;
}
