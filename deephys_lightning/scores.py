"""The score tables of a Deephys log: per run, step, layer and OOD set, the neuron
scores; per run, step, OOD set and detector, the OOD detection metrics.

Example::

    from deephys_lightning.scores import score_table, format_table, detection_table

    print(format_table(score_table("lightning_logs")))
    print(format_table(detection_table("lightning_logs")))

or from a shell: ``deephys-lightning scores lightning_logs`` (``--detection``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings

from deephys_lightning.reader import LogDamageWarning, read_runs
from tensorboard_plugin_deephys.log.derived import accuracy
from tensorboard_plugin_deephys.log.metadata import DETECTION_METRICS


@dataclasses.dataclass(frozen=True)
class ScoreRow:
    """Headline scores of one OOD set at one recorded step.

    The fields after ``accuracy`` are those of ``OODScores.summary()``, the numbers
    the tab and the logged scalars show.
    """

    run: str
    step: int
    epoch: int
    layer: str
    ood: str
    accuracy: float
    novelty_mean: float
    novelty_positive_fraction: float
    novelty_raw_mean: float
    spurious_mean: float
    spurious_undefined: int
    activation_ratio_mean: float
    dead_neurons: int
    stage: str = "fit"  # which evaluation: "fit", "validate", "test" ("" in older logs)
    # Images of the InD and this OOD set left out of these scores and this accuracy for
    # NaN or infinite values (on this layer, or no prediction); why: left_out_notes().
    left_out: int = 0


@dataclasses.dataclass(frozen=True)
class DetectionRow:
    """How well one OOD detector separates the InD set from one OOD set at one step
    (higher scores = more in-distribution; InD is the positive class)."""

    run: str
    step: int
    epoch: int
    ood: str
    detector: str
    layer: str  # "" for the detectors on the logits
    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_95_tpr: float
    ind_images: int
    ood_images: int
    stage: str = "fit"
    # detectors on features: where they were fitted ("reference", "ind_half"; "" for
    # the logit detectors), on how many images, and why the metrics are missing
    fitted_on: str = ""
    fit_images: int = 0
    note: str = ""


@dataclasses.dataclass(frozen=True)
class CalibrationRow:
    """How well the classifier's confidence serves on one dataset at one step: its
    accuracy and the drop from the InD set's, the expected calibration error, and
    failure detection (AUROC of right vs wrong predictions, AURC)."""

    run: str
    step: int
    epoch: int
    dataset: str
    role: str  # "ind" or "ood"
    accuracy: float
    accuracy_drop: float
    ece: float
    failure_auroc: float
    aurc: float
    images: int
    stage: str = "fit"


def calibration_table(log_dir: str | os.PathLike) -> list[CalibrationRow]:
    """Calibration and failure detection of every dataset of every run under
    ``log_dir``, oldest step first (steps recorded without logit detectors have none).

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
    """
    rows = []
    for run, log in sorted(read_runs(log_dir).items()):
        for record in log.records:
            try:
                found = {name: log.calibration(name, record.step) for name in record.datasets}
            except KeyError as error:
                _skipped(run, record.step, "calibration", error)
                continue
            ind = found[record.ind]
            for name, row in found.items():
                if row is None:
                    continue
                drop = (ind.accuracy if ind is not None else math.nan) - row.accuracy
                rows.append(
                    CalibrationRow(
                        run=run,
                        step=record.step,
                        epoch=record.epoch,
                        dataset=name,
                        role="ind" if name == record.ind else "ood",
                        accuracy=row.accuracy,
                        accuracy_drop=drop,
                        ece=row.ece,
                        failure_auroc=row.failure_auroc,
                        aurc=row.aurc,
                        images=row.images,
                        stage=record.stage,
                    )
                )
    return rows


def score_table(log_dir: str | os.PathLike) -> list[ScoreRow]:
    """Scores of every run with Deephys data under ``log_dir``, oldest step first.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
    """
    rows = []
    for run, log in sorted(read_runs(log_dir).items()):
        for record in log.records:
            step = record.step
            for layer in record.layers:
                for ood in record.ood:
                    try:
                        summary = log.scores(layer, ood, step).summary()
                        labels, predictions = log.labels(ood, step), log.predictions(ood, step)
                    except KeyError as error:  # a damaged log: keep every other row
                        _skipped(run, step, f"{layer}/{ood}", error)
                        continue
                    # the counts among the headline numbers, as ScoreRow types them
                    spurious_undefined = int(summary.pop("spurious_undefined"))
                    dead_neurons = int(summary.pop("dead_neurons"))
                    rows.append(
                        ScoreRow(
                            run=run,
                            step=step,
                            epoch=record.epoch,
                            layer=layer,
                            ood=ood,
                            accuracy=accuracy(labels, predictions),
                            stage=record.stage,
                            spurious_undefined=spurious_undefined,
                            dead_neurons=dead_neurons,
                            left_out=sum(
                                row.images
                                for row in record.left_out
                                if row.dataset in (record.ind, ood) and row.layer in (None, layer)
                            ),
                            **summary,
                        )
                    )
    return rows


def left_out_notes(log_dir: str | os.PathLike) -> list[str]:
    """One line per run, step, dataset, layer and cause where images were left out
    for NaN or infinite values, e.g. ``"run 'a', step 10: 100 images of 'noisy' with
    NaN or infinite activations of 'fc1' left out: the input images hold NaN or
    infinite values"``.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
    """
    return [
        f"run {run!r}, step {record.step}: {row.describe()}"
        for run, log in sorted(read_runs(log_dir).items())
        for record in log.records
        for row in record.left_out
    ]


def _skipped(run: str, step: int, what: str, error: KeyError) -> None:
    warnings.warn(
        f"run {run!r}, step {step}, {what}: left out, its data are unreadable: {error.args[0]}",
        LogDamageWarning,
        stacklevel=3,
    )


def detection_table(log_dir: str | os.PathLike) -> list[DetectionRow]:
    """OOD detection metrics of every run under ``log_dir``, oldest step first.

    Raises:
        FileNotFoundError: ``log_dir`` does not exist.
    """
    rows = []
    for run, log in sorted(read_runs(log_dir).items()):
        for record in log.records:
            for ood in record.ood:
                try:
                    found = log.detection(ood, record.step)
                except KeyError as error:
                    _skipped(run, record.step, ood, error)
                    continue
                for row in found:
                    fields = dataclasses.asdict(row)
                    fields["layer"] = fields["layer"] or ""
                    rows.append(
                        DetectionRow(
                            run=run,
                            step=record.step,
                            epoch=record.epoch,
                            ood=ood,
                            stage=record.stage,
                            **fields,
                        )
                    )
    return rows


_SCORE_COLUMNS = (
    ("run", "run", "{}"),
    ("step", "step", "{}"),
    ("epoch", "epoch", "{}"),
    ("layer", "layer", "{}"),
    ("ood", "OOD set", "{}"),
    ("accuracy", "accuracy", "{:.1%}"),
    ("novelty_mean", "novelty", "{:.3f}"),
    ("novelty_positive_fraction", "novel>0", "{:.0%}"),
    ("novelty_raw_mean", "raw novelty", "{:.4g}"),
    ("spurious_mean", "spurious", "{:.3f}"),
    ("spurious_undefined", "undef.", "{}"),
    ("activation_ratio_mean", "act.ratio", "{:.1%}"),
    ("dead_neurons", "dead", "{}"),
    ("left_out", "left out", "{}"),
    ("stage", "stage", "{}"),
)
_DETECTION_COLUMNS = (
    ("run", "run", "{}"),
    ("step", "step", "{}"),
    ("epoch", "epoch", "{}"),
    ("ood", "OOD set", "{}"),
    ("detector", "detector", "{}"),
    ("layer", "layer", "{}"),
    *((metric, metric.replace("_at_95_tpr", "@95tpr"), "{:.4f}") for metric in DETECTION_METRICS),
    ("ood_images", "OOD images", "{}"),
    ("fitted_on", "fitted on", "{}"),
    ("stage", "stage", "{}"),
)


_CALIBRATION_COLUMNS = (
    ("run", "run", "{}"),
    ("step", "step", "{}"),
    ("epoch", "epoch", "{}"),
    ("dataset", "dataset", "{}"),
    ("role", "role", "{}"),
    ("accuracy", "accuracy", "{:.1%}"),
    ("accuracy_drop", "drop", "{:.1%}"),
    ("ece", "ECE", "{:.4f}"),
    ("failure_auroc", "failure AUROC", "{:.4f}"),
    ("aurc", "AURC", "{:.4f}"),
    ("images", "images", "{}"),
    ("stage", "stage", "{}"),
)


def _cell(value: object, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return fmt.format(value)


def format_table(rows: list[ScoreRow] | list[DetectionRow] | list[CalibrationRow]) -> str:
    """A fixed-width text table of ``rows`` (of :func:`score_table`,
    :func:`detection_table` or :func:`calibration_table`), one line per row."""
    columns: tuple[tuple[str, str, str], ...] = _SCORE_COLUMNS
    if rows and isinstance(rows[0], DetectionRow):
        columns = _DETECTION_COLUMNS
    elif rows and isinstance(rows[0], CalibrationRow):
        columns = _CALIBRATION_COLUMNS
    header = [title for _, title, _ in columns]
    lines = [[_cell(getattr(row, field), fmt) for field, _, fmt in columns] for row in rows]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]
    text = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    text += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join(text)
