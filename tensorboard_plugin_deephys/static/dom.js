// DOM building and number formatting shared by the views. Everything that comes
// from user data (run, dataset, layer and class names) is inserted with
// textContent, never as HTML.

/**
 * An element with a class, text and attributes, and its children.
 * @param {string} tag
 * @param {{className?: string, text?: unknown, attrs?: Object<string, unknown>}} [options]
 * @param {Array<Node>} [children]
 * @returns {HTMLElement}
 */
export function el(tag, {className, text, attrs} = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.appendChild(child);
  return node;
}

const SVG = 'http://www.w3.org/2000/svg';

/**
 * An SVG element with attributes and children.
 * @param {string} tag
 * @param {Object<string, unknown>} [attrs]
 * @param {Array<Node>} [children]
 * @returns {SVGElement}
 */
export function svg(tag, attrs = {}, children = []) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.appendChild(child);
  return node;
}

/**
 * SVG text (as text, never markup).
 * @param {string} text
 * @param {Object<string, unknown>} attrs
 * @returns {SVGElement}
 */
export function svgText(text, attrs) {
  const node = svg('text', attrs);
  node.textContent = text;
  return node;
}

/**
 * A labelled `<select>` of `options`, `selected` chosen.
 * @param {string} label
 * @param {string} id
 * @param {Array<{value: unknown, text: string}>} options
 * @param {unknown} selected
 * @returns {{wrapper: HTMLElement, select: HTMLSelectElement}}
 */
export function labeledSelect(label, id, options, selected) {
  const select = /** @type {HTMLSelectElement} */ (el('select', {attrs: {id}}));
  for (const {value, text} of options) {
    const option = /** @type {HTMLOptionElement} */ (el('option', {text, attrs: {value}}));
    if (String(value) === String(selected)) option.selected = true;
    select.appendChild(option);
  }
  return {wrapper: el('label', {text: label, attrs: {for: id}}, [select]), select};
}

/**
 * A message box: `kind` is 'loading', 'empty', 'error' (an alert) or 'warning'.
 * @param {string} kind
 * @param {string} text
 * @returns {HTMLElement}
 */
export function message(kind, text) {
  return el('div', {className: `message ${kind}`, text, attrs: {role: kind === 'error' ? 'alert' : 'status'}});
}

/**
 * Run `action` on click and on Enter/Space, for keyboard users too.
 * @param {HTMLElement} node
 * @param {() => void} action
 */
export function activate(node, action) {
  node.addEventListener('click', action);
  node.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      action();
    }
  });
}

/**
 * A fraction as a percentage ("12.5%"), or "n/a".
 * @param {number|null|undefined} value
 * @returns {string}
 */
export function percent(value) {
  return value === null || value === undefined ? 'n/a' : `${(value * 100).toFixed(1)}%`;
}

/**
 * A probability as a percentage with one decimal, or with as many more (up to 6) as
 * it takes not to read 100.0% or 0.0% when it is neither: 0.99997 is "99.997%".
 * @param {number|null|undefined} value
 * @returns {string}
 */
export function probabilityPercent(value) {
  if (value === null || value === undefined) return 'n/a';
  const shown = Number(value) * 100;
  let digits = 1;
  const rounded = () => Number(shown.toFixed(digits));
  while (digits < 6 && ((shown < 100 && rounded() >= 100) || (shown > 0 && rounded() <= 0))) {
    digits += 1;
  }
  return `${shown.toFixed(digits)}%`;
}

/**
 * A number with 3 significant digits, or "n/a".
 * @param {number|null|undefined} value
 * @returns {string}
 */
export function formatRaw(value) {
  return value === null || value === undefined ? 'n/a' : Number(value).toPrecision(3);
}

/**
 * The name of class `index` (its number when the run has no name for it).
 * @param {Array<string>} names
 * @param {number} index
 * @returns {string}
 */
export function className(names, index) {
  if (index === null || index === undefined) return 'none';
  return names[index] ?? String(index);
}

/**
 * The notes on a set's images left out for values that are not finite (NaN or
 * infinite activations or classifier outputs), one line each, as the routes word them.
 * @param {Array<{layer: string|null, cause: string, images: number, text: string}>|undefined} rows
 * @returns {Array<HTMLElement>}
 */
export function leftOutNotes(rows) {
  return (rows || []).map((row) => {
    const note = message('warning', row.text);
    note.classList.add('left-out');
    note.dataset.cause = row.cause;
    return note;
  });
}

/**
 * A dataset's role as the tab writes it: "InD" (the in-distribution set) or "OOD".
 * @param {string} role 'ind' or 'ood', as the routes give it
 * @returns {string}
 */
export function roleLabel(role) {
  return role === 'ind' ? 'InD' : 'OOD';
}

