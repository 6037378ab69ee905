"""OOD detection: detector scores against slow references, the metrics against
scikit-learn and pytorch-ood on the same scores, and what a real Trainer run logs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from pytorch_ood.metrics import OODMetrics
from scipy.special import log_softmax, logsumexp, softmax
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from tensorboard.backend.event_processing import event_accumulator
from tiny_model import NUM_CLASSES, TinyNet, loader, random_set, trainer

from deephys_lightning import DeephysCallback, detection, read_log
from deephys_lightning.cli import main
from deephys_lightning.scores import detection_table
from tensorboard_plugin_deephys.log.metadata import DETECTION_METRICS, Detection


def sklearn_metrics(ind: np.ndarray, ood: np.ndarray) -> dict[str, float]:
    """The four metrics with scikit-learn, InD positive (the slow reference)."""
    scores = np.concatenate([ind, ood])
    is_ind = np.concatenate([np.ones(len(ind)), np.zeros(len(ood))])
    fpr, tpr, _ = roc_curve(is_ind, scores)
    return {
        "auroc": roc_auc_score(is_ind, scores),
        "aupr_in": average_precision_score(is_ind, scores),
        "aupr_out": average_precision_score(1 - is_ind, -scores),
        "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
    }


def pytorch_ood_metrics(ind: np.ndarray, ood: np.ndarray) -> dict[str, float]:
    """pytorch-ood's OODMetrics on the same scores. It takes *outlier* scores with OOD
    (labels < 0) as the positive class; ours are InD scores with InD positive, so InD
    images are given its "outlier" label: its AUPR-OUT is our AUPR-In, and back."""
    metrics = OODMetrics()
    scores = torch.from_numpy(np.concatenate([ind, ood]))
    labels = torch.cat([-torch.ones(len(ind)), torch.zeros(len(ood))]).long()
    metrics.update(scores, labels)
    out = metrics.compute()
    return {
        "auroc": out["AUROC"],
        "aupr_in": out["AUPR-OUT"],
        "aupr_out": out["AUPR-IN"],
        "fpr_at_95_tpr": out["FPR95TPR"],
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("offset", [0.0, 100.0, -1000.0])
def test_metrics_match_sklearn_and_pytorch_ood(seed, ties, offset):
    rng = np.random.default_rng(seed)
    n_ind, n_ood = rng.integers(50, 3000, 2)
    ind = rng.normal(rng.uniform(0, 2), 1, n_ind)
    ood = rng.normal(0, rng.uniform(0.5, 2), n_ood)
    if ties:  # coarse scores: many ties across the two sets
        ind, ood = np.round(ind * 3), np.round(ood * 3)
    # far outside [0, 1] (energies, Mahalanobis distances): no squashing of any kind
    ind, ood = ind + offset, ood + offset
    ours = detection.detection_metrics(ind, ood)
    reference = sklearn_metrics(ind, ood)
    for name in DETECTION_METRICS:
        assert ours[name] == pytest.approx(reference[name], abs=1e-6), name
    other = pytorch_ood_metrics(ind, ood)
    assert ours["auroc"] == pytest.approx(other["auroc"], abs=1e-6)
    assert ours["fpr_at_95_tpr"] == pytest.approx(other["fpr_at_95_tpr"], abs=1e-6)
    # pytorch-ood integrates the PR curve by trapezoids, scikit-learn (and we) by steps
    # (average precision): without ties the two agree up to the steps' size; ties make
    # long steps, where they differ by design.
    if not ties:
        assert ours["aupr_in"] == pytest.approx(other["aupr_in"], abs=2e-3)
        assert ours["aupr_out"] == pytest.approx(other["aupr_out"], abs=2e-3)


def test_metrics_sign_and_undefined_cases():
    perfect = detection.detection_metrics(np.array([2.0, 3.0]), np.array([0.0, 1.0]))
    assert perfect == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr_at_95_tpr": 0.0}
    swapped = detection.detection_metrics(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    assert swapped["auroc"] == 0.0 and swapped["fpr_at_95_tpr"] == 1.0
    for ind, ood in ((np.array([]), np.array([1.0])), (np.array([np.nan]), np.array([0.0]))):
        assert all(np.isnan(v) for v in detection.detection_metrics(ind, ood).values())


def test_nan_scores_are_left_out_and_infinities_rank_as_extremes():
    ind, ood = np.array([3.0, np.inf, np.nan, 2.0]), np.array([1.0, -np.inf, np.nan, 2.5])
    metrics = detection.detection_metrics(ind, ood)
    reference = sklearn_metrics(np.array([3.0, 1e300, 2.0]), np.array([1.0, -1e300, 2.5]))
    for name in DETECTION_METRICS:
        assert metrics[name] == pytest.approx(reference[name], abs=1e-6)
    assert detection.scored_counts(ind) == 3


def test_mahalanobis_survives_non_finite_features_and_large_offsets():
    rng = np.random.default_rng(2)
    ind = rng.normal(100, 0.05, (300, 6)).astype(np.float32)  # a large offset, small spread
    labels = rng.integers(0, 3, 300)
    ood = rng.normal(100, 0.08, (50, 6)).astype(np.float32)
    expected = slow_mahalanobis(ind, labels, 3, ood)
    scores = detection.mahalanobis_scores(ind, labels, 3, {"ood": ood})["ood"]
    np.testing.assert_allclose(scores, expected, rtol=2e-3, atol=1e-2)
    bad = ind.copy()
    bad[5, 2], bad[7, 0] = np.nan, np.inf
    clean = np.delete(ind, [5, 7], axis=0)
    out = detection.mahalanobis_scores(bad, labels, 3, {"ind": bad, "ood": ood})
    assert np.isnan(out["ind"][[5, 7]]).all() and np.isfinite(np.delete(out["ind"], [5, 7])).all()
    np.testing.assert_allclose(
        out["ood"], slow_mahalanobis(clean, np.delete(labels, [5, 7]), 3, ood), rtol=2e-3, atol=1e-2
    )
    rows = detection.feature_detections(
        "fc",
        {"ind": bad, "ood": ood},
        ind="ind",
        fit=detection.FitSet(bad, labels, "reference"),
        num_classes=3,
        detectors=("mahalanobis",),
    )
    assert rows["ood"][0].ind_images == 298 and rows["ood"][0].ood_images == 50
    assert (rows["ood"][0].fitted_on, rows["ood"][0].fit_images) == ("reference", 300)


def test_a_fit_set_too_small_for_mahalanobis_warns():
    rng = np.random.default_rng(3)
    feats = {"ind": rng.normal(size=(20, 30)), "ood": rng.normal(size=(20, 30))}
    fit = detection.FitSet(rng.normal(size=(20, 30)), rng.integers(0, 2, 20), "ind_half")
    with pytest.warns(UserWarning, match="too few for a covariance.*reference="):
        detection.feature_detections(
            "fc", feats, ind="ind", fit=fit, num_classes=2, detectors=("mahalanobis",)
        )


def test_an_empty_dataset_with_logits_still_writes(tmp_path):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from deephys_lightning.writing import DatasetRecording, EventFileSink, write_record
    from tensorboard_plugin_deephys.log.metadata import Record

    rng = np.random.default_rng(0)
    recordings = {
        name: DatasetRecording(
            labels=rng.integers(0, 3, n),
            predictions=rng.integers(0, 3, n),
            activations={"fc": rng.random((n, 4)).astype(np.float16)},
            logits=rng.normal(size=(n, 3)).astype(np.float32),
        )
        for name, n in (("ind", 10), ("empty", 0))
    }
    for step, detectors in ((1, ()), (2, detection.DEFAULT_DETECTORS)):
        record = Record(
            step=step,
            epoch=0,
            layers=("fc",),
            datasets=("ind", "empty"),
            class_names=("a", "b", "c"),
            num_images={"ind": 10, "empty": 0},
            top_k=2,
        )
        sink = EventFileSink(EventFileWriter(str(tmp_path)))
        write_record(sink, record, recordings, log_dir=str(tmp_path), detectors=detectors)
        sink.close()
    rows = read_log(tmp_path).detection("empty")
    assert len(rows) == 3 and all(np.isnan(r.auroc) and r.ood_images == 0 for r in rows)


def msp_log_odds(logits: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of the maximum softmax probability p, by scipy in float64."""
    log_p = log_softmax(logits.astype(np.float64), axis=1).max(1)
    return log_p - np.log(-np.expm1(log_p))


