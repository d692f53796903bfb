"""Evaluation assets: the product measures itself on the user's own repository, every night.

``eval_set`` mines questions from the repo's git history, ``retrieval_eval`` runs the real
retriever over them (with ablations), ``calibration`` fits the confidence model serving uses to
abstain. Each eval/calibration materialization is one MLflow run linked from the asset metadata.
"""

from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from codex_assets.ingestion import published_index, repo_snapshot, repos_partitions
from codex_core import catalog
from codex_core.calibration import (
    CalibratorStore,
)
from codex_core.champion import ChampionService
from codex_core.config_registry import CHALLENGER, ConfigRegistry
from codex_core.configs import ConfigStore
from codex_core.eval_report import arm_result, record_calibration, record_judgement, record_retrieval_eval
from codex_core.evalsets import DEFAULT_MAX_ITEMS, EvalRegistry, mine_eval_set
from codex_core.evaluation import ablation_configs, evaluate
from codex_core.ingest import repo_dir_for
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
    report = record_calibration(
        repo=repo, results_dir=home.eval_results_dir(repo), store=CalibratorStore(home.calibration_dir(repo)),
        tracker=mlflow.tracker(), tags=_run_tags(context, repo),
    )
    return dg.MaterializeResult(
        metadata={
            "method": report.method,
            "feature_set": report.feature_set,
            "features": dg.MetadataValue.json(report.features),
            "samples": report.samples,
            "ece_cv": _finite(report.ece),
            "ece_cv_mean_repeats": _finite(report.ece_mean),
            "ece_cv_std_repeats": _finite(report.ece_std),
            "ece_noise_floor": _finite(report.noise_floor),
            "candidates": dg.MetadataValue.md(report.candidates_md),
            "heuristic_ece": _finite(report.heuristic_ece),
            "tau": round(float(report.tau), 4),
            "precision_at_tau": round(float(report.precision), 4),
            "coverage_at_tau": round(float(report.coverage), 4),
            "abstention_ablation": dg.MetadataValue.md(report.abstention_md),
            "calibrator": dg.MetadataValue.path(str(report.calibrator_path)),
            "reliability_diagram": dg.MetadataValue.path(str(report.reliability_png)),
            "precision_coverage": dg.MetadataValue.path(str(report.coverage_png)),
            "mlflow_url": dg.MetadataValue.url(report.run_url) if report.run_url else None,
            "mlflow_run_id": report.run_id,
        }
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


eval_assets = [eval_set, retrieval_eval, calibration]


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
            arms[label] = arm_result(run.outcomes)
    finally:
        reader.close()
    report = record_judgement(
        arms, champion=champion, challenger=challenger, champions=champions, repo=repo,
        eval_set=f"{evalset.name}@{evalset.version}", tracker=tracker, tags=_run_tags(context, repo),
    )
    return dg.MaterializeResult(
        metadata={
            "outcome": report.outcome,
            "reasons": dg.MetadataValue.json(report.reasons),
            "champion": f"v{champion.version} ({champion.config_id})",
            "challenger": f"v{challenger.version} ({challenger.config_id})",
            "arms": dg.MetadataValue.md(report.arms_md),
            "delta_ndcg_at_5": report.delta_ndcg,
            "delta_ndcg_ci95": dg.MetadataValue.json(list(report.delta_ndcg_ci95)),
            "mlflow_url": dg.MetadataValue.url(report.run_url) if report.run_url else None,
        }
    )


eval_assets = [*eval_assets, ab_judgement]
