"""``feriactl``: the one command-line entry point for every Precision Codex operation.

Heavy imports (dagster, torch) happen inside the commands that need them, so ``feriactl --help``
is instant and ``feriactl query`` never loads the orchestrator.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from codex_cli.common import CliError, ensure_instance_dir, execute_job
from codex_cli.common import config_registry as _config_registry
from codex_cli.common import emit as _emit
from codex_cli.common import home as _home
from codex_cli.common import positive_int as _positive_int
from codex_core.git import GitError
from codex_core.home import CodexHome, validate_repo_name

STAGES = (
    "repo_snapshot", "code_files", "code_chunks", "unique_chunks", "chunk_embeddings", "code_graph",
    "staged_index", "published_index",
)

# ---------------------------------------------------------------- ingest


def _metadata_values(entry) -> dict[str, Any]:
    mat = entry.asset_materialization
    return {k: getattr(v, "value", v) for k, v in (mat.metadata if mat else {}).items()}


def run_ingest(source: str, name: str | None, *, show_progress: bool) -> dict[str, Any]:
    from codex_core.git import RepoRegistry, default_repo_name, is_url, open_or_clone

    home = _home()
    name = name or default_repo_name(source)
    validate_repo_name(name)
    if not is_url(source):
        open_or_clone(source, home.checkout_dir(name))  # fail fast: missing path, not a git repo
    ensure_instance_dir(home)
    RepoRegistry(home.registry_path).add(name, source)
    instance, run_id, result = execute_job("ingest", name, stages=len(STAGES), show_progress=show_progress)
    success = result.success
    return summarize_run(instance, run_id, name, success)


def summarize_run(instance, run_id: str, name: str, success: bool) -> dict[str, Any]:
    logs = instance.all_logs(run_id)
    metadata: dict[str, dict[str, Any]] = {}
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    checks: dict[str, bool] = {}
    failures: list[str] = []
    for entry in logs:
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind == "STEP_START":
            started[entry.step_key] = entry.timestamp
        elif kind == "STEP_SUCCESS" and entry.step_key in started:
            seconds[entry.step_key] = round(entry.timestamp - started[entry.step_key], 2)
        elif kind == "ASSET_MATERIALIZATION":
            metadata[entry.asset_materialization.asset_key.to_user_string()] = _metadata_values(entry)
        elif kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            checks[data.check_name] = bool(data.passed)
        elif kind == "STEP_FAILURE":
            err = event.event_specific_data.error
            failures.append(f"{entry.step_key}: {err.message.strip() if err else 'failed'}")
    files = metadata.get("code_files", {})
    dedup = metadata.get("unique_chunks", {})
    emb = metadata.get("chunk_embeddings", {})
    pub = metadata.get("published_index", {})
    return {
        "repo": name,
        "run_id": run_id,
        "success": success and all(checks.values()) and bool(pub),
        "commit": metadata.get("repo_snapshot", {}).get("commit"),
        "files_indexed": files.get("files_indexed"),
        "files_skipped": files.get("files_skipped"),
        "skipped_by_reason": files.get("skipped_by_reason", {}),
        "chunks": metadata.get("code_chunks", {}).get("chunks"),
        "unique_chunks": dedup.get("unique_chunks"),
        "duplicates_dropped": (dedup.get("exact_duplicates_dropped") or 0)
        + (dedup.get("near_duplicates_dropped") or 0),
        "embeddings_computed": emb.get("embeddings_computed"),
        "embeddings_cached": emb.get("embeddings_cached"),
        "graph_edges": metadata.get("code_graph", {}).get("edges"),
        "points_published": pub.get("points"),
        "index_version": pub.get("version"),
        "checks": checks,
        "seconds_per_stage": seconds,
        "failures": failures,
    }


def _format_ingest(s: dict[str, Any]) -> str:
    skipped = ", ".join(f"{k}={v}" for k, v in (s["skipped_by_reason"] or {}).items()) or "none"
    lines = [
        f"{'OK' if s['success'] else 'FAILED'}  {s['repo']} @ {(s['commit'] or '?')[:12]}  (run {s['run_id']})",
        f"  files        {s['files_indexed']} indexed, {s['files_skipped']} skipped ({skipped})",
        f"  chunks       {s['chunks']} -> {s['unique_chunks']} unique ({s['duplicates_dropped']} duplicates dropped)",
        f"  embeddings   {s['embeddings_computed']} computed, {s['embeddings_cached']} from cache",
        f"  graph        {s['graph_edges']} edges",
        f"  published    {s['points_published']} points (version {s['index_version']})",
        "  checks       " + (", ".join(f"{k}={'pass' if v else 'FAIL'}" for k, v in s["checks"].items()) or "-"),
        "  seconds      " + ", ".join(f"{k}={v}" for k, v in s["seconds_per_stage"].items()),
    ]
    lines += [f"  error        {f}" for f in s["failures"]]
    return "\n".join(lines)


def cmd_ingest(args: argparse.Namespace) -> int:
    summary = run_ingest(args.source, args.name, show_progress=not args.json and sys.stderr.isatty())
    _emit(args, summary, _format_ingest(summary))
    return 0 if summary["success"] else 1


# ---------------------------------------------------------------- status


def collect_status() -> dict[str, Any]:
    from codex_core.git import RepoRegistry
    from codex_core.published import read_published

    home = _home()
    repos = {}
    for name, entry in RepoRegistry(home.registry_path).all().items():
        info = read_published(home, name)
        repos[name] = {
            "source": entry.source,
            "indexed_commit": info["commit"] if info else None,
            "points": info["points"] if info else 0,
            "index_version": info["version"] if info else None,
            "published_at": info["published_at"] if info else None,
        }
    last_run = None
    if (home.dagster_home / "dagster.yaml").exists() and repos:
        import dagster as dg

        instance = dg.DagsterInstance.get()
        records = instance.get_run_records(dg.RunsFilter(job_name="ingest"), limit=1)
        if records:
            run = records[0].dagster_run
            last_run = {
                "run_id": run.run_id,
                "status": run.status.value,
                "repo": run.tags.get("dagster/partition"),
                "finished_at": records[0].end_time,
            }
    return {"codex_home": str(home.root), "repos": repos, "last_run": last_run}


def cmd_status(args: argparse.Namespace) -> int:
    status = collect_status()
    lines = [f"CODEX_HOME {status['codex_home']}"]
    if not status["repos"]:
        lines.append("no repositories yet: feriactl ingest PATH_OR_URL")
    for name, r in status["repos"].items():
        commit = (r["indexed_commit"] or "not indexed")[:12]
        lines.append(f"  {name:<24} {commit:<12} {r['points']:>8} points  {r['source']}")
    if status["last_run"]:
        lr = status["last_run"]
        lines.append(f"last run {lr['run_id']} {lr['status']} ({lr['repo']})")
    _emit(args, status, "\n".join(lines))
    return 0


# ---------------------------------------------------------------- eval


def _eval_summary(home: CodexHome, repo: str) -> dict[str, Any]:
    from codex_core import catalog
    from codex_core.calibration import CalibratorStore

    last = home.eval_results_dir(repo) / "last_eval.json"
    if not last.exists():
        raise CliError(f"no evaluation of {repo!r} yet: feriactl eval run --repo {repo}")
    summary = catalog.read_json(last)
    current = CalibratorStore(home.calibration_dir(repo)).current()
    if current is not None:
        calibrator = json.loads(current.path.read_text())
        summary["calibration"] = {
            "version": current.version, "tau": current.tau, "method": calibrator.get("method"),
            "cv_metrics": calibrator.get("cv_metrics"),
        }
    summary["ranker"] = _ranker_summary(home, repo)
    summary["repo"] = repo
    return summary


def _ranker_summary(home: CodexHome, repo: str) -> dict[str, Any]:
    """The learned file ranker serving follows for ``repo`` and what the last ``file_ranker`` run decided."""
    from codex_core.ranker_selection import last_selection, published_ranker

    ranker = published_ranker(home, repo)
    last = last_selection(home, repo)
    return {
        "published": dict(ranker.meta) if ranker else None,
        "last": {k: v for k, v in last.items() if k not in ("train_items", "judge_items")} if last else None,
        "without_own": _fallback_order(home),
    }


def _fallback_order(home: CodexHome) -> dict[str, Any]:
    """What orders a repository's files while it has no ranker of its own, under the served config."""
    from codex_core.configs import ConfigStore
    from codex_core.ranker import shipped_ranker

    store = ConfigStore(home.configs_dir)
    try:
        served, config = store.served_retrieval()
    except (KeyError, ValueError) as exc:
        return {"served_config": store.served(), "order": "unknown", "why": f"the served config is unreadable: {exc}"}
    general = shipped_ranker() if config.general_ranker_serves else None
    if general is not None:
        return {"served_config": served or "default", "order": f"learned:{general.meta.get('id', '?')}",
                "why": "the shipped general ranker"}
    why = ("the served config sets learned_ranker false" if not config.learned_ranker else
           "the served config sets global_ranker false" if not config.global_ranker else
           "the shipped general ranker is missing or unreadable")
    return {"served_config": served or "default", "order": "hand-set", "why": why}


