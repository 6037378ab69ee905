// The tab's state module (tensorboard_plugin_deephys/static/state.js) under node's
// own test runner: `node --test tests/js/*.test.mjs` (tests/plugin/test_static_js.py runs it
// under pytest).

import assert from 'node:assert/strict';
import {copyFile, mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {describe, test} from 'node:test';
import {fileURLToPath, pathToFileURL} from 'node:url';

// state.js is a browser module in a folder with no package.json saying so, which
// node before 20.19 reads as CommonJS: it is imported from a copy named .mjs. It
// imports nothing, and that stays so: a copy alone could not import its neighbours.
const STATE_JS = fileURLToPath(new URL('../../tensorboard_plugin_deephys/static/state.js', import.meta.url));
const folder = await mkdtemp(join(tmpdir(), 'deephys-state-'));
await copyFile(STATE_JS, join(folder, 'state.mjs'));
const {
  DEFAULT_K, DEFAULT_VIEW, clampK, decodeState, encodeState, frameData, frameHash, initialState, isCurrent,
  missingArrays, parseInteger, pluginData, runInfo, selectRun, state, viewNamed, withPluginData,
} = await import(pathToFileURL(join(folder, 'state.mjs')).href);
await rm(folder, {recursive: true, force: true}); // imported: the copy is no longer needed

// Views as the URL form sees them: two without keys of their own, one with.
const VIEWS = [
  {name: 'overview', encode: () => ({}), decode: () => ({})},
  {name: 'neuron', encode: () => ({}), decode: () => ({})},
  {
    name: 'image',
    encode: (s) => (s.image ? {image: `${s.image.index}@${s.image.dataset}`} : {}),
    decode: (data) => {
      const match = (data.image || '').match(/^(-?\d+)@(.*)$/s);
      return {image: match ? {index: Number(match[1]), dataset: match[2]} : null};
    },
  },
];

const RUNS = [
  {run: 'a', layers: ['fc1', 'fc2'], top_k: 20, ind: 'mnist', datasets: ['mnist', 'colored'],
    steps: [{step: 10, epoch: 0}, {step: 20, epoch: 1, missing: ['deephys/x']}]},
  {run: 'b/c d', layers: ['conv'], top_k: 5, ind: 'mnist', datasets: ['mnist'], steps: [{step: 3, epoch: 0}]},
];

/** A fresh state holding RUNS, run 'a' selected. */
function withRuns() {
  const s = initialState();
  s.runs = structuredClone(RUNS);
  selectRun(s, s.runs[0]);
  return s;
}

describe('parseInteger: the one number parser', () => {
  test('integers and the integer part of decimals, towards zero', () => {
    assert.equal(parseInteger('7', 0), 7);
    assert.equal(parseInteger('007', 0), 7);
    assert.equal(parseInteger(' 12 ', 0), 12);
    assert.equal(parseInteger('2.9', 0), 2);
    assert.equal(parseInteger('-2.9', 0), -2);
    assert.equal(parseInteger('1e3', 0), 1000);
    assert.equal(parseInteger('0x10', 0), 16);
  });

  test('negative numbers pass (the server answers one out of range in words)', () => {
    assert.equal(parseInteger('-3', 0), -3);
  });

  test('refusals give the fallback', () => {
    for (const text of ['', 'abc', '12abc', 'NaN', 'Infinity', '-Infinity', '1e400', undefined]) {
      assert.equal(parseInteger(text, 42), 42, `text ${JSON.stringify(text)}`);
    }
  });

  test('a minimum refuses numbers below it, before rounding', () => {
    assert.equal(parseInteger('-1', 9, {min: 0}), 9);
    assert.equal(parseInteger('-0.5', 9, {min: 0}), 9);
    assert.equal(parseInteger('0', 9, {min: 0}), 0);
    assert.equal(parseInteger('3.7', 9, {min: 0}), 3);
  });
});

describe('clampK: Top k within 1 and the run\'s top_k', () => {
  test('inside the range it is kept', () => {
    assert.equal(clampK(1, 20), 1);
    assert.equal(clampK(12, 20), 12);
    assert.equal(clampK(20, 20), 20);
  });

  test('below 1 it is 1, above top_k it is top_k', () => {
    assert.equal(clampK(0, 20), 1);
    assert.equal(clampK(-5, 20), 1);
    assert.equal(clampK(21, 20), 20);
    assert.equal(clampK(DEFAULT_K, 5), 5);
  });
});

describe('the state and its URL values', () => {
  test('the initial state', () => {
    const s = initialState();
    assert.equal(s.view, DEFAULT_VIEW);
    assert.equal(s.k, DEFAULT_K);
    assert.equal(s.page.phase, 'loading');
    assert.equal(runInfo(s), null);
    assert.notEqual(initialState(), initialState()); // a fresh object each time
    assert.equal(state.view, DEFAULT_VIEW); // the tab's own one
  });

  test('selectRun: first layer, latest step, no image or category', () => {
    const s = withRuns();
    s.image = {dataset: 'mnist', index: 3};
    selectRun(s, s.runs[1]);
    assert.deepEqual([s.run, s.layer, s.step, s.image, s.category], ['b/c d', 'conv', 3, null, null]);
    assert.equal(runInfo(s).top_k, 5);
  });

  test('encode: the controls\' values, then each view\'s own', () => {
    const s = withRuns();
    assert.deepEqual(encodeState(s, VIEWS),
      {view: 'neuron', run: 'a', layer: 'fc1', step: '20', neuron: '0', k: '12'});
    s.maps = true;
    s.image = {dataset: 'colored', index: 4};
    assert.deepEqual(encodeState(s, VIEWS),
      {view: 'neuron', run: 'a', layer: 'fc1', step: '20', neuron: '0', k: '12', maps: '1', image: '4@colored'});
  });

  test('round trip: decoding what was encoded gives the same state', () => {
    const s = withRuns();
    Object.assign(s, {layer: 'fc2', step: 10, view: 'image', neuron: -2, k: 7, maps: true,
      image: {dataset: 'colored', index: 9}});
    const data = encodeState(s, VIEWS);
    const t = withRuns();
    assert.equal(decodeState(t, data, VIEWS), true);
    for (const key of ['run', 'layer', 'step', 'view', 'neuron', 'k', 'maps', 'image']) {
      assert.deepEqual(t[key], s[key], key);
    }
    assert.equal(isCurrent(t, data, VIEWS), true);
    assert.deepEqual(encodeState(t, VIEWS), data);
  });

  test('isCurrent: a value more, less or different is not current', () => {
    const s = withRuns();
    const data = encodeState(s, VIEWS);
    assert.equal(isCurrent(s, {...data}, VIEWS), true);
    assert.equal(isCurrent(s, {...data, neuron: '1'}, VIEWS), false);
    assert.equal(isCurrent(s, {...data, maps: '1'}, VIEWS), false);
    const {k, ...lessK} = data;
    assert.equal(k, '12');
    assert.equal(isCurrent(s, lessK, VIEWS), false);
  });

  test('values without ours, or an unknown run, leave the state unchanged', () => {
    const s = withRuns();
    const before = structuredClone(s);
    assert.equal(decodeState(s, {}, VIEWS), false);
    assert.equal(decodeState(s, {layer: 'fc2', k: '3'}, VIEWS), false);
    assert.equal(decodeState(s, {run: 'nope', view: 'image'}, VIEWS), false);
    assert.deepEqual(s, before);
  });

  test('a view without a run opens the first run with its defaults', () => {
    const s = initialState();
    s.runs = structuredClone(RUNS);
    assert.equal(decodeState(s, {view: 'overview'}, VIEWS), true);
    assert.deepEqual([s.run, s.layer, s.step, s.view, s.neuron, s.k, s.maps, s.image],
      ['a', 'fc1', 20, 'overview', 0, 12, false, null]);
  });

  test('unknown layer, step and view fall back to the run\'s defaults', () => {
    const s = withRuns();
    decodeState(s, {run: 'a', layer: 'gone', step: '15', view: 'nope'}, VIEWS);
    assert.deepEqual([s.layer, s.step, s.view], ['fc1', 20, DEFAULT_VIEW]);
  });

  test('neuron: any integer, else 0', () => {
    const s = withRuns();
    for (const [text, neuron] of [['5', 5], ['-1', -1], ['2.5', 2], ['', 0], ['x', 0], [undefined, 0]]) {
      decodeState(s, {run: 'a', neuron: text}, VIEWS);
      assert.equal(s.neuron, neuron, `neuron ${JSON.stringify(text)}`);
    }
  });

  test('k: clamped to 1 and the run\'s top_k; refused text gives the default', () => {
    const s = withRuns();
    for (const [run, text, k] of [
      ['a', '7', 7], ['a', '7.9', 7], ['a', '0', 1], ['a', '99', 20], ['b/c d', undefined, 5],
      ['a', undefined, 12], ['a', 'abc', 12], ['a', '-3', 12], ['a', '-0.5', 12],
      ['a', '', 1], // an empty k has always read as 0
    ]) {
      decodeState(s, {run, k: text}, VIEWS);
      assert.equal(s.k, k, `run ${run}, k ${JSON.stringify(text)}`);
    }
  });

  test('maps only when "1"', () => {
    const s = withRuns();
    decodeState(s, {run: 'a', maps: '1'}, VIEWS);
    assert.equal(s.maps, true);
    decodeState(s, {run: 'a', maps: 'true'}, VIEWS);
    assert.equal(s.maps, false);
  });

  test('missingArrays: what the shown step\'s record lacks', () => {
    const s = withRuns();
    assert.deepEqual(missingArrays(s), ['deephys/x']);
    s.step = 10;
    assert.deepEqual(missingArrays(s), []);
    assert.deepEqual(missingArrays(initialState()), []);
  });

  test('viewNamed: the named view, else the default one', () => {
    assert.equal(viewNamed(VIEWS, 'image').name, 'image');
    assert.equal(viewNamed(VIEWS, 'nope').name, DEFAULT_VIEW);
    assert.equal(viewNamed(VIEWS, undefined).name, DEFAULT_VIEW);
  });
});

describe('the values in a TensorBoard hash', () => {
  const data = {view: 'image', run: 'b/c d', image: '4@a&b=c#%', layer: 'fc1'};

  test('round trip, keeping TensorBoard\'s own keys verbatim', () => {
    const hash = withPluginData('#deephys&run=x&tagFilter=a%20b', data, 'deephys');
    assert.ok(hash.startsWith('#deephys&run=x&tagFilter=a%20b&'), hash);
    assert.deepEqual(pluginData(hash, 'deephys'), data);
  });

  test('the tf_storage format: each key and value URI-encoded', () => {
    assert.equal(withPluginData('#deephys', {run: 'b/c d', k: '3'}, 'deephys'),
      '#deephys&p.deephys.run=b%2Fc%20d&p.deephys.k=3');
  });

  test('writing replaces the plugin\'s keys, and only them', () => {
    const first = withPluginData('#deephys&smoothing=0.6', data, 'deephys');
    const second = withPluginData(first, {view: 'neuron'}, 'deephys');
    assert.equal(second, '#deephys&smoothing=0.6&p.deephys.view=neuron');
    assert.deepEqual(pluginData(second, 'deephys'), {view: 'neuron'});
  });

  test('the dashboard comes first, named when the hash has none', () => {
    assert.equal(withPluginData('', {k: '1'}, 'deephys'), '#deephys&p.deephys.k=1');
    assert.equal(withPluginData('#run=x', {k: '1'}, 'deephys'), '#deephys&run=x&p.deephys.k=1');
    assert.equal(withPluginData('#scalars', {}, 'deephys'), '#scalars');
  });

  test('another plugin name has its own prefix', () => {
    const hash = withPluginData('#other', data, 'other');
    assert.deepEqual(pluginData(hash, 'other'), data);
    assert.deepEqual(pluginData(hash, 'deephys'), {});
  });

  test('parsing: other keys, malformed escapes and parts without one "=" are not ours', () => {
    assert.deepEqual(pluginData('#deephys&p.deephys.k=3&p.deephys.view=%E0%A4%A&x=1&p.deephys.run=a=b&p.deephys.maps',
      'deephys'), {k: '3'});
    assert.deepEqual(pluginData('', 'deephys'), {});
  });
});

describe('the values in the iframe\'s own hash', () => {
  test('round trip', () => {
    const data = {view: 'category', run: 'b/c d', category: '3::0@x&y', k: '12'};
    const hash = frameHash(data);
    assert.ok(hash.startsWith('#view=category&run=b%2Fc+d&'), hash);
    assert.deepEqual(frameData(hash), data);
    assert.deepEqual(frameData(hash.slice(1)), data);
  });

  test('an empty hash holds nothing', () => {
    assert.deepEqual(frameData(''), {});
    assert.equal(frameHash({}), '#');
  });
});
