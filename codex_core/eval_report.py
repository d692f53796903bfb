"""What a self-evaluation leaves behind: per-query results, calibration features, one MLflow run
and ``last_eval.json`` (what ``feriactl eval report`` reads). The ``retrieval_eval`` asset runs the
retriever and calls :func:`record_retrieval_eval`; it only reports the returned summary."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from codex_core import catalog
from codex_core.evaluation import EvalRun, metrics_table
from codex_core.metrics import ndcg_at_k
from codex_core.retrieval import RetrievalConfig
from codex_core.tracking import Tracker

EXPERIMENT = "precision-codex-eval"
METRIC_COLUMNS = [
    "queries", "file_recall_at_1", "file_recall_at_5", "file_recall_at_10", "file_mrr_at_10", "file_ndcg_at_5",
    "symbol_recall_at_5", "symbol_ndcg_at_5", "latency_p50_ms", "latency_p95_ms",
]
CALIBRATION_FEATURES = "calibration_features.parquet"
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


def record_retrieval_eval(
    runs: dict[str, EvalRun], *, repo: str, eval_set: str, index_commit: str, index_version: str, model_id: str,
    out_dir: Path, tracker: Tracker, tags: dict[str, str],
) -> RetrievalEvalReport:
    """Write the per-query CSV and the calibration features of the full configuration (the last of
    ``runs``), log one MLflow run (params, headline metrics, ablations, the lexical-overlap split,
    the tables), and record ``last_eval.json``."""
    full_name = list(runs)[-1]
    full = runs[full_name]
    ablation_rows = {name: run.metrics() for name, run in runs.items()}
    split_rows = {f"{full_name} / {s}": full.metrics(s) for s in ("all", "overlap", "no_overlap")}

    out_dir.mkdir(parents=True, exist_ok=True)
    per_query_csv = out_dir / "per_query.csv"
    pd.DataFrame([o.row() for o in full.outcomes]).to_csv(per_query_csv, index=False)
    features = pd.DataFrame(
        [{"query": o.query, "label": int(o.top1_correct), "heuristic": o.heuristic_confidence,
          "ndcg_at_5": ndcg_at_k(o.ranked_files, o.gold_files, 5), **o.features}
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
        run.log_artifact(per_query_csv, "tables")
        run.log_json({"ablations": ablation_rows, "lexical_overlap_split": split_rows}, "metrics.json", "tables")
    catalog.write_json(out_dir / LAST_EVAL, {
        "mlflow_run_id": run.run_id, "mlflow_url": run.url, "eval_set": eval_set,
        "index_commit": index_commit, "metrics": full_metrics, "ablations": ablation_rows, "split": split_rows,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return RetrievalEvalReport(
        eval_set=eval_set, queries=len(full.outcomes), metrics=full_metrics,
        ablations_md=metrics_table(ablation_rows, METRIC_COLUMNS), split_md=metrics_table(split_rows, METRIC_COLUMNS),
        per_query_csv=per_query_csv, run_id=run.run_id, run_url=run.url, index_commit=index_commit,
    )
