"""The CBOR items of the Deephys files against cbor2, the library the app's files are
read with."""

from __future__ import annotations

import cbor2
import pytest

from deephys_lightning import cbor

EDGES = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]


@pytest.mark.parametrize("edge", EDGES)
def test_integers_around_each_head_size_are_cbor2s(edge):
    start, stop = max(0, edge - 3), min(2**64, edge + 4)
    expected = [cbor2.dumps(i) for i in range(start, stop)]
    assert [cbor.uint(i) for i in range(start, stop)] == expected
    assert cbor.uints(start, stop) == expected


def test_a_run_of_indices_across_head_sizes_is_cbor2s():
    assert cbor.uints(0, 70_000) == [cbor2.dumps(i) for i in range(70_000)]
    assert cbor.uints(5, 5) == [] and cbor.uints(9, 3) == []


def test_what_no_head_holds_is_an_error():
    with pytest.raises(ValueError, match=">= 0"):
        cbor.uints(-1, 3)
    with pytest.raises(ValueError, match="does not fit"):
        cbor.uints(2**64 - 1, 2**64 + 1)


@pytest.mark.parametrize("value", ["", "name", "é" * 30, "日本" * 50])
def test_text_is_cbor2s(value):
    assert cbor.text(value) == cbor2.dumps(value)
