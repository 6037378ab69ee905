"""Export a recorded step to the original Deephys app's ``.model`` and ``.test`` files.

The Deephys desktop app (https://deephys.org) opens one ``.model`` file (the layers
and their sizes) and one ``.test`` file per dataset (class names, and per image its
pixels, label and the activations of every layer). Both are CBOR with the structure,
field names and value conventions of the ``deephys`` package (0.14) that the app's
authors publish: activations as big-endian float32 byte strings, pixels as one byte
string per row of each RGB channel, the classification layer last. The app takes
each image's prediction from the classification layer, so the export needs the
classifier outputs: ``DeephysCallback`` records them with the full activation
matrix (or always with ``record_logits=True``).

Example::

    from deephys_lightning.export import export_step

    files = export_step("lightning_logs/mnist/version_0", "deephys_files")
    files.model        # deephys_files/mnist_version_0.model
    files.tests        # {"mnist": deephys_files/mnist.test, "permuted": ...}

From the shell: ``deephys-lightning export lightning_logs/version_0 deephys_files``.
The arrays can also be written directly with :func:`write_model` and
:func:`write_test`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from deephys_lightning import cbor
from tensorboard_plugin_deephys.log import storage
from tensorboard_plugin_deephys.log.metadata import Kind, Record, tag_name

# The app's limits, as the deephys package checks them.
MAX_NAME_LENGTH = 40  # model and dataset names
MAX_LAYER_NAME_LENGTH = 30
DTYPES = {"float32": ">f4", "float64": ">f8"}
# The name the classifier outputs get as the model's classification layer.
CLASSIFICATION_LAYER = "logits"


class ExportError(ValueError):
    """The data cannot be written as Deephys files; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class DeephysModel:
    """A model as the Deephys app sees it: named layers and their neuron counts.

    Args:
        name: the model's name (at most 40 characters).
        layers: layer name -> number of neurons, in order; the classification layer
            is one of them, with one neuron per class.
        classification_layer: the layer whose arg-max is the prediction.

    Example::

        >>> DeephysModel("cnn", {"fc1": 50, "logits": 10}, "logits").layers["fc1"]
        50
    """

    name: str
    layers: Mapping[str, int]
    classification_layer: str

    def __post_init__(self) -> None:
        _check_name("model name", self.name, MAX_NAME_LENGTH)
        if not self.layers:
            raise ExportError("a Deephys model needs at least one layer")
        for layer, size in self.layers.items():
            _check_name("layer name", layer, MAX_LAYER_NAME_LENGTH)
            if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
                raise ExportError(f"layer {layer!r}: the number of neurons must be an int")
            if int(size) < 1:
                raise ExportError(f"layer {layer!r} has {size} neurons; it needs at least 1")
        if self.classification_layer not in self.layers:
            raise ExportError(
                f"classification_layer {self.classification_layer!r} is not one of the "
                f"layers {list(self.layers)}"
            )


@dataclasses.dataclass(frozen=True)
class ExportedFiles:
    """Where :func:`export_step` wrote the files."""

    model: Path
    tests: dict[str, Path]
    # per dataset, the images left out of its file for NaN or infinite values
    # (export_step(skip_non_finite=True)); absent where none were
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


def write_model(path: str | os.PathLike, model: DeephysModel) -> Path:
    """Write ``model`` as a ``.model`` file.

    Example::

        write_model("out/cnn.model", DeephysModel("cnn", {"fc1": 50, "logits": 10}, "logits"))
    """
    parts = [cbor.head(cbor.MAP, 3), cbor.text("name"), cbor.text(model.name)]
    parts += [cbor.text("layers"), cbor.head(cbor.ARRAY, len(model.layers))]
    for layer, size in model.layers.items():
        parts += [cbor.head(cbor.MAP, 2), cbor.text("layerID"), cbor.text(layer)]
        # The format lists every neuron as an empty map.
        parts += [cbor.text("neurons"), cbor.head(cbor.ARRAY, int(size)), b"\xa0" * int(size)]
    parts += [cbor.text("classification_layer"), cbor.text(model.classification_layer)]
    path = Path(path)
    path.write_bytes(b"".join(parts))
    return path


