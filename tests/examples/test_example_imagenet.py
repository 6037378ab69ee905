"""examples/imagenet.py end to end, offline, on a few generated JPEGs in the real layouts.

ImageNet val, ImageNet-Sketch and Stylized-ImageNet: synset folders; ImageNetV2:
class-index folders. The weights are torchvision's ResNet18 with a rigged ``fc``
(every image predicted as one class), so the tests can see that the file was loaded.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import models
from torchvision.datasets.imagenette import Imagenette

from deephys_lightning import read_log

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "imagenet.py"
_spec = importlib.util.spec_from_file_location("example_imagenet", EXAMPLE)
imagenet = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = imagenet
_spec.loader.exec_module(imagenet)

CATEGORIES = tuple(models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
CACHE_FILE = "resnet18-f37072fd.pth"
# synset -> class index: tench 0, English springer 217, toilet tissue 999
VAL_CLASSES = {"n01440764": 0, "n02102040": 217, "n15075141": 999}
# ImageNetV2 folders are class indices; ImageFolder sorts them as strings: 10, 2, 999
V2_FOLDERS = ("2", "10", "999")
FAST = ["--batch-size", "4", "--num-workers", "0", "--accelerator", "cpu", "--devices", "1"]


def _write_images(folder: Path, names: list[str], seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        size = (48 + 8 * i, 40)
        if i == 1:  # ImageNet has grayscale JPEGs: the loader must make them RGB
            image = Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), "L")
        else:
            image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
        image.save(folder / name, format="JPEG")


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imagenet_sets")
    for k, wnid in enumerate(VAL_CLASSES):
        names = [f"ILSVRC2012_val_{4 * k + i:08d}.JPEG" for i in range(2)]
        _write_images(root / "val" / wnid, names, seed=k)
        _write_images(root / "stylized" / wnid, names, seed=10 + k)
    for k, folder in enumerate(V2_FOLDERS):
        _write_images(root / "v2" / folder, [f"{k}abc{i}.jpeg" for i in range(2)], seed=20 + k)
    for k, wnid in enumerate(["n01440764", "n02102040"]):  # a subset of the classes
        _write_images(root / "sketch" / wnid, [f"sketch_{i}.JPEG" for i in range(2)], 30 + k)
    return {name: root / name for name in ("val", "v2", "sketch", "stylized")}


def _rigged_resnet18(path: Path, predicted: int) -> Path:
    network = models.resnet18()
    with torch.no_grad():
        network.fc.weight.zero_()
        network.fc.bias.zero_()
        network.fc.bias[predicted] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


def _run_dir(stdout: str) -> str:
    match = re.search(r"Deephys data logged to (.+)", stdout)
    assert match, stdout
    return match.group(1).strip()


def test_resnet18_records_every_set_with_imagenet_labels(sets, tmp_path, capsys):
    weights = _rigged_resnet18(tmp_path / "resnet18.pth", predicted=217)
    argv = ["--imagenet-val", str(sets["val"]), "--arch", "resnet18", "--weights", str(weights)]
    for name, key in (("imagenetv2", "v2"), ("sketch", "sketch"), ("stylized", "stylized")):
        argv += ["--ood", f"{name}={sets[key]}"]
    argv += ["--logdir", str(tmp_path / "logs"), "--thumbnail-size", "16", *FAST]

    assert imagenet.main(argv) == 0
    out = capsys.readouterr().out
    log = read_log(_run_dir(out))
    step = log.steps[-1]
    assert log.datasets == ("imagenet", "imagenetv2", "sketch", "stylized")
    assert log.layers == ("network.avgpool",)
    assert log.class_names == CATEGORIES
    assert log.activations("network.avgpool", "imagenet", step).shape == (6, 512)
    two_each = [index for index in VAL_CLASSES.values() for _ in range(2)]
    assert log.labels("imagenet", step).tolist() == two_each == [0, 0, 217, 217, 999, 999]
    assert log.labels("stylized", step).tolist() == two_each
    assert log.labels("sketch", step).tolist() == [0, 0, 217, 217]
    # folder "10" is class 10 (brambling), although ImageFolder lists it first
    v2_labels = log.labels("imagenetv2", step).tolist()
    assert v2_labels == [10, 10, 2, 2, 999, 999]
    assert [log.class_names[c] for c in v2_labels[:3:2]] == ["brambling", "great white shark"]
    for dataset in log.datasets:  # the rigged fc: the file's weights were used
        assert set(log.predictions(dataset, step).tolist()) == {217}
    assert log.thumbnails("imagenetv2").shape == (6, 16, 16, 3)
    assert "resnet18: weights from" in out and "novelty" in out
    assert re.search(r"imagenet_resnet18/version_0 .* sketch ", out), out


def test_weights_come_from_torchvisions_cache(sets, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = _rigged_resnet18(tmp_path / "torch" / "hub" / "checkpoints" / CACHE_FILE, 999)
    argv = ["--imagenet-val", str(sets["val"]), "--ind-name", "val"]
    argv += ["--ood", f"sketch={sets['sketch']}", "--limit-images", "3"]
    argv += ["--logdir", str(tmp_path / "logs"), *FAST]

    assert imagenet.main(argv) == 0
    out = capsys.readouterr().out
    assert f"weights from {cached}" in out
    log = read_log(_run_dir(out))
    step = log.steps[-1]
    assert log.datasets == ("val", "sketch")
    # --limit-images 3: an even spread over the class-sorted set, positions 0, 2, 5
    assert log.labels("val", step).tolist() == [0, 217, 999]
    assert log.labels("sketch", step).tolist() == [0, 217, 217]
    assert set(log.predictions("val", step).tolist()) == {999}


def test_vit_averages_the_encoder_output_over_tokens(sets, tmp_path, capsys):
    argv = ["--imagenet-val", str(sets["val"]), "--ood", f"sketch={sets['sketch']}"]
    argv += ["--arch", "vit_b_16", "--random-weights", "--limit-images", "2"]
    argv += ["--logdir", str(tmp_path / "logs"), *FAST]

    assert imagenet.main(argv) == 0
    out = capsys.readouterr().out
    assert "meaningless" in out
    log = read_log(_run_dir(out))
    acts = log.activations("network.encoder.ln", "imagenet", log.steps[-1])
    assert log.layers == ("network.encoder.ln",) and acts.shape == (2, 768)

    # the same seeded model, by hand: encoder.ln is (1, 197, 768); ReLU, mean over tokens
    torch.manual_seed(0)
    network = models.vit_b_16().eval()
    outputs = []
    network.encoder.ln.register_forward_hook(lambda module, args, out: outputs.append(out))
    transform = models.ViT_B_16_Weights.IMAGENET1K_V1.transforms()
    last = sorted((sets["val"] / "n15075141").iterdir())[-1]  # position 5 of 6
    with Image.open(last) as image, torch.no_grad():
        network(transform(image.convert("RGB"))[None])
    assert outputs[0].shape == (1, 197, 768)
    expected = outputs[0].relu().mean(dim=1)[0].numpy()
    np.testing.assert_allclose(acts[1].astype(np.float32), expected, rtol=1e-2, atol=1e-3)


def test_missing_weights_say_how_to_provide_them(sets, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert imagenet.main(["--imagenet-val", str(sets["val"]), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--weights PATH" in err and "never downloads" in err
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / CACHE_FILE) in err
    assert "--random-weights" in err

    argv = ["--imagenet-val", str(sets["val"]), "--weights", str(tmp_path / "nope.pth")]
    assert imagenet.main(argv) == 2
    assert "nope.pth: no such file" in capsys.readouterr().err

    torch.save({"fc.bias": torch.zeros(1000)}, tmp_path / "other.pth")
    argv = ["--imagenet-val", str(sets["val"]), "--weights", str(tmp_path / "other.pth")]
    assert imagenet.main(argv) == 2
    assert "does not hold resnet18 weights" in capsys.readouterr().err


def test_checkpoint_files_are_unwrapped_to_a_state_dict(tmp_path):
    bias = torch.arange(3.0)
    torch.save({"model": {"module.fc.bias": bias}, "epoch": 89}, tmp_path / "ckpt.pth")
    state = imagenet.read_state_dict(tmp_path / "ckpt.pth")
    assert list(state) == ["fc.bias"] and torch.equal(state["fc.bias"], bias)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(imagenet.ExampleError, match="cannot read .*junk.pth"):
        imagenet.read_state_dict(tmp_path / "junk.pth")


def test_missing_or_misnamed_folders_are_clear_errors(sets, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert imagenet.main(["--imagenet-val", str(missing), "--random-weights"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "is not a directory" in err and "n01440764" in err

    argv = ["--imagenet-val", str(sets["val"]), "--ood", f"sketch={missing}", "--random-weights"]
    assert imagenet.main(argv) == 2
    assert "the 'sketch' set" in capsys.readouterr().err

    _write_images(tmp_path / "named" / "cats", ["a.JPEG"], seed=0)
    _write_images(tmp_path / "named" / "1000", ["a.JPEG"], seed=0)
    assert imagenet.main(["--imagenet-val", str(tmp_path / "named"), "--random-weights"]) == 2
    err = capsys.readouterr().err
    assert "['1000', 'cats']" in err and "class indices 0-999" in err

    _write_images(tmp_path / "flat", ["ILSVRC2012_val_00000001.JPEG"], seed=0)
    assert imagenet.main(["--imagenet-val", str(tmp_path / "flat"), "--random-weights"]) == 2
    assert "has no class folders" in capsys.readouterr().err


def test_bad_flags_are_refused(sets, tmp_path, capsys):
    base = ["--imagenet-val", str(sets["val"]), "--random-weights", *FAST]
    with pytest.raises(SystemExit):
        imagenet.main([*base, "--ood", "sketch"])  # not NAME=DIR
    with pytest.raises(SystemExit):
        imagenet.main([*base, "--weights", "w.pth"])  # --weights and --random-weights
    assert imagenet.main([*base, "--ood", f"imagenet={sets['sketch']}"]) == 2
    assert imagenet.main([*base, "--torchvision-weights", "IMAGENET1K_V9"]) == 2
    assert "ResNet18_Weights has IMAGENET1K_V1" in capsys.readouterr().err
    assert imagenet.main([*base, "--layer", "avgpol", "--logdir", str(tmp_path)]) == 2
    assert "network.avgpool" in capsys.readouterr().err  # the callback's closest names


def test_class_indices_follow_torchvisions_categories():
    assert len(imagenet.WNIDS) == 1000 and list(imagenet.WNIDS) == sorted(set(imagenet.WNIDS))
    for wnid, names in Imagenette._WNID_TO_CLASS.items():  # torchvision's own synsets
        assert CATEGORIES[imagenet.class_index(wnid)] == names[0]
    assert imagenet.class_index("10") == 10 and imagenet.class_index("n15075141") == 999
    assert imagenet.class_index("1000") is None and imagenet.class_index("cats") is None
