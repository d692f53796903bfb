"""Is the served confidence calibrated on hand-written questions? (the answer sets, no model).

Each repository's calibrator is fitted on its own eval set (mined commit messages and questions
generated from its symbols, ``codex_assets.evaluation.calibration``) and predicts P(the top-1 cited
file is right); serving abstains below its tau. This probe asks every hand-written question of the
answer benchmark through the served engine with the extractive answerer (retrieval, confidence and
abstention exactly as served; no model call), labels each with what the calibrator predicts — the
top-1 cited file is a gold file — and reports per repository and pooled: the top-1 precision, the
mean confidence, ECE, AUC, abstentions, abstention precision (abstained where the top file was
wrong) and the precision of what was answered.

Beside the published calibrator it scores variants refitted from each repository's own stored eval
features (``eval/calibration_features.parquet``, the same fit-side split as the published one):

- ``heuristic``: the uncalibrated confidence with the engine's default threshold;
- ``refit``: the published recipe refitted here (all features, the same split, unweighted): equal
  to ``published`` when the published calibrator came from the same code and eval set (a check). At
  598c118 this variant was ``no-citations`` (every feature but the citation count, which schema 3
  then dropped): ``results/confidence-schema2/``;
- ``no-style``: every feature but ``query_length`` and ``question_like`` (the two that say how a
  query is phrased rather than how clearly retrieval found it);
- ``plain-only``: fitted on the eval set's generated questions alone (the style closest to a
  developer's question), its tau chosen the same way;
- ``mined-only``: fitted on the mined commit messages alone (the ablation the calibration asset
  reports beside the published calibrator).

    .venv/bin/python benchmarks/answer/probe_calibration.py --home DIR --out DIR \\
        --questions benchmarks/answer/questions*.jsonl

Writes ``raw.jsonl`` (one row per question: confidence per variant, label, features) and
``report.md``; prints the report. ``--calibrators DIR`` (``<repo>.json`` calibrator files, e.g. the
schema-2 ones kept in ``results/confidence-schema2/calibrators/``) adds, per repository, the feature
whose served values sit furthest from what its calibrator was fitted on: the mean served value in
the calibrator's own standard deviations (the train/serve skew that broke schema 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from probe_logprobs import auc  # noqa: E402

STYLE_FEATURES = ("query_length", "question_like")


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]


def top_file_right(citations: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]]) -> bool:
    """What the calibrator predicts: the first cited file is one of the gold files."""
    return bool(citations) and citations[0]["path"] in {g["path"] for g in gold}


def refit_variants(results_dir: Path) -> dict[str, Any]:
    """Calibrators refitted from a repository's stored eval features, on the fit side of the
    published one's split (``holdout_mask``), unweighted as a repository with no served queries is."""
    import pandas as pd

    from codex_core.calibration.features import FEATURES, choose_threshold
    from codex_core.calibration.fit import fit_calibrator
    from codex_core.calibration.styles import holdout_mask
    from codex_core.eval_report import CALIBRATION_FEATURES, _feature_matrix

    frame = pd.read_parquet(results_dir / CALIBRATION_FEATURES)
    X = _feature_matrix(frame)
    y = frame["label"].to_numpy(dtype=int)
    styles = frame["style"].astype(str).to_numpy()
    fit = ~holdout_mask(frame["id"].astype(str).tolist(), styles.tolist())
    keep = [i for i, name in enumerate(FEATURES) if name not in STYLE_FEATURES]
    every = list(range(len(FEATURES)))
    out: dict[str, Any] = {}
    for name, rows, cols in (("refit", fit, every), ("no-style", fit, keep),
                             ("plain-only", fit & (styles == "plain"), every),
                             ("mined-only", fit & (styles == "mined"), every)):
        if rows.sum() < 10:
            continue
        calibrator = fit_calibrator(X[rows][:, cols], y[rows], feature_names=[FEATURES[i] for i in cols])
        probs = calibrator.cv_predictions
        if probs is None:
            probs = calibrator.predict(X[rows][:, cols])
        calibrator.tau = float(choose_threshold(np.asarray(probs, dtype=float), y[rows])[0])
        out[name] = calibrator
    return out


def ask_all(home: Path, questions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    from answer_bench import build_answerers, copy_home

    from codex_core.calibration.features import feature_vector
    from codex_core.home import CodexHome
    from codex_core.retrieval import heuristic_confidence
    from codex_core.settings import Settings
    from serving.engine import QueryEngine

    rows = []
    with tempfile.TemporaryDirectory(prefix="probe-calibration-") as scratch:
        copied = copy_home(home, Path(scratch))
        settings = Settings.from_env({**os.environ, "CODEX_SEMANTIC_CACHE": "off"})
        answerer = build_answerers(["extractive"], "http://127.0.0.1:9", 1.0, None, None)["extractive"][0]
        codex = CodexHome(copied)
        engine = QueryEngine(codex, answerer=answerer, settings=settings)
        variants: dict[str, dict[str, Any]] = {}
        try:
            for q in questions:
                if q["repo"] not in variants:
                    variants[q["repo"]] = refit_variants(codex.eval_results_dir(q["repo"]))
                answer = engine.query(q["question"], repo=q["repo"])
                trace = engine.trace(answer.trace_id) or {}
                features = trace.get("features") or {}
                conf = {"published": (answer.confidence, trace.get("abstain_below"), answer.confidence_kind),
                        "heuristic": (heuristic_confidence(features), engine.abstain_below, "heuristic")}
                for name, calibrator in variants[q["repo"]].items():
                    x = feature_vector(features, q["question"], calibrator.feature_names).reshape(1, -1)
                    conf[name] = (float(calibrator.predict(x)[0]), calibrator.tau, "refit")
                citations = [c.model_dump() for c in answer.citations]
                rows.append({
                    "id": q["id"], "repo": q["repo"], "kind": q["kind"],
                    "label": top_file_right(citations, q["gold"]),
                    "top_file": citations[0]["path"] if citations else None,
                    "confidence": {k: round(float(v[0]), 4) for k, v in conf.items()},
                    "tau": {k: None if v[1] is None else round(float(v[1]), 4) for k, v in conf.items()},
                    "confidence_kind": answer.confidence_kind,
                    "features": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in features.items()},
                })
        finally:
            engine.close()
    return rows


