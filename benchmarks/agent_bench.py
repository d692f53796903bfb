"""Sandbox overhead: a recipe run in bubblewrap against the same commands run bare, in one run.

    .venv/bin/python benchmarks/agent_bench.py [--repeat 7] [--trivial-repeat 20] [--sleep-sec 1.2]
        [--compute 3000] [--out benchmarks/out/agent_bench.json]

Target (issue 14): a sandboxed run of a ~2 s test suite takes at most 1.5x the bare run.

The fixture is a git repository built here: a small package and a pytest suite of 8 tests, each
sleeping ``--sleep-sec``/8 and computing a little (``--compute``), about 2 s bare with pytest's and
coverage's start-up. Sleep, not a CPU-sized loop, carries most of the suite on purpose: on a shared
machine a loop's time swings by 2x between runs and drowns the start-up cost being measured. Two
workloads, each timed both ways, interleaved (the order alternates each round, after one unrecorded
warm-up of each):

* suite   — the shipped ``unit-tests`` recipe (``coverage run -m pytest``, then ``coverage xml``) via
  ``run_recipe``, against the same two commands started bare (``subprocess``, same PATH, a clean
  environment like the sandbox's) in a fresh copy of the same commit made before the clock starts;
* trivial — ``python -c pass`` as a one-step recipe against the same command bare: the fixed cost.

Sandboxed time is ``run_recipe``'s whole wall clock: the policy check, the ``git archive`` copy, a
bubblewrap start per step, artifact collection and clean-up. The time spent inside bubblewrap (the
report's step durations) is recorded too, so the overhead splits into "around" and "inside".
Raw timings (every round) and the medians go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _setup  # noqa: F401 - the project importable, one output folder

from codex_core.sandbox import default_tools_path, find_recipe, load_policy, run_recipe
from codex_core.sandbox.recipe import Recipe, recipe_from_mapping
from codex_core.sandbox.workdir import export_commit

PACKAGE = '"""CPU work for the benchmark suite."""\n\n\ndef collatz_steps(limit: int) -> int:\n' \
          '    total = 0\n    for start in range(1, limit):\n        n = start\n        while n != 1:\n' \
          '            n = n // 2 if n % 2 == 0 else 3 * n + 1\n            total += 1\n    return total\n'
TEST_TEMPLATE = "import time\n\nfrom busy import collatz_steps\n\n\ndef test_collatz_{index}() -> None:\n" \
                "    time.sleep({sleep})\n    assert collatz_steps({limit}) > 0\n"
TESTS = 8


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def build_fixture(root: Path, sleep_sec: float, limit: int) -> tuple[Path, str]:
    repo = root / "suite"
    (repo / "tests").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "busy.py").write_text(PACKAGE)
    for index in range(TESTS):
        (repo / "tests" / f"test_busy_{index}.py").write_text(
            TEST_TEMPLATE.format(index=index, sleep=round(sleep_sec / TESTS, 4), limit=limit))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a ~2 s suite")
    return repo, git(repo, "rev-parse", "HEAD")


def run_bare(recipe: Recipe, repo: Path, sha: str, tools_path: str, scratch: Path) -> tuple[float, list[int]]:
    """The recipe's commands as a user would start them, in a fresh copy made before the clock starts."""
    with tempfile.TemporaryDirectory(dir=scratch) as base:
        workdir = Path(base) / "work"
        workdir.mkdir()
        export_commit(repo, sha, workdir)
        env = {"PATH": tools_path, "HOME": base, "LANG": "C.UTF-8"}
        codes = []
        started = time.perf_counter()
        for step in recipe.steps:
            done = subprocess.run(list(step.argv), cwd=workdir, env=env, capture_output=True)
            codes.append(done.returncode)
            if done.returncode != 0:
                break
        return time.perf_counter() - started, codes


def run_sandboxed(recipe: Recipe, repo: Path, sha: str, tools_path: str, scratch: Path) -> tuple[float, float, str]:
    """run_recipe's whole wall clock, the time inside bubblewrap (its steps), and the status."""
    policy = load_policy(recipe.policy)
    started = time.perf_counter()
    report = run_recipe(repo, sha, recipe, policy, tools_path=tools_path, scratch=scratch)
    took = time.perf_counter() - started
    return took, sum(step.duration_sec or 0.0 for step in report.steps), report.status