def write_test(
    path: str | os.PathLike,
    model: DeephysModel,
    name: str,
    class_names: Sequence[str],
    activations: Mapping[str, np.ndarray],
    images: np.ndarray,
    labels: np.ndarray | Sequence[int],
    *,
    dtype: str = "float32",
) -> Path:
    """Write one dataset as a ``.test`` file for ``model``.

    Args:
        path: the file to write.
        model: the model the activations come from.
        name: the dataset's name (at most 40 characters).
        class_names: one name per class, as many as the classification layer has neurons.
        activations: layer name -> ``[N, neurons]`` for every layer of ``model``;
            all but the classification layer non-negative (taken after ReLU).
        images: ``[N, 3, H, W]`` RGB, uint8 or floats in ``[0, 1]`` (scaled by 255 and
            truncated, as the deephys package does).
        labels: ``[N]`` class index of each image.
        dtype: ``"float32"`` or ``"float64"`` activations in the file.

    Raises:
        ExportError: the data break one of the format's rules; the message says which.

    Example::

        write_test("out/mnist.test", model, "mnist", CLASSES,
                   {"fc1": acts, "logits": logits}, images, labels)
    """
    _check_name("dataset name", name, MAX_NAME_LENGTH)
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    class_names = list(class_names)
    if not all(isinstance(c, str) for c in class_names):
        raise ExportError("class_names must be strings")
    for class_name in class_names:
        _check_encodable("class name", class_name)
    images = _check_images(images)
    vectors = _activation_bytes(model, activations, len(images), len(class_names), dtype)
    labels = _labels(labels, len(images), len(class_names))
    per_class = [
        cbor.text("categoryID")
        + cbor.uint(c)
        + cbor.text("category")
        + cbor.text(class_name)
        + cbor.text("data")
        for c, class_name in enumerate(class_names)
    ]
    image_head = cbor.head(cbor.MAP, 6) + cbor.text("imageID")
    header = [cbor.head(cbor.MAP, 4), cbor.text("name"), cbor.text(name)]
    header += [cbor.text("dtype"), cbor.text(dtype), cbor.text("classes")]
    header += [cbor.head(cbor.ARRAY, len(class_names)), *map(cbor.text, class_names)]
    header += [cbor.text("images"), cbor.head(cbor.ARRAY, len(images))]
    layout = _ImageLayout(images.shape, vectors)
    block = np.empty((min(_BLOCK_IMAGES, len(images)), layout.size), np.uint8)
    path = Path(path)
    # Written beside the target and renamed at the end: an error (a bad pixel found
    # in a later block, a full disk) never leaves a truncated file under its name.
    partial = path.with_name(f"{path.name}.partial")
    try:
        with open(partial, "wb") as file:
            file.write(b"".join(header))
            for start in range(0, len(images), _BLOCK_IMAGES):
                stop = min(start + _BLOCK_IMAGES, len(images))
                filled = layout.fill(block[: stop - start], images[start:stop], vectors, start)
                flat, size = filled.data.cast("B"), layout.size
                pieces: list[bytes | memoryview] = []
                indices = cbor.uints(start, stop)
                for j, label in enumerate(labels[start:stop].tolist()):
                    head = image_head + indices[j] + per_class[label]
                    pieces += (head, flat[j * size : (j + 1) * size])
                _write_pieces(file, pieces)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def export_step(
    log_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    step: int | None = None,
    run: str | None = None,
    layers: Sequence[str] | None = None,
    model_name: str | None = None,
    rename: Mapping[str, str] | None = None,
    dtype: str = "float32",
    skip_non_finite: bool = False,
) -> ExportedFiles:
    """Write one recorded step of a Deephys log as ``.model`` and ``.test`` files.

    Args:
        log_dir: a run directory, or a log directory holding one run with Deephys data.
        out_dir: where to write (created if missing): ``<model name>.model`` and
            ``<dataset>.test`` per dataset.
        step: which recorded step (default: the latest).
        run: which run under ``log_dir``, when it holds several.
        layers: which recorded layers (default: all whose full matrix was written).
        model_name: the model's name in the app (default: the run's name, such as
            ``"mnist/version_0"``).
        rename: new names, in the files, for datasets or layers of the log (the
            format allows 40 characters for dataset names, 30 for layer names).
        dtype: ``"float32"`` or ``"float64"`` activations in the files.
        skip_non_finite: leave out of the files the images whose exported activations
            or classifier outputs are NaN or infinite (the format cannot hold them;
            ``ExportedFiles.skipped`` counts them); without it, such an image stops
            the export with an error naming the dataset, the count and the cause.

    Raises:
        ExportError: the step lacks the full activation matrix, the classifier outputs
            or the thumbnails (the message says how to record them), they were
            recorded but cannot be read (the message names the dataset, the step,
            the damaged array or file and the cause), or a name or value breaks the
            format's rules. Nothing is written then, except files of datasets that
            came before a bad value.
        OSError: ``log_dir`` cannot be read (access denied, an unreachable store).
        tensorboard_plugin_deephys.log.storage.MissingBackendError: no fsspec backend
            serves ``log_dir``'s URL (the message says what to install).

    Example::

        files = export_step("lightning_logs/version_0", "deephys_files", step=1500)
        export_step("lightning_logs/version_0", "out", rename={"backbone.fc1": "fc1"})
    """
    from deephys_lightning.reader import read_log  # TensorBoard's loaders, only when used

    try:
        log = read_log(log_dir, run)
    except (FileNotFoundError, ValueError) as error:
        raise ExportError(str(error)) from None
    step = log.latest.step if step is None else step
    try:
        record = log.record(step)
    except KeyError as error:
        raise ExportError(error.args[0]) from None
    chosen = _export_layers(log, record, step, layers)
    layer_names, dataset_names = _new_names(rename, chosen, record.datasets)
    # Each dataset's arrays are read, and its file written below, on a thread of its
    # own: decompressing thumbnails, converting and writing release the GIL.
    with concurrent.futures.ThreadPoolExecutor(_workers(record.datasets)) as pool:
        read = {
            name: pool.submit(_dataset_arrays, log, name, step, chosen, record.class_names)
            for name in record.datasets
        }
        datasets = {name: future.result() for name, future in read.items()}
    skipped: dict[str, int] = {}
    for name, arrays in datasets.items():
        datasets[name], dropped = _finite_images(arrays, name, record, skip_non_finite)
        if dropped:
            skipped[name] = dropped
    sizes = {layer_names[layer]: datasets[record.ind][0][layer].shape[1] for layer in chosen}
    classification = _classification_layer_name(list(sizes))
    sizes[classification] = len(record.class_names)
    # Every name is checked before the first file is written.
    model = DeephysModel(_model_name(log_dir, log.run, model_name), sizes, classification)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    file_names = _file_names([model.name, *dataset_names.values()])
    model_path = write_model(out / f"{file_names[0]}.model", model)

    def write(name: str, file_name: str) -> Path:
        acts, logits, thumbnails, labels = datasets[name]
        return write_test(
            out / f"{file_name}.test",
            model,
            dataset_names[name],
            record.class_names,
            {**{layer_names[k]: a for k, a in acts.items()}, classification: logits},
            thumbnails.transpose(0, 3, 1, 2),
            labels,
            dtype=dtype,
        )

    with concurrent.futures.ThreadPoolExecutor(_workers(record.datasets)) as pool:
        written = {
            name: pool.submit(write, name, file_name)
            for name, file_name in zip(record.datasets, file_names[1:], strict=True)
        }
        tests = {name: future.result() for name, future in written.items()}
    return ExportedFiles(model_path, tests, skipped)


