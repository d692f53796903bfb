"""Runs a user can see: ``feriactl agent run | runs | show``, the ``agent_run`` Dagster job, the run store.

Real: git repositories built here (registered, not ingested), real bubblewrap, ``feriactl`` as a
subprocess on a temporary CODEX_HOME, the job on an ephemeral Dagster instance.
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
from codex_core.sandbox import RunStore, find_recipe, load_policy, new_run_id, run_recipe
from tests.conftest import commit_all, git

HAS_BWRAP = any((Path(d) / "bwrap").exists() for d in os.environ.get("PATH", "").split(os.pathsep) if d)
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap is required: apt-get install bubblewrap")
FERIACTL = str(Path(sys.executable).parent / "feriactl")

CLEAN = "def add(a, b):\n    return a + b\n"
DIRTY = "import os\n\n\ndef add(a, b):\n    return a + b\n"  # F401: `os` imported but unused


def _project(root: Path, name: str, source: str) -> Path:
    repo = root / name
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text(source)
    commit_all(repo, f"{name} project")
    return repo


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CODEX_HOME with two registered repositories: `clean` passes ruff, `dirty` does not."""
    root = tmp_path_factory.mktemp("agent")
    codex_home = root / "home"
    registry = RepoRegistry(CodexHome(codex_home).registry_path)
    for name, source in (("clean", CLEAN), ("dirty", DIRTY)):
        registry.add(name, str(_project(root, name, source)))
    return codex_home


