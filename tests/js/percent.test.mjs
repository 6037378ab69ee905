// The tab's formats: 0.99997 never reads 100.0%; no prediction reads "none".
import assert from 'node:assert/strict';
import {readFileSync, writeFileSync, mkdtempSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {test} from 'node:test';

// dom.js touches the document only inside its functions; its formatters are pure.
const source = readFileSync(new URL('../../tensorboard_plugin_deephys/static/dom.js', import.meta.url), 'utf8');
const folder = mkdtempSync(join(tmpdir(), 'dom-'));
const copy = join(folder, 'dom.mjs');
writeFileSync(copy, source);
const {probabilityPercent, percent} = await import(copy);

test('probabilities keep the digits that tell them from 0 % and 100 %', () => {
  assert.equal(probabilityPercent(0.5), '50.0%');
  assert.equal(probabilityPercent(0.99997), '99.997%');
  assert.equal(probabilityPercent(1), '100.0%');
  assert.equal(probabilityPercent(0), '0.0%');
  assert.equal(probabilityPercent(0.00002), '0.002%');
  assert.equal(probabilityPercent(1 - 2 ** -24), '99.99999%');  // float32's last below 1
  assert.equal(probabilityPercent(null), 'n/a');
  assert.equal(percent(0.99997), '100.0%');  // other shares keep one decimal
});

test('an image without a prediction reads "none", never a class', async () => {
  const {className} = await import(copy);
  assert.equal(className(['zero', 'one'], null), 'none');
  assert.equal(className(['zero', 'one'], 1), 'one');
  assert.equal(className(['zero'], 7), '7');
});
