"""benchmarks/localization/run.py end to end on two small repositories with real git histories (one
Python, one Go): questions mined from commit messages, split by time, every system ranked on the same
files, raw rankings and tables written. This checks that the harness works, not the product's quality."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.history import HistoryBuilder

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "localization"


def _run_module():
    for path in (BENCH, BENCH.parent):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import run

    return run


def _python_repo(root: Path) -> tuple[str, dict[str, list[str]]]:
    b = HistoryBuilder(root / "pyproj")
    b.write("app/__init__.py", "")
    b.write("app/parser.py", "def parse_line(line):\n    key, _, value = line.partition('=')\n    return key, value\n")
    b.write("app/net.py", "def fetch(url, session):\n    return session.get(url)\n")
    b.write("app/report.py", "def weekly_report(rows):\n    return '\\n'.join(str(r) for r in rows)\n")
    b.write("tests/test_parser.py",
            "from app.parser import parse_line\n\ndef test_parse():\n    assert parse_line('a=b')\n")
    b.commit("Initial import of the configuration parser and network helpers")
    gold: dict[str, list[str]] = {}
    steps = [
        ("app/parser.py", "    key, _, value = line.partition('=')\n",
         "    key, _, value = line.partition('=')\n    key = key.strip().lower()\n",
         "Normalize configuration keys to lower case before storing them"),
        ("app/net.py", "    return session.get(url)\n",
         "    response = session.get(url, timeout=30)\n    response.raise_for_status()\n    return response\n",
         "Raise on HTTP error responses and bound every request with a timeout"),
        ("app/report.py", "def weekly_report(rows):\n",
         "def weekly_report(rows):\n    rows = sorted(rows, key=lambda row: row['date'])\n",
         "Sort the weekly report rows chronologically by their date column"),
        ("app/parser.py", "    return key, value\n",
         "    value = value.strip().strip('\"')\n    return key, value\n",
         "Strip surrounding quotes from configuration values when parsing a line"),
        ("app/net.py", "    response.raise_for_status()\n",
         "    response.raise_for_status()\n    retries_remaining = getattr(session, 'retries', 3)\n",
         "Expose the remaining retry budget of the session to network callers"),
        ("app/report.py", "    return '\\n'.join(str(r) for r in rows)\n",
         "    header = 'date,value'\n    return '\\n'.join([header, *(str(r) for r in rows)])\n",
         "Prepend a CSV header line to the rendered weekly report output"),
    ]
    for path, old, new, message in steps:
        b.edit(path, old, new)
        gold[message] = [path]
        b.commit(message)
    return b.git("rev-parse", "HEAD"), gold


def _go_repo(root: Path) -> tuple[str, dict[str, list[str]]]:
    b = HistoryBuilder(root / "goproj")
    b.write("go.mod", "module example.com/goproj\n\ngo 1.22\n")
    b.write("router.go", "package goproj\n\nfunc Route(path string) string {\n\treturn path\n}\n")
    b.write("cache.go", "package goproj\n\nvar store = map[string]string{}\n\nfunc Get(k string) string {\n"
                        "\treturn store[k]\n}\n")
    b.write("handler.go", "package goproj\n\nfunc Handle(body string) int {\n\treturn len(body)\n}\n")
    b.write("util.go", "package goproj\n\nfunc Clamp(v, lo, hi int) int {\n\treturn max(lo, min(v, hi))\n}\n")
    b.write("router_test.go", "package goproj\n\nimport \"testing\"\n\nfunc TestRoute(t *testing.T) {}\n")
    b.commit("Initial router, handler, utilities and in-memory cache for the service")
    gold: dict[str, list[str]] = {}
    steps = [
        ("router.go", "\treturn path\n", "\tif path == \"\" {\n\t\treturn \"/\"\n\t}\n\treturn path\n",
         "Route an empty request path to the root handler instead of failing"),
        ("cache.go", "\treturn store[k]\n", "\tvalue, ok := store[k]\n\tif !ok {\n\t\treturn \"missing\"\n\t}\n"
                                            "\treturn value\n",
         "Return a missing marker from the cache lookup for unknown keys"),
        ("router.go", "func Route(path string) string {\n",
         "func Route(path string) string {\n\tpath = strings.TrimSuffix(path, \"/\")\n",
         "Trim trailing slashes from request paths before routing them"),
        ("cache.go", "var store = map[string]string{}\n",
         "var store = map[string]string{}\n\nfunc Put(k, v string) {\n\tstore[k] = v\n}\n",
         "Add a cache insertion function so handlers can store computed values"),
    ]
    for path, old, new, message in steps:
        b.edit(path, old, new)
        gold[message] = [path]
        b.commit(message)
    return b.git("rev-parse", "HEAD"), gold


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("localization")
    repos_dir = root / "repos"
    py_head, py_gold = _python_repo(repos_dir)
    go_head, go_gold = _go_repo(repos_dir)
    repos_file = root / "repos.json"
    repos_file.write_text(json.dumps({"repos": [
        {"name": "pyproj", "language": "python", "url": "file:///nowhere/pyproj.git", "commit": py_head},
        {"name": "goproj", "language": "go", "url": "file:///nowhere/goproj.git", "commit": go_head},
    ]}))
    out = root / "out"
    run = _run_module()
    assert run.main([
        "--repos-dir", str(repos_dir), "--repos-file", str(repos_file), "--out", str(out),
        "--questions-dir", str(root / "questions"), "--cache-dir", str(root / "cache"), "--per-repo", "20",
    ]) == 0
    return {"out": out, "root": root, "gold": {"pyproj": py_gold, "goproj": go_gold}, "run": run,
            "repos_dir": repos_dir, "repos_file": repos_file}


def _rankings(out: Path, repo: str) -> list[dict]:
    return [json.loads(line) for line in (out / "rankings" / f"{repo}.jsonl").read_text().splitlines()]


def test_questions_are_the_commits_with_their_changed_source_files(bench_run: dict) -> None:
    for repo, gold in bench_run["gold"].items():
        rows = _rankings(bench_run["out"], repo)
        # Every edit commit is a question; each initial import touches more than 3 source files.
        assert {r["query"]: r["gold_files"] for r in rows} == gold
        assert not any(path.startswith("tests/") or path.endswith("_test.go")
                       for r in rows for path in r["gold_files"])


def test_split_is_by_time_older_half_tuned_newer_half_held_out(bench_run: dict) -> None:
    for repo in ("pyproj", "goproj"):
        rows = _rankings(bench_run["out"], repo)
        tune = [r for r in rows if r["split"] == "tune"]
        held = [r for r in rows if r["split"] == "heldout"]
        assert len(tune) == len(rows) // 2 and len(held) == len(rows) - len(tune)
        assert max(r["time"] for r in tune) < min(r["time"] for r in held)


def test_every_system_ranks_the_same_indexed_files_and_is_scored(bench_run: dict) -> None:
    summary = json.loads((bench_run["out"] / "summary.json").read_text())
    for repo in ("pyproj", "goproj"):
        tracked = {str(p.relative_to(bench_run["repos_dir"] / repo)) for p in (bench_run["repos_dir"] / repo).rglob("*")
                   if p.is_file() and ".git" not in p.parts and p.stat().st_size}  # empty files are not indexed
        for row in _rankings(bench_run["out"], repo):
            assert set(row["systems"]) == {"product", "learned", "bm25-file", "dense-window"}
            # Too little history for a ranker: "learned" is the hand-set order, query by query.
            assert row["systems"]["learned"]["ranking"] == row["systems"]["product"]["ranking"]
            for result in row["systems"].values():
                assert result["ranking"] and set(result["ranking"]) <= tracked
                assert 0.0 <= result["ndcg@5"] <= 1.0 and result["ms"] > 0
        # Tests are indexed too (as a user's index would hold them): every system can rank them.
        rows = _rankings(bench_run["out"], repo)
        dense_files = {p for row in rows for p in row["systems"]["dense-window"]["ranking"]}
        assert any("test" in p for p in dense_files)
        assert summary["per_repo_info"][repo]["files"] == len(tracked)
        assert not any(r["trained"] for r in summary["per_repo_info"][repo]["ranker"].values())
    held = summary["splits"]["heldout"]
    assert set(held["per_repo"]) == {"pyproj", "goproj"} and set(held["per_language"]) == {"go", "python"}
    assert held["macro"]["product"]["n"] == sum(held["per_repo"][r]["product"]["n"] for r in ("pyproj", "goproj"))
    table = (bench_run["out"] / "table.md").read_text()
    assert "| **macro** | all |" in table and "| pyproj | python |" in table


def test_a_clone_without_the_pinned_commit_is_a_clear_error(bench_run: dict, tmp_path: Path) -> None:
    repos = json.loads(bench_run["repos_file"].read_text())
    repos["repos"][0]["commit"] = "0" * 40
    bad = tmp_path / "repos.json"
    bad.write_text(json.dumps(repos))
    with pytest.raises(SystemExit, match="lacks the pinned commit"):
        bench_run["run"].main(["--repos-dir", str(bench_run["repos_dir"]), "--repos-file", str(bad),
                               "--out", str(tmp_path / "out")])
