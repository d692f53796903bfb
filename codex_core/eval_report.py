"""What a self-evaluation leaves behind: per-query results, calibration features, one MLflow run
and ``last_eval.json`` (what ``feriactl eval report`` reads). The ``retrieval_eval`` asset runs the
retriever and calls :func:`record_retrieval_eval`; it only reports the returned summary.

Every eval item has a question style (``mined`` commit message or ``plain`` question): retrieval
metrics are split by it, and :func:`record_calibration` fits the calibrator on both styles and
reports its calibration per style on held-out items (``calibration.styles``)."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from codex_core import catalog
from codex_core.calibration import (
    FEATURES,
    HOLDOUT_FRACTION,
    REPORT_COLUMNS,
    Calibrator,
    CalibratorStore,
    choose_threshold,
    expected_calibration_error,
    feature_vector,
    fit_calibrator,
    holdout_mask,
    precision_at_coverage,
    precision_coverage_png,
    reliability_diagram_png,
    style_report,
    style_weights,
)
from codex_core.champion import ChampionService
from codex_core.config_registry import RegisteredConfig
from codex_core.evalsets.data import MINED
from codex_core.evaluation import EvalRun, QueryOutcome, metrics_table, summarize
from codex_core.judge import ArmResult, judge
from codex_core.metrics import ndcg_at_k
from codex_core.query_style import question_style
from codex_core.retrieval import RetrievalConfig
from codex_core.tracking import Tracker

EXPERIMENT = "precision-codex-eval"
METRIC_COLUMNS = [
    "queries", "file_recall_at_1", "file_recall_at_5", "file_recall_at_10", "file_mrr_at_10", "file_ndcg_at_5",
    "symbol_recall_at_5", "symbol_ndcg_at_5", "latency_p50_ms", "latency_p95_ms",
]
CALIBRATION_FEATURES = "calibration_features.parquet"
# Columns of the calibration features table that are not features.
NON_FEATURE_COLUMNS = ("id", "style", "query", "label", "heuristic", "ndcg_at_5")
LAST_EVAL = "last_eval.json"


def config_hash(config: RetrievalConfig, model_id: str) -> str:
    blob = json.dumps({"retrieval": asdict(config), "embedder": model_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RetrievalEvalReport:
    eval_set: str
    queries: int
    metrics: dict[str, Any]  # of the full configuration
    ablations_md: str
    split_md: str
    per_query_csv: Path
    run_id: str
    run_url: str | None
    index_commit: str
    style_split_md: str = ""
    style_metrics: dict[str, dict[str, Any]] | None = None


def record_retrieval_eval(
    runs: dict[str, EvalRun], *, repo: str, eval_set: str, index_commit: str, index_version: str, model_id: str,
    out_dir: Path, tracker: Tracker, tags: dict[str, str], styles: Mapping[str, str] | None = None,
) -> RetrievalEvalReport:
    """Write the per-query CSV and the calibration features of the full configuration (the last of
    ``runs``), log one MLflow run (params, headline metrics, ablations, the lexical-overlap split,
    the split by question style, the tables), and record ``last_eval.json``. ``styles`` maps item
    ids to their style (missing: ``mined``)."""
    full_name = list(runs)[-1]
    full = runs[full_name]
    ablation_rows = {name: run.metrics() for name, run in runs.items()}
    split_rows = {f"{full_name} / {s}": full.metrics(s) for s in ("all", "overlap", "no_overlap")}
    style_of = {o.item_id: (styles or {}).get(o.item_id, MINED) for o in full.outcomes}
    style_rows = {
        f"{full_name} / {style}": summarize([o for o in full.outcomes if style_of[o.item_id] == style])
        for style in sorted(set(style_of.values()))
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    per_query_csv = out_dir / "per_query.csv"
    pd.DataFrame([{"style": style_of[o.item_id], **o.row()} for o in full.outcomes]).to_csv(per_query_csv, index=False)
    features = pd.DataFrame(
        [{"id": o.item_id, "style": style_of[o.item_id], "query": o.query, "label": int(o.top1_correct),
          "heuristic": o.heuristic_confidence, "ndcg_at_5": ndcg_at_k(o.ranked_files, o.gold_files, 5), **o.features}
         for o in full.outcomes]
    )
    features.to_parquet(out_dir / CALIBRATION_FEATURES, index=False)

    full_metrics = ablation_rows[full_name]
    with tracker.run(EXPERIMENT, f"{repo} retrieval_eval", tags | {"kind": "retrieval_eval"}) as run:
        run.log_params({
            "config_hash": config_hash(RetrievalConfig(), model_id),
            "embedder": model_id,
            "index_commit": index_commit,
            "index_version": index_version,
            "eval_set": eval_set,
            "queries": len(full.outcomes),
        })
        run.log_metrics({k: v for k, v in full_metrics.items() if isinstance(v, float)})
        for name, row in ablation_rows.items():
            slug = name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "plus_")
            headline = {k: v for k, v in row.items() if k.endswith(("ndcg_at_5", "recall_at_5"))}
            run.log_metrics({f"ablation.{slug}.{k}": v for k, v in headline.items()})
        for subset in ("overlap", "no_overlap"):
            run.log_metrics({f"{subset}.{k}": v for k, v in full.metrics(subset).items() if k.endswith("ndcg_at_5")})
        for name, row in style_rows.items():
            style = name.rsplit(" / ", 1)[-1]
            run.log_metrics({f"style.{style}.{k}": v for k, v in row.items()
                             if k == "queries" or k.endswith(("ndcg_at_5", "recall_at_1", "recall_at_5"))})
        run.log_artifact(per_query_csv, "tables")
        run.log_json({"ablations": ablation_rows, "lexical_overlap_split": split_rows, "style_split": style_rows},
                     "metrics.json", "tables")
    catalog.write_json(out_dir / LAST_EVAL, {
        "mlflow_run_id": run.run_id, "mlflow_url": run.url, "eval_set": eval_set,
        "index_commit": index_commit, "metrics": full_metrics, "ablations": ablation_rows, "split": split_rows,
        "style_split": style_rows, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return RetrievalEvalReport(
        eval_set=eval_set, queries=len(full.outcomes), metrics=full_metrics,
        ablations_md=metrics_table(ablation_rows, METRIC_COLUMNS), split_md=metrics_table(split_rows, METRIC_COLUMNS),
        per_query_csv=per_query_csv, run_id=run.run_id, run_url=run.url, index_commit=index_commit,
        style_split_md=metrics_table(style_rows, METRIC_COLUMNS), style_metrics=style_rows,
    )


@dataclass(frozen=True)
class CalibrationReport:
    method: str
    feature_set: str | None
    features: list[str]
    samples: int
    ece: float | None
    ece_mean: float | None
    ece_std: float | None
    noise_floor: float | None
    candidates_md: str
    heuristic_ece: float | None
    tau: float
    precision: float
    coverage: float
    abstention_md: str
    calibrator_path: Path
    reliability_png: Path
    coverage_png: Path
    run_id: str
    run_url: str | None
    # Per question style ("mined", "plain", "all"[, "all (served mix)"]), measured on held-out items
    # by the published calibrator; and the same for a calibrator fitted on mined items only.
    holdout: dict[str, dict[str, Any]] | None = None
    holdout_mined_only: dict[str, dict[str, Any]] | None = None
    holdout_md: str = ""
    styles: dict[str, Any] | None = None  # split sizes, served mix and weights


def _feature_matrix(frame: pd.DataFrame) -> np.ndarray:
    feature_dicts = frame.drop(columns=[c for c in NON_FEATURE_COLUMNS if c in frame]).to_dict("records")
    if not len(frame):
        return np.zeros((0, len(FEATURES)))
    return np.stack([feature_vector(f, q) for f, q in zip(feature_dicts, frame["query"], strict=True)])


def _predict(calibrator: Calibrator, X: np.ndarray) -> np.ndarray:
    """``calibrator`` on rows of all ``FEATURES`` (it reads the ones it was fitted on)."""
    if not len(X):
        return np.zeros(0)
    if calibrator.method == "constant":
        return calibrator.predict(X)
    return calibrator.predict(X[:, [FEATURES.index(name) for name in calibrator.feature_names]])


def record_calibration(
    *, repo: str, results_dir: Path, store: CalibratorStore, tracker: Tracker, tags: dict[str, str],
    served_question_share: float | None = None, served_queries: int = 0,
) -> CalibrationReport:
    """Fit the calibrator on the features ``retrieval_eval`` wrote, draw its diagrams, publish it
    through ``store`` (the pointer last) and log one MLflow run.

    Items of both question styles are split (``calibration.styles.holdout_mask``): the calibrator
    is fitted on the fit side, weighted to the served mix of query styles when ``served_queries``
    are enough (``style_weights``), and its ECE and tau come from out-of-fold predictions there.
    The per-style report is measured on the held-out side only, for the published calibrator and,
    as the ablation that shows why both styles are needed, for one fitted on mined items alone.
    """
    frame = pd.read_parquet(results_dir / CALIBRATION_FEATURES)
    n = len(frame)
    ids = frame["id"].astype(str).tolist() if "id" in frame else [f"row-{i}" for i in range(n)]
    item_styles = frame["style"].astype(str).tolist() if "style" in frame else [MINED] * n
    query_styles = [question_style(q) for q in frame["query"].astype(str)]
    X = _feature_matrix(frame)
    y = frame["label"].to_numpy(dtype=int)
    held = holdout_mask(ids, item_styles) if n else np.zeros(0, dtype=bool)
    fit = ~held
    weights, weighting = style_weights([s for s, f in zip(query_styles, fit, strict=True) if f],
                                       served_question_share, served_queries)
    calibrator = fit_calibrator(X[fit], y[fit], sample_weight=weights)
    # Out-of-fold predictions: the reported ECE and tau never see a model fitted on the same query.
    y_fit = y[fit]
    probs = np.asarray(calibrator.cv_predictions if calibrator.cv_predictions is not None
                       else _predict(calibrator, X[fit]), dtype=float)
    tau, precision, coverage = choose_threshold(probs, y_fit, weights=weights)
    calibrator.tau = float(tau)
    curve = precision_at_coverage(probs, y_fit, weights)
    ece = expected_calibration_error(probs, y_fit, weights=weights)

    # Held out: never fitted on, never used to choose anything.
    held_styles = [s for s, h in zip(item_styles, held, strict=True) if h]
    held_weights = style_weights([s for s, h in zip(query_styles, held, strict=True) if h],
                                 served_question_share, served_queries)[0]
    holdout = style_report(_predict(calibrator, X[held]), y[held], held_styles, tau, held_weights)
    mined_only = None
    fit_styles = np.asarray(item_styles, dtype=object)[fit]
    mined_rows = fit_styles == MINED
    if len(set(item_styles)) > 1 and mined_rows.any():
        X_mined, y_mined = X[fit][mined_rows], y_fit[mined_rows]
        only = fit_calibrator(X_mined, y_mined)
        only_probs = only.cv_predictions if only.cv_predictions is not None else _predict(only, X_mined)
        only_tau = choose_threshold(only_probs, y_mined)[0]
        mined_only = style_report(_predict(only, X[held]), y[held], held_styles, only_tau)
    styles_info = {
        "holdout_fraction": HOLDOUT_FRACTION,
        "fit_items": dict(sorted(Counter(fit_styles.tolist()).items())),
        "holdout_items": dict(sorted(Counter(held_styles).items())),
        **weighting,
    }
    calibrator.cv_metrics["holdout"] = holdout
    calibrator.cv_metrics["styles"] = styles_info
    if mined_only is not None:
        calibrator.cv_metrics["holdout_mined_only"] = mined_only
    calibrator.notes.append(f"fitted on {int(fit.sum())} items, per-style metrics on {int(held.sum())} held-out "
                            f"items; {weighting['note']}")
    holdout_rows = {f"{style} (held-out)": row for style, row in holdout.items()}
    holdout_rows |= {f"mined-only calibrator: {style} (held-out)": row for style, row in (mined_only or {}).items()}

    # The last ablation row: what calibrated abstention does to the answers that are still given.
    answered = probs >= tau
    ndcg = frame["ndcg_at_5"].to_numpy(dtype=float)[fit]
    abstention_rows = {
        "served config (answer everything)": {
            "coverage": 1.0, "top1_precision": float(y_fit.mean()) if len(y_fit) else None,
            "file_ndcg_at_5": float(ndcg.mean()) if len(y_fit) else None,
        },
        "+calibrated abstention (answer if p >= tau)": {
            "coverage": float(answered.mean()) if len(y_fit) else None,
            "top1_precision": float(y_fit[answered].mean()) if answered.any() else None,
            "file_ndcg_at_5": float(ndcg[answered].mean()) if answered.any() else None,
        },
    }
    heuristic_ece = expected_calibration_error(frame["heuristic"].to_numpy(dtype=float), y) if n else None
    cv = calibrator.cv_metrics
    chosen = (cv.get("candidates") or {}).get(f"{calibrator.method}:{cv.get('feature_set')}", {})
    ece_mean, ece_std, floor = chosen.get("ece"), chosen.get("ece_std"), cv.get("ece_noise_floor")
    candidates_md = metrics_table(cv.get("candidates") or {}, ["ece", "ece_std", "brier", "auc"])

    reliability, coverage_png = store.diagram_paths(store.next_version())
    reliability_diagram_png(probs, y_fit, reliability)
    precision_coverage_png(curve, coverage_png, tau=tau)
    published = store.publish(calibrator, tau)  # the pointer moves last, after the diagrams exist
    version, path = published.version, published.path

    with tracker.run(EXPERIMENT, f"{repo} calibration", tags | {"kind": "calibration"}) as run:
        run.log_params({"method": calibrator.method, "samples": int(fit.sum()), "calibrator_version": version,
                        "feature_set": cv.get("feature_set"), "cv_repeats": cv.get("repeats"),
                        "holdout_fraction": HOLDOUT_FRACTION, "holdout_samples": int(held.sum()),
                        "style_weighting": "served mix" if weights is not None else "pooled"})
        run.log_metrics({
            "ece_cv": ece, "ece_cv_mean_repeats": ece_mean, "ece_cv_std_repeats": ece_std, "ece_noise_floor": floor,
            "heuristic_ece": heuristic_ece, "tau": tau, "precision_at_tau": precision,
            "coverage_at_tau": coverage, "positive_rate": float(y_fit.mean()) if len(y_fit) else None,
            "answered_file_ndcg_at_5": abstention_rows["+calibrated abstention (answer if p >= tau)"]["file_ndcg_at_5"],
            "served_question_share": served_question_share,
            **{f"style_weight.{s}": w for s, w in (weighting.get("weights") or {}).items()},
        })
        for prefix, report in (("holdout", holdout), ("mined_only.holdout", mined_only or {})):
            for style, row in report.items():
                slug = style.replace(" (served mix)", "_served_mix")
                run.log_metrics({f"{prefix}.{slug}.{k}": v for k, v in row.items() if v is not None})
        run.log_json({"holdout": holdout, "holdout_mined_only": mined_only, "styles": styles_info},
                     "holdout_by_style.json", "calibration")
        for p in (path, reliability, coverage_png):
            run.log_artifact(p, "calibration")
    return CalibrationReport(
        method=calibrator.method, feature_set=cv.get("feature_set"), features=list(calibrator.feature_names),
        samples=int(fit.sum()), ece=ece, ece_mean=ece_mean, ece_std=ece_std, noise_floor=floor,
        candidates_md=candidates_md, heuristic_ece=heuristic_ece, tau=float(tau), precision=float(precision),
        coverage=float(coverage),
        abstention_md=metrics_table(abstention_rows, ["coverage", "top1_precision", "file_ndcg_at_5"]),
        calibrator_path=path, reliability_png=reliability, coverage_png=coverage_png, run_id=run.run_id,
        run_url=run.url, holdout=holdout, holdout_mined_only=mined_only,
        holdout_md=metrics_table(holdout_rows, REPORT_COLUMNS), styles=styles_info,
    )


def arm_result(outcomes: Sequence[QueryOutcome]) -> tuple[ArmResult, dict[str, float]]:
    """Quality, tail latency, calibration error (out-of-fold) and cost of one config on the eval set."""
    summary = summarize(outcomes)
    X = np.stack([feature_vector(o.features, o.query) for o in outcomes]) if outcomes else np.zeros((0, 1))
    y = np.array([int(o.top1_correct) for o in outcomes], dtype=int)
    fitted = fit_calibrator(X, y)
    probs = fitted.cv_predictions if fitted.cv_predictions is not None else fitted.predict(X)
    # Too few (or one-sided) outcomes to fit a calibrator: ECE is not comparable, so the judge skips it.
    comparable = len(y) and fitted.method != "constant"
    ece = float(expected_calibration_error(np.asarray(probs, dtype=float), y)) if comparable else float("nan")
    per_query = tuple(ndcg_at_k(o.ranked_files, o.gold_files, 5) for o in outcomes)
    arm = ArmResult(
        ndcg_at_5=float(summary.get("file_ndcg_at_5", 0.0)),
        p95_s=float(summary.get("latency_p95_ms", 0.0)) / 1000,
        ece=ece,
        cost=float(np.mean([o.context_tokens for o in outcomes])) if outcomes else 0.0,
        per_query_ndcg=per_query,
    )
    return arm, summary | {"ece": ece, "cost_tokens": arm.cost}


@dataclass(frozen=True)
class JudgementReport:
    outcome: str
    reasons: list[str]
    arms_md: str
    delta_ndcg: float
    delta_ndcg_ci95: tuple[float, float]
    run_id: str
    run_url: str | None


def record_judgement(
    arms: dict[str, tuple[ArmResult, dict[str, float]]], *, champion: RegisteredConfig, challenger: RegisteredConfig,
    champions: ChampionService, repo: str, eval_set: str, tracker: Tracker, tags: dict[str, str],
) -> JudgementReport:
    """Judge the two arms, settle the challenger through ``champions`` (the MLflow alias, and the
    config serving answers with), and log one MLflow run."""
    verdict = judge(arms["champion"][0], arms["challenger"][0])
    outcome, reasons = verdict.outcome, list(verdict.failed_rules)
    champions.settle(challenger, promote=outcome == "promote")
    rows = {label: summary for label, (_, summary) in arms.items()}
    columns = ["queries", "file_ndcg_at_5", "file_recall_at_5", "latency_p95_ms", "ece", "cost_tokens"]
    with tracker.run(EXPERIMENT, f"{repo} ab_judgement", tags | {"kind": "ab_judgement"}) as run:
        run.log_params({
            "champion_version": champion.version, "champion_config": champion.config_id,
            "challenger_version": challenger.version, "challenger_config": challenger.config_id,
            "eval_set": eval_set, "outcome": outcome,
        })
        for label, (_, summary) in arms.items():
            run.log_metrics({f"{label}.{k}": v for k, v in summary.items() if isinstance(v, float)})
        run.log_metrics({k: v for k, v in verdict.to_dict().items() if isinstance(v, float)})
        run.log_json({"arms": rows, "judgement": verdict.to_dict(), "reasons": reasons}, "judgement.json", "tables")
    return JudgementReport(
        outcome=outcome, reasons=reasons, arms_md=metrics_table(rows, columns), delta_ndcg=verdict.delta_ndcg,
        delta_ndcg_ci95=(verdict.ndcg_ci_low, verdict.ndcg_ci_high), run_id=run.run_id, run_url=run.url,
    )