def _format_eval(s: dict[str, Any]) -> str:
    m = s["metrics"]
    keys = ["queries", "file_recall_at_1", "file_recall_at_5", "file_recall_at_10", "file_mrr_at_10",
            "file_ndcg_at_5", "symbol_ndcg_at_5", "latency_p95_ms"]
    lines = [f"{s['repo']} @ {s['index_commit'][:12]}  set {s['eval_set']}  ({s.get('finished_at', '')})"]
    lines += [f"  {k:<20} {m[k]:.3f}" if isinstance(m.get(k), float) else f"  {k:<20} {m.get(k, '-')}" for k in keys]
    lines.append("  ablations (file nDCG@5): " + ", ".join(
        f"{name}={row.get('file_ndcg_at_5', float('nan')):.3f}" for name, row in s["ablations"].items()))
    lines.append("  lexical-overlap split (file nDCG@5): " + ", ".join(
        f"{name.split(' / ')[-1]}={row.get('file_ndcg_at_5', float('nan')):.3f} (n={int(row.get('queries', 0))})"
        for name, row in s["split"].items()))
    if s.get("style_split"):
        lines.append("  question-style split (file nDCG@5): " + ", ".join(
            f"{name.split(' / ')[-1]}={row.get('file_ndcg_at_5', float('nan')):.3f} (n={int(row.get('queries', 0))})"
            for name, row in s["style_split"].items()))
    if "calibration" in s:
        c = s["calibration"]
        lines.append(f"  calibration v{c['version']} {c['method']}  tau={c['tau']:.3f}")
        for style, row in ((c.get("cv_metrics") or {}).get("holdout") or {}).items():
            cells = [f"{key}={row[key]:.3f}" for key in ("ece", "precision_at_70_coverage", "coverage_at_092_precision",
                                                          "coverage_at_tau") if isinstance(row.get(key), float)]
            lines.append(f"    held-out {style} (n={row.get('n', 0)}): " + " ".join(cells))
    lines += _format_ranker(s.get("ranker") or {})
    if s.get("mlflow_url"):
        lines.append(f"  MLflow: {s['mlflow_url']}")
    return "\n".join(lines)


