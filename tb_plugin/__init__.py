"""TensorBoard plugin for Deephys: the "Deephys" tab.

Kept light on purpose: importing ``tb_plugin`` (for its schema in
``tb_plugin.metadata``) pulls in no web server, torch or Lightning. TensorBoard
finds the plugin through the ``tensorboard_plugins`` entry point
``tb_plugin.deephys_plugin:DeephysPlugin``.
"""
