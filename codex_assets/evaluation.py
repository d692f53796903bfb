"""Evaluation assets: the product measures itself on the user's own repository, every night.

``eval_set`` mines questions from the repo's git history and generates plain questions from its
documentation, ``file_ranker`` trains the repository's learned file ranker on the older mined
questions and publishes it only if it wins on the newer ones, ``retrieval_eval`` runs the real
retriever (as it will serve) over both sets (with ablations),
``calibration`` fits the confidence model serving uses to abstain, for the mix of question styles
serving sees, and reports it per style on held-out questions, and ``ab_judgement`` settles the
challenger config. Each materialization is one MLflow run linked from the asset metadata.
"""

from datetime import UTC, datetime, timedelta
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
from codex_core.drift import served_question_share
from codex_core.eval_report import arm_result, record_calibration, record_judgement, record_retrieval_eval
from codex_core.evalsets import (
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_PLAIN_ITEMS,
    EvalItem,
    EvalRegistry,
    EvalSet,
    generate_plain_set,
    mine_eval_set,
)
from codex_core.evaluation import ablation_configs, evaluate
from codex_core.ingest import repo_dir_for
from codex_core.querylog import QUERY_LOG_FILE, QueryLog
from codex_core.ranker import MIN_QUESTIONS
from codex_core.ranker_selection import (
    INSUFFICIENT_HISTORY,
    MIN_JUDGE_QUESTIONS,
    TRAIN_FRACTION,
    select_ranker,
)
from codex_core.reader import PublishedReader, reranker_from_settings
from codex_resources import CodexHomeResource, EmbedderResource, MlflowResource, VectorStoreResource

_COMMON = dict(group_name="eval", partitions_def=repos_partitions)


def mined_set_name(repo: str) -> str:
    return f"{repo}-mined"


def plain_set_name(repo: str) -> str:
    return f"{repo}-plain"


class EvalSetConfig(dg.Config):
    max_items: int = Field(
        default=DEFAULT_MAX_ITEMS,
        ge=1,
        description=(
            "the newest N questions mined from history; more questions measure calibration error more "
            "precisely (its noise floor falls as 1/sqrt(N)) and make an eval run take longer"
        ),
    )
    max_plain_items: int = Field(
        default=DEFAULT_MAX_PLAIN_ITEMS,
        ge=0,
        description=(
            "at most N plain questions generated from the repository's docstrings, README sections and "
            "function names (0: none); calibration is fitted and reported for them next to the mined ones"
        ),
    )


class EvalConfig(dg.Config):
    eval_set: str = Field(
        default="",
        description=(
            "NAME or NAME@VERSION of the eval set, several separated by commas; empty = the newest mined "
            "and the newest plain set of this repo"
        ),
    )


def _run_tags(context: dg.AssetExecutionContext, repo: str) -> dict[str, str]:
    return {"dagster.run_id": context.run.run_id, "dagster.partition": repo, "repo": repo}


def _store(registry: EvalRegistry, evalset: EvalSet) -> int:
    """The version holding ``evalset``'s items: the latest when unchanged, else a new one."""
    latest = registry.latest_version(evalset.name)
    if latest is not None and registry.get(evalset.name, latest).items == evalset.items:
        return latest
    evalset.version = registry.next_version(evalset.name)
    registry.write(evalset)
    return evalset.version