def _format_ranker(r: dict[str, Any]) -> list[str]:
    published, last = r.get("published"), r.get("last")
    if published:
        ci = published.get("delta_ndcg_ci95") or [float("nan")] * 2
        line = (f"  file ranker: learned:{published.get('id', '?')} (trained on {published.get('trained_on', '?')} "
                f"questions up to {published.get('newest_training_commit', '?')}, judged on "
                f"{published.get('judged_on', '?')}: ΔnDCG@5 {published.get('delta_ndcg_at_5', float('nan')):+.3f}, "
                f"95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}])")
    else:
        fallback = r.get("without_own") or {}
        line = (f"  file ranker: none of its own published: {fallback.get('order', '?')} orders its files "
                f"({fallback.get('why', '?')}; served config {fallback.get('served_config', '?')})")
    lines = [line]
    if last:
        lines.append(f"    last file_ranker run {last.get('finished_at', '')}: {last['outcome']}"
                     + (f" ({'; '.join(last['reasons'])})" if last.get("reasons") else ""))
    return lines


def cmd_eval_run(args: argparse.Namespace) -> int:
    home = _home()
    validate_repo_name(args.repo)
    ensure_instance_dir(home)
    run_config: dict[str, Any] = {"ops": {"retrieval_eval": {"config": {"eval_set": args.set or ""}}}}
    if args.max_items is not None:
        run_config["ops"]["eval_set"] = {"config": {"max_items": args.max_items}}
    instance, run_id, result = execute_job(
        "evaluate", args.repo, stages=5, show_progress=not args.json and sys.stderr.isatty(), run_config=run_config
    )
    success = result.success
    if not success:
        failures = summarize_run(instance, run_id, args.repo, success)["failures"]
        raise CliError(f"evaluation run {run_id} failed: " + "; ".join(failures))
    summary = _eval_summary(home, args.repo) | {"run_id": run_id}
    _emit(args, summary, _format_eval(summary))
    return 0


