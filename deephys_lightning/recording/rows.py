"""One container for everything recorded per image, and the buffer that fills it.

:class:`Rows` holds named columns of one length (an image per row): its position in
the dataset, its label and prediction, its most probable classes with their
probabilities, one column per recorded layer, and, where recorded, its thumbnail,
classifier outputs, logit detector scores and input fingerprint. Every operation
(select, sort, move, concatenate, gather) applies to all columns alike, so adding a
per-image field is one name, not nine edits.

:class:`RowBuffer` collects a dataset's rows during an epoch where they are
produced, on the recording device: storage is allocated once, at the first batch,
for the rows the dataset announces, and each batch is copied into its slots with
``non_blocking`` copies, so the per-batch path never waits for the device. Columns
beyond the epoch's :class:`DeviceBudget` (shared by all datasets), and thumbnails
always, live in pinned host memory instead, filled with non-blocking copies.

Example::

    >>> import torch
    >>> buffer = RowBuffer(capacity=4)
    >>> buffer.append(Rows({POSITIONS: torch.tensor([2, 0]), "act:fc": torch.ones(2, 3)}))
    >>> rows = buffer.rows().sorted()
    >>> rows.positions.tolist(), rows.acts["fc"].shape
    ([0, 2], torch.Size([2, 3]))
"""

from __future__ import annotations

import dataclasses
import math

import torch

POSITIONS = "positions"  # int64 [n]: the image's index in its dataset
LABELS = "labels"  # int64 [n]: ground truth (negative: an ignore value, left out at the end)
PREDS = "preds"  # int64 [n]: arg-max of the classifier outputs
THUMBS = "thumbs"  # uint8 [n, h, w, 3]
LOGITS = "logits"  # float32 [n, C] classifier outputs
LOGIT_SCORES = "logit_scores"  # float32 [n, 3] the logit OOD detectors' scores
FINGERPRINTS = "fingerprints"  # float32 [n]: a projection of the input (did the data change?)
TOP_CLASSES = "top_classes"  # int32 [n, k]: the k most probable classes, most probable first
TOP_PROBABILITIES = "top_probabilities"  # float32 [n, k]: their softmax probabilities
ACT_PREFIX = "act:"  # + layer name: float16 [n, M] activations
# uint8 [n] whether the image's logits are finite, else why not (recording.finiteness)
LEFT_OUT = "left_out"
LEFT_OUT_PREFIX = "left_out:"  # + layer name: uint8 [n] the same for its activations

DEFAULT_MAX_DEVICE_BYTES = 4 * 1024**3


def act_column(layer: str) -> str:
    """The column name of a layer's activations."""
    return ACT_PREFIX + layer


def left_out_column(layer: str) -> str:
    """The column name of a layer's per-image statuses (``recording.finiteness``)."""
    return LEFT_OUT_PREFIX + layer


