"""Post-hoc OOD detectors that need only the penultimate features and the linear head.

The six detectors at the top of OpenOOD v1.5's ImageNet tables that work from what the
callback can record: the features ``x`` ``[N, M]`` that feed the classifier's last
linear layer and that layer itself (``weight`` ``W`` ``[C, M]``, ``bias`` ``b``
``[C]``). Every score is **higher for more in-distribution** images (pytorch-ood's
scores are the negation; for GEN, see below), float32 ``[N]``; a row with a non-finite
feature scores NaN.

The detectors are fitted on a *reference* set's features (the InD training or
validation features), never on the set being scored: scoring is row by row, so an
image's score does not depend on the other images scored with it.

- ``react`` (Sun et al., NeurIPS 2021): the energy ``logsumexp(W min(x, c) + b)`` of the
  logits of the features clipped from above at ``c``, the ``react_percentile``-th
  percentile (linear interpolation, as ``numpy.percentile``) of every activation of
  every reference image together, dead neurons' zeros included. Default 90: the
  paper's, OpenOOD v1.5's (``configs/postprocessors/react.yml``) and pytorch-ood's
  (``percentile=0.9``).
- ``ash`` (ASH-S, Djurisic et al., ICLR 2023): per image, all but the largest
  ``k = M - round(M p / 100)`` activations are set to zero and the kept ones are
  multiplied by ``exp(s1 / s2)`` (``s1`` the sum of every activation, ``s2`` of the
  kept ones); the score is the energy of the resulting logits. The percentile ``p`` is
  **per image** (a rank within the row, as in the paper), so nothing is fitted.
  Default 90: the paper's ImageNet setting (ASH-S@90) and OpenOOD v1.5's
  ``ash.yml``. OpenOOD's ``ASHNet`` applies the binarizing variant ASH-B at that
  setting and pytorch-ood's default is ASH-S at 65; this module implements the paper's
  ASH-S. Ties at the cut are kept lowest neuron index first (deterministic; the
  papers' ``topk`` leaves the choice to the kernel); ``s2`` does not depend on it.
- ``scale`` (SCALE, Xu et al., ICLR 2024): like ASH-S's factor ``exp(s1 / s2)``, with
  the same per-image cut, but applied to the *unpruned* features, which is the same
  as multiplying ``W x`` by it before the bias. Default 85: the paper's ImageNet
  setting and OpenOOD v1.5's ``scale.yml`` (pytorch-ood: 0.65).
- ``gen`` (Liu et al., CVPR 2023): the generalized entropy ``G = sum_j p_j^g (1 -
  p_j)^g`` over the ``T = gen_top`` largest softmax probabilities; the score is
  ``-log(G)`` (OpenOOD's score is ``-G``, the same order; pytorch-ood's outlier score
  averages instead of summing, ``G / min(T, C)``). Computed in float64 in log space from the logits:
  ``log p`` and ``log(1 - p)`` never go through a probability that rounds to 1.0 or 0,
  so confident images keep their order where float32 probabilities would all be 1.0.
  Defaults ``g = 0.1``, ``T = 100``: the paper's and OpenOOD v1.5's ``gen.yml``
  (``M: 100``; pytorch-ood: all classes). Needs only logits: :func:`gen_scores`.
- ``vim`` (Wang et al., CVPR 2022): the energy of the logits minus ``alpha`` times the
  norm of the features' residual: the part of ``x - u`` (``u = -pinv(W) b``, the
  origin where every logit is zero) outside the principal subspace of dimension ``d``
  of the reference features' uncentred covariance about ``u``; ``alpha`` is the mean
  largest reference logit over the mean reference residual norm. Default ``d`` by the
  ViM authors' rule (their ``benchmark.py``): 1000 for ``M >= 2048``, 512 for
  ``M >= 768``, else ``M // 2`` (OpenOOD v1.5's ``vim.yml`` fixes 256, sweeping
  256 and 1000; pytorch-ood takes ``d``, replaced by ``M // 2`` when ``d > M``).
- ``fdbd`` (Liu & Qin, ICML 2024): the mean, over the classes ``c`` other than the
  predicted one ``p``, of the distance ``|l_p - l_c| / ||w_p - w_c||`` of the
  features to the decision boundary between ``p`` and ``c``, divided by the distance
  ``||x - mu||`` of the features to the reference mean ``mu`` (the paper's
  normalization, OpenOOD v1.5's ``distance_as_normalizer: True``). Hyper-parameter
  free. Class pairs with identical weight rows (no boundary in feature space) are
  left out of the sum; ``||x - mu||`` is clamped at ``1e-8`` as pytorch-ood does. The
  fit keeps the ``[C, C]`` inverse pair distances: 4 MB at 1,000 classes, but 1.9 GB
  at 21,841.

ReAct, ASH and SCALE were designed for non-negative (post-ReLU) features; with
negative ones ASH's and SCALE's ``s2`` can be zero or negative (their factor is then
meaningless). An all-zero row gets the factor 1 (its logits are the bias whatever it
is). Every percentile here is in percent, as in the papers and OpenOOD (pytorch-ood
takes fractions): ReAct's in ``[0, 100]``, ASH's and SCALE's in ``[0, 100)``; their cut
keeps at least one activation.

Computation: torch, in blocks of 4,096 rows on the features' device; the matrix
products in float32 (features of any float dtype, float16 included, are converted per
block); ASH's and SCALE's sums ``s1``, ``s2``, GEN, and every fitted statistic
(ViM's covariance and eigenvectors, ``u``, fDBD's mean and pair distances) in
float64. ASH's pruned logits are summed from the kept neurons' weight rows only
(``embedding_bag``), a tenth of a dense product at ``p = 90``. ``u`` comes from the
eigendecomposition of the smaller Gram matrix of ``W`` (its singular values below
``sqrt(max(C, M) eps)`` of the largest count as zero, where ``pinv`` cuts at
``max(C, M) eps``), and the symmetric eigendecompositions run through SciPy's LAPACK
divide and conquer on the CPU (``torch.linalg.eigh`` on other devices).

Example::

    >>> rng = np.random.default_rng(0)
    >>> head = LinearHead(rng.standard_normal((10, 64)), rng.standard_normal(10))
    >>> reference = np.maximum(rng.standard_normal((500, 64)), 0)
    >>> fitted = fit_head_detectors(reference, head)
    >>> scores = head_detector_scores(fitted, np.maximum(rng.standard_normal((3, 64)), 0))
    >>> sorted(scores), scores["vim"].shape, scores["vim"].dtype
    (['ash', 'fdbd', 'gen', 'react', 'scale', 'vim'], (3,), dtype('float32'))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

__all__ = [
    "ASH_PERCENTILE",
    "FDBD_MIN_DISTANCE",
    "FittedHeadDetectors",
    "GEN_GAMMA",
    "GEN_TOP",
    "HEAD_DETECTORS",
    "LinearHead",
    "REACT_PERCENTILE",
    "SCALE_PERCENTILE",
    "check_head_detectors",
    "fit_head_detectors",
    "gen_scores",
    "head_detector_scores",
    "vim_default_dim",
]

HEAD_DETECTORS = ("react", "ash", "scale", "gen", "vim", "fdbd")
REACT_PERCENTILE = 90.0
ASH_PERCENTILE = 90.0
SCALE_PERCENTILE = 85.0
GEN_GAMMA = 0.1
GEN_TOP = 100
FDBD_MIN_DISTANCE = 1e-8
_ROW_BLOCK = 4096

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class LinearHead:
    """The classifier's last linear layer: ``logits = features @ weight.T + bias``.

    ``weight`` ``[C, M]`` and ``bias`` ``[C]`` (numpy or torch, stored as float32
    numpy arrays).

    Example::

        >>> head = LinearHead(np.eye(2, 3), np.array([0.0, 1.0]))
        >>> head.num_classes, head.in_features
        (2, 3)
        >>> head.logits(np.array([[1.0, 2.0, 3.0]])).tolist()
        [[1.0, 3.0]]
        >>> LinearHead.from_module(torch.nn.Linear(3, 2)).weight.shape
        (2, 3)
    """

    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        weight = _numpy32(self.weight)
        bias = _numpy32(self.bias)
        if weight.ndim != 2:
            raise ValueError(
                f"LinearHead weight must be [classes, in_features], got shape {weight.shape}"
            )
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"LinearHead bias must have shape ({weight.shape[0]},) to match weight "
                f"{weight.shape}, got {bias.shape}; pass np.zeros({weight.shape[0]}) for a "
                "layer without bias"
            )
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)

    @classmethod
    def from_module(cls, linear: torch.nn.Linear) -> LinearHead:
        """The head of a ``torch.nn.Linear`` (a missing bias is zero), copied: on the
        CPU ``.numpy()`` shares the parameter's memory, which training goes on changing."""
        weight = linear.weight.detach().to("cpu", torch.float32, copy=True).numpy()
        bias = linear.bias
        no_bias = np.zeros(len(weight), dtype=np.float32)
        if bias is None:
            return cls(weight, no_bias)
        return cls(weight, bias.detach().to("cpu", torch.float32, copy=True).numpy())

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: Array) -> torch.Tensor:
        """float32 logits ``[N, C]`` of ``features`` ``[N, M]``, on their device (a
        CPU tensor for numpy features)."""
        _check_width(features, self)
        x = _as_tensor(features).float()
        weight, bias = self.on(x.device)
        return x @ weight.T + bias

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and bias as float32 tensors on ``device``."""
        return torch.from_numpy(self.weight).to(device), torch.from_numpy(self.bias).to(device)


@dataclass(frozen=True)
class FittedHeadDetectors:
    """What :func:`fit_head_detectors` learnt from the reference features, and the
    hyper-parameters of every detector. Fields of a detector not in ``detectors`` are
    None. ``reference_images``: the reference rows used (those with finite features).

    Example::

        >>> head = LinearHead(np.eye(3, 4), np.zeros(3))
        >>> fitted = fit_head_detectors(np.ones((8, 4)), head, ["fdbd"])
        >>> fitted.detectors, fitted.reference_images, fitted.fdbd_mean.tolist()
        (('fdbd',), 8, [1.0, 1.0, 1.0, 1.0])
    """

    head: LinearHead
    detectors: tuple[str, ...]
    reference_images: int
    react_percentile: float
    react_threshold: float | None
    ash_percentile: float
    scale_percentile: float
    gen_gamma: float
    gen_top: int
    vim_dim: int | None
    vim_origin: np.ndarray | None  # u = -pinv(W) b, [M]
    vim_residual_basis: np.ndarray | None  # [M, M - d], orthonormal columns
    vim_alpha: float | None
    fdbd_mean: np.ndarray | None  # [M]
    fdbd_inverse_distances: np.ndarray | None  # [C, C]: 1 / ||w_p - w_c||, 0 on the diagonal


def vim_default_dim(in_features: int) -> int:
    """The ViM authors' principal dimension for features of width ``in_features``.

    >>> vim_default_dim(2048), vim_default_dim(768), vim_default_dim(64)
    (1000, 512, 32)
    """
    if in_features >= 2048:
        return 1000
    if in_features >= 768:
        return 512
    return in_features // 2


def check_head_detectors(detectors: Sequence[str] | None) -> tuple[str, ...]:
    """``detectors`` as a tuple of known names in the given order (None: all of them).

    Raises:
        ValueError: an unknown name or a string instead of a sequence.

    >>> check_head_detectors(["vim", "react", "vim"])
    ('vim', 'react')
    """
    if detectors is None:
        return HEAD_DETECTORS
    if isinstance(detectors, str):
        raise ValueError(
            f"detectors must be a sequence of names, got the string {detectors!r}; "
            f"e.g. [{detectors!r}]"
        )
    names = tuple(dict.fromkeys(detectors))
    unknown = [name for name in names if name not in HEAD_DETECTORS]
    if unknown:
        raise ValueError(f"unknown head detectors {unknown}; choose from {list(HEAD_DETECTORS)}")
    return names


def fit_head_detectors(
    reference_features: Array,
    head: LinearHead,
    detectors: Sequence[str] | None = None,
    *,
    react_percentile: float = REACT_PERCENTILE,
    ash_percentile: float = ASH_PERCENTILE,
    scale_percentile: float = SCALE_PERCENTILE,
    gen_gamma: float = GEN_GAMMA,
    gen_top: int = GEN_TOP,
    vim_dim: int | None = None,
) -> FittedHeadDetectors:
    """Fit ``detectors`` (default: all of :data:`HEAD_DETECTORS`) on the reference
    set's penultimate ``reference_features`` ``[N, M]`` (numpy or torch, computed on
    the tensor's device) for the classifier ``head``.

    Rows with a non-finite feature are left out. ``react`` needs the clip threshold,
    ``vim`` the residual subspace and ``alpha``, ``fdbd`` the reference mean; ``ash``,
    ``scale`` and ``gen`` only keep their hyper-parameters. With no usable reference
    row the fitted values are NaN, and so are those detectors' scores.

    Raises:
        ValueError: features whose width is not the head's ``in_features``, a
            percentile outside its range, ``gen_top < 1``, or ``vim_dim`` not in
            ``[0, M)``.

    Example::

        >>> head = LinearHead(np.ones((2, 4)), np.zeros(2))
        >>> fitted = fit_head_detectors(np.arange(8.0).reshape(2, 4), head, ["react"])
        >>> fitted.react_threshold  # the 90th percentile of 0, 1, ..., 7
        6.3
    """
    names = check_head_detectors(detectors)
    _check_width(reference_features, head)
    _check_percentile("react_percentile", react_percentile, upper_open=False)
    _check_percentile("ash_percentile", ash_percentile, upper_open=True)
    _check_percentile("scale_percentile", scale_percentile, upper_open=True)
    if int(gen_top) < 1:
        raise ValueError(f"gen_top must be at least 1 (the classes GEN sums over), got {gen_top}")
    m = head.in_features
    dim = None
    if "vim" in names:
        dim = vim_default_dim(m) if vim_dim is None else int(vim_dim)
        if not 0 <= dim < m:
            raise ValueError(
                f"vim_dim must be in [0, {m}) for features of width {m}, got {dim}; "
                "leave it None for the ViM authors' rule"
            )
    device = _as_tensor(reference_features[:1]).device
    finite = _finite_rows(reference_features, device)
    count = int(finite.sum())
    react_threshold = None
    if "react" in names:
        react_threshold = _react_threshold(reference_features, finite, react_percentile, device)
    vim_origin = vim_basis = vim_alpha = None
    if "vim" in names:
        assert dim is not None
        vim_origin, vim_basis, vim_alpha = _fit_vim(reference_features, finite, head, dim, device)
    fdbd_mean = fdbd_inverse = None
    if "fdbd" in names:
        fdbd_mean, fdbd_inverse = _fit_fdbd(reference_features, finite, head, device)
    return FittedHeadDetectors(
        head=head,
        detectors=names,
        reference_images=count,
        react_percentile=float(react_percentile),
        react_threshold=react_threshold,
        ash_percentile=float(ash_percentile),
        scale_percentile=float(scale_percentile),
        gen_gamma=float(gen_gamma),
        gen_top=int(gen_top),
        vim_dim=dim,
        vim_origin=vim_origin,
        vim_residual_basis=vim_basis,
        vim_alpha=vim_alpha,
        fdbd_mean=fdbd_mean,
        fdbd_inverse_distances=fdbd_inverse,
    )


def head_detector_scores(
    fitted: FittedHeadDetectors,
    features: Array,
    detectors: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The float32 ``[N]`` scores (higher = more InD) of ``features`` ``[N, M]`` (numpy
    or torch, computed on the tensor's device in blocks of rows) for each of
    ``detectors`` (default: those ``fitted`` was fitted for), keyed by name.

    Raises:
        ValueError: features whose width is not the head's ``in_features``, or a
            detector ``fitted`` was not fitted for.

    Example::

        >>> head = LinearHead(np.eye(2), np.zeros(2))
        >>> fitted = fit_head_detectors(np.ones((4, 2)), head, ["react", "gen"])
        >>> scores = head_detector_scores(fitted, np.array([[3.0, 0.0], [np.nan, 1.0]]))
        >>> scores["react"]  # logits clipped at 1: logsumexp(1, 0)
        array([1.3132616,       nan], dtype=float32)
    """
    names = fitted.detectors if detectors is None else check_head_detectors(detectors)
    missing = [name for name in names if name not in fitted.detectors]
    if missing:
        raise ValueError(
            f"head detectors {missing} were not fitted (fitted: {list(fitted.detectors)}); "
            "pass them to fit_head_detectors"
        )
    _check_width(features, fitted.head)
    n = len(features)
    device = _as_tensor(features[:1]).device
    state = _State(fitted, device)
    blocks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, n, _ROW_BLOCK):
        x = _as_tensor(features[start : start + _ROW_BLOCK]).to(device).float()
        for name, scores in state.score_block(x, names).items():
            blocks[name].append(scores)
    return {
        name: torch.cat(parts).cpu().numpy() if parts else np.zeros(0, dtype=np.float32)
        for name, parts in blocks.items()
    }


