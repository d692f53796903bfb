"""Evaluation assets: the product measures itself on the user's own repository, every night.

``eval_set`` mines questions from the repo's git history, ``retrieval_eval`` runs the real
retriever over them (with ablations), ``calibration`` fits the confidence model serving uses to
abstain. Each eval/calibration materialization is one MLflow run linked from the asset metadata.
"""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from codex_assets.ingestion import published_index, repo_snapshot, repos_partitions
from codex_core import catalog
from codex_core.calibration import (
    CalibratorStore,
    choose_threshold,
    expected_calibration_error,
    feature_vector,
    fit_calibrator,
    precision_at_coverage,
    precision_coverage_png,
    reliability_diagram_png,
)
from codex_core.champion import ChampionService
from codex_core.config_registry import CHALLENGER, ConfigRegistry
from codex_core.configs import ConfigStore
from codex_core.eval_report import EXPERIMENT, record_retrieval_eval
from codex_core.evalsets import DEFAULT_MAX_ITEMS, EvalRegistry, mine_eval_set
from codex_core.evaluation import ablation_configs, evaluate, metrics_table, summarize
from codex_core.ingest import repo_dir_for
from codex_core.judge import ArmResult, judge
from codex_core.metrics import ndcg_at_k
from codex_core.reader import PublishedReader, reranker_from_settings
from codex_resources import CodexHomeResource, EmbedderResource, MlflowResource, VectorStoreResource

_COMMON = dict(group_name="eval", partitions_def=repos_partitions)


def mined_set_name(repo: str) -> str:
    return f"{repo}-mined"


class EvalSetConfig(dg.Config):
    max_items: int = Field(
        default=DEFAULT_MAX_ITEMS,
        ge=1,
        description=(
            "the newest N questions mined from history; more questions measure calibration error more "
            "precisely (its noise floor falls as 1/sqrt(N)) and make an eval run take longer"
        ),
    )


class EvalConfig(dg.Config):
    eval_set: str = Field(
        default="",
        description="NAME or NAME@VERSION of the eval set; empty = the newest set mined from this repo's history",
    )


def _run_tags(context: dg.AssetExecutionContext, repo: str) -> dict[str, str]:
    return {"dagster.run_id": context.run.run_id, "dagster.partition": repo, "repo": repo}


@dg.asset(deps=[repo_snapshot], kinds={"git"}, **_COMMON)
def eval_set(
    context: dg.AssetExecutionContext, config: EvalSetConfig, codex_home: CodexHomeResource
) -> dg.MaterializeResult:
    """Questions mined from the repository's own git history: commit message -> files (and symbols) it changed.

    Merges, reverts, bumps, formatting-only and typo commits, commits touching more than 3 source
    files, and files that no longer exist are excluded (counts by reason in the metadata). A new
    immutable version is written only when the mined items changed.
    """
    repo = context.partition_key
    home = codex_home.home
    snapshot = catalog.read_json(repo_dir_for(home, repo) / catalog.SNAPSHOT)
    name = mined_set_name(repo)
    mined = mine_eval_set(
        Path(snapshot["worktree"]), name=name, repo_name=repo, head=snapshot["commit"], max_items=config.max_items
    )
    registry = EvalRegistry(home.evals_dir)
    latest = registry.latest_version(name)
    if latest is not None and registry.get(name, latest).items == mined.items:
        version = latest
    else:
        version = registry.next_version(name)
        mined.version = version
        registry.write(mined)
    overlap = sum(1 for i in mined.items if i.lexical_overlap)
    return dg.MaterializeResult(
        metadata={
            "eval_set": f"{name}@{version}",
            "items": len(mined.items),
            "items_with_lexical_overlap": overlap,
            "items_with_gold_symbols": sum(1 for i in mined.items if i.gold_symbols),
            "excluded_by_reason": dg.MetadataValue.json(mined.meta.get("excluded_by_reason", {})),
            "commit": snapshot["commit"],
            "max_items": config.max_items,
            "commits_scanned": mined.meta.get("commits_scanned", 0),
        }
    )