def cmd_eval_report(args: argparse.Namespace) -> int:
    from codex_core.git import RepoRegistry

    home = _home()
    repos = [args.repo] if args.repo else sorted(RepoRegistry(home.registry_path).all())
    reports = [_eval_summary(home, r) for r in repos if (home.eval_results_dir(r) / "last_eval.json").exists()]
    if not reports:
        raise CliError("no evaluation yet: feriactl eval run --repo NAME")
    _emit(args, reports if len(reports) > 1 else reports[0], "\n\n".join(_format_eval(r) for r in reports))
    return 0


def cmd_eval_import(args: argparse.Namespace) -> int:
    from codex_core.evalsets import EvalRegistry

    home = _home()
    validate_repo_name(args.repo)
    name = args.name or f"{args.repo}-hand"
    evalset = EvalRegistry(home.evals_dir).import_jsonl(Path(args.file), name, args.repo)
    data = {"eval_set": f"{evalset.name}@{evalset.version}", "items": len(evalset.items), "repo": args.repo}
    _emit(args, data, f"imported {data['items']} items as {data['eval_set']} "
                      f"(run it: feriactl eval run --repo {args.repo} --set {data['eval_set']})")
    return 0


# ---------------------------------------------------------------- configs


def cmd_config_register(args: argparse.Namespace) -> int:
    from codex_core.configs import AnswerConfig

    home = _home()
    try:
        data = json.loads(Path(args.file).read_text())
        config = AnswerConfig.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise CliError(f"cannot read config {args.file}: {exc}") from exc
    registered = _config_registry(home).register(config, alias=args.alias)
    data = {"config_id": registered.config_id, "version": registered.version, "alias": args.alias}
    _emit(args, data, f"config {registered.config_id} is version {registered.version}"
                      + (f" ({args.alias})" if args.alias else ""))
    return 0


