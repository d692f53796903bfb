"""Calibration per question style: the style rule, weighted metrics, the held-out split, the weights
for the served mix, and record_calibration fitting on both styles and scoring held-out items only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from codex_core.calibration import (
    FEATURES,
    Calibrator,
    CalibratorStore,
    brier_score,
    coverage_at_target_precision,
    expected_calibration_error,
    feature_vector,
    fit_calibrator,
    holdout_mask,
    precision_at_coverage,
    precision_at_target_coverage,
    style_weights,
)
from codex_core.calibration.styles import group_metrics
from codex_core.eval_report import CALIBRATION_FEATURES, EXPERIMENT, record_calibration
from codex_core.query_style import question_style
from codex_core.tracking import Tracker

# ---------------------------------------------------------------------------------------------
# The style rule serving logs and the calibrator reads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "style"),
    [
        ("how is a staged index published atomically?", "question"),
        ("Where does the parser handle nested keys", "question"),
        ("in which file are secrets masked", "question"),
        ("is the cache thread-safe", "question"),
        ("explain the drift report", "question"),
        ("show me where tokens are masked", "question"),
        ("the retry loop?", "question"),
        ("Report malformed configuration lines with a clearer error", "commit"),
        ("Fixed the parser for nested keys", "commit"),
        ("Do not retry on 404", "commit"),
        ("When the file is missing, fall back to defaults", "commit"),
        ("Show the error message when the config is missing", "commit"),
        ("Parser cleanup", "commit"),
        ("", "commit"),
    ],
)
def test_question_style(query: str, style: str) -> None:
    assert question_style(query) == style


def test_question_like_is_a_feature() -> None:
    assert feature_vector({}, "where is the retry loop?")[FEATURES.index("question_like")] == 1.0
    assert feature_vector({}, "Add a retry loop to the client")[FEATURES.index("question_like")] == 0.0


# ---------------------------------------------------------------------------------------------
# Weighted metrics: a query of weight 2 counts as the same query twice
# ---------------------------------------------------------------------------------------------


def test_weights_count_like_repeated_queries() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200)
    y = (rng.random(200) < p).astype(int)
    w = rng.integers(1, 4, 200)
    repeated_p, repeated_y = np.repeat(p, w), np.repeat(y, w)
    ece = expected_calibration_error(repeated_p, repeated_y)
    assert expected_calibration_error(p, y, weights=w) == pytest.approx(ece)
    assert brier_score(p, y, w) == pytest.approx(brier_score(repeated_p, repeated_y))
    assert np.allclose(precision_at_coverage(p, y, w), precision_at_coverage(repeated_p, repeated_y))
    with pytest.raises(ValueError, match="pair up"):
        expected_calibration_error(p, y, weights=w[:-1])


def test_targets_hand_checked() -> None:
    probs = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    labels = [1, 1, 1, 0, 1, 1, 0, 1, 0, 0]
    # The 7 most confident (70 %) hold 5 right answers.
    assert precision_at_target_coverage(probs, labels, 0.70) == pytest.approx(5 / 7)
    # Precision 1.0 holds up to 30 % coverage; 0.92 is never reached beyond it.
    assert coverage_at_target_precision(probs, labels, 0.92) == pytest.approx(0.3)
    assert coverage_at_target_precision([0.5, 0.4], [0, 0], 0.92) == 0.0


def test_weighted_fit_follows_the_weighted_population() -> None:
    """Two populations with the same features but different accuracy: weights choose which one the
    calibrator speaks for."""
    rng = np.random.default_rng(1)
    n = 600
    x = rng.uniform(-2, 2, n)
    group = rng.random(n) < 0.5
    y = (rng.random(n) < np.where(group, 0.8, 0.3)).astype(int)
    X = np.column_stack([x, rng.normal(size=n)])
    mostly_a = fit_calibrator(X, y, feature_names=["a", "b"], sample_weight=np.where(group, 9.0, 1.0))
    mostly_b = fit_calibrator(X, y, feature_names=["a", "b"], sample_weight=np.where(group, 1.0, 9.0))
    assert mostly_a.cv_metrics["weighted"] and mostly_a.predict(X).mean() > 0.65 > 0.45 > mostly_b.predict(X).mean()
    with pytest.raises(ValueError, match="sample_weight"):
        fit_calibrator(X, y, sample_weight=np.ones(n - 1))


# ---------------------------------------------------------------------------------------------
# Held-out split and weights
# ---------------------------------------------------------------------------------------------


def test_holdout_is_per_style_deterministic_and_stable() -> None:
    ids = [f"m{i}" for i in range(100)] + [f"p{i}" for i in range(40)]
    styles = ["mined"] * 100 + ["plain"] * 40
    mask = holdout_mask(ids, styles)
    assert mask[:100].sum() == 30 and mask[100:].sum() == 12
    assert np.array_equal(mask, holdout_mask(ids, styles))
    # More mined items do not move a plain item across the split.
    more = holdout_mask([f"m{i}" for i in range(300)] + ids[100:], ["mined"] * 300 + styles[100:])
    assert np.array_equal(more[300:], mask[100:])
    assert holdout_mask(["a"], ["plain"]).sum() == 0  # one item: nothing to hold out


def test_style_weights_match_the_served_mix() -> None:
    styles = ["question"] * 25 + ["commit"] * 75
    weights, info = style_weights(styles, served_question_share=0.75, served_queries=200)
    assert weights is not None and weights.mean() == pytest.approx(1.0)
    # Weighted, question-like queries make up what serving sees.
    assert weights[:25].sum() / weights.sum() == pytest.approx(0.75)
    assert info["weights"]["question"] / info["weights"]["commit"] == pytest.approx(9.0)
    # Capped: 99 % served questions over 1 % in the set cannot make one item weigh 100x another's share.
    capped, info = style_weights(["question"] + ["commit"] * 99, served_question_share=0.99, served_queries=500)
    assert info["weights"]["question"] / info["weights"]["commit"] == pytest.approx(100.0)  # 10 up and 10 down
    # Too few served queries, or one style only: pooled, and the note says why.
    assert style_weights(styles, 0.75, served_queries=5)[0] is None
    none, info = style_weights(["commit"] * 10, 0.75, served_queries=200)
    assert none is None and "one query style" in info["note"]


# ---------------------------------------------------------------------------------------------
# record_calibration: both styles fitted, each scored on held-out items only
# ---------------------------------------------------------------------------------------------


def planted_features(n_mined: int = 420, n_plain: int = 240, seed: int = 0) -> pd.DataFrame:
    """Retrieval features whose link to correctness differs by style, as measured on real repos:
    at the same cosine, a plain question's top-1 file is right far more often than a commit message's."""
    rng = np.random.default_rng(seed)
    rows = []
    for style, n, lift, query in (("mined", n_mined, -0.15, "Fix parsing of nested keys in strict mode"),
                                  ("plain", n_plain, 0.35, "where are nested keys parsed?")):
        for i in range(n):
            cosine = rng.uniform(0.2, 0.9)
            label = int(rng.random() < np.clip(cosine + lift, 0.02, 0.98))
            rows.append({"id": f"{style[0]}{i:04d}", "style": style, "query": query, "label": label,
                         "heuristic": cosine, "ndcg_at_5": float(label), "top_score": 0.03, "margin": 0.01,
                         "agreement": 2.0, "top_dense_cosine": cosine, "verified_fraction": 1.0, "citations": 5.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("styles")
    frame = planted_features()
    results = root / "results"
    results.mkdir()
    frame.to_parquet(results / CALIBRATION_FEATURES, index=False)
    tracker = Tracker.embedded(root / "mlflow" / "mlflow.db")
    report = record_calibration(repo="demo", results_dir=results, store=CalibratorStore(root / "calibration"),
                                tracker=tracker, tags={"repo": "demo"})
    return root, frame, report, tracker


def test_calibration_is_fitted_on_both_styles_and_scored_on_held_out_items_only(calibrated) -> None:
    root, frame, report, _ = calibrated
    held = holdout_mask(frame["id"].tolist(), frame["style"].tolist())
    calibrator = Calibrator.load(report.calibrator_path)
    # Fitted on the other items only, both styles among them.
    assert calibrator.n_samples == report.samples == int((~held).sum())
    assert calibrator.cv_metrics["styles"]["fit_items"] == {"mined": 294, "plain": 168}
    assert calibrator.cv_metrics["styles"]["holdout_items"] == {"mined": 126, "plain": 72}
    assert "question_like" in calibrator.feature_names

    # Every held-out number is the published calibrator on the held-out items, recomputed here.
    rows = frame[held]
    probs = np.array([calibrator.predict_one(r, q) for r, q in zip(rows.to_dict("records"), rows["query"],
                                                                   strict=True)])
    for style in ("mined", "plain"):
        chosen = (rows["style"] == style).to_numpy()
        expected = group_metrics(probs[chosen], rows["label"].to_numpy()[chosen], calibrator.tau)
        assert report.holdout[style] == pytest.approx(expected, nan_ok=True)
    assert report.holdout["all"]["n"] == int(held.sum())
    assert "plain (held-out)" in report.holdout_md and "mined-only calibrator: plain (held-out)" in report.holdout_md


def test_fitting_on_both_styles_fixes_plain_question_calibration(calibrated) -> None:
    """The issue: a calibrator fitted on commit messages is badly off, and abstains far too often,
    on the plain questions users ask. Fitted on both, it is not."""
    _, _, report, _ = calibrated
    both, mined_only = report.holdout["plain"], report.holdout_mined_only["plain"]
    assert mined_only["ece"] > 0.2 and both["ece"] < mined_only["ece"] / 2
    assert both["coverage_at_tau"] > mined_only["coverage_at_tau"] + 0.2
    assert both["precision_at_tau"] > 0.85
    # On its own style the mined-only calibrator was fine: the distribution, not the model, was off.
    assert report.holdout_mined_only["mined"]["ece"] < 0.12


def test_mlflow_run_has_metrics_per_style(calibrated) -> None:
    _, _, report, tracker = calibrated
    run = tracker.client.get_run(report.run_id)
    metrics = run.data.metrics
    for style in ("mined", "plain", "all"):
        for key in ("ece", "precision_at_70_coverage", "coverage_at_092_precision", "coverage_at_tau"):
            assert f"holdout.{style}.{key}" in metrics
    assert metrics["holdout.plain.ece"] == pytest.approx(report.holdout["plain"]["ece"])
    assert "mined_only.holdout.plain.ece" in metrics
    assert run.data.params["holdout_samples"] == "198" and run.data.params["style_weighting"] == "pooled"
    artifacts = {a.path for a in tracker.client.list_artifacts(report.run_id, "calibration")}
    assert "calibration/holdout_by_style.json" in artifacts
    assert tracker.runs(EXPERIMENT)


def test_calibration_is_weighted_to_the_served_mix(calibrated) -> None:
    root, _, pooled, tracker = calibrated
    weighted = record_calibration(repo="demo", results_dir=root / "results",
                                  store=CalibratorStore(root / "calibration"), tracker=tracker, tags={"repo": "demo"},
                                  served_question_share=0.9, served_queries=120)
    info = weighted.styles
    assert info["weights"]["question"] > 1 > info["weights"]["commit"]
    assert "weighted to the served mix: 90%" in info["note"]
    calibrator = Calibrator.load(weighted.calibrator_path)
    assert calibrator.cv_metrics["weighted"] and calibrator.version == 2
    assert "all (served mix)" in weighted.holdout
    # Mostly plain questions served: tau is chosen for 70-80 % coverage of *that* mix, so on the
    # held-out items weighted the same way coverage lands near the band, and the plain questions
    # that are answered are answered more precisely than with the pooled tau.
    assert 0.6 <= weighted.holdout["all (served mix)"]["coverage_at_tau"] <= 0.9
    assert weighted.tau > pooled.tau
    assert weighted.holdout["plain"]["precision_at_tau"] > pooled.holdout["plain"]["precision_at_tau"]
    stored = json.loads(weighted.calibrator_path.read_text())
    assert stored["cv_metrics"]["styles"]["served_question_share"] == 0.9
