"""Where a neuron fires: each neuron's map over the spatial or token dims of its layer,
kept for its top images only, with a running top-k on the recording device.

A layer recorded with ``reduction="auto"`` whose output has maps ``(B, C, H, W)`` or
tokens ``(B, T, C)`` is recorded as one mean per neuron; this module keeps, beside
it, the neuron's map itself for the images that rank highest: after the same ReLU,
average-pooled to at most 7 x 7 cells (a map already smaller stays as it is),
float16. Tokens that are a square grid, ``T = s * s`` or ``T = 1 + s * s`` (a
leading class token, left out of the map), are drawn where they are: ``s x s``
cells pooled as a spatial map; other token sequences stay a strip of at most 49
positions. Torch only, no Lightning.

- :func:`token_grid`: the side of a token sequence's square grid and the leading
  tokens left out, or None.

- :func:`pooled_maps`: a rectified layer output -> maps ``[B, M, h, w]``.
- :func:`ranking_keys`: float16 activations -> int64 keys that order images exactly
  as ``deephys_lightning.metrics.top_k`` orders the written top images.
- :class:`RunningTopMaps`: one dataset and layer's top-k keys and maps, merged batch
  by batch on the device with no host synchronisation.
- ``recording.gather.gather_top_maps`` merges every process's running top-k.
- :func:`top_image_maps`: at write time, the maps of the written top images, checked
  against ``top_indices``.

Example::

    >>> import torch
    >>> out = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    >>> pooled_maps(out).shape          # a map of 4 x 4 stays as it is
    torch.Size([2, 3, 4, 4])
    >>> state = RunningTopMaps.empty(neurons=3, k=1, map_shape=(4, 4), device="cpu")
    >>> acts = out.mean(dim=(2, 3)).half()
    >>> state.update(acts, torch.tensor([0, 1]), None, pooled_maps(out))
    >>> state.to_host().positions.tolist()     # image 1 is every neuron's top image
    [[1], [1], [1]]
    >>> tokens = torch.rand(2, 1 + 16, 3)          # a class token and 4 x 4 patches
    >>> token_grid(17), pooled_maps(tokens).shape
    ((4, 1), torch.Size([2, 3, 4, 4]))
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

MAX_SIDE = 7  # a map is pooled to at most MAX_SIDE x MAX_SIDE cells
MAX_TOKENS = MAX_SIDE * MAX_SIDE  # tokens to at most this many positions

# The high 32 bits of a key: a float16 activation's bits made to order as the values
# do (-32768..32767 for numbers), then, below every number, NaN (ranked last, as
# metrics.top_k does), images that are left out of the record (a negative label) and
# the empty slots of a running top-k that has seen fewer than k images.
_NAN = -32769
_LEFT_OUT = -32770
_EMPTY = -32771
_LOW_BITS = 0xFFFFFFFF  # the low 32 bits: the image's dataset position, reversed


def has_maps(output: torch.Tensor) -> bool:
    """Whether a layer output has maps ``(B, C, H, W)`` or tokens ``(B, T, C)``."""
    return output.ndim in (3, 4)


def token_grid(tokens: int) -> tuple[int, int] | None:
    """``(s, skip)`` where ``tokens`` positions are a square grid of ``s x s`` after
    ``skip`` leading tokens: ``T = s * s`` (``skip = 0``; ``T = 1`` is a grid of one)
    or ``T = 1 + s * s`` with ``s >= 2`` (a leading class token, ``skip = 1``); None
    for any other ``T`` (drawn as a strip)."""
    side = math.isqrt(tokens)
    if tokens > 0 and side * side == tokens:
        return side, 0
    side = math.isqrt(max(tokens - 1, 0))
    if side >= 2 and side * side == tokens - 1:
        return side, 1
    return None


def map_shape(output: torch.Tensor) -> tuple[int, int]:
    """The shape ``(h, w)`` a layer output's maps are pooled to: at most 7 x 7
    (``(B, C, H, W)``, and tokens ``(B, T, C)`` that are a square grid:
    :func:`token_grid`), or ``(1, t)`` with at most 49 positions (other tokens)."""
    if output.ndim == 4:
        return min(output.shape[2], MAX_SIDE), min(output.shape[3], MAX_SIDE)
    grid = token_grid(output.shape[1])
    if grid is not None:
        side = min(grid[0], MAX_SIDE)
        return side, side
    return 1, min(output.shape[1], MAX_TOKENS)


def pooled_maps(rectified: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """``[B, M, h, w]``: each neuron's map of a (rectified, float) layer output
    ``(B, C, H, W)`` or ``(B, T, C)``, average-pooled to ``shape`` (default
    :func:`map_shape`) on the output's device; tokens that are a square grid
    (:func:`token_grid`, its leading class token left out) as the ``s x s`` map they
    are, other tokens give ``h = 1``. In the output's dtype (a view of it where no
    pooling is needed): :class:`RunningTopMaps` turns only the maps it keeps into
    float16, not a whole batch's. Shapes only are read: no host synchronisation."""
    if shape is None:
        shape = map_shape(rectified)
    height, width = shape
    grid = token_grid(rectified.shape[1]) if rectified.ndim == 3 else None
    if rectified.ndim == 4 or grid is not None:
        maps = rectified
        if grid is not None:  # (B, skip + s s, C) -> a view (B, C, s, s), row by row
            side, skip = grid
            maps = rectified[:, skip:].unflatten(1, (side, side)).permute(0, 3, 1, 2)
        if tuple(maps.shape[2:]) != (height, width):
            maps = F.adaptive_avg_pool2d(maps, (height, width))
    else:
        tokens = rectified.transpose(1, 2)  # (B, C, T)
        if height != 1:
            raise ValueError(f"tokens that are no square grid are pooled to (1, t), not {shape}")
        if tokens.shape[2] != width:
            tokens = F.adaptive_avg_pool1d(tokens, width)
        maps = tokens.unsqueeze(2)
    return maps