/**
 * A notice of the runs that hold Deephys data but cannot be shown, each with its cause;
 * an empty placeholder when there are none (so it can be replaced in place).
 * @param {Array<{run: string, error: string}>} unavailable
 * @returns {HTMLElement}
 */
export function unavailableRuns(unavailable) {
  if (!unavailable.length) return el('div', {attrs: {id: 'unavailable-runs', hidden: ''}});
  const notice = el('div', {className: 'message warning', attrs: {id: 'unavailable-runs', role: 'status'}});
  notice.append(el('span', {text: `${unavailable.length === 1 ? 'A run' : `${unavailable.length} runs`} cannot be shown: `}));
  const list = el('ul');
  for (const {run, error} of unavailable) list.append(el('li', {text: `${run}: ${error}`}));
  notice.append(list);
  return notice;
}

/**
 * A notice that the shown step's record is incomplete: the arrays it lists that the
 * log lacks (a damaged or truncated event file). Nothing when it is complete.
 * @param {Array<string>|undefined} missing tag names
 * @returns {Array<HTMLElement>}
 */
export function incompleteNotice(missing) {
  if (!missing || !missing.length) return [];
  const shown = missing.slice(0, 5).join(', ') + (missing.length > 5 ? ', …' : '');
  const text = `This record is incomplete: ${missing.length} of its arrays are missing (${shown}). ` +
    'An event file of the run is damaged or truncated (deephys-lightning scores LOGDIR says where); ' +
    'what needs them says so.';
  return [el('div', {className: 'message warning incomplete', text, attrs: {role: 'status'}})];
}

/**
 * A notice that TensorBoard holds fewer of the run's recorded steps than were
 * recorded (its default sampling), with the flag that keeps them all; an empty
 * placeholder when it holds them all.
 * @param {{kept: number, recorded: number|null, flag: string}|null|undefined} sampling
 * @returns {HTMLElement}
 */
export function samplingNotice(sampling) {
  if (!sampling) return el('div', {attrs: {id: 'sampling-notice', hidden: ''}});
  const held = sampling.recorded === null
    ? `TensorBoard holds ${sampling.kept} recorded steps of this run, as many as its sampling keeps: ` +
      'earlier steps may have been dropped'
    : `TensorBoard holds ${sampling.kept} of the ${sampling.recorded} recorded steps of this run ` +
      `(its sampling dropped ${sampling.recorded - sampling.kept})`;
  return el('div', {className: 'message warning sampling', attrs: {id: 'sampling-notice', role: 'status'}}, [
    el('span', {text: `${held}. Start it with `}),
    el('code', {text: sampling.flag}),
    el('span', {text: ' to see every step.'}),
  ]);
}

/**
 * The legend of thumbnail borders and captions, for the views that show images.
 * @returns {HTMLElement}
 */
export function imageLegend() {
  return el('ul', {className: 'image-legend', attrs: {'aria-label': 'legend'}}, [
    el('li', {className: 'right'}, [el('span', {className: 'swatch', attrs: {'aria-hidden': 'true'}}),
      el('span', {text: 'green border: predicted right'})]),
    el('li', {className: 'wrong'}, [el('span', {className: 'swatch', attrs: {'aria-hidden': 'true'}}),
      el('span', {text: 'red border: predicted wrong'})]),
    el('li', {text: 'caption: label → prediction'}),
  ]);
}

/**
 * One side of a comparison in words: "A: run x, step 44 (epoch 0)".
 * @param {string} side 'A' or 'B'
 * @param {{run: string, step: number, epoch?: number}} record
 * @returns {string}
 */
export function sideLabel(side, record) {
  const epoch = record.epoch === undefined ? '' : ` (epoch ${record.epoch})`;
  return `${side}: run ${record.run}, step ${record.step}${epoch}`;
}

/**
 * The line above a comparison: which record is A and which B, and how units match
 * (run names as text).
 * @param {import('./model.js').Comparison} comparison
 * @param {boolean} shown whether the shown view draws B (else it says which views do)
 * @returns {HTMLElement}
 */
export function compareBanner(comparison, shown) {
  const where = shown ? '' : ' The Neuron and Overview views show both.';
  return el('div', {className: 'message compare-banner', attrs: {role: 'status'}}, [
    el('span', {className: 'side-a', text: sideLabel('A', comparison.a)}),
    el('span', {text: ' compared with '}),
    el('span', {className: 'side-b', text: sideLabel('B', comparison.b)}),
    el('span', {text: `; neurons are matched by ${comparison.matched_by}.${where}`}),
  ]);
}

/**
 * Why the chosen comparison is not shown (the compare route's words): A alone is.
 * @param {string} why
 * @returns {HTMLElement}
 */
export function compareRefused(why) {
  return el('div', {className: 'message warning compare-refused', text: `Not compared: ${why}. A alone is shown.`,
    attrs: {role: 'status'}});
}
