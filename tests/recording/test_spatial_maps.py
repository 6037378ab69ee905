"""Where a neuron fires: the maps of each neuron's top images, kept by a running top-k on
the recording device, are those of exactly the written top images, and equal a slow
reference (the model run again on the logged images, ReLU, average pooling in float64)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.exceptions import MisconfigurationException
from plugin_client import plugin_client
from test_gather import FakeGroup
from tiny_model import NUM_CLASSES, TinyNet, loader, module_output, trainer
from torch import nn
from torch.utils.data import TensorDataset

from deephys_lightning import DeephysCallback, metrics, read_log
from deephys_lightning.recording import spatial_maps as sm
from deephys_lightning.recording.gather import gather_top_maps
from tensorboard_plugin_deephys.log import array_checks
from tensorboard_plugin_deephys.log.metadata import MAPPED_IMAGES, Kind, tag_name

PREFIX = "/data/plugin/deephys"
RUN = "tiny/version_0"


class TokenNet(TinyNet):
    """TinyNet whose recorded layer gives tokens: ``tokens`` (B, 64, 4), one per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(x.flatten(2).transpose(1, 2))  # (B, H W, 4)
        return self.head(torch.relu(self.fc(tokens.mean(dim=1))))


class PixelNet(TinyNet):
    """TinyNet that also records its input as a layer: ``pixels`` (B, 3, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.pixels = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pixels(x))


def image_set(n: int, seed: int, side: int = 12) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, side, side, generator=generator) * 2 - 0.5  # some negative
    y = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    return TensorDataset(x, y)


def reference_maps(model, module, inputs, top_indices) -> np.ndarray:
    """float64 ``[M, k, h, w]``: the layer's maps of the top images, by hand."""
    output, _ = module_output(model, module, inputs)
    rectified = torch.relu(output.double())
    if rectified.ndim == 4:
        height, width = rectified.shape[2:]
        pooled = F.adaptive_avg_pool2d(rectified, (min(height, 7), min(width, 7)))
    else:
        pooled = torch.from_numpy(token_maps_by_hand(rectified.numpy()))
    neurons = pooled.shape[1]
    return pooled.numpy()[top_indices, np.arange(neurons)[:, None]]


