"""OOD detection from what the callback records: per-image scores and how well they
tell the InD set from each OOD set.

Every detector gives each image a score, **higher meaning more in-distribution**:

- on the logits (every image, computed per batch on the recording device:
  :func:`logit_scores`):

  - ``msp``: the maximum softmax probability ``p`` of the logits (Hendrycks & Gimpel,
    2017), ranked by its log-odds ``log(p / (1 - p)) = -logsumexp_{j != top}(l_j -
    l_top)``: the same order as ``p``, without the rounding that makes every confident
    image's probability exactly 1.0 in floating point (and ties them);
  - ``max_logit``: the largest logit (Hendrycks et al., 2022);
  - ``energy``: ``logsumexp`` of the logits, the negative free energy at temperature 1
    (Liu et al., 2020);
  - ``gen``: the generalized entropy of the 100 largest probabilities (Liu et al.,
    2023; ``head_detectors.gen_scores``);

- on a recorded layer's features, fitted on a *fit set* (:class:`FitSet`) that is
  never the set scored: the callback's reference set (``DeephysCallback(reference=)``,
  e.g. a fixed subset of the training data, as OpenOOD and pytorch-ood fit on training
  data) or, without one, one half of the InD set, the other half being the InD side:

  - ``mahalanobis``: minus the smallest Mahalanobis distance to a class mean, class
    means and one tied covariance fitted on the fit set (Lee et al., 2018),
    pseudo-inverted;
  - ``knn``: minus the distance of the L2-normalized features to their ``k``-th
    nearest fit-set neighbour (Sun et al., 2022), ``k`` = :data:`KNN_NEIGHBORS`.
    Beyond :data:`KNN_MAX_IMAGES` images per set, an evenly spread subset of that
    many is used (as neighbours and as queries);
  - ``react``, ``ash``, ``scale``, ``vim``, ``fdbd``: the post-hoc detectors that need
    the layer's features and the linear head that maps them to the logits
    (``head_detectors``); a layer that feeds no linear head gets rows with a note that
    says why.

:func:`detection_metrics` gives AUROC, AUPR-In, AUPR-Out and FPR at 95 % TPR with
InD as the positive class, computed by torchmetrics.

Example::

    >>> import torch
    >>> scores = logit_scores(torch.tensor([[4.0, 0.0], [0.1, 0.0]]))   # [B, 4]
    >>> scores[:, 0].tolist()                     # msp's log-odds: p = 0.982, 0.525
    [4.0, 0.10000000149011612]
    >>> logit_scores(torch.tensor([[40.0, 0.0], [30.0, 0.0]]))[:, 0].tolist()  # p ~ 1.0
    [40.0, 30.0]
    >>> metrics = detection_metrics(np.array([3.0, 2.0]), np.array([1.0, 2.5]))
    >>> metrics["auroc"], metrics["fpr_at_95_tpr"]
    (0.75, 0.5)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import overload

import numpy as np
import torch
from torchmetrics.functional.classification import binary_roc

from deephys_lightning import head_detectors
from deephys_lightning.head_detectors import LinearHead
from deephys_lightning.metrics import device_of, rows_at, spread_subset
from tensorboard_plugin_deephys.log.metadata import DETECTION_METRICS, Detection

__all__ = [
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "FEATURE_DETECTORS",
    "FITTED_DETECTORS",
    "FitSet",
    "HEAD_DETECTORS",
    "KNN_MAX_IMAGES",
    "KNN_NEIGHBORS",
    "LOGIT_DETECTORS",
    "check_detectors",
    "detection_metrics",
    "feature_detections",
    "knn_scores",
    "logit_detections",
    "logit_scores",
    "mahalanobis_scores",
    "scored_counts",
    "halves",
    "split_half",
]

LOGIT_DETECTORS = ("msp", "max_logit", "energy", "gen")  # the columns of logit_scores()
FEATURE_DETECTORS = ("mahalanobis", "knn")  # per recorded layer
# per recorded layer that feeds the linear head (gen, which needs only the logits, is
# among the logit detectors)
HEAD_DETECTORS = tuple(d for d in head_detectors.HEAD_DETECTORS if d != "gen")
FITTED_DETECTORS = FEATURE_DETECTORS + HEAD_DETECTORS  # fitted on a FitSet
DETECTORS = LOGIT_DETECTORS + FITTED_DETECTORS
# The logit detectors cost a few milliseconds per epoch even at ImageNet scale; the
# feature detectors cost seconds there (benchmarks/bench_scores.py): opt-in. GEN is
# computed with the others but left out of the default table.
DEFAULT_DETECTORS = ("msp", "max_logit", "energy")
KNN_NEIGHBORS = 50
KNN_MAX_IMAGES = 10_000
# The fraction of InD images accepted at the FPR's threshold.
TPR = 0.95
_ROW_BLOCK = 4096


def check_detectors(detectors: Sequence[str] | None) -> tuple[str, ...]:
    """``detectors`` as a tuple of known names, in the order given (None: none).

    Raises:
        ValueError: an unknown name or a string instead of a sequence, naming the
            valid detectors.
    """
    if detectors is None:
        return ()
    if isinstance(detectors, str):
        raise ValueError(
            f"ood_detectors must be a list of names, got the string {detectors!r}; "
            f"e.g. ood_detectors=[{detectors!r}]"
        )
    names = tuple(detectors)
    unknown = [name for name in names if name not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown OOD detectors {unknown}; choose from {list(DETECTORS)}")
    return tuple(dict.fromkeys(names))


def logit_scores(logits: torch.Tensor) -> torch.Tensor:
    """float32 ``[B, 4]``: the ``msp``, ``max_logit``, ``energy`` and ``gen`` score of
    each row of ``logits`` ``[B, C]`` (:data:`LOGIT_DETECTORS`' order), on the logits'
    device (no host synchronisation).

    The ``msp`` column is the log-odds of the maximum softmax probability ``p``,
    ``log(p / (1 - p)) = -logsumexp_{j != top}(l_j - l_top)``: it ranks images exactly
    as ``p`` does, where ``p`` itself rounds to 1.0 for every confident image (beyond
    a margin of about 17 in float32, 37 in float64) and ties them. ``sigmoid`` of it
    is ``p``. A row with a NaN or infinite logit scores NaN in every column.
    """
    logits = logits.detach().float()
    logits = logits.flatten(1) if logits.ndim > 1 else logits[:, None]
    if logits.shape[1] == 0:
        return torch.full((logits.shape[0], 4), float("nan"), device=logits.device)
    energy = torch.logsumexp(logits, dim=1)
    max_logit, top = logits.max(dim=1)
    others = logits - max_logit[:, None]
    others.scatter_(1, top[:, None], float("-inf"))  # the rest (a tie for the top stays)
    msp_log_odds = -torch.logsumexp(others, dim=1)  # +inf for a single class
    gen = head_detectors.gen_tensor(logits).to(logits.dtype)
    scores = torch.stack([msp_log_odds, max_logit, energy, gen], dim=1)
    # An image without finite logits has no prediction: no score either (NaN, left out
    # of the metrics), never the extreme an infinite logit would give it.
    return scores.masked_fill(~torch.isfinite(logits).all(dim=1, keepdim=True), float("nan"))


def detection_metrics(ind_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR at 95 % TPR of telling InD from OOD by a score
    that is higher for InD (keys :data:`tensorboard_plugin_deephys.log.metadata.DETECTION_METRICS`).

    InD is the positive class: AUPR-In is the average precision of InD, AUPR-Out that
    of OOD under the negated score, and the FPR the fraction of OOD images scored at
    least as high as the threshold that keeps 95 % of the InD images. NaN scores are
    left out (:func:`scored_counts` says how many remain); infinities rank as the
    extremes they are. All NaN when a side has no scored image.
    """
    ind = np.asarray(ind_scores, dtype=np.float64).reshape(-1)
    ood = np.asarray(ood_scores, dtype=np.float64).reshape(-1)
    ind, ood = ind[~np.isnan(ind)], ood[~np.isnan(ood)]
    if not (ind.size and ood.size):
        return dict.fromkeys(DETECTION_METRICS, float("nan"))
    # torchmetrics reads values outside [0, 1] as logits and squashes them with a
    # sigmoid, which ties every large score: hand it the scores' ranks in [0, 1]
    # instead (same order, same ties, so the same curves).
    _, dense = np.unique(np.concatenate([ind, ood]), return_inverse=True)
    ranks = torch.from_numpy(dense / max(int(dense.max()), 1))
    is_ind = torch.cat(
        [torch.ones(ind.size, dtype=torch.long), torch.zeros(ood.size, dtype=torch.long)]
    )
    # One ROC curve (torchmetrics') holds all four: its area is the AUROC (as
    # binary_auroc takes it); its lowest FPR at TPR >= 95 % the FPR (as
    # binary_specificity_at_sensitivity finds it); and its points, as counts, are the
    # precision-recall points of both directions, whose step sums are the average
    # precisions (as binary_average_precision and scikit-learn sum them).
    fpr, tpr, _ = binary_roc(ranks, is_ind, validate_args=False)  # from (0, 0), per threshold
    positives, negatives = ind.size, ood.size
    tps = np.rint(tpr.double().numpy() * positives)  # InD images at or above each threshold
    fps = np.rint(fpr.double().numpy() * negatives)  # OOD images at or above it
    aupr_in = np.sum(np.diff(tps) / positives * (tps[1:] / (tps[1:] + fps[1:])))
    # OOD positive, score negated: the images below each threshold, the last point first
    ood_below, ind_below = negatives - fps[:-1], positives - tps[:-1]
    aupr_out = np.sum(np.diff(fps) / negatives * (ood_below / (ood_below + ind_below)))
    return {
        "auroc": float(torch.trapezoid(tpr, fpr)),
        "aupr_in": float(aupr_in),
        "aupr_out": float(aupr_out),
        "fpr_at_95_tpr": float(fpr[tpr >= TPR].min()),
    }


def scored_counts(scores: np.ndarray) -> int:
    """How many of ``scores`` :func:`detection_metrics` uses (the non-NaN ones)."""
    return int(np.sum(~np.isnan(np.asarray(scores, dtype=np.float64))))


Features = np.ndarray | torch.Tensor  # [N, M]: a tensor is scored on its device


def _exact_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the detectors' matrix products: float64 on an accelerator, where
    float32 products may run in TF32 (a 10-bit mantissa) when training allows it
    (``torch.set_float32_matmul_precision("high")``, a setting shared by the whole
    process, the writer thread included); float32 on the CPU, twice as fast there,
    where only ``"medium"`` changes them (oneDNN's bf16 on CPUs that have it)."""
    return torch.float32 if device.type == "cpu" else torch.float64


def _float_rows(
    features: Features, start: int, stop: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    block = features[start:stop]
    block = block if isinstance(block, torch.Tensor) else torch.from_numpy(np.asarray(block))
    return block.to(device, dtype)


def mahalanobis_scores(
    ind_features: Features,
    ind_labels: np.ndarray,
    num_classes: int,
    features: Mapping[str, Features],
) -> dict[str, np.ndarray]:
    """``mahalanobis`` scores (float32 ``[N]``) of each dataset in ``features``.

    Class means and a tied covariance are fitted on the rows of ``ind_features``
    ``[N, M]`` whose features are all finite, with ``ind_labels``; the covariance is
    pseudo-inverted (eigenvalues below ``M * eps * max`` are dropped). A class without
    InD images has no mean; a row whose label is not a class (an ignore index such
    as -100, or one beyond ``num_classes``) takes no part in the fit. Rows with a
    non-finite feature score NaN. Computed on the device of ``ind_features`` (a
    tensor's; the CPU for NumPy arrays); only the scores cross to the host.

    Example::

        >>> ind = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
        >>> found = mahalanobis_scores(ind, np.zeros(4, int), 1, {"x": np.ones((1, 2))})
        >>> found["x"].tolist()  # the class mean itself: distance 0
        [-0.0]
    """
    device = device_of(ind_features)
    dtype = _exact_dtype(device)
    ind_labels = np.asarray(ind_labels, dtype=np.int64)
    n_rows, m = ind_features.shape[0], ind_features.shape[1]
    if ind_labels.shape != (n_rows,):
        raise ValueError(f"ind_labels must be [{n_rows}], one per row, got {ind_labels.shape}")
    # (checked on the host: a label out of range on a GPU is a device-side assert)
    classed = (ind_labels >= 0) & (ind_labels < num_classes)
    ind_labels = np.where(classed, ind_labels, 0)
    finite_rows = torch.cat(
        [
            torch.isfinite(_float_rows(ind_features, i, i + _ROW_BLOCK, device, dtype)).all(1)
            for i in range(0, n_rows, _ROW_BLOCK)
        ]
        or [torch.zeros(0, dtype=torch.bool, device=device)]
    ) & torch.from_numpy(classed).to(device)
    n = int(finite_rows.sum())
    if n == 0:
        return {name: np.full(len(f), np.nan, dtype=np.float32) for name, f in features.items()}
    # Sums and the Gram matrix of the rows minus a shift (their first finite row), in
    # blocks accumulated in float64: the shift keeps large offsets from cancelling.
    # The tied covariance does not depend on it.
    first = int(torch.argmax(finite_rows.to(torch.uint8)))
    shift = _float_rows(ind_features, first, first + 1, device, dtype)[0]
    sums = torch.zeros((num_classes, m), dtype=torch.float64, device=device)
    gram = torch.zeros((m, m), dtype=torch.float64, device=device)
    counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    labels = torch.from_numpy(ind_labels).to(device)
    for start in range(0, n_rows, _ROW_BLOCK):
        keep = finite_rows[start : start + _ROW_BLOCK]
        block = _float_rows(ind_features, start, start + _ROW_BLOCK, device, dtype)[keep] - shift
        index = labels[start : start + _ROW_BLOCK][keep]
        sums.index_add_(0, index, block.double())
        counts.index_add_(0, index, torch.ones(len(index), dtype=torch.float64, device=device))
        gram += (block.T @ block).double()
    present = counts > 0
    means = sums[present] / counts[present, None]  # [C', M], shifted
    # Tied covariance: sum over images of (x - mean of its class)(...)^T / N.
    covariance = (gram - (means.T * counts[present]) @ means) / n
    try:
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    except RuntimeError:  # torch.linalg.LinAlgError: a degenerate covariance
        return {name: np.full(len(f), np.nan, dtype=np.float32) for name, f in features.items()}
    keep = eigenvalues > eigenvalues.max().clamp(min=0) * m * torch.finfo(torch.float64).eps
    whiten = (eigenvectors[:, keep] / eigenvalues[keep].sqrt()).to(dtype)  # [M, r]
    centre = (sums.sum(0) / n).to(dtype)  # of the shifted rows
    class_points = (means.to(dtype) - centre) @ whiten  # [C', r]
    class_norms = (class_points**2).sum(1)
    out = {}
    for name, dataset in features.items():
        parts = []
        for start in range(0, len(dataset), _ROW_BLOCK):
            rows = _float_rows(dataset, start, start + _ROW_BLOCK, device, dtype)
            points = (rows - shift - centre) @ whiten
            distances = (points**2).sum(1, keepdim=True) - 2 * points @ class_points.T + class_norms
            # a row with a non-finite feature gets NaN: NaN propagates through amin
            parts.append(-distances.amin(1).clamp(min=0))
        out[name] = _host_scores(parts)
    return out


def _host_scores(parts: list[torch.Tensor]) -> np.ndarray:
    """The blocks of scores of one set, float32, on the host (one copy)."""
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(parts).to("cpu", torch.float32).numpy()


def _unit_rows(
    features: Features, rows: np.ndarray, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    block = torch.as_tensor(rows_at(features, rows)).to(device, dtype)
    return block / block.norm(dim=1, keepdim=True).clamp(min=1e-12)


def knn_scores(
    bank_features: Features,
    features: Mapping[str, Features],
    *,
    ind: str | None = None,
    k: int = KNN_NEIGHBORS,
    max_images: int = KNN_MAX_IMAGES,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``knn`` scores of each dataset in ``features``: ``(indices, scores)``, the
    images scored (at most ``max_images``, evenly spread) and their float32 scores.

    The neighbours are the images of ``bank_features`` (the fit set; an evenly spread
    subset of at most ``max_images``). ``ind``, when given, names the set in
    ``features`` that *is* the bank: it is scored leave-one-out on the same subset.
    ``k`` is capped at the neighbours there are. Computed on the device of
    ``bank_features`` (a tensor's; the CPU for NumPy arrays); only the scores cross
    to the host.

    Example::

        >>> bank = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> rows, scores = knn_scores(bank, {"x": np.array([[1.0, 0.0]])}, k=1)["x"]
        >>> rows.tolist(), scores.tolist()  # its nearest neighbour is itself: distance 0
        ([0], [-0.0])
    """
    device = device_of(bank_features)
    dtype = _exact_dtype(device)
    bank_rows = spread_subset(len(bank_features), max_images)
    bank = _unit_rows(bank_features, bank_rows, device, dtype)  # [B, M]
    out = {}
    for name, dataset in features.items():
        is_ind = name == ind
        rows = bank_rows if is_ind else spread_subset(len(dataset), max_images)
        neighbours = min(k, len(bank) - (1 if is_ind else 0))
        parts = []
        for start in range(0, len(rows) if neighbours >= 1 else 0, 1024):
            queries = (
                bank[start : start + 1024]
                if is_ind
                else _unit_rows(dataset, rows[start : start + 1024], device, dtype)
            )
            similarity = queries @ bank.T  # [q, B]
            if is_ind:  # an image is not its own neighbour
                own = torch.arange(start, start + len(queries), device=device)
                similarity[torch.arange(len(queries), device=device), own] = -float("inf")
            kth = similarity.topk(neighbours, dim=1).values[:, -1]
            parts.append(-(2 - 2 * kth).clamp(min=0).sqrt())
        scores = _host_scores(parts) if parts else np.full(len(rows), np.nan, np.float32)
        out[name] = (rows, scores)
    return out


def logit_detections(
    scores: Mapping[str, np.ndarray], *, ind: str, detectors: Sequence[str]
) -> dict[str, list[Detection]]:
    """Per OOD set, a row per logit detector of ``detectors``: ``scores`` maps each
    dataset (``ind`` among them) to its :func:`logit_scores` ``[N, 4]`` (``[N, 3]``,
    without ``gen``, from before it)."""
    width = min(found.shape[1] for found in scores.values())
    chosen = [d for d in detectors if d in LOGIT_DETECTORS[:width]]
    rows: dict[str, list[Detection]] = {}
    for name, ood in scores.items():
        if name == ind:
            continue
        rows[name] = []
        for detector in chosen:
            column = LOGIT_DETECTORS.index(detector)
            rows[name].append(_row(detector, None, scores[ind][:, column], ood[:, column]))
    return rows


@dataclasses.dataclass(frozen=True)
class FitSet:
    """Where the detectors on a layer's features are fitted: ``features`` ``[F, M]``
    (finite rows; a tensor's device is where the detectors compute), their
    ``labels`` ``[F]``, and ``source``: ``"reference"`` (the callback's reference
    set) or ``"ind_half"`` (one half of the InD set)."""

    features: Features
    labels: np.ndarray
    source: str


def split_half(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The InD images ``(fit, scored)`` when no reference set is given: every other
    image from the first, and the rest (deterministic, the same every epoch).

    >>> [half.tolist() for half in split_half(5)]
    [[0, 2, 4], [1, 3]]
    """
    fit, scored = halves(np.arange(count))
    return fit, scored


@overload
def halves(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def halves(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
def halves(rows: Features) -> tuple[Features, Features]:
    """The :func:`split_half` halves of ``rows`` (an array or a tensor, on any device)
    as views: strided slices, no copy of the features."""
    return rows[0::2], rows[1::2]


def feature_detections(
    layer: str,
    features: Mapping[str, Features],
    *,
    ind: str,
    fit: FitSet,
    num_classes: int,
    detectors: Sequence[str],
    head: LinearHead | None = None,
    no_head: str = "",
) -> dict[str, list[Detection]]:
    """Per OOD set, a row per detector of ``detectors`` fitted on ``fit`` (see
    :data:`FITTED_DETECTORS`), on ``layer``'s ``features`` (dataset -> ``[N, M]``,
    ``ind`` among them: the InD images scored). The head detectors need ``head``;
    without one their rows have NaN metrics and ``no_head`` (why) as their note."""
    rows: dict[str, list[Detection]] = {name: [] for name in features if name != ind}

    def add(detector: str, scores: Mapping[str, np.ndarray], note: str = "") -> None:
        for name in rows:
            rows[name].append(
                _row(
                    detector,
                    layer,
                    scores[ind],
                    scores[name],
                    fitted_on=fit.source,
                    fit_images=len(fit.features),
                    note=note,
                )
            )

    if "mahalanobis" in detectors:
        n, m = fit.features.shape
        if n <= m + num_classes:
            warnings.warn(
                f"OOD detector 'mahalanobis' on layer {layer!r}: fitted on {n} images "
                f"({_FIT_WORDS[fit.source]}) for {m} neurons and {num_classes} classes: too "
                "few for a covariance of this size, its scores are unreliable; pass a larger "
                "DeephysCallback(reference=...) or leave it out of ood_detectors.",
                stacklevel=2,
            )
        add("mahalanobis", mahalanobis_scores(fit.features, fit.labels, num_classes, features))
    if "knn" in detectors:
        scored = knn_scores(fit.features, features)
        add("knn", {name: found[1] for name, found in scored.items()})
    chosen = [d for d in HEAD_DETECTORS if d in detectors]
    if chosen and head is None:
        nothing = {name: np.full(0, np.nan, dtype=np.float32) for name in features}
        for detector in chosen:
            add(detector, nothing, no_head or f"layer {layer!r} feeds no linear head")
    elif chosen:
        assert head is not None
        fitted = head_detectors.fit_head_detectors(fit.features, head, chosen)
        by_set = {
            name: head_detectors.head_detector_scores(fitted, values, chosen)
            for name, values in features.items()
        }
        for detector in chosen:
            add(detector, {name: found[detector] for name, found in by_set.items()})
    return rows


_FIT_WORDS = {
    "reference": "the reference set",
    "ind_half": "one half of the InD set; pass DeephysCallback(reference=...) to fit on more",
}


def _row(
    detector: str,
    layer: str | None,
    ind: np.ndarray,
    ood: np.ndarray,
    *,
    fitted_on: str = "",
    fit_images: int = 0,
    note: str = "",
) -> Detection:
    found = detection_metrics(ind, ood)
    return Detection(
        detector=detector,
        layer=layer,
        auroc=found["auroc"],
        aupr_in=found["aupr_in"],
        aupr_out=found["aupr_out"],
        fpr_at_95_tpr=found["fpr_at_95_tpr"],
        ind_images=scored_counts(ind),
        ood_images=scored_counts(ood),
        fitted_on=fitted_on,
        fit_images=fit_images,
        note=note,
    )
