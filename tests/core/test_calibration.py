"""Calibration: ECE, fitting on scores with known probabilities, JSON round trip, tau, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from codex_core.calibration import (
    CORE_FEATURES,
    FEATURES,
    SCHEMA,
    Calibrator,
    choose_threshold,
    ece_noise_floor,
    expected_calibration_error,
    feature_vector,
    fit_calibrator,
    precision_at_coverage,
    precision_coverage_png,
    reliability_diagram_png,
)


def known_probabilities(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p ~ U(0,1), y ~ Bernoulli(p); the feature is a monotone but badly non-linear distortion of logit(p)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 1.0, n)
    y = rng.binomial(1, p)
    z = np.log(p / (1 - p))
    distorted = np.sign(z) * np.abs(z) ** 3 / 4 + 2
    noise = rng.normal(size=n)
    return np.column_stack([distorted, noise]), y, p


# ---------------------------------------------------------------------------------------------
# ECE
# ---------------------------------------------------------------------------------------------


def test_ece_hand_checked() -> None:
    # Calibrated: in the 0.25 bin 1 of 4 is right, in the 0.75 bin 3 of 4.
    assert expected_calibration_error([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0]) == pytest.approx(0.0)
    # Overconfident: says 0.9, right half the time -> |0.5 - 0.9| = 0.4.
    assert expected_calibration_error([0.9] * 4, [1, 1, 0, 0]) == pytest.approx(0.4)
    # Two bins weighted by size: 0.5 * |0.5 - 0.9| + 0.5 * |0 - 0.1| = 0.25.
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0]) == pytest.approx(0.25)
    # Probability exactly 1.0 lands in the last bin, not past the end.
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error([], []))
    with pytest.raises(ValueError, match="pair up"):
        expected_calibration_error([0.5], [1, 0])


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


def test_fitted_calibrator_recovers_known_probabilities() -> None:
    X, y, p = known_probabilities(seed=0, n=14_000)
    train, test = slice(0, 4_000), slice(4_000, None)
    calibrator = fit_calibrator(X[train], y[train], feature_names=["distorted", "noise"])

    probs = calibrator.predict(X[test])
    # Held-out ECE of the truth itself is ~0.012 here (sampling noise); 20 seeds never exceeded 0.03.
    assert expected_calibration_error(probs, y[test]) < 0.05
    assert np.mean(np.abs(probs - p[test])) < 0.075
    # The raw feature squashed by a sigmoid is far off: calibration did the work.
    assert expected_calibration_error(1 / (1 + np.exp(-X[test, 0])), y[test]) > 0.2

    # The distortion is non-linear, so the isotonic map must beat Platt in cross-validation.
    candidates = calibrator.cv_metrics["candidates"]
    assert calibrator.method == "isotonic"
    # Custom feature names: one feature set ("all"), each method scored over 5 shuffles.
    assert candidates["isotonic:all"]["ece"] < candidates["platt:all"]["ece"]
    assert set(candidates["platt:all"]) == {"ece", "ece_std", "brier", "auc"}
    assert calibrator.cv_metrics["folds"] == 5 and calibrator.cv_metrics["repeats"] == 5
    assert calibrator.cv_predictions is not None and calibrator.cv_predictions.shape == (4_000,)
    assert calibrator.n_samples == 4_000 and calibrator.n_positive == int(y[train].sum())
    # tau answers 70-80% of the training queries (out of fold).
    assert 0.70 <= calibrator.cv_metrics["coverage_at_tau"] <= 0.80
    assert calibrator.tau == calibrator.cv_metrics["tau"]


def test_platt_is_enough_when_the_score_is_already_a_logit() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 6_000)
    p = 1 / (1 + np.exp(-z))
    y = rng.binomial(1, p)
    X = np.column_stack([0.5 * z + 3, rng.normal(size=z.size)])
    calibrator = fit_calibrator(X[:3_000], y[:3_000], feature_names=["score", "noise"])
    probs = calibrator.predict(X[3_000:])
    assert expected_calibration_error(probs, y[3_000:]) < 0.05
    assert np.mean(np.abs(probs - p[3_000:])) < 0.05


def test_json_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    X, y, _ = known_probabilities(seed=2, n=3_000)
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 3_000)
    logit_y = rng.binomial(1, 1 / (1 + np.exp(-z)))
    logit_X = np.column_stack([z, rng.normal(size=z.size)])
    for method, features, labels in (("isotonic", X, y), ("platt", logit_X, logit_y)):
        calibrator = fit_calibrator(features, labels, feature_names=["a", "b"])
        assert calibrator.method == method
        path = calibrator.save(tmp_path / f"{method}.json")
        loaded = Calibrator.load(path)
        assert np.array_equal(loaded.predict(features), calibrator.predict(features))
        assert loaded.to_json() == calibrator.to_json()
        raw = json.loads(path.read_text())
        assert raw["schema"] == SCHEMA and raw["method"] == calibrator.method
        assert "cv_predictions" not in raw
    assert not list(tmp_path.glob(".*.tmp"))


def test_calibrator_on_retrieval_features() -> None:
    rng = np.random.default_rng(3)
    rows, labels = [], []
    for _ in range(400):
        cosine = rng.uniform(0.1, 0.9)
        correct = rng.random() < cosine
        rows.append(
            feature_vector(
                {"top_score": 0.03, "margin": 0.01, "agreement": 2.0, "top_dense_cosine": cosine,
                 "top_lexical": float("nan"), "verified_fraction": 1.0, "citations": 3.0},
                "where is the retry loop implemented",
            )
        )
        labels.append(int(correct))
    X = np.stack(rows)
    assert X.shape == (400, len(FEATURES))
    assert X[0, FEATURES.index("query_length")] == 6 and X[0, FEATURES.index("top_lexical")] == 0.0
    assert X[0, FEATURES.index("question_like")] == 1.0  # "where is ..." is a plain question
    calibrator = fit_calibrator(X, np.array(labels))
    # The file-level features carry nothing here (all 0): the tie goes to the simpler core set.
    assert calibrator.cv_metrics["feature_set"] == "core"
    assert calibrator.feature_names == list(CORE_FEATURES)
    low = calibrator.predict_one({"top_dense_cosine": 0.15, "agreement": 2.0, "citations": 3.0}, "a b c d e f")
    high = calibrator.predict_one({"top_dense_cosine": 0.85, "agreement": 2.0, "citations": 3.0}, "a b c d e f")
    assert low < 0.4 < 0.6 < high
    with pytest.raises(ValueError, match=f"expected rows of {len(CORE_FEATURES)} features"):
        calibrator.predict(np.zeros((2, 3)))


def test_file_level_features_are_chosen_when_they_carry_the_signal() -> None:
    rng = np.random.default_rng(4)
    rows, labels = [], []
    for _ in range(600):
        share = rng.uniform(0.0, 1.0)
        rows.append(feature_vector({"top_score": 0.03, "top_dense_cosine": 0.5, "file_share": share,
                                    "distinct_files_top10": 4.0}, "where is it"))
        labels.append(int(rng.random() < 0.1 + 0.8 * share))
    calibrator = fit_calibrator(np.stack(rows), np.array(labels))
    assert calibrator.cv_metrics["feature_set"] == "extended"
    assert "file_share" in calibrator.feature_names
    candidates = calibrator.cv_metrics["candidates"]
    assert candidates["platt:extended"]["auc"] > candidates["platt:core"]["auc"] + 0.2
    sure = calibrator.predict_one({"top_dense_cosine": 0.5, "file_share": 0.95}, "where is it")
    unsure = calibrator.predict_one({"top_dense_cosine": 0.5, "file_share": 0.05}, "where is it")
    assert unsure < 0.3 < 0.7 < sure


def test_noise_floor_is_what_a_perfectly_calibrated_model_measures() -> None:
    rng = np.random.default_rng(5)
    probs = rng.uniform(0.3, 0.95, 384)
    measured = [expected_calibration_error(probs, rng.random(384) < probs) for _ in range(300)]
    floor = ece_noise_floor(probs)
    assert abs(floor - np.mean(measured)) < 0.005
    assert 0.03 < floor < 0.08  # at a few hundred queries, ECE < 0.05 is within sampling noise
    assert ece_noise_floor(probs[:0]) != ece_noise_floor(probs[:0])  # NaN for no samples
    assert ece_noise_floor(np.repeat(probs, 20)) < floor / 3  # shrinks like 1/sqrt(n)


@pytest.mark.parametrize(
    ("y", "why"),
    [
        ([1, 0, 1, 1, 0], "only 5 samples"),
        ([1] * 40, "all 40 answers are correct"),
        ([0] * 40, "all 40 answers are wrong"),
        ([1] + [0] * 39, "only 1 sample(s) of one class"),
        ([], "only 0 samples"),
    ],
)
def test_degenerate_inputs_give_a_constant_calibrator(y: list[int], why: str) -> None:
    X = np.arange(len(y) * 2, dtype=float).reshape(len(y), 2)
    calibrator = fit_calibrator(X, y, feature_names=["a", "b"])
    assert calibrator.method == "constant"
    assert any(why in note for note in calibrator.notes)
    rate = (sum(y) + 1) / (len(y) + 2)
    assert np.allclose(calibrator.predict(np.zeros((3, 2))), rate)
    assert Calibrator.from_json(json.loads(json.dumps(calibrator.to_json()))).predict(np.zeros((1, 2)))[0] == rate
    # A constant needs no features: it answers rows of any width (e.g. fitted on an empty frame).
    assert calibrator.predict(np.zeros(len(FEATURES)))[0] == rate


def test_fewer_folds_when_the_rare_class_is_small() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 2))
    y = np.zeros(60, dtype=int)
    y[:3] = 1
    calibrator = fit_calibrator(X, y, feature_names=["a", "b"])
    assert calibrator.cv_metrics["folds"] == 3
    assert any("used 3 folds instead of 5" in note for note in calibrator.notes)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="labels must be 0"):
        fit_calibrator(np.zeros((20, 2)), [2] * 20)
    with pytest.raises(ValueError, match="20 rows but y has 19"):
        fit_calibrator(np.zeros((20, 2)), [0] * 19)
    with pytest.raises(ValueError, match="schema"):
        Calibrator.from_json({"schema": 99, "method": "platt"})


# ---------------------------------------------------------------------------------------------
# Threshold
# ---------------------------------------------------------------------------------------------


def test_precision_at_coverage_groups_ties() -> None:
    curve = precision_at_coverage([0.9, 0.9, 0.5, 0.1], [1, 0, 1, 0])
    assert curve == [(0.5, 0.5, 0.9), (0.75, 2 / 3, 0.5), (1.0, 0.5, 0.1)]


def test_choose_threshold_maximizes_precision_within_the_coverage_range() -> None:
    probs = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
    # Top 7: 6 right (0.857); top 8: 7 right (0.875) -> coverage 0.8 wins.
    labels = [1, 1, 1, 0, 1, 1, 1, 1, 0, 0]
    assert choose_threshold(probs, labels) == (0.6, pytest.approx(7 / 8), pytest.approx(0.8))
    # Equal precision at 0.7 and 0.8 -> the larger coverage.
    labels = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert choose_threshold(probs, labels) == (0.6, 1.0, pytest.approx(0.8))


def test_choose_threshold_falls_back_to_the_nearest_coverage(caplog: pytest.LogCaptureFixture) -> None:
    # Tied scores: only 60% or 100% coverage is achievable; 60% is nearer to [0.7, 0.8].
    probs = [0.9] * 6 + [0.1] * 4
    labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 1]
    with caplog.at_level("WARNING", logger="codex_core.calibration"):
        tau, precision, coverage = choose_threshold(probs, labels)
    assert (tau, coverage) == (0.9, 0.6) and precision == pytest.approx(5 / 6)
    assert "nearest achievable coverage 0.600" in caplog.text
    assert choose_threshold([], []) == (0.5, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def test_plots_are_written(tmp_path: Path) -> None:
    X, y, _ = known_probabilities(seed=5, n=1_000)
    calibrator = fit_calibrator(X, y, feature_names=["a", "b"])
    probs = calibrator.cv_predictions
    reliability = reliability_diagram_png(probs, y, tmp_path / "plots" / "reliability.png")
    curve = precision_at_coverage(probs, y)
    coverage = precision_coverage_png(curve, tmp_path / "plots" / "coverage.png", tau=calibrator.tau)
    empty = reliability_diagram_png([], [], tmp_path / "empty.png")
    empty_curve = precision_coverage_png([], tmp_path / "empty_curve.png")
    for path in (reliability, coverage, empty, empty_curve):
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
