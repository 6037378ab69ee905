"""The Deephys plugin inside TensorBoard's own WSGI app, in this process, over the
Python loader: what a real ``tensorboard --load_fast=false`` serves, without a server."""

from __future__ import annotations

from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test

from tensorboard_plugin_deephys.deephys_plugin import DeephysPlugin


def plugin_client(logdir) -> werkzeug_test.Client:
    """A test client of TensorBoard's app serving ``logdir``, loaded once, now."""
    logdir = str(logdir)
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    plugin = DeephysPlugin(base_plugin.TBContext(data_provider=provider, logdir=logdir))
    return werkzeug_test.Client(application.TensorBoardWSGI([plugin], data_provider=provider))
