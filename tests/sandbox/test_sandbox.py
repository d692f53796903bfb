"""The sandbox core, for real: a git repository built here, real bubblewrap, real caps.

Tests that start the sandbox skip (saying why) where ``bwrap`` is not installed; CI installs it.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import time
from pathlib import Path

import pytest

from codex_core.sandbox import (
    PolicyError,
    RecipeError,
    SandboxUnavailable,
    find_recipe,
    load_policies,
    load_policy,
    load_recipe,
    load_recipes,
    run_recipe,
)
from codex_core.sandbox.recipe import recipe_from_mapping
from tests.conftest import commit_all, git
from tests.sandbox.support import needs_bwrap, policy, processes_with, python_step, recipe

CALC = "def add(a, b):\n    return a + b\n"
PASSING = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
FAILING = "from calc import add\n\n\ndef test_add_is_wrong():\n    assert add(2, 2) == 5\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A tiny Python project: commit 1 has a passing test, commit 2 adds a failing one."""
    repo = tmp_path_factory.mktemp("project")
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text(CALC)
    (repo / "test_calc.py").write_text(PASSING)
    good = commit_all(repo, "calc with a passing test")
    (repo / "test_wrong.py").write_text(FAILING)
    bad = commit_all(repo, "a failing test")
    return repo, good, bad


# --- recipes and policies (no sandbox needed) ---------------------------------------------------


def test_the_ten_standard_recipes_load_and_name_existing_policies() -> None:
    recipes, policies = load_recipes(), load_policies()
    assert len(recipes) >= 10
    assert {"unit-tests", "ruff", "mypy", "bandit", "python-build", "docs-build", "go-test", "cargo-test",
            "npm-test", "lockfile-check"} <= set(recipes)
    assert set(policies) == {"unit_tests", "linting", "build", "docs"}
    for r in recipes.values():
        assert r.policy in policies, r.name
    for p in policies.values():
        assert p.network == "disabled" and p.workdir_mode == "copy-on-write" and p.allowlist
    assert load_policy("unit_tests").memory_limit == 2 * 1024**3  # "2G" in the file


def test_a_malformed_recipe_names_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\npolicies: unit_tests\nsteps:\n  - runn: pytest\n  - run: 3\n"
                   "artifacts:\n  - path: /etc/passwd\ncolour: red\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(bad)
    message = str(caught.value)
    assert str(bad) in message
    assert "(top level): unknown key 'colour'" in message
    assert "name: 'Bad Name' does not match" in message
    assert "steps[0]: missing required key 'run'" in message
    assert "steps[0]: unknown key 'runn'" in message
    assert "steps[1].run: expected string, got integer 3" in message
    assert "artifacts[0].path: '/etc/passwd' does not match" in message

    with pytest.raises(RecipeError, match=r"missing required key 'steps'"):
        recipe_from_mapping({"name": "x", "policies": "unit_tests"})
    with pytest.raises(RecipeError, match=r"steps\[0\].run: cannot be split into words"):
        recipe_from_mapping({"name": "x", "policies": "unit_tests", "steps": [{"run": "pytest 'unclosed"}]})
    with pytest.raises(RecipeError, match="not valid YAML"):
        (tmp_path / "y.yaml").write_text("name: [unclosed\n")
        load_recipe(tmp_path / "y.yaml")
    with pytest.raises(RecipeError, match="no recipe named 'nope'.*known recipes: .*unit-tests"):
        find_recipe("nope")


