"""Gathering rows across processes: every collective gets its tensors on the device it
is given (the strategy's root device), in chunks of at most the byte bound, and the
rows come back whole, in dataset order, from any split between the processes."""

from __future__ import annotations

import threading

import pytest
import torch

from deephys_lightning.recording.gather import gather_rows
from deephys_lightning.recording.rows import LABELS, POSITIONS, THUMBS, RowBuffer, Rows, act_column


class FakeGroup:
    """``world_size`` threads that meet in each collective, as ranks do, and a record
    of every tensor handed to ``all_gather``."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self._barrier = threading.Barrier(world_size)
        self._slots: list = [None] * world_size
        self.calls: list[tuple[torch.device, int, int]] = []  # (device, bytes, rows)
        self._lock = threading.Lock()

    def rank_ops(self, rank: int):
        def all_gather(tensor: torch.Tensor) -> torch.Tensor:
            with self._lock:
                self.calls.append((tensor.device, tensor.nbytes, len(tensor)))
            self._slots[rank] = tensor.clone()
            self._barrier.wait()
            stacked = torch.stack(self._slots)
            self._barrier.wait()
            return stacked

        def broadcast(obj, src: int):
            if rank == src:
                self._slots[src] = obj
            self._barrier.wait()
            value = self._slots[src]
            self._barrier.wait()
            return value

        return all_gather, broadcast


def _dataset(n: int) -> Rows:
    generator = torch.Generator().manual_seed(n)
    return Rows(
        {
            POSITIONS: torch.arange(n),
            LABELS: torch.randint(0, 5, (n,), generator=generator),
            act_column("fc"): torch.rand(n, 7, generator=generator).half(),
            THUMBS: torch.randint(0, 256, (n, 4, 4, 3), generator=generator, dtype=torch.uint8),
        }
    )


def _gather_on_threads(parts: list[Rows | None], chunk_bytes: int) -> tuple[list, FakeGroup]:
    group = FakeGroup(len(parts))
    results: list = [None] * len(parts)

    def run(rank: int) -> None:
        all_gather, broadcast = group.rank_ops(rank)
        results[rank] = gather_rows(
            parts[rank], all_gather, broadcast, len(parts), device="cpu", chunk_bytes=chunk_bytes
        )

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(len(parts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, group


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("chunk_bytes", [64, 1000, 10**9])
def test_rows_come_back_whole_in_dataset_order_in_bounded_chunks(world_size, chunk_bytes):
    full = _dataset(23)
    # a DistributedSampler's split: rank r holds positions r, r + W, ...
    parts = [full.take(torch.arange(rank, 23, world_size)) for rank in range(world_size)]
    results, group = _gather_on_threads(parts, chunk_bytes)
    for rows in results:
        for name, column in full.columns.items():
            torch.testing.assert_close(rows.columns[name], column, rtol=0, atol=0)
    row_bytes = {"fc": 7 * 2, "thumbs": 4 * 4 * 3, "positions": 8, "labels": 8}
    for device, nbytes, count in group.calls:
        assert device == torch.device("cpu")
        assert nbytes <= max(chunk_bytes, max(row_bytes.values())) or count == 1


def test_a_process_without_rows_takes_part_and_gets_everyone_elses():
    full = _dataset(5)
    results, _ = _gather_on_threads([full, None], chunk_bytes=32)
    for rows in results:
        torch.testing.assert_close(rows.positions, full.positions)
        assert rows.thumbs.shape == (5, 4, 4, 3)


def test_no_rows_anywhere_is_none():
    results, _ = _gather_on_threads([None, None], chunk_bytes=32)
    assert results == [None, None]


def test_a_row_buffer_keeps_batches_in_their_slots():
    buffer = RowBuffer(capacity=6)
    full = _dataset(6)
    buffer.append(full.take(torch.tensor([4, 5])))
    buffer.append(full.take(torch.tensor([0, 1, 2, 3])))
    rows = buffer.rows().sorted()
    for name, column in full.columns.items():
        torch.testing.assert_close(rows.columns[name], column, rtol=0, atol=0)
    assert buffer.device == torch.device("cpu")
    with pytest.raises(RuntimeError, match="more than the 6 images"):
        buffer.append(full.take(torch.tensor([0])))
