"""``deephys-lightning``: command-line tools for Deephys logs.

Example::

    deephys-lightning scores lightning_logs        # the score table of every run
    python -m deephys_lightning scores lightning_logs --csv
    deephys-lightning export lightning_logs/version_0 deephys_files   # for the Deephys app
    deephys-lightning report lightning_logs/version_0 --out report.html   # one HTML file
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from deephys_lightning.export import DTYPES, ExportError, export_step
from deephys_lightning.reader import LogDamageWarning
from deephys_lightning.report import ReportError, parse_images, parse_indices, write_report
from deephys_lightning.scores import (
    calibration_table,
    detection_table,
    format_table,
    left_out_notes,
    score_table,
)
from tensorboard_plugin_deephys.log.storage import MissingBackendError, ReadTimeout


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deephys-lightning", description="Tools for logs written by DeephysCallback."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    scores = commands.add_parser(
        "scores",
        help="print novelty, spurious and activation-ratio scores per layer, OOD set and step",
        description="Print the score table of every run with Deephys data under LOGDIR: "
        "per layer, OOD set and recorded step, the OOD accuracy, the mean novelty (in the "
        "Deephys authors' units: activations divided by the neuron's InD maximum) and "
        "the fraction of neurons with positive novelty, the mean raw novelty, the mean "
        "spurious score and how many neurons have it undefined, the mean activation "
        "ratio and how many neurons are dead (never above 0 on InD, left out of every "
        "mean). With --detection: per OOD set, step and detector, AUROC, AUPR-In, "
        "AUPR-Out and FPR at 95%% TPR of telling the InD set from it. With "
        "--calibration: per dataset and step, accuracy and its drop from InD, the "
        "expected calibration error and failure detection (AUROC of right vs wrong, AURC).",
    )
    scores.add_argument("logdir", help="a TensorBoard log directory (or one run's directory)")
    scores.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    table = scores.add_mutually_exclusive_group()
    table.add_argument(
        "--detection", action="store_true", help="print the OOD detection table instead"
    )
    table.add_argument(
        "--calibration",
        action="store_true",
        help="print the calibration and failure-detection table instead",
    )
    export = commands.add_parser(
        "export",
        help="write a recorded step as .model/.test files for the original Deephys app",
        description="Write one recorded step of a run as the original Deephys app's files: "
        "OUTDIR/<model>.model and OUTDIR/<dataset>.test per dataset. The step must hold "
        "the full activation matrix, the classifier outputs and the thumbnails (what "
        "DeephysCallback records by default while the matrix is at most "
        "max_activation_bytes).",
    )
    export.add_argument("logdir", help="a run directory (or a log directory with one run)")
    export.add_argument("outdir", help="where to write the files (created if missing)")
    export.add_argument("--step", type=int, help="which recorded step (default: the latest)")
    export.add_argument("--run", help="which run under LOGDIR, when it holds several")
    export.add_argument(
        "--layer",
        action="append",
        dest="layers",
        help="a recorded layer to export (repeat for several; default: all with a matrix)",
    )
    export.add_argument("--name", help="the model's name in the app (default: the run's)")
    export.add_argument(
        "--rename",
        action="append",
        metavar="OLD=NEW",
        help="a new name in the files for a dataset or layer (repeat for several)",
    )
    export.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="activation precision"
    )
    export.add_argument(
        "--skip-non-finite",
        action="store_true",
        help="leave out the images with NaN or infinite activations or classifier outputs "
        "(the files cannot hold them; default: stop with an error naming them)",
    )
    _add_report(commands)
    return parser


def _add_report(commands) -> None:
    report = commands.add_parser(
        "report",
        help="write a recorded step as one self-contained HTML file, to send or publish",
        description="Write one recorded step of a run as a single HTML file that needs "
        "nothing else (thumbnails inlined, no script, nothing fetched): the overview "
        "(accuracy, scores, OOD detection, calibration, images left out, confusion) and "
        "a section per chosen neuron, image and category, as the Deephys tab shows them.",
    )
    report.add_argument("logdir", help="a run directory (or a log directory with one run)")
    report.add_argument("--out", default="report.html", help="the HTML file to write")
    report.add_argument("--step", type=int, help="which recorded step (default: the latest)")
    report.add_argument("--run", help="which run under LOGDIR, when it holds several")
    report.add_argument("--layer", help="which recorded layer (default: the first)")
    report.add_argument(
        "--neurons",
        action="append",
        metavar="J,...",
        help="neurons to show (default: the 3 with the highest mean spurious score "
        "across the OOD sets)",
    )
    report.add_argument(
        "--images",
        action="append",
        metavar="INDEX@DATASET,...",
        help="images to show, e.g. 5@permuted: the index among the recorded images of "
        "the set, as in the tab's image view",
    )
    report.add_argument(
        "--categories", action="append", metavar="C,...", help="classes to show, by index"
    )
    report.add_argument(
        "--k", type=int, default=6, help="top images per neuron and set (default: 6)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _warnings_as_lines(f"deephys-lightning {args.command}") as damage:
            if args.command == "scores":
                table = "detection" if args.detection else "scores"
                table = "calibration" if args.calibration else table
                return _scores(args.logdir, as_csv=args.csv, table=table, damage=damage)
            if args.command == "export":
                return _export(args)
            if args.command == "report":
                return _report(args)
    except BrokenPipeError:  # e.g. `deephys-lightning scores ... | head`: end quietly
        _silence_stdout()
        return 0
    except (ReadTimeout, MissingBackendError) as error:  # said in one line, with the fix
        print(f"deephys-lightning {args.command}: {error}", file=sys.stderr)
        return 2
    return 2  # argparse already refused unknown commands


@contextlib.contextmanager
def _warnings_as_lines(prefix: str):
    """Show warnings (a damaged event file...) as one line each on stderr, without
    the source line Python's default display adds; yields the list of those that said
    part of the log was left out (``LogDamageWarning``), filled as they come."""
    damage: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LogDamageWarning):
            damage.append(str(message))
        print(f"{prefix}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield damage


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush into a closed
    pipe does not print a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (a test's capture): nothing to do
        pass


_TABLES: dict[str, tuple[Callable[[str], list[Any]], str]] = {
    "scores": (score_table, "scores"),
    "detection": (detection_table, "OOD detection rows"),
    "calibration": (calibration_table, "calibration rows"),
}


def _scores(logdir: str, *, as_csv: bool, table: str = "scores", damage: Sequence[str] = ()) -> int:
    make, what = _TABLES[table]
    detection = table != "scores"  # the tables that need the logit detectors
    try:
        rows = make(logdir)
    except OSError as error:  # missing, access denied, an unreachable store...
        print(f"deephys-lightning scores: {error}", file=sys.stderr)
        return 2
    if not rows and damage:  # the cause is the damage said above, not the log's content
        more = f" (and {len(damage) - 1} more above)" if len(damage) > 1 else ""
        print(
            f"deephys-lightning scores: no Deephys {what} could be read under {logdir!r}: "
            f"part of the log is damaged or unreadable: {damage[0]}{more}",
            file=sys.stderr,
        )
        return 2
    if not rows:
        print(
            f"deephys-lightning scores: no Deephys {what} under {logdir!r} ({what} need an "
            "OOD set: pass two or more validation dataloaders to a Trainer with "
            "DeephysCallback" + (", whose ood_detectors are not off)" if detection else ")"),
            file=sys.stderr,
        )
        return 1
    if as_csv:
        fields = [field.name for field in dataclasses.fields(type(rows[0]))]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dataclasses.asdict(row) for row in rows)
    else:
        print(format_table(rows))
        if table == "scores":  # what the "left out" column counts, in words
            for note in left_out_notes(logdir):
                print(f"note: {note}")
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        rename = dict(_pair(text) for text in args.rename or [])
        files = export_step(
            args.logdir,
            args.outdir,
            step=args.step,
            run=args.run,
            layers=args.layers,
            model_name=args.name,
            rename=rename,
            dtype=args.dtype,
            skip_non_finite=args.skip_non_finite,
        )
    except (ExportError, OSError) as error:
        print(f"deephys-lightning export: {error}", file=sys.stderr)
        return 2
    for path in (files.model, *files.tests.values()):
        size = path.stat().st_size
        print(f"{path}  ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"{path}  ({size} bytes)")
    for name, count in files.skipped.items():
        print(f"note: {count} images of {name!r} with NaN or infinite values left out of its file")
    return 0


def _report(args: argparse.Namespace) -> int:
    try:
        neurons = [j for text in args.neurons or [] for j in parse_indices(text, "--neurons")]
        path = write_report(
            args.logdir,
            args.out,
            step=args.step,
            run=args.run,
            layer=args.layer,
            neurons=neurons or None,
            images=[image for text in args.images or [] for image in parse_images(text)],
            categories=[
                c for text in args.categories or [] for c in parse_indices(text, "--categories")
            ],
            k=args.k,
        )
    except (ReportError, OSError) as error:
        print(f"deephys-lightning report: {error}", file=sys.stderr)
        return 2
    print(f"{path}  ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


def _pair(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise ExportError(f"--rename takes OLD=NEW, got {text!r}")
    return old, new
