"""The recording wing: what happens during a recorded evaluation epoch, on every process.

The callback makes an :class:`~deephys_lightning.recording.plan.EpochPlan` when an
epoch starts, hands each batch to an
:class:`~deephys_lightning.recording.recorder.EpochRecorder` (forward hooks, checks,
rows kept on the recording device) and, at the end, gathers every process's rows and
maps through :class:`~deephys_lightning.recording.gather.Collectives`. What comes out
(``EpochRows``, on rank zero's host) is what the writing wing turns into a record.

Modules, from the bottom up: ``rows`` (columns of recorded rows, device buffers),
``sampling`` (which positions a process keeps), ``capture`` (one batch: outputs,
reduction, labels, thumbnails, top predictions), ``spatial_maps`` (running top maps),
``gather`` (every collective), ``modules`` (finding layers), ``plan`` and
``recorder``. Nothing here imports the writing wing; of the log format
(``tensorboard_plugin_deephys.log.metadata``) only its names and limits are used.
"""