def _windows(size: int, cells: int) -> list[slice]:
    """Adaptive average pooling's windows: cell ``i`` of ``cells`` over ``size``
    positions averages ``floor(i size / cells)`` to ``ceil((i + 1) size / cells)``."""
    return [slice(i * size // cells, -(-(i + 1) * size // cells)) for i in range(cells)]


def token_maps_by_hand(tokens: np.ndarray) -> np.ndarray:
    """float64 ``[B, C, h, w]``: maps of tokens ``(B, T, C)`` by plain numpy loops: a
    square grid (``T = s * s``, or ``1 + s * s`` without its first token) as ``s x s``
    cells row by row, block means to at most 7 x 7; other ``T`` a strip ``(1, <= 49)``."""
    batch, count, channels = tokens.shape
    side = int(round(count**0.5))
    skip = 0
    if side * side != count:
        side = int(round((count - 1) ** 0.5))
        skip = 1 if side >= 2 and side * side == count - 1 else -1
    if skip < 0:  # a strip
        cells = min(count, 49)
        out = np.zeros((batch, channels, 1, cells))
        for j, window in enumerate(_windows(count, cells)):
            out[:, :, 0, j] = tokens[:, window].mean(axis=1)
        return out
    grid = tokens[:, skip:].reshape(batch, side, side, channels)  # row, column
    cells = min(side, 7)
    out = np.zeros((batch, channels, cells, cells))
    for i, rows in enumerate(_windows(side, cells)):
        for j, cols in enumerate(_windows(side, cells)):
            out[:, :, i, j] = grid[:, rows, cols].mean(axis=(1, 2))
    return out


def assert_float16_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float16 and got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=2**-10, atol=1e-7)


def _record(tmp_path, model, sets, **options):
    options.setdefault("strict", True)
    t = trainer(tmp_path, [DeephysCallback(**options)])
    t.validate(model, dataloaders={name: loader(data, 3) for name, data in sets.items()})
    return read_log(t.logger.log_dir)


def test_maps_are_the_pooled_maps_of_exactly_the_top_images(tmp_path):
    sets = {"ind": image_set(13, 1), "ood": image_set(4, 2)}  # 4 images: k' = 4 < top_k
    model = TinyNet()
    log = _record(tmp_path, model, sets, layers=["features", "fc"], top_k=5)
    for name, data in sets.items():
        indices, _ = log.top_images("features", name)
        maps = log.top_maps("features", name)
        assert maps.shape == (4, min(5, len(data)), 7, 7)  # 10 x 10 maps, pooled
        expected = reference_maps(model, model.features, data.tensors[0], indices)
        assert_float16_close(maps, expected)
    record = log.latest
    assert tag_name(Kind.TOP_MAPS, layer="features", dataset="ind") in record.arrays
    assert tag_name(Kind.TOP_MAPS, layer="fc", dataset="ind") not in record.arrays
    with pytest.raises(KeyError, match="no maps of layer 'fc'"):
        log.top_maps("fc", "ind")  # a flat layer has none


def test_a_map_smaller_than_seven_stays_as_it_is(tmp_path):
    data = image_set(9, 3, side=8)  # 6 x 6 maps
    model = TinyNet()
    log = _record(tmp_path, model, {"ind": data}, layer="features.0", top_k=3)
    indices, _ = log.top_images("features.0", "ind")
    maps = log.top_maps("features.0", "ind")
    assert maps.shape == (4, 3, 6, 6)
    assert_float16_close(maps, reference_maps(model, model.features[0], data.tensors[0], indices))


def test_a_square_grid_of_tokens_is_pooled_as_a_map(tmp_path):
    data = image_set(11, 4, side=8)  # 64 tokens: an 8 x 8 grid, pooled to 7 x 7
    model = TokenNet()
    log = _record(tmp_path, model, {"ind": data, "ood": image_set(5, 5, side=8)}, layer="tokens")
    indices, _ = log.top_images("tokens", "ind")
    maps = log.top_maps("tokens", "ind")
    assert maps.shape == (4, 11, 7, 7)
    assert_float16_close(maps, reference_maps(model, model.tokens, data.tensors[0], indices))


class ClassTokenNet(TinyNet):
    """A ViT-like net: ``tokens`` gives a class token and one token per pixel,
    (B, 1 + H W, 4); ``strip`` keeps the class token and the first 6 pixels, (B, 7, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, 4))
        self.tokens = nn.Identity()
        self.strip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x.flatten(2).transpose(1, 2))  # (B, H W, 4)
        tokens = self.tokens(torch.cat([self.cls.expand(len(x), -1, -1), patches], dim=1))
        strip = self.strip(tokens[:, :7])
        return self.head(torch.relu(self.fc(tokens.mean(dim=1) + strip.mean(dim=1))))


@pytest.mark.parametrize(("side", "shape"), [(4, (4, 4)), (9, (7, 7))])
def test_a_class_token_is_left_out_of_its_grid(tmp_path, side, shape):
    data = image_set(9, 6, side=side)  # 1 + side * side tokens
    model = ClassTokenNet()
    log = _record(tmp_path, model, {"ind": data}, layers=["tokens", "strip"], top_k=4)
    indices, _ = log.top_images("tokens", "ind")
    maps = log.top_maps("tokens", "ind")
    assert maps.shape == (4, 4, *shape)
    output, _ = module_output(model, model.tokens, data.tensors[0])
    assert output.shape[1] == 1 + side * side
    patches = torch.relu(output[:, 1:].double()).numpy()  # the class token left out
    grid = patches.reshape(len(data), side, side, 4).transpose(0, 3, 1, 2)
    # 4 x 4: not pooled, the tokens where they are; 9 x 9 -> 7 x 7: torch's pooling
    expected = grid if side == 4 else F.adaptive_avg_pool2d(torch.from_numpy(grid), 7).numpy()
    assert_float16_close(maps, expected[indices, np.arange(4)[:, None]])
    # 7 tokens are no square grid (nor 1 + one): a strip of 7
    indices, _ = log.top_images("strip", "ind")
    strip = log.top_maps("strip", "ind")
    assert strip.shape == (4, 4, 1, 7)
    assert_float16_close(strip, reference_maps(model, model.strip, data.tensors[0], indices))


@pytest.mark.parametrize(
    ("tokens", "grid"),
    [(1, (1, 0)), (2, None), (3, None), (4, (2, 0)), (5, (2, 1)), (7, None), (10, (3, 1)),
     (16, (4, 0)), (17, (4, 1)), (48, None), (50, (7, 1)), (64, (8, 0)), (197, (14, 1))],
)  # fmt: skip
def test_token_grids_are_square_after_at_most_one_class_token(tokens, grid):
    assert sm.token_grid(tokens) == grid


@pytest.mark.parametrize("count", [1, 6, 16, 17, 37, 50, 60, 64, 65, 197])
def test_token_maps_equal_block_means_by_hand(count):
    generator = torch.Generator().manual_seed(count)
    tokens = torch.rand(3, count, 5, generator=generator, dtype=torch.float64)
    got = sm.pooled_maps(tokens)
    expected = token_maps_by_hand(tokens.numpy())
    assert tuple(got.shape) == expected.shape
    assert sm.map_shape(tokens) == expected.shape[2:]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    if count == 17:  # the class token is nowhere in the 4 x 4 map
        moved = tokens.clone()
        moved[:, 0] = 1e6
        torch.testing.assert_close(sm.pooled_maps(moved), got)


def test_ties_go_to_the_lower_image_as_the_top_images_do(tmp_path):
    """Images that are pixel permutations of two base images: every channel's mean is
    the same (exactly) within each group, the maps differ. The maps must be those of
    the lower images, across batches too."""
    generator = torch.Generator().manual_seed(6)
    low = torch.randint(0, 8, (3, 64), generator=generator).float() / 8  # exact sums
    images = []
    for i in range(14):
        base = low + 0.25 if i % 3 == 0 else low  # the higher group: images 0, 3, 6, 9, 12
        order = torch.randperm(64, generator=generator)
        images.append(base[:, order].reshape(3, 8, 8))
    data = TensorDataset(torch.stack(images), torch.zeros(14, dtype=torch.int64))
    model = PixelNet()
    log = _record(tmp_path, model, {"ind": data}, layer="pixels", top_k=7)
    indices, values = log.top_images("pixels", "ind")
    assert (values[:, :5] == values[:, :1]).all() and (values[:, 5:] == values[:, 5:6]).all()
    assert indices.tolist() == [[0, 3, 6, 9, 12, 1, 2]] * 3
    maps = log.top_maps("pixels", "ind")
    assert_float16_close(maps, reference_maps(model, model.pixels, data.tensors[0], indices))


def test_max_images_and_ignored_labels_keep_the_maps_of_the_recorded_images(tmp_path):
    data = image_set(17, 7)
    labels = data.tensors[1].clone()
    labels[[2, 8, 9]] = -100  # left out of the record
    data = TensorDataset(data.tensors[0], labels)
    model = TinyNet()
    with pytest.warns(UserWarning, match="negative label"):
        log = _record(tmp_path, model, {"ind": data}, layer="features", max_images=9, top_k=4)
    positions = log.positions("ind")
    assert len(positions) < 9 and not set(positions) & {2, 8, 9}
    indices, _ = log.top_images("features", "ind")
    expected = reference_maps(model, model.features, data.tensors[0][positions], indices)
    assert_float16_close(log.top_maps("features", "ind"), expected)


def test_spatial_maps_false_records_none_and_the_routes_answer_without_map(tmp_path):
    """Such a log is what logs written before the maps hold: no top_maps kind."""
    log = _record(
        tmp_path, TinyNet(), {"ind": image_set(6, 8)}, layer="features", spatial_maps=False
    )
    assert not any(tag.endswith("/top_maps") for tag in log.latest.arrays)
    with pytest.raises(KeyError, match="spatial_maps=True"):
        log.top_maps("features", "ind")
    client = plugin_client(tmp_path)
    neuron = client.get(f"{PREFIX}/neuron?run={RUN}&layer=features&neuron=0")
    assert neuron.status_code == 200, neuron.json
    assert all("map" not in image for d in neuron.json["datasets"] for image in d["images"])
    image = client.get(f"{PREFIX}/image?run={RUN}&layer=features&dataset=ind&index=0")
    assert image.status_code == 200, image.json
    for entry in image.json["top_neurons"]:
        assert all("map" not in top for top in entry["top_images"]["ind"])


def test_other_reductions_keep_no_maps(tmp_path):
    amax = lambda out: out.amax(dim=(2, 3))  # noqa: E731
    log = _record(tmp_path, TinyNet(), {"ind": image_set(5, 9)}, layer="features", reduction=amax)
    assert not any(tag.endswith("/top_maps") for tag in log.latest.arrays)


def test_spatial_maps_is_checked_where_the_callback_is_made():
    with pytest.raises(MisconfigurationException, match=r"spatial_maps=\.\.\.\) must be True"):
        DeephysCallback(layer="fc", spatial_maps="yes")


def test_the_routes_give_each_top_image_its_map(tmp_path):
    sets = {"ind": image_set(10, 10), "ood": image_set(7, 11)}
    log = _record(tmp_path, TinyNet(), sets, layers=["features", "fc"], top_k=4)
    client = plugin_client(tmp_path)
    for neuron in (0, 3):
        body = client.get(f"{PREFIX}/neuron?run={RUN}&layer=features&neuron={neuron}&k=3")
        assert body.status_code == 200, body.json
        for dataset in body.json["datasets"]:
            maps = log.top_maps("features", dataset["name"])[neuron]
            assert len(dataset["images"]) == 3
            for i, image in enumerate(dataset["images"]):
                assert image["map"]["shape"] == [7, 7]
                assert image["map"]["values"] == maps[i].astype(np.float64).ravel().tolist()
    body = client.get(f"{PREFIX}/image?run={RUN}&layer=features&dataset=ood&index=2&k=2")
    assert body.status_code == 200, body.json
    for entry in body.json["top_neurons"]:
        for source in ("ind", "ood"):
            maps = log.top_maps("features", source)[entry["neuron"]]
            tops = entry["top_images"][source]
            assert [top["map"]["values"] for top in tops] == [
                m.astype(np.float64).ravel().tolist() for m in maps[:2]
            ]
    flat = client.get(f"{PREFIX}/neuron?run={RUN}&layer=fc&neuron=0")
    assert all("map" not in image for d in flat.json["datasets"] for image in d["images"])


def test_maps_that_belong_to_other_images_are_refused_naming_the_layer(tmp_path, monkeypatch):
    wrong = sm.ranking_keys
    monkeypatch.setattr(sm, "ranking_keys", lambda acts, *rest: wrong(-acts, *rest))
    with pytest.warns(UserWarning, match="layer 'features' on 'ind' belong to other images"):
        log = _record(tmp_path, TinyNet(), {"ind": image_set(8, 12)}, layer="features", top_k=3)
    assert log.top_images("features", "ind")[0].shape == (4, 3)  # the record is written...
    with pytest.raises(KeyError, match="no maps"):
        log.top_maps("features", "ind")  # ...without the maps


# -- the running top-k, without a Trainer -------------------------------------------------


def _awkward_values(n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """float16 values with many ties, -0.0, infinities and NaN."""
    values = torch.randint(-3, 4, (n, m), generator=generator).half() / 2
    draw = torch.rand(n, m, generator=generator)
    values[draw < 0.1] = float("nan")
    values[(draw >= 0.1) & (draw < 0.15)] = float("-inf")
    values[(draw >= 0.15) & (draw < 0.2)] = float("inf")
    values[(draw >= 0.2) & (draw < 0.3)] = -0.0
    return values


def test_the_running_top_k_ranks_as_the_written_top_images():
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        n, m, k = (int(torch.randint(1, high, (1,), generator=generator)) for high in (40, 6, 10))
        values = _awkward_values(n, m, generator)
        maps = torch.randn(n, m, 2, 3, generator=generator).half()
        state = sm.RunningTopMaps.empty(m, k, (2, 3), "cpu")
        start = 0
        while start < n:  # batches of random sizes
            stop = min(n, start + int(torch.randint(1, 7, (1,), generator=generator)))
            state.update(values[start:stop], torch.arange(start, stop), None, maps[start:stop])
            start = stop
        indices, _ = metrics.top_k(values.numpy(), k)
        found = sm.top_image_maps(state.to_host(), np.arange(n), indices, layer="l", dataset="d")
        np.testing.assert_array_equal(found, maps.numpy()[indices, np.arange(m)[:, None]])


def _split_states(values, maps, world_size, k):
    """The running top-k each of ``world_size`` processes keeps (DistributedSampler's
    split: rank r holds positions r, r + W, ...); None for a process without images."""
    states = []
    for rank in range(world_size):
        positions = torch.arange(rank, len(values), world_size)
        if not len(positions):
            states.append(None)
            continue
        state = sm.RunningTopMaps.empty(values.shape[1], k, tuple(maps.shape[2:]), "cpu")
        state.update(values[positions], positions, None, maps[positions])
        states.append(state)
    return states


@pytest.mark.parametrize(("images", "world_size", "chunk_bytes"), [(23, 2, 64), (2, 3, 10**6)])
def test_processes_merge_to_the_top_k_of_one_process(images, world_size, chunk_bytes):
    generator = torch.Generator().manual_seed(images)
    values = _awkward_values(images, 5, generator)
    maps = torch.randn(images, 5, 3, 1, generator=generator).half()
    states = _split_states(values, maps, world_size, k=4)
    group = FakeGroup(world_size)
    results: list = [None] * world_size

    def run(rank: int) -> None:
        all_gather, broadcast = group.rank_ops(rank)
        results[rank] = gather_top_maps(
            states[rank], all_gather, broadcast, world_size, device="cpu", chunk_bytes=chunk_bytes
        )

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    (single,) = _split_states(values, maps, 1, k=4)
    expected = single.to_host()
    indices, _ = metrics.top_k(values.numpy(), 4)
    for found in results:
        np.testing.assert_array_equal(found.positions[:, : indices.shape[1]], indices)
        np.testing.assert_array_equal(
            sm.top_image_maps(found, np.arange(images), indices, layer="l", dataset="d"),
            sm.top_image_maps(expected, np.arange(images), indices, layer="l", dataset="d"),
        )
    assert all(nbytes <= max(chunk_bytes, 4 * 3 * 2 * 4) for _, nbytes, _ in group.calls)


def test_maps_of_other_images_fail_the_write_time_check():
    found = sm.TopMaps(positions=np.array([[3, 1]]), maps=np.zeros((1, 2, 1, 1), np.float16))
    positions = np.array([0, 1, 3])  # image 2 is at position 3
    np.testing.assert_array_equal(
        sm.top_image_maps(found, positions, np.array([[2, 1]]), layer="l", dataset="d"),
        found.maps,
    )
    with pytest.raises(ValueError, match="layer 'fc' on 'ood'"):
        sm.top_image_maps(found, positions, np.array([[1, 2]]), layer="fc", dataset="ood")


def test_the_reader_checks_maps_against_their_top_images():
    maps = np.zeros((4, 3, 7, 7), np.float16)
    assert array_checks.problem(Kind.TOP_MAPS, maps, {"M": 4}) is None
    assert "axis 0" in array_checks.problem(Kind.TOP_MAPS, maps, {"M": 5})
    assert "not floats" in array_checks.problem(Kind.TOP_MAPS, maps.astype(np.int32), {"M": 4})
    assert array_checks.pairing_problem(Kind.TOP_MAPS, maps, np.zeros((4, 3), np.int32)) is None
    assert "[4, 2]" in array_checks.pairing_problem(Kind.TOP_MAPS, maps, np.zeros((4, 2), np.int32))


def test_maps_are_kept_for_the_first_sixteen_top_images_of_each_neuron(tmp_path):
    data = image_set(24, 21)
    model = TinyNet()
    log = _record(tmp_path, model, {"ind": data}, layer="features", top_k=20)
    indices, _ = log.top_images("features", "ind")
    maps = log.top_maps("features", "ind")
    assert indices.shape == (4, 20) and maps.shape == (4, MAPPED_IMAGES, 7, 7)
    expected = reference_maps(model, model.features, data.tensors[0], indices[:, :MAPPED_IMAGES])
    assert_float16_close(maps, expected)
    body = plugin_client(tmp_path).get(f"{PREFIX}/neuron?run={RUN}&layer=features&neuron=1&k=20")
    images = body.json["datasets"][0]["images"]
    assert [("map" in image) for image in images] == [True] * MAPPED_IMAGES + [False] * 4
