"""What each neuron did to a prediction through the linear head: the kernels against
loops in NumPy on random data with ties and NaN rows, and a real fit's record against
the model's own head run by hand (with a neuron zeroed, the logit moves by exactly
the recorded contribution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_model import TinyNet, loader, module_output, random_set, trainer

from deephys_lightning import DeephysCallback, read_log
from deephys_lightning.contributions import (
    image_contributions,
    pair_contributions,
    zeroing_effect,
)
from deephys_lightning.head_detectors import LinearHead


def _top(values: np.ndarray, n: int) -> list[int]:
    """The ``n`` largest, ties to the lower index, by a sort of (-value, index)."""
    return sorted(range(len(values)), key=lambda j: (-values[j], j))[:n]


@pytest.mark.parametrize(("seed", "m"), [(0, 12), (1, 12), (2, 64), (3, 64)])
def test_image_contributions_equal_a_loop(seed, m):
    rng = np.random.default_rng(seed)
    n_images, c = 40, 5  # m = 64: ties reach past the candidates a top-k looks at
    acts = rng.choice([0.0, 0.5, 1.0, 2.0], size=(n_images, m)).astype(np.float16)  # ties
    head = LinearHead(rng.choice([-1.0, 0.0, 1.0, 0.5], size=(c, m)), rng.normal(size=c))
    labels = rng.integers(0, c, n_images)
    logits = acts.astype(np.float64) @ head.weight.T.astype(np.float64) + head.bias
    predictions = logits.argmax(1)
    predictions[3] = -1  # no prediction
    found = image_contributions(acts, labels, predictions, head, n=4)
    for i in range(n_images):
        if predictions[i] < 0:
            assert (found.predicted_neurons[i] == -1).all() and np.isnan(found.margins[i])
            continue
        a = acts[i].astype(np.float32)
        towards_p = a * head.weight[predictions[i]]
        towards_y = a * head.weight[labels[i]]
        assert found.predicted_neurons[i].tolist() == _top(towards_p, 4)
        assert found.label_neurons[i].tolist() == _top(towards_y, 4)
        np.testing.assert_allclose(found.predicted_values[i], towards_p[_top(towards_p, 4)])
        margin = logits[i, predictions[i]] - logits[i, labels[i]]
        assert found.margins[i] == pytest.approx(margin, abs=1e-5)


@pytest.mark.parametrize("m", [8, 600])  # 600: three blocks of neurons, ties across them
def test_pair_contributions_equal_a_loop(m):
    rng = np.random.default_rng(7)
    acts = rng.choice([0.0, 0.5, 1.0], size=(60, m)).astype(np.float16)
    head = LinearHead(rng.choice([-1.0, 0.0, 1.0], size=(3, m)), rng.normal(size=3))
    labels, predictions = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    pairs = np.array([[0, 1], [1, 0], [2, 2], [2, 1]])
    neurons, values = pair_contributions(acts, labels, predictions, pairs, head, n=3)
    for row, (a, b) in enumerate(pairs):
        members = (labels == a) & (predictions == b)
        mean = acts[members].astype(np.float64).mean(0)
        push = mean * (head.weight[b].astype(np.float64) - head.weight[a])
        if not members.any():
            assert (neurons[row] == -1).all()
            continue
        assert neurons[row].tolist() == _top(push, 3)
        np.testing.assert_allclose(values[row], push[_top(push, 3)], rtol=1e-5, atol=1e-6)


def test_a_fit_records_the_head_and_what_each_neuron_did(tmp_path):
    torch.manual_seed(0)
    val = {"ind": loader(random_set(20, 1)), "ood": loader(random_set(16, 2))}
    t = trainer(tmp_path, [DeephysCallback(layer="fc")], max_epochs=1)
    model = TinyNet()
    t.fit(model, loader(random_set(8, 0)), val_dataloaders=val)
    log = read_log(t.logger.log_dir)
    head = log.head("fc")
    np.testing.assert_array_equal(head.weight, model.head.weight.detach().numpy())
    x = random_set(16, 2).tensors[0]
    fc, logits = module_output(model, model.fc, x)
    features = torch.relu(fc)
    found = log.contributions("fc", "ood")
    predictions = log.predictions("ood")
    labels = log.labels("ood")
    for i in range(len(x)):
        neuron = int(found.predicted_neurons[i, 0])
        # zeroing the neuron in the real head moves the predicted logit by its contribution
        zeroed = features[i].clone()
        zeroed[neuron] = 0
        with torch.no_grad():
            moved = logits[i, predictions[i]] - model.head(zeroed)[predictions[i]]
        assert float(moved) == pytest.approx(float(found.predicted_values[i, 0]), abs=2e-3)
        margin = logits[i, predictions[i]] - logits[i, labels[i]]
        assert found.margins[i] == pytest.approx(float(margin), abs=2e-3)  # float16 features
    # each neuron zeroed, through the real head (float64) on the stored float16 values
    zeroed_effect = log.zeroing("fc", "ood")
    stored = features.half().double()
    weight, bias = model.head.weight.detach().double(), model.head.bias.detach().double()
    base = (stored @ weight.T + bias).argmax(1)
    assert zeroed_effect.images == len(x)
    for j in range(stored.shape[1]):
        zeroed = stored.clone()
        zeroed[:, j] = 0
        new = (zeroed @ weight.T + bias).argmax(1)
        assert zeroed_effect.changed[j] == int((new != base).sum())
        expected = float((new.numpy() == labels).mean())
        assert zeroed_effect.accuracy[j] == pytest.approx(expected)


def test_a_layer_that_feeds_no_head_has_no_contributions(tmp_path):
    torch.manual_seed(0)
    val = {"ind": loader(random_set(12, 1)), "ood": loader(random_set(12, 2))}
    t = trainer(tmp_path, [DeephysCallback(layers=["fc", "features.0"])], max_epochs=1)
    t.fit(TinyNet(), loader(random_set(8, 0)), val_dataloaders=val)
    log = read_log(t.logger.log_dir)
    assert log.head("features.0") is None and log.contributions("features.0", "ind") is None
    assert log.head("fc") is not None


@pytest.mark.parametrize("seed", range(4))
def test_zeroing_each_neuron_equals_the_real_head_run_again(seed):
    """Every neuron zeroed in turn, through a torch Linear with the same weights: the
    predictions that change and the accuracy, against the pruned exact kernel."""
    rng = np.random.default_rng(seed)
    n_images, m, c = 64, 10, 7
    acts = np.maximum(rng.normal(size=(n_images, m)), 0).astype(np.float16)
    acts[5] = acts[6]  # a duplicate row
    acts[9, 2] = np.nan  # left out
    linear = torch.nn.Linear(m, c).double()
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(rng.choice([-1.0, 0.0, 1.0, 2.0], size=(c, m))))
        linear.bias.copy_(torch.from_numpy(rng.choice([0.0, 0.5], size=c)))
    head = LinearHead.from_module(linear)
    labels = rng.integers(0, c, n_images)
    found = zeroing_effect(acts, labels, head)
    keep = np.isfinite(acts.astype(np.float64)).all(1)
    x = torch.from_numpy(acts[keep].astype(np.float64))
    y = torch.from_numpy(labels[keep])
    with torch.no_grad():
        base = linear(x).argmax(1)
        assert found.base_accuracy == pytest.approx(float((base == y).double().mean()))
        for j in range(m):
            zeroed = x.clone()
            zeroed[:, j] = 0
            new = linear(zeroed).argmax(1)
            assert found.changed[j] == int((new != base).sum()), j
            assert found.accuracy[j] == pytest.approx(float((new == y).double().mean())), j
    assert found.images == int(keep.sum())


def test_a_label_beyond_the_heads_classes_has_no_contributions():
    """Class names for more classes than the classifier outputs: a label without a
    logit gets no contributions towards it and no margin, never an index error."""
    head = LinearHead(np.eye(2, 3), np.zeros(2))
    acts = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=np.float16)
    labels, predictions = np.array([0, 5]), np.array([0, 1])
    found = image_contributions(acts, labels, predictions, head, n=2)
    assert found.label_neurons[1].tolist() == [-1, -1] and np.isnan(found.margins[1])
    assert found.margins[0] == 0.0 and found.predicted_neurons[1, 0] == 1
    neurons, _ = pair_contributions(acts, labels, predictions, np.array([[0, 0], [5, 1]]), head)
    assert (neurons[1] == -1).all()
    assert zeroing_effect(acts, labels, head).images == 2