def _finite_rows(values: np.ndarray) -> np.ndarray:
    """bool ``[N]``: the rows of ``values`` ``[N, M]`` that are all finite (float16 by its
    exponent bits: all ones is inf or NaN; no float32 copy of the matrix)."""
    if values.dtype == np.float16:
        return ((values.view(np.uint16) & 0x7C00) != 0x7C00).all(axis=1)
    return np.isfinite(values).all(axis=1)


def _finite_images(arrays: tuple, name: str, record: Record, skip: bool) -> tuple[tuple, int]:
    """A dataset's arrays without the images whose activations or classifier outputs
    are not finite when ``skip``, and how many were left out; else the arrays as they
    are, or an :class:`ExportError` naming the dataset, the count and the causes."""
    acts, logits, thumbnails, labels = arrays
    finite = np.isfinite(np.asarray(logits)).all(axis=1)
    for values in acts.values():
        finite &= _finite_rows(np.asarray(values))
    bad = int((~finite).sum())
    if not bad:
        return arrays, 0
    if not skip:
        causes = "; ".join(row.describe() for row in record.left_out if row.dataset == name)
        raise ExportError(
            f"dataset {name!r}: {bad} of its {len(labels)} images hold NaN or infinite "
            f"activations or classifier outputs at step {record.step}"
            + (f" ({causes})" if causes else "")
            + "; the Deephys files cannot hold them. Export the other images with "
            "--skip-non-finite (export_step(skip_non_finite=True)), or record values that "
            "stay finite"
        )
    keep = np.flatnonzero(finite)
    return (
        {layer: values[keep] for layer, values in acts.items()},
        logits[keep],
        thumbnails[keep],
        labels[keep],
    ), bad


