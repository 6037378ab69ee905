// The tab's request for a page of confused pairs (model.js getConfusion) under node's
// own test runner: the URL it asks, with fetch stubbed (tests/plugin/test_static_js.py
// runs it under pytest; tests/browser/test_browser_many_classes.py runs the overview).

import assert from 'node:assert/strict';
import {copyFile, mkdtemp, rm} from 'node:fs/promises';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {test} from 'node:test';
import {fileURLToPath, pathToFileURL} from 'node:url';

// model.js imports nothing: a copy named .mjs is an ES module for any node version.
const MODEL_JS = fileURLToPath(new URL('../../tensorboard_plugin_deephys/static/model.js', import.meta.url));
const folder = await mkdtemp(join(tmpdir(), 'deephys-model-'));
await copyFile(MODEL_JS, join(folder, 'model.mjs'));
const {ApiError, getConfusion} = await import(pathToFileURL(join(folder, 'model.mjs')).href);
await rm(folder, {recursive: true, force: true});

/**
 * Run `action` with fetch answering `body` (status `status`); the URLs it was asked.
 * @param {object} body
 * @param {number} status
 * @param {() => Promise<unknown>} action
 * @returns {Promise<{asked: Array<string>, result: unknown}>}
 */
async function withFetch(body, status, action) {
  const asked = [];
  const saved = globalThis.fetch;
  globalThis.fetch = async (url) => {
    asked.push(String(url));
    return {ok: status < 400, status, json: async () => body};
  };
  try {
    return {asked, result: await action()};
  } finally {
    globalThis.fetch = saved;
  }
}

test('a page of the misclassified pairs asks the confusion route without the diagonal', async () => {
  const answer = {num_cells: 1, num_images: 4, page: 2, page_size: 100, cells: [{label: 3, pred: 9, count: 4}]};
  const {asked, result} = await withFetch(answer, 200, () =>
    getConfusion({run: 'a/b c', step: 7, dataset: 'ood & more', diagonal: false, page: 2, pageSize: 100}));
  assert.deepEqual(asked, ['./confusion?run=a%2Fb+c&step=7&dataset=ood+%26+more&diagonal=0&page=2&page_size=100']);
  assert.deepEqual(result, answer);
});

test('the diagonal and the route defaults are left to the route unless asked', async () => {
  const {asked} = await withFetch({cells: []}, 200, () => getConfusion({run: 'r', step: 1, dataset: 'ind', page: 0}));
  assert.deepEqual(asked, ['./confusion?run=r&step=1&dataset=ind&page=0']);
});

test("the route's error reaches the tab in its words", async () => {
  await assert.rejects(
    withFetch({error: 'page 9 is out of range: 2 pages of 100 cells (0–1)'}, 400,
      () => getConfusion({run: 'r', step: 1, dataset: 'ind', diagonal: false, page: 9})),
    (error) => error instanceof ApiError && error.message === 'page 9 is out of range: 2 pages of 100 cells (0–1)');
});
