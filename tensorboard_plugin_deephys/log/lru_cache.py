"""A thread-safe LRU cache bounded by the bytes of the values it holds.

The plugin keeps decoded arrays here so that a click never re-reads and re-decodes
a large array, while the TensorBoard process stays within a bounded memory.

Example::

    >>> import numpy as np
    >>> cache = ByteLRUCache(max_bytes=1024)
    >>> cache.get_or_compute("a", lambda: np.zeros(10)).shape
    (10,)
    >>> "a" in cache
    True
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


def _size_of(value: Any) -> int:
    if isinstance(value, np.memmap):
        return 4096  # a mapped file: its pages belong to the OS page cache, not to us
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "nbytes"):  # e.g. a ThumbnailFile: what it keeps in memory
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 64


class ByteLRUCache:
    """Keeps the most recently used values whose sizes add up to ``max_bytes``.

    A value larger than the whole budget is returned but not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[Hashable, tuple[Any, int]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    @property
    def current_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the cached value of ``key``, computing and storing it when absent."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        # Compute outside the lock: two threads may compute the same value once each,
        # which is cheaper than serialising every read behind one slow decode.
        value = compute()
        size = _size_of(value)
        if size > self.max_bytes:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = (value, size)
                self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
        return value