def measure(recipe: Recipe, repo: Path, sha: str, tools_path: str, scratch: Path, repeat: int) -> dict:
    rounds = []
    run_bare(recipe, repo, sha, tools_path, scratch)  # warm-up: page cache, .pyc of the tools
    run_sandboxed(recipe, repo, sha, tools_path, scratch)
    for index in range(repeat):
        first_bare = index % 2 == 0
        row: dict = {"round": index, "bare_first": first_bare}
        for way in (("bare", "sandbox") if first_bare else ("sandbox", "bare")):
            if way == "bare":
                row["bare_sec"], row["bare_exit_codes"] = run_bare(recipe, repo, sha, tools_path, scratch)
            else:
                row["sandbox_sec"], row["inside_sec"], row["sandbox_status"] = run_sandboxed(
                    recipe, repo, sha, tools_path, scratch)
        rounds.append(row)
        print(f"  {recipe.name} round {index}: bare {row['bare_sec']:.3f} s, sandbox {row['sandbox_sec']:.3f} s "
              f"(inside bwrap {row['inside_sec']:.3f} s, {row['sandbox_status']})", flush=True)
    bad = [r for r in rounds if r["sandbox_status"] != "ok" or any(r["bare_exit_codes"])]
    if bad:
        raise SystemExit(f"{recipe.name}: a run did not succeed, so its time means nothing: {bad[0]}")
    bare = statistics.median(r["bare_sec"] for r in rounds)
    sandbox = statistics.median(r["sandbox_sec"] for r in rounds)
    inside = statistics.median(r["inside_sec"] for r in rounds)
    return {"recipe": recipe.name, "steps": [s.run for s in recipe.steps], "repeat": repeat, "rounds": rounds,
            "median_bare_sec": round(bare, 4), "median_sandbox_sec": round(sandbox, 4),
            "median_inside_sec": round(inside, 4), "ratio": round(sandbox / bare, 3),
            # each round's pair was timed back to back: their ratio drifts less with the machine's load
            "median_paired_ratio": round(statistics.median(r["sandbox_sec"] / r["bare_sec"] for r in rounds), 3),
            "overhead_sec": round(sandbox - bare, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds of the suite, each way")
    parser.add_argument("--trivial-repeat", type=int, default=20, help="timed rounds of `python -c pass`")
    parser.add_argument("--sleep-sec", type=float, default=1.2, help="the suite's total sleep, over 8 tests")
    parser.add_argument("--compute", type=int, default=3000, help="collatz_steps limit computed in each test")
    parser.add_argument("--out", type=Path, default=_setup.OUT_DIR / "agent_bench.json")
    args = parser.parse_args(argv)

    tools_path = default_tools_path()
    load_before = os.getloadavg()  # other work on the machine is the main source of noise: recorded
    suite_recipe = find_recipe("unit-tests")
    trivial_recipe = recipe_from_mapping({"name": "trivial", "policies": "unit_tests",
                                          "steps": [{"run": "python -c pass"}]})
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        root = Path(tmp)
        scratch = root / "scratch"
        scratch.mkdir()
        repo, sha = build_fixture(root, args.sleep_sec, args.compute)
        print(f"sandbox PATH: {tools_path}\nsuite: {TESTS} tests, {args.sleep_sec:g} s of sleep, "
              f"collatz limit {args.compute}", flush=True)
        trivial = measure(trivial_recipe, repo, sha, tools_path, scratch, args.trivial_repeat)
        suite = measure(suite_recipe, repo, sha, tools_path, scratch, args.repeat)

    result = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                    "bwrap": subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip(),
                    "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "tools_path": tools_path, "suite_tests": TESTS, "suite_sleep_sec": args.sleep_sec,
        "collatz_limit": args.compute, "target_ratio": 1.5,
        "suite": suite, "trivial": trivial,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, m in (("suite (unit-tests recipe)", suite), ("trivial (python -c pass)", trivial)):
        print(f"{name}: bare {m['median_bare_sec']:.3f} s, sandbox {m['median_sandbox_sec']:.3f} s "
              f"(inside bwrap {m['median_inside_sec']:.3f} s) -> {m['ratio']:.2f}x "
              f"(paired {m['median_paired_ratio']:.2f}x), "
              f"{m['overhead_sec'] * 1000:+.0f} ms (medians of {m['repeat']})")
    verdict = "meets" if suite["ratio"] <= 1.5 else "misses"
    print(f"target <= 1.5x for a ~2 s suite ({suite['median_bare_sec']:.2f} s bare here): {verdict} "
          f"({suite['ratio']:.2f}x); raw: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
