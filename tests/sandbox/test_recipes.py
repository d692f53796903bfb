"""Acceptance test of the ten standard recipes (issue 14): each runs on a fixture repository built
here, in real bubblewrap with the real tools, and the test checks the verdict a user would see —
``ok`` on the clean fixture, ``failed`` on a planted defect, ``unavailable: <tool>`` where this
machine lacks the tool. At least 95% of the recipes whose tools exist must succeed.

The sandbox PATH is the product's default (the recipe tools environment ``.sandbox-tools/``, made by
``make sandbox-tools``, first) plus the directories of this machine's toolchains (cargo, go) found on
the test's own PATH; for a rustup proxy (``~/.cargo/bin/cargo``) the sandbox exposes RUSTUP_HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from codex_core.sandbox import (
    RunReport,
    SandboxUnavailable,
    default_tools_path,
    find_recipe,
    judge_executable,
    load_policy,
    run_recipe,
)
from codex_core.sandbox.runner import TOOLS_ENV_VAR, tools_env_bin
from tests.conftest import commit_all, git
from tests.sandbox.support import HAS_BWRAP, needs_bwrap

STANDARD = ("unit-tests", "ruff", "mypy", "bandit", "python-build", "docs-build", "go-test", "cargo-test",
            "npm-test", "lockfile-check")

# --- the fixture repositories -------------------------------------------------------------------

PYPROJECT = """\
[project]
name = "calcpkg"
version = "0.1.0"
description = "Adds numbers."
requires-python = ">=3.11"
dependencies = []

