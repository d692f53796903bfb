"""Trial (not product code): does rewriting commit-message-style questions before retrieval help?

Paired comparison on the localization benchmark, in one process, on the same questions and the same
already-ingested CODEX_HOME (``--home DIR`` -> ``DIR/home``, nothing re-ingested, nothing published).
For every query variant ``V`` (``raw`` = the question unchanged) two systems:

* ``product`` / ``product[V]``  the hand-set order (no ranker) asked the rewritten question;
* ``learned`` / ``learned[V]``  the standard 16-feature learned ranker, *trained on rewritten
                                questions too* (``history`` -> scored on ``tune``, ``history`` +
                                ``tune`` -> scored on ``heldout``, the split logic of ``run.py``),
                                scored on the rewritten question.

``learned`` (raw queries) is the paired baseline. The lever is judged on tune; held-out is for the record.

Variants (pure functions of the question text; nothing fitted):

* ``clean``         drop conventional-commit type prefixes (``fix:``, ``feat(router):`` -> ``router``,
                    ``Fix:(issue_2135)``), merge-PR boilerplate, ``[skip ci]``, PR / issue refs
                    (``#123``, ``PR 2553``, ``issue_2135``) and version strings (``v1.2.3``);
* ``clean+idents``  ``clean`` plus every identifier-like token of the message repeated once at the
                    end (backticked spans, camelCase / snake_case / ``a::b`` / ``a.b`` / paths).

Training retrievals are cached per repository by query text (a rewrite that leaves a question
unchanged costs nothing; ``history`` is retrieved once for both fits): the retrieval is a pure
function of the text with the hand-set config and no ranker.

    .venv/bin/python benchmarks/localization/trial_query.py --repos-dir /work/locrepos --home /work/lochome2
    # or in two processes, then merge:
    ... --only gin,jsoup --part a ; ... --only serde,axios --part b ; ... --merge
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (sets up sys.path and the environment)
from report import aggregate, score  # noqa: E402
from systems import Product  # noqa: E402

import codex_core.ranker as ranker_mod  # noqa: E402

# ---------------------------------------------------------------- rewrites

TYPE_WORDS = frozenset(
    "feat feature fix fixes fixed bugfix hotfix chore chroe docs doc refactor refac refactoring perf test tests "
    "style build ci breaking revert wip cleanup release deps".split()
)
_PREFIX_RE = re.compile(
    r"^\s*(?P<type>[A-Za-z]+)\s*(?:\((?P<scope>[^)]*)\))?\s*!?\s*:\s*(?:\((?P<scope2>[^)]*)\)\s*)?"
)
_NOISE_RES = [
    re.compile(r"Merge pull request #\d+ from \S+", re.I),
    re.compile(r"Merge branch '[^']*'(?: of \S+)?(?: into \S+)?", re.I),
    re.compile(r"\[(?:skip ci|ci skip|skip-ci|no ci)\]", re.I),
    re.compile(r"\(#\d+\)"),
    re.compile(r"(?<![\w/])#\d+\b"),
    re.compile(r"\b(?:PR|pull request|issue)[ _#-]*\d+\b", re.I),
    re.compile(r"(?<![\w.])v?\d+\.\d+(?:\.\d+)*(?:[-+][\w.]+)?(?![\w.])"),
]
_SCOPE_NOISE_RE = re.compile(r"^(?:issue|pr|gh)[ _#-]*\d+$|^#?\d+$", re.I)


def clean(text: str) -> str:
    out = text
    m = _PREFIX_RE.match(out)
    if m and m.group("type").lower() in TYPE_WORDS:
        scopes = [s.strip() for s in (m.group("scope"), m.group("scope2")) if s and s.strip()]
        scopes = [s for s in scopes if not _SCOPE_NOISE_RE.match(s)]
        out = " ".join(scopes + [out[m.end():]])
    for rx in _NOISE_RES:
        out = rx.sub(" ", out)
    out = re.sub(r"\(\s*\)", " ", out)
    out = re.sub(r"\s+", " ", out).strip(" .:;|-")
    return out or text  # never ask an empty question


_BACKTICK_RE = re.compile(r"`([^`]+)`")
_TOKEN_RE = re.compile(r"[A-Za-z_][\w]*(?:(?:::|\.|/|->)[A-Za-z_][\w]*)*")


def identifiers(text: str) -> list[str]:
    found: list[str] = [s.strip() for s in _BACKTICK_RE.findall(text) if s.strip()]
    for tok in _TOKEN_RE.findall(text):
        if (
            "_" in tok.strip("_")
            or re.search(r"[a-z][A-Z]", tok)
            or re.search(r"[A-Z][a-z]+[A-Z]", tok)
            or any(sep in tok for sep in ("::", ".", "/", "->"))
        ):
            found.append(tok)
    seen, out = set(), []
    for tok in found:
        if tok not in seen:
            seen.add(tok)
            out.append(tok)
    return out


def clean_idents(text: str) -> str:
    base = clean(text)
    ids = identifiers(base)
    return f"{base} {' '.join(ids)}" if ids else base


REWRITES = {"raw": lambda s: s, "clean": clean, "clean+idents": clean_idents}


def system_names() -> list[str]:
    names = []
    for v in REWRITES:
        names += ["learned", "product"] if v == "raw" else [f"learned[{v}]", f"product[{v}]"]
    return names


# ---------------------------------------------------------------- systems


class TrainingCache:
    """train_ranker's retrieval loop, memoized by query text (same config, no ranker)."""

    def __init__(self, reader, name: str, base_cfg):
        self.retriever = reader.retriever_with_ranker(None)
        self.name, self.cfg = name, replace(base_cfg, learned_ranker=False, max_per_file=1)
        self.features: dict[str, Any] = {}
        self.retrievals = 0

    def fit(self, pairs: list[tuple[str, list[str]]], meta: dict[str, Any]):
        examples = []
        for query, gold in pairs:
            if query not in self.features:
                result = self.retriever.retrieve(query, repos=[self.name], top_k=10, config=self.cfg,
                                                 collect_file_features=True)
                self.features[query] = result.file_features
                self.retrievals += 1
            examples.append(ranker_mod.TrainingExample(self.features[query], frozenset(gold)))
        return ranker_mod.fit_ranker(examples, meta=meta)


