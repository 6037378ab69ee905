"""The head detectors (ReAct, ASH-S, SCALE, GEN, ViM, fDBD) against pytorch-ood 0.4.0's
detectors on the same features and head, and against the published formulas written
out here in float64 numpy where pytorch-ood differs (ties at ASH's cut, GEN's
saturation), plus NaN rows, row independence and bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood.detector import ASH, GEN, SCALE, ReAct, ViM, fDBD
from pytorch_ood.detector.energy import EnergyBased
from scipy.special import logsumexp, softmax

from deephys_lightning import head_detectors
from deephys_lightning.head_detectors import (
    HEAD_DETECTORS,
    LinearHead,
    fit_head_detectors,
    gen_scores,
    head_detector_scores,
)

M, C = 64, 10


def make_data(seed: int, *, ties: bool = False):
    """A head and post-ReLU reference / scored features with dead neurons (always 0)."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((C, M)).astype(np.float32) / np.sqrt(M)
    bias = rng.standard_normal(C).astype(np.float32)
    dead = rng.choice(M, 8, replace=False)

    def features(n: int, shift: float) -> np.ndarray:
        x = np.maximum(rng.standard_normal((n, M)) * rng.uniform(0.5, 2) + shift, 0)
        x[:, dead] = 0
        if ties:  # coarse values: many ties, also at ASH's and SCALE's cut
            x = np.round(x * 2) / 2
        return x.astype(np.float32)

    return LinearHead(weight, bias), features(600, 0.3), features(400, 0.0)


def linear(head: LinearHead) -> torch.nn.Linear:
    layer = torch.nn.Linear(head.in_features, head.num_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(head.weight))
        layer.bias.copy_(torch.from_numpy(head.bias))
    return layer


def pytorch_ood_scores(head: LinearHead, reference: np.ndarray, scored: np.ndarray, dim: int):
    """pytorch-ood's outlier scores (higher = more OOD), negated, for each detector."""
    layer = linear(head)

    def on_maps(maps: torch.Tensor) -> torch.Tensor:  # head of [B, M, 1, 1] feature maps
        return layer(maps.flatten(1))

    ref, x = torch.from_numpy(reference), torch.from_numpy(scored)
    maps, ref_maps = x[:, :, None, None], ref[:, :, None, None]
    labels = torch.zeros(len(ref), dtype=torch.long)
    energy = EnergyBased.score
    out = {}
    with torch.no_grad():
        react = ReAct(torch.nn.Identity(), on_maps, percentile=0.9, detector=energy)
        out["react"] = react.fit_feature_maps(ref_maps, labels).predict_feature_maps(maps)
        ash = ASH(torch.nn.Identity(), on_maps, variant="ash-s", percentile=0.9, detector=energy)
        out["ash"] = ash.predict_feature_maps(maps)
        scale = SCALE(torch.nn.Identity(), on_maps, percentile=0.85, detector=energy)
        out["scale"] = scale.predict_feature_maps(maps)
        out["gen"] = GEN.score(layer(x), gamma=0.1, M=100)
        vim = ViM(None, d=dim, w=layer.weight, b=layer.bias)
        out["vim"] = vim.fit_features(ref, labels).predict_features(x)
        fdbd = fDBD(torch.nn.Identity(), layer)
        out["fdbd"] = fdbd.fit_features(ref).predict_features(x)
    return {name: -scores.double().numpy() for name, scores in out.items()}


def assert_close(ours: np.ndarray, reference: np.ndarray, rtol: float = 1e-5) -> None:
    scale = np.abs(reference).max()
    np.testing.assert_allclose(ours, reference, rtol=rtol, atol=rtol * scale)


# --- independent float64 formulas (the papers') ---------------------------------------


def energy(logits: np.ndarray) -> np.ndarray:
    return logsumexp(logits, axis=1)


def ash_s_formula(head: LinearHead, x: np.ndarray, percentile: float) -> np.ndarray:
    """ASH-S: keep the k largest per image (ties lowest index first), times exp(s1/s2)."""
    x = x.astype(np.float64)
    k = M - int(np.round(M * percentile / 100))
    out = np.zeros(len(x))
    for i, row in enumerate(x):
        keep = np.argsort(-row, kind="stable")[:k]
        pruned = np.zeros_like(row)
        pruned[keep] = row[keep]
        shaped = pruned * np.exp(row.sum() / pruned.sum())
        out[i] = energy((shaped @ head.weight.T.astype(np.float64) + head.bias)[None])[0]
    return out


