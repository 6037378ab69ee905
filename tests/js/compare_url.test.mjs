// The comparison in the URL (tensorboard_plugin_deephys/static/state.js): `compare=RUN@STEP`
// round-trips through the state, a TensorBoard hash and the iframe's own hash; URLs
// without it decode as before; one naming no recorded step compares with nothing.

import assert from 'node:assert/strict';
import {copyFile, mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {describe, test} from 'node:test';
import {fileURLToPath, pathToFileURL} from 'node:url';

// Imported from a copy named .mjs, as state.test.mjs does (see there).
const STATE_JS = fileURLToPath(new URL('../../tensorboard_plugin_deephys/static/state.js', import.meta.url));
const folder = await mkdtemp(join(tmpdir(), 'deephys-compare-'));
await copyFile(STATE_JS, join(folder, 'state.mjs'));
const {
  compareText, decodeState, encodeState, frameData, frameHash, initialState, isCurrent, parseCompare, pluginData,
  selectRun, withPluginData,
} = await import(pathToFileURL(join(folder, 'state.mjs')).href);
await rm(folder, {recursive: true, force: true});

const VIEWS = [
  {name: 'overview', encode: () => ({}), decode: () => ({})},
  {name: 'neuron', encode: () => ({}), decode: () => ({})},
];

const RUNS = [
  {run: 'tiny/version_0', layers: ['fc'], top_k: 20, ind: 'ind', datasets: ['ind', 'ood'],
    steps: [{step: 44, epoch: 0}, {step: 264, epoch: 1}]},
  {run: 'seed@2/version_0', layers: ['fc'], top_k: 20, ind: 'ind', datasets: ['ind', 'ood'],
    steps: [{step: 7, epoch: 0}]},
];

/** A fresh state holding RUNS, the first run selected. */
function withRuns() {
  const s = initialState();
  s.runs = structuredClone(RUNS);
  selectRun(s, s.runs[0]);
  return s;
}

describe('the compare key of the URL', () => {
  test('a fresh state compares with nothing and writes no compare key', () => {
    const s = withRuns();
    assert.equal(s.compare, null);
    assert.equal('compare' in encodeState(s, VIEWS), false);
  });

  test('another step of this run round-trips', () => {
    const s = withRuns();
    s.compare = {run: 'tiny/version_0', step: 44};
    const data = encodeState(s, VIEWS);
    assert.equal(data.compare, 'tiny/version_0@44');
    const back = withRuns();
    assert.equal(decodeState(back, data, VIEWS), true);
    assert.deepEqual(back.compare, {run: 'tiny/version_0', step: 44});
    assert.equal(isCurrent(back, data, VIEWS), true);
  });

  test('a run whose name holds @ round-trips through both hashes', () => {
    const s = withRuns();
    s.view = 'overview';
    s.compare = {run: 'seed@2/version_0', step: 7};
    const data = encodeState(s, VIEWS);
    const hash = withPluginData('#deephys&tb.other=1', data, 'deephys');
    assert.match(hash, /p\.deephys\.compare=seed%402%2Fversion_0%407/);
    assert.match(hash, /tb\.other=1/);
    for (const read of [pluginData(hash, 'deephys'), frameData(frameHash(data))]) {
      const back = withRuns();
      assert.equal(decodeState(back, read, VIEWS), true);
      assert.deepEqual(back.compare, {run: 'seed@2/version_0', step: 7});
      assert.deepEqual(encodeState(back, VIEWS), data);
    }
  });

  test('an old URL without compare decodes as before: no comparison', () => {
    const s = withRuns();
    s.compare = {run: 'tiny/version_0', step: 44}; // replaced by the URL's state
    const old = {view: 'neuron', run: 'tiny/version_0', layer: 'fc', step: '264', neuron: '3', k: '5'};
    assert.equal(decodeState(s, old, VIEWS), true);
    assert.equal(s.compare, null);
    assert.equal(s.step, 264);
    assert.equal(s.neuron, 3);
    assert.deepEqual(encodeState(s, VIEWS), old);
  });

  test('a compare naming no recorded step of a listed run compares with nothing', () => {
    for (const text of ['tiny/version_0@45', 'gone@44', 'tiny/version_0', 'tiny/version_0@', '@44',
      'tiny/version_0@abc', '']) {
      const s = withRuns();
      decodeState(s, {view: 'neuron', run: 'tiny/version_0', compare: text}, VIEWS);
      assert.equal(s.compare, null, text);
    }
  });

  test('compareText and parseCompare are inverses', () => {
    assert.equal(compareText(null), '');
    for (const compare of [{run: 'tiny/version_0', step: 264}, {run: 'seed@2/version_0', step: 7}]) {
      assert.deepEqual(parseCompare(compareText(compare), RUNS), compare);
    }
  });
});
