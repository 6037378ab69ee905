"""Which dataset positions one process sees and keeps during an evaluation epoch.

Example::

    >>> import torch
    >>> plan = SamplingPlan.for_rank(num_images=5, world_size=2, rank=1, max_images=None)
    >>> plan.positions(local_start=0, count=3).tolist()   # rank 1 of 2: 1, 3, then padding
    [1, 3, 5]
    >>> plan.keep(torch.tensor([1, 3, 5])).tolist()
    [True, True, False]
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from deephys_lightning.metrics import spread_subset


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
            selected[spread_subset(num_images, max_images)] = True
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