[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[tool.setuptools]
packages = ["calcpkg"]
"""
CALCPKG = '''"""Small arithmetic."""


def add(a: int, b: int) -> int:
    """Return the sum of ``a`` and ``b``."""
    return a + b
'''
TEST_CALC = "from calcpkg import add\n\n\ndef test_add() -> None:\n    assert add(2, 3) == 5\n"
DOCS_CONF = """import os
import sys

sys.path.insert(0, os.path.abspath(".."))
project = "calcpkg"
extensions = ["sphinx.ext.autodoc"]
"""
DOCS_INDEX = "calcpkg\n=======\n\n.. automodule:: calcpkg\n   :members:\n"

# One commit per defect, each on top of the clean commit: recipe -> the file it writes there.
PY_DEFECTS = {
    "unit-tests": ("tests/test_wrong.py", "from calcpkg import add\n\n\ndef test_add_is_wrong() -> None:\n"
                                          "    assert add(2, 2) == 5\n"),
    "ruff": ("calcpkg/unused.py", "import os\n"),
    "mypy": ("calcpkg/typed.py", "def half(x: int) -> str:\n    return x // 2\n"),
    "bandit": ("calcpkg/shell.py", "import subprocess\n\n\ndef run(command: str) -> int:\n"
                                   "    return subprocess.call(command, shell=True)\n"),
    "docs-build": ("docs/index.rst", DOCS_INDEX + "\nSee :doc:`usage`.\n"),
    "lockfile-check": ("pyproject.toml", PYPROJECT.replace('version = "0.1.0"', 'version = "0.2.0"')),
}

CARGO_TOML = '[package]\nname = "calc"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'
LIB_RS = "pub fn add(a: i64, b: i64) -> i64 {\n    a + b\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n" \
         "    #[test]\n    fn adds() {\n        assert_eq!(add(2, 3), {expected});\n    }\n}\n"
PACKAGE_JSON = json.dumps({"name": "calc", "version": "1.0.0", "private": True,
                           "scripts": {"test": "node test.js"}}, indent=2) + "\n"
CALC_JS = "exports.add = (a, b) => a + b;\n"
TEST_JS = "const assert = require('node:assert');\nconst { add } = require('./calc');\n" \
          "assert.strictEqual(add(2, 3), {expected});\nconsole.log('calc: all tests passed');\n"
GO_MOD = "module example.com/calc\n\ngo 1.21\n"
CALC_GO = "package calc\n\nfunc Add(a, b int) int { return a + b }\n"
CALC_TEST_GO = 'package calc\n\nimport "testing"\n\nfunc TestAdd(t *testing.T) {\n' \
               '\tif Add(2, 3) != 5 {\n\t\tt.Fatal("2 + 3 != 5")\n\t}\n}\n'


@dataclass(frozen=True)
class Fixture:
    repo: Path
    clean: str
    defects: dict[str, str]  # recipe name -> commit planting the defect that recipe must report


def _init(root: Path, name: str, files: dict[str, str]) -> tuple[Path, str]:
    repo = root / name
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    return repo, commit_all(repo, f"{name}: clean")


def _plant(repo: Path, clean: str, recipe: str, files: dict[str, str]) -> str:
    git(repo, "checkout", "-q", "-b", f"defect-{recipe}", clean)
    for rel, text in files.items():
        (repo / rel).write_text(text)
    sha = commit_all(repo, f"a defect {recipe} must report")
    git(repo, "checkout", "-q", "main")
    return sha


def _toolchain_dirs() -> list[str]:
    """Where this machine's cargo and go are on the test's own PATH (cargo may be a rustup proxy)."""
    return [str(Path(found).parent) for tool in ("cargo", "go") if (found := shutil.which(tool))]


@pytest.fixture(scope="module")
def tools_path() -> str:
    return os.pathsep.join(dict.fromkeys([*default_tools_path().split(os.pathsep), *_toolchain_dirs()]))


def _python_fixture(root: Path, tools_path: str) -> Fixture:
    files = {"pyproject.toml": PYPROJECT, "calcpkg/__init__.py": CALCPKG, "tests/test_calc.py": TEST_CALC,
             "docs/conf.py": DOCS_CONF, "docs/index.rst": DOCS_INDEX, ".gitignore": "build/\ndist/\n*.egg-info/\n"}
    uv = shutil.which("uv", path=tools_path)
    if uv:  # no dependencies, so uv locks it offline; without uv, lockfile-check reports `unavailable: uv`
        staging = root / "uv-staging"
        staging.mkdir()
        (staging / "pyproject.toml").write_text(PYPROJECT)
        subprocess.run([uv, "lock", "--offline", "--quiet"], cwd=staging, check=True, capture_output=True,
                       env={**os.environ, "UV_CACHE_DIR": str(root / "uv-cache")})
        files["uv.lock"] = (staging / "uv.lock").read_text()
    repo, clean = _init(root, "python-project", files)
    defects = {recipe: _plant(repo, clean, recipe, {rel: text}) for recipe, (rel, text) in PY_DEFECTS.items()}
    return Fixture(repo, clean, defects)


def _cargo_fixture(root: Path, tools_path: str) -> Fixture:
    files = {"Cargo.toml": CARGO_TOML, "src/lib.rs": LIB_RS.replace("{expected}", "5"),
             ".gitignore": "target/\n"}
    repo, _ = _init(root, "cargo-project", files)
    if cargo := shutil.which("cargo", path=tools_path):  # --locked wants the (dependency-free) lockfile committed
        subprocess.run([cargo, "generate-lockfile", "--offline"], cwd=repo, check=True, capture_output=True)
    clean = commit_all(repo, "Cargo.lock")
    return Fixture(repo, clean, {"cargo-test": _plant(repo, clean, "cargo-test",
                                                      {"src/lib.rs": LIB_RS.replace("{expected}", "6")})})


def _npm_fixture(root: Path) -> Fixture:
    files = {"package.json": PACKAGE_JSON, "calc.js": CALC_JS, "test.js": TEST_JS.replace("{expected}", "5")}
    repo, clean = _init(root, "npm-project", files)
    return Fixture(repo, clean, {"npm-test": _plant(repo, clean, "npm-test",
                                                    {"test.js": TEST_JS.replace("{expected}", "6")})})


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory, tools_path: str) -> dict[str, Fixture]:
    """Recipe name -> the fixture repository it runs on."""
    root = tmp_path_factory.mktemp("recipes")
    python = _python_fixture(root, tools_path)
    go = Fixture(*_init(root, "go-project", {"go.mod": GO_MOD, "calc.go": CALC_GO, "calc_test.go": CALC_TEST_GO}),
                 {})
    by_recipe = {name: python for name in ("unit-tests", "ruff", "mypy", "bandit", "python-build", "docs-build",
                                           "lockfile-check")}
    return {**by_recipe, "cargo-test": _cargo_fixture(root, tools_path), "npm-test": _npm_fixture(root),
            "go-test": go}


def _run(name: str, fixture: Fixture, commit: str, tools_path: str, artifacts: Path | None = None) -> RunReport:
    recipe = find_recipe(name)
    return run_recipe(fixture.repo, commit, recipe, load_policy(recipe.policy), tools_path=tools_path,
                      artifacts_dir=artifacts)


@pytest.fixture(scope="module")
def clean_runs(fixtures: dict[str, Fixture], tools_path: str,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunReport]:
    """Every standard recipe on its clean fixture, two at a time (the steps are mostly waiting on tools)."""
    if not HAS_BWRAP:
        pytest.skip("bubblewrap is required: apt-get install bubblewrap")
    artifacts = tmp_path_factory.mktemp("artifacts")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_run, name, fixtures[name], fixtures[name].clean, tools_path, artifacts / name)
                   for name in STANDARD}
        return {name: future.result() for name, future in futures.items()}


def _missing_tools(name: str, tools_path: str) -> list[str]:
    recipe = find_recipe(name)
    policy = load_policy(recipe.policy)
    return [tool for tool in recipe.tools if judge_executable(tool, policy, tools_path).status == "unavailable"]


# --- the verdicts --------------------------------------------------------------------------------


def test_the_standard_recipes_are_the_shipped_ones() -> None:
    for name in STANDARD:
        assert find_recipe(name).name == name


@needs_bwrap
@pytest.mark.parametrize("name", STANDARD)
def test_a_recipe_passes_its_clean_fixture(name: str, clean_runs: dict[str, RunReport], tools_path: str) -> None:
    report = clean_runs[name]
    missing = _missing_tools(name, tools_path)
    if missing:
        assert report.status == f"unavailable: {', '.join(missing)}", report.to_markdown()
        assert all(step.exit_code is None for step in report.steps)  # nothing ran
        pytest.skip(f"{name}: {report.status} on the sandbox PATH ({tools_path})")
    assert report.status == "ok", report.to_markdown()
    assert all(step.status == "ok" and step.exit_code == 0 for step in report.steps)


@needs_bwrap
def test_what_a_user_sees_on_the_clean_runs(clean_runs: dict[str, RunReport]) -> None:
    """Beyond `ok`: the outputs and artifacts the report shows for the runs that happened."""
    ran = {name: report for name, report in clean_runs.items() if report.status == "ok"}
    if "unit-tests" in ran:
        assert "1 passed" in ran["unit-tests"].steps[0].stdout
        coverage_xml = next(a for a in ran["unit-tests"].artifacts if a.path == "coverage.xml")
        assert coverage_xml.status == "collected" and 'filename="calcpkg/__init__.py"' in \
            Path(coverage_xml.stored_at).read_text()
    if "bandit" in ran:
        bandit_json = next(a for a in ran["bandit"].artifacts if a.path == "bandit.json")
        assert json.loads(Path(bandit_json.stored_at).read_text())["results"] == []
    if "python-build" in ran:
        assert "calcpkg-0.1.0-py3-none-any.whl" in ran["python-build"].steps[0].stdout
    if "ruff" in ran:
        assert "All checks passed!" in ran["ruff"].steps[0].stdout
    if "mypy" in ran:
        assert "Success: no issues found" in ran["mypy"].steps[0].stdout
    if "npm-test" in ran:
        assert "calc: all tests passed" in ran["npm-test"].steps[0].stdout
    if "cargo-test" in ran:
        assert "test tests::adds ... ok" in ran["cargo-test"].steps[1].stdout


@needs_bwrap
def test_at_least_95_percent_of_the_recipes_with_tools_succeed(clean_runs: dict[str, RunReport]) -> None:
    unavailable = {name: r.status for name, r in clean_runs.items() if r.status.startswith("unavailable")}
    judged = {name: r.status for name, r in clean_runs.items() if name not in unavailable}
    succeeded = [name for name, status in judged.items() if status == "ok"]
    rate = len(succeeded) / len(judged) if judged else 0.0
    assert judged and rate >= 0.95, (
        f"{len(succeeded)}/{len(judged)} recipes with their tools succeeded ({rate:.0%}); "
        f"not ok: {({n: s for n, s in judged.items() if s != 'ok'})}; unavailable here: {unavailable}")


# What the user sees in the report of a run on a planted defect: the step that failed and why.
DEFECT_EVIDENCE = {
    "unit-tests": (0, "1 failed, 1 passed"),
    "ruff": (0, "calcpkg/unused.py:1:8: F401"),
    "mypy": (0, 'calcpkg/typed.py:2: error: Incompatible return value type (got "int", expected "str")'),
    "bandit": (0, None),  # -q with -o: the findings are in bandit.json (checked below)
    "docs-build": (0, "unknown document: 'usage'"),
    "lockfile-check": (0, "needs to be updated"),
    "cargo-test": (1, "assertion `left == right` failed"),
    "npm-test": (0, "AssertionError"),
}


@needs_bwrap
@pytest.mark.parametrize("name", tuple(DEFECT_EVIDENCE))
def test_a_planted_defect_fails_the_recipe(name: str, fixtures: dict[str, Fixture], tools_path: str,
                                           tmp_path: Path) -> None:
    if missing := _missing_tools(name, tools_path):
        pytest.skip(f"{name}: unavailable: {', '.join(missing)} on the sandbox PATH ({tools_path})")
    fixture = fixtures[name]
    report = _run(name, fixture, fixture.defects[name], tools_path, tmp_path)
    failing_step, evidence = DEFECT_EVIDENCE[name]
    assert report.status == "failed", report.to_markdown()
    step = report.steps[failing_step]
    assert step.status == "failed" and step.exit_code not in (None, 0)
    assert evidence is None or evidence in step.stdout + step.stderr, report.to_markdown()
    assert all(later.status == "skipped" for later in report.steps[failing_step + 1:])
    if name == "bandit":
        findings = json.loads((tmp_path / "bandit.json").read_text())["results"]
        assert {(f["filename"], f["test_id"], f["issue_severity"]) for f in findings} >= {
            ("./calcpkg/shell.py", "B602", "HIGH")}


# --- where the tools come from ------------------------------------------------------------------


def test_the_tools_environment_comes_first_on_the_sandbox_path(tmp_path: Path) -> None:
    tools = tmp_path / "tools-env"
    (tools / "bin").mkdir(parents=True)
    path = default_tools_path({TOOLS_ENV_VAR: str(tools)}).split(os.pathsep)
    assert path[0] == str(tools / "bin") and path[-3:] == ["/usr/local/bin", "/usr/bin", "/bin"]

    with pytest.raises(SandboxUnavailable, match=r"CODEX_SANDBOX_TOOLS=.*missing is not a tools environment.*"
                                                  r"pip install -r configs/sandbox-tools.txt"):
        default_tools_path({TOOLS_ENV_VAR: str(tmp_path / "missing")})
    repo_env = tools_env_bin({})  # unset: the repository's .sandbox-tools/ when `make sandbox-tools` made it
    assert repo_env is None or repo_env.parts[-2:] == (".sandbox-tools", "bin")
