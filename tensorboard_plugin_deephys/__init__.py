"""TensorBoard plugin for Deephys: the "Deephys" tab.

Kept light on purpose: importing ``tensorboard_plugin_deephys`` (for the log format in
``tensorboard_plugin_deephys.log``) pulls in no web server, torch or Lightning.
TensorBoard finds the plugin through the ``tensorboard_plugins`` entry point
``deephys = tensorboard_plugin_deephys.loader:DeephysLoader``, which defines the
plugin's flags and builds ``tensorboard_plugin_deephys.deephys_plugin.DeephysPlugin``.

Layers, each importing only from those below it:

- ``log/``: the log format and its reading, shared with the writer in
  ``deephys_lightning`` (see ``log/__init__.py``);
- ``request_args`` (route parameters), ``deephys_plugin`` (the HTTP routes over
  ``log.read_model``), ``loader`` (flags), ``static/`` (the tab).
"""