def _workers(datasets: Sequence[str]) -> int:
    """Threads for one per dataset, at most one per core."""
    return max(1, min(len(datasets), os.cpu_count() or 1))


_RENAME_HINT = "rename it with export_step(rename=...) or --rename OLD=NEW"


def _new_names(
    rename: Mapping[str, str] | None, layers: Sequence[str], datasets: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Names in the files of the exported layers and of the datasets, all checked."""
    rename = dict(rename or {})
    unknown = sorted(set(rename) - set(layers) - set(datasets))
    if unknown:
        raise ExportError(
            f"rename: {unknown} are neither datasets ({list(datasets)}) nor exported "
            f"layers ({list(layers)})"
        )
    layer_names = {layer: rename.get(layer, layer) for layer in layers}
    dataset_names = {name: rename.get(name, name) for name in datasets}
    for layer in layer_names.values():
        _check_name("layer name", layer, MAX_LAYER_NAME_LENGTH, _RENAME_HINT)
    for name in dataset_names.values():
        _check_name("dataset name", name, MAX_NAME_LENGTH, _RENAME_HINT)
    for kind, names in (("layer", layer_names), ("dataset", dataset_names)):
        if len(set(names.values())) < len(names):
            raise ExportError(f"rename gives two {kind}s the same name: {names}")
    return layer_names, dataset_names


def _check_name(what: str, name: str, limit: int, fix: str = "choose a shorter one") -> None:
    if not isinstance(name, str) or not name:
        raise ExportError(f"the {what} must be a non-empty string, got {name!r}")
    _check_encodable(what, name)
    if len(name) > limit:
        raise ExportError(
            f"the {what} {name!r} has {len(name)} characters; the Deephys format allows "
            f"at most {limit}: {fix}"
        )


def _check_encodable(what: str, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ExportError(f"the {what} {name!r} is not valid Unicode text") from None


def _as_array(values) -> np.ndarray:
    """NumPy view of an array-like; torch tensors are detached and moved to the CPU."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = _as_array(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ExportError(
            f"images must be [N, 3, H, W] RGB (channels first), got shape {images.shape}"
        )
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ExportError(f"images must be uint8 or floats in [0, 1], got {images.dtype}")
    return images


