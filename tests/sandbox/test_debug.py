"""The debug agent (``feriactl agent fix``): a fixture repository with a planted bug and a failing test.

Everything up to the model's patch runs on every test run, for real: the failing test in the
sandbox, the cited suspects, the verdict without a model, a patch applied and tested on a copy
(inside the sandbox), the reply parsing and its schema. The model itself is the opt-in test at the
end (a real llama-server; ``CODEX_TEST_LLM=1`` and ``CODEX_TEST_LLM_URL``, docs/agent.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from codex_core.llm.backends import OpenAICompatibleBackend
from codex_core.sandbox import RunStore, load_policy
from codex_core.sandbox.debug import (
    FIX_SCHEMA,
    Blobs,
    Model,
    Suspect,
    edits_to_diff,
    expectation,
    fix_failing_test,
    parse_reply,
    rewrite_to_diff,
    try_patch,
)
from codex_core.schema import load_schema
from tests.conftest import commit_all, git
from tests.sandbox.support import needs_bwrap

FERIACTL = str(Path(sys.executable).parent / "feriactl")
CALC = '''"""Arithmetic."""


def add(a, b):
    """The sum of a and b."""
    return a - b


def double(x):
    return 2 * x
'''
TESTS = '''from calc import add, double


def test_add():
    assert add(2, 3) == 5


def test_double():
    assert double(4) == 8
'''
FIX = "".join(line + "\n" for line in [  # a git-style diff: three lines of context each side
    "--- a/calc.py", "+++ b/calc.py", "@@ -3,7 +3,7 @@", " ", " def add(a, b):", '     """The sum of a and b."""',
    "-    return a - b", "+    return a + b", " ", " ", " def double(x):",
])
TEST_ID = "test_calc.py::test_add"


@pytest.fixture(scope="module")
def buggy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    repo = tmp_path_factory.mktemp("buggy")
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text(CALC)
    (repo / "test_calc.py").write_text(TESTS)
    return repo, commit_all(repo, "add() with a planted bug")


def policies() -> dict:
    return {"test_policy": load_policy("unit_tests"), "lint_policy": load_policy("linting")}


@needs_bwrap
def test_without_a_model_the_agent_stops_after_a_cited_diagnosis(buggy) -> None:
    repo, sha = buggy
    result = fix_failing_test(repo, TEST_ID, no_model_reason="nothing at http://127.0.0.1:9 answered", **policies())
    assert result.status == "diagnosed" and result.commit == sha
    assert "no LLM reachable (nothing at http://127.0.0.1:9 answered)" in result.reason
    assert result.before.status == "failed" and "assert -1 == 5" in result.before.stdout
    first = result.suspects[0]
    assert (first.path, first.line_start, first.line_end, first.source, first.symbol) == (
        "calc.py", 4, 6, "definition", "add")
    assert first.snippet == 'def add(a, b):\n    """The sum of a and b."""\n    return a - b\n'
    assert any(s.path == "test_calc.py" and s.source == "traceback" for s in result.suspects)
    assert result.attempts == [] and result.diff == ""
    markdown = result.to_markdown()
    assert "**diagnosed**" in markdown and "`calc.py:4-6` (definition)" in markdown
    assert git(repo, "status", "--porcelain") == ""  # the checkout is never touched


@needs_bwrap
def test_a_passing_test_is_not_a_case(buggy) -> None:
    repo, _ = buggy
    result = fix_failing_test(repo, "test_calc.py::test_double", **policies())
    assert result.status == "not_failing" and result.suspects == []


@needs_bwrap
def test_a_patch_is_applied_to_a_copy_inside_the_sandbox_and_judged(buggy) -> None:
    repo, sha = buggy
    cmd = f"pytest -q -p no:cacheprovider {TEST_ID}"
    applied, test, lint = try_patch(repo, sha, FIX, cmd, **policies())
    assert applied.status == "ok" and test.status == "ok" and "1 passed" in test.stdout
    assert lint is not None and lint.status == "ok"
    assert (repo / "calc.py").read_text() == CALC  # only the copy changed

    bad = FIX.replace("return a - b", "return a * b")  # does not match the file
    applied, test, lint = try_patch(repo, sha, bad, cmd, **policies())
    assert applied.status == "failed" and "patch does not apply" in applied.stderr and test is None

    escaping = FIX.replace("a/calc.py", "a/../outside.py").replace("b/calc.py", "b/../outside.py")
    applied, _, _ = try_patch(repo, sha, escaping, cmd, **policies())
    assert applied.status == "failed" and not (repo.parent / "outside.py").exists()


def test_replies_are_parsed_leniently_and_checked_strictly() -> None:
    schema = load_schema(FIX_SCHEMA)
    fenced = '```json\n{"edits": [{"path": "calc.py", "find": "    return a - b", "replace": "    return a + b"}],\n' \
             '"explanation": "subtracted\ninstead of adding"}\n```'
    data, problem = parse_reply(fenced, schema)  # fences, and a raw newline inside a string
    assert problem == "" and data["edits"][0]["replace"] == "    return a + b"
    assert parse_reply("I think the bug is in add.", schema) == (None, "the reply holds no JSON object")
    _, problem = parse_reply('{"edits": [], "explanation": "none"}', schema)
    assert problem == "edits: needs at least 1 item(s), got 0"
    _, problem = parse_reply('{"explanation": "x", "patch": "..."}', schema)
    assert "patch" in problem
    _, problem = parse_reply('{"explanation": "x"}', schema)
    assert problem == "give exactly one of 'edits' or 'diff'"


def test_edits_become_a_diff_of_the_commit_or_a_precise_refusal(buggy) -> None:
    repo, sha = buggy
    blobs = Blobs(repo, sha)
    diff, problem = edits_to_diff([{"path": "calc.py", "find": "return a - b", "replace": "return a + b"}], blobs)
    assert problem == "" and "-    return a - b\n+    return a + b\n" in diff and diff.startswith("--- a/calc.py")
    cases = {
        "../etc/passwd": "is not a text file of the repository at this commit",
        "missing.py": "is not a text file of the repository at this commit",
    }
    for path, message in cases.items():
        _, problem = edits_to_diff([{"path": path, "find": "x", "replace": "y"}], blobs)
        assert message in problem
    _, problem = edits_to_diff([{"path": "calc.py", "find": "return a * b", "replace": "z"}], blobs)
    assert "does not occur in calc.py" in problem
    _, problem = edits_to_diff([{"path": "calc.py", "find": "return", "replace": "z"}], blobs)
    assert "occurs 2 times" in problem


def test_a_rewritten_function_replaces_exactly_its_lines(buggy) -> None:
    repo, sha = buggy
    blobs = Blobs(repo, sha)
    target = Suspect("calc.py", 4, 6, blobs.span("calc.py", 4, 6), "definition", symbol="add")
    reply = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nIt subtracted."
    diff, problem = rewrite_to_diff(reply, target, blobs)
    assert problem == ""
    assert '-    """The sum of a and b."""\n-    return a - b\n+    return a + b\n' in diff
    assert "double" not in diff.replace(" def double", "")  # the rest of the file is untouched
    assert rewrite_to_diff("```python\ndef add(a, b)\n    return\n```", target, blobs)[1].startswith(
        "the rewritten function does not parse")
    assert rewrite_to_diff("```python\ndef plus(a, b):\n    return a + b\n```", target, blobs)[1] == (
        "the reply does not define add()")
    assert expectation("E       assert -1 == 5\nE        +  where -1 = add(2, 3)") == (
        "add(2, 3) returns -1, but the test expects 5.")


@needs_bwrap
def test_feriactl_agent_fix_without_a_model_stores_a_signed_diagnosis(buggy, tmp_path: Path) -> None:
    repo, _ = buggy
    home = tmp_path / "home"
    RepoRegistry(CodexHome(home).registry_path).add("calc", str(repo))
    env = {**os.environ, "CODEX_HOME": str(home), "CODEX_SNAPSHOT_KEY": "k" * 40}
    done = subprocess.run([FERIACTL, "agent", "fix", "--repo", "calc", "--test", TEST_ID,
                           "--llm-url", "http://127.0.0.1:9", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    record = json.loads(done.stdout)
    assert record["recipe"] == "fix" and record["status"] == "diagnosed"
    assert record["fix"]["suspects"][0]["ref"] == "calc.py:4-6"
    assert "http://127.0.0.1:9" in record["fix"]["reason"]
    finish = [json.loads(line) for line in done.stderr.splitlines() if '"agent_run_finish"' in line]
    assert finish and finish[0]["run_id"] == record["run_id"] and finish[0]["status"] == "diagnosed"
    verified = subprocess.run([FERIACTL, "agent", "verify", record["run_id"]], capture_output=True, text=True,
                              env=env, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert RunStore(CodexHome(home)).list()[0]["run_id"] == record["run_id"]


@pytest.mark.llm
@pytest.mark.skipif(os.environ.get("CODEX_TEST_LLM") != "1" or not os.environ.get("CODEX_TEST_LLM_URL"),
                    reason="opt-in: CODEX_TEST_LLM=1 and CODEX_TEST_LLM_URL of a llama-server (docs/agent.md)")
@needs_bwrap
def test_a_real_small_model_fixes_the_planted_bug(buggy) -> None:
    repo, _ = buggy
    model = Model(OpenAICompatibleBackend(os.environ["CODEX_TEST_LLM_URL"]), "local", style="rewrite")
    result = fix_failing_test(repo, TEST_ID, model=model, **policies())
    assert result.status == "fixed", result.to_markdown()
    assert "+    return a + b" in result.diff
    assert result.attempts[-1].test.status == "ok"
    applied = subprocess.run(["git", "apply", "--check", "-"], input=result.diff, text=True, cwd=repo,
                             capture_output=True)
    assert applied.returncode == 0, applied.stderr  # the user can apply the diff as it is


def test_the_patch_style_follows_the_model_size_in_its_name() -> None:
    """Small models get the rewrite prompt (Qwen 0.5B failed the JSON one 10 times in 10)."""
    from codex_cli.agent_cmds import _style_for

    assert [_style_for(n, "auto") for n in ("qwen2.5-coder:1.5b", "smollm2-135m", "local", "qwen2.5-coder:7b")] == [
        "rewrite", "rewrite", "rewrite", "json"]
    assert _style_for("qwen2.5-coder:0.5b", "json") == "json"  # an explicit choice wins
