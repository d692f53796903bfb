"""Calibrated answer confidence: P(the top-1 cited file is correct) from retrieval features.

``features`` (what a calibrator reads, how it is judged), ``fit`` (the model and its
cross-validated choice; the rules are in its docstring), ``styles`` (the held-out split per
question style, the weights for the mix serving sees, the report per style), ``plots`` (PNG
diagrams) and ``store`` (where the published calibrator of a repository lives: one writer, one
reader).
"""

from codex_core.calibration.features import (
    CORE_FEATURES,
    DEFAULT_COVERAGE_RANGE,
    FEATURE_SETS,
    FEATURES,
    METHODS,
    MIN_SAMPLES,
    SCHEMA,
    TARGET_COVERAGE,
    TARGET_PRECISION,
    brier_score,
    choose_threshold,
    coverage_at_target_precision,
    ece_noise_floor,
    expected_calibration_error,
    feature_vector,
    precision_at_coverage,
    precision_at_target_coverage,
    query_length,
)
from codex_core.calibration.fit import (
    Calibrator,
    fit_calibrator,
)
from codex_core.calibration.plots import (
    precision_coverage_png,
    reliability_diagram_png,
)
from codex_core.calibration.store import CalibratorStore
from codex_core.calibration.styles import (
    HOLDOUT_FRACTION,
    MIN_SERVED_QUERIES,
    REPORT_COLUMNS,
    holdout_mask,
    style_report,
    style_weights,
)

__all__ = [
    "CORE_FEATURES",
    "HOLDOUT_FRACTION",
    "MIN_SERVED_QUERIES",
    "REPORT_COLUMNS",
    "TARGET_COVERAGE",
    "TARGET_PRECISION",
    "coverage_at_target_precision",
    "holdout_mask",
    "precision_at_target_coverage",
    "style_report",
    "style_weights",
    "Calibrator",
    "CalibratorStore",
    "DEFAULT_COVERAGE_RANGE",
    "FEATURES",
    "FEATURE_SETS",
    "METHODS",
    "MIN_SAMPLES",
    "SCHEMA",
    "brier_score",
    "choose_threshold",
    "ece_noise_floor",
    "expected_calibration_error",
    "feature_vector",
    "fit_calibrator",
    "precision_at_coverage",
    "precision_coverage_png",
    "query_length",
    "reliability_diagram_png",
]
