"""Calibrated answer confidence: P(the top-1 cited file is correct) from retrieval features.

The model is fitted on the user's own evaluation set (``codex_assets.evaluation.calibration``)
and stored as plain JSON — no pickle — so serving can load it anywhere and a person can read it.

Rules:

* **Features** (``FEATURES``, fixed order): the retrieval ``features`` dict
  (``retrieval._features``) plus ``query_length``, the number of word tokens in the query.
  Missing, None or non-finite values count as 0. Two feature sets compete (``FEATURE_SETS``):
  ``core`` (chunk-level signals) and ``extended`` (plus file-level ones); a fitted calibrator
  stores the names it uses and reads only those.
* **Candidates** (``fit_calibrator``): (a) ``platt`` — logistic regression on standardized
  features; (b) ``isotonic`` — isotonic regression on that logistic model's raw score (its
  decision function), which keeps the multi-feature ranking but lets the score -> probability
  map be any monotone curve. The score of a fitted logistic model is used rather than the single
  strongest feature because no one retrieval feature dominates on every repository.
* **Choice**: stratified K-fold cross-validation (``folds``), repeated ``repeats`` times with
  different shuffles (``seed``, ``seed + 1``, ...). The feature set with the lowest mean
  out-of-fold Brier score wins (a proper score: by ECE alone, a set that cannot tell right from
  wrong answers wins by predicting the base rate); within it, the method with the lowest mean
  out-of-fold ECE, ECEs equal to 3 decimals going to the lower Brier score (then to ``platt``).
  Equal Brier scores (4 decimals) go to the ``core`` set, the simpler model. The out-of-fold predictions of
  the first shuffle choose ``tau`` and draw the diagrams.
* **Noise floor** (``ece_noise_floor``): ECE is biased upwards on small sets — a perfectly
  calibrated model still measures ~0.05 on 400 queries with 15 bins — so the floor for the
  chosen model's own confidences is reported next to its ECE. A constant base-rate model is reported
  as a baseline but never chosen: it is calibrated and useless.
* **Degenerate inputs** — fewer than ``MIN_SAMPLES`` samples, one class only, or too few of one
  class for 2 folds — give a ``constant`` calibrator predicting the Laplace-smoothed positive
  rate ``(positives + 1) / (n + 2)``; its ``notes`` say why.
* **Threshold** ``tau`` (``choose_threshold``): answer when ``confidence >= tau``. Chosen on the
  out-of-fold predictions to maximize precision with coverage in ``[0.70, 0.80]``; equal
  precisions go to the larger coverage (answer more for the same precision). When no threshold
  gives a coverage in the range (tied scores), the coverage nearest to the range is taken (ties:
  higher precision, then larger coverage) and a note / log warning says so.
* **ECE**: equal-width bins on [0, 1] (a probability of exactly 1 falls in the last bin),
  ``sum_b n_b / N * |mean(y_b) - mean(p_b)|``; NaN for no samples.
* **Weights** (``sample_weight``, optional): a query of weight w counts as w queries in the
  logistic and isotonic fits and in every score above (ECE, Brier, AUC, the base rate, tau's
  precision and coverage). The calibration asset uses them to make the eval set's mix of question
  styles look like the mix serving sees (``calibration.styles``). Folds are drawn without them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from codex_core.calibration.features import (
    DEFAULT_COVERAGE_RANGE,
    FEATURE_SETS,
    FEATURES,
    METHODS,
    MIN_SAMPLES,
    SCHEMA,
    _choose,
    brier_score,
    ece_noise_floor,
    expected_calibration_error,
    feature_vector,
)
from codex_core.fsio import write_text_atomic

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The calibrator
# ---------------------------------------------------------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0)))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _clean_json(value: Any) -> Any:
    """Floats JSON can carry (non-finite -> None), numpy scalars to Python."""
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class Calibrator:
    """A fitted confidence model as plain data (see ``to_json``); ``predict`` needs only numpy.

    ``method`` is ``platt`` (sigmoid of the linear score), ``isotonic`` (piecewise-linear map
    ``iso_x -> iso_y`` of the linear score, clipped at both ends) or ``constant``.
    ``version`` is assigned by whoever publishes it (0 = not published).
    """

    method: str
    feature_names: list[str]
    means: list[float]
    stds: list[float]
    coef: list[float]
    intercept: float
    iso_x: list[float] | None = None
    iso_y: list[float] | None = None
    constant: float | None = None
    tau: float = 0.5
    cv_metrics: dict[str, Any] = field(default_factory=dict)
    n_samples: int = 0
    n_positive: int = 0
    fitted_at: str = ""
    version: int = 0
    notes: list[str] = field(default_factory=list)
    # Out-of-fold probabilities of the chosen method on the training data (not serialized):
    # the honest input for choosing tau and drawing the reliability diagram.
    cv_predictions: np.ndarray | None = field(default=None, repr=False, compare=False)

    # -- prediction -------------------------------------------------------------------------

    def _matrix(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected rows of {len(self.feature_names)} features {self.feature_names}, got shape {X.shape}"
            )
        return np.where(np.isfinite(X), X, 0.0)

    def score(self, X: Any) -> np.ndarray:
        """The linear score ``standardized(X) @ coef + intercept`` (logit for ``platt``)."""
        X = self._matrix(X)
        return ((X - np.asarray(self.means)) / np.asarray(self.stds)) @ np.asarray(self.coef) + self.intercept

    def predict(self, X: Any) -> np.ndarray:
        """Probabilities for the rows of ``X`` (one row may be passed as a 1-D array)."""
        if self.method == "constant":  # ignores the features, so any row width is accepted
            X = np.asarray(X, dtype=float)
            return np.full(X.shape[0] if X.ndim == 2 else 1, float(self.constant or 0.0))
        z = self.score(X)
        if self.method == "platt":
            return _sigmoid(z)
        if self.method == "isotonic":
            return np.interp(z, np.asarray(self.iso_x), np.asarray(self.iso_y))
        raise ValueError(f"unknown calibration method {self.method!r}; expected one of {METHODS}")

    def predict_one(self, features: Mapping[str, Any], query: str) -> float:
        """Confidence for one retrieval's ``features`` dict (the calibrator picks its own features)."""
        return float(self.predict(feature_vector(features, query, self.feature_names))[0])

    # -- serialization ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return _clean_json(
            {
                "schema": SCHEMA,
                "method": self.method,
                "feature_names": list(self.feature_names),
                "means": list(self.means),
                "stds": list(self.stds),
                "coef": list(self.coef),
                "intercept": self.intercept,
                "iso_x": self.iso_x,
                "iso_y": self.iso_y,
                "constant": self.constant,
                "tau": self.tau,
                "cv_metrics": self.cv_metrics,
                "n_samples": self.n_samples,
                "n_positive": self.n_positive,
                "fitted_at": self.fitted_at,
                "version": self.version,
                "notes": list(self.notes),
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibrator:
        if data.get("schema") != SCHEMA:
            raise ValueError(
                f"calibrator schema {data.get('schema')!r} is not supported (expected {SCHEMA}); "
                "refit it with the current version (materialize the calibration asset)"
            )
        if data.get("method") not in METHODS:
            raise ValueError(f"unknown calibration method {data.get('method')!r}; expected one of {METHODS}")
        if data["method"] == "isotonic" and not (data.get("iso_x") and data.get("iso_y")):
            raise ValueError("an isotonic calibrator needs iso_x and iso_y")
        return cls(
            method=data["method"],
            feature_names=list(data["feature_names"]),
            means=[float(v) for v in data["means"]],
            stds=[float(v) for v in data["stds"]],
            coef=[float(v) for v in data["coef"]],
            intercept=float(data["intercept"]),
            iso_x=[float(v) for v in data["iso_x"]] if data.get("iso_x") else None,
            iso_y=[float(v) for v in data["iso_y"]] if data.get("iso_y") else None,
            constant=float(data["constant"]) if data.get("constant") is not None else None,
            tau=float(data["tau"]),
            cv_metrics=dict(data.get("cv_metrics") or {}),
            n_samples=int(data.get("n_samples", 0)),
            n_positive=int(data.get("n_positive", 0)),
            fitted_at=str(data.get("fitted_at", "")),
            version=int(data.get("version", 0)),
            notes=list(data.get("notes") or []),
        )

    def save(self, path: Path) -> Path:
        """Write the JSON atomically (temp file + rename): readers never see half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_json(), indent=2, sort_keys=True, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: Path) -> Calibrator:
        return cls.from_json(json.loads(Path(path).read_text()))


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Linear:
    means: np.ndarray
    stds: np.ndarray
    coef: np.ndarray
    intercept: float

    def score(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.means) / self.stds) @ self.coef + self.intercept


def _fit_linear(X: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> _Linear:
    from sklearn.linear_model import LogisticRegression

    means = X.mean(axis=0)
    stds = X.std(axis=0)
    stds = np.where(stds > 1e-12, stds, 1.0)  # a constant column contributes nothing
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit((X - means) / stds, y, sample_weight=w)
    return _Linear(means, stds, model.coef_[0].astype(float), float(model.intercept_[0]))


def _fit_isotonic(z: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(z, y, sample_weight=w)
    x_thr, y_thr = np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float)
    if x_thr.size == 1:  # a single step: np.interp needs two points to be a function
        x_thr, y_thr = np.r_[x_thr, x_thr + 1.0], np.r_[y_thr, y_thr]
    return x_thr, y_thr


def _candidate_predictions(
    method: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, w_train: np.ndarray | None = None
) -> np.ndarray:
    linear = _fit_linear(X_train, y_train, w_train)
    if method == "platt":
        return _sigmoid(linear.score(X_test))
    x_thr, y_thr = _fit_isotonic(linear.score(X_train), y_train, w_train)
    return np.interp(linear.score(X_test), x_thr, y_thr)


def _metrics(probs: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> dict[str, float | None]:
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, probs, sample_weight=w)) if 0 < y.sum() < y.size else None
    return {"ece": expected_calibration_error(probs, y, weights=w), "brier": brier_score(probs, y, w), "auc": auc}


def _constant(
    rate_of: np.ndarray, names: list[str], n_features: int, note: str, coverage_range: tuple[float, float],
    w: np.ndarray | None = None,
) -> Calibrator:
    n, positives = int(rate_of.size), int(rate_of.sum())
    # Laplace-smoothed in weighted counts (unweighted: (positives + 1) / (n + 2)).
    total, hits = (float(w.sum()), float((w * rate_of).sum())) if w is not None else (n, positives)
    rate = (hits + 1) / (total + 2)
    probs = np.full(n, rate)
    tau, precision, coverage, tau_note = _choose(probs, rate_of, coverage_range, w)
    notes = [note, f"constant calibrator: Laplace-smoothed positive rate ({hits:g} + 1) / ({total:g} + 2) = {rate:.4f}"]
    if tau_note:
        notes.append(tau_note)
    return Calibrator(
        method="constant",
        feature_names=names,
        means=[0.0] * n_features,
        stds=[1.0] * n_features,
        coef=[0.0] * n_features,
        intercept=0.0,
        constant=rate,
        tau=tau,
        cv_metrics={"chosen": "constant", "folds": 0, "tau": tau, "precision_at_tau": precision,
                    "coverage_at_tau": coverage},
        n_samples=n,
        n_positive=positives,
        fitted_at=_now(),
        notes=notes,
        cv_predictions=probs if n else None,
    )


def fit_calibrator(
    X: Any,
    y: Any,
    *,
    folds: int = 5,
    repeats: int = 5,
    seed: int = 0,
    feature_names: Sequence[str] | None = None,
    coverage_range: tuple[float, float] = DEFAULT_COVERAGE_RANGE,
    sample_weight: Any = None,
) -> Calibrator:
    """Fit Platt and isotonic on each feature set; best set by Brier, then lowest cross-validated ECE.

    ``X`` is ``(n_samples, n_features)`` (rows from ``feature_vector`` unless ``feature_names``
    says otherwise); ``y`` is 1 when the answer was correct. Each candidate is scored on
    ``repeats`` differently shuffled ``folds``-fold splits (one split's ECE on a few hundred
    queries swings by about 0.01). See the module docstring for the rules; ``cv_metrics`` holds
    each candidate's mean out-of-fold ECE (and its spread), Brier score and AUC, the ECE noise
    floor, the base-rate baseline, and the chosen ``tau`` with its precision and coverage.
    ``sample_weight`` (one non-negative weight per row) weighs fits and scores alike.
    """
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X.reshape(-1, 1) if X.size else X.reshape(0, len(feature_names or FEATURES))
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (samples x features) array, got shape {X.shape}")
    X = np.where(np.isfinite(X), X, 0.0)
    y = np.asarray(y).ravel()
    if y.size != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.size} labels")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (wrong answer) or 1 (correct answer)")
    y = y.astype(int)
    n_features = X.shape[1]
    if feature_names is None:
        feature_names = FEATURES if n_features == len(FEATURES) else [f"x{i}" for i in range(n_features)]
    names = list(feature_names)
    if len(names) != n_features:
        raise ValueError(f"{len(names)} feature names for {n_features} feature columns")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=float).ravel()
        if w.size != y.size or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"sample_weight needs {y.size} finite, non-negative weights (got {w.size})")
        if y.size and w.sum() <= 0:
            raise ValueError("sample_weight sums to 0: no query would count")

    n, positives = int(y.size), int(y.sum())
    negatives = n - positives
    if n < MIN_SAMPLES:
        return _constant(y, names, n_features, f"only {n} samples (< {MIN_SAMPLES}): too few to fit", coverage_range,
                         w)
    if positives == 0 or negatives == 0:
        label = "correct" if negatives == 0 else "wrong"
        return _constant(y, names, n_features, f"all {n} answers are {label}: nothing to discriminate", coverage_range,
                         w)
    k = min(folds, positives, negatives)
    if k < 2:
        return _constant(
            y, names, n_features, f"only {min(positives, negatives)} sample(s) of one class: cannot cross-validate",
            coverage_range, w,
        )

    # Feature sets: the named sets whose columns are all present, else every column.
    subsets = {label: [names.index(f) for f in cols] for label, cols in FEATURE_SETS.items()
               if set(cols) <= set(names)} or {"all": list(range(n_features))}
    keys = [(method, label) for label in subsets for method in ("platt", "isotonic")]
    oof = {key: np.zeros((repeats, n)) for key in keys}
    baseline = np.zeros((repeats, n))
    for r in range(repeats):
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed + r)
        for train, test in splitter.split(X, y):
            for method, label in keys:
                cols = subsets[label]
                oof[(method, label)][r, test] = _candidate_predictions(
                    method, X[train][:, cols], y[train], X[test][:, cols], None if w is None else w[train]
                )
            train_w = None if w is None or w[train].sum() <= 0 else w[train]
            baseline[r, test] = np.average(y[train], weights=train_w)

    def summary(predictions: np.ndarray) -> dict[str, float | None]:
        per_repeat = [_metrics(p, y, w) for p in predictions]
        eces = [m["ece"] for m in per_repeat]
        aucs = [m["auc"] for m in per_repeat if m["auc"] is not None]
        return {
            "ece": float(np.mean(eces)),
            "ece_std": float(np.std(eces)),
            "brier": float(np.mean([m["brier"] for m in per_repeat])),
            "auc": float(np.mean(aucs)) if aucs else None,
        }

    candidates = {f"{method}:{label}": summary(oof[(method, label)]) for method, label in keys}
    order = {key: i for i, key in enumerate(candidates)}
    # The feature set by Brier score (a proper score: calibration AND sharpness; by ECE alone a set
    # that cannot tell answers apart would win by predicting the base rate), then the method
    # within it by ECE.
    label = min(subsets, key=lambda s: round(min(candidates[f"{m}:{s}"]["brier"] for m in ("platt", "isotonic")), 4))
    chosen_key = min((f"{m}:{label}" for m in ("platt", "isotonic")),
                     key=lambda c: (round(candidates[c]["ece"], 3), candidates[c]["brier"], order[c]))
    method = chosen_key.split(":")[0]
    cols = subsets[label]
    chosen_names = [names[i] for i in cols]
    predictions = oof[(method, label)][0]  # the first split: what tau and the diagrams are drawn from

    linear = _fit_linear(X[:, cols], y, w)
    iso_x = iso_y = None
    if method == "isotonic":
        x_thr, y_thr = _fit_isotonic(linear.score(X[:, cols]), y, w)
        iso_x, iso_y = x_thr.tolist(), y_thr.tolist()
    tau, precision, coverage, tau_note = _choose(predictions, y, coverage_range, w)
    floor = ece_noise_floor(predictions, seed=seed, weights=w)
    notes = [
        f"chose the {label} features by Brier score and {method} by ECE ({k}-fold cross-validation, "
        f"mean of {repeats} shuffles)",
        f"ECE noise floor at n={n}: {floor:.3f} (what a perfectly calibrated model with these confidences "
        "would measure)",
    ]
    if k < folds:
        notes.append(f"used {k} folds instead of {folds}: the rarer class has only {min(positives, negatives)} samples")
    if tau_note:
        notes.append(tau_note)
    return Calibrator(
        method=method,
        feature_names=chosen_names,
        means=linear.means.tolist(),
        stds=linear.stds.tolist(),
        coef=linear.coef.tolist(),
        intercept=linear.intercept,
        iso_x=iso_x,
        iso_y=iso_y,
        tau=tau,
        cv_metrics={
            "chosen": method,
            "feature_set": label,
            "folds": k,
            "repeats": repeats,
            "seed": seed,
            "candidates": candidates,
            "baseline_constant": summary(baseline),
            "ece_noise_floor": floor,
            "tau": tau,
            "precision_at_tau": precision,
            "coverage_at_tau": coverage,
            "coverage_range": list(coverage_range),
            "weighted": w is not None,
        },
        n_samples=n,
        n_positive=positives,
        fitted_at=_now(),
        notes=notes,
        cv_predictions=predictions,
    )
