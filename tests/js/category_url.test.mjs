// The category view's part of the URL state (view_category.js's encode / decode): the
// shown category, its page of images and the pages of its false positives and
// negatives survive a round trip, and URLs written before the mistake pages still read.

import assert from 'node:assert/strict';
import {mkdtempSync, readFileSync, readdirSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {describe, test} from 'node:test';
import {pathToFileURL} from 'node:url';

// The static modules are browser modules in a folder without a package.json saying
// so, which node before 20.19 reads as CommonJS: they are imported from copies named
// .mjs, their imports of each other renamed alike. They touch the document and the
// window only inside functions.
const STATIC = new URL('../../tensorboard_plugin_deephys/static/', import.meta.url);
const folder = mkdtempSync(join(tmpdir(), 'deephys-category-'));
for (const name of readdirSync(STATIC).filter((n) => n.endsWith('.js'))) {
  const source = readFileSync(new URL(name, STATIC), 'utf8').replace(/(from '\.\/[\w]+)\.js'/g, "$1.mjs'");
  writeFileSync(join(folder, name.replace(/\.js$/, '.mjs')), source);
}
const {category} = await import(pathToFileURL(join(folder, 'view_category.mjs')).href);

describe('category URL state', () => {
  test('a category with pages of mistakes round-trips, any dataset name', () => {
    const shown = {label: 3, pred: null, page: 2, dataset: 'x@y:fp1&z', either: false, fpPage: 1, fnPage: 4};
    const data = category.encode({category: shown});
    assert.deepEqual(data, {category: '3::2:fp1:fn4@x@y:fp1&z'});
    assert.deepEqual(category.decode(data).category, shown);
  });

  test('pages 0 are left out: URLs stay as they were', () => {
    const shown = {label: 0, pred: 5, page: 0, dataset: 'v2', either: true, fpPage: 0, fnPage: 0};
    assert.deepEqual(category.encode({category: shown}), {category: '0:5:0:either@v2'});
    assert.deepEqual(category.decode({category: '0:5:0:either@v2'}).category, shown);
  });

  test('a URL written before the mistake pages reads as their first pages', () => {
    assert.deepEqual(category.decode({category: '3::0@x&y'}).category,
      {label: 3, pred: null, page: 0, dataset: 'x&y', either: false, fpPage: 0, fnPage: 0});
    assert.equal(category.decode({category: 'nonsense'}).category, null);
    assert.deepEqual(category.encode({category: null}), {});
  });
});