def _labels(labels, count: int, num_classes: int) -> np.ndarray:
    labels = _as_array(labels)
    if labels.shape != (count,) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ExportError(
            f"labels must be {count} integers, one per image, got {labels.dtype} of shape "
            f"{labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ExportError(f"labels must be class indices in [0, {num_classes}), one per image")
    return labels.astype(np.int64)


def _activation_bytes(
    model: DeephysModel,
    activations: Mapping[str, np.ndarray],
    count: int,
    num_classes: int,
    dtype: str,
) -> list[np.ndarray]:
    """Per layer of ``model``, in order: uint8 ``[N, neurons * itemsize]`` big-endian."""
    if set(activations) != set(model.layers):
        raise ExportError(
            f"activations are given for layers {sorted(activations)}, the model has "
            f"{sorted(model.layers)}"
        )
    if model.layers[model.classification_layer] != num_classes:
        raise ExportError(
            f"the classification layer {model.classification_layer!r} has "
            f"{model.layers[model.classification_layer]} neurons but there are "
            f"{num_classes} class names; give one name per class"
        )
    vectors = []
    for layer, size in model.layers.items():
        values = _as_array(activations[layer])
        if values.shape != (count, size):
            raise ExportError(
                f"activations of {layer!r} must be [{count} images, {size} neurons], "
                f"got {values.shape}"
            )
        if not np.issubdtype(values.dtype, np.number):
            raise ExportError(f"activations of {layer!r} must be numbers, got {values.dtype}")
        if layer != model.classification_layer and values.size and values.min() < 0:
            raise ExportError(
                f"activations of {layer!r} are negative in places; the Deephys app needs "
                "them after ReLU (record with DeephysCallback(relu=True))"
            )
        with np.errstate(over="ignore"):
            converted = np.ascontiguousarray(values, dtype=DTYPES[dtype])
        if not np.isfinite(converted).all():  # also what overflows the file's dtype
            raise ExportError(
                f"activations of {layer!r} hold NaN or infinite values, or values too large "
                f"for {dtype}"
            )
        vectors.append(converted.view(np.uint8))
    return vectors


# Images are laid out and written in blocks of this many, reusing one buffer.
_BLOCK_IMAGES = 128


def _write_pieces(file: BinaryIO, pieces: list[bytes | memoryview]) -> None:
    """Write ``pieces`` in order: gathered by the kernel (``os.writev``) where the
    platform has it, so they are not first copied into one string."""
    if not hasattr(os, "writev"):  # Windows
        file.write(b"".join(pieces))
        return
    file.flush()
    descriptor = file.fileno()
    for first in range(0, len(pieces), _MAX_PIECES):
        group = pieces[first : first + _MAX_PIECES]
        written = os.writev(descriptor, group)
        if written < sum(map(len, group)):  # a short write: on from the first byte left
            rest = memoryview(b"".join(group))[written:]
            while rest:
                rest = rest[os.write(descriptor, rest) :]


def _iov_max() -> int:
    try:
        return max(16, os.sysconf("SC_IOV_MAX"))  # 1,024 on Linux and macOS
    except (AttributeError, ValueError, OSError):
        return 16  # POSIX's least


# At most this many buffers per writev call (the system's IOV_MAX).
_MAX_PIECES = _iov_max()


class _ImageLayout:
    """The bytes of an image from its pixel data to its end, the same size for all.

    ``data`` is 3 channels of H rows of W-byte strings; then ``features`` (null) and
    ``activations`` (a map holding one byte string per layer).
    """

    def __init__(self, shape: tuple[int, ...], vectors: list[np.ndarray]) -> None:
        _, channels, height, width = shape
        self.channels, self.height = channels, height
        self.row_head = np.frombuffer(cbor.head(cbor.BYTES, width), np.uint8)
        self.channel_head = np.frombuffer(cbor.head(cbor.ARRAY, height), np.uint8)
        self.row_size = len(self.row_head) + width
        self.channel_size = len(self.channel_head) + height * self.row_size
        self.data_head = cbor.head(cbor.ARRAY, channels)
        middle = cbor.text("features") + cbor.NULL + cbor.text("activations")
        middle += cbor.head(cbor.MAP, 1) + cbor.text("activations")
        self.middle = middle + cbor.head(cbor.ARRAY, len(vectors))
        self.vector_heads = [cbor.head(cbor.BYTES, v.shape[1]) for v in vectors]
        self.size = len(self.data_head) + channels * self.channel_size + len(self.middle)
        self.size += sum(
            len(h) + v.shape[1] for h, v in zip(self.vector_heads, vectors, strict=True)
        )

    def fill(
        self, out: np.ndarray, images: np.ndarray, vectors: list[np.ndarray], start: int
    ) -> np.ndarray:
        """Lay out ``images`` (the block from image ``start``) into ``out``."""
        count = len(images)
        at = _put(out, 0, self.data_head)
        channels = out[:, at : at + self.channels * self.channel_size]
        channels = channels.reshape(count, self.channels, -1)
        channels[:, :, : len(self.channel_head)] = self.channel_head
        rows = channels[:, :, len(self.channel_head) :]
        rows = rows.reshape(count, self.channels, self.height, self.row_size)
        rows[..., : len(self.row_head)] = self.row_head
        _put_pixels(rows[..., len(self.row_head) :], images, start)
        at = _put(out, at + self.channels * self.channel_size, self.middle)
        for vector_head, vector in zip(self.vector_heads, vectors, strict=True):
            at = _put(out, at, vector_head)
            out[:, at : at + vector.shape[1]] = vector[start : start + count]
            at += vector.shape[1]
        return out


# Float images are converted this many at a time, so that the images are still in the
# CPU's cache when, checked, they are multiplied.
_PIXEL_CHUNK = 64


def _put_pixels(out: np.ndarray, images: np.ndarray, start: int) -> None:
    """Write the bytes of ``images`` into ``out``: uint8 as they are, floats in [0, 1]
    times 255, truncated (as the deephys package converts them)."""
    if images.dtype == np.uint8:
        out[...] = images
        return
    for at in range(0, len(images), _PIXEL_CHUNK):
        # (a strided or byte-swapped chunk is copied first, in the cache, for the check)
        chunk = images[at : at + _PIXEL_CHUNK]
        if not (chunk.flags.c_contiguous and chunk.dtype.isnative):
            chunk = np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("="))
        if not _within_range(chunk):
            raise _pixel_error(chunk, start + at)
        # Multiplied in the images' own precision, then cast: image * 255 -> uint8,
        # in one pass without a float copy.
        np.multiply(chunk, 255, out=out[at : at + len(chunk)], casting="unsafe")


