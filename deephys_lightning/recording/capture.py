"""Turn what a validation batch produces into Deephys rows: torch only, no Lightning.

- :func:`reduce_activations`: a layer output -> one activation per neuron per image.
- :func:`split_batch`: a batch -> (inputs, labels).
- :func:`to_thumbnails`: model inputs -> displayable uint8 RGB images, on their device.
- :func:`input_fingerprints`: model inputs -> one number each, to notice changed data.
- :func:`top_predictions`: classifier outputs -> each image's most probable classes.

Example::

    >>> import torch
    >>> reduce_activations(torch.tensor([[[[-1.0, 3.0]]]])).tolist()  # (B=1, C=1, H=1, W=2)
    [[1.5]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

_INPUT_KEYS = ("image", "images", "input", "inputs", "x", "pixel_values")
_TARGET_KEYS = ("label", "labels", "target", "targets", "y")


OutputSelector = int | str | Callable[[Any], torch.Tensor]
Reduction = str | Callable[[torch.Tensor], torch.Tensor]


def select_output(output: Any, selector: OutputSelector | None, *, layer: str) -> torch.Tensor:
    """The tensor to record from a layer's output.

    Tuple/list outputs take ``output[selector]`` with an integer selector, dict outputs
    ``output[selector]`` with a key; a callable gets the whole output.
    """
    if selector is None:
        if isinstance(output, torch.Tensor):
            return output
        kind = type(output).__name__
        hint = f"keys {sorted(map(str, output))}" if isinstance(output, Mapping) else f"a {kind}"
        raise TypeError(
            f"DeephysCallback: the output of layer {layer!r} is {hint}, not a tensor. Pass "
            "output_selector= (an index, a key or a function) to say which tensor to record, "
            "or pick a module whose forward returns one tensor."
        )
    if callable(selector):
        selected = selector(output)
    else:
        try:
            selected = output[selector]
        except (KeyError, IndexError, TypeError) as error:
            raise TypeError(
                f"DeephysCallback: output_selector={selector!r} does not apply to the output of "
                f"layer {layer!r} ({type(output).__name__}): {error}"
            ) from None
    if not isinstance(selected, torch.Tensor):
        raise TypeError(
            f"DeephysCallback: output_selector={selector!r} picked a "
            f"{type(selected).__name__} from layer {layer!r}, not a tensor"
        )
    return selected


def reduce_activations(
    output: Any, *, relu: bool = True, reduction: Reduction = "auto", layer: str = "layer"
) -> torch.Tensor:
    """One activation per neuron per image: ReLU, then the mean over non-neuron dims.

    With ``reduction="auto"``: ``(B, M)`` is kept; ``(B, T, C)`` (tokens) is averaged
    over ``T``; ``(B, C, H, W)`` (and any higher rank) over every dim after ``C``.
    ``"none"`` accepts ``(B, M)`` only; a callable maps the (ReLU'd) output to ``(B, M)``.

    Returns:
        float32 tensor ``[B, M]`` (detached, on the output's device).
    """
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"DeephysCallback: the output of layer {layer!r} is a {type(output).__name__}, "
            "not a tensor. Pick a module whose forward returns one tensor (for example a "
            "Linear or Conv2d inside it), or pass output_selector=."
        )
    out = output.detach().float()
    if out.ndim < 2:
        raise ValueError(
            f"DeephysCallback: the output of layer {layer!r} has shape {tuple(out.shape)}; "
            "expected a batch of features (B, M), tokens (B, T, C) or maps (B, C, H, W)."
        )
    if relu:
        out = torch.relu(out)
    if callable(reduction):
        out = reduction(out)
    elif reduction == "none":
        if out.ndim != 2:
            raise ValueError(
                f"DeephysCallback(reduction='none') needs (B, M) outputs, but layer {layer!r} "
                f"gives shape {tuple(out.shape)}; use reduction='auto' or a function"
            )
    elif out.ndim == 3:
        out = out.mean(dim=1)
    elif out.ndim > 3:
        out = out.mean(dim=tuple(range(2, out.ndim)))
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != output.shape[0]:
        raise ValueError(
            f"DeephysCallback: the reduction of layer {layer!r} must give (B, M) with "
            f"B = {output.shape[0]}, got "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
        )
    return out


def split_batch(
    batch: Any, input_key: str | int | None = None, target_key: str | int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and integer labels of a ``(x, y, ...)`` or dict batch."""
    if isinstance(batch, Mapping):
        x = _pick(batch, input_key, _INPUT_KEYS, "input_key")
        y = _pick(batch, target_key, _TARGET_KEYS, "target_key")
    elif isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        in_index = 0 if input_key is None else input_key
        tg_index = 1 if target_key is None else target_key
        if not isinstance(in_index, int) or not isinstance(tg_index, int):
            raise TypeError(
                "DeephysCallback: the batch is a tuple/list, so input_key and target_key "
                f"must be integer positions, got {input_key!r} and {target_key!r}"
            )
        if len(batch) <= max(in_index, tg_index):
            raise ValueError(
                f"DeephysCallback needs labels: the batch has {len(batch)} element(s), "
                f"expected inputs at position {in_index} and labels at {tg_index}. "
                "Return (inputs, labels) from your validation datasets."
            )
        x, y = batch[in_index], batch[tg_index]
    else:
        raise TypeError(
            f"DeephysCallback needs labels: got a batch of type {type(batch).__name__}; "
            "expected a tuple (inputs, labels) or a dict with input and label keys."
        )
    return checked_inputs(x, y)


def batch_inputs(
    batch: Any,
    input_key: str | int | None = None,
    target_key: str | int | None = None,
    unpack_batch: Callable[[Any], tuple[Any, Any]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and integer labels of a batch: ``unpack_batch(batch)`` when given,
    else :func:`split_batch`; either way checked by :func:`checked_inputs`."""
    if unpack_batch is None:
        return split_batch(batch, input_key, target_key)
    x, y = unpack_batch(batch)
    return checked_inputs(x, y)


def checked_inputs(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` must be a tensor and ``y`` a 1-D integer tensor (or what becomes one)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"DeephysCallback: batch inputs must be a tensor, got {type(x).__name__}")
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(
            "DeephysCallback: labels must be a 1-D integer tensor of class indices, got "
            f"dtype {y.dtype} and shape {tuple(y.shape)}"
        )
    return x, y


def _pick(batch: Mapping, key: Any, defaults: Sequence[str], param: str) -> Any:
    if key is not None:
        if key not in batch:
            raise KeyError(
                f"DeephysCallback: {param}={key!r} is not in the batch; its keys are "
                f"{sorted(map(str, batch))}"
            )
        return batch[key]
    for name in defaults:
        if name in batch:
            return batch[name]
    raise KeyError(
        f"DeephysCallback could not find {'inputs' if param == 'input_key' else 'labels'} "
        f"in a dict batch with keys {sorted(map(str, batch))}; pass {param}= with the "
        "right key."
    )


Denormalize = tuple[Sequence[float], Sequence[float]] | Callable[[torch.Tensor], torch.Tensor]


def denormalize_inputs(inputs: torch.Tensor, denormalize: Denormalize | None) -> torch.Tensor:
    """Undo the input normalisation: ``x * std + mean`` per channel, or a callable."""
    if denormalize is None:
        return inputs
    if callable(denormalize):
        return denormalize(inputs)
    mean, std = denormalize
    x = inputs.detach().float()
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean_t = _constant(mean, x.device).reshape(shape)
    std_t = _constant(std, x.device).reshape(shape)
    if x.ndim < 2 or mean_t.numel() not in (1, x.shape[1]) or std_t.numel() != mean_t.numel():
        raise ValueError(
            f"DeephysCallback(denormalize=(mean, std)): {mean_t.numel()} means and "
            f"{std_t.numel()} stds do not fit inputs of shape {tuple(x.shape)}"
        )
    return x * std_t + mean_t


def to_thumbnails(
    inputs: torch.Tensor, size: int, shape: tuple[int, int] | None = None
) -> torch.Tensor:
    """uint8 RGB thumbnails ``(B, h, w, 3)`` of image inputs ``(B, C, H, W)``, made on
    the inputs' device (only the small thumbnails ever cross to the host).

    Integer inputs are taken as 0..255; a float image within [0, 1] is scaled by 255,
    any other float image is min-max scaled on its own (decided per image on the
    device: no value is read back). One channel is repeated to three; images whose
    longer side exceeds ``size`` are resized down, keeping their aspect ratio, or to
    ``shape`` when given (so that all thumbnails of a dataset share one shape).
    """
    x = inputs.detach()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise ValueError(
            "DeephysCallback: thumbnails need image inputs (B, C, H, W) with 1 or 3 "
            f"channels, got shape {tuple(x.shape)}; pass thumbnails=False to record "
            "without them, or denormalize= a function that returns images"
        )
    integer = not x.dtype.is_floating_point
    x = x[:, :3]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    height, width = x.shape[-2:]
    if shape is None:
        shape = (height, width)
        if max(height, width) > size:
            ratio = size / max(height, width)
            shape = (max(1, round(height * ratio)), max(1, round(width * ratio)))
    if x.shape[0] == 0:
        return torch.empty((0, *shape, 3), dtype=torch.uint8, device=x.device)
    x = x.float()
    # Each image's pixels become (x - shift) * scale in 0..255: one fused pass after
    # the resize (fewer pixels), with the range taken from the image as given.
    scale: torch.Tensor | None = None  # integer images are 0..255 already
    shift: torch.Tensor | None = None
    if not integer:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)  # torch.aminmax(dim=) is 10x slower here
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        outside = (lo < 0) | (hi > 1)
        scale = torch.where(outside, 255.0 / (hi - lo).clamp_min(1e-12), 255.0)
        shift = torch.where(outside, lo, 0.0)
    if tuple(shape) != (height, width):
        antialias = shape[0] < height or shape[1] < width
        x = F.interpolate(x, size=shape, mode="bilinear", antialias=antialias, align_corners=False)
    # Written straight into (B, h, w, 3) order: one pass, not a pass and a transpose.
    pixels = torch.empty((x.shape[0], *shape, 3), dtype=torch.float32, device=x.device)
    if scale is None or shift is None:
        pixels.permute(0, 3, 1, 2).copy_(x)
    else:
        torch.addcmul(-shift * scale, x, scale, out=pixels.permute(0, 3, 1, 2))
    return pixels.clamp_(0, 255).round_().to(torch.uint8)


def input_fingerprints(inputs: torch.Tensor) -> torch.Tensor:
    """float32 ``[B]``: each input projected on a fixed pseudo-random direction, on the
    inputs' device. Equal inputs give equal fingerprints, so comparing an epoch's with
    the last one's tells whether the data (and so the thumbnails) may have changed."""
    x = inputs.detach().flatten(1).float()
    return x @ _direction(x.shape[1], x.device)


def top_predictions(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``min(k, C)`` most probable classes, int32 ``[B, k]``, most probable
    first, and their softmax probabilities, float32 ``[B, k]``, from the classifier
    outputs ``[B, C]`` (16-bit ones upcast first), on their device, with no host
    synchronisation.

    Classes are ranked by logit, which orders them as their probabilities do and
    also where two probabilities round to one float32; equal logits by class, the
    lower first (``torch.topk`` leaves ties unspecified). So the first class is the
    arg-max, the prediction. NaN ranks above every number.

    Example::

        >>> classes, probabilities = top_predictions(torch.tensor([[0.0, 2.0, 2.0]]), k=2)
        >>> classes.tolist(), [round(p, 3) for p in probabilities[0].tolist()]
        ([[1, 2]], [0.468, 0.468])
    """
    logits = logits.detach().float()
    logits = logits.flatten(1) if logits.ndim > 1 else logits[:, None]
    num_classes = logits.shape[1]
    # One top-k over unique int64 keys (on a CPU core, 5 ms for 256 x 1,000 logits:
    # five times torch.topk on the floats, a third of a stable sort): the high 32 bits
    # are the logit's bits made to order as the values do (negative floats' magnitude
    # bits flipped; -0.0 made +0.0; NaN as +inf), the low 32 bits the class, reversed
    # (the lower class wins).
    ranked = torch.nan_to_num(logits, nan=math.inf, posinf=math.inf, neginf=-math.inf) + 0.0
    bits = ranked.view(torch.int32)
    order = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    reversed_class = torch.arange(num_classes - 1, -1, -1, device=logits.device)
    keys = torch.topk((order << 32) | reversed_class, min(k, num_classes), dim=1).values
    classes = (num_classes - 1) - (keys & 0xFFFFFFFF)
    probabilities = torch.gather(torch.softmax(logits, dim=1), 1, classes)
    return classes.to(torch.int32), probabilities


_DIRECTIONS: dict[tuple[int, str], torch.Tensor] = {}
_CONSTANTS: dict[tuple[tuple[float, ...], str], torch.Tensor] = {}
_CACHED = 16  # entries per cache: enough for a run's input sizes and devices


def _constant(values: Any, device: torch.device) -> torch.Tensor:
    """float32 ``values`` on ``device``, copied there once (the first batch, in the sanity
    check), not on every batch: a copy from host memory would wait for the device."""
    flat = tuple(float(v) for v in torch.as_tensor(values, dtype=torch.float64).reshape(-1))
    key = (flat, str(device))
    if key not in _CONSTANTS:
        if len(_CONSTANTS) >= _CACHED:
            _CONSTANTS.clear()
        _CONSTANTS[key] = torch.tensor(flat, dtype=torch.float32, device=device)
    return _CONSTANTS[key]


def _direction(length: int, device: torch.device) -> torch.Tensor:
    key = (length, str(device))
    if key not in _DIRECTIONS:  # drawn on the device itself: no copy to wait for
        if len(_DIRECTIONS) >= _CACHED:
            _DIRECTIONS.clear()
        generator = torch.Generator(device=device).manual_seed(length)
        direction = torch.rand(length, generator=generator, device=device)
        _DIRECTIONS[key] = direction + 0.5  # no component near 0
    return _DIRECTIONS[key]
