// The views of the Deephys tab, registered once: each view module declares its
// name, its tab title, its part of the URL state, its loader and its renderer;
// index.js knows views only through this list.

import {category} from './view_category.js';
import {image} from './view_image.js';
import {neuron} from './view_neuron.js';
import {overview} from './view_overview.js';

/**
 * What a view needs from the tab: the shown run's entry, the state, the route
 * parameters every view shares, and the navigation between views.
 * @typedef {{info: object, state: object, where: {run: string, layer: string, step: number},
 *   run: string, navigate: object}} ViewContext
 */

/**
 * One view of the tab.
 * @typedef {object} View
 * @property {string} name its key in the URL (`view=`) and its tab button's id (`view-NAME`)
 * @property {string} title its tab button's text
 * @property {(state: object) => Object<string, string>} encode its own URL keys from the state
 * @property {(data: Object<string, string>) => object} decode the state it owns, from the URL's values
 * @property {(context: ViewContext) => Promise<any>} load fetch what it shows
 * @property {(data: any, context: ViewContext) => HTMLElement} render draw it
 */

/** @type {Array<View>} in the order of the tab's buttons */
export const VIEWS = [overview, neuron, image, category];

export const DEFAULT_VIEW = 'neuron';

/**
 * The view named `name`, or the default view.
 * @param {string} name
 * @returns {View}
 */
export function viewNamed(name) {
  return VIEWS.find((v) => v.name === name) || VIEWS.find((v) => v.name === DEFAULT_VIEW);
}
