"""The agent API a user can see: POST a sandbox run, poll it, list runs, who sees what, the run cap, metrics.

Real: the serving app (TestClient), a CODEX_HOME built here with registered git repositories (not
ingested), ``feriactl agent run`` started by the API as a detached process (the ``agent_run`` Dagster
job on the CODEX_HOME instance, real bubblewrap), tenants with real keys. Tests that start the
sandbox skip (saying why) where ``bwrap`` is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from codex_core.sandbox import RunStore, load_policy, load_recipe, new_run_id, run_recipe
from codex_core.sandbox.pending import PendingRuns
from serving.app import create_app
from serving.auth import TenantStore
from serving.engine import QueryEngine
from serving.killswitch import KillSwitch
from serving.logs import AccessLog
from serving.quotas import quota_config_from_dict
from tests.conftest import commit_all, git
from tests.sandbox.test_debug import CALC, TEST_ID, TESTS
from tests.serving.conftest import PERMISSIVE_QUOTAS, CapturedLog
from tests.support.llm import closed_port, offline_answerer

HAS_BWRAP = any((Path(d) / "bwrap").exists() for d in os.environ.get("PATH", "").split(os.pathsep) if d)
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap is required: apt-get install bubblewrap")

CLEAN = "def add(a, b):\n    return a + b\n"
DIRTY = "import os\n\n\ndef add(a, b):\n    return a + b\n"  # F401: `os` imported but unused
RUN_TIMEOUT_S = 240
SIGNING_KEY = "agent-api-test-signing-key-0123456789"  # CODEX_SNAPSHOT_KEY: signs a run's evidence


def make_home(root: Path) -> Path:
    """A CODEX_HOME with two registered repositories: `clean` passes ruff, `dirty` does not."""
    home = root / "home"
    registry = RepoRegistry(CodexHome(home).registry_path)
    for name, source in (("clean", CLEAN), ("dirty", DIRTY)):
        repo = root / name
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "calc.py").write_text(source)
        commit_all(repo, f"{name} project")
        registry.add(name, str(repo))
    return home


def add_buggy_repo(home: Path, root: Path) -> None:
    """Register `calc`: add() subtracts, and test_calc.py::test_add fails (tests/sandbox/test_debug.py's fixture)."""
    repo = root / "calc"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text(CALC)
    (repo / "test_calc.py").write_text(TESTS)
    commit_all(repo, "add() with a planted bug")
    RepoRegistry(CodexHome(home).registry_path).add("calc", str(repo))


def wait_until_done(client: TestClient, run_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Poll GET until the run is stored or lost; every answer on the way is queued or running."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        response = client.get(f"/v1/agent/runs/{run_id}", headers=headers or {})
        assert response.status_code == 200, response.text
        view = response.json()
        if view["stored"] or view["status"] == "lost":
            return view
        assert view["status"] in ("queued", "running"), view
        time.sleep(0.5)
    raise AssertionError(f"agent run {run_id} did not finish within {RUN_TIMEOUT_S} s")


def blocked_run(home: Path, tmp: Path, *, tenant: str = "", keys: list[str] | None = None) -> str:
    """A stored run whose step is `curl` (denied by the policy): blocked before anything runs."""
    recipe_file = tmp / f"fetch-{new_run_id()[:6]}.yaml"
    recipe_file.write_text("name: fetch\npolicies: linting\nsteps:\n  - run: curl https://example.com\n")
    recipe = load_recipe(recipe_file)
    repo = RepoRegistry(CodexHome(home).registry_path).get("clean").source
    report = run_recipe(repo, "HEAD", recipe, load_policy(recipe.policy))
    run_id = new_run_id()
    RunStore(CodexHome(home), keys=keys or []).save(report, run_id=run_id, repo="clean", tenant=tenant)
    return run_id


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- a run from POST to report --------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("agent-api"))


@pytest.fixture(scope="module")
def api_runs(agent_home: Path, embedder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two runs asked for through the API at once (the cap is 2) and polled until stored (once per module).

    The runs' processes inherit the test's environment, with the signing key set: their evidence is signed.
    """
    if not HAS_BWRAP:
        pytest.skip("bubblewrap is required: apt-get install bubblewrap")
    log = CapturedLog()
    app = create_app(
        lambda: QueryEngine(CodexHome(agent_home), embedder=embedder, answerer=offline_answerer()),
        state_dir=tmp_path_factory.mktemp("agent-api-state"), quotas=quota_config_from_dict(PERMISSIVE_QUOTAS),
        access_log=AccessLog(log.logger), env={"CODEX_SNAPSHOT_KEY": SIGNING_KEY},
    )
    with pytest.MonkeyPatch.context() as env, TestClient(app) as client:
        env.setenv("CODEX_SNAPSHOT_KEY", SIGNING_KEY)
        env.delenv("CODEX_SNAPSHOT_PREVIOUS_KEYS", raising=False)
        accepted = {}
        for repo in ("clean", "dirty"):
            response = client.post("/v1/agent/run", json={"repo": repo, "recipe": "ruff", "note": "lint it"})
            assert response.status_code == 202, response.text
            accepted[repo] = response.json()
        first = client.get(f"/v1/agent/runs/{accepted['clean']['run_id']}").json()
        done = {repo: wait_until_done(client, body["run_id"]) for repo, body in accepted.items()}
    return {"accepted": accepted, "first": first, "done": done, "log": log.records()}


@needs_bwrap
def test_post_starts_a_dagster_run_and_get_shows_its_steps(api_runs: dict[str, Any], agent_home: Path) -> None:
    accepted, done = api_runs["accepted"], api_runs["done"]
    assert accepted["clean"]["status"] == "queued" and len(accepted["clean"]["run_id"]) == 32
    first = api_runs["first"]
    assert first["status"] in ("queued", "running") and first["stored"] is False
    assert first["repo"] == "clean" and first["recipe"] == "ruff" and first["note"] == "lint it"
    assert first["task"] == "recipe"

    clean, dirty = done["clean"], done["dirty"]
    assert clean["stored"] and clean["status"] == "ok" and clean["run_id"] == accepted["clean"]["run_id"]
    assert clean["task"] == "recipe" and "fix" not in clean
    [step] = clean["steps"]
    assert step["command"] == "ruff check --no-cache --output-format concise ." and step["exit_code"] == 0
    assert step["verdict"] == "ok" and step["duration_sec"] > 0
    assert len(clean["commit"]) == 40 and clean["policy"] == "linting"
    assert clean["signature"]["status"] == "valid" and clean["signature"]["ok"] is True
    assert clean["signature"]["files_checked"] >= 4  # report.json, report.md, the step's two logs
    assert dirty["status"] == "failed"
    assert dirty["steps"][0]["exit_code"] == 1 and "F401" in dirty["steps"][0]["stdout_tail"]

    # The run is a real Dagster run on the CODEX_HOME instance: it is in the Dagster UI.
    import dagster as dg

    # The record is stored by the op; the run itself finishes a moment later: wait for that.
    instance = dg.DagsterInstance.from_config(str(agent_home / "dagster"))
    try:
        deadline = time.monotonic() + 60
        run = instance.get_run_by_id(clean["dagster_run_id"])
        while run is not None and not run.is_finished and time.monotonic() < deadline:
            time.sleep(0.2)
            run = instance.get_run_by_id(clean["dagster_run_id"])
        assert run is not None and run.job_name == "agent_run" and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["codex/recipe"] == "ruff" and run.tags["dagster/partition"] == "clean"
    finally:
        instance.dispose()


@needs_bwrap
def test_the_run_id_is_in_the_access_log_and_the_agent_log(api_runs: dict[str, Any], agent_home: Path) -> None:
    run_id = api_runs["accepted"]["clean"]["run_id"]
    [post] = [r for r in api_runs["log"] if r["path"] == "/v1/agent/run" and r.get("run_id") == run_id]
    assert post["status"] == 202 and post["tenant"] == "local"

    # The op marked the pending record running, with its Dagster run id, before the sandbox started.
    pending = PendingRuns(CodexHome(agent_home))
    marked = json.loads(pending.record_path(run_id).read_text())
    assert marked["running_at"] and marked["dagster_run_id"] == api_runs["done"]["clean"]["dagster_run_id"]

    # The detached process' output (its log in the pending area): one JSON line at start and finish.
    log = pending.log_path(run_id).read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith('{"ts"')]
    start, finish = [e for e in events if e["svc"] == "codex-agent"]
    assert (start["event"], finish["event"]) == ("agent_run_start", "agent_run_finish")
    assert start["run_id"] == finish["run_id"] == run_id
    assert finish["dagster_run_id"] == api_runs["done"]["clean"]["dagster_run_id"]
    assert finish["status"] == "ok" and finish["repo"] == "clean" and finish["recipe"] == "ruff"
    assert finish["duration_sec"] > 0


@needs_bwrap
def test_a_restarted_server_lists_the_runs_newest_first_and_counts_them(api_runs, agent_home, make_app) -> None:
    app, _ = make_app(home=agent_home)  # state is on disk: a new app sees the same runs
    with TestClient(app) as client:
        listed = client.get("/v1/agent/runs").json()
        text = client.get("/metrics").text
    ids = [r["run_id"] for r in listed["runs"]]
    assert set(ids) == {api_runs["accepted"][r]["run_id"] for r in ("clean", "dirty")}
    finished = [r["finished_at"] for r in listed["runs"]]
    assert finished == sorted(finished, reverse=True)
    assert sample(text, "agent_runs_total", recipe="ruff", status="ok") == 1
    assert sample(text, "agent_runs_total", recipe="ruff", status="failed") == 1
    assert sample(text, "agent_run_seconds_count", recipe="ruff") == 2
    assert sample(text, "sandbox_violations_total", kind="policy") == 0


# --- what is refused, and how ----------------------------------------------------------------------


@pytest.fixture
def fresh_home(tmp_path: Path) -> Path:
    (tmp_path / "agent").mkdir()
    return make_home(tmp_path / "agent")


def test_bad_requests_say_what_is_wrong(fresh_home: Path, make_app) -> None:
    app, _ = make_app(home=fresh_home)
    with TestClient(app) as client:
        ghost = client.post("/v1/agent/run", json={"repo": "ghost", "recipe": "ruff"})
        assert ghost.status_code == 404
        assert "no repository 'ghost'" in ghost.json()["detail"] and "clean, dirty" in ghost.json()["detail"]

        unknown = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "no-such-recipe"})
        assert unknown.status_code == 422
        assert "no recipe named 'no-such-recipe'" in unknown.json()["detail"] and "ruff" in unknown.json()["detail"]

        missing = client.post("/v1/agent/run", json={"repo": "clean", "inputs": {"commit": "deadbeef"}})
        assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "recipe"]
        misspelt = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff", "inputs": {"comit": "x"}})
        assert misspelt.status_code == 422
        option = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff", "inputs": {"commit": "--all"}})
        assert option.status_code == 422  # never reaches git as an option
        assert client.post("/v1/agent/run", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422

        no_commit = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff",
                                                        "inputs": {"commit": "0123456789abcdef"}})
        assert no_commit.status_code == 422 and "cannot run on '0123456789abcdef' of 'clean'" in no_commit.json()[
            "detail"]

        malformed = client.get("/v1/agent/runs/..%2F..%2Fetc")
        assert malformed.status_code in (404, 422)
        malformed = client.get("/v1/agent/runs/not-a-run")
        assert malformed.status_code == 422 and "32 hex digits" in malformed.json()["detail"]
        unknown_id = client.get(f"/v1/agent/runs/{'0' * 32}")
        assert unknown_id.status_code == 404 and "no agent run" in unknown_id.json()["detail"]
        assert client.get("/v1/agent/runs").json() == {"runs": [], "total": 0}
    assert not (RunStore(CodexHome(fresh_home)).root / ".pending").exists() or not list(
        (RunStore(CodexHome(fresh_home)).root / ".pending").glob("*.json"))  # nothing was started


def test_the_kill_switch_stops_new_runs_but_not_reading_them(fresh_home: Path, make_app, tmp_path: Path) -> None:
    KillSwitch(tmp_path / "state").set(True, "sandbox maintenance", set_by="test")
    app, log = make_app(home=fresh_home)
    with TestClient(app) as client:
        refused = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff"})
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert "stopped by the kill-switch: sandbox maintenance" in refused.json()["detail"]
        assert client.get("/v1/agent/runs").status_code == 200
    assert log.records()[0]["throttle"] == "kill_switch"


@needs_bwrap
def test_tenants_run_for_themselves_and_see_only_their_runs(fresh_home: Path, make_app, tmp_path: Path) -> None:
    tenants = TenantStore(tmp_path / "state" / "tenants.json")
    alice = tenants.add("alice", "user", ["clean"])
    bob = tenants.add("bob", "user")
    ops = tenants.add("ops", "admin")
    ana = tenants.add("ana", "analyst")
    bobs_run = blocked_run(fresh_home, tmp_path, tenant="bob")
    unowned = blocked_run(fresh_home, tmp_path)  # a CLI run for nobody: operators only

    app, _ = make_app(home=fresh_home)
    with TestClient(app) as client:
        assert client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff"}).status_code == 401
        other = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff", "tenant": "bob"},
                            headers=bearer(alice))
        assert other.status_code == 403 and "may only start agent runs for itself" in other.json()["detail"]
        hidden = client.post("/v1/agent/run", json={"repo": "dirty", "recipe": "ruff"}, headers=bearer(alice))
        assert hidden.status_code == 404 and "registered for you: clean;" in hidden.json()["detail"]

        mine = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff"}, headers=bearer(alice))
        assert mine.status_code == 202, mine.text
        alices_run = mine.json()["run_id"]
        done = wait_until_done(client, alices_run, bearer(alice))
        assert done["status"] == "ok" and done["tenant"] == "alice"

        def ids(key: str) -> set[str]:
            return {r["run_id"] for r in client.get("/v1/agent/runs", headers=bearer(key)).json()["runs"]}

        assert ids(alice) == {alices_run}
        assert ids(bob) == {bobs_run}
        assert ids(ops) == ids(ana) == {alices_run, bobs_run, unowned}
        assert client.get(f"/v1/agent/runs/{bobs_run}", headers=bearer(alice)).status_code == 404
        assert client.get(f"/v1/agent/runs/{alices_run}", headers=bearer(bob)).status_code == 404
        assert client.get(f"/v1/agent/runs/{unowned}", headers=bearer(bob)).status_code == 404
        assert client.get(f"/v1/agent/runs/{bobs_run}", headers=bearer(ana)).json()["status"].startswith("blocked")

        # An admin may start a run on someone's behalf, but only for a tenant that exists.
        ghost = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff", "tenant": "ghost"},
                            headers=bearer(ops))
        assert ghost.status_code == 422 and "no tenant 'ghost'" in ghost.json()["detail"]


@needs_bwrap
def test_the_cap_refuses_a_third_run_until_a_slot_frees(fresh_home: Path, make_app) -> None:
    """Two pending runs whose processes are alive hold both slots; one dying (lost) frees one."""
    holder = PendingRuns(CodexHome(fresh_home))
    sleeper = [sys.executable, "-u", "-c", "print('importing the job'); import time; time.sleep(120)"]
    held = [holder.start(new_run_id(), sleeper, repo="clean", recipe="ruff") for _ in range(2)]
    try:
        app, log = make_app(home=fresh_home)
        with TestClient(app) as client:
            refused = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff"})
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
            assert "2 agent runs are queued or running, the limit is 2" in refused.json()["detail"]
            listed = client.get("/v1/agent/runs").json()["runs"]
            assert {r["status"] for r in listed} == {"queued"} and len(listed) == 2

            os.kill(held[0]["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 10
            while (lost := client.get(f"/v1/agent/runs/{held[0]['run_id']}").json())["status"] != "lost":
                assert time.monotonic() < deadline, lost
                time.sleep(0.1)
            assert "importing the job" in lost["log_tail"] and "POST again" in lost["hint"]

            accepted = client.post("/v1/agent/run", json={"repo": "clean", "recipe": "ruff"})
            assert accepted.status_code == 202, accepted.text
            assert wait_until_done(client, accepted.json()["run_id"])["status"] == "ok"
        assert [r["throttle"] for r in log.records() if r["path"] == "/v1/agent/run"][0] == "agent_runs"
    finally:
        for record in held:
            try:
                os.kill(record["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        for record in held:
            holder.get(record["run_id"])  # polls (reaps) the children this object started


@needs_bwrap
def test_get_rechecks_the_signed_evidence_and_names_a_tampered_file(fresh_home, make_app, tmp_path) -> None:
    run_id = blocked_run(fresh_home, tmp_path, keys=[SIGNING_KEY])
    unsigned = blocked_run(fresh_home, tmp_path)
    app, _ = make_app(home=fresh_home, env={"CODEX_SNAPSHOT_KEY": SIGNING_KEY})
    with TestClient(app) as client:
        signature = client.get(f"/v1/agent/runs/{run_id}").json()["signature"]
        assert signature["status"] == "valid" and signature["ok"] is True and signature["problems"] == []
        (RunStore(CodexHome(fresh_home)).run_dir(run_id) / "report.md").write_text("# all green\n")
        signature = client.get(f"/v1/agent/runs/{run_id}").json()["signature"]
        assert signature["ok"] is False and signature["modified"] == ["report.md"]
        signature = client.get(f"/v1/agent/runs/{unsigned}").json()["signature"]
        assert signature["status"] == "unsigned" and signature["ok"] is False


# --- metrics from the run store ----------------------------------------------------------------------


@needs_bwrap
def test_metrics_count_stored_runs_and_sandbox_violations(fresh_home: Path, make_app, tmp_path: Path) -> None:
    app, _ = make_app(home=fresh_home)
    with TestClient(app) as client:
        before = client.get("/metrics").text
        assert sample(before, "sandbox_violations_total", kind="policy") == 0
        assert sample(before, "agent_runs_total", recipe="fetch", status="blocked") is None

        blocked_run(fresh_home, tmp_path)  # stored by another process' code path, not through this app
        after = client.get("/metrics").text
        assert sample(after, "agent_runs_total", recipe="fetch", status="blocked") == 1  # "blocked: ..." normalised
        assert sample(after, "sandbox_violations_total", kind="policy") == 1
        assert sample(after, "sandbox_violations_total", kind="timeout") == 0
        assert sample(after, "agent_run_seconds_count", recipe="fetch") == 1

        blocked_run(fresh_home, tmp_path)
        assert sample(client.get("/metrics").text, "sandbox_violations_total", kind="policy") == 2


# --- the debug agent as a task ------------------------------------------------------------------------


def test_fix_requests_that_cannot_run_are_refused(fresh_home: Path, make_app, tmp_path: Path) -> None:
    add_buggy_repo(fresh_home, tmp_path / "agent")
    app, _ = make_app(home=fresh_home)

    def fix(test: Any = TEST_ID, **more: Any):
        return client.post("/v1/agent/run", json={"task": "fix", "repo": "calc", "inputs": {"test": test}, **more})

    with TestClient(app) as client:
        unknown = client.post("/v1/agent/run", json={"task": "lint before merge", "repo": "clean", "recipe": "ruff"})
        assert unknown.status_code == 422
        [problem] = unknown.json()["detail"]
        assert problem["loc"] == ["body", "task"]
        assert "unknown task 'lint before merge'" in problem["msg"] and "'recipe'" in problem["msg"]
        assert "'fix'" in problem["msg"] and "'note'" in problem["msg"]

        no_test = client.post("/v1/agent/run", json={"task": "fix", "repo": "calc"})
        assert no_test.status_code == 422 and no_test.json()["detail"][0]["loc"] == ["body", "inputs"]
        assert "needs inputs.test" in no_test.json()["detail"][0]["msg"]
        for bad in ("", "-x", "--collect-only", "../outside.py::test_x", "/etc/passwd", "tests/../../x.py",
                    "test_calc.py::test add", "test_calc.py::test_add\n--pdb", "t" * 301, 3):
            refused = fix(bad)
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["detail"][0]["loc"][:3] == ["body", "inputs", "test"], bad
        assert "is not a pytest node id" in fix("-x").json()["detail"][0]["msg"]

        other_recipe = fix(recipe="ruff")
        assert other_recipe.status_code == 422 and "leave recipe out" in other_recipe.json()["detail"][0]["msg"]
        test_for_a_recipe = client.post("/v1/agent/run", json={"repo": "calc", "recipe": "ruff",
                                                               "inputs": {"test": TEST_ID}})
        assert test_for_a_recipe.status_code == 422 and "for task 'fix'" in test_for_a_recipe.json()["detail"][0]["msg"]
        # No model server can be named by a request: the server's configs/models.toml decides (no SSRF).
        assert fix(llm_url="http://169.254.169.254/").status_code == 422
        assert client.post("/v1/agent/run", json={"task": "fix", "repo": "calc", "inputs": {
            "test": TEST_ID, "llm_url": "http://10.0.0.1:8080"}}).status_code == 422

        missing_file = fix("tests/test_nothing.py::test_x")
        assert missing_file.status_code == 422
        assert "no 'tests/test_nothing.py' at 'HEAD' of 'calc'" in missing_file.json()["detail"]
        wrong_commit = client.post("/v1/agent/run", json={"task": "fix", "repo": "calc",
                                                          "inputs": {"test": TEST_ID, "commit": "0123456789abcdef"}})
        assert wrong_commit.status_code == 422 and "cannot run on '0123456789abcdef'" in wrong_commit.json()["detail"]
        assert client.post("/v1/agent/run", json={"task": "fix", "repo": "ghost", "inputs": {"test": TEST_ID}}
                           ).status_code == 404
    pending = RunStore(CodexHome(fresh_home)).root / ".pending"
    assert not pending.exists() or not list(pending.glob("*.json"))  # nothing was started


@needs_bwrap
def test_a_fix_task_runs_the_debug_agent_and_shows_its_cited_diagnosis(
        fresh_home: Path, make_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No model answers (the server's models.toml points at a closed port): the run stops at the diagnosis."""
    add_buggy_repo(fresh_home, tmp_path / "agent")
    port = closed_port()
    models = tmp_path / "models.toml"
    models.write_text(f'[routes.small]\nchain = ["fixer"]\n\n[[models]]\nname = "fixer"\nbackend = "openai"\n'
                      f'base_url = "http://127.0.0.1:{port}"\n')
    monkeypatch.setenv("CODEX_MODELS_CONFIG", str(models))  # the detached run inherits the server's environment
    monkeypatch.setenv("CODEX_SNAPSHOT_KEY", SIGNING_KEY)
    monkeypatch.delenv("CODEX_SNAPSHOT_PREVIOUS_KEYS", raising=False)
    tenants = TenantStore(tmp_path / "state" / "tenants.json")
    alice = tenants.add("alice", "user", ["calc"])
    bob = tenants.add("bob", "user", ["calc"])
    ops = tenants.add("ops", "admin")

    app, _ = make_app(home=fresh_home, env={"CODEX_SNAPSHOT_KEY": SIGNING_KEY})
    with TestClient(app) as client:
        accepted = client.post("/v1/agent/run", headers=bearer(alice), json={
            "task": "fix", "repo": "calc", "inputs": {"test": TEST_ID}, "note": "why does add() fail?"})
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]
        first = client.get(f"/v1/agent/runs/{run_id}", headers=bearer(alice)).json()
        assert first["stored"] is False and first["status"] in ("queued", "running")
        assert (first["task"], first["recipe"], first["test"]) == ("fix", "fix", TEST_ID)
        assert first["note"] == "why does add() fail?" and first["tenant"] == "alice"

        done = wait_until_done(client, run_id, bearer(alice))
        assert done["stored"], done
        assert done["status"] == "diagnosed" and done["task"] == "fix" and done["recipe"] == "fix"
        assert done["tenant"] == "alice" and len(done["commit"]) == 40
        fix = done["fix"]
        assert fix["status"] == "diagnosed" and fix["test_id"] == TEST_ID and fix["commit"] == done["commit"]
        assert "no LLM reachable" in fix["reason"] and "fixer" in fix["reason"]
        first_suspect = fix["suspects"][0]
        assert first_suspect["ref"] == "calc.py:4-6" and first_suspect["source"] == "definition"
        assert (first_suspect["path"], first_suspect["line_start"], first_suspect["line_end"]) == ("calc.py", 4, 6)
        assert first_suspect["snippet"].endswith("    return a - b\n")
        assert fix["attempts"] == [] and fix["diff"] == ""
        assert fix["before"]["verdict"] == "failed" and fix["before"]["command"].startswith("pytest ")
        [before] = done["steps"]
        assert before["verdict"] == "failed" and "assert -1 == 5" in before["stdout_tail"]
        assert {a["path"] for a in done["artifacts"]} == {"fix.json"}
        assert done["signature"]["status"] == "valid" and done["signature"]["ok"] is True

        # The process marked its pending record running before it started the sandbox.
        marked = json.loads(PendingRuns(CodexHome(fresh_home)).record_path(run_id).read_text())
        assert marked["running_at"] and marked["test"] == TEST_ID

        # Another tenant does not see it, even on a repository it may use; an admin does.
        assert client.get(f"/v1/agent/runs/{run_id}", headers=bearer(bob)).status_code == 404
        assert run_id not in {r["run_id"] for r in client.get("/v1/agent/runs", headers=bearer(bob)).json()["runs"]}
        listed = client.get("/v1/agent/runs", headers=bearer(ops)).json()["runs"]
        assert [(r["recipe"], r["status"]) for r in listed if r["run_id"] == run_id] == [("fix", "diagnosed")]
        assert sample(client.get("/metrics").text, "agent_runs_total", recipe="fix", status="diagnosed") == 1
