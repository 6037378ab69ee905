"""Export to the original Deephys app's files, compared with the ``deephys`` package."""

from __future__ import annotations

import contextlib
import io
import os

import cbor2
import deephys
import numpy as np
import pytest
import torch
from tiny_model import NUM_CLASSES, TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, export, read_log
from deephys_lightning.cli import main as cli_main
from deephys_lightning.export import DeephysModel, ExportError, export_step, write_model, write_test

CLASSES = ["cat", "dög", "<b>bird</b>"]


def _reference_files(tmp_path, name, layers, class_names, activations, images, labels, dtype):
    """The deephys package's files for the same arrays (it prints progress: silenced)."""
    model = deephys.model("tiny", layers, "logits")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        test = deephys.dataset_activity(
            name,
            list(class_names),
            {layer: np.array(a) for layer, a in activations.items()},
            model,
            images,
            labels,
            dtype=dtype,
        )
        model.save(str(tmp_path / "reference.model"))
        test.save(str(tmp_path / f"reference-{name}.test"))
    return tmp_path / "reference.model", tmp_path / f"reference-{name}.test"


def _decode(path):
    return cbor2.loads(path.read_bytes())


def _random_arrays(seed, n=23, width=12, classes=3, size=(5, 7)):
    rng = np.random.default_rng(seed)
    activations = {
        "fc": rng.random((n, width)).astype(np.float32) * 4,
        "conv": np.maximum(rng.normal(size=(n, 4)), 0),  # float64, zeros included
        "logits": rng.normal(size=(n, classes)).astype(np.float32),
    }
    images = rng.random((n, 3, *size))
    labels = rng.integers(0, classes, n)
    return activations, images, labels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_files_equal_the_deephys_package_files(tmp_path, dtype):
    activations, images, labels = _random_arrays(seed=1)
    layers = {"fc": 12, "conv": 4, "logits": 3}
    ref_model, ref_test = _reference_files(
        tmp_path, "ood set", layers, CLASSES, activations, images, labels, dtype
    )
    model = DeephysModel("tiny", layers, "logits")
    ours_model = write_model(tmp_path / "ours.model", model)
    ours_test = write_test(
        tmp_path / "ours.test", model, "ood set", CLASSES, activations, images, labels, dtype=dtype
    )
    # Field by field, as a CBOR reader sees them ...
    assert _decode(ours_model) == _decode(ref_model)
    ours, reference = _decode(ours_test), _decode(ref_test)
    assert list(ours) == list(reference) == ["name", "dtype", "classes", "images"]
    assert ours["classes"] == reference["classes"] == CLASSES
    assert len(ours["images"]) == len(reference["images"]) == len(labels)
    for mine, theirs in zip(ours["images"], reference["images"], strict=True):
        assert list(mine) == list(theirs)
        assert mine == theirs
    # ... and byte for byte.
    assert ours_test.read_bytes() == ref_test.read_bytes()
    # The values follow the package's conventions: big-endian floats, rows of bytes.
    image = ours["images"][5]
    big_endian = ">f4" if dtype == "float32" else ">f8"
    np.testing.assert_array_equal(
        np.frombuffer(image["activations"]["activations"][0], big_endian),
        activations["fc"][5].astype(big_endian),
    )
    assert image["data"][2][4] == bytes((images[5, 2, 4] * 255).astype(np.uint8))
    assert image["category"] == CLASSES[labels[5]] and image["categoryID"] == labels[5]


def test_uint8_images_are_written_as_they_are(tmp_path):
    activations, images, labels = _random_arrays(seed=2, n=300, size=(24, 24))
    pixels = (images * 255).astype(np.uint8)
    model = DeephysModel("tiny", {"fc": 12, "conv": 4, "logits": 3}, "logits")
    from_floats = write_test(tmp_path / "a.test", model, "d", CLASSES, activations, images, labels)
    from_bytes = write_test(tmp_path / "b.test", model, "d", CLASSES, activations, pixels, labels)
    assert from_floats.read_bytes() == from_bytes.read_bytes()
    decoded = _decode(from_bytes)["images"]
    assert [d["imageID"] for d in decoded] == list(range(300))  # across write blocks
    assert bytes(pixels[299, 1, 23]) == decoded[299]["data"][1][23]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f4", "strided"])