def test_logit_scores_match_scipy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (64, 10)).astype(np.float32)
    scores = detection.logit_scores(torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(scores[:, 0], msp_log_odds(logits), rtol=1e-5, atol=1e-5)
    probability = 1 / (1 + np.exp(-scores[:, 0].astype(np.float64)))  # sigmoid: p again
    np.testing.assert_allclose(probability, softmax(logits, axis=1).max(1), rtol=1e-5)
    np.testing.assert_allclose(scores[:, 1], logits.max(1), rtol=1e-6)
    np.testing.assert_allclose(scores[:, 2], logsumexp(logits, axis=1), rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_saturated_logits_give_the_exact_metrics_of_every_logit_detector(seed):
    """Confident logits (margins 17 to 30): float32's exp(max - logsumexp) rounds their
    MSP to 1.0 and ties them; the metrics equal scikit-learn's on the exact scores."""
    rng = np.random.default_rng(seed)
    ind = rng.normal(0, 1, (400, 10))
    ind[np.arange(400), rng.integers(0, 10, 400)] += rng.uniform(17, 30, 400)
    ood = rng.normal(0, 1, (300, 10))
    ood[np.arange(300), rng.integers(0, 10, 300)] += rng.uniform(10, 28, 300)
    ind, ood = ind.astype(np.float32), ood.astype(np.float32)
    exact = {  # float64: p = 1 - 1e-13 is not 1.0 there
        "msp": lambda z: softmax(z.astype(np.float64), axis=1).max(1),
        "max_logit": lambda z: z.astype(np.float64).max(1),
        "energy": lambda z: logsumexp(z.astype(np.float64), axis=1),
        # GEN (Liu et al., 2023) by its formula, gamma 0.1, over every class (C <= 100)
        "gen": lambda z: (
            -np.log(
                np.sum((p := softmax(z.astype(np.float64), axis=1)) ** 0.1 * (1 - p) ** 0.1, axis=1)
            )
        ),
    }
    saturated = np.exp(ind.max(1) - logsumexp(ind, axis=1).astype(np.float32))
    assert (saturated == 1.0).mean() > 0.5  # the old float32 MSP tied most InD images
    scores = {
        name: detection.logit_scores(torch.from_numpy(z)).numpy()
        for name, z in (("ind", ind), ("ood", ood))
    }
    rows = detection.logit_detections(scores, ind="ind", detectors=detection.LOGIT_DETECTORS)
    for row in rows["ood"]:
        reference = sklearn_metrics(exact[row.detector](ind), exact[row.detector](ood))
        for name in DETECTION_METRICS:
            assert getattr(row, name) == pytest.approx(reference[name], abs=1e-6), (
                row.detector,
                name,
            )


def slow_mahalanobis(ind, labels, num_classes, x):
    """Lee et al.'s score by its definition: class means, one tied covariance,
    pseudo-inverse, minus the smallest squared distance, image by image."""
    ind, x = ind.astype(np.float64), x.astype(np.float64)
    classes = [c for c in range(num_classes) if (labels == c).any()]
    means = {c: ind[labels == c].mean(0) for c in classes}
    centred = np.concatenate([ind[labels == c] - means[c] for c in classes])
    precision = np.linalg.pinv(centred.T @ centred / len(ind), hermitian=True)
    out = []
    for row in x:
        out.append(-min((row - means[c]) @ precision @ (row - means[c]) for c in classes))
    return np.array(out)


@pytest.mark.parametrize("m", [5, 40])
def test_mahalanobis_matches_a_slow_reference(m):
    rng = np.random.default_rng(m)
    mixing = rng.normal(0, 1, (m, m))
    ind = (rng.normal(0, 1, (400, m)) @ mixing + 3).astype(np.float16)
    labels = rng.integers(0, 4, 400)
    labels[labels == 3] = 2  # class 3 has no InD image: it has no mean
    ood = (rng.normal(0.5, 1.5, (150, m)) @ mixing + 3).astype(np.float16)
    scores = detection.mahalanobis_scores(ind, labels, 4, {"ind": ind, "ood": ood})
    for name, x in (("ind", ind), ("ood", ood)):
        expected = slow_mahalanobis(ind, labels, 4, x)
        np.testing.assert_allclose(scores[name], expected, rtol=2e-3, atol=2e-3 * m)


def slow_knn(bank, x, k, leave_one_out):
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    bank, x = unit(bank.astype(np.float64)), unit(x.astype(np.float64))
    out = []
    for i, row in enumerate(x):
        distances = np.linalg.norm(bank - row, axis=1)
        if leave_one_out:
            distances = np.delete(distances, i)
        out.append(-np.sort(distances)[k - 1])
    return np.array(out)


def test_knn_matches_a_slow_reference_and_subsamples():
    rng = np.random.default_rng(5)
    ind = rng.normal(1, 1, (300, 16)).astype(np.float16)
    ood = rng.normal(0, 1, (120, 16)).astype(np.float16)
    scored = detection.knn_scores(ind, {"ind": ind, "ood": ood}, ind="ind", k=7)
    np.testing.assert_array_equal(scored["ind"][0], np.arange(300))
    np.testing.assert_allclose(scored["ind"][1], slow_knn(ind, ind, 7, True), atol=1e-3)
    np.testing.assert_allclose(scored["ood"][1], slow_knn(ind, ood, 7, False), atol=1e-3)
    small = detection.knn_scores(ind, {"ind": ind, "ood": ood}, ind="ind", k=7, max_images=50)
    rows, scores = small["ood"]
    assert len(rows) == 50 and rows[0] == 0 and rows[-1] == 119
    bank = ind[detection.spread_subset(300, 50)]
    np.testing.assert_allclose(scores, slow_knn(bank, ood[rows], 7, False), atol=1e-3)


CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ],
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_the_detectors_on_features_compute_on_the_features_device(device):
    rng = np.random.default_rng(8)
    ind = (rng.normal(1, 1, (500, 12)) * 10 + 100).astype(np.float16)  # a large offset
    ind[7, 2] = np.nan
    ood = (rng.normal(0, 1, (130, 12)) * 10 + 100).astype(np.float16)
    ood[3, 0] = np.inf
    labels = rng.integers(0, 3, 500)
    sets = {"ind": ind, "ood": ood}
    on = {name: torch.from_numpy(x).to(device) for name, x in sets.items()}
    # the host's float32 products on the CPU (the same bits); float64 on a GPU
    exact = {"atol": 0, "rtol": 0} if device == "cpu" else {"atol": 1e-3, "rtol": 1e-4}
    found = detection.mahalanobis_scores(on["ind"], labels, 3, on)
    for name, scores in detection.mahalanobis_scores(ind, labels, 3, sets).items():
        assert isinstance(found[name], np.ndarray) and found[name].dtype == np.float32
        np.testing.assert_allclose(found[name], scores, **exact)
    assert np.isnan(found["ind"][7]) and np.isnan(found["ood"][3])
    # a set on the host scored against a fit set on the device
    mixed = detection.mahalanobis_scores(on["ind"], labels, 3, {"ood": ood})["ood"]
    np.testing.assert_array_equal(mixed, found["ood"])
    knn = detection.knn_scores(on["ind"][:400], on, ind=None, k=5, max_images=300)
    for name, (rows, scores) in detection.knn_scores(ind[:400], sets, k=5, max_images=300).items():
        np.testing.assert_array_equal(knn[name][0], rows)
        np.testing.assert_allclose(knn[name][1], scores, **exact)


def test_rows_without_a_class_take_no_part_in_the_mahalanobis_fit():
    rng = np.random.default_rng(9)
    ind = rng.normal(0, 1, (300, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 300)
    labels[::7], labels[3::11] = -100, 3  # an ignore index, and a label beyond the classes
    ood = rng.normal(0.5, 1, (40, 6)).astype(np.float32)
    classed = (labels >= 0) & (labels < 3)
    found = detection.mahalanobis_scores(ind, labels, 3, {"ood": ood})["ood"]
    expected = detection.mahalanobis_scores(ind[classed], labels[classed], 3, {"ood": ood})
    np.testing.assert_allclose(found, expected["ood"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one per row"):
        detection.mahalanobis_scores(ind, labels[:-1], 3, {"ood": ood})


def test_detector_names_are_checked_in_init():
    assert detection.check_detectors(None) == ()
    assert detection.check_detectors(["energy", "msp", "energy"]) == ("energy", "msp")
    with pytest.raises(MisconfigurationException, match=r"unknown OOD detectors \['odin'\]"):
        DeephysCallback(layer="fc", ood_detectors=["msp", "odin"])
    with pytest.raises(MisconfigurationException, match=r"ood_detectors=\['knn'\]"):
        DeephysCallback(layer="fc", ood_detectors="knn")


def test_detection_json_round_trip_keeps_nan():
    rows = [Detection("msp", None, 0.5, float("nan"), 0.25, 1.0, 3, 4)]
    back = Detection.list_from_json(Detection.list_to_json(rows))
    assert back[0].detector == "msp" and back[0].layer is None and np.isnan(back[0].aupr_in)
    with pytest.raises(ValueError, match="unreadable detection rows"):
        Detection.list_from_json(b'[{"detector": "msp"}]')


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("detection")
    callback = DeephysCallback(
        layer="fc",
        record_logits=True,
        ood_detectors=["msp", "max_logit", "energy", "mahalanobis", "knn"],
    )
    t = trainer(tmp_path, [callback], max_epochs=2)
    t.fit(
        TinyNet(),
        loader(random_set(12, 0)),
        val_dataloaders={
            "ind": loader(random_set(40, 1)),
            "noise": loader(random_set(30, 2)),
            "other": loader(random_set(25, 3)),
        },
    )
    return tmp_path, t.logger.log_dir


def test_a_trainer_run_logs_detection_rows_and_scalars(detected):
    log = read_log(detected[1])
    acc = event_accumulator.EventAccumulator(detected[1], size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    for step in log.steps:
        logits = {d: log.logits(d, step) for d in log.datasets}
        for ood in ("noise", "other"):
            rows = {(r.detector, r.layer): r for r in log.detection(ood, step)}
            assert set(rows) == {
                ("msp", None),
                ("max_logit", None),
                ("energy", None),
                ("mahalanobis", "fc"),
                ("knn", "fc"),
            }
            # the logit detectors, recomputed from the logged logits: the scores with
            # scipy, the metrics with sklearn on the float32 scores the callback ranks
            # (scores of a random net are close: float64 would break their near-ties
            # otherwise, and move AUROC by a few pairs)
            recorded = {
                d: detection.logit_scores(torch.from_numpy(logits[d])).numpy() for d in ("ind", ood)
            }
            for column, (detector, score) in enumerate(
                (
                    ("msp", msp_log_odds),
                    ("max_logit", lambda z: z.max(1)),
                    ("energy", lambda z: logsumexp(z, axis=1)),
                )
            ):
                for d in ("ind", ood):
                    np.testing.assert_allclose(
                        recorded[d][:, column],
                        score(logits[d].astype(np.float64)),
                        rtol=1e-5,
                        atol=1e-5,
                    )
                expected = sklearn_metrics(recorded["ind"][:, column], recorded[ood][:, column])
                row = rows[(detector, None)]
                assert row.ind_images == 40 and row.ood_images == len(logits[ood])
                for name in DETECTION_METRICS:
                    assert getattr(row, name) == pytest.approx(expected[name], abs=1e-5)
            acts = {d: log.activations("fc", d, step) for d in log.datasets}
            # fitted on one half of InD (no reference set), the other half scored
            fit, scored = detection.split_half(len(acts["ind"]))
            labels = log.labels("ind", step)
            maha = detection.mahalanobis_scores(
                acts["ind"][fit], labels[fit], NUM_CLASSES, {**acts, "ind": acts["ind"][scored]}
            )
            expected = sklearn_metrics(maha["ind"], maha[ood])
            assert rows[("mahalanobis", "fc")].auroc == pytest.approx(expected["auroc"], abs=1e-6)
    last = log.steps[-1]
    for ood in ("noise", "other"):
        for detector in ("msp", "max_logit", "energy"):
            for name in DETECTION_METRICS:
                tag = f"deephys/{ood}/{detector}/{name}"
                assert tag in tags
                logged = acc.Tensors(tag)[-1]
                assert logged.step == last
                row = next(r for r in log.detection(ood) if r.detector == detector)
                value = logged.tensor_proto.float_val[0]
                assert value == pytest.approx(getattr(row, name), abs=1e-6, nan_ok=True)
        assert f"deephys/fc/{ood}/mahalanobis/auroc" in tags
    assert acc.SummaryMetadata("deephys/noise/msp/auroc").plugin_data.plugin_name == "scalars"


def test_detection_table_and_command(detected, capsys):
    rows = detection_table(detected[0])
    log = read_log(detected[1])
    assert len(rows) == len(log.steps) * 2 * 5
    assert {r.layer for r in rows} == {"", "fc"}
    assert main(["scores", str(detected[0]), "--detection"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:6] == ["run", "step", "epoch", "OOD", "set", "detector"]
    assert len(out) == 1 + len(rows)
    assert main(["scores", str(detected[0]), "--detection", "--csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("run,step,epoch,ood,detector,layer,auroc,aupr_in")


def test_detectors_can_be_switched_off(tmp_path, capsys):
    t = trainer(tmp_path, [DeephysCallback(layer="fc", ood_detectors=())], max_epochs=1)
    t.fit(
        TinyNet(),
        loader(random_set(8, 0)),
        val_dataloaders={"ind": loader(random_set(12, 1)), "ood": loader(random_set(12, 2))},
    )
    log = read_log(t.logger.log_dir)
    assert log.detection("ood") == []
    acc = event_accumulator.EventAccumulator(t.logger.log_dir)
    acc.Reload()
    assert not [tag for tag in acc.Tags()["tensors"] if "/msp/" in tag]
    assert main(["scores", str(tmp_path), "--detection"]) == 1
    assert "no Deephys OOD detection rows" in capsys.readouterr().err


def test_an_image_without_finite_logits_has_no_logit_score():
    logits = torch.tensor([[4.0, 0.0], [float("inf"), 0.0], [float("nan"), 1.0], [0.0, 1.0]])
    scores = detection.logit_scores(logits)
    assert torch.isnan(scores[1:3]).all() and torch.isfinite(scores[[0, 3]]).all()