def gen_scores(logits: Array, *, gamma: float = GEN_GAMMA, top: int = GEN_TOP) -> np.ndarray:
    """GEN's score ``-log(sum_j p_j^gamma (1 - p_j)^gamma)`` over the ``top`` largest
    softmax probabilities of each row of ``logits`` ``[N, C]`` (numpy or torch,
    computed on its device in float64, in log space): float32 ``[N]``, higher = more
    InD. A row with a non-finite logit scores NaN; a single class scores +inf.

    Example::

        >>> gen_scores(np.array([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])).round(4)
        array([-0.8826, -0.9325], dtype=float32)
        >>> gen_scores(np.array([[60.0, 0.0], [50.0, 0.0]]))  # p = 1.0, even in float64
        array([5.306853, 4.306853], dtype=float32)
    """
    if int(top) < 1:
        raise ValueError(f"top must be at least 1 (the classes GEN sums over), got {top}")
    n = len(logits)
    parts = [
        _gen_block(_as_tensor(logits[start : start + _ROW_BLOCK]), gamma, int(top))
        for start in range(0, n, _ROW_BLOCK)
    ]
    return torch.cat(parts).cpu().numpy() if parts else np.zeros(0, dtype=np.float32)


def gen_tensor(
    logits: torch.Tensor, *, gamma: float = GEN_GAMMA, top: int = GEN_TOP
) -> torch.Tensor:
    """:func:`gen_scores` of a batch of ``logits`` ``[B, C]`` as a float32 tensor on
    their device (no host synchronisation: the callback scores each batch where it is).

    >>> gen_tensor(torch.tensor([[2.0, 0.0, 0.0]])).round(decimals=4).tolist()
    [-0.8826000094413757]
    """
    return _gen_block(logits, gamma, int(top))