def _within_range(images: np.ndarray) -> bool:
    """Whether all ``images`` (floats) are in [0, 1].

    The bit patterns of non-negative floats, read as unsigned integers, sort as the
    numbers do; negative numbers (sign bit) and NaN sort above 1.0's: one pass
    decides. Only when it fails (perhaps for a -0.0) are the exact minimum and maximum
    needed.
    """
    if not images.size:
        return True
    fast = images.dtype.itemsize in (2, 4, 8) and images.dtype.isnative
    if fast and images.flags.c_contiguous:
        unsigned = np.dtype(f"u{images.dtype.itemsize}")
        if images.view(unsigned).max() <= np.array(1, images.dtype).view(unsigned):
            return True
    low, high = images.min(), images.max()
    return bool(low >= 0 and high <= 1)  # NaN fails


def _pixel_error(images: np.ndarray, start: int) -> ExportError:
    inside = ((images >= 0) & (images <= 1)).reshape(len(images), -1).all(axis=1)
    first = int(np.flatnonzero(~inside)[0])
    low, high = np.nanmin(images[first]), np.nanmax(images[first])
    nan = " and NaN" if np.isnan(images[first]).any() else ""
    return ExportError(
        f"float images must hold values in [0, 1]; image {start + first} holds {low} to {high}{nan}"
    )


def _put(out: np.ndarray, at: int, constant: bytes) -> int:
    out[:, at : at + len(constant)] = np.frombuffer(constant, np.uint8)
    return at + len(constant)


