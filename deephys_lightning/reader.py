"""Read a Deephys log back as NumPy arrays.

Loads event files with TensorBoard's own event multiplexer (keeping every step)
and reads them through the same data layer as the TensorBoard plugin
(``tb_plugin.records``), so what you get here is what the Deephys tab shows.

Example::

    from deephys_lightning import read_log

    log = read_log("lightning_logs/version_0")
    log.datasets                                    # ("colored", "permuted", ...), InD first
    acts = log.activations("backbone.fc1", "permuted", log.steps[-1])   # [N, M] float16
    labels = log.labels("permuted", log.steps[-1])
"""

from __future__ import annotations

import os

import numpy as np
from tensorboard.backend.event_processing import data_provider as tb_data_provider
from tensorboard.backend.event_processing import event_accumulator, plugin_event_multiplexer
from tensorboard.context import RequestContext
from tensorboard.errors import NotFoundError

from deephys_lightning import fast_crc
from deephys_lightning.metrics import OODScores
from tb_plugin.metadata import SCORE_KINDS, Kind, Record
from tb_plugin.records import DeephysReader

_EXPERIMENT = ""
_KEEP_EVERYTHING = {
    event_accumulator.TENSORS: 0,
    event_accumulator.SCALARS: 0,
}


class DeephysLog:
    """The Deephys data of one run; arrays are read lazily and cached.

    Use :func:`read_log` to make one.
    """

    def __init__(self, reader: DeephysReader, run: str) -> None:
        self._reader = reader
        self._ctx = RequestContext()
        self.run = run
        self.records: tuple[Record, ...] = tuple(reader.records(self._ctx, _EXPERIMENT, run))
        if not self.records:
            raise ValueError(f"run {run!r} holds no readable Deephys record")

    @property
    def latest(self) -> Record:
        return self.records[-1]

    @property
    def steps(self) -> tuple[int, ...]:
        """The global steps with a record, oldest first."""
        return tuple(r.step for r in self.records)

    @property
    def datasets(self) -> tuple[str, ...]:
        """Dataset names of the latest record, the in-distribution set first."""
        return self.latest.datasets

    @property
    def layers(self) -> tuple[str, ...]:
        return self.latest.layers

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.latest.class_names

    def record(self, step: int) -> Record:
        for record in self.records:
            if record.step == step:
                return record
        raise KeyError(f"no Deephys record at step {step}; steps: {list(self.steps)}")

    def activations(self, layer: str, dataset: str, step: int) -> np.ndarray:
        """float16 ``[N, M]`` activations of ``layer`` on ``dataset`` at ``step``.

        Raises:
            KeyError: the matrix was not written (it was larger than the callback's
                ``max_activation_bytes``; the view data and scores are still there).
        """
        try:
            return self._array(Kind.ACTIVATIONS, step, layer=layer, dataset=dataset)
        except KeyError as error:
            raise KeyError(
                f"{error.args[0]}. The full activation matrix is written only while it is "
                "at most DeephysCallback(max_activation_bytes=...) large; raise that (or "
                "set it to None) or record fewer images with max_images=."
            ) from None

    def image_top_neurons(
        self, layer: str, dataset: str, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per image, its top neurons ``[N, n]`` and their normalized activations ``[N, n]``."""
        return (
            self._array(Kind.IMAGE_TOP_NEURONS, step, layer=layer, dataset=dataset),
            self._array(Kind.IMAGE_TOP_VALUES, step, layer=layer, dataset=dataset),
        )

    def positions(self, dataset: str, step: int) -> np.ndarray:
        """int32 ``[N]``: the index in its dataset of each recorded image."""
        return self._array(Kind.POSITIONS, step, dataset=dataset)

    def top_images(self, layer: str, dataset: str, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Per neuron, the top image indices ``[M, k]`` and their activations ``[M, k]``."""
        return (
            self._array(Kind.TOP_INDICES, step, layer=layer, dataset=dataset),
            self._array(Kind.TOP_VALUES, step, layer=layer, dataset=dataset),
        )

    def category_means(self, layer: str, dataset: str, step: int) -> np.ndarray:
        """float32 ``[C, M]`` mean activation per category (NaN rows: no images)."""
        return self._array(Kind.CATEGORY_MEANS, step, layer=layer, dataset=dataset)

    def scores(self, layer: str, ood: str, step: int) -> OODScores:
        """Per-neuron novelty, spurious score and activation ratio of an OOD set."""
        if ood == self.record(step).ind:
            raise KeyError(f"{ood!r} is the in-distribution set; scores exist for OOD sets only")
        arrays = {kind: self._array(kind, step, layer=layer, dataset=ood) for kind in SCORE_KINDS}
        return OODScores(
            novelty=arrays[Kind.NOVELTY],
            spurious=arrays[Kind.SPURIOUS],
            activation_ratio=arrays[Kind.ACTIVATION_RATIO],
        )

    def labels(self, dataset: str, step: int) -> np.ndarray:
        """int32 ``[N]`` ground-truth class of each image."""
        return self._array(Kind.LABELS, step, dataset=dataset)

    def predictions(self, dataset: str, step: int) -> np.ndarray:
        """int32 ``[N]`` predicted class of each image."""
        return self._array(Kind.PREDICTIONS, step, dataset=dataset)

    def logits(self, dataset: str, step: int) -> np.ndarray:
        """float32 ``[N, C]`` classifier outputs of each image.

        Raises:
            KeyError: they were not recorded at ``step`` (by default they are written
                with the full activation matrix; ``DeephysCallback(record_logits=True)``
                always writes them).
        """
        try:
            return self._array(Kind.LOGITS, step, dataset=dataset)
        except KeyError as error:
            raise KeyError(
                f"{error.args[0]}. Classifier outputs are written while the full activation "
                "matrix is (DeephysCallback(max_activation_bytes=...)), or always with "
                "DeephysCallback(record_logits=True)."
            ) from None

    def thumbnails(self, dataset: str, step: int | None = None) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` images of ``dataset`` (as of ``step``, default latest)."""
        step = self.latest.step if step is None else step
        self.record(step)
        try:
            mapped = self._reader.thumbnails(self._ctx, _EXPERIMENT, self.run, dataset, step)
        except NotFoundError as error:
            raise KeyError(str(error)) from None
        return np.array(mapped)

    def _array(self, kind: Kind, step: int, **names: str) -> np.ndarray:
        self.record(step)  # a clear KeyError for a step that was never recorded
        try:
            return self._reader.array(self._ctx, _EXPERIMENT, self.run, kind, step=step, **names)
        except NotFoundError as error:
            raise KeyError(str(error)) from None


def read_runs(log_dir: str | os.PathLike) -> dict[str, DeephysLog]:
    """Every run under ``log_dir`` that holds Deephys data, by run name.

    Run names are paths relative to ``log_dir`` (``"."`` is ``log_dir`` itself), as
    TensorBoard shows them.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
    """
    log_dir = os.fspath(log_dir)
    if not os.path.isdir(log_dir):
        raise FileNotFoundError(f"{log_dir!r} is not a directory")
    fast_crc.install()  # record checks at C speed: reading is ten times faster
    multiplexer = plugin_event_multiplexer.EventMultiplexer(size_guidance=_KEEP_EVERYTHING)
    multiplexer.AddRunsFromDirectory(log_dir)
    multiplexer.Reload()
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, log_dir)
    reader = DeephysReader(provider, logdir=log_dir)
    return {run: DeephysLog(reader, run) for run in reader.index(RequestContext(), _EXPERIMENT)}


def read_log(log_dir: str | os.PathLike, run: str | None = None) -> DeephysLog:
    """Read the Deephys data under ``log_dir``.

    Args:
        log_dir: a run directory (such as a TensorBoardLogger's ``log_dir``) or a
            directory of runs.
        run: which run, relative to ``log_dir`` (``"."`` is ``log_dir`` itself);
            needed only when several runs there hold Deephys data.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
        ValueError: no run holds Deephys data, or several do and ``run`` is not given.
    """
    try:
        logs = read_runs(log_dir)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"read_log: {error}") from None
    runs = sorted(logs)
    if run is None:
        if len(runs) != 1:
            raise ValueError(
                f"read_log: {os.fspath(log_dir)!r} holds Deephys data in {len(runs)} runs "
                f"({runs or 'none: was DeephysCallback in the Trainer?'})"
                + ("; pass run= to pick one" if runs else "")
            )
        run = runs[0]
    elif run not in logs:
        raise ValueError(f"read_log: no Deephys data in run {run!r}; runs with data: {runs}")
    return logs[run]
