"""File localization on 12 repositories in 6 languages: the product vs strong baselines, held out by time.

For every repository of ``repos.json`` (name, language, URL, pinned commit):

1. questions: commit messages -> the non-test source files they changed, mined at the pinned commit
   with the product's miner (``questions.py``), the newest ``--per-repo`` kept, split by commit time
   into ``tune`` (older half) and ``heldout`` (newer half);
2. the product: the real ingestion job (``run_ingest``) on a clone at the pinned commit, into one
   temporary CODEX_HOME (every tracked code file, tests and examples included, as a user's would),
   then the served retriever in process (``systems.Product``);
3. the baselines on the same files: a strong whole-file BM25 and dense MiniLM over 60-line windows
   (``systems.py``);
4. every question asked of every system in turn (so load spikes hit all alike), each ranking scored
   (file R@1/5/10, MRR@10, nDCG@5, latency) and kept.

Output (``--out``, default ``benchmarks/localization/results/<label>``): ``rankings/<repo>.jsonl``
(per question: query, gold, split, each system's top-10 files, metrics and latency: diff two runs
query by query), ``summary.json`` and ``table.md`` (held-out split; the tune split is in the JSON).
The questions are also written to ``questions/<repo>.jsonl`` beside this file.

Get the repositories (once; each must contain its pinned commit)::

    mkdir -p ~/loc && cd ~/loc
    python - <<'EOF'
    import json, subprocess
    for r in json.load(open("PATH/TO/benchmarks/localization/repos.json"))["repos"]:
        subprocess.run(["git", "clone", "--quiet", r["url"], r["name"]], check=True)
    EOF

then ``.venv/bin/python benchmarks/localization/run.py --repos-dir ~/loc``. A directory may be a
work tree or a bare clone/mirror; its own checkout is never touched (the harness clones the
pinned commit into a temporary directory). Embeddings are cached in ``benchmarks/out/localization``
(keyed by content), so a rerun recomputes only what changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _setup import OUT_DIR  # noqa: E402  (first: sets up the environment)
from questions import Question, git, mine_questions  # noqa: E402
from report import aggregate, score, tables  # noqa: E402
from systems import Bm25File, DenseWindow, Product  # noqa: E402

WARMUP = 3
CACHE_DIR = OUT_DIR / "localization"


def load_repos(path: Path, only: list[str] | None) -> list[dict[str, Any]]:
    repos = json.loads(path.read_text())["repos"]
    for r in repos:
        missing = {"name", "language", "url", "commit"} - set(r)
        if missing:
            raise SystemExit(f"{path}: repository entry {r} lacks {sorted(missing)}")
    if only:
        unknown = set(only) - {r["name"] for r in repos}
        if unknown:
            raise SystemExit(f"--only names unknown repositories: {sorted(unknown)}")
        repos = [r for r in repos if r["name"] in only]
    return repos


def locate(repos_dir: Path, repo: dict[str, Any]) -> Path:
    path = (repos_dir / repo["name"]).resolve()
    if not path.exists():
        raise SystemExit(f"{path} does not exist: git clone {repo['url']} {repos_dir / repo['name']}")
    try:
        git(path, "cat-file", "-e", f"{repo['commit']}^{{commit}}")
    except SystemExit:
        raise SystemExit(
            f"{path} lacks the pinned commit {repo['commit']}: git -C {path} fetch origin {repo['commit']}"
        ) from None
    return path


@contextlib.contextmanager
def checkout(source: Path, commit: str, name: str, keep_in: Path | None = None):
    """A work tree of ``source`` at ``commit`` (named ``name``: the ingestion's repo name): throwaway,
    or kept under ``keep_in`` (``--home``) and reused when it is already at ``commit``."""
    with contextlib.ExitStack() as stack:
        parent = keep_in or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="localization-")))
        target = parent / name
        if target.exists() and git(target, "rev-parse", "HEAD").strip() != commit:
            shutil.rmtree(target)
        if not target.exists():
            subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(source), str(target)], check=True)
            subprocess.run(["git", "-C", str(target), "checkout", "--quiet", "--detach", commit], check=True)
        yield target


def published_commit(home: Path, name: str) -> str | None:
    from codex_core.home import CodexHome
    from codex_core.reader import open_index

    index = open_index(CodexHome(home))
    try:
        current = index.current(name)
        return current.commit if current else None
    finally:
        index.close()


def require_published(home: Path, repo: dict[str, Any]) -> None:
    """For the trial scripts, which re-ingest nothing: the repository must be published at its pin."""
    if published_commit(home, repo["name"]) != repo["commit"]:
        raise SystemExit(f"{repo['name']} is not published at {repo['commit']} in {home}: run run.py --home first")


def load_mined(name: str) -> list[Question]:
    """The questions ``run.py`` mined for ``name`` (history, tune and heldout), as kept in questions/."""
    return [Question(**json.loads(line)) for line in (HERE / "questions" / f"{name}.jsonl").read_text().splitlines()]


def sqlite_copy(source: Path, target: Path) -> None:
    """Consistent copy of a (possibly open, WAL-mode) sqlite database."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(str(source)), sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def ingest(worktree: Path, name: str, home: Path, cache_dir: Path) -> dict[str, Any]:
    """The real ingestion job into ``home``; the shared embedding cache seeds it and learns from it."""
    from codex_cli.main import run_ingest

    cache, shared = home / "embeddings" / "cache.sqlite", cache_dir / "embeddings.sqlite"
    if shared.exists() and not cache.exists():
        sqlite_copy(shared, cache)
    t0 = time.perf_counter()
    summary = run_ingest(str(worktree), name, show_progress=False)
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if not summary["success"]:
        raise SystemExit(f"ingestion of {name} failed: {summary['failures'] or summary['checks']}")
    sqlite_copy(cache, shared)
    return summary


@contextlib.contextmanager
def home_environment(home: Path):
    """CODEX_HOME (and the DAGSTER_HOME the CLI derives from it) set for the run, restored after."""
    saved = {k: os.environ.get(k) for k in ("CODEX_HOME", "DAGSTER_HOME")}
    os.environ["CODEX_HOME"] = str(home)
    os.environ.pop("DAGSTER_HOME", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ask_all(systems: list, questions: list[Question]) -> list[dict[str, Any]]:
    """Every system answers question i before any answers question i+1."""
    for q in questions[:WARMUP]:
        for system in systems:
            system.search(q.query)
    records = []
    for q in questions:
        entry: dict[str, Any] = {**q.to_dict(), "systems": {}}
        for system in systems:
            timed = system.ask(q.query)
            entry["systems"][system.name] = {"ranking": timed.ranking, "ms": round(timed.ms, 2),
                                             **score(timed.ranking, q.gold_files)}
        records.append(entry)
    return records


def train(reader, name: str, training: list[Question], home: Path, args, label: str) -> dict[str, Any]:
    """Fit the repository's learned ranker on ``training`` (questions older than every one it will be
    scored on) and publish it where serving reads it (``CodexHome.ranker_path``), or remove the
    published one when there is too little history; the report says what it was trained on."""
    from global_ranker import loro_ranker

    from codex_core.home import CodexHome
    from codex_core.ranker import train_ranker

    target = CodexHome(home).ranker_path(name)
    target.unlink(missing_ok=True)
    newest = max((q.time for q in training), default=0)
    t0 = time.perf_counter()
    ranker = train_ranker(reader.retriever, [(q.query, q.gold_files) for q in training], repo=name,
                          config=args.variants[args.ranker_base],
                          meta={"id": f"{name}-{label}", "newest_commit_time": newest})
    info = {"trained": ranker is not None, "offered": len(training), "newest_commit_time": newest,
            "seconds": round(time.perf_counter() - t0, 1)}
    if ranker is not None:
        info |= {"questions": ranker.meta["questions"], "coef": dict(zip(ranker.features, ranker.coef, strict=True))}
    else:
        # What serving does for a repository without its own ranker (RetrievalConfig.global_ranker), with
        # the general ranker fitted without this repository and on nothing as new as ``label``.
        ranker = loro_ranker(name, label)
        info["fallback"] = ranker.meta["id"] if ranker is not None else "hand-set (no results/global file)"
    if ranker is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        ranker.save(target)
    print(f"{name}: learned ranker ({label}) "
          f"{'trained on ' + str(info.get('questions')) if info['trained'] else 'not trained: ' + info['fallback']}"
          f" ({len(training)} offered)", file=sys.stderr)
    return info


def parse_variants(specs: list[str]) -> dict[str, Any]:
    """{label: RetrievalConfig}: the default config as "product", then each ``NAME=JSON`` override."""
    from codex_core.retrieval import RetrievalConfig

    base = RetrievalConfig(learned_ranker=False)
    variants = {"product": base}
    for spec in specs:
        label, sep, overrides = spec.partition("=")
        if not sep or label in variants or label in ("bm25-file", "dense-window"):
            raise SystemExit(f"--variant {spec!r}: want a new NAME=JSON")
        try:
            variants[label] = replace(base, **json.loads(overrides))
        except (ValueError, TypeError) as exc:
            raise SystemExit(f"--variant {spec!r}: {exc}") from None
    return variants


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def run_repo(repo: dict[str, Any], source: Path, home: Path, embedder, args) -> tuple[list[dict], dict]:
    from codex_core.files import scan_repository
    from codex_core.home import CodexHome
    from codex_core.reader import PublishedReader, open_index

    name, commit = repo["name"], repo["commit"]
    started = time.perf_counter()
    mined, skipped = mine_questions(source, name, commit, per_repo=args.per_repo, history=args.history)
    write_jsonl(args.questions_dir / f"{name}.jsonl", [q.to_dict() for q in mined])
    questions = [q for q in mined if q.split != "history"]
    history = sum(q.split == "history" for q in mined)
    print(f"{name}: {len(questions)} questions, {history} older ones to train on (skipped {sum(skipped.values())})",
          file=sys.stderr)
    info: dict[str, Any] = {"questions": len(questions), "history_questions": history, "skipped": skipped}
    if len(questions) < 2:
        info["error"] = "fewer than 2 usable questions"
        return [], info
    with checkout(source, commit, name, home.parent / "worktrees" if args.home else None) as worktree:
        files = scan_repository(worktree, commit).files
        info["files"] = len(files)
        if args.home and published_commit(home, name) == commit:
            print(f"{name}: already published at {commit[:12]} in {home}: not ingested again", file=sys.stderr)
        else:
            summary = ingest(worktree, name, home, args.cache_dir)
            info |= {"points": summary["points_published"], "embeddings_computed": summary["embeddings_computed"],
                     "ingest_seconds": summary["wall_seconds"]}
            print(f"{name}: ingested {len(files)} files, {summary['points_published']} chunks in "
                  f"{summary['wall_seconds']} s", file=sys.stderr)
        dense = DenseWindow(embedder, files, args.cache_dir / "windows")
        info |= {"windows": dense.windows, "window_embed_seconds": dense.embed_seconds}
        # No shipped fallback: it was fitted on this repository's older questions (train() publishes
        # the one fitted without it instead).
        reader = PublishedReader(CodexHome(home), open_index(CodexHome(home)), embedder, fallback_ranker=None)
        try:
            reader.refresh(force=True)
            products = [Product(reader, name, config, label) for label, config in args.variants.items()]
            baselines = [Bm25File(files), dense]
            if not args.learned:
                records = ask_all([*products, *baselines], questions)
            else:
                # "learned" answers each split with a ranker trained only on older questions: the tune
                # half with one fitted on the history before it (a validation the levers are chosen
                # on), the held-out half with one fitted on history + tune (the reported number).
                learned = Product(reader, name, replace(args.variants[args.ranker_base], learned_ranker=True),
                                  "learned")
                records = []
                info["ranker"] = {}
                for split, older in (("tune", {"history"}), ("heldout", {"history", "tune"})):
                    fit_on = [q for q in mined if q.split in older]
                    scored = [q for q in questions if q.split == split]
                    assert not fit_on or not scored or max(q.time for q in fit_on) <= min(q.time for q in scored)
                    info["ranker"][split] = train(reader, name, fit_on, home, args, split)
                    records += ask_all([*products, learned, *baselines], scored)
        finally:
            reader.close()
    for r in records:
        r |= {"repo": name, "language": repo["language"]}
    write_jsonl(args.out / "rankings" / f"{name}.jsonl", records)
    info["seconds"] = round(time.perf_counter() - started, 1)
    return records, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos-dir", type=Path, required=True, help="one clone per repository, named as in the list")
    parser.add_argument("--repos-file", type=Path, default=HERE / "repos.json")
    parser.add_argument("--only", help="comma-separated repository names")
    parser.add_argument("--per-repo", type=int, default=80, help="questions per repository (newest usable)")
    parser.add_argument("--label", default="current", help="results go to results/<label>")
    parser.add_argument("--out", type=Path, help="output directory (default results/<label> beside this file)")
    parser.add_argument("--questions-dir", type=Path, default=HERE / "questions")
    parser.add_argument("--history", type=int, default=300,
                        help="older questions (before the tune half) the learned ranker may also train on")
    parser.add_argument("--ranker-base", default="product",
                        help="the variant whose config the learned ranker re-orders (default: product)")
    parser.add_argument("--no-learned", dest="learned", action="store_false",
                        help="do not train and measure the learned ranker")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="embedding caches (keyed by content)")
    parser.add_argument(
        "--home", type=Path,
        help="keep the CODEX_HOME (DIR/home) and the work trees (DIR/worktrees) here and reuse a repository "
             "already published at its pinned commit (to re-measure a ranking change without re-ingesting)",
    )
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=JSON",
        help="also measure the product with these RetrievalConfig overrides, e.g. "
             "filelex='{\"file_lexical_weight\": 1.0}' (repeatable; 'product' is the default config)",
    )
    args = parser.parse_args(argv)
    args.out = args.out or HERE / "results" / args.label
    args.variants = parse_variants(args.variant)
    if args.ranker_base not in args.variants:
        raise SystemExit(f"--ranker-base {args.ranker_base!r} is not one of {sorted(args.variants)}")
    repos = load_repos(args.repos_file, args.only.split(",") if args.only else None)
    sources = {r["name"]: locate(args.repos_dir, r) for r in repos}

    import torch

    from codex_core.embedding import SentenceTransformerEmbedder, packaged_minilm_path

    torch.set_num_threads(1)  # as `feriactl serve` runs (OMP_NUM_THREADS=1): query latency like serving's
    embedder = SentenceTransformerEmbedder(packaged_minilm_path())  # the packaged MiniLM, never a hub name
    started = time.perf_counter()
    home = (args.home / "home").resolve() if args.home else Path(tempfile.mkdtemp(prefix="localization-home-"))
    home.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    infos: dict[str, Any] = {}
    try:
        with home_environment(home):
            for repo in repos:
                repo_records, infos[repo["name"]] = run_repo(repo, sources[repo["name"]], home, embedder, args)
                records += repo_records
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)

    result: dict[str, Any] = {
        "label": args.label, "product": "product", "baselines": ["bm25-file", "dense-window"],
        "variants": {label: asdict(config) for label, config in args.variants.items()}
        | ({"learned": asdict(replace(args.variants[args.ranker_base], learned_ranker=True))} if args.learned else {}),
        "repos": repos, "per_repo_info": infos, "per_repo_questions": args.per_repo,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    aggregate(result, records)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(result, indent=1))
    table = tables(result, "heldout")
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    held = result["splits"]["heldout"]
    if held.get("complete"):
        print(f"\nheld-out macro nDCG@5 ratio (product / stronger baseline): {held['ndcg5_ratio']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