def run_repo(repo: dict[str, Any], home: Path, embedder, out: Path) -> tuple[list[dict], dict]:
    from codex_core.home import CodexHome
    from codex_core.reader import PublishedReader, open_index
    from codex_core.retrieval import RetrievalConfig

    name = repo["name"]
    started = time.perf_counter()
    bench.require_published(home, repo)
    mined = bench.load_mined(name)
    questions = [q for q in mined if q.split != "history"]
    base_cfg = RetrievalConfig(learned_ranker=False)
    info: dict[str, Any] = {"questions": len(questions), "history_questions": len(mined) - len(questions),
                            "rewritten": {v: sum(fn(q.query) != q.query for q in mined) for v, fn in REWRITES.items()},
                            "ranker": {}}
    reader = PublishedReader(CodexHome(home), open_index(CodexHome(home)), embedder)
    records = []
    try:
        reader.refresh(force=True)
        cache = TrainingCache(reader, name, base_cfg)
        for split, older in (("tune", {"history"}), ("heldout", {"history", "tune"})):
            fit_on = [q for q in mined if q.split in older]
            scored = [q for q in questions if q.split == split]
            assert not fit_on or not scored or max(q.time for q in fit_on) <= min(q.time for q in scored)
            systems: list[tuple[str, Any, Any]] = []  # (variant, rewrite, system)
            info["ranker"][split] = {}
            for v, fn in REWRITES.items():
                suffix = "" if v == "raw" else f"[{v}]"
                fitted = cache.fit([(fn(q.query), q.gold_files) for q in fit_on],
                                   meta={"repo": name, "id": f"{name}-{v}"})
                info["ranker"][split][v] = (
                    {"trained": True, "questions": fitted.meta["questions"], "offered": len(fit_on),
                     "coef": dict(zip(fitted.features, fitted.coef, strict=True)), "intercept": fitted.intercept}
                    if fitted is not None else {"trained": False, "offered": len(fit_on)})
                systems.append((v, fn, Product(reader, name, base_cfg, f"product{suffix}",
                                               retriever=reader.retriever_with_ranker(None))))
                systems.append((v, fn, Product(reader, name, replace(base_cfg, learned_ranker=True), f"learned{suffix}",
                                               retriever=reader.retriever_with_ranker(fitted))))
            for q in scored[: bench.WARMUP]:
                for _, fn, s in systems:
                    s.search(fn(q.query))
            for q in scored:
                entry: dict[str, Any] = {**q.to_dict(), "repo": name, "language": repo["language"],
                                         "rewritten": {v: fn(q.query) for v, fn in REWRITES.items() if v != "raw"},
                                         "systems": {}}
                for _, fn, s in systems:
                    timed = s.ask(fn(q.query))
                    entry["systems"][s.name] = {"ranking": timed.ranking, "ms": round(timed.ms, 2),
                                                **score(timed.ranking, q.gold_files)}
                records.append(entry)
        info["training_retrievals"] = cache.retrievals
    finally:
        reader.close()
    bench.write_jsonl(out / "rankings" / f"{name}.jsonl", records)
    info["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{name}: {len(records)} questions, {info['training_retrievals']} training retrievals, "
          f"{info['seconds']} s", file=sys.stderr)
    return records, info