def test_float_pixels_are_times_255_in_their_own_precision_truncated(tmp_path, dtype):
    activations, images, labels = _random_arrays(seed=4, n=150, size=(4, 5))
    if dtype == "strided":  # channels last in memory, as a transposed array is
        dtype, images = np.float32, np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        images = images.transpose(0, 3, 1, 2)
    images = images.astype(dtype)  # ">f4": big-endian, as np.frombuffer or h5py give
    native = np.dtype(dtype).newbyteorder("=").type
    images[0, 0, 0, :3] = [0.0, 1.0, -0.0]  # the ends of the range, and a -0.0
    images[1] = np.asarray(254.99 / 255, dtype)  # rounds up to 255 or stays at 254
    model = DeephysModel("tiny", {"fc": 12, "conv": 4, "logits": 3}, "logits")
    path = write_test(tmp_path / "f.test", model, "d", CLASSES, activations, images, labels)
    expected = (images.astype(native) * native(255)).astype(np.uint8)
    decoded = _decode(path)["images"]
    for i in (0, 1, 149):
        assert [list(rows) for rows in decoded[i]["data"]] == [
            [bytes(row) for row in channel] for channel in expected[i]
        ]
    outside = images.copy()
    outside[140, 2, 3, 4] = native(1.001)
    with pytest.raises(ExportError, match="image 140 holds"):
        write_test(tmp_path / "g.test", model, "d", CLASSES, activations, outside, labels)


@pytest.mark.skipif(not hasattr(os, "writev"), reason="os.writev is POSIX's")
def test_short_writes_and_more_pieces_than_one_call_takes_lose_no_byte(tmp_path, monkeypatch):
    # A regular file takes whole writes; a signal can cut one short. Each writev here
    # writes at most 7 bytes, and takes at most 3 buffers.
    activations, images, labels = _random_arrays(seed=3, n=300, size=(6, 6))
    model = DeephysModel("tiny", {"fc": 12, "conv": 4, "logits": 3}, "logits")
    whole = write_test(tmp_path / "whole.test", model, "d", CLASSES, activations, images, labels)
    real_writev = os.writev
    calls = []

    def short_writev(descriptor, buffers):
        calls.append(len(buffers))
        assert len(buffers) <= 3
        return real_writev(descriptor, [b"".join(buffers)[:7]])

    monkeypatch.setattr(export, "_MAX_PIECES", 3)
    monkeypatch.setattr(os, "writev", short_writev)
    cut = write_test(tmp_path / "cut.test", model, "d", CLASSES, activations, images, labels)
    assert calls and max(calls) == 3
    assert cut.read_bytes() == whole.read_bytes()


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export_log")
    torch.manual_seed(0)
    model = TinyNet()
    callback = DeephysCallback(layers=["fc", "features.0"], class_names=CLASSES)
    run = trainer(tmp_path, [callback])
    run.fit(
        model,
        loader(random_set(24, 0)),
        val_dataloaders={"ind": loader(random_set(10, 1)), "ood/x": loader(random_set(7, 2))},
    )
    model.eval()
    with torch.no_grad():
        outputs = {
            name: model(random_set(n, seed).tensors[0])
            for name, n, seed in (("ind", 10, 1), ("ood/x", 7, 2))
        }
    return run.logger.log_dir, outputs


def test_the_callback_records_the_classifier_outputs(recorded_run):
    log_dir, outputs = recorded_run
    log = read_log(log_dir)
    for name, expected in outputs.items():
        logits = log.logits(name, log.steps[-1])
        assert logits.dtype == np.float32 and logits.shape == (len(expected), NUM_CLASSES)
        np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(logits.argmax(1), log.predictions(name, log.steps[-1]))


def test_export_step_writes_what_the_deephys_package_writes(recorded_run, tmp_path):
    log_dir, _ = recorded_run
    log = read_log(log_dir)
    step = log.steps[0]
    files = export_step(log_dir, tmp_path / "out", step=step)
    assert files.model.name == "tiny_version_0.model"
    assert {name: path.name for name, path in files.tests.items()} == {
        "ind": "ind.test",
        "ood/x": "ood_x.test",
    }
    model = _decode(files.model)
    assert model["name"] == "tiny/version_0" and model["classification_layer"] == "logits"
    assert [(layer["layerID"], len(layer["neurons"])) for layer in model["layers"]] == [
        ("fc", 5),
        ("features.0", 4),
        ("logits", NUM_CLASSES),
    ]
    for name, path in files.tests.items():
        activations = {
            "fc": log.activations("fc", name, step).astype(np.float32),
            "features.0": log.activations("features.0", name, step).astype(np.float32),
            "logits": log.logits(name, step),
        }
        # The package wants float pixels; x / 255 comes back as x when it scales by 255.
        images = log.thumbnails(name, step).transpose(0, 3, 1, 2) / 255.0
        labels = log.labels(name, step).astype(np.int64)
        layers = {"fc": 5, "features.0": 4, "logits": NUM_CLASSES}
        reference = _reference_files(
            tmp_path,
            name.replace("/", "_"),
            layers,
            CLASSES,
            activations,
            images,
            labels,
            "float32",
        )
        ours = _decode(path)
        theirs = _decode(reference[1])
        theirs["name"] = name  # the reference was named for its file
        assert ours == theirs
        assert _decode(files.model) == {**_decode(reference[0]), "name": "tiny/version_0"}