def feriactl(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FERIACTL, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CODEX_HOME": str(home)})


@pytest.fixture(scope="module")
def cli_runs(home: Path) -> dict[str, dict]:
    if not HAS_BWRAP:
        pytest.skip("bubblewrap is required: apt-get install bubblewrap")
    records = {}
    for repo, code in (("clean", 0), ("dirty", 1)):
        out = feriactl(home, "agent", "run", "--repo", repo, "--recipe", "ruff", "--json")
        assert out.returncode == code, out.stderr
        records[repo] = json.loads(out.stdout)
    return records


# --- the CLI ------------------------------------------------------------------------------------


@needs_bwrap
def test_agent_run_clean_is_ok_and_dirty_is_failed(cli_runs: dict[str, dict]) -> None:
    clean, dirty = cli_runs["clean"], cli_runs["dirty"]
    assert clean["status"] == "ok" and clean["repo"] == "clean" and clean["recipe"] == "ruff"
    assert clean["steps"][0]["exit_code"] == 0
    assert dirty["status"] == "failed"
    assert dirty["steps"][0]["status"] == "failed" and dirty["steps"][0]["exit_code"] == 1
    assert "F401" in dirty["steps"][0]["stdout"]
    assert len(clean["commit"]) == 40 and clean["policy"] == "linting"


@needs_bwrap
def test_runs_lists_newest_first_and_show_prints_the_steps(home: Path, cli_runs: dict[str, dict]) -> None:
    listed = feriactl(home, "agent", "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = [r["run_id"] for r in json.loads(listed.stdout)]
    assert ids[:2] == [cli_runs["dirty"]["run_id"], cli_runs["clean"]["run_id"]]

    table = feriactl(home, "agent", "runs").stdout
    row = next(line for line in table.splitlines() if line.startswith(cli_runs["dirty"]["run_id"]))
    assert "dirty" in row and "ruff" in row and "failed" in row

    shown = feriactl(home, "agent", "show", cli_runs["dirty"]["run_id"])
    assert shown.returncode == 0, shown.stderr
    assert "# Sandbox run: `ruff` — **failed**" in shown.stdout
    assert "| 1 | `ruff check --no-cache --output-format concise .` | failed | 1 |" in shown.stdout
    assert "F401" in shown.stdout and cli_runs["dirty"]["run_id"] in shown.stdout


@needs_bwrap
def test_the_cli_run_is_a_dagster_run_on_the_codex_home_instance(home: Path, cli_runs: dict[str, dict]) -> None:
    import dagster as dg

    record = cli_runs["clean"]
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        run = instance.get_run_by_id(record["dagster_run_id"])
        assert run is not None and run.job_name == "agent_run"
        assert run.tags["codex/recipe"] == "ruff" and run.tags["dagster/partition"] == "clean"
        assert run.status == dg.DagsterRunStatus.SUCCESS
    finally:
        instance.dispose()


def test_unknown_recipe_and_unknown_run_id_are_clear_errors(home: Path) -> None:
    out = feriactl(home, "agent", "run", "--repo", "clean", "--recipe", "no-such-recipe")
    assert out.returncode == 2
    assert "no recipe named 'no-such-recipe'" in out.stderr and "ruff" in out.stderr

    out = feriactl(home, "agent", "run", "--repo", "ghost", "--recipe", "ruff")
    assert out.returncode == 2 and "repository 'ghost' is not registered" in out.stderr

    for run_id in ("0" * 32, "../../etc"):
        out = feriactl(home, "agent", "show", run_id)
        assert out.returncode == 2 and "no agent run" in out.stderr and "Traceback" not in out.stderr


# --- the Dagster job ----------------------------------------------------------------------------


def _execute(home: Path, repo: str, **config):
    import dagster as dg

    from codex_assets.agent import agent_run_job, run_tags
    from codex_resources import CodexHomeResource

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("repos", [repo])
    result = agent_run_job.execute_in_process(
        run_config={"ops": {"sandbox_run": {"config": config}}}, instance=instance, partition_key=repo,
        resources={"codex_home": CodexHomeResource(root=str(home))}, raise_on_error=False,
        tags=run_tags(config["recipe"], config.get("tenant", "")),
    )
    return instance, result


@needs_bwrap
def test_the_job_tags_the_run_and_shows_the_report_as_metadata(home: Path) -> None:
    instance, result = _execute(home, "dirty", recipe="ruff", tenant="acme")
    assert result.success  # a failing step is a completed run whose status says so
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["codex/recipe"] == "ruff" and run.tags["codex/tenant"] == "acme"
    assert run.tags["dagster/partition"] == "dirty"
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: getattr(v, "value", v) for k, v in output.event_specific_data.metadata.items()}
    assert metadata["status"] == "failed"
    assert metadata["run_id"] == result.output_for_node("sandbox_run")
    assert "| 1 | `ruff check --no-cache --output-format concise .` | failed | 1 |" in metadata["steps"]
    assert "**failed**" in metadata["report"] and "tenant `acme`" in metadata["report"]
    stored = RunStore(CodexHome(home)).load(metadata["run_id"])
    assert stored["tenant"] == "acme" and stored["dagster_run_id"] == result.run_id


def test_an_unknown_recipe_fails_the_dagster_run_with_the_message(home: Path) -> None:
    _, result = _execute(home, "clean", recipe="no-such-recipe")
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no recipe named 'no-such-recipe'" in failure.event_specific_data.user_failure_data.description


# --- the store ----------------------------------------------------------------------------------


@needs_bwrap
def test_the_store_keeps_artifacts_and_leaves_no_partial_run(tmp_path: Path, home: Path) -> None:
    repo = Path(RepoRegistry(CodexHome(home).registry_path).get("clean").source)
    recipe = find_recipe("ruff")
    report = run_recipe(repo, "HEAD", recipe, load_policy(recipe.policy))
    store = RunStore(CodexHome(tmp_path))
    staged = tmp_path / "artifacts"
    (staged / "out").mkdir(parents=True)
    (staged / "out" / "a.txt").write_text("evidence")
    from dataclasses import replace

    from codex_core.sandbox import ArtifactResult

    report = replace(report, artifacts=(ArtifactResult("out/a.txt", "collected", 8, "x"),
                                        ArtifactResult("gone.txt", "missing")))
    run_id = new_run_id()
    record = store.save(report, run_id=run_id, repo="clean", artifacts_from=staged)
    assert record["artifacts"][0]["stored_at"] == "artifacts/out/a.txt"
    assert (store.run_dir(run_id) / "artifacts" / "out" / "a.txt").read_text() == "evidence"
    assert record["artifacts"][1]["stored_at"] is None
    assert store.load(run_id) == record and "**ok**" in store.markdown(run_id)
    (store.root / f".{new_run_id()}.partial").mkdir()  # what a killed run leaves behind
    assert [r["run_id"] for r in store.list()] == [run_id]
    with pytest.raises(FileExistsError):
        store.save(report, run_id=run_id, repo="clean")