def _resolve_set(registry: EvalRegistry, spec: str, repo: str):
    name, _, version = (spec or mined_set_name(repo)).partition("@")
    resolved = int(version) if version else registry.latest_version(name)
    if resolved is None:
        raise dg.Failure(f"no eval set named {name!r}: materialize eval_set or run `feriactl eval import FILE`")
    return registry.get(name, resolved)


@dg.asset(deps=[eval_set, published_index], kinds={"mlflow"}, **_COMMON)
def retrieval_eval(
    context: dg.AssetExecutionContext,
    config: EvalConfig,
    codex_home: CodexHomeResource,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The real retriever on the eval set: Recall@1/5/10, MRR@10, nDCG@5 (file and symbol level), latency.

    One run holds the ablations (dense only -> +lexical -> +graph hop -> +file evidence [-> +rerank]) and the split by
    lexical overlap (queries that name a gold file or symbol score higher; users must see it).
    Per-query results are a CSV artifact of the MLflow run.
    """
    repo = context.partition_key
    home = codex_home.home
    registry = EvalRegistry(home.evals_dir)
    evalset = _resolve_set(registry, config.eval_set, repo)
    model = embedder.get_embedder()
    reranker = reranker_from_settings()
    reader = PublishedReader(home, vector_store.open(), model, reranker=reranker)
    try:
        view = reader.refresh(force=True)
        if repo not in view.corpora:
            raise dg.Failure(f"{repo!r} has no published index: materialize the ingestion assets first")
        corpus, graph = view.corpora[repo], view.graphs.get(repo)
        items = [i for i in evalset.items if i.gold_files]
        runs = {
            name: evaluate(reader.retriever, items, repos=[repo], graph=graph, config=cfg, config_name=name)
            for name, cfg in ablation_configs(has_reranker=reranker is not None).items()
        }
    finally:
        reader.close()
    report = record_retrieval_eval(
        runs, repo=repo, eval_set=f"{evalset.name}@{evalset.version}", index_commit=corpus.commit,
        index_version=corpus.version, model_id=model.model_id, out_dir=home.eval_results_dir(repo),
        tracker=mlflow.tracker(), tags=_run_tags(context, repo),
    )
    return dg.MaterializeResult(
        metadata={
            "eval_set": report.eval_set,
            "queries": report.queries,
            "file_ndcg_at_5": report.metrics.get("file_ndcg_at_5"),
            "file_recall_at_5": report.metrics.get("file_recall_at_5"),
            "ablations": dg.MetadataValue.md(report.ablations_md),
            "lexical_overlap_split": dg.MetadataValue.md(report.split_md),
            "per_query_csv": dg.MetadataValue.path(str(report.per_query_csv)),
            "mlflow_run_id": report.run_id,
            "mlflow_url": dg.MetadataValue.url(report.run_url) if report.run_url else None,
            "index_commit": report.index_commit,
        }
    )


@dg.asset(deps=[retrieval_eval], kinds={"mlflow", "scikit-learn"}, **_COMMON)
def calibration(
    context: dg.AssetExecutionContext, codex_home: CodexHomeResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """P(top-1 file is correct) from retrieval features: Platt vs isotonic, chosen by cross-validated ECE.

    Picks the abstention threshold tau that maximizes precision at 70-80% coverage. Serving loads
    the newest calibrator for `confidence` and abstains below tau.
    """
    repo = context.partition_key
    home = codex_home.home
    frame = pd.read_parquet(home.eval_results_dir(repo) / "calibration_features.parquet")
    feature_dicts = frame.drop(columns=["query", "label", "heuristic", "ndcg_at_5"]).to_dict("records")
    X = np.stack([feature_vector(f, q) for f, q in zip(feature_dicts, frame["query"], strict=True)]) \
        if len(frame) else np.zeros((0, 1))
    y = frame["label"].to_numpy(dtype=int)
    calibrator = fit_calibrator(X, y)
    # Out-of-fold predictions: the reported ECE and tau never see a model fitted on the same query.
    probs = np.asarray(calibrator.cv_predictions if calibrator.cv_predictions is not None else calibrator.predict(X),
                       dtype=float)
    tau, precision, coverage = choose_threshold(probs, y)
    calibrator.tau = float(tau)
    curve = precision_at_coverage(probs, y)
    ece = expected_calibration_error(probs, y)
    # The last ablation row: what calibrated abstention does to the answers that are still given.
    answered = probs >= tau
    ndcg = frame["ndcg_at_5"].to_numpy(dtype=float)
    abstention_rows = {
        "served config (answer everything)": {
            "coverage": 1.0, "top1_precision": float(y.mean()) if len(y) else None,
            "file_ndcg_at_5": float(ndcg.mean()) if len(y) else None,
        },
        "+calibrated abstention (answer if p >= tau)": {
            "coverage": float(answered.mean()) if len(y) else None,
            "top1_precision": float(y[answered].mean()) if answered.any() else None,
            "file_ndcg_at_5": float(ndcg[answered].mean()) if answered.any() else None,
        },
    }
    heuristic_ece = expected_calibration_error(frame["heuristic"].to_numpy(dtype=float), y) if len(frame) else None
    cv = calibrator.cv_metrics
    chosen = (cv.get("candidates") or {}).get(f"{calibrator.method}:{cv.get('feature_set')}", {})
    ece_mean, ece_std, floor = chosen.get("ece"), chosen.get("ece_std"), cv.get("ece_noise_floor")
    candidates_md = metrics_table(cv.get("candidates") or {}, ["ece", "ece_std", "brier", "auc"])

    store = CalibratorStore(home.calibration_dir(repo))
    reliability, coverage_png = store.diagram_paths(store.next_version())
    reliability_diagram_png(probs, y, reliability)
    precision_coverage_png(curve, coverage_png, tau=tau)
    published = store.publish(calibrator, tau)  # the pointer moves last, after the diagrams exist
    version, path = published.version, published.path

    tracker = mlflow.tracker()
    with tracker.run(EXPERIMENT, f"{repo} calibration", _run_tags(context, repo) | {"kind": "calibration"}) as run:
        run.log_params({"method": calibrator.method, "samples": len(y), "calibrator_version": version,
                        "feature_set": cv.get("feature_set"), "cv_repeats": cv.get("repeats")})
        run.log_metrics({
            "ece_cv": ece, "ece_cv_mean_repeats": ece_mean, "ece_cv_std_repeats": ece_std, "ece_noise_floor": floor,
            "heuristic_ece": heuristic_ece, "tau": tau, "precision_at_tau": precision,
            "coverage_at_tau": coverage, "positive_rate": float(y.mean()) if len(y) else None,
            "answered_file_ndcg_at_5": abstention_rows["+calibrated abstention (answer if p >= tau)"]["file_ndcg_at_5"],
        })
        for p in (path, reliability, coverage_png):
            run.log_artifact(p, "calibration")
    return dg.MaterializeResult(
        metadata={
            "method": calibrator.method,
            "feature_set": cv.get("feature_set"),
            "features": dg.MetadataValue.json(calibrator.feature_names),
            "samples": len(y),
            "ece_cv": _finite(ece),
            "ece_cv_mean_repeats": _finite(ece_mean),
            "ece_cv_std_repeats": _finite(ece_std),
            "ece_noise_floor": _finite(floor),
            "candidates": dg.MetadataValue.md(candidates_md),
            "heuristic_ece": _finite(heuristic_ece),
            "tau": round(float(tau), 4),
            "precision_at_tau": round(float(precision), 4),
            "coverage_at_tau": round(float(coverage), 4),
            "abstention_ablation": dg.MetadataValue.md(
                metrics_table(abstention_rows, ["coverage", "top1_precision", "file_ndcg_at_5"])
            ),
            "calibrator": dg.MetadataValue.path(str(path)),
            "reliability_diagram": dg.MetadataValue.path(str(reliability)),
            "precision_coverage": dg.MetadataValue.path(str(coverage_png)),
            "mlflow_url": dg.MetadataValue.url(run.url) if run.url else None,
            "mlflow_run_id": run.run_id,
        }
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


eval_assets = [eval_set, retrieval_eval, calibration]


def _arm_result(outcomes) -> tuple[ArmResult, dict[str, float]]:
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


@dg.asset(deps=[calibration], kinds={"mlflow"}, **_COMMON)
def ab_judgement(
    context: dg.AssetExecutionContext,
    codex_home: CodexHomeResource,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Champion vs challenger config (MLflow registry aliases) on the same eval set, in one run.

    Promote iff ΔnDCG@5 ≥ −0.01, ΔP95 ≤ +0.2 s, ΔECE ≤ +0.02 and Δcost ≤ +10 %; a paired bootstrap
    95% CI on ΔnDCG@5 is reported beside the gate. Promotion moves the `champion` alias.
    """
    repo = context.partition_key
    home = codex_home.home
    tracker = mlflow.tracker()
    registry = ConfigRegistry(tracker, ConfigStore(home.configs_dir))
    champions = ChampionService(registry)
    champion = champions.champion()
    challenger = registry.by_alias(CHALLENGER)
    if challenger is None:
        return dg.MaterializeResult(
            metadata={"outcome": "no_challenger", "champion": f"v{champion.version} ({champion.config_id})"}
        )
    model = embedder.get_embedder()
    if challenger.config.embedder != model.model_id:
        champions.settle(challenger, promote=False)
        reason = f"challenger embedder {challenger.config.embedder!r} needs its own index (serving {model.model_id!r})"
        return dg.MaterializeResult(metadata={"outcome": "reject", "reasons": dg.MetadataValue.json([reason])})
    evalset = _resolve_set(EvalRegistry(home.evals_dir), "", repo)
    items = [i for i in evalset.items if i.gold_files]
    reader = PublishedReader(home, vector_store.open(), model)
    try:
        view = reader.refresh(force=True)
        if repo not in view.corpora:
            raise dg.Failure(f"{repo!r} has no published index: materialize the ingestion assets first")
        arms = {}
        for label, arm in (("champion", champion), ("challenger", challenger)):
            run = evaluate(reader.retriever, items, repos=[repo], graph=view.graphs.get(repo),
                           config=arm.config.retrieval, config_name=label)
            arms[label] = _arm_result(run.outcomes)
    finally:
        reader.close()
    verdict = judge(arms["champion"][0], arms["challenger"][0])
    outcome, reasons = verdict.outcome, list(verdict.failed_rules)
    champions.settle(challenger, promote=outcome == "promote")
    rows = {label: summary for label, (_, summary) in arms.items()}
    columns = ["queries", "file_ndcg_at_5", "file_recall_at_5", "latency_p95_ms", "ece", "cost_tokens"]
    table = metrics_table(rows, columns)
    with tracker.run(EXPERIMENT, f"{repo} ab_judgement", _run_tags(context, repo) | {"kind": "ab_judgement"}) as run:
        run.log_params({
            "champion_version": champion.version, "champion_config": champion.config_id,
            "challenger_version": challenger.version, "challenger_config": challenger.config_id,
            "eval_set": f"{evalset.name}@{evalset.version}", "outcome": outcome,
        })
        for label, (_, summary) in arms.items():
            run.log_metrics({f"{label}.{k}": v for k, v in summary.items() if isinstance(v, float)})
        run.log_metrics({k: v for k, v in verdict.to_dict().items() if isinstance(v, float)})
        run.log_json({"arms": rows, "judgement": verdict.to_dict(), "reasons": reasons}, "judgement.json", "tables")
    return dg.MaterializeResult(
        metadata={
            "outcome": outcome,
            "reasons": dg.MetadataValue.json(reasons),
            "champion": f"v{champion.version} ({champion.config_id})",
            "challenger": f"v{challenger.version} ({challenger.config_id})",
            "arms": dg.MetadataValue.md(table),
            "delta_ndcg_at_5": verdict.delta_ndcg,
            "delta_ndcg_ci95": dg.MetadataValue.json([verdict.ndcg_ci_low, verdict.ndcg_ci_high]),
            "mlflow_url": dg.MetadataValue.url(run.url) if run.url else None,
        }
    )


eval_assets = [*eval_assets, ab_judgement]
