"""The score table of a Deephys log: per run, step, layer and OOD set.

Example::

    from deephys_lightning.scores import score_table, format_score_table

    rows = score_table("lightning_logs")
    print(format_score_table(rows))

or from a shell: ``deephys-lightning scores lightning_logs``.
"""

from __future__ import annotations

import dataclasses
import math
import os

from deephys_lightning.reader import read_runs
from tb_plugin.derived import accuracy


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
    spurious_mean: float
    spurious_undefined: int
    activation_ratio_mean: float


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
                    rows.append(
                        ScoreRow(
                            run=run,
                            step=step,
                            epoch=record.epoch,
                            layer=layer,
                            ood=ood,
                            accuracy=accuracy(log.labels(ood, step), log.predictions(ood, step)),
                            **log.scores(layer, ood, step).summary(),
                        )
                    )
    return rows


_COLUMNS = (
    ("run", "run", "{}"),
    ("step", "step", "{}"),
    ("epoch", "epoch", "{}"),
    ("layer", "layer", "{}"),
    ("ood", "OOD set", "{}"),
    ("accuracy", "accuracy", "{:.1%}"),
    ("novelty_mean", "novelty", "{:.4g}"),
    ("novelty_positive_fraction", "novel>0", "{:.0%}"),
    ("spurious_mean", "spurious", "{:.3f}"),
    ("spurious_undefined", "undef.", "{}"),
    ("activation_ratio_mean", "act.ratio", "{:.1%}"),
)


def _cell(value: object, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return fmt.format(value)


def format_score_table(rows: list[ScoreRow]) -> str:
    """A fixed-width text table of ``rows``, one line per OOD set and step."""
    header = [title for _, title, _ in _COLUMNS]
    lines = [[_cell(getattr(row, field), fmt) for field, _, fmt in _COLUMNS] for row in rows]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]
    text = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    text += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join(text)