def gen_formula(logits: np.ndarray, gamma: float = 0.1, top: int = 100) -> np.ndarray:
    """OpenOOD's G summed over the top-M float64 probabilities, as -log(G)."""
    p = np.sort(softmax(logits.astype(np.float64), axis=1), axis=1)[:, -top:]
    return -np.log(np.sum(p**gamma * (1 - p) ** gamma, axis=1))


def vim_formula(head, reference, x, dim):
    w, b = head.weight.astype(np.float64), head.bias.astype(np.float64)
    u = -np.linalg.pinv(w) @ b
    centred = reference.astype(np.float64) - u
    values, vectors = np.linalg.eigh(centred.T @ centred / len(centred))
    null = vectors[:, np.argsort(-values)[dim:]]
    alpha = (reference @ w.T + b).max(1).mean() / np.linalg.norm(centred @ null, axis=1).mean()
    return energy(x @ w.T + b) - alpha * np.linalg.norm((x - u) @ null, axis=1)


def fdbd_formula(head, reference, x):
    w, b = head.weight.astype(np.float64), head.bias.astype(np.float64)
    mean = reference.astype(np.float64).mean(0)
    out = np.zeros(len(x))
    for i, row in enumerate(x.astype(np.float64)):
        logits = w @ row + b
        p = int(np.argmax(logits))
        distances = [
            abs(logits[p] - logits[c]) / np.linalg.norm(w[p] - w[c]) for c in range(C) if c != p
        ]
        out[i] = np.mean(distances) / np.linalg.norm(row - mean)
    return out


# --- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_scores_match_pytorch_ood(seed):
    head, reference, scored = make_data(seed)
    fitted = fit_head_detectors(reference, head, vim_dim=20)
    ours = head_detector_scores(fitted, scored)
    theirs = pytorch_ood_scores(head, reference, scored, dim=20)
    assert set(ours) == set(HEAD_DETECTORS)
    for name in HEAD_DETECTORS:
        assert ours[name].dtype == np.float32 and ours[name].shape == (len(scored),)
        if name == "gen":  # pytorch-ood's -G averages over min(M, C) terms; ours is -log G
            assert_close(ours[name], -np.log(-theirs[name] * C))
        elif name == "vim":  # its eigh and pinv run in float32
            assert_close(ours[name], theirs[name], rtol=1e-4)
        else:
            assert_close(ours[name], theirs[name])


@pytest.mark.parametrize("seed", range(4))
def test_scores_match_the_published_formulas(seed):
    head, reference, scored = make_data(seed)
    fitted = fit_head_detectors(reference, head, vim_dim=20)
    ours = head_detector_scores(fitted, scored)
    logits = scored.astype(np.float64) @ head.weight.T + head.bias
    threshold = np.percentile(reference.astype(np.float64).ravel(), 90)
    assert fitted.react_threshold == pytest.approx(threshold, rel=1e-6)
    clipped = np.minimum(scored.astype(np.float64), threshold)
    assert_close(ours["react"], energy(clipped @ head.weight.T + head.bias))
    assert_close(ours["ash"], ash_s_formula(head, scored, 90))
    assert_close(ours["gen"], gen_formula(logits))
    assert_close(ours["vim"], vim_formula(head, reference, scored, 20), rtol=1e-4)
    assert_close(ours["fdbd"], fdbd_formula(head, reference, scored))


@pytest.mark.parametrize("seed", range(3))
def test_ties_and_dead_features(seed):
    """Coarse features tie at ASH's cut: pytorch-ood's topk keeps whichever tied neurons
    its kernel returns, so ASH is checked against the formula with this module's rule
    (lowest index first); the others do not depend on which tied neurons are kept."""
    head, reference, scored = make_data(seed, ties=True)
    fitted = fit_head_detectors(reference, head, vim_dim=20)
    ours = head_detector_scores(fitted, scored)
    theirs = pytorch_ood_scores(head, reference, scored, dim=20)
    assert_close(ours["ash"], ash_s_formula(head, scored, 90))
    for name in ("react", "scale", "fdbd"):
        assert_close(ours[name], theirs[name])
    assert_close(ours["vim"], theirs["vim"], rtol=1e-4)
    assert_close(ours["gen"], -np.log(-theirs["gen"] * C))