def ranking_keys(
    acts: torch.Tensor, positions: torch.Tensor, labelled: torch.Tensor | None = None
) -> torch.Tensor:
    """int64 ``[M, n]``: one key per neuron and image that orders the images exactly
    as the written top images are ordered (``metrics.top_k`` on the float16
    activations): highest first, equal values (``-0.0`` equals ``0.0``) to the lower
    dataset position, NaN last; images not ``labelled`` below every other.

    ``acts`` are float16 ``[n, M]``, ``positions`` int64 ``[n]`` (each below 2**32),
    ``labelled`` bool ``[n]`` or None, all on one device; no value is read back.
    """
    values = acts.t().to(torch.float16) + 0.0  # -0.0 becomes +0.0
    bits = values.contiguous().view(torch.int16).to(torch.int64)
    order = torch.where(bits < 0, bits ^ 0x7FFF, bits)  # negative: magnitude flipped
    order = torch.where(torch.isnan(values), _NAN, order)
    if labelled is not None:
        order = torch.where(labelled.reshape(1, -1), order, _LEFT_OUT)
    reversed_position = _LOW_BITS - positions.to(torch.int64).reshape(1, -1)
    return (order << 32) | reversed_position


def positions_of(keys: torch.Tensor) -> torch.Tensor:
    """The dataset positions that :func:`ranking_keys` packed into ``keys``."""
    return _LOW_BITS - (keys & _LOW_BITS)