@dataclasses.dataclass
class Rows:
    """Recorded rows of one dataset: named columns of equal length."""

    columns: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        lengths = {name: len(column) for name, column in self.columns.items()}
        if POSITIONS not in lengths or len(set(lengths.values())) > 1:
            raise ValueError(f"rows need a positions column and equal lengths, got {lengths}")

    def __len__(self) -> int:
        return len(self.columns[POSITIONS])

    def get(self, name: str) -> torch.Tensor | None:
        return self.columns.get(name)

    @property
    def positions(self) -> torch.Tensor:
        return self.columns[POSITIONS]

    @property
    def labels(self) -> torch.Tensor:
        return self.columns[LABELS]

    @property
    def preds(self) -> torch.Tensor:
        return self.columns[PREDS]

    @property
    def thumbs(self) -> torch.Tensor | None:
        return self.columns.get(THUMBS)

    @property
    def logits(self) -> torch.Tensor | None:
        return self.columns.get(LOGITS)

    @property
    def logit_scores(self) -> torch.Tensor | None:
        return self.columns.get(LOGIT_SCORES)

    @property
    def top_classes(self) -> torch.Tensor | None:
        return self.columns.get(TOP_CLASSES)

    @property
    def top_probabilities(self) -> torch.Tensor | None:
        return self.columns.get(TOP_PROBABILITIES)

    @property
    def left_out(self) -> torch.Tensor | None:
        """uint8 ``[n]`` each image's prediction status (``recording.finiteness``)."""
        return self.columns.get(LEFT_OUT)

    @property
    def layer_left_out(self) -> dict[str, torch.Tensor]:
        """Layer name -> uint8 ``[n]`` each image's status on that layer."""
        return {
            name[len(LEFT_OUT_PREFIX) :]: column
            for name, column in self.columns.items()
            if name.startswith(LEFT_OUT_PREFIX)
        }

    @property
    def acts(self) -> dict[str, torch.Tensor]:
        """Layer name -> float16 ``[n, M]`` activations."""
        return {
            name[len(ACT_PREFIX) :]: column
            for name, column in self.columns.items()
            if name.startswith(ACT_PREFIX)
        }

    def map(self, transform) -> Rows:
        """The rows with ``transform`` applied to every column."""
        return Rows({name: transform(column) for name, column in self.columns.items()})

    def map_named(self, transform) -> Rows:
        """The rows with ``transform(name, column)`` applied to every column."""
        return Rows({name: transform(name, column) for name, column in self.columns.items()})

    def select(self, names: list[str]) -> Rows:
        """Only the columns ``names`` (positions always)."""
        keep = {POSITIONS, *names}
        return Rows({name: c for name, c in self.columns.items() if name in keep})

    def without(self, name: str) -> Rows:
        return Rows({n: c for n, c in self.columns.items() if n != name})

    def with_column(self, name: str, column: torch.Tensor) -> Rows:
        return Rows({**self.columns, name: column})

    def take(self, index: torch.Tensor) -> Rows:
        """The rows at ``index`` (an integer tensor; each column takes them on its own
        device)."""
        return self.map(lambda column: column.index_select(0, index.to(column.device)))

    def head(self, count: int) -> Rows:
        return self.map(lambda column: column[:count])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Rows:
        return self.map(lambda column: column.to(device, non_blocking=non_blocking))

    def sorted(self) -> Rows:
        """The same rows in dataset order."""
        return Rows.sorted_from(dict(self.columns))

    @staticmethod
    def sorted_from(columns: dict[str, torch.Tensor]) -> Rows:
        """The rows of ``columns`` in dataset order, each column replaced by its sorted
        copy one at a time (``columns`` is emptied): at most one column is held twice."""
        positions = columns[POSITIONS]
        if len(positions) < 2 or bool((positions[1:] > positions[:-1]).all()):
            return Rows(dict(columns))
        order = torch.argsort(positions)
        ordered = {}
        for name in list(columns):
            column = columns.pop(name)
            ordered[name] = column.index_select(0, order.to(column.device))
            del column
        return Rows(ordered)

    def row_bytes(self) -> int:
        """Bytes one row takes, over all columns."""
        return sum(
            column[0].numel() * column.element_size() if len(column) else 0
            for column in self.columns.values()
        )

    @staticmethod
    def cat(chunks: list[Rows]) -> Rows:
        """The rows of ``chunks`` one after the other; a column is joined on the host when
        any of its chunks is there."""
        if not chunks:
            raise RuntimeError("DeephysCallback: no rows were recorded for this dataset")
        return Rows({name: _cat([c.columns[name] for c in chunks]) for name in chunks[0].columns})

    def layout(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Each column's trailing shape and dtype (to make empty rows of the same kind)."""
        return {name: (tuple(c.shape[1:]), c.dtype) for name, c in self.columns.items()}

    @staticmethod
    def empty(layout: dict[str, tuple[tuple[int, ...], torch.dtype]], device="cpu") -> Rows:
        return Rows(
            {
                name: torch.empty((0, *shape), dtype=dtype, device=device)
                for name, (shape, dtype) in layout.items()
            }
        )


class DeviceBudget:
    """How many bytes of an accelerator's memory the epoch's row storage may still take
    (one budget for all datasets of the epoch)."""

    def __init__(self, max_bytes: int) -> None:
        self.left = max_bytes

    def take(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit; if so they are counted as taken."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


class RowBuffer:
    """The rows one process records for one dataset during an epoch.

    With a known ``capacity`` the storage is allocated once, at the first batch, on
    that batch's device, column by column while ``budget`` allows (and the device has
    the memory); other columns, and the ``host_columns`` (thumbnails: the device only
    makes them), live in pinned host memory, filled with non-blocking copies. Without
    a capacity (a dataset without a length) the batches are kept as they come, on the
    device within the budget and on the host beyond it, and joined at the end.
    """

    def __init__(
        self,
        capacity: int | None,
        budget: DeviceBudget | None = None,
        host_columns: frozenset[str] = frozenset(),
    ) -> None:
        self.capacity = capacity
        self.budget = budget if budget is not None else DeviceBudget(DEFAULT_MAX_DEVICE_BYTES)
        self.host_columns = host_columns
        self._count = 0
        self._chunks: list[Rows] = []
        self._storage: Rows | None = None
        self._source: torch.device | None = None  # where the batches come from

    def __len__(self) -> int:
        return self._count

    @property
    def device(self) -> torch.device | None:
        """Where the rows' positions are kept (None before the first batch)."""
        if self._storage is not None:
            return self._storage.positions.device
        return self._chunks[0].positions.device if self._chunks else None

    def append(self, batch: Rows) -> None:
        n = len(batch)
        if n == 0:
            return
        if self._source is None:
            self._source = batch.positions.device
        cuda = self._source.type == "cuda"
        if self.capacity is None:
            self._chunks.append(
                batch.map_named(
                    lambda name, column: (
                        column if self._on_device(name, column.nbytes) else _to_host(column, cuda)
                    )
                )
            )
            self._count += n
            return
        if self._storage is None:
            self._storage = self._allocate(batch)
        if self._count + n > self.capacity:
            raise RuntimeError(
                f"DeephysCallback: the dataloader yielded more than the {self.capacity} "
                "images its dataset length announced"
            )
        start, end = self._count, self._count + n
        for name, column in batch.columns.items():
            self._storage.columns[name][start:end].copy_(column, non_blocking=cuda)
        self._count = end

    def _on_device(self, name: str, nbytes: int) -> bool:
        """Whether a column of ``nbytes`` stays on the (accelerator) device."""
        if self._source is None or self._source.type == "cpu":
            return True
        return name not in self.host_columns and self.budget.take(nbytes)

    def _allocate(self, like: Rows) -> Rows:
        device = like.positions.device
        pin = device.type == "cuda"

        def empty(name: str, column: torch.Tensor) -> torch.Tensor:
            shape = (self.capacity, *column.shape[1:])
            nbytes = math.prod(shape) * column.element_size()
            if self._on_device(name, nbytes):
                try:
                    return torch.empty(shape, dtype=column.dtype, device=device)
                except torch.OutOfMemoryError:
                    self.budget.left = 0  # the device is full: the rest goes to the host
            return torch.empty(shape, dtype=column.dtype, pin_memory=pin)

        return like.map_named(empty)

    def rows(self) -> Rows:
        """The recorded rows, in the order they arrived, where they are kept."""
        if self._source is not None and self._source.type == "cuda":
            torch.cuda.synchronize(self._source)  # the non-blocking copies to the host
        if self.capacity is None:
            return Rows.cat(self._chunks)
        if self._storage is None:
            raise RuntimeError("DeephysCallback: no rows were recorded for this dataset")
        return self._storage.head(self._count)


def _to_host(column: torch.Tensor, cuda: bool) -> torch.Tensor:
    """A copy of ``column`` in host memory, made without waiting (pinned, for CUDA)."""
    if not cuda:
        return column.to("cpu")
    host = torch.empty(column.shape, dtype=column.dtype, pin_memory=True)
    host.copy_(column, non_blocking=True)
    return host


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Join the parts of one column, on the host when any of them is there."""
    if any(p.device.type == "cpu" for p in parts):
        parts = [p.to("cpu") for p in parts]
    return torch.cat(parts)