def test_all_zero_rows_score_the_bias_energy():
    head, reference, scored = make_data(0)
    scored[:3] = 0
    ours = head_detector_scores(fit_head_detectors(reference, head), scored)
    bias_energy = energy(head.bias[None].astype(np.float64))[0]
    for name in ("react", "ash", "scale"):
        assert np.allclose(ours[name][:3], bias_energy, rtol=1e-6)


def test_gen_keeps_the_order_of_saturated_logits():
    """Margins of 110 to 600: float32 softmax gives p = 1 and 0, so OpenOOD's G is 0 for
    every image (pytorch-ood's clamps p to [1e-7, 1 - 1e-7]: a constant up to
    rounding); in log space the order is the margins'."""
    rng = np.random.default_rng(0)
    margins = rng.permutation(np.linspace(110, 600, 200))
    logits = rng.standard_normal((200, 50))
    logits[:, 7] = logits.max(1) + margins
    logits32 = torch.from_numpy(logits).float()
    p32 = logits32.softmax(dim=1).sort(dim=1).values[:, -100:]
    openood_g = (p32**0.1 * (1 - p32) ** 0.1).sum(1)
    assert not openood_g.any()  # every image tied at 0
    pytorch_ood_g = GEN.score(logits32, gamma=0.1, M=100)
    assert len(torch.unique(pytorch_ood_g)) <= 2
    ours = gen_scores(logits)
    assert np.array_equal(np.argsort(ours), np.argsort(margins))
    # float64 still resolves the others' probabilities here, but p_top = 1.0: its
    # 1 - p_top is the others' sum
    p = softmax(logits, axis=1)
    q = 1 - p
    q[:, 7] = np.delete(p, 7, axis=1).sum(1)
    assert_close(ours, -np.log(np.sum(p**0.1 * q**0.1, axis=1)), rtol=1e-6)
    # beyond float64's range too (margins of 10,000): still ordered and finite
    far = gen_scores(np.stack([np.array([1e4, 0.0, 0.0]), np.array([2e4, 0.0, 0.0])]))
    assert np.all(np.isfinite(far)) and far[1] > far[0]
    # G = (2 e^-m)^0.1 (the top) + 2 (e^-m)^0.1 (the others)
    assert far == pytest.approx([1e3 - np.log(2**0.1 + 2), 2e3 - np.log(2**0.1 + 2)])


def test_gen_edge_cases():
    assert gen_scores(np.array([[3.0]]))[0] == np.inf  # one class: p = 1, G = 0
    tied = gen_scores(np.array([[5.0, 5.0]]))  # two tied tops, p = 1/2 each
    assert tied[0] == pytest.approx(-np.log(2 * 0.25**0.1))
    out = gen_scores(np.array([[np.nan, 0.0], [np.inf, 0.0], [1.0, 0.0]]))
    assert np.isnan(out[:2]).all() and np.isfinite(out[2])
    assert gen_scores(np.zeros((0, 4))).shape == (0,)
    with torch.no_grad():
        t = torch.randn(5, 300)
    assert_close(gen_scores(t, gamma=0.5, top=7), gen_formula(t.numpy(), 0.5, 7), rtol=1e-6)


def test_nan_rows_score_nan_and_are_left_out_of_the_fit():
    head, reference, scored = make_data(1)
    fitted = fit_head_detectors(reference, head)
    dirty = reference.copy()
    dirty[[5, 50]] = np.nan
    dirty[7, 3] = np.inf
    with_nans = fit_head_detectors(np.concatenate([reference, dirty[[5, 7, 50]]]), head)
    assert with_nans.reference_images == len(reference)
    assert with_nans.react_threshold == fitted.react_threshold
    assert with_nans.vim_alpha == pytest.approx(fitted.vim_alpha, rel=1e-6)
    np.testing.assert_allclose(with_nans.fdbd_mean, fitted.fdbd_mean, rtol=1e-6)
    scored = scored.copy()
    clean = head_detector_scores(fitted, scored)
    scored[[0, 9]] = np.nan
    scored[4, 1] = -np.inf
    out = head_detector_scores(fitted, scored)
    for name in HEAD_DETECTORS:
        assert np.isnan(out[name][[0, 4, 9]]).all(), name
        rest = np.setdiff1d(np.arange(len(scored)), [0, 4, 9])
        np.testing.assert_array_equal(out[name][rest], clean[name][rest])
    # no usable reference row: the fitted detectors score NaN, the others still work
    empty = fit_head_detectors(np.full((4, M), np.nan, dtype=np.float32), head)
    out = head_detector_scores(empty, scored[1:3])
    for name in ("react", "vim", "fdbd"):
        assert np.isnan(out[name]).all()
    for name in ("ash", "scale", "gen"):
        assert np.isfinite(out[name]).all()


