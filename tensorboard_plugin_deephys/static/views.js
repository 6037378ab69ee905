// The views of the Deephys tab, registered once: each view module declares its
// name, its tab title, its part of the URL state, its loader and its renderer;
// the tab knows views only through this list (the default view and the lookup by
// name are state.js's: DEFAULT_VIEW, viewNamed).

import {category} from './view_category.js';
import {image} from './view_image.js';
import {neuron} from './view_neuron.js';
import {overview} from './view_overview.js';

/**
 * What a view needs from the tab: the shown run's entry, the state, the route
 * parameters every view shares, and the navigation between views.
 * @typedef {{info: import('./state.js').RunInfo, state: import('./state.js').TabState,
 *   where: {run: string, layer: string, step: number}, run: string, navigate: Navigate,
 *   compare?: CompareContext|null}} ViewContext
 */

/**
 * The record the shown one (A) is compared with (B), once the compare route said they
 * compare: the route's answer, and B's route parameters.
 * @typedef {{comparison: import('./model.js').Comparison,
 *   where: {run: string, layer: string, step: number}}} CompareContext
 */

/**
 * The click-through between views (index.js's `navigate`); the views also take it as
 * `on`, whose members they check before calling.
 * @typedef {object} Navigate
 * @property {(neuron: number) => void} neuron open the neuron view on `neuron`
 * @property {(dataset: string, index: number) => void} image open the image view on one image
 * @property {(dataset: string, label: number, pred: number|null, either?: boolean) => void} category
 *   open the category view on a category (`pred` null) or a confusion set
 * @property {(page: number) => void} page show another page of the category view
 */

/**
 * One view of the tab.
 * @typedef {object} View
 * @property {string} name its key in the URL (`view=`) and its tab button's id (`view-NAME`)
 * @property {string} title its tab button's text
 * @property {(state: import('./state.js').TabState) => Object<string, string>} encode its own URL keys from the state
 * @property {(data: Object<string, string>) => object} decode the state it owns, from the URL's values
 * @property {(context: ViewContext) => Promise<any>} load fetch what it shows
 * @property {(data: any, context: ViewContext) => HTMLElement} render draw it
 * @property {boolean} [compares] whether it draws B beside A when a comparison is chosen
 */

/** @type {Array<View>} in the order of the tab's buttons */
export const VIEWS = [overview, neuron, image, category];