@dataclasses.dataclass
class RunningTopMaps:
    """One dataset and layer's top-k images per neuron so far, on the recording device:
    their keys int64 ``[M, k]`` (:func:`ranking_keys`, best first) and maps float16
    ``[M, k, h * w]``."""

    keys: torch.Tensor
    maps: torch.Tensor
    map_shape: tuple[int, int]

    @classmethod
    def empty(
        cls, neurons: int, k: int, map_shape: tuple[int, int], device: torch.device | str
    ) -> RunningTopMaps:
        keys = torch.full((neurons, k), _EMPTY << 32, dtype=torch.int64, device=device)
        cells = math.prod(map_shape)
        maps = torch.zeros((neurons, k, cells), dtype=torch.float16, device=device)
        height, width = map_shape
        return cls(keys, maps, (height, width))

    @property
    def k(self) -> int:
        return self.keys.shape[1]

    def update(
        self,
        acts: torch.Tensor,
        positions: torch.Tensor,
        labelled: torch.Tensor | None,
        maps: torch.Tensor,
    ) -> None:
        """Merge a batch's kept rows: float16 activations ``[n, M]``, their dataset
        positions ``[n]``, which are labelled (None: all) and their maps
        ``[n, M, h, w]`` (float; those kept become float16), on the device of this
        state (no host synchronisation)."""
        if len(acts) == 0:
            return
        candidates = torch.cat([self.keys, ranking_keys(acts, positions, labelled)], dim=1)
        self.keys, chosen = torch.topk(candidates, self.k, dim=1)
        self.maps = _take(self.maps, maps.reshape(maps.shape[0], maps.shape[1], -1), chosen)

    def layout(self) -> tuple[int, int, tuple[int, int]]:
        """(neurons, k, map shape): what a process without rows needs to take part."""
        return self.keys.shape[0], self.k, self.map_shape

    def to_host(self) -> TopMaps:
        return TopMaps(
            positions=positions_of(self.keys).cpu().numpy(),
            maps=self.maps.cpu().reshape(*self.keys.shape, *self.map_shape).numpy(),
        )


def _take(kept: torch.Tensor, batch: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``[M, k, S]``: for each neuron ``j``, the maps ``chosen[j]`` of the kept ones
    (``kept``, ``[M, k1, S]``: indices below ``k1``) followed by the batch's (``batch``,
    ``[n, M, S]``: index ``k1 + i`` is image ``i``), without joining them (rows picked
    with ``index_select``: ten times faster than ``gather`` on a CPU)."""
    neurons, k1, cells = kept.shape
    n = batch.shape[0]
    neuron = torch.arange(neurons, device=chosen.device).unsqueeze(1)
    mine = neuron * k1 + chosen.clamp(max=k1 - 1)
    theirs = (chosen - k1).clamp(min=0, max=n - 1) * neurons + neuron
    a = kept.reshape(neurons * k1, cells).index_select(0, mine.reshape(-1))
    b = batch.reshape(n * neurons, cells).index_select(0, theirs.reshape(-1)).to(kept.dtype)
    return torch.where((chosen < k1).reshape(-1, 1), a, b).reshape(neurons, -1, cells)


@dataclasses.dataclass(frozen=True)
class TopMaps:
    """A dataset and layer's top images per neuron on the host, best first: their
    dataset positions int64 ``[M, k]`` and maps float16 ``[M, k, h, w]`` (slots beyond
    the recorded images hold no image)."""

    positions: np.ndarray
    maps: np.ndarray


def top_image_maps(
    found: TopMaps,
    positions: np.ndarray,
    top_indices: np.ndarray,
    *,
    layer: str,
    dataset: str,
) -> np.ndarray:
    """float16 ``[M, k', h, w]``: the maps of the first ``k'`` written top images
    ``top_indices`` (``[M, k]``, image indices into the recorded images, whose dataset
    positions are ``positions``), ``k'`` the images per neuron ``found`` kept maps of
    (at most ``metadata.MAPPED_IMAGES``) or fewer where the set is smaller.

    Raises:
        ValueError: the running top-k kept other images than ``top_indices`` (it must
            rank exactly as ``metrics.top_k`` does); nothing wrong is written.
    """
    neurons = top_indices.shape[0]
    k = min(top_indices.shape[1], found.positions.shape[1])
    top_indices = top_indices[:, :k]
    same = found.positions.shape[0] == neurons
    if same and k > 0:
        kept = found.positions[:, :k]
        order = np.argsort(positions, kind="stable")
        ordered = np.asarray(positions, dtype=np.int64)[order]
        rows = np.clip(np.searchsorted(ordered, kept), 0, len(ordered) - 1)
        same = bool((ordered[rows] == kept).all()) and bool((order[rows] == top_indices).all())
    if not same:
        raise ValueError(
            f"DeephysCallback: the maps kept for layer {layer!r} on {dataset!r} belong to "
            f"other images than its top images (top_indices {list(top_indices.shape)}, "
            f"maps of {list(found.positions.shape)} images); they are not written. "
            "Please report this; spatial_maps=False records without them."
        )
    return np.ascontiguousarray(found.maps[:, :k])
