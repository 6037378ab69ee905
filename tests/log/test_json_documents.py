"""The one parser of the log's JSON (``tensorboard_plugin_deephys.log.json_documents``):
numbers, nesting and types bounded field by field, and a malformed item spoiling that
item only: on its own, and end to end, with real event files rewritten as a damaged or
foreign log would hold them, read by the plugin (both TensorBoard loaders), read_log,
the scores command and export."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import struct
import time

import fault_tally
import pytest
from cli_run import deephys_command
from event_surgery import rewrite_events
from plugin_client import plugin_client
from tensorboard_process import running_tensorboard
from tiny_model import TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.export import export_step
from tensorboard_plugin_deephys.log import metadata
from tensorboard_plugin_deephys.log.json_documents import (
    MAX_DEPTH,
    MAX_INT,
    Fields,
    MalformedDocument,
    parse_json,
)
from tensorboard_plugin_deephys.log.metadata import (
    Detection,
    Kind,
    Record,
    ThumbnailReference,
    read_plugin_content,
)

NESTED = b"[" * 5000 + b"]" * 5000
BIG = "@1e400@"  # json.dumps writes infinity as Infinity: this becomes the literal 1e400


def _dumps(value) -> bytes:
    return json.dumps(value).replace(f'"{BIG}"', "1e400").encode()


# -- the parser --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, words",
    [
        (b'{"n": 1e400}', "1e400 is out of range"),
        (b'{"n": -1e400}', "-1e400 is out of range"),
        (json.dumps({"n": 1e308 * 10}).encode(), "Infinity"),
        (b'{"n": NaN}', "NaN"),
        (b'{"n": -Infinity}', "-Infinity"),
        (b'{"n": 9007199254740992}', "out of range"),  # 2**53
        (b'{"n": -9007199254740992}', "out of range"),
        (b'{"n": ' + b"9" * 5000 + b"}", "out of range"),  # past int()'s digit limit
        (NESTED, f"deeper than {MAX_DEPTH}"),
        (b'{"a": ' * 40 + b"1" + b"}" * 40, f"deeper than {MAX_DEPTH}"),
        (b"not json", "not JSON"),
        (b'{"a": 1', "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b" " * 100, "not JSON"),
    ],
)
def test_parse_json_refuses_what_is_out_of_bounds(raw, words):
    with pytest.raises(MalformedDocument, match="a test document is malformed: .*" + words):
        parse_json(raw, "a test document")


def test_parse_json_reads_what_is_within_bounds():
    assert parse_json(b'{"n": 9007199254740991, "x": -1.5e300}', "it") == {
        "n": MAX_INT - 1,
        "x": -1.5e300,
    }
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json(nested, "it") is not None
    # brackets inside texts are not nesting
    assert parse_json(json.dumps({"name": "[" * 5000}).encode(), "it") == {"name": "[" * 5000}
    assert math.isnan(parse_json(b"[NaN]", "it", allow_nan=True)[0])
    with pytest.raises(MalformedDocument, match="Infinity"):
        parse_json(b"[Infinity]", "it", allow_nan=True)
    with pytest.raises(MalformedDocument, match="bytes long"):
        parse_json(b"[" + b"1," * 100 + b"1]", "it", max_bytes=100)


@pytest.mark.parametrize(
    "read, value, words",
    [
        (lambda f: f.text("name"), ["a"], "'name' is a list of 1, not a text"),
        (lambda f: f.text("name"), {"a": 1}, "'name' is an object of 1 fields"),
        (lambda f: f.optional_text("name"), ["a"], "not a text or null"),
        (lambda f: f.count("name"), "3", "'name' is the text '3', not an integer"),
        (lambda f: f.count("name"), 3.0, "not an integer"),
        (lambda f: f.count("name"), True, "a boolean, not an integer"),
        (lambda f: f.count("name"), -1, "out of range"),
        (lambda f: f.texts("name"), ["a", ["b"]], "not a text \\(in a list of texts\\)"),
        (lambda f: f.counts("name"), [1, -2], "out of range"),
        (lambda f: f.counts_by_name("name"), {"a": "1"}, "not an integer"),
        (lambda f: f.number("name"), "1", "not a number"),
        (lambda f: f.number("name"), math.nan, "not a number"),
        (lambda f: f.boolean("name"), 1, "not true or false"),
    ],
)
def test_fields_are_read_as_their_types(read, value, words):
    with pytest.raises(MalformedDocument, match=words):
        read(Fields({"name": value}, "a test document"))


def test_fields_name_what_is_missing_and_take_defaults():
    fields = Fields({"a": None}, "a test document")
    with pytest.raises(MalformedDocument, match="it has no 'b'"):
        fields.count("b")
    assert fields.count("b", 7) == 7 and fields.texts("a", ()) == ()
    assert math.isnan(fields.number("a", allow_nan=True))
    with pytest.raises(MalformedDocument, match="a list of 2, not an object"):
        Fields([1, 2], "a test document")


# -- each document of the log -------------------------------------------------------

CONTENT = {"version": 1, "kind": "labels", "dataset": "ood"}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"version": BIG}, "out of range"),
        ({"version": "1"}, "not an integer"),
        ({"version": 1.0}, "not an integer"),
        ({"dataset": ["ood"]}, "'dataset' is a list"),
        ({"dataset": {"a": 1}}, "'dataset' is an object"),
        ({"layer": ["fc"]}, "'layer' is a list"),
        ({"kind": ["labels"]}, "'kind' is a list"),
        ({"version": None}, "not an integer"),
    ],
)
def test_malformed_plugin_content_is_malformed_not_newer(change, words):
    raw = _dumps({**CONTENT, **change})
    with pytest.raises(MalformedDocument, match=words):
        read_plugin_content(raw)
    assert metadata.parse_plugin_content(raw) is None  # the lenient form: skipped
    for raw in (NESTED, b'{"version": 1e400, "kind": "labels"}', b"[]", b""):
        with pytest.raises(MalformedDocument):
            read_plugin_content(raw)


def test_newer_plugin_content_is_skipped_not_malformed():
    assert read_plugin_content(json.dumps({**CONTENT, "version": 2}).encode()) is None
    assert read_plugin_content(json.dumps({**CONTENT, "kind": "later"}).encode()) is None
    content = read_plugin_content(json.dumps(CONTENT).encode())
    assert content is not None and content.kind is Kind.LABELS and content.dataset == "ood"


RECORD = Record(
    step=3,
    epoch=0,
    layers=("fc",),
    datasets=("ind", "ood"),
    class_names=("a", "b"),
    num_images={"ind": 12, "ood": 8},
    top_k=4,
    dataset_sizes={"ind": 12, "ood": None},
    arrays=("deephys.data/ind/labels",),
)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"step": BIG}, "out of range"),
        ({"step": -1}, "'step' is -1, out of range"),
        ({"epoch": "0"}, "'epoch' is the text"),
        ({"num_images": {"ind": BIG}}, "out of range"),
        ({"num_images": {"ind": -3}}, "out of range"),
        ({"num_images": [12]}, "not an object of counts"),
        ({"layers": [["fc"]]}, "not a text"),
        ({"datasets": [{"ind": 1}]}, "not a text"),
        ({"datasets": []}, "'datasets' is empty"),
        ({"class_names": "ab"}, "not a list of texts"),
        ({"top_k": 2**60}, "out of range"),
        ({"top_k": 0}, "'top_k' is 0, out of range"),
        ({"dataset_sizes": {"ood": "8"}}, "not an integer"),
        ({"arrays": [1]}, "not a text"),
        ({"relu": "yes"}, "not true or false"),
        ({"version": BIG}, "out of range"),
    ],
)
def test_a_malformed_record_names_its_field(change, words):
    raw = _dumps({**json.loads(RECORD.to_json()), **change})
    with pytest.raises(MalformedDocument, match=words):
        Record.parse(raw)
    assert Record.from_json(raw) is None  # the lenient form
    assert Record.parse(RECORD.to_json()) == RECORD
    assert Record.from_json(NESTED) is None


def test_thumbnail_references_and_detection_rows_are_bounded():
    name = metadata.thumbnail_asset_name("ind", "ab" * 16)
    for bad in ({"count": BIG}, {"count": "7"}, {"shape": [8, 8, BIG]}, {"file": ["x"]}):
        raw = _dumps({"file": name, "count": 7, "shape": [8, 8, 3], **bad})
        with pytest.raises(MalformedDocument, match="thumbnail reference"):
            ThumbnailReference.from_json(raw)
    with pytest.raises(MalformedDocument, match="deeper than"):
        ThumbnailReference.from_json(NESTED)
    row = json.loads(Detection.list_to_json([Detection("msp", None, 0.5, 0.5, 0.5, 0.1, 3, 4)]))
    # NaN is allowed where the rows allow it (a set without images), as null or NaN
    for metric in (None, math.nan):
        back = Detection.list_from_json(json.dumps([{**row[0], "auroc": metric}]).encode())
        assert math.isnan(back[0].auroc)
    for bad in (
        {"auroc": BIG},
        {"ind_images": BIG},
        {"ind_images": -1},
        {"detector": ["msp"]},
        {"layer": {"fc": 1}},
    ):
        with pytest.raises(MalformedDocument, match="unreadable detection rows"):
            Detection.list_from_json(_dumps([{**row[0], **bad}]))
    with pytest.raises(MalformedDocument, match="deeper than"):
        Detection.list_from_json(NESTED)


# -- end to end: one malformed item next to healthy ones -------------------------------

RECORD_TAG = "deephys.data/record"
VAL = {"ind": (12, 1), "ood": (8, 2)}


def _set_content(tag, content: bytes):
    """A ``change`` for ``rewrite_events``: the plugin content of ``tag`` becomes ``content``."""

    def change(event):
        for value in event.summary.value:
            if value.tag == tag:
                value.metadata.plugin_data.content = content
        return event

    return change


def _set_document(tag, step, document: bytes):
    """A ``change``: the JSON document of ``tag`` at ``step`` becomes ``document``."""

    def change(event):
        for value in event.summary.value if event.step == step else ():
            if value.tag == tag:
                del value.tensor.string_val[:]
                value.tensor.string_val.append(document)
        return event

    return change


def _content(**fields) -> bytes:
    return json.dumps(fields).encode()


# run -> (how its events change, the words its refusals hold)
CONTENT_CASES = {
    "record_version": (
        _set_content(RECORD_TAG, b'{"version": 1e400, "kind": "record"}'),
        "out of range",
    ),
    "labels_dataset_list": (
        _set_content(
            "deephys.data/ood/labels", _content(version=1, kind="labels", dataset=["ood"])
        ),
        "'dataset' is a list",
    ),
    "image_top_neurons_layer_dict": (
        _set_content(
            "deephys.data/fc/ood/image_top_neurons",
            _content(version=1, kind="image_top_neurons", layer={"fc": 1}, dataset="ood"),
        ),
        "'layer' is an object",
    ),
    "top_indices_nested": (
        _set_content("deephys.data/fc/ood/top_indices", NESTED),
        "deeper than",
    ),
}
DOCUMENT_CASES = {
    "record_step": (
        _set_document(RECORD_TAG, 3, _dumps({**json.loads(RECORD.to_json()), "step": BIG})),
        "out of range",
    ),
    "thumbnail_count": (
        None,  # made from the run's own reference in the fixture
        "thumbnail reference of 'ind' is malformed",
    ),
    "detection_nested": (
        _set_document("deephys.data/ood/detection", 3, NESTED),
        "deeper than",
    ),
}


def _events(run_dir) -> str:
    (path,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*.deephys"))
    return path


def _reference_with_count(count):
    """A ``change``: every thumbnail reference of ``ind`` with ``count`` as its count."""

    def change(event):
        for value in event.summary.value:
            if value.tag == "deephys.data/ind/thumbnails":
                raw = json.loads(value.tensor.string_val[0])
                text = json.dumps({**raw, "count": 0}).replace('"count": 0', f'"count": {count}')
                value.tensor.string_val[0] = text.encode()
        return event

    return change


def _pack_with_header(run_dir, header: bytes) -> None:
    """Rewrite the ``.thumbs`` packs of ``run_dir`` with ``header`` as their JSON header."""
    folder = os.path.join(run_dir, *metadata.ASSET_ROOT.split("/"), metadata.THUMBNAIL_DIR)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        with open(path, "rb") as handle:
            data = handle.read()
        (length,) = struct.unpack("<I", data[8:12])
        rest = data[12 + length :]
        with open(path, "wb") as handle:
            handle.write(data[:8] + struct.pack("<I", len(header)) + header + rest)


@pytest.fixture(scope="module")
def malformed_logs(tmp_path_factory):
    """A logdir with a healthy run and, beside it, one run per case: the same events
    with one plugin content or one document made malformed."""
    base = tmp_path_factory.mktemp("malformed")
    t = trainer(base / "source", [DeephysCallback(layer="fc")], max_epochs=2)
    loaders = {name: loader(random_set(n, seed)) for name, (n, seed) in VAL.items()}
    t.fit(TinyNet(), loader(random_set(12, 0)), val_dataloaders=loaders)
    source = t.logger.log_dir
    logdir = base / "logs"
    shutil.copytree(source, logdir / "healthy")
    for run, (change, _) in {**CONTENT_CASES, **DOCUMENT_CASES}.items():
        if run == "thumbnail_count":
            change = _reference_with_count("1e400")
        rewrite_events(source, logdir / run, change)
    shutil.copytree(source, logdir / "thumbs_header")
    _pack_with_header(str(logdir / "thumbs_header"), b'{"count": 1e400, "shape": [8, 8, 3]}')
    return logdir


def _get(client, route, **params):
    response = client.get(f"/data/plugin/deephys/{route}", query_string=params)
    fault_tally.TOTALS["5xx"] += response.status_code >= 500
    return response


def _refused(response, run, *words):
    """A 4xx JSON answer that names the run and holds ``words``."""
    assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json["error"]
    assert repr(run) in error, error
    for word in words:
        assert word in error, error


def _healthy_answers(client):
    listing = _get(client, "runs")
    assert listing.status_code == 200
    runs = {r["run"]: r for r in listing.json["runs"]}
    assert [s["step"] for s in runs["healthy"]["steps"]] == [3, 6]
    assert _get(client, "neuron", run="healthy", layer="fc", neuron=0).status_code == 200
    assert _get(client, "summary", run="healthy", layer="fc").status_code == 200
    thumbnail = _get(client, "thumbnail", run="healthy", dataset="ind", index=0)
    assert thumbnail.status_code == 200 and thumbnail.data[:4] == b"\x89PNG"
    return listing.json


@pytest.mark.fault
@pytest.mark.parametrize("run", list(CONTENT_CASES))
def test_malformed_plugin_content_spoils_its_tag_only(malformed_logs, run):
    words = CONTENT_CASES[run][1]
    client = plugin_client(malformed_logs)
    listing = _healthy_answers(client)
    listed = {r["run"]: r for r in listing["runs"]}
    if run == "record_version":  # no record left: the run is unavailable, with its cause
        (entry,) = [u for u in listing["unavailable"] if u["run"] == run]
        assert "malformed plugin content" in entry["error"] and words in entry["error"]
        for route, params in (
            ("neuron", {"layer": "fc"}),
            ("summary", {"layer": "fc"}),
            ("thumbnail", {"dataset": "ind"}),
        ):
            _refused(_get(client, route, run=run, **params), run, "malformed", words)
        return
    # the run is listed; the record's steps say which tag is missing
    tag = {
        "labels_dataset_list": "deephys.data/ood/labels",
        "image_top_neurons_layer_dict": "deephys.data/fc/ood/image_top_neurons",
        "top_indices_nested": "deephys.data/fc/ood/top_indices",
    }[run]
    assert all(tag in step["missing"] for step in listed[run]["steps"])
    assert _get(client, "thumbnail", run=run, dataset="ind", index=0).status_code == 200
    answers = [
        _get(client, "summary", run=run, layer="fc"),
        _get(client, "neuron", run=run, layer="fc", neuron=0),
        _get(client, "image", run=run, layer="fc", dataset="ood", index=0),
    ]
    refused = [a for a in answers if a.status_code != 200]
    assert refused, "some view needs the tag"
    for answer in refused:
        _refused(answer, run)
    assert any(words in a.json["error"] for a in refused)


@pytest.mark.fault
def test_malformed_documents_are_refused_for_their_step_only(malformed_logs):
    client = plugin_client(malformed_logs)
    listing = _healthy_answers(client)
    listed = {r["run"]: r for r in listing["runs"]}
    # a record whose step is 1e400: its step is left out, the other one is served
    assert [s["step"] for s in listed["record_step"]["steps"]] == [6]
    _refused(
        _get(client, "summary", run="record_step", layer="fc", step=3),
        "record_step",
        "step 3",
        "out of range",
    )
    assert _get(client, "summary", run="record_step", layer="fc", step=6).status_code == 200
    # a thumbnail reference whose count is 1e400
    _refused(
        _get(client, "thumbnail", run="thumbnail_count", dataset="ind", index=0),
        "thumbnail_count",
        "step 6",
        "thumbnail reference of 'ind' is malformed",
    )
    assert _get(client, "neuron", run="thumbnail_count", layer="fc").status_code == 200
    # detection rows nested 5,000 deep at step 3
    _refused(
        _get(client, "summary", run="detection_nested", layer="fc", step=3),
        "detection_nested",
        "step 3",
        "deeper than",
    )
    assert _get(client, "summary", run="detection_nested", layer="fc", step=6).status_code == 200
    # a .thumbs pack whose header counts 1e400 images
    _refused(
        _get(client, "thumbnail", run="thumbs_header", dataset="ind", index=0),
        "thumbs_header",
        "out of range",
    )
    assert _get(client, "neuron", run="thumbs_header", layer="fc").status_code == 200


@pytest.mark.fault
@pytest.mark.parametrize("load_fast", [False, True], ids=["load_fast=false", "load_fast=true"])
def test_a_real_tensorboard_serves_the_healthy_runs_beside_malformed_ones(
    malformed_logs, load_fast
):
    with running_tensorboard(malformed_logs, load_fast=load_fast) as base:
        url = f"{base}/data/plugin/deephys"
        listing = None
        for _ in range(60):  # until every run is loaded
            listing = fault_tally.get(f"{url}/runs").json()
            if {r["run"] for r in listing["runs"]} >= {"healthy", "record_step"}:
                break
            time.sleep(0.5)
        assert listing is not None
        assert "healthy" in {r["run"] for r in listing["runs"]}
        assert fault_tally.get(f"{url}/neuron", run="healthy", layer="fc").status_code == 200
        image = fault_tally.get(f"{url}/thumbnail", run="healthy", dataset="ind", index=0)
        assert image.status_code == 200
        for run in [*CONTENT_CASES, *DOCUMENT_CASES, "thumbs_header"]:
            for route, params in (
                ("neuron", {"layer": "fc"}),
                ("summary", {"layer": "fc", "step": 3}),
                ("thumbnail", {"dataset": "ind", "index": 0}),
            ):
                response = fault_tally.get(f"{url}/{route}", run=run, **params)
                assert response is not None and response.status_code < 500, (run, route)
                if response.status_code >= 400:
                    assert run in response.json()["error"]
        assert fault_tally.get(f"{url}/runs").status_code == 200  # alive


@pytest.mark.fault
def test_read_log_scores_and_export_skip_the_malformed_run_with_one_warning(
    malformed_logs, tmp_path
):
    logdir = tmp_path / "logs"
    shutil.copytree(malformed_logs / "healthy", logdir / "healthy")
    shutil.copytree(malformed_logs / "record_version", logdir / "bad")
    log = read_log(logdir, run="healthy")
    assert log.steps == (3, 6) and log.labels("ood").shape == (8,)
    with (
        pytest.warns(UserWarning, match="run 'bad': left out, .*malformed.*out of range"),
        pytest.raises(ValueError, match="no Deephys data in run 'bad' .*malformed"),
    ):
        read_log(logdir, run="bad")
    done = deephys_command("scores", str(logdir), "--csv")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warned = [line for line in done.stderr.splitlines() if "'bad'" in line]
    assert len(warned) == 1 and "warning" in warned[0] and "malformed" in warned[0], done.stderr
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    assert sorted(int(r[1]) for r in rows if r[0] == "healthy") == [3, 6]
    files = export_step(logdir, tmp_path / "export", run="healthy")
    assert files


@pytest.mark.fault
def test_read_log_skips_a_malformed_record_and_tag_with_one_warning_each(malformed_logs):
    with pytest.warns(UserWarning, match="the record at step 3 left out") as seen:
        log = read_log(malformed_logs, run="record_step")
    assert log.steps == (6,)
    assert sum("'record_step'" in str(w.message) for w in seen) == 1
    with pytest.warns(UserWarning, match="tag 'deephys.data/ood/labels' left out"):
        log = read_log(malformed_logs, run="labels_dataset_list")
    assert log.steps == (3, 6)
    with pytest.raises(KeyError, match="malformed"):
        log.labels("ood")
    with pytest.raises(KeyError, match="step 3: unreadable detection rows of 'ood'"):
        read_log(malformed_logs, run="detection_nested").detection("ood", 3)