def summarize_run(out: Path, repos: list[dict], infos: dict, command: str, seconds: float) -> dict[str, Any]:
    records = []
    for repo in repos:
        records += [json.loads(line) for line in (out / "rankings" / f"{repo['name']}.jsonl").read_text().splitlines()]
    systems = system_names()
    result: dict[str, Any] = {
        "label": "query", "product": "learned", "baselines": ["product"],
        "variants": {s: {} for s in systems if s not in ("learned", "product")},
        "rewrites": {v: (REWRITES[v].__name__ if v != "raw" else "identity") for v in REWRITES},
        "repos": repos, "per_repo_info": infos, "command": command, "seconds": seconds,
    }
    aggregate(result, records)
    deltas: dict[str, Any] = {}
    for split in ("tune", "heldout"):
        per = result["splits"][split]["per_repo"]
        deltas[split] = {
            s: {r["name"]: {m: round(per[r["name"]][s][m] - per[r["name"]]["learned"][m], 4)
                            for m in ("ndcg@5", "recall@1")} for r in repos if per.get(r["name"])}
            for s in systems if s != "learned"
        }
    result["per_repo_delta_vs_learned"] = deltas
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    for split in ("tune", "heldout"):
        m = result["splits"][split]["macro"]
        print(f"[{split}]")
        for s in systems:
            print(f"  {s:24s} nDCG@5 {m[s]['ndcg@5']:.4f} ({m[s]['ndcg@5'] - m['learned']['ndcg@5']:+.4f})"
                  f"  R@1 {m[s]['recall@1']:.4f} ({m[s]['recall@1'] - m['learned']['recall@1']:+.4f})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos-dir", type=Path)
    parser.add_argument("--home", type=Path, help="as run.py --home: DIR/home holds the ingestion")
    parser.add_argument("--repos-file", type=Path, default=HERE / "repos.json")
    parser.add_argument("--only", help="comma-separated repository names")
    parser.add_argument("--part", help="write parts/PART.json instead of summary.json (merge later)")
    parser.add_argument("--merge", action="store_true", help="merge parts/*.json + rankings into summary.json")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "query")
    args = parser.parse_args(argv)
    if args.merge:
        repos = bench.load_repos(args.repos_file, None)
        parts = [json.loads(p.read_text()) for p in sorted((args.out / "parts").glob("*.json"))]
        infos = {k: v for p in parts for k, v in p["per_repo_info"].items()}
        summarize_run(args.out, [r for r in repos if r["name"] in infos], infos,
                      " && ".join(p["command"] for p in parts), max(p["seconds"] for p in parts))
        return 0
    if not (args.repos_dir and args.home):
        parser.error("--repos-dir and --home are required (unless --merge)")
    repos = bench.load_repos(args.repos_file, args.only.split(",") if args.only else None)
    for r in repos:
        bench.locate(args.repos_dir, r)

    import torch

    from codex_core.embedding import SentenceTransformerEmbedder, packaged_minilm_path

    torch.set_num_threads(1)
    embedder = SentenceTransformerEmbedder(packaged_minilm_path())
    home = (args.home / "home").resolve()
    started = time.perf_counter()
    infos = {}
    with bench.home_environment(home):
        for repo in repos:
            _, infos[repo["name"]] = run_repo(repo, home, embedder, args.out)
    seconds = round(time.perf_counter() - started, 1)
    command = " ".join(sys.argv)
    if args.part:
        (args.out / "parts").mkdir(parents=True, exist_ok=True)
        (args.out / "parts" / f"{args.part}.json").write_text(
            json.dumps({"per_repo_info": infos, "command": command, "seconds": seconds}, indent=1))
    else:
        summarize_run(args.out, repos, infos, command, seconds)
    print(f"wrote {args.out} in {seconds} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
