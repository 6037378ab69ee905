"""Write a report: read the log, build the content, render it, write one file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from deephys_lightning.report.build import TOP_IMAGES, build_report
from deephys_lightning.report.choices import ReportError
from deephys_lightning.report.render import render_html
from tensorboard_plugin_deephys.log import storage


def write_report(
    log_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    step: int | None = None,
    run: str | None = None,
    layer: str | None = None,
    neurons: Sequence[int] | None = None,
    images: Sequence[tuple[int, str]] | None = None,
    categories: Sequence[int] | None = None,
    k: int = TOP_IMAGES,
) -> Path:
    """Write one self-contained HTML page of a recorded step: the overview (accuracy,
    scores, detection, calibration, confusion), and a section per neuron, image and
    category; thumbnails inlined, nothing fetched from elsewhere (see docs/report.md).

    Args:
        log_dir: a run directory, or a log directory holding one run with Deephys data.
        out: the HTML file to write (its folder is created if missing).
        step: which recorded step (default: the latest).
        run: which run under ``log_dir``, when it holds several.
        layer: which recorded layer (default: the first).
        neurons: the neurons to show (default: the 3 with the highest mean spurious
            score across the OOD sets).
        images: images to show, as ``(index, dataset)``: the index among the recorded
            images of the set, as in the tab's image view.
        categories: classes to show, by index.
        k: top images per neuron and set (at most the recorded ``top_k``).

    Returns:
        The path written.

    Raises:
        ReportError: no such run, step, layer, neuron, image or class (the message says
            which exist), or data that cannot be read. Nothing is written then.
        OSError: ``log_dir`` cannot be read, or ``out`` cannot be written.

    Example::

        from deephys_lightning.report import write_report

        write_report("lightning_logs/version_0", "report.html")
        write_report("lightning_logs/version_0", "neuron3.html", neurons=[3],
                     images=[(5, "permuted")], categories=[7])
    """
    from deephys_lightning.reader import read_log  # TensorBoard's loaders, only when used

    try:
        log = read_log(log_dir, run)
    except (FileNotFoundError, ValueError) as error:
        raise ReportError(str(error)) from None
    report = build_report(
        log,
        run_name=_run_name(log_dir, log.run),
        step=step,
        layer=layer,
        neurons=neurons,
        images=images or (),
        categories=categories or (),
        k=k,
    )
    page = render_html(report)
    path = Path(out)
    if path.is_dir():
        raise ReportError(f"{os.fspath(path)!r} is a folder: give the HTML file's path")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _run_name(log_dir: str | os.PathLike, run: str) -> str:
    """The run's name on the page: its folder's name, with its parent's for a
    TensorBoardLogger version (``"mnist/version_0"``), as TensorBoard names it; never
    the path above it (a page that is sent should not say where the log was)."""
    run_dir = os.fspath(log_dir) if run in ("", ".") else storage.join(log_dir, run)
    path = PurePosixPath(storage.normalize(run_dir).replace(os.sep, "/"))
    if path.name.startswith("version_") and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or run