def _export_layers(log, record, step: int, layers: Sequence[str] | None) -> list[str]:
    if layers is not None:
        unknown = [layer for layer in layers if layer not in record.layers]
        if unknown:
            raise ExportError(
                f"layers {unknown} were not recorded; recorded: {list(record.layers)}"
            )
        return list(layers)
    with_matrix = [layer for layer in record.layers if _has_matrix(log, layer, record, step)]
    if not with_matrix:
        raise ExportError(
            f"step {step} holds no full activation matrix. The Deephys files need it: "
            "record with DeephysCallback(max_activation_bytes=None) (or a larger limit), "
            "or fewer images with max_images="
        )
    return with_matrix


def _has_matrix(log, layer: str, record, step: int) -> bool:
    """Whether the step holds the InD matrix of ``layer``; a matrix that was written
    (the record lists it) or is there but cannot be read is an error naming the cause,
    never taken for one that was not recorded."""
    from deephys_lightning.reader import UnreadableDataError

    try:
        log.activations(layer, record.ind, step)
    except UnreadableDataError as error:
        raise ExportError(f"layer {layer!r}, dataset {record.ind!r}: {error.args[0]}") from None
    except KeyError as error:
        if tag_name(Kind.ACTIVATIONS, layer=layer, dataset=record.ind) in record.arrays:
            raise ExportError(
                f"layer {layer!r}, dataset {record.ind!r}: the step's record lists its full "
                f"activation matrix, which cannot be read: {error.args[0]}"
            ) from None
        return False
    return True


def _dataset_arrays(log, name: str, step: int, layers: Sequence[str], class_names):
    try:
        acts = {layer: log.activations(layer, name, step) for layer in layers}
        logits = log.logits(name, step)
        labels = log.labels(name, step)
    except KeyError as error:  # missing, or damaged (UnreadableDataError): said as it is
        raise ExportError(f"dataset {name!r}: {error.args[0]}") from None
    try:
        thumbnails = log.thumbnails(name, step)
    except KeyError as error:
        reason = error.args[0]
        # Never recorded: not a missing file, a damaged pack or a reference lost to a
        # damaged event file (read_log says those in words of their own).
        if f"has no thumbnails for dataset {name!r}" in reason:
            reason = (
                f"it has no thumbnails at step {step}; the Deephys files need the images: "
                "record with DeephysCallback(thumbnails=True)"
            )
        raise ExportError(f"dataset {name!r}: {reason}") from None
    if len(thumbnails) != len(labels):
        raise ExportError(
            f"dataset {name!r}: {len(thumbnails)} thumbnails for {len(labels)} recorded images"
        )
    if logits.shape[1] != len(class_names):
        raise ExportError(
            f"dataset {name!r}: the classifier has {logits.shape[1]} outputs but the record "
            f"names {len(class_names)} classes; pass DeephysCallback(class_names=...) with "
            "one name per output"
        )
    return acts, logits, thumbnails, labels


def _classification_layer_name(layers: Sequence[str]) -> str:
    name = CLASSIFICATION_LAYER
    while name in layers:
        name = f"{name}_"
    return name


def _model_name(log_dir: str | os.PathLike, run: str, model_name: str | None) -> str:
    if model_name is not None:
        return model_name
    run_dir = os.fspath(log_dir) if run in ("", ".") else storage.join(log_dir, run)
    path = PurePosixPath(storage.normalize(run_dir).replace(os.sep, "/"))
    name = path.name
    if name.startswith("version_"):  # a TensorBoardLogger version: name it as TensorBoard does
        with_parent = f"{path.parent.name}/{name}"
        name = with_parent if len(with_parent) <= MAX_NAME_LENGTH else name
    if len(name) > MAX_NAME_LENGTH:
        raise ExportError(
            f"the run's name {name!r} is longer than the {MAX_NAME_LENGTH} characters the "
            "Deephys format allows: pass model_name= (--name)"
        )
    return name


def _file_names(names: Sequence[str]) -> list[str]:
    """Safe, distinct file names (without extension) for model and dataset names."""
    used: set[str] = set()
    out = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"
        candidate, n = base, 1
        while candidate.lower() in used:  # distinct on case-insensitive file systems too
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate.lower())
        out.append(candidate)
    return out