def test_export_from_the_command_line(recorded_run, tmp_path, capsys):
    log_dir, _ = recorded_run
    out = tmp_path / "cli"
    assert cli_main(["export", log_dir, str(out), "--layer", "fc", "--name", "my model"]) == 0
    printed = capsys.readouterr().out
    assert "my_model.model" in printed and "ind.test" in printed
    model = _decode(out / "my_model.model")
    assert model["name"] == "my model"
    assert [layer["layerID"] for layer in model["layers"]] == ["fc", "logits"]
    assert cli_main(["export", log_dir, str(out), "--step", "12345"]) == 2
    assert "no Deephys record at step 12345" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"record_logits": False}, "record_logits=True"),
        ({"max_activation_bytes": 0}, "max_activation_bytes=None"),
        ({"thumbnails": False}, "thumbnails=True"),
        ({"relu": False}, "relu=True"),
    ],
)
def test_missing_data_is_a_clear_error(tmp_path, options, message):
    torch.manual_seed(0)
    run = trainer(tmp_path, [DeephysCallback("fc", CLASSES, **options)], max_epochs=1)
    model = TinyNet()
    with torch.no_grad():
        model.fc.bias.fill_(-0.5)  # negative outputs before ReLU
    run.validate(model, {"ind": loader(random_set(8, 1)), "ood": loader(random_set(6, 2))})
    with pytest.raises(ExportError, match=message):
        export_step(run.logger.log_dir, tmp_path / "out")


def test_the_formats_limits_are_clear_errors(tmp_path):
    activations, images, labels = _random_arrays(seed=3, n=4)
    layers = {"fc": 12, "conv": 4, "logits": 3}
    with pytest.raises(ExportError, match="at most 40"):
        DeephysModel("m" * 41, layers, "logits")
    with pytest.raises(ExportError, match="at most 30"):
        DeephysModel("m", {"x" * 31: 2, "logits": 3}, "logits")
    with pytest.raises(ExportError, match="not one of the layers"):
        DeephysModel("m", layers, "head")
    model = DeephysModel("m", layers, "logits")

    def write(**changes):
        arguments = {
            "name": "d",
            "class_names": CLASSES,
            "activations": activations,
            "images": images,
            "labels": labels,
            **changes,
        }
        write_test(tmp_path / "x.test", model, **arguments)

    with pytest.raises(ExportError, match="at most 40"):
        write(name="d" * 41)
    with pytest.raises(ExportError, match="negative"):
        write(activations={**activations, "fc": -activations["fc"]})
    with pytest.raises(ExportError, match="NaN"):
        write(activations={**activations, "fc": activations["fc"] * np.nan})
    with pytest.raises(ExportError, match=r"\[N, 3, H, W\]"):
        write(images=images[:, :1])
    with pytest.raises(ExportError, match=r"in \[0, 1\]"):
        write(images=images * 2)
    with pytest.raises(ExportError, match="one name per class"):
        write(class_names=CLASSES[:2])
    with pytest.raises(ExportError, match="class indices"):
        write(labels=labels + 3)
    with pytest.raises(ExportError, match=r"\[4 images, 12 neurons\]"):
        write(activations={**activations, "fc": activations["fc"][:, :5]})
    # Negative values are fine in the classification layer (logits).
    write(activations={**activations, "logits": -np.abs(activations["logits"])})


