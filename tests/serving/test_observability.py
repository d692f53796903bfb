"""Metrics, JSON access logs, dashboard + alert files, and the GPU governor.

There is no GPU on these machines: NVML really is missing here, and the "GPU absent" tests use the
real pynvml path. The governor's decisions under memory/heat pressure are exercised with
``FakeNvml``, a typed stand-in at the NVML boundary (documented below), and the demoted generation
goes over real HTTP to the recorded Ollama responses of tests/core/test_llm.py.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from codex_core.llm import config_from_dict
from serving.gpu import GovernedAnswerer, GpuGovernor, GpuSample, GpuUnavailable, NvmlReader, decide
from serving.logs import mask
from serving.metrics import GPU_METRICS, METRIC_CATALOG, exposed_names
from tests.core.test_llm import CONTEXTS, MEDIUM, SMALL, RecordedServer, Scripted, make_config

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3


class FakeNvml:
    """Typed fake of the NVML boundary (no GPU here): returns the samples a test sets, or raises like NVML."""

    def __init__(self, *samples: GpuSample, unavailable: str | None = None):
        self.samples = list(samples)
        self.unavailable = unavailable

    def read(self) -> list[GpuSample]:
        if self.unavailable:
            raise GpuUnavailable(self.unavailable)
        return list(self.samples)


def sample(used_gib: float, temp: float = 60.0, total_gib: float = 24.0, index: int = 0) -> GpuSample:
    return GpuSample(index, "Fake RTX", int(used_gib * GIB), int(total_gib * GIB), 55.0, temp)


# ---------------------------------------------------------------- /metrics


def value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def metric_families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_metrics_expose_the_catalog_and_no_gpu_gauges_without_nvml(make_app) -> None:
    app, _ = make_app()  # the default governor: real NVML, which is absent on this machine
    with TestClient(app) as client:
        body = client.post("/v1/query", json={"query": "how is the cart total computed"}).json()
        assert body["model"] == "extractive"
        text = client.get("/metrics").text
        health = client.get("/v1/health").json()

    families = metric_families(text)
    for metric in METRIC_CATALOG:
        if metric in GPU_METRICS:
            assert metric not in families, f"{metric} must be absent (not 0) without NVML"
        else:
            assert metric in families, metric
    assert not re.search(r"^gpu_", text, re.M)
    assert 'router_requests_total{model="extractive",route="extractive"} 1.0' in text
    assert 'router_latency_seconds_count{route="extractive"} 1.0' in text
    assert "rag_latency_seconds_count 1.0" in text
    assert 'queue_depth{queue="fast"} 0.0' in text
    # No LLM here: the outage walk shows up as fallback hops ending in the extractive answer.
    assert re.search(r'llm_fallback_total\{from="[^"]+",to="extractive"\} 1\.0', text)
    assert health["gpu"]["available"] is False and health["gpu"]["governor"] == "inert"
    assert "NVML" in health["gpu"]["reason"] or "nvml" in health["gpu"]["reason"].lower()


def test_two_apps_do_not_share_counters(make_app) -> None:
    first, _ = make_app()
    second, _ = make_app()
    with TestClient(first) as a, TestClient(second) as b:
        a.post("/v1/query", json={"query": "cart total"})
        assert 'admit_total{queue="fast"} 1.0' in a.get("/metrics").text
        assert 'admit_total{queue="fast"} 0.0' in b.get("/metrics").text


def test_gpu_gauges_present_when_nvml_reads(make_app) -> None:
    governor = GpuGovernor(FakeNvml(sample(6.0, 61.0)), sample_every_s=0.0)
    app, _ = make_app(governor=governor)
    with TestClient(app) as client:
        text = client.get("/metrics").text
        health = client.get("/v1/health").json()
    assert value(text, "gpu_memory_bytes", gpu="0") == 6 * GIB
    assert value(text, "gpu_memory_total_bytes", gpu="0") == 24 * GIB
    assert value(text, "gpu_temperature_celsius", gpu="0") == 61.0
    assert value(text, "gpu_utilization", gpu="0") == 55.0
    assert health["gpu"]["available"] is True and health["gpu"]["governor"] == "normal"


def test_real_nvml_reader_reports_why_it_is_unavailable() -> None:
    with pytest.raises(GpuUnavailable) as missing:
        NvmlReader().read()
    assert str(missing.value)


# ---------------------------------------------------------------- JSON logs


def test_one_masked_json_line_per_request(make_app) -> None:
    app, log = make_app()
    secret_query = (
        "how is the cart total computed? my email is jane.doe@example.com, password=hunter2, "
        "token: ghp_abcdefghijklmnopqrstuvwxyz0123456789"
    )
    with TestClient(app) as client:
        body = client.post("/v1/query", json={"query": secret_query},
                           headers={"Authorization": "Bearer pcx_deadbeef_notarealkeybutlongenough123"}).json()
        client.get("/v1/health")
    records = log.records()
    assert [r["path"] for r in records] == ["/v1/query", "/v1/health"]
    line = records[0]
    for field in ("ts", "svc", "trace_id", "tenant", "route", "model", "lat_ms", "confidence", "admit", "throttle",
                  "status"):
        assert field in line, field
    assert line["svc"] == "codex-serving" and line["trace_id"] == body["trace_id"] and line["status"] == 200
    assert line["route"] == "extractive" and line["model"] == "extractive" and line["admit"] is True
    assert line["throttle"] is None and line["tenant"] == "local" and isinstance(line["lat_ms"], float)
    for leaked in ("jane.doe@example.com", "hunter2", "ghp_abcdefghij", "pcx_deadbeef"):
        assert leaked not in log.text, leaked
    # Neither the answer nor any snippet is logged.
    assert body["answer"] not in log.text
    assert all(c["snippet"].splitlines()[0] not in log.text for c in body["citations"])


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("api_key=sk-live-0123456789abcdef0123", "sk-live"),
        ("PASSWORD is 'correct horse'", "correct horse"),
        ("mail bob+ops@corp.example.org now", "bob+ops@corp.example.org"),
        ("aws AKIAABCDEFGHIJKLMNOP here", "AKIAABCDEFGHIJKLMNOP"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFU", "eyJhbGci"),
    ],
)
def test_mask_removes_secrets_and_personal_data(text: str, gone: str) -> None:
    assert gone not in mask(text)


def test_mask_keeps_ordinary_questions() -> None:
    question = "where is retry_with_backoff defined in app/retry.py?"
    assert mask(question) == question


# ---------------------------------------------------------------- dashboard and alerts

PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "rate", "irate", "increase", "histogram_quantile", "clamp_min", "clamp_max",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "abs", "topk",
    "bottomk", "avg_over_time", "max_over_time", "delta", "deriv", "absent", "vector", "scalar", "offset",
}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers outside label matchers, groupings and strings."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "", stripped)))
    return names - PROMQL_WORDS


CATALOG_NAMES = set().union(*(exposed_names(m) for m in METRIC_CATALOG))


def check_expr(expr: str) -> None:
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    names = metric_names(expr)
    assert names, f"no metric in {expr!r}"
    assert names <= CATALOG_NAMES, f"{expr!r} reads {sorted(names - CATALOG_NAMES)}, not in the catalog"


def test_grafana_dashboard_only_uses_catalog_metrics_and_covers_it() -> None:
    dashboard = json.loads((ROOT / "configs" / "grafana" / "codex.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        check_expr(expr)
    used = set().union(*(metric_names(e) for e in exprs))
    for metric in METRIC_CATALOG:
        assert exposed_names(metric) & used, f"no panel shows {metric}"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_alerts_parse_and_cover_the_required_conditions() -> None:
    rules = yaml.safe_load((ROOT / "configs" / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for rule in alerts.values():
        check_expr(rule["expr"])
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
    p95_warn, p95_crit = alerts["CodexQueryLatencyP95High"], alerts["CodexQueryLatencyP95Critical"]
    for rule, threshold, severity in ((p95_warn, "1.5", "warning"), (p95_crit, "2.5", "critical")):
        assert "histogram_quantile(0.95" in rule["expr"] and "router_latency_seconds_bucket" in rule["expr"]
        assert rule["expr"].rstrip().endswith(f"> {threshold}") and rule["for"] == "5m"
        assert rule["labels"]["severity"] == severity
    assert 'queue_depth{queue="fast"}' in alerts["CodexFastQueueBacklog"]["expr"]
    gpu = alerts["CodexGpuMemoryHigh"]["expr"]
    assert "gpu_memory_bytes / gpu_memory_total_bytes" in gpu and gpu.rstrip().endswith("> 0.85")


# ---------------------------------------------------------------- GPU governor


def test_governor_decisions() -> None:
    assert decide([sample(6.0)]).demote is False
    hot = decide([sample(6.0, temp=91.0)])
    assert hot.demote and hot.force_route == "small" and "91C" in hot.reasons[0]
    full = decide([sample(21.0)], max_new_tokens=128)  # 87.5% of 24 GiB
    assert full.demote and full.max_new_tokens == 128 and "VRAM 88%" in full.reasons[0]
    assert decide([sample(20.0)]).demote is False  # 83%: under the 85% line
    assert decide([sample(2.0, index=0), sample(23.0, index=1)]).reasons == ("gpu1 VRAM 96% > 85%",)
    assert decide([]).demote is False


def test_governor_is_inert_without_nvml_and_logs_each_change(caplog) -> None:
    nvml = FakeNvml(unavailable="NVMLError_LibraryNotFound: NVML Shared Library Not Found")
    governor = GpuGovernor(nvml, sample_every_s=0.0)
    assert governor.decision().demote is False
    assert governor.health() == {"available": False, "reason": nvml.unavailable, "governor": "inert"}
    with caplog.at_level(logging.WARNING, logger="codex.serving.gpu"):
        nvml.unavailable = None
        nvml.samples = [sample(22.0)]
        assert governor.decision().demote is True
        assert governor.decision().demote is True  # unchanged: not logged again
        nvml.samples = [sample(4.0)]
        assert governor.decision().demote is False
    events = [json.loads(r.getMessage()) for r in caplog.records]
    assert [e["decision"]["demote"] for e in events] == [True, False]
    assert governor.health()["governor"] == "normal"


def test_governed_answerer_demotes_route_and_caps_tokens_over_real_http() -> None:
    question = ("why does retry_with_backoff sleep exponentially longer, and how does that compare with the way the "
                "config parser and the health handler deal with bad input?")
    with RecordedServer() as server:
        server.scripts[SMALL] = [Scripted("ollama/chat_cited.json")]
        server.scripts[MEDIUM] = [Scripted("ollama/chat_cited.json")]
        config = config_from_dict(
            make_config(server.url, routes=None) | {
                "routes": {"small": {"chain": [SMALL]}, "medium": {"chain": [MEDIUM]}, "large": {"chain": [MEDIUM]}}
            }, env={})
        nvml = FakeNvml(sample(4.0))
        governor = GpuGovernor(nvml, max_new_tokens=64, sample_every_s=0.0)
        answerer = GovernedAnswerer(config, governor)

        normal = answerer.answer(question, CONTEXTS)
        assert normal.planned_route in {"medium", "large"}
        assert server.chats(MEDIUM) and not server.chats(SMALL)
        assert server.chats(MEDIUM)[-1]["options"]["num_predict"] > 64

        nvml.samples = [sample(23.0)]  # VRAM 96%
        demoted = answerer.answer(question, CONTEXTS)
        assert demoted.planned_route == "small"
        assert server.chats(SMALL), "the demoted request must go to the small route's model"
        assert server.chats(SMALL)[-1]["options"]["num_predict"] == 64