def cmd_config_list(args: argparse.Namespace) -> int:
    from codex_core.config_registry import CHALLENGER, CHAMPION
    from codex_core.configs import ConfigStore

    home = _home()
    registry = _config_registry(home)
    aliases = {alias: registry.by_alias(alias) for alias in (CHAMPION, CHALLENGER)}
    configs = {
        cid: {"aliases": [a for a, r in aliases.items() if r and r.config_id == cid], **cfg.to_dict()}
        for cid, cfg in ConfigStore(home.configs_dir).list().items()
    }
    human = "\n".join(f"{cid}  {' '.join(c['aliases']) or '-':<20} {c['description']}" for cid, c in configs.items())
    _emit(args, configs, human or "no configs yet: feriactl config register FILE.json --alias challenger")
    return 0


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feriactl", description="Precision Codex control tool")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest a git repository (path or clone URL) and publish its index")
    p.add_argument("source", help="path to a git work tree, or a clone URL")
    p.add_argument("--name", help="repository name (default: derived from the path/URL)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("status", help="repositories known, indexed commit, point counts, last run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("serve", help="serve the query API (FastAPI) on HOST:PORT")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("query", help="ask a question in-process (same result as POST /v1/query)")
    p.add_argument("question")
    p.add_argument("--repo", help="restrict to one repository")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--stream", action="store_true",
                   help="print the answer as the model writes it, then the checked citations "
                        "(with --json: one JSON object per event)")
    p.set_defaults(func=cmd_query)

    ev = sub.add_parser("eval", help="evaluate retrieval on the repo's own history; calibrate confidence")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)
    p = ev_sub.add_parser("run", help="mine/refresh the eval set, train and judge the file ranker, evaluate with "
                                      "ablations, calibrate (MLflow runs)")
    p.add_argument("--repo", required=True)
    p.add_argument("--set", help="NAME@VERSION of an eval set (default: newest mined set of the repo)")
    p.add_argument("--max-items", type=_positive_int, metavar="N",
                   help="mine at most the newest N questions (default: the eval_set asset's default)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_run)
    p = ev_sub.add_parser("report", help="metrics of the last evaluation, the calibrator and the learned file ranker")
    p.add_argument("--last", action="store_true", help="the most recent evaluation (the default)")
    p.add_argument("--repo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_report)
    p = ev_sub.add_parser("import", help="add a hand-written eval set (JSONL: query, gold_files, gold_symbols?)")
    p.add_argument("file")
    p.add_argument("--repo", required=True)
    p.add_argument("--name", help="set name (default: REPO-hand)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_import)

    cfg = sub.add_parser("config", help="versioned retrieval/answer configs (MLflow registry aliases)")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    p = cfg_sub.add_parser("register", help="register a config JSON (AnswerConfig fields) as a new version")
    p.add_argument("file")
    p.add_argument("--alias", choices=["champion", "challenger"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config_register)
    p = cfg_sub.add_parser("list", help="configs with their aliases")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config_list)

    from codex_cli.snapshot_cmds import register as register_snapshot_commands

    register_snapshot_commands(sub)

    from codex_cli import serving_cmds

    serving_cmds.register(sub)

    from codex_cli import secrets_cmds

    secrets_cmds.register(sub)

    from codex_cli import agent_cmds

    agent_cmds.register(sub)

    from codex_cli import llm_cmds

    llm_cmds.register(sub)

    from codex_cli import mcp_cmds

    mcp_cmds.register(sub)

    p = sub.add_parser("worker", help="keep local repositories fresh: re-index within seconds of a commit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between HEAD checks (default 1)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("up", help="start the query endpoint, the Dagster and MLflow UIs and the freshness worker")
    p.add_argument("--profile", choices=["default", "scale"], default="default",
                   help="default: dagster dev, sqlite, one query process; scale: PostgreSQL, Dagster webserver + "
                        "daemon (run queue), an MLflow server, N query replicas behind one URL (docs/scaling.md)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="query endpoint port (scale: the front over the replicas)")
    p.add_argument("--dagster-port", type=int, default=3000)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--no-worker", action="store_true",
                   help="leave freshness to git_head_sensor alone (30 s ticks, a fresh process per run)")
    p.add_argument("--replicas", type=_positive_int, metavar="N", help="scale: query replicas (default 2)")
    p.add_argument("--replica-port", type=int, metavar="PORT",
                   help="scale: the first replica's port, the others follow (default: --port + 1)")
    p.add_argument("--pg-port", type=int, default=5433, metavar="PORT", help="scale: PostgreSQL's port (default 5433)")
    p.set_defaults(func=cmd_up)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    # One query embedding at a time per request: with 2 OpenMP threads the idle spinners slow the
    # dense search that follows (measured: embed P95 ~110 ms -> 17 ms; docs/benchmarks.md).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from serving.app import create_app

    _home()
    # The app writes one JSON access line per request; uvicorn's plain-text one would duplicate it.
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from serving.engine import QueryEngine, UnknownRepo

    # argv arrives surrogate-escaped when the terminal sends invalid UTF-8: make it valid text first.
    question = args.question.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    engine = QueryEngine(_home())
    printer = _StreamPrinter(as_json=args.json) if args.stream else None
    try:
        result = engine.query(question, repo=args.repo, top_k=args.top_k, on_event=printer)
    except UnknownRepo as exc:
        raise CliError(str(exc)) from exc
    finally:
        engine.close()
    if printer is not None:
        printer.finish(result)
    else:
        _emit(args, result.model_dump(), result.to_text())
    return 0


class _StreamPrinter:
    """``feriactl query --stream``: the model's text as it arrives, then what the citation check kept.

    Events and the final answer have the shapes of ``POST /v1/query`` with ``stream: true``
    (``token`` / ``restart`` / ``final``); with ``--json`` each is one line of JSON.
    """

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.shown = ""

    def __call__(self, event) -> None:
        from codex_core.llm import AnswerDelta

        if isinstance(event, AnswerDelta):
            self.shown += event.text
            self._write({"event": "token", "text": event.text}, event.text)
        else:
            self.shown = ""
            self._write({"event": "restart", "reason": event.reason}, f"\n[{event.reason}: starting over]\n")

    def _write(self, data: dict[str, Any], human: str) -> None:
        sys.stdout.write(json.dumps(data) + "\n" if self.as_json else human)
        sys.stdout.flush()

    def finish(self, result) -> None:
        if self.as_json:
            print(json.dumps({"event": "final", **result.model_dump(mode="json")}), flush=True)
        elif not self.shown:
            print(result.to_text())  # an extractive answer or an abstention: nothing was streamed
        else:
            if self.shown.strip() != result.answer.strip():
                print("\n\nThe citation check changed the answer; as checked:\n" + result.answer, end="")
            print("\n" + result.to_text(with_answer=False))


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    import dagster as dg

    from codex_worker import FreshnessWorker

    if args.interval <= 0:
        raise CliError(f"--interval must be positive, got {args.interval}")
    home = _home()
    ensure_instance_dir(home)
    os.environ.setdefault("DAGSTER_HOME", str(home.dagster_home))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker = FreshnessWorker(home, dg.DagsterInstance.get(), interval_s=args.interval)
    print(f"freshness worker: checking local repositories every {args.interval:g} s (Ctrl-C stops)", flush=True)
    # Runs execute off the main thread, so Dagster installs no interrupt handler of its own: a
    # stop request lets the current run finish (the graph included) instead of failing it.
    loop = threading.Thread(target=worker.run_forever, args=(stop,), name="freshness-worker")
    loop.start()
    while loop.is_alive():
        loop.join(0.5)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from codex_cli.processes import run_services

    if args.profile == "scale":
        return _up_scale(args)
    scale_only = [flag for flag, value in (("--replicas", args.replicas), ("--replica-port", args.replica_port))
                  if value is not None]
    if scale_only:
        raise CliError(f"{' and '.join(scale_only)}: only with --profile scale (the default profile runs one query "
                       "process)")
    home = _home()
    ensure_instance_dir(home)
    return run_services(
        home, host=args.host, api_port=args.port, dagster_port=args.dagster_port, mlflow_port=args.mlflow_port,
        worker=not args.no_worker,
    )


def _up_scale(args: argparse.Namespace) -> int:
    from codex_cli.scale_profile import ScalePorts, run_scale_profile

    # --no-worker changes nothing here: the scale profile has no freshness worker (git_head_sensor queues runs).
    replicas = args.replicas or 2
    ports = ScalePorts(front=args.port, replica_base=args.replica_port or args.port + 1, replicas=replicas,
                       dagster=args.dagster_port, mlflow=args.mlflow_port, postgres=args.pg_port)
    return run_scale_profile(_home(), host=args.host, ports=ports)


def _restore_default_sigterm() -> None:
    """A parent that ignores SIGTERM (some job runners and shell wrappers) hands that on to every
    child. Dagster stops the ``tail`` processes that mirror a step's compute logs with SIGTERM;
    ignoring it, they would outlive this command and hold its stdout open, so a reader of
    ``feriactl ... | cat`` would never see the end. Subcommands that handle SIGTERM install
    their own handler later."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    _restore_default_sigterm()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, GitError, ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"feriactl: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
