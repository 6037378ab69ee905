// What the "where neurons fire" maps say where they are no grid over the image
// (tensorboard_plugin_deephys/static/thumbnails.js): maps of 1 x 1 are not drawn and
// say the layer has no spatial extent; token strips say why they are strips.

import assert from 'node:assert/strict';
import {mkdtempSync, readFileSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {test} from 'node:test';

// thumbnails.js and its neighbours are browser modules that touch the document only
// inside their functions: imported from copies named .mjs, their imports renamed.
const folder = mkdtempSync(join(tmpdir(), 'thumbnails-'));
for (const name of ['thumbnails', 'dom', 'model']) {
  const source = readFileSync(new URL(`../../tensorboard_plugin_deephys/static/${name}.js`, import.meta.url), 'utf8');
  writeFileSync(join(folder, `${name}.mjs`), source.replace(/from '\.\/(\w+)\.js'/g, "from './$1.mjs'"));
}
const {mapHasExtent, mapNotes} = await import(join(folder, 'thumbnails.mjs'));

const image = (shape) => ({map: {shape, values: new Array(shape[0] * shape[1]).fill(1)}});

test('a map of one cell has no extent; a grid or a strip has', () => {
  assert.equal(mapHasExtent({shape: [1, 1]}), false);
  assert.equal(mapHasExtent({shape: [4, 4]}), true);
  assert.equal(mapHasExtent({shape: [1, 6]}), true);
});

test('grids say nothing; 1 x 1 maps say the layer has no spatial extent, once', () => {
  assert.deepEqual(mapNotes([image([4, 4]), image([7, 7]), {}]), []);
  const notes = mapNotes([image([1, 1]), image([1, 1])]);
  assert.equal(notes.length, 1);
  assert.match(notes[0], /this layer has no spatial extent at this resolution/);
});

test('a strip says its tokens are no square grid, with their number', () => {
  assert.deepEqual(mapNotes([image([1, 6])]),
    ['Where neurons fire: tokens shown as a strip, left to right: this layer\'s 6 tokens are not a square grid.']);
  assert.match(mapNotes([image([1, 49])])[0], /more than 49, pooled\) are not a square grid/);
  // 16 or 17 tokens are grids now: a strip of them comes from an older log
  assert.match(mapNotes([image([1, 16])])[0], /written before square token grids were kept as grids/);
  assert.match(mapNotes([image([1, 17])])[0], /written before square token grids were kept as grids/);
  assert.equal(mapNotes([image([1, 6]), image([1, 1]), image([1, 6])]).length, 2);
});