@dg.asset(deps=[repo_snapshot], kinds={"git"}, **_COMMON)
def eval_set(
    context: dg.AssetExecutionContext, config: EvalSetConfig, codex_home: CodexHomeResource
) -> dg.MaterializeResult:
    """Questions about the repository in two styles, each stored as its own immutable, versioned set.

    Mined (`<repo>-mined`): commit message -> files (and symbols) it changed. Merges, reverts, bumps,
    formatting-only and typo commits, commits touching more than 3 source files, and files that no
    longer exist are excluded (counts by reason in the metadata).
    Plain (`<repo>-plain`): where/how questions generated from docstrings, README sections and
    function names at the indexed commit, with the documented code as gold: the style users ask in.
    A new version is written only when a set's items changed.
    """
    repo = context.partition_key
    home = codex_home.home
    snapshot = catalog.read_json(repo_dir_for(home, repo) / catalog.SNAPSHOT)
    worktree, commit = Path(snapshot["worktree"]), snapshot["commit"]
    mined = mine_eval_set(worktree, name=mined_set_name(repo), repo_name=repo, head=commit, max_items=config.max_items)
    registry = EvalRegistry(home.evals_dir)
    version = _store(registry, mined)
    metadata = {
        "eval_set": f"{mined.name}@{version}",
        "items": len(mined.items),
        "items_with_lexical_overlap": sum(1 for i in mined.items if i.lexical_overlap),
        "items_with_gold_symbols": sum(1 for i in mined.items if i.gold_symbols),
        "excluded_by_reason": dg.MetadataValue.json(mined.meta.get("excluded_by_reason", {})),
        "commit": commit,
        "max_items": config.max_items,
        "commits_scanned": mined.meta.get("commits_scanned", 0),
    }
    if config.max_plain_items:
        plain = generate_plain_set(worktree, name=plain_set_name(repo), repo_name=repo, head=commit,
                                   max_items=config.max_plain_items)
        plain_version = _store(registry, plain) if plain.items else None
        metadata |= {
            "plain_set": f"{plain.name}@{plain_version}" if plain_version else None,
            "plain_items": len(plain.items),
            "plain_items_with_lexical_overlap": sum(1 for i in plain.items if i.lexical_overlap),
            "plain_items_by_kind": dg.MetadataValue.json(plain.meta.get("items_by_kind", {})),
        }
    return dg.MaterializeResult(metadata=metadata)


def _resolve_set(registry: EvalRegistry, spec: str, repo: str) -> EvalSet:
    name, _, version = spec.strip().partition("@")
    resolved = int(version) if version else registry.latest_version(name)
    if resolved is None:
        raise dg.Failure(f"no eval set named {name!r}: materialize eval_set or run `feriactl eval import FILE`")
    return registry.get(name, resolved)


def _resolve_sets(registry: EvalRegistry, spec: str, repo: str) -> tuple[str, list[EvalItem]]:
    """(label, items) of the sets ``spec`` names (comma-separated NAME[@VERSION]); empty spec: the
    newest mined set and, when one exists, the newest plain set of ``repo``."""
    if spec.strip():
        sets = [_resolve_set(registry, part, repo) for part in spec.split(",") if part.strip()]
    else:
        sets = [_resolve_set(registry, mined_set_name(repo), repo)]
        if registry.latest_version(plain_set_name(repo)) is not None:
            sets.append(_resolve_set(registry, plain_set_name(repo), repo))
    items: dict[str, EvalItem] = {}
    for evalset in sets:
        for item in evalset.items:
            if item.gold_files:
                items.setdefault(item.id, item)
    return "+".join(f"{s.name}@{s.version}" for s in sets), list(items.values())


