"""Per-dataset buffers of recorded rows, and their gathering across processes.

Rows are kept on the CPU, activations in float16, in memory preallocated once the
dataset's size is known, each with its position in the dataset so that rows from
several processes can be put back in dataset order.

Example::

    >>> import torch
    >>> plan = SamplingPlan.for_rank(num_images=5, world_size=1, rank=0, max_images=None)
    >>> buffer = DatasetBuffer(capacity=plan.capacity)
    >>> positions = plan.positions(local_start=0, count=3)
    >>> labels = torch.zeros(3, dtype=torch.long)
    >>> buffer.append(positions, {"fc": torch.ones(3, 2)}, labels, labels)
    >>> buffer.rows().acts["fc"].shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch


@dataclasses.dataclass
class Rows:
    """Recorded rows of one dataset: ``positions`` index the dataset."""

    positions: torch.Tensor  # int64 [n]
    acts: dict[str, torch.Tensor]  # layer -> float16 [n, M]
    labels: torch.Tensor  # int64 [n]
    preds: torch.Tensor  # int64 [n]
    thumbs: torch.Tensor | None  # uint8 [n, h, w, 3]
    logits: torch.Tensor | None = None  # float32 [n, C] classifier outputs
    logit_scores: torch.Tensor | None = None  # float32 [n, 3] OOD detector scores

    def sorted(self) -> Rows:
        """The same rows in dataset order."""
        if len(self.positions) < 2 or bool((self.positions[1:] > self.positions[:-1]).all()):
            return self
        order = torch.argsort(self.positions)
        return Rows(
            positions=self.positions[order],
            acts={layer: a[order] for layer, a in self.acts.items()},
            labels=self.labels[order],
            preds=self.preds[order],
            thumbs=None if self.thumbs is None else self.thumbs[order],
            logits=None if self.logits is None else self.logits[order],
            logit_scores=None if self.logit_scores is None else self.logit_scores[order],
        )


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
    """Which dataset positions one process sees and keeps.

    With ``world_size`` processes, a ``DistributedSampler`` (no shuffling) gives
    process ``rank`` the positions ``rank, rank + W, rank + 2W, ...`` of the dataset
    padded to a multiple of W by repeating its first images: positions past the end
    are those duplicates and are dropped. ``max_images`` keeps an evenly spread,
    deterministic subset of the dataset.
    """

    num_images: int | None
    world_size: int
    rank: int
    selected: np.ndarray | None  # bool [num_images] or None: keep all
    max_images: int | None

    @classmethod
    def for_rank(
        cls, num_images: int | None, world_size: int, rank: int, max_images: int | None
    ) -> SamplingPlan:
        selected = None
        if max_images is not None and num_images is not None and num_images > max_images:
            selected = np.zeros(num_images, dtype=bool)
            selected[np.unique(np.linspace(0, num_images - 1, max_images).round().astype(int))] = (
                True
            )
        return cls(num_images, world_size, rank, selected, max_images)

    @property
    def capacity(self) -> int | None:
        """How many rows this process keeps (None when the dataset has no length)."""
        if self.num_images is None:
            return None
        padded = math.ceil(self.num_images / self.world_size) * self.world_size
        positions = np.arange(self.rank, padded, self.world_size)
        return int(self.keep(torch.from_numpy(positions)).sum())

    @property
    def recorded_images(self) -> int | None:
        """How many images of the dataset all processes together record."""
        if self.num_images is None:
            return None
        return self.num_images if self.selected is None else int(self.selected.sum())

    def positions(self, local_start: int, count: int) -> torch.Tensor:
        """Dataset positions of this process's rows ``local_start .. local_start + count``."""
        local = torch.arange(local_start, local_start + count, dtype=torch.int64)
        return local * self.world_size + self.rank

    def keep(self, positions: torch.Tensor) -> torch.Tensor:
        """Which of ``positions`` are recorded: real images (not padding), in the subset."""
        if self.num_images is None:
            if self.max_images is None:
                return torch.ones_like(positions, dtype=torch.bool)
            return positions < self.max_images
        keep = positions < self.num_images
        if self.selected is not None:
            keep &= torch.from_numpy(self.selected)[positions.clamp(max=self.num_images - 1)]
        return keep


class DatasetBuffer:
    """The rows one process records for one dataset.

    With a known ``capacity`` the arrays are allocated once, at the first batch; for
    datasets without a length they grow batch by batch.
    """

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self._count = 0
        self._chunks: list[Rows] = []
        self._rows: Rows | None = None

    def __len__(self) -> int:
        return self._count

    def append(
        self,
        positions: torch.Tensor,
        acts: dict[str, torch.Tensor],
        labels: torch.Tensor,
        preds: torch.Tensor,
        thumbs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        logit_scores: torch.Tensor | None = None,
    ) -> None:
        n = len(positions)
        if n == 0:
            return
        batch = Rows(
            positions.to(torch.int64),
            {layer: a.to(torch.float16) for layer, a in acts.items()},
            labels.to(torch.int64),
            preds.to(torch.int64),
            thumbs,
            None if logits is None else logits.to(torch.float32),
            None if logit_scores is None else logit_scores.to(torch.float32),
        )
        if self.capacity is None:
            self._chunks.append(batch)
        else:
            if self._rows is None:
                self._rows = _allocate(batch, self.capacity)
            if self._count + n > self.capacity:
                raise RuntimeError(
                    f"DeephysCallback: the dataloader yielded more than the {self.capacity} "
                    "images its dataset length announced"
                )
            _copy_into(self._rows, batch, self._count)
        self._count += n

    def rows(self) -> Rows:
        """The recorded rows, in the order they arrived."""
        if self.capacity is None:
            return _concat(self._chunks)
        if self._rows is None:
            raise RuntimeError("DeephysCallback: no rows were recorded for this dataset")
        return _slice(self._rows, self._count)


