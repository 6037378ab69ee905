"""A report's content as one self-contained HTML page: inline CSS, thumbnails as
``data:`` URIs, no script, and nothing fetched from anywhere (its Content Security
Policy forbids it). Every text from the log (run, layer, dataset and class names,
notes) is escaped with :func:`html.escape`, never inserted as markup.

Example::

    page = render_html(build_report(read_log("lightning_logs/version_0")))
"""

from __future__ import annotations

import base64
import html
import math
from importlib import metadata

from deephys_lightning.report.content import (
    CategorySection,
    Confusion,
    Header,
    ImageSection,
    NeuronSection,
    Picture,
    Report,
    SetOverview,
)
from tensorboard_plugin_deephys.log import derived
from tensorboard_plugin_deephys.log.metadata import Calibration, Detection

# Nothing but inline styles and data: images: a page that cannot reach the network.
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; margin: 0 0 .3em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
h3 { margin: 1.2em 0 .4em; } h4 { margin: .2em 0; font-size: 1em; }
table { border-collapse: collapse; margin: .4em 0 .8em; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0 1em; margin: 0; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; }
.note { color: #8a4b00; margin: .2em 0; }
.columns { display: flex; flex-wrap: wrap; gap: 1em; }
.column { border: 1px solid #e2e2e2; border-radius: 4px; padding: .4em .6em; }
.column.ind { background: #f3f8ff; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; max-width: 440px; }
figure { margin: 0; width: 68px; font-size: 11px; text-align: center; }
figure img, .no-image { width: 64px; height: 64px; image-rendering: pixelated;
  object-fit: contain; border: 1px solid #ccc; display: block; margin: 0 auto; }
.no-image { color: #999; font-size: 10px; line-height: 64px; }
.wrong { color: #b00020; } .muted { color: #777; }
.image-row { display: flex; gap: 1em; align-items: flex-start; flex-wrap: wrap; }
.big img { width: 128px; height: 128px; }
footer { margin-top: 2em; color: #777; font-size: 12px; }
"""


def render_html(report: Report) -> str:
    """The page of ``report``."""
    header = report.header
    title = f"Deephys report: {header.run}, step {header.step}, layer {header.layer}"
    sections = [
        _header(header),
        _contents(report),
        _overview(report.overview, header),
        _neurons(report, header),
    ]
    if report.images:
        sections.append(_images(report, header))
    if report.categories:
        sections.append(_categories(report, header))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + f"\n<footer>Written by deephys-lightning {_e(_version())} from the run's Deephys "
        "log; normalized activations are divided by the neuron's maximum on the "
        "in-distribution set.</footer>\n</body>\n</html>\n"
    )


# -- sections ------------------------------------------------------------------------


def _header(header: Header) -> str:
    facts = [
        ("run", header.run),
        ("step", str(header.step)),
        ("epoch", str(header.epoch)),
        ("stage", header.stage or "unknown"),
        ("layer", header.layer),
        ("neurons", str(header.num_neurons)),
        ("in-distribution set", header.datasets[0]),
        ("OOD sets", ", ".join(header.datasets[1:]) or "none"),
        ("classes", str(len(header.class_names))),
    ]
    if len(header.layers) > 1:
        facts.insert(5, ("layers recorded", ", ".join(header.layers)))
    items = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in facts)
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in header.notes)
    return f'<header>\n<h1>Deephys report</h1>\n<dl class="facts">{items}</dl>\n{notes}</header>'


def _contents(report: Report) -> str:
    links = ['<a href="#overview">Overview</a>', '<a href="#neurons">Neurons</a>']
    if report.images:
        links.append('<a href="#images">Images</a>')
    if report.categories:
        links.append('<a href="#categories">Categories</a>')
    return "<nav>" + " · ".join(links) + "</nav>"


def _overview(sets: tuple[SetOverview, ...], header: Header) -> str:
    rows = []
    for entry in sets:
        size = "" if entry.dataset_size in (None, entry.images) else f" of {entry.dataset_size}"
        rows.append(
            f'<tr data-dataset="{_e(entry.name)}"><td>{_e(entry.name)}</td>'
            f"<td>{_role(entry.role)}</td>"
            f'<td class="num">{entry.images}{size}</td>'
            + _cell(entry.accuracy, _percent(entry.accuracy), "accuracy")
            + (_score_cells(entry.summary) if entry.summary is not None else "<td></td>" * 5)
            + "</tr>"
        )
    table = (
        '<table class="sets"><tr><th>set</th><th>role</th><th>images</th><th>accuracy</th>'
        "<th>novelty mean</th><th>spurious mean</th><th>activation ratio mean</th>"
        "<th>spurious undefined</th><th>dead neurons</th></tr>" + "".join(rows) + "</table>"
    )
    parts = [
        '<section id="overview">\n<h2>Overview</h2>',
        table,
        '<p class="muted">Scores of the OOD sets against the in-distribution set, on layer '
        f"{_e(header.layer)}: means over the live neurons (dead neurons never fire on the "
        "in-distribution set and have no score).</p>",
    ]
    ind_accuracy = sets[0].accuracy
    calibration = [
        _calibration_line(entry.name, entry.calibration, ind_accuracy)
        for entry in sets
        if entry.calibration is not None
    ]
    if calibration:
        parts.append("<h3>Calibration</h3>" + "".join(calibration))
    detection = [(entry.name, row) for entry in sets for row in entry.detection]
    if detection:
        parts.append("<h3>OOD detection</h3>" + _detection_table(detection))
    notes = [note for entry in sets for note in entry.left_out]
    if notes:
        parts.append(
            "<h3>Images left out</h3>" + "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
        )
    parts.append("<h3>Confusion</h3>")
    for entry in sets:
        parts.append(_confusion(entry, header.class_names))
    parts.append("</section>")
    return "\n".join(parts)


def _calibration_line(name: str, found: Calibration, ind_accuracy: float) -> str:
    drop = ind_accuracy - found.accuracy
    return (
        f'<p class="calibration" data-dataset="{_e(name)}"><b>{_e(name)}</b>: '
        f"accuracy {_percent(found.accuracy)} (drop from InD {_percent(drop)}), "
        f"ECE {_number(found.ece)}, failure AUROC {_number(found.failure_auroc)}, "
        f"AURC {_number(found.aurc)} ({found.images} images, {found.unscored} unscored)</p>"
    )


def _detection_table(rows: list[tuple[str, Detection]]) -> str:
    head = (
        '<table class="detection"><tr><th>OOD set</th><th>detector</th><th>layer</th>'
        "<th>AUROC</th><th>AUPR-In</th><th>AUPR-Out</th><th>FPR at 95% TPR</th>"
        "<th>images (InD / OOD)</th><th>note</th></tr>"
    )
    body = "".join(
        f'<tr data-dataset="{_e(name)}"><td>{_e(name)}</td><td>{_e(row.detector)}</td>'
        f"<td>{_e(row.layer or 'logits')}</td>"
        + "".join(
            _cell(getattr(row, metric), _number(getattr(row, metric)), metric)
            for metric in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr")
        )
        + f'<td class="num">{row.ind_images} / {row.ood_images}</td>'
        f"<td>{_e(getattr(row, 'note', '') or '')}</td></tr>"
        for name, row in rows
    )
    return head + body + "</table>"


def _confusion(entry: SetOverview, class_names: tuple[str, ...]) -> str:
    title = f"<h4>{_e(entry.name)}</h4>"
    found = entry.confusion
    if found is None:
        return title + '<p class="note">the labels or predictions cannot be read</p>'
    if found.matrix is not None:
        return title + _matrix(entry.name, found, class_names)
    if not found.top:
        return title + '<p class="muted">no image misclassified</p>'
    rows = "".join(
        f"<tr><td>{_e(_class(a, class_names))}</td><td>{_e(_class(b, class_names))}</td>"
        f'<td class="num">{n}</td></tr>'
        for a, b, n in found.top
    )
    return (
        title + f'<p class="muted">{found.misclassified} images misclassified; the most '
        "frequent confusions:</p>"
        f'<table class="confusions" data-dataset="{_e(entry.name)}"><tr><th>true</th>'
        f"<th>predicted</th><th>images</th></tr>{rows}</table>"
    )


def _matrix(name: str, found: Confusion, class_names: tuple[str, ...]) -> str:
    assert found.matrix is not None
    head = "".join(f"<th>{_e(_class(c, class_names))}</th>" for c in range(len(found.matrix)))
    rows = "".join(
        f"<tr><th>{_e(_class(a, class_names))}</th>"
        + "".join(
            f'<td class="num{"" if a == b or not n else " wrong"}">{n}</td>'
            for b, n in enumerate(row)
        )
        + "</tr>"
        for a, row in enumerate(found.matrix.tolist())
    )
    return (
        f'<table class="confusion" data-dataset="{_e(name)}"><tr><th>true \\ predicted</th>'
        f"{head}</tr>{rows}</table>"
    )


def _neurons(report: Report, header: Header) -> str:
    parts = [
        '<section id="neurons">\n<h2>Neurons</h2>',
        f'<p class="muted">Neurons of {_e(header.layer)}: {_e(report.neurons_chosen_by)}. '
        "Under each image: its label → prediction and the neuron's normalized activation.</p>",
    ]
    parts += [_neuron(section, header) for section in report.neurons]
    parts.append("</section>")
    return "\n".join(parts)


def _neuron(section: NeuronSection, header: Header) -> str:
    dead = " — dead: it never fires on the in-distribution set" if section.dead else ""
    columns = []
    for column in section.columns:
        fires = {True: "fires", False: "does not fire", None: "unknown (NaN)"}[column.fires]
        facts = [f"max {_number(column.maximum)} ({fires})"]
        if column.scores is not None:
            facts += [
                f'{label} <span data-score="{name}" data-value="{_value(column.scores[name])}">'
                f"{_number(column.scores[name])}</span>"
                for name, label in (
                    ("novelty", "novelty"),
                    ("spurious", "spurious"),
                    ("activation_ratio", "activation ratio"),
                )
            ]
        columns.append(
            f'<div class="column {column.role}" data-dataset="{_e(column.dataset)}">'
            f"<h4>{_e(column.dataset)} {_role(column.role)}</h4>"
            f'<p class="muted">{", ".join(facts)}</p>'
            f'<div class="grid">{_figures(column.pictures, header)}</div></div>'
        )
    return (
        f'<section class="neuron" id="neuron-{section.neuron}" data-neuron="{section.neuron}">'
        f"<h3>Neuron {section.neuron}</h3>"
        f'<p class="muted">InD max {_number(section.ind_max)}, mean spurious score across '
        f"the OOD sets {_number(section.mean_spurious)}{dead}</p>"
        f'<div class="columns">{"".join(columns)}</div></section>'
    )


def _images(report: Report, header: Header) -> str:
    parts = ['<section id="images">\n<h2>Images</h2>']
    shown = {section.neuron for section in report.neurons}
    parts += [_image(section, header, shown) for section in report.images]
    parts.append("</section>")
    return "\n".join(parts)


def _image(section: ImageSection, header: Header, shown: set[int]) -> str:
    picture = section.picture
    prediction = picture.prediction
    said = (
        "none (its classifier outputs are not finite)"
        if prediction == derived.NO_PREDICTION
        else _class(prediction, header.class_names)
    )
    wrong = " wrong" if prediction != picture.label else ""
    facts = [
        f"label: {_e(_class(picture.label, header.class_names))}",
        f'<span class="prediction{wrong}">prediction: {_e(said)}</span>',
        f"index {picture.index} of the recorded images (position {section.position} in the set)",
    ]
    if section.top_predictions:
        facts.append(
            "most probable: "
            + ", ".join(
                f"{_e(_class(c, header.class_names))} {_percent(p)}"
                for c, p in section.top_predictions
            )
        )
    neurons = "".join(
        f'<div class="column" data-neuron="{n.neuron}"><h4>{_neuron_link(n.neuron, shown)} '
        f'<span class="muted">{_number(n.value)}</span></h4>'
        f'<div class="grid">{_figures(n.pictures, header)}</div></div>'
        for n in section.neurons
    )
    left_out = "".join(f'<p class="note">{_e(note)}</p>' for note in section.left_out)
    ind = _e(header.datasets[0])
    return (
        f'<section class="image" id="image-{header.datasets.index(picture.dataset)}-'
        f'{picture.index}" data-dataset="{_e(picture.dataset)}" data-index="{picture.index}">'
        f"<h3>Image {picture.index} of {_e(picture.dataset)} {_role(section.role)}</h3>"
        f'<div class="image-row"><div class="big">{_thumbnail(picture, header)}</div>'
        f"<div>{'<br>'.join(facts)}</div></div>"
        f"<p>Its top neurons by normalized activation, each with its top images in {ind}:</p>"
        f'{left_out}<div class="columns">{neurons}</div></section>'
    )


def _categories(report: Report, header: Header) -> str:
    parts = ['<section id="categories">\n<h2>Categories</h2>']
    shown = {section.neuron for section in report.neurons}
    parts += [_category(section, header, shown) for section in report.categories]
    parts.append("</section>")
    return "\n".join(parts)


def _category(section: CategorySection, header: Header, shown: set[int]) -> str:
    columns = []
    for column in section.columns:
        rows = "".join(
            f"<tr><td>{_neuron_link(neuron, shown)}</td>{_cell(mean, _number(mean), 'mean')}</tr>"
            for neuron, mean in column.neurons
        )
        table = (
            f'<table class="top-neurons"><tr><th>neuron</th><th>mean</th></tr>{rows}</table>'
            if rows
            else '<p class="muted">no category means at this step</p>'
        )
        columns.append(
            f'<div class="column {column.role}" data-dataset="{_e(column.dataset)}">'
            f"<h4>{_e(column.dataset)} {_role(column.role)}</h4>"
            f'<p class="muted">{column.images} images, accuracy '
            f'<span data-value="{_value(column.accuracy)}">{_percent(column.accuracy)}</span></p>'
            f"{table}</div>"
        )
    name = _class(section.label, header.class_names)
    return (
        f'<section class="category" id="category-{section.label}" data-label="{section.label}">'
        f"<h3>Category {_e(name)} ({section.label})</h3>"
        '<p class="muted">Per set, the neurons most active on average over its images '
        "(mean normalized activation), and the accuracy on them.</p>"
        f'<div class="columns">{"".join(columns)}</div></section>'
    )


# -- pieces --------------------------------------------------------------------------


def _figures(pictures: tuple[Picture, ...], header: Header) -> str:
    if not pictures:
        return '<p class="muted">no images</p>'
    return "".join(_figure(picture, header) for picture in pictures)


def _figure(picture: Picture, header: Header) -> str:
    label = _class(picture.label, header.class_names)
    prediction = (
        "none"
        if picture.prediction == derived.NO_PREDICTION
        else _class(picture.prediction, header.class_names)
    )
    wrong = ' class="wrong"' if picture.prediction != picture.label else ""
    return (
        f'<figure data-dataset="{_e(picture.dataset)}" data-index="{picture.index}">'
        f"{_thumbnail(picture, header)}<figcaption>#{picture.index}<br>"
        f"<span{wrong}>{_e(label)} → {_e(prediction)}</span><br>"
        f'<span data-value="{_value(picture.value)}">{_number(picture.value)}</span>'
        "</figcaption></figure>"
    )


def _thumbnail(picture: Picture, header: Header) -> str:
    alt = _e(
        f"image {picture.index} of {picture.dataset}, label "
        f"{_class(picture.label, header.class_names)}"
    )
    if picture.png is None:
        return f'<div class="no-image" title="{alt}">no thumbnail</div>'
    encoded = base64.b64encode(picture.png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{alt}">'


def _neuron_link(neuron: int, shown: set[int]) -> str:
    text = f"neuron {neuron}"
    return f'<a href="#neuron-{neuron}">{text}</a>' if neuron in shown else text


def _role(role: str) -> str:
    return (
        '<span class="muted">(InD)</span>' if role == "ind" else '<span class="muted">(OOD)</span>'
    )


def _class(value: int, class_names: tuple[str, ...]) -> str:
    """A class's name (its index where the log has no name for it)."""
    return class_names[value] if 0 <= value < len(class_names) else str(value)


def _cell(value: float, text: str, name: str) -> str:
    """A number's table cell: the text shown, the full value in ``data-value``."""
    return f'<td class="num" data-name="{name}" data-value="{_value(value)}">{text}</td>'


def _score_cells(summary: dict[str, float]) -> str:
    """An OOD set's score means and counts (``OODScores.summary()``) as table cells."""
    means = "".join(
        _cell(summary[name], _number(summary[name]), name)
        for name in ("novelty_mean", "spurious_mean", "activation_ratio_mean")
    )
    counts = "".join(
        f'<td class="num" data-name="{name}" data-value="{int(summary[name])}">'
        f"{int(summary[name])}</td>"
        for name in ("spurious_undefined", "dead_neurons")
    )
    return means + counts


def _value(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def _number(value: float | None, digits: int = 3) -> str:
    """A score as shown: ``digits`` decimals; "—" where there is none (NaN)."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _percent(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:.1f} %"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _version() -> str:
    try:
        return metadata.version("deephys-lightning")
    except metadata.PackageNotFoundError:
        return "(version unknown)"