def metrics(rows: Sequence[Mapping[str, Any]], variant: str) -> dict[str, Any]:
    from codex_core.calibration.features import expected_calibration_error

    y = np.array([int(r["label"]) for r in rows])
    p = np.array([r["confidence"][variant] for r in rows], dtype=float)
    tau = np.array([r["tau"][variant] for r in rows], dtype=float)
    abstained = p < tau
    answered = ~abstained
    return {
        "n": len(rows), "top1_right": int(y.sum()), "mean_confidence": round(float(p.mean()), 3),
        "ece": round(float(expected_calibration_error(p, y)), 3),
        "auc": None if len(set(y.tolist())) < 2 else round(float(auc(list(zip(p.tolist(), (y == 1).tolist(),
                                                                                   strict=True)))), 3),
        "abstained": int(abstained.sum()),
        "abstained_wrong_top": int((abstained & (y == 0)).sum()),
        "abstention_precision": None if not abstained.any() else round(float((y[abstained] == 0).mean()), 3),
        "answered_precision": None if not answered.any() else round(float(y[answered].mean()), 3),
    }


def report(rows: Sequence[Mapping[str, Any]], groups: Mapping[str, Sequence[str]]) -> list[str]:
    variants = list(rows[0]["confidence"]) if rows else []
    lines = ["| questions | confidence | n | top-1 right | mean confidence | ECE | AUC | abstained "
             "(top file wrong) | abstention precision | precision answered |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, repos in groups.items():
        subset = [r for r in rows if r["repo"] in repos]
        if not subset:
            continue
        for variant in variants:
            if any(variant not in r["confidence"] for r in subset):
                continue
            m = metrics(subset, variant)
            lines.append(f"| {label} | {variant} | {m['n']} | {m['top1_right']} | {m['mean_confidence']} | {m['ece']} "
                         f"| {m['auc']} | {m['abstained']} ({m['abstained_wrong_top']}) | {m['abstention_precision']} "
                         f"| {m['answered_precision']} |")
    return lines


def feature_shift(rows: Sequence[Mapping[str, Any]], calibrators: Path) -> list[str]:
    """Per repository: each feature the calibrator reads, its mean served value (from ``rows``) in the
    calibrator's standardization, ``(mean - fitted mean) / fitted std``; the largest |z| is reported."""
    from codex_core.calibration.features import feature_vector

    lines = ["| repository | feature furthest from its fit | fitted mean ± std | served mean | z |",
             "|---|---|---:|---:|---:|"]
    for repo in sorted({r["repo"] for r in rows}):
        path = calibrators / f"{repo}.json"
        if not path.exists():
            continue
        fitted = json.loads(path.read_text())
        names, means, stds = fitted["feature_names"], np.array(fitted["means"]), np.array(fitted["stds"])
        # query_length / question_like come from the query, which raw.jsonl does not keep: skip them.
        X = np.stack([feature_vector(r["features"], "", names) for r in rows if r["repo"] == repo])
        z = np.where(stds > 0, (X.mean(axis=0) - means) / np.where(stds > 0, stds, 1.0), 0.0)
        z[[i for i, n in enumerate(names) if n in STYLE_FEATURES]] = 0.0
        worst = int(np.argmax(np.abs(z)))
        lines.append(f"| {repo} | {names[worst]} | {means[worst]:.2f} ± {stds[worst]:.2f} | {X[:, worst].mean():.2f} "
                     f"| {z[worst]:+.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True,
                        help="CODEX_HOME with the repositories ingested and evaluated")
    parser.add_argument("--questions", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--calibrators", type=Path, help="<repo>.json calibrators: report the served feature shift")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "raw.jsonl"
    questions = load(args.questions)
    if not args.report_only:
        repos = set(json.loads((args.home / "repos.json").read_text()))
        rows = ask_all(args.home, [q for q in questions if q["repo"] in repos])
        raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    by_file: dict[str, list[str]] = {}
    for path in args.questions:
        by_file[path.stem] = sorted({q["repo"] for q in load([path])})
    groups = {"all": sorted({r["repo"] for r in rows}), **by_file,
              **{repo: [repo] for repo in sorted({r["repo"] for r in rows})}}
    lines = report(rows, groups)
    if args.calibrators:
        lines += ["", "Served features against the calibrators' fit:", "", *feature_shift(rows, args.calibrators)]
    (args.out / "report.md").write_text("# Confidence on hand-written questions\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
