"""Route parameters: integers as the tab writes them (ASCII digits, an optional minus),
nothing Python's int() would also take."""

from __future__ import annotations

import pytest
from tensorboard import errors
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tensorboard_plugin_deephys.request_args import int_arg


def _request(value: str) -> Request:
    return Request(EnvironBuilder(query_string={"neuron": value}).get_environ())


@pytest.mark.parametrize("text", ["+1", " 1", "1 ", "1_000", "１", "٣", "1.0", "0x1", "1e3", "--1"])
def test_integers_only_as_ascii_digits(text):
    with pytest.raises(errors.InvalidArgumentError, match="must be an integer"):
        int_arg(_request(text), "neuron", default=0)


def test_plain_integers_and_bounds():
    assert int_arg(_request("12"), "neuron", default=0) == 12
    assert int_arg(_request("007"), "neuron", default=0) == 7
    assert int_arg(_request("-3"), "neuron", default=0, minimum=None) == -3
    with pytest.raises(errors.InvalidArgumentError, match=r"must be in \[0, "):
        int_arg(_request("-3"), "neuron", default=0)
    with pytest.raises(errors.InvalidArgumentError, match="must be an integer"):
        int_arg(_request("9" * 41), "neuron", default=0)  # no 41-digit parsing