# --- scoring -------------------------------------------------------------------------


class _State:
    """The fitted arrays on the scoring device, as torch tensors."""

    def __init__(self, fitted: FittedHeadDetectors, device: torch.device) -> None:
        self.fitted = fitted
        self.weight, self.bias = fitted.head.on(device)
        self.weight_t = self.weight.T.contiguous()  # [M, C], rows per neuron
        m = fitted.head.in_features
        self.m = m

        def on(array: np.ndarray | None) -> torch.Tensor | None:
            return None if array is None else torch.from_numpy(array).to(device)

        self.vim_origin = on(fitted.vim_origin)
        self.vim_basis = on(fitted.vim_residual_basis)
        self.fdbd_mean = on(fitted.fdbd_mean)
        self.fdbd_inverse = on(fitted.fdbd_inverse_distances)
        self.ash_keep = _kept(m, fitted.ash_percentile)
        self.scale_keep = _kept(m, fitted.scale_percentile)

    def score_block(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        fitted = self.fitted
        finite = torch.isfinite(x.sum(1))
        if not bool(finite.all()):  # a sum overflows, or a feature is not finite
            finite = torch.isfinite(x).all(1)
        out: dict[str, torch.Tensor] = {}
        projected: torch.Tensor | None = None  # x @ W.T

        def plain() -> torch.Tensor:
            nonlocal projected
            if projected is None:
                projected = x @ self.weight.T
            return projected

        if "react" in names:
            threshold = float("nan") if fitted.react_threshold is None else fitted.react_threshold
            clipped = x.clamp(max=threshold) if not math.isnan(threshold) else x * float("nan")
            out["react"] = _energy(clipped @ self.weight.T + self.bias)
        if "ash" in names:
            values, where, factor = _prune(x, self.ash_keep)
            # the pruned features times W.T, from the kept ones only: sum_k v_k W[:, i_k]
            kept = torch.nn.functional.embedding_bag(
                where, self.weight_t, per_sample_weights=values, mode="sum"
            )
            out["ash"] = _energy(factor[:, None] * kept + self.bias)
        if "scale" in names:
            _, _, factor = _prune(x, self.scale_keep, indices=False)
            out["scale"] = _energy(factor[:, None] * plain() + self.bias)
        if "gen" in names:
            out["gen"] = _gen_block(plain() + self.bias, fitted.gen_gamma, fitted.gen_top)
        if "vim" in names:
            assert self.vim_origin is not None and self.vim_basis is not None
            alpha = float("nan") if fitted.vim_alpha is None else fitted.vim_alpha
            residual = ((x - self.vim_origin) @ self.vim_basis).norm(dim=1)
            out["vim"] = _energy(plain() + self.bias) - alpha * residual
        if "fdbd" in names:
            assert self.fdbd_mean is not None and self.fdbd_inverse is not None
            logits = plain() + self.bias
            top, predicted = logits.max(dim=1)
            boundary = ((top[:, None] - logits) * self.fdbd_inverse[predicted]).sum(1)
            spread = (x - self.fdbd_mean).norm(dim=1).clamp(min=FDBD_MIN_DISTANCE)
            out["fdbd"] = boundary / (max(logits.shape[1] - 1, 1) * spread)
        nan = torch.tensor(float("nan"), device=x.device)
        return {name: torch.where(finite, out[name].float(), nan) for name in names}


def _energy(logits: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits, dim=1)


def _kept(m: int, percentile: float) -> int:
    """How many of ``m`` activations a per-image cut at ``percentile`` keeps (as the
    papers' code rounds it), at least one."""
    return max(m - int(np.round(m * percentile / 100.0)), 1)


def _prune(
    x: torch.Tensor, keep: int, *, indices: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``keep`` largest activations of each row (``[B, keep]``), their neuron indices
    (ties at the cut: lowest index first; None-like empty when ``indices`` is False)
    and the factor ``exp(s1 / s2)`` (float32 ``[B]``, the sums in float64; 1 for an
    all-zero row)."""
    values, where = x.topk(keep, dim=1)  # descending
    total = x.sum(1, dtype=torch.float64)
    kept_sum = values.sum(1, dtype=torch.float64)
    ratio = torch.where((total == 0) & (kept_sum == 0), torch.zeros_like(total), total / kept_sum)
    factor = ratio.exp().float()
    if not indices:
        return values, where[:, :0], factor
    # topk picks any of the activations tied at the cut: where more tie than fit (and
    # they are not zeros, which add nothing), keep the lowest indices
    cut = values[:, -1:]
    crowded = ((x >= cut).sum(1) > keep) & (cut[:, 0] != 0)
    if bool(crowded.any()):
        rows = crowded.nonzero()[:, 0]
        order = x[rows].sort(dim=1, descending=True, stable=True).indices[:, :keep]
        where[rows] = order
        values[rows] = x[rows].gather(1, order)
    return values, where, factor


def _gen_block(logits: torch.Tensor, gamma: float, top: int) -> torch.Tensor:
    """GEN's ``-log G`` (float32 ``[B]``) of a block of logits, in float64."""
    logits = logits.detach().double()
    logits = logits.flatten(1) if logits.ndim > 1 else logits[:, None]
    b, c = logits.shape
    if c == 0:
        return torch.full((b,), float("nan"), device=logits.device)
    finite = torch.isfinite(logits).all(1)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    logits = torch.where(finite[:, None], logits, zero)
    largest, order = logits.topk(min(top, c), dim=1)  # descending
    best = largest[:, :1]
    others = logits - best
    others.scatter_(1, order[:, :1], float("-inf"))
    rest = torch.logsumexp(others, dim=1)  # log(1 - p_top) - log(p_top)
    log_norm = torch.logaddexp(torch.zeros_like(rest), rest)  # logsumexp(l) - l_top
    log_p = largest - best - log_norm[:, None]  # [B, top]
    # log(1 - p): the top one exactly from the others' mass; the rest have p <= 1/2
    log_q = torch.log1p(-log_p.exp())
    log_q[:, 0] = rest - log_norm
    log_g = torch.logsumexp(gamma * (log_p + log_q), dim=1)
    nan = torch.tensor(float("nan"), dtype=log_g.dtype, device=log_g.device)
    return torch.where(finite, -log_g, nan).float()


# --- fitting -------------------------------------------------------------------------


def _fit_vim(
    features: Array, finite: torch.Tensor, head: LinearHead, dim: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray, float]:
    m = head.in_features
    weight = torch.from_numpy(head.weight).to(device).double()
    bias = torch.from_numpy(head.bias).to(device).double()
    origin = _minimum_norm_origin(weight, bias).float()
    gram = torch.zeros((m, m), dtype=torch.float64, device=device)
    count = 0
    for block in _finite_blocks(features, finite, device):
        centred = block - origin
        gram += (centred.T @ centred).double()
        count += len(block)
    if count == 0:
        nan = np.full((m, m - dim), np.nan, dtype=np.float32)
        return origin.cpu().numpy(), nan, float("nan")
    # eigenvalues ascending: the first M - d eigenvectors span the residual space
    _, eigenvectors = _eigh(gram / count)
    basis = eigenvectors[:, : m - dim].float().contiguous()
    weight32, bias32 = head.on(device)
    top_logits = torch.zeros((), dtype=torch.float64, device=device)
    residuals = torch.zeros((), dtype=torch.float64, device=device)
    for block in _finite_blocks(features, finite, device):
        top_logits += (block @ weight32.T + bias32).amax(1).sum(dtype=torch.float64)
        residuals += ((block - origin) @ basis).norm(dim=1).sum(dtype=torch.float64)
    alpha = float(top_logits / residuals)
    return origin.cpu().numpy(), basis.cpu().numpy(), alpha


def _eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric float64 matrix: LAPACK's
    divide and conquer through SciPy on the CPU (twice as fast there as torch's on
    2,048 x 2,048), torch's on other devices."""
    if matrix.device.type != "cpu":
        values, vectors = torch.linalg.eigh(matrix)
        return values, vectors
    values_np, vectors_np = scipy.linalg.eigh(
        matrix.numpy(), driver="evd", check_finite=False, overwrite_a=False
    )
    return torch.from_numpy(values_np), torch.from_numpy(vectors_np)


def _minimum_norm_origin(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``u = -pinv(W) b`` (float64), from the eigendecomposition of the smaller Gram
    matrix of ``W`` (``W W^T`` or ``W^T W``): much cheaper than an SVD of ``W``.
    Singular values below ``sqrt(max(C, M) eps)`` times the largest count as zero."""
    classes, width = weight.shape
    wide = classes <= width
    gram = weight @ weight.T if wide else weight.T @ weight
    values, vectors = _eigh(gram)
    values, vectors = values.to(weight.device), vectors.to(weight.device)
    cutoff = values.max().clamp(min=0) * max(classes, width) * torch.finfo(torch.float64).eps
    inverse = torch.where(values > cutoff, 1 / values, torch.zeros_like(values))
    if wide:  # pinv(W) = W^T (W W^T)^+
        return -(weight.T @ (vectors @ (inverse * (vectors.T @ bias))))
    return -(vectors @ (inverse * (vectors.T @ (weight.T @ bias))))  # (W^T W)^+ W^T


def _fit_fdbd(
    features: Array, finite: torch.Tensor, head: LinearHead, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    m = head.in_features
    total = torch.zeros(m, dtype=torch.float64, device=device)
    count = 0
    for block in _finite_blocks(features, finite, device):
        total += block.sum(0, dtype=torch.float64)
        count += len(block)
    mean = (total / count if count else torch.full_like(total, float("nan"))).float()
    weight = torch.from_numpy(head.weight).to(device).double()
    squares = (weight**2).sum(1)
    distances = (squares[:, None] + squares[None, :] - 2 * weight @ weight.T).clamp(min=0).sqrt()
    inverse = torch.where(distances > 0, 1 / distances, torch.zeros_like(distances))
    inverse.fill_diagonal_(0)
    return mean.cpu().numpy(), inverse.float().cpu().numpy()


def _react_threshold(
    features: Array, finite: torch.Tensor, percentile: float, device: torch.device
) -> float:
    values = torch.cat([block.reshape(-1) for block in _finite_blocks(features, finite, device)])
    if values.numel() == 0:
        return float("nan")
    # numpy.percentile's linear interpolation between the two nearest order statistics
    position = percentile / 100.0 * (values.numel() - 1)
    low = math.floor(position)
    high = min(low + 1, values.numel() - 1)
    below = float(values.kthvalue(low + 1).values)
    above = float(values.kthvalue(high + 1).values) if high != low else below
    return below + (above - below) * (position - low)


# --- helpers -------------------------------------------------------------------------


def _as_tensor(array: Array) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach()
    return torch.from_numpy(np.asarray(array))


def _numpy32(array: Array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_width(features: Array, head: LinearHead) -> None:
    shape = tuple(features.shape)
    if len(shape) != 2 or shape[1] != head.in_features:
        raise ValueError(
            f"features must be [images, {head.in_features}] (the head's in_features: the "
            f"penultimate features that feed the linear head {head.weight.shape}), got "
            f"shape {shape}; record the input of the layer that produces the logits"
        )


def _check_percentile(name: str, value: float, *, upper_open: bool) -> None:
    top_ok = value < 100 if upper_open else value <= 100
    if not (value >= 0 and top_ok):
        bound = "[0, 100)" if upper_open else "[0, 100]"
        raise ValueError(f"{name} must be a percentile in {bound} (percent), got {value}")


def _finite_rows(features: Array, device: torch.device) -> torch.Tensor:
    parts = [
        torch.isfinite(_as_tensor(features[i : i + _ROW_BLOCK]).to(device)).all(1)
        for i in range(0, len(features), _ROW_BLOCK)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=device)


def _finite_blocks(features: Array, finite: torch.Tensor, device: torch.device):
    for start in range(0, len(features), _ROW_BLOCK):
        block = _as_tensor(features[start : start + _ROW_BLOCK]).to(device).float()
        yield block[finite[start : start + _ROW_BLOCK]]
