"""TensorBoard plugin for Deephys: the "Deephys" tab.

Kept light on purpose: importing ``tb_plugin`` (for the log format in
``tb_plugin.metadata``) pulls in no web server, torch or Lightning. TensorBoard
finds the plugin through the ``tensorboard_plugins`` entry point
``deephys = tb_plugin.loader:DeephysLoader``, which defines the plugin's flags and
builds ``tb_plugin.deephys_plugin.DeephysPlugin``.

Modules: ``metadata`` (the log format), ``derived`` (numbers derived from the
recorded arrays), ``records`` (reading through a TensorBoard data provider),
``read_model`` (one recorded step as arrays: what the routes and ``read_log``
read), ``assets`` (thumbnail files), ``request_args`` and ``deephys_plugin`` (the
HTTP side), ``loader`` and ``lru_cache``.
"""