def _allocate(like: Rows, capacity: int) -> Rows:
    def empty(t: torch.Tensor) -> torch.Tensor:
        return torch.empty((capacity, *t.shape[1:]), dtype=t.dtype)

    return Rows(
        empty(like.positions),
        {layer: empty(a) for layer, a in like.acts.items()},
        empty(like.labels),
        empty(like.preds),
        None if like.thumbs is None else empty(like.thumbs),
        None if like.logits is None else empty(like.logits),
        None if like.logit_scores is None else empty(like.logit_scores),
    )


def _copy_into(rows: Rows, batch: Rows, start: int) -> None:
    end = start + len(batch.positions)
    rows.positions[start:end] = batch.positions
    for layer, a in batch.acts.items():
        rows.acts[layer][start:end] = a
    rows.labels[start:end] = batch.labels
    rows.preds[start:end] = batch.preds
    if rows.thumbs is not None and batch.thumbs is not None:
        rows.thumbs[start:end] = batch.thumbs
    if rows.logits is not None and batch.logits is not None:
        rows.logits[start:end] = batch.logits
    if rows.logit_scores is not None and batch.logit_scores is not None:
        rows.logit_scores[start:end] = batch.logit_scores


def _slice(rows: Rows, n: int) -> Rows:
    return Rows(
        rows.positions[:n],
        {layer: a[:n] for layer, a in rows.acts.items()},
        rows.labels[:n],
        rows.preds[:n],
        None if rows.thumbs is None else rows.thumbs[:n],
        None if rows.logits is None else rows.logits[:n],
        None if rows.logit_scores is None else rows.logit_scores[:n],
    )


def _concat(chunks: list[Rows]) -> Rows:
    if not chunks:
        raise RuntimeError("DeephysCallback: no rows were recorded for this dataset")
    return Rows(
        torch.cat([c.positions for c in chunks]),
        {layer: torch.cat([c.acts[layer] for c in chunks]) for layer in chunks[0].acts},
        torch.cat([c.labels for c in chunks]),
        torch.cat([c.preds for c in chunks]),
        None if chunks[0].thumbs is None else torch.cat([c.thumbs for c in chunks]),
        None if chunks[0].logits is None else torch.cat([c.logits for c in chunks]),
        None if chunks[0].logit_scores is None else torch.cat([c.logit_scores for c in chunks]),
    )


AllGather = Callable[[torch.Tensor], torch.Tensor]
Broadcast = Callable[[object, int], object]


def gather_rows(
    rows: Rows | None, all_gather: AllGather, broadcast: Broadcast, world_size: int
) -> Rows | None:
    """Every process's rows, in dataset order (call on every process, in step).

    ``all_gather`` maps a tensor of identical shape on every process to the stacked
    ``[world_size, ...]`` tensor and ``broadcast(obj, src)`` sends a Python object
    from process ``src`` to all, as ``trainer.strategy`` does. Row counts may differ,
    down to none on a process: rows are padded to the largest count, the padding
    dropped. Returns None when no process has rows.
    """
    if world_size == 1:
        return None if rows is None else rows.sorted()
    count = 0 if rows is None else len(rows.positions)
    counts = all_gather(torch.tensor([count], dtype=torch.int64)).reshape(-1).cpu()
    if int(counts.max()) == 0:
        return None
    # A process without rows learns the trailing shapes from the first one with rows.
    source = int(torch.nonzero(counts)[0])
    layout = broadcast(None if rows is None or count == 0 else _layout(rows), source)
    if rows is None or count == 0:
        rows = _empty_like(layout)
    width = int(counts.max())

    def gathered(t: torch.Tensor) -> torch.Tensor:
        padded = torch.zeros((width, *t.shape[1:]), dtype=t.dtype)
        padded[: len(t)] = t
        stacked = all_gather(padded).cpu()
        return torch.cat([stacked[r, : int(counts[r])] for r in range(world_size)])

    return Rows(
        positions=gathered(rows.positions),
        acts={layer: gathered(a) for layer, a in rows.acts.items()},
        labels=gathered(rows.labels),
        preds=gathered(rows.preds),
        thumbs=None if rows.thumbs is None else gathered(rows.thumbs),
        logits=None if rows.logits is None else gathered(rows.logits),
        logit_scores=None if rows.logit_scores is None else gathered(rows.logit_scores),
    ).sorted()


def _layout(rows: Rows) -> dict:
    return {
        "acts": {layer: (tuple(a.shape[1:]), a.dtype) for layer, a in rows.acts.items()},
        "thumbs": None if rows.thumbs is None else tuple(rows.thumbs.shape[1:]),
        "logits": None if rows.logits is None else tuple(rows.logits.shape[1:]),
        "logit_scores": None if rows.logit_scores is None else tuple(rows.logit_scores.shape[1:]),
    }


def _empty_like(layout: dict) -> Rows:
    empty = torch.empty(0, dtype=torch.int64)
    return Rows(
        positions=empty,
        acts={
            layer: torch.empty((0, *shape), dtype=dtype)
            for layer, (shape, dtype) in layout["acts"].items()
        },
        labels=empty,
        preds=empty,
        thumbs=None
        if layout["thumbs"] is None
        else torch.empty((0, *layout["thumbs"]), dtype=torch.uint8),
        logits=None
        if layout["logits"] is None
        else torch.empty((0, *layout["logits"]), dtype=torch.float32),
        logit_scores=None
        if layout.get("logit_scores") is None
        else torch.empty((0, *layout["logit_scores"]), dtype=torch.float32),
    )