def test_a_malformed_policy_gives_a_precise_error(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.policy.yaml"

    def load(body: str) -> dict:
        path.write_text(body)
        return load_policies(path)

    typo = r"policy 'unit_tests': unknown key 'timeout_secs' \(did you mean 'timeout_sec'\?\)"
    with pytest.raises(PolicyError, match=typo):
        load("policies:\n  unit_tests:\n    allowlist: [pytest]\n    timeout_secs: 5\n")
    with pytest.raises(PolicyError, match=r"memory_limit: expected a size .* got 'lots'"):
        load("policies:\n  unit_tests:\n    allowlist: [pytest]\n    memory_limit: lots\n")
    with pytest.raises(PolicyError, match=r"network: 'enabled' is not supported"):
        load("policies:\n  unit_tests:\n    allowlist: [pytest]\n    network: enabled\n")
    with pytest.raises(PolicyError, match=r"'allowlist' is required"):
        load("policies:\n  unit_tests:\n    timeout_sec: 5\n")
    with pytest.raises(PolicyError, match=r"timeout_sec: expected a positive number, got -1"):
        load("policies:\n  unit_tests:\n    allowlist: [pytest]\n    timeout_sec: -1\n")
    with pytest.raises(PolicyError, match=r"'bin/pytest' is a relative path"):
        load("policies:\n  unit_tests:\n    allowlist: [bin/pytest]\n")
    with pytest.raises(PolicyError, match="not found: create it"):
        load_policies(tmp_path / "missing.yaml")
    docs = load("policies:\n  docs:\n    allowlist: [mkdocs]\n    memory_limit: 512M\n")["docs"]
    assert docs.memory_limit == 512 * 1024**2
    with pytest.raises(PolicyError, match="no policy named 'lint'; known policies: docs"):
        load_policy("lint", path)


def test_without_bubblewrap_the_runner_refuses(project, monkeypatch, tmp_path: Path) -> None:
    repo, good, _ = project
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap anywhere
    with pytest.raises(SandboxUnavailable, match=r"bubblewrap is required: apt-get install bubblewrap"):
        run_recipe(repo, good, recipe("pytest -q"), policy(), scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing was prepared, nothing ran


# --- the sandbox --------------------------------------------------------------------------------


@needs_bwrap
def test_passing_and_failing_tests_give_ok_and_failed_with_exit_codes(project, tmp_path: Path) -> None:
    repo, good, bad = project
    steps = ("pytest -q -p no:cacheprovider --junitxml=junit.xml",)
    passed = run_recipe(repo, good, recipe(*steps, artifacts=("junit.xml",)), policy(), artifacts_dir=tmp_path / "a")
    assert passed.status == "ok" and passed.steps[0].exit_code == 0, passed.to_markdown()
    assert "1 passed" in passed.steps[0].stdout
    junit = passed.artifacts[0]
    assert junit.status == "collected" and Path(junit.stored_at).read_bytes().startswith(b"<?xml")

    failed = run_recipe(repo, bad, recipe(*steps, "pytest --version"), policy())
    assert failed.status == "failed" and failed.commit == bad
    assert failed.steps[0].status == "failed" and failed.steps[0].exit_code == 1
    assert "1 failed, 1 passed" in failed.steps[0].stdout
    assert failed.steps[1].status == "skipped"  # the first step that fails ends the run
    markdown = failed.to_markdown()
    assert "**failed**" in markdown and "| 1 | `pytest -q" in markdown and "test_add_is_wrong" in markdown
    assert json.loads(json.dumps(failed.to_dict()))["steps"][0]["exit_code"] == 1


@needs_bwrap
def test_no_network_not_even_the_hosts_loopback(project) -> None:
    repo, good, _ = project
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    probe = python_step(
        "import socket, json\n"
        "out = {}\n"
        # 192.0.2.1 is TEST-NET-1: with no route in the sandbox the connect fails before any packet exists.
        f"for host, port in (('127.0.0.1', {port}), ('192.0.2.1', 9)):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close(); out[host] = 'connected'\n"
        "    except OSError as exc:\n"
        "        out[host] = type(exc).__name__ + ': ' + str(exc)\n"
        "out['interfaces'] = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
        "out['routes'] = open('/proc/net/route').readlines()[1:]\n"
        "print(json.dumps(out))\n")
    try:
        report = run_recipe(repo, good, recipe(probe), policy())
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever reached the listener outside
    finally:
        listener.close()
    assert report.status == "ok", report.to_markdown()
    seen = json.loads(report.steps[0].stdout)
    assert "refused" in seen["127.0.0.1"].lower()  # the sandbox's own loopback, where nobody listens
    assert "unreachable" in seen["192.0.2.1"].lower()
    assert seen["interfaces"] == ["lo"] and seen["routes"] == []


@needs_bwrap
def test_writes_stay_in_the_throwaway_copy(project, tmp_path: Path) -> None:
    repo, good, _ = project
    host_dir = Path(sys.executable).parent  # part of the read-only host inside the sandbox
    intruder = host_dir / f"sandbox-escape-{random.getrandbits(32)}"
    step = python_step(
        "import sys\n"
        "open('calc.py', 'w').write('broken')\n"
        "open('new_file.txt', 'w').write('made in the sandbox')\n"
        "try:\n"
        f"    open({str(intruder)!r}, 'w')\n"
        "    print('host written')\n"
        "except OSError as exc:\n"
        "    print('host write refused:', exc)\n")
    try:
        report = run_recipe(repo, good, recipe(step), policy(), scratch=tmp_path)
        assert not intruder.exists()
    finally:
        intruder.unlink(missing_ok=True)
    assert report.status == "ok", report.to_markdown()
    assert "host write refused:" in report.steps[0].stdout and "Read-only file system" in report.steps[0].stdout
    assert (repo / "calc.py").read_text() == CALC and not (repo / "new_file.txt").exists()
    assert git(repo, "status", "--porcelain") == ""
    assert list(tmp_path.iterdir()) == []  # the copy is gone after the run


@needs_bwrap
def test_a_file_larger_than_the_cap_cannot_be_written(project) -> None:
    repo, good, _ = project
    step = python_step("open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))")
    report = run_recipe(repo, good, recipe(step), policy(max_file_bytes=1024 * 1024))
    assert report.status == "failed" and report.steps[0].exit_code != 0
    assert "File too large" in report.steps[0].stderr


@needs_bwrap
def test_memory_past_the_cap_fails(project) -> None:
    repo, good, _ = project
    step = python_step("block = bytearray(600 * 1024 * 1024)")
    report = run_recipe(repo, good, recipe(step), policy(memory_limit=256 * 1024**2))
    assert report.status == "failed" and "MemoryError" in report.steps[0].stderr


@needs_bwrap
def test_a_step_past_its_timeout_is_killed_with_its_children(project) -> None:
    repo, good, _ = project
    marker = f"{random.randint(10_000, 99_999)}.5"  # a sleep argument no other process has
    step = python_step(f"import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'])\ntime.sleep(600)\n")
    started = time.monotonic()
    report = run_recipe(repo, good, recipe(step), policy(timeout_sec=1.5))
    assert time.monotonic() - started < 15
    assert report.status == "timeout" and report.steps[0].exit_code is None
    assert "killed after 1.5 s" in report.steps[0].reason

    deadline = time.monotonic() + 3
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


@needs_bwrap
def test_executables_off_the_allowlist_or_on_the_denylist_never_run(project, tmp_path: Path) -> None:
    repo, good, _ = project
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    first = python_step("open('first.txt', 'w').write('ran')")
    off_list = run_recipe(repo, good, recipe(first, "touch made.txt", artifacts=("first.txt", "made.txt")),
                          policy(), scratch=scratch)
    assert off_list.status.startswith("blocked: policy violation: 'touch' is not on the allowlist")
    assert [s.status for s in off_list.steps] == ["skipped", "blocked"]
    assert all(s.exit_code is None for s in off_list.steps)
    assert list(scratch.iterdir()) == []  # no copy was ever made: nothing could have run

    denied = run_recipe(repo, good, recipe("rm calc.py"), policy(allowlist=("python", "rm"), denylist=("rm",)),
                        scratch=scratch)
    assert denied.status.startswith("blocked: policy violation: 'rm' (") and "denylist" in denied.status

    # A link with an allowlisted name pointing at a denied program is judged by what it runs.
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "tidy").symlink_to(next(p for p in ("/usr/bin/rm", "/bin/rm") if os.path.exists(p)))
    aliased = run_recipe(repo, good, recipe("tidy calc.py"), policy(allowlist=("tidy",), denylist=("rm",)),
                         tools_path=str(tools), scratch=scratch)
    assert aliased.status.startswith("blocked:") and "denylist" in aliased.status
    assert list(scratch.iterdir()) == []


@needs_bwrap
def test_a_missing_tool_reports_unavailable_not_a_failure(project, tmp_path: Path) -> None:
    repo, good, _ = project
    report = run_recipe(repo, good, find_recipe("go-test"), load_policy("unit_tests"), tools_path=str(tmp_path))
    assert report.status == "unavailable: go"
    assert [s.status for s in report.steps] == ["unavailable", "unavailable"]
    assert report.steps[0].verdict == "unavailable: go"
    npm = run_recipe(repo, good, find_recipe("npm-test"), load_policy("unit_tests"), tools_path=str(tmp_path))
    assert npm.status == "unavailable: npm, node"  # `requires` is checked too


@needs_bwrap
def test_the_parents_secrets_are_not_visible_inside(project, monkeypatch) -> None:
    repo, good, _ = project
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("CODEX_API_KEY", "sk-codex-secret")
    report = run_recipe(repo, good, recipe(python_step("import os, json; print(json.dumps(dict(os.environ)))")),
                        policy())
    env = json.loads(report.steps[0].stdout)
    assert set(env) <= {"PATH", "HOME", "LANG", "PWD", "LC_CTYPE"} and env["HOME"] == "/tmp"
    assert "wJalrXUtnFEMI" not in report.steps[0].stdout and "sk-codex" not in report.steps[0].stdout


@needs_bwrap
def test_output_beyond_the_cap_is_truncated_with_a_marker(project) -> None:
    repo, good, _ = project
    report = run_recipe(repo, good, recipe(python_step("print('y' * 100_000)")), policy(max_output_bytes=1000))
    step = report.steps[0]
    assert step.status == "ok" and step.stdout_truncated
    assert step.stdout.startswith("y" * 1000) and "output truncated by the sandbox: 99001 more bytes" in step.stdout


@needs_bwrap
def test_the_shipped_ruff_recipe_judges_a_repository(tmp_path: Path) -> None:
    ruff = find_recipe("ruff")
    linting = load_policy("linting")
    repo = tmp_path / "lint-me"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "clean.py").write_text("VALUE = 1\n")
    clean = commit_all(repo, "clean")
    (repo / "dirty.py").write_text("import os\n")
    dirty = commit_all(repo, "unused import")
    assert run_recipe(repo, clean, ruff, linting).status == "ok"
    report = run_recipe(repo, dirty, ruff, linting)
    assert report.status == "failed" and report.steps[0].exit_code == 1
    assert "dirty.py:1:8: F401" in report.steps[0].stdout


def test_tools_in_an_environment_under_tmp_stay_visible(tmp_path: Path) -> None:
    """A checkout or virtualenv under /tmp (a CI clone) would be hidden by the sandbox's own /tmp: its
    root is bound back read-only; nothing else under /tmp is."""
    from codex_core.sandbox.confine import tool_roots

    venv_bin = tmp_path / "clone" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    path = os.pathsep.join([str(venv_bin), "/usr/bin", "/bin", str(tmp_path / "missing")])
    assert tool_roots(path) == [str(venv_bin.parent)]
