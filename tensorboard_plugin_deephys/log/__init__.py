"""The Deephys log: its format, and reading it. The lowest layer of the project.

Both sides stand on it: the writer (``deephys_lightning.writing``) writes what
``metadata`` names, and the plugin and ``read_log`` read it through ``read_model``.
Nothing here imports the plugin's web side, torch or Lightning.

Modules, from the bottom up:

- ``storage``: every byte beside the events (local paths, ``s3://``, ``gs://``, any
  fsspec URL): complete-or-absent writes, ranged reads;
- ``metadata``: the schema (tag names, kinds, dtypes, the record document);
- ``derived``: numbers derived from recorded arrays (scores, accuracy), one place each;
- ``thumbnail_pack`` and ``assets``: the ``.thumbs`` packs beside the events (and the
  raw ``.npy`` thumbnails of logs before 0.2, still read);
- ``array_checks``: what a well-formed array of each kind looks like;
- ``run_dirs``, ``lru_cache``, ``records``: finding runs, a byte-bounded cache, and
  reading records through a TensorBoard data provider;
- ``read_model``: one recorded step as arrays (``StepData``), what the routes and
  ``read_log`` read.

Example::

    from tensorboard_plugin_deephys.log import metadata
    metadata.tag_name(metadata.Kind.LABELS, dataset="mnist")
"""
