"""From layer outputs and batches to Deephys rows."""

from __future__ import annotations

import pytest
import torch

from deephys_lightning.recording.capture import reduce_activations, split_batch, to_thumbnails


def test_reduce_applies_relu_then_averages_non_neuron_dims():
    maps = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(reduce_activations(maps), maps.clamp_min(0).mean(dim=(2, 3)))
    tokens = torch.randn(2, 7, 6)  # (B, T, C)
    torch.testing.assert_close(reduce_activations(tokens), tokens.clamp_min(0).mean(dim=1))
    flat = torch.randn(2, 6)
    torch.testing.assert_close(reduce_activations(flat, relu=False), flat)


def test_reduce_rejects_non_tensors_and_scalars():
    with pytest.raises(TypeError, match="is a tuple, not a tensor"):
        reduce_activations((torch.zeros(2, 3),), layer="lstm")
    with pytest.raises(ValueError, match="expected a batch"):
        reduce_activations(torch.zeros(3), layer="x")


def test_split_batch_tuple_and_dict():
    x, y = torch.zeros(2, 3, 4, 4), torch.tensor([0, 1])
    assert split_batch((x, y))[1] is y
    assert split_batch({"pixel_values": x, "labels": y})[0] is x
    assert split_batch({"a": x, "b": y}, input_key="a", target_key="b")[1] is y
    with pytest.raises(KeyError, match="pass target_key="):
        split_batch({"image": x, "what": y})
    with pytest.raises(KeyError, match="target_key='c' is not in the batch"):
        split_batch({"image": x, "c2": y}, target_key="c")
    with pytest.raises(ValueError, match="1-D integer tensor"):
        split_batch((x, torch.zeros(2, 3)))


def test_thumbnails_scale_gray_and_large_images():
    gray = torch.rand(2, 1, 200, 100)
    thumbs = to_thumbnails(gray, 64)
    assert thumbs.shape == (2, 64, 32, 3) and thumbs.dtype == torch.uint8
    assert (thumbs[..., 0] == thumbs[..., 2]).all()
    normalized = torch.randn(1, 3, 8, 8) * 3  # outside [0, 1]: min-max per image
    thumbs = to_thumbnails(normalized, 64)
    assert thumbs.min() == 0 and thumbs.max() == 255
    with pytest.raises(ValueError, match="1 or 3"):
        to_thumbnails(torch.zeros(1, 5, 4, 4), 64)


def test_thumbnail_scaling_is_decided_per_image_on_the_device():
    in_range = torch.full((1, 3, 4, 4), 0.5)
    outside = torch.linspace(-1, 2, 48).reshape(1, 3, 4, 4)
    thumbs = to_thumbnails(torch.cat([in_range, outside]), 64)
    assert (thumbs[0] == 128).all()  # 0.5 * 255, not min-max scaled by its neighbour
    assert thumbs[1].min() == 0 and thumbs[1].max() == 255
    assert to_thumbnails(torch.zeros(0, 3, 80, 40), 64).shape == (0, 64, 32, 3)


def test_input_fingerprints_tell_changed_inputs_apart():
    from deephys_lightning.recording.capture import input_fingerprints

    x = torch.rand(6, 3, 8, 8)
    same = input_fingerprints(x.clone())
    torch.testing.assert_close(input_fingerprints(x), same, rtol=0, atol=0)
    changed = x.clone()
    changed[2, 1, 4, 4] += 0.1
    moved = input_fingerprints(changed) != same
    assert moved.tolist() == [False, False, True, False, False, False]
    flipped = input_fingerprints(torch.flip(x, dims=[3]))
    assert (flipped != same).all()  # the same pixels elsewhere are another image