@pytest.mark.parametrize(
    ("options", "recorded"),
    [
        ({}, True),
        ({"max_activation_bytes": 0}, False),  # no matrix: nothing to export them with
        ({"max_activation_bytes": 0, "record_logits": True}, True),
        ({"record_logits": False}, False),
    ],
)
def test_when_the_classifier_outputs_are_recorded(tmp_path, options, recorded):
    run = trainer(tmp_path, [DeephysCallback("fc", CLASSES, **options)])
    run.validate(TinyNet(), {"ind": loader(random_set(8, 1)), "ood": loader(random_set(6, 2))})
    log = read_log(run.logger.log_dir)
    if recorded:
        assert log.logits("ood", log.steps[-1]).shape == (6, NUM_CLASSES)
    else:
        with pytest.raises(KeyError, match="record_logits=True"):
            log.logits("ood", log.steps[-1])


def test_record_logits_must_be_a_bool_or_none():
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="record_logits"):
        DeephysCallback("fc", record_logits="yes")


def test_a_bad_value_leaves_no_file_behind(tmp_path):
    activations, images, labels = _random_arrays(seed=4, n=300)
    images[250, 0, 1, 2] = 1.5  # found while writing the second block of images
    model = DeephysModel("m", {"fc": 12, "conv": 4, "logits": 3}, "logits")
    with pytest.raises(ExportError, match=r"image 250 holds .* to 1\.5"):
        write_test(tmp_path / "d.test", model, "d", CLASSES, activations, images, labels)
    assert list(tmp_path.iterdir()) == []


def test_values_too_large_for_float32_are_an_error(tmp_path):
    activations, images, labels = _random_arrays(seed=5, n=4)
    activations["logits"] = activations["logits"].astype(np.float64) * 1e39
    model = DeephysModel("m", {"fc": 12, "conv": 4, "logits": 3}, "logits")
    with pytest.raises(ExportError, match="too large for float32"):
        write_test(tmp_path / "d.test", model, "d", CLASSES, activations, images, labels)
    write_test(
        tmp_path / "d.test", model, "d", CLASSES, activations, images, labels, dtype="float64"
    )


def test_rename_datasets_and_layers(recorded_run, tmp_path, capsys):
    log_dir, _ = recorded_run
    files = export_step(log_dir, tmp_path, layers=["fc"], rename={"ood/x": "shifted", "fc": "fc1"})
    assert files.tests["ood/x"].name == "shifted.test"
    assert _decode(files.tests["ood/x"])["name"] == "shifted"
    assert [layer["layerID"] for layer in _decode(files.model)["layers"]] == ["fc1", "logits"]
    long_name = {"ind": "i" * 41}
    with pytest.raises(ExportError, match="--rename OLD=NEW"):
        export_step(log_dir, tmp_path / "long", rename=long_name)
    assert not (tmp_path / "long").exists()  # checked before anything is written
    with pytest.raises(ExportError, match="neither datasets"):
        export_step(log_dir, tmp_path, rename={"nope": "x"})
    assert (
        cli_main(
            ["export", log_dir, str(tmp_path / "c"), "--rename", "ind=in", "--rename", "ood/x=o"]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "c").glob("*.test")) == ["in.test", "o.test"]
    assert cli_main(["export", log_dir, str(tmp_path), "--rename", "ind"]) == 2
    assert "OLD=NEW" in capsys.readouterr().err


def test_an_output_path_that_is_a_file_is_a_clear_error(recorded_run, tmp_path, capsys):
    log_dir, _ = recorded_run
    (tmp_path / "taken").write_text("")
    assert cli_main(["export", log_dir, str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.startswith("deephys-lightning export: ")


def test_file_names_differ_on_case_insensitive_file_systems():
    from deephys_lightning.export import _file_names

    assert _file_names(["m", "MNIST", "mnist", "a/b", "a b"]) == [
        "m",
        "MNIST",
        "mnist_2",
        "a_b",
        "a_b_2",
    ]


def test_wrong_types_are_clear_errors(tmp_path):
    activations, images, labels = _random_arrays(seed=6, n=4)
    with pytest.raises(ExportError, match="must be an int"):
        DeephysModel("m", {"fc": 2.7, "logits": 3}, "logits")
    model = DeephysModel("m", {"fc": 12, "conv": 4, "logits": 3}, "logits")
    with pytest.raises(ExportError, match="float64 of shape"):
        write_test(tmp_path / "d.test", model, "d", CLASSES, activations, images, labels * 1.0)
    tensors = {name: torch.tensor(a, requires_grad=True) for name, a in activations.items()}
    write_test(tmp_path / "t.test", model, "d", CLASSES, tensors, torch.tensor(images), labels)
    reference = write_test(tmp_path / "r.test", model, "d", CLASSES, activations, images, labels)
    assert (tmp_path / "t.test").read_bytes() == reference.read_bytes()