def test_scores_are_per_row_and_the_fit_sees_only_the_reference(monkeypatch):
    head, reference, scored = make_data(2)
    fitted = fit_head_detectors(reference, head)
    whole = head_detector_scores(fitted, scored)
    # small blocks, a slice, other rows changed, torch input: the same scores
    monkeypatch.setattr(head_detectors, "_ROW_BLOCK", 37)
    blocked = head_detector_scores(fitted, torch.from_numpy(scored))
    changed = scored.copy()
    changed[100:] *= 5
    part = head_detector_scores(fitted, changed)
    for name in HEAD_DETECTORS:
        np.testing.assert_allclose(blocked[name], whole[name], rtol=1e-6)
        np.testing.assert_allclose(part[name][:100], whole[name][:100], rtol=1e-6)
    # scoring the reference set itself uses the same fit as any other set
    again = fit_head_detectors(reference, head)
    assert again.react_threshold == fitted.react_threshold
    assert again.vim_alpha == pytest.approx(fitted.vim_alpha, rel=1e-6)  # threaded sums


def test_float16_features_and_the_default_vim_dim():
    head, reference, scored = make_data(3)
    fitted = fit_head_detectors(reference.astype(np.float16), head)
    assert fitted.vim_dim == M // 2
    assert fitted.vim_residual_basis.shape == (M, M - M // 2)
    out = head_detector_scores(fitted, scored.astype(np.float16), ["vim", "gen"])
    assert list(out) == ["vim", "gen"]
    assert all(np.isfinite(v).all() for v in out.values())


def test_head_logits_and_from_module():
    layer = torch.nn.Linear(M, C)
    head = LinearHead.from_module(layer)
    x = torch.randn(5, M)
    torch.testing.assert_close(head.logits(x), layer(x).detach())
    no_bias = LinearHead.from_module(torch.nn.Linear(M, C, bias=False))
    assert not no_bias.bias.any()


def test_bad_arguments_raise_clear_errors():
    head, reference, scored = make_data(0)
    with pytest.raises(ValueError, match=r"features must be \[images, 64\]"):
        fit_head_detectors(reference[:, :10], head)
    fitted = fit_head_detectors(reference, head, ["react"])
    with pytest.raises(ValueError, match="in_features"):
        head_detector_scores(fitted, scored[:, :-1])
    with pytest.raises(ValueError, match=r"\['vim'\] were not fitted"):
        head_detector_scores(fitted, scored, ["vim"])
    with pytest.raises(ValueError, match="unknown head detectors"):
        fit_head_detectors(reference, head, ["odin"])
    with pytest.raises(ValueError, match="string"):
        fit_head_detectors(reference, head, "vim")
    with pytest.raises(ValueError, match="vim_dim"):
        fit_head_detectors(reference, head, ["vim"], vim_dim=M)
    with pytest.raises(ValueError, match="ash_percentile"):
        fit_head_detectors(reference, head, ash_percentile=100)
    with pytest.raises(ValueError, match="percentile"):
        fit_head_detectors(reference, head, react_percentile=0.9 * 200)
    with pytest.raises(ValueError, match="bias"):
        LinearHead(np.ones((3, 4)), np.ones(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_are_scored_on_the_device_like_the_cpu():
    head, reference, scored = make_data(0)
    on_cpu = head_detector_scores(fit_head_detectors(reference, head), scored)
    fitted = fit_head_detectors(torch.from_numpy(reference).cuda(), head)
    on_gpu = head_detector_scores(fitted, torch.from_numpy(scored).cuda())
    for name in HEAD_DETECTORS:
        assert_close(on_gpu[name], on_cpu[name].astype(np.float64), rtol=1e-4)


def test_a_head_taken_from_a_module_is_a_copy():
    """The callback copies the head when an epoch is recorded while training goes on
    changing the module (on the CPU .numpy() would share the parameter's memory)."""
    linear = torch.nn.Linear(3, 2)
    head = LinearHead.from_module(linear)
    before = head.weight.copy()
    with torch.no_grad():
        linear.weight.add_(1.0)
        linear.bias.add_(1.0)
    np.testing.assert_array_equal(head.weight, before)
    assert not np.shares_memory(head.bias, linear.bias.detach().numpy())