@dg.asset(deps=[eval_set, published_index], kinds={"mlflow", "scikit-learn"}, **_COMMON)
def file_ranker(
    context: dg.AssetExecutionContext,
    codex_home: CodexHomeResource,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The repository's learned file ranker: trained on its older history, published only if it wins.

    The newest mined set's questions are ordered by commit time (plain questions have none and take
    no part): the older 70 % train a candidate on the served config's hand-set order, the newest
    30 % judge it, champion (the served config as it serves now, with the published ranker if any)
    vs challenger (the same config re-ordered by the candidate; a repository with no ranker of its
    own is served, and championed, by the shipped general ranker unless `global_ranker: false`).
    Promote iff the A/B gate passes (ΔnDCG@5 ≥ −0.01, ΔP95 ≤ +0.2 s, ΔECE ≤ +0.02, Δcost ≤ +10 %)
    AND ΔnDCG@5 > 0: a model must earn its place. The winner is written to
    `repos/<repo>/ranker/current.json`, which serving and the rest of this eval follow; otherwise
    that file is left as it is. Fewer than 30 questions to
    train or 20 to judge: `insufficient_history`, nothing trained (the ranker already published, or
    the shipped general one, or the hand-set order, stays). `learned_ranker: false` in the served
    config: `disabled`.
    """
    repo = context.partition_key
    home = codex_home.home
    label = mined_set_name(repo)
    mined = _resolve_set(EvalRegistry(home.evals_dir), label, repo)
    configs = ConfigStore(home.configs_dir)
    try:
        served, config = configs.served_retrieval()
    except (KeyError, ValueError) as exc:
        raise dg.Failure(f"cannot read the served config {configs.served()!r}: {exc}") from exc
    reader = PublishedReader(home, vector_store.open(), embedder.get_embedder(), reranker=reranker_from_settings())
    try:
        view = reader.refresh(force=True)
        if repo not in view.corpora:
            raise dg.Failure(f"{repo!r} has no published index: materialize the ingestion assets first")
        selection = select_ranker(
            reader, repo=repo, items=mined.items, config=config, tracker=mlflow.tracker(),
            tags=_run_tags(context, repo), eval_set=f"{mined.name}@{mined.version}", served_config=served,
        )
    finally:
        reader.close()
    split = selection.split
    ci = selection.delta_ndcg_ci95
    return dg.MaterializeResult(
        metadata={
            "outcome": selection.outcome,
            "reasons": dg.MetadataValue.json(selection.reasons),
            "ranker": selection.serving,
            "ranker_path": dg.MetadataValue.path(str(home.ranker_path(repo))),
            "trained_on": len(split.train),
            "judged_on": len(split.judge),
            "undated_questions": split.undated,
            "newest_training_commit": split.newest_training_commit_iso,
            "needs": f"{MIN_QUESTIONS} to train, {MIN_JUDGE_QUESTIONS} to judge "
                     f"({TRAIN_FRACTION:.0%} oldest / the newest rest of the mined questions)"
            if selection.outcome == INSUFFICIENT_HISTORY else None,
            "delta_ndcg_at_5": _finite(selection.verdict.delta_ndcg) if selection.verdict else None,
            "delta_ndcg_ci95": dg.MetadataValue.json([_finite(v) for v in ci]) if ci else None,
            "arms": dg.MetadataValue.md(selection.arms_md) if selection.arms else None,
            "coefficients": dg.MetadataValue.md(selection.coefficients_md) if selection.candidate else None,
            "served_config": served or "default",
            "eval_set": f"{mined.name}@{mined.version}",
            "mlflow_run_id": selection.run_id,
            "mlflow_url": dg.MetadataValue.url(selection.run_url) if selection.run_url else None,
        }
    )


@dg.asset(deps=[file_ranker], kinds={"mlflow"}, **_COMMON)
def retrieval_eval(
    context: dg.AssetExecutionContext,
    config: EvalConfig,
    codex_home: CodexHomeResource,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The real retriever on the eval set: Recall@1/5/10, MRR@10, nDCG@5 (file and symbol level), latency.

    By default the newest mined and plain sets together. One run holds the ablations (dense only ->
    +lexical -> +graph hop -> +file evidence [-> +rerank] [-> +learned ranker, when `file_ranker`
    published one]), the split by lexical overlap (queries
    that name a gold file or symbol score higher; users must see it) and the split by question
    style (mined commit messages vs plain questions). Per-query results are a CSV artifact of the
    MLflow run.
    """
    repo = context.partition_key
    home = codex_home.home
    registry = EvalRegistry(home.evals_dir)
    label, items = _resolve_sets(registry, config.eval_set, repo)
    model = embedder.get_embedder()
    reranker = reranker_from_settings()
    reader = PublishedReader(home, vector_store.open(), model, reranker=reranker)
    try:
        view = reader.refresh(force=True)
        if repo not in view.corpora:
            raise dg.Failure(f"{repo!r} has no published index: materialize the ingestion assets first")
        corpus, graph = view.corpora[repo], view.graphs.get(repo)
        runs = {
            name: evaluate(reader.retriever, items, repos=[repo], graph=graph, config=cfg, config_name=name)
            for name, cfg in ablation_configs(
                has_reranker=reranker is not None, has_ranker=reader.ranker_of(repo) is not None,
                has_general=reader.fallback_ranker is not None,
            ).items()
        }
    finally:
        reader.close()
    report = record_retrieval_eval(
        runs, repo=repo, eval_set=label, index_commit=corpus.commit,
        index_version=corpus.version, model_id=model.model_id, out_dir=home.eval_results_dir(repo),
        tracker=mlflow.tracker(), tags=_run_tags(context, repo), styles={i.id: i.style for i in items},
    )
    return dg.MaterializeResult(
        metadata={
            "eval_set": report.eval_set,
            "queries": report.queries,
            "file_ndcg_at_5": report.metrics.get("file_ndcg_at_5"),
            "file_recall_at_5": report.metrics.get("file_recall_at_5"),
            "ablations": dg.MetadataValue.md(report.ablations_md),
            "lexical_overlap_split": dg.MetadataValue.md(report.split_md),
            "style_split": dg.MetadataValue.md(report.style_split_md),
            "queries_by_style": dg.MetadataValue.json(
                {k.rsplit(" / ", 1)[-1]: int(v.get("queries", 0)) for k, v in (report.style_metrics or {}).items()}
            ),
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

    Fitted on both question styles (mined and plain), weighted to the share of question-like
    queries serving saw lately (the query log) when there are enough of them. 30 % of each style is held
    out: ECE, precision at 70 % coverage and coverage at 0.92 precision are reported per style on
    those items only, next to a calibrator fitted on mined questions alone. Picks the abstention
    threshold tau that maximizes precision at 70-80% coverage. Serving loads the newest calibrator
    for `confidence` and abstains below tau.
    """
    repo = context.partition_key
    home = codex_home.home
    now = datetime.now(UTC)
    served = list(QueryLog(home.serving_state_dir / QUERY_LOG_FILE).read(since=now - timedelta(days=8)))
    share, served_queries = served_question_share(served, now=now, repo=repo)
    report = record_calibration(
        repo=repo, results_dir=home.eval_results_dir(repo), store=CalibratorStore(home.calibration_dir(repo)),
        tracker=mlflow.tracker(), tags=_run_tags(context, repo), served_question_share=share,
        served_queries=served_queries,
    )
    holdout = report.holdout or {}
    styles = report.styles or {}
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
            "holdout_by_style": dg.MetadataValue.md(report.holdout_md),
            "holdout_samples": dg.MetadataValue.json(styles.get("holdout_items", {})),
            **{f"holdout_{style}_{key}": _finite(holdout.get(style, {}).get(key))
               for style in ("mined", "plain", "all")
               for key in ("ece", "precision_at_70_coverage", "coverage_at_092_precision")},
            "served_question_share": _finite(share),
            "served_queries": served_queries,
            "style_weighting": styles.get("note"),
            "calibrator": dg.MetadataValue.path(str(report.calibrator_path)),
            "reliability_diagram": dg.MetadataValue.path(str(report.reliability_png)),
            "precision_coverage": dg.MetadataValue.path(str(report.coverage_png)),
            "mlflow_url": dg.MetadataValue.url(report.run_url) if report.run_url else None,
            "mlflow_run_id": report.run_id,
        }
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


eval_assets = [eval_set, file_ranker, retrieval_eval, calibration]


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
    label, items = _resolve_sets(EvalRegistry(home.evals_dir), "", repo)
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
        eval_set=label, tracker=tracker, tags=_run_tags(context, repo),
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
