"""Every collective of a recorded epoch, in one place: rows, top maps, decisions.

At the end of a recorded epoch every process's rows of a dataset are gathered in
dataset order (:func:`gather_rows`), and so are the running top maps
(:func:`gather_top_maps`); rank zero's decisions and the largest class count travel
through :class:`Collectives` too, so that no other module calls a collective.

The collectives are Lightning's (``trainer.strategy.all_gather`` / ``broadcast``):
DDP, ``ddp_spawn``, FSDP, multi-node alike. Every tensor handed to ``all_gather``
is on the strategy's ``root_device`` (NCCL takes CUDA tensors only), and large
columns (activations, thumbnails) go in chunks of rows, so that one collective
holds at most ``chunk_bytes`` per process on the device (``world_size`` times that
for its result). The gathered rows come back on the CPU, where rank zero writes them.

Example (one process: no collective runs)::

    >>> import torch
    >>> from deephys_lightning.recording.rows import POSITIONS, Rows
    >>> rows = Rows({POSITIONS: torch.tensor([1, 0])})
    >>> gather_rows(rows, None, None, world_size=1).positions.tolist()
    [0, 1]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from deephys_lightning.recording.rows import ACT_PREFIX, DeviceBudget, Rows
from deephys_lightning.recording.spatial_maps import RunningTopMaps, TopMaps

AllGather = Callable[[torch.Tensor], torch.Tensor]
Broadcast = Callable[[Any, int], Any]
DEFAULT_CHUNK_BYTES = 256 * 1024**2


def gather_rows(
    rows: Rows | None,
    all_gather: AllGather | None,
    broadcast: Broadcast | None,
    world_size: int,
    device: torch.device | str = "cpu",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    keep: DeviceBudget | None = None,
) -> Rows | None:
    """Every process's rows, in dataset order (call on every process, in step): on the
    CPU, but for the activation columns that the budget ``keep`` has room for
    (gathered, in column order; it counts them as taken), which stay on ``device``
    for the record's kernels.

    ``all_gather`` maps a tensor of one shape on every process to the stacked
    ``[world_size, ...]`` tensor and ``broadcast(obj, src)`` sends a Python object
    from process ``src`` to all, as ``trainer.strategy`` does; ``device`` is where
    collectives take their tensors (``strategy.root_device``). Row counts may differ,
    down to none on a process: rows are padded to the largest count, the padding
    dropped. Returns None when no process has rows.
    """
    if world_size == 1:
        if rows is None:
            return None
        count = len(rows)

        def place(name: str, column: torch.Tensor) -> torch.Tensor:
            if _stays_on_device(keep, name, column, count, column.device):
                return column
            return column.to("cpu")

        return rows.map_named(place).sorted()
    assert all_gather is not None and broadcast is not None
    count = 0 if rows is None else len(rows)
    counts = all_gather(torch.tensor([count], dtype=torch.int64, device=device))
    counts = counts.reshape(-1).cpu()
    if int(counts.max()) == 0:
        return None
    # A process without rows learns the columns from the first one with rows.
    source = int(torch.nonzero(counts)[0])
    layout = broadcast(None if rows is None or count == 0 else rows.layout(), source)
    if rows is None or count == 0:
        rows = Rows.empty(layout, device=device)
    width, total = int(counts.max()), int(counts.sum())
    gathered = {
        name: _gather_column(
            column,
            counts,
            width,
            all_gather,
            device,
            chunk_bytes,
            on_device=_stays_on_device(keep, name, column, total, torch.device(device)),
        )
        for name, column in sorted(rows.columns.items())  # the same order on every process
    }
    return Rows.sorted_from(gathered)


def _stays_on_device(
    keep: DeviceBudget | None, name: str, column: torch.Tensor, rows: int, device: torch.device
) -> bool:
    """Whether an activation ``column`` (``rows`` of it once gathered) stays on
    ``device``, a device other than the CPU: while ``keep`` has room for it."""
    if keep is None or device.type == "cpu" or not name.startswith(ACT_PREFIX):
        return False
    return keep.take(rows * math.prod(column.shape[1:]) * column.element_size())


def gather_stacked(
    tensor: torch.Tensor,
    all_gather: AllGather,
    world_size: int,
    device: torch.device | str = "cpu",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """``[world_size, *tensor.shape]`` on the CPU: a tensor of the same shape on every
    process (call on every process, in step), gathered in chunks of its first dim of
    at most ``chunk_bytes`` per process, on ``device``."""
    rows = len(tensor)
    counts = torch.full((world_size,), rows, dtype=torch.int64)
    gathered = _gather_column(tensor, counts, rows, all_gather, device, chunk_bytes)
    return gathered.reshape(world_size, *tensor.shape)


def _gather_column(
    column: torch.Tensor,
    counts: torch.Tensor,
    width: int,
    all_gather: AllGather,
    device: torch.device | str,
    chunk_bytes: int,
    on_device: bool = False,
) -> torch.Tensor:
    """One column of every process, process by process, padding dropped: on the CPU,
    or with ``on_device`` on ``device``. Each chunk's rows go straight into the
    column's storage, allocated once: besides it, one chunk of every process."""
    row_bytes = max(1, math.prod(column.shape[1:]) * column.element_size())
    rows_per_chunk = max(1, chunk_bytes // row_bytes)
    world_size = len(counts)
    first = [0, *torch.cumsum(counts, 0).tolist()]  # each process's first row in the column
    out = torch.empty(
        (first[-1], *column.shape[1:]),
        dtype=column.dtype,
        device=device if on_device else "cpu",
    )
    for start in range(0, width, rows_per_chunk):
        stop = min(width, start + rows_per_chunk)
        chunk = torch.zeros((stop - start, *column.shape[1:]), dtype=column.dtype, device=device)
        mine = column[start:stop]
        chunk[: len(mine)] = mine.to(device, non_blocking=True)
        stacked = all_gather(chunk)  # [world_size, stop - start, ...]
        for rank in range(world_size):
            keep = max(0, min(stop, int(counts[rank])) - start)
            at = first[rank] + start
            out[at : at + keep] = stacked[rank, :keep]  # to the host where out is there
        del stacked
    return out


def gather_top_maps(
    local: RunningTopMaps | None,
    all_gather: AllGather | None,
    broadcast: Broadcast | None,
    world_size: int,
    device: torch.device | str = "cpu",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> TopMaps | None:
    """The top-k of every process merged (call on every process, in step), on the
    host; None when no process has one. The collectives take tensors on ``device``
    (``strategy.root_device``), in chunks of at most ``chunk_bytes`` per process."""
    if world_size == 1:
        return None if local is None else local.to_host()
    assert all_gather is not None and broadcast is not None
    has = torch.tensor([local is not None], dtype=torch.int64, device=device)
    present = all_gather(has).reshape(-1).cpu()
    if int(present.max()) == 0:
        return None
    source = int(torch.nonzero(present)[0])
    layout = broadcast(None if local is None else local.layout(), source)
    if local is None:
        neurons, k, shape = layout
        local = RunningTopMaps.empty(neurons, k, shape, device)
    keys = gather_stacked(local.keys, all_gather, world_size, device, chunk_bytes)
    maps = gather_stacked(local.maps, all_gather, world_size, device, chunk_bytes)
    neurons, k = local.keys.shape
    keys = keys.permute(1, 0, 2).reshape(neurons, world_size * k)  # [M, W k]: rank by rank
    top, chosen = torch.topk(keys, k, dim=1)
    # maps [W, M, k, S]: entry (j, c) is rank c // k's map c % k of neuron j
    rows = (chosen // k) * (neurons * k) + torch.arange(neurons).unsqueeze(1) * k + chosen % k
    picked = maps.reshape(-1, maps.shape[-1]).index_select(0, rows.reshape(-1))
    return RunningTopMaps(top, picked.reshape(neurons, k, -1), local.map_shape).to_host()


@dataclasses.dataclass(frozen=True)
class Collectives:
    """The collectives of one recorded epoch, as ``trainer.strategy`` runs them, on its
    ``root_device`` in chunks of at most ``chunk_bytes`` per process. Every process
    calls each method, in the same order.

    Example (one process: nothing is sent)::

        >>> Collectives(None, None, world_size=1).decision(True)
        True
    """

    all_gather: AllGather | None
    broadcast: Broadcast | None
    world_size: int
    device: torch.device | str = "cpu"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    rank: int = 0

    @classmethod
    def of(cls, strategy: Any, world_size: int, chunk_bytes: int) -> Collectives:
        """The collectives of a Lightning ``strategy``."""
        return cls(
            strategy.all_gather,
            strategy.broadcast,
            world_size,
            strategy.root_device,
            chunk_bytes,
            strategy.global_rank,
        )

    def rows(self, local: Rows | None, keep: DeviceBudget | None = None) -> Rows | None:
        """Every process's rows, in dataset order, on the CPU but for the activations
        that ``keep`` has room for on the root device (:func:`gather_rows`): on rank
        zero, which computes the record; the other processes drop their rows."""
        return gather_rows(
            local,
            self.all_gather,
            self.broadcast,
            self.world_size,
            self.device,
            self.chunk_bytes,
            keep if self.rank == 0 else None,
        )

    def top_maps(self, local: RunningTopMaps | None) -> TopMaps | None:
        """Every process's running top maps merged (:func:`gather_top_maps`)."""
        return gather_top_maps(
            local, self.all_gather, self.broadcast, self.world_size, self.device, self.chunk_bytes
        )

    def decision(self, decision: bool) -> bool:
        """Rank zero's ``decision``, on every process."""
        if self.world_size == 1:
            return decision
        assert self.broadcast is not None
        return bool(self.broadcast(decision, 0))

    def largest(self, value: int) -> int:
        """The largest of every process's ``value``."""
        if self.world_size == 1:
            return value
        assert self.all_gather is not None
        return int(self.all_gather(torch.tensor(value, device=self.device)).max())
