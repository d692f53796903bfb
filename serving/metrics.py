"""Prometheus metrics of one serving app (its own CollectorRegistry: two apps never share counters).

Catalog (``METRIC_CATALOG``; dashboards and alerts may only use these names; docs/operations.md
explains each):

- router_requests_total{route,model}: answered queries per generation route
  (small/medium/large/extractive/abstain) and model; router_latency_seconds{route}: histogram of
  /v1/query time from arrival (queue wait included) per route, or per batch item;
  rag_latency_seconds: histogram of retrieval time.
- queue_depth{queue}: admitted and unfinished (waiting + running); admit_total{queue};
  throttle_total{queue,reason} (rate, tenant_inflight, queue_full, queue_timeout).
- llm_fallback_total{from,to}: model chain hops; citation_rejected_total: refs a model wrote that
  were not retrieved; http_errors_total{status}: 5xx responses (503 of the kill-switch included).
- canary_requests_total{arm,outcome}; canary_p95_seconds / canary_error_rate /
  canary_abstention_rate{arm}: the signals the automatic rollback reads.
- semantic_cache_requests_total{result}: queries the semantic cache answered (hit), looked up without
  a match (miss) or was not consulted for (skip); nothing while CODEX_SEMANTIC_CACHE is off.
- gpu_utilization, gpu_memory_bytes, gpu_memory_total_bytes, gpu_temperature_celsius{gpu}:
  ABSENT (not 0) when NVML is unavailable.
- llm_tokens_total{model,kind}: tokens of every model call (kind prompt / completion; server-reported,
  else estimated); request_llm_tokens{kind}: histogram of them per answered query;
  request_cpu_seconds_total and request_energy_joules_total{method} (nvml, or estimate:cpu-time):
  what answering cost (codex_core.cost says what each covers).
- agent_runs_total{recipe,status}: stored sandbox agent runs (status ok / failed / timeout /
  blocked / unavailable); agent_run_seconds{recipe}: histogram of their durations;
  sandbox_violations_total{kind}: sandbox guards that fired (policy, timeout, output_cap,
  artifact_cap, artifact_escape). Read from CODEX_HOME/agent/runs at scrape time (runs happen in
  other processes), so they count every stored run, not only this app's.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from codex_core.sandbox.stats import VIOLATION_KINDS, RunTotals
from serving.gpu import GpuGovernor

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_BUCKETS = (0, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000)
AGENT_RUN_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# name -> (type, labels). Histograms expose name_bucket / name_sum / name_count.
METRIC_CATALOG: dict[str, tuple[str, tuple[str, ...]]] = {
    "router_requests_total": ("counter", ("route", "model")),
    "router_latency_seconds": ("histogram", ("route",)),
    "rag_latency_seconds": ("histogram", ()),
    "queue_depth": ("gauge", ("queue",)),
    "admit_total": ("counter", ("queue",)),
    "throttle_total": ("counter", ("queue", "reason")),
    "llm_fallback_total": ("counter", ("from", "to")),
    "citation_rejected_total": ("counter", ()),
    "http_errors_total": ("counter", ("status",)),
    "canary_requests_total": ("counter", ("arm", "outcome")),
    "canary_p95_seconds": ("gauge", ("arm",)),
    "canary_error_rate": ("gauge", ("arm",)),
    "canary_abstention_rate": ("gauge", ("arm",)),
    "semantic_cache_requests_total": ("counter", ("result",)),
    "llm_tokens_total": ("counter", ("model", "kind")),
    "request_llm_tokens": ("histogram", ("kind",)),
    "request_cpu_seconds_total": ("counter", ()),
    "request_energy_joules_total": ("counter", ("method",)),
    "gpu_utilization": ("gauge", ("gpu",)),
    "gpu_memory_bytes": ("gauge", ("gpu",)),
    "gpu_memory_total_bytes": ("gauge", ("gpu",)),
    "gpu_temperature_celsius": ("gauge", ("gpu",)),
    "agent_runs_total": ("counter", ("recipe", "status")),
    "agent_run_seconds": ("histogram", ("recipe",)),
    "sandbox_violations_total": ("counter", ("kind",)),
}
GPU_METRICS = ("gpu_utilization", "gpu_memory_bytes", "gpu_memory_total_bytes", "gpu_temperature_celsius")


def exposed_names(metric: str) -> set[str]:
    """Sample names Prometheus will see for a catalog metric."""
    kind, _ = METRIC_CATALOG[metric]
    if kind == "histogram":
        return {f"{metric}_bucket", f"{metric}_sum", f"{metric}_count"}
    return {metric}


class _GpuCollector(Collector):
    """Reads the governor's last sample at scrape time; yields nothing at all when NVML is unavailable."""

    def __init__(self, governor: GpuGovernor):
        self.governor = governor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        samples = self.governor.samples()
        if not samples:
            return
        util = GaugeMetricFamily("gpu_utilization", "GPU utilisation (percent)", labels=["gpu"])
        used = GaugeMetricFamily("gpu_memory_bytes", "GPU memory in use (bytes)", labels=["gpu"])
        total = GaugeMetricFamily("gpu_memory_total_bytes", "GPU memory size (bytes)", labels=["gpu"])
        temp = GaugeMetricFamily("gpu_temperature_celsius", "GPU temperature", labels=["gpu"])
        for s in samples:
            util.add_metric([str(s.index)], s.utilization_percent)
            used.add_metric([str(s.index)], s.memory_used_bytes)
            total.add_metric([str(s.index)], s.memory_total_bytes)
            temp.add_metric([str(s.index)], s.temperature_celsius)
        yield from (util, used, total, temp)


class _AgentRunCollector(Collector):
    """Agent runs from the run store at scrape time (they run in other processes; nothing to count here)."""

    def __init__(self, totals: RunTotals | None):
        self.totals = totals

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        summaries = self.totals.summaries() if self.totals is not None else []
        runs = CounterMetricFamily("agent_runs_total", "Stored sandbox agent runs by recipe and status",
                                   labels=["recipe", "status"])
        seconds = HistogramMetricFamily("agent_run_seconds", "Duration of stored sandbox agent runs by recipe",
                                        labels=["recipe"])
        violations = CounterMetricFamily("sandbox_violations_total", "Sandbox guards that fired, by kind",
                                         labels=["kind"])
        by_status = collections.Counter((s.recipe, s.status) for s in summaries)
        for (recipe, status), count in sorted(by_status.items()):
            runs.add_metric([recipe, status], count)
        for recipe in sorted({s.recipe for s in summaries}):
            durations = [s.duration_sec for s in summaries if s.recipe == recipe]
            buckets = [(str(le), sum(1 for d in durations if d <= le)) for le in AGENT_RUN_BUCKETS]
            seconds.add_metric([recipe], buckets + [("+Inf", len(durations))], sum_value=sum(durations))
        fired = collections.Counter({kind: 0 for kind in VIOLATION_KINDS})
        for s in summaries:
            fired.update(s.violations)
        for kind, count in fired.items():
            violations.add_metric([kind], count)
        yield from (runs, seconds, violations)


class ServingMetrics:
    def __init__(self, governor: GpuGovernor, queue_depth: Callable[[str], int], queues: tuple[str, ...],
                 agent_runs: RunTotals | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.router_requests = Counter(
            "router_requests", "Answered queries by generation route and model", ["route", "model"], registry=r
        )
        self.router_latency = Histogram(
            "router_latency_seconds", "Query latency from arrival (queue wait included) by generation route", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.rag_latency = Histogram(
            "rag_latency_seconds", "Retrieval latency (embed, search, fuse, verify)", buckets=LATENCY_BUCKETS,
            registry=r,
        )
        depth = Gauge("queue_depth", "Requests admitted to a server queue, waiting or running", ["queue"], registry=r)
        for q in queues:
            depth.labels(q).set_function(lambda q=q: queue_depth(q))
        self.admit = Counter("admit", "Requests admitted", ["queue"], registry=r)
        self.throttle = Counter("throttle", "Requests refused with 429", ["queue", "reason"], registry=r)
        self.llm_fallback = Counter("llm_fallback", "Model fallback hops", ["from", "to"], registry=r)
        self.citation_rejected = Counter(
            "citation_rejected", "Refs written by a model that were not retrieved", registry=r
        )
        self.http_errors = Counter("http_errors", "5xx responses by status", ["status"], registry=r)
        self.canary_requests = Counter("canary_requests", "Canary traffic by arm and outcome", ["arm", "outcome"],
                                       registry=r)
        self.canary_p95 = Gauge("canary_p95_seconds", "P95 latency per canary arm", ["arm"], registry=r)
        self.canary_error_rate = Gauge("canary_error_rate", "Error rate per canary arm", ["arm"], registry=r)
        self.canary_abstention_rate = Gauge(
            "canary_abstention_rate", "Abstention rate per canary arm", ["arm"], registry=r
        )
        self.llm_tokens = Counter("llm_tokens", "Tokens of every model call by model and kind (prompt, completion)",
                                  ["model", "kind"], registry=r)
        self.request_tokens = Histogram("request_llm_tokens", "Tokens per answered query, every model call of it",
                                        ["kind"], buckets=TOKEN_BUCKETS, registry=r)
        self.request_cpu = Counter("request_cpu_seconds", "CPU seconds of answered queries (codex_core.cost)",
                                   registry=r)
        self.request_energy = Counter("request_energy_joules", "Energy of answered queries by how it was obtained",
                                      ["method"], registry=r)
        self.semantic_cache = Counter("semantic_cache_requests", "Queries by semantic cache result (hit, miss, skip)",
                                      ["result"], registry=r)
        for q in queues:
            self.admit.labels(q)
        for result in ("hit", "miss", "skip"):
            self.semantic_cache.labels(result)
        r.register(_GpuCollector(governor))
        r.register(_AgentRunCollector(agent_runs))

    def observe_answer(self, trace: dict | None, route: str, model: str, latency_s: float) -> None:
        self.router_requests.labels(route, model).inc()
        self.router_latency.labels(route).observe(latency_s)
        if not trace:
            return
        cache = trace.get("cache")
        if cache:  # None while the semantic cache is off
            self.semantic_cache.labels(cache["result"]).inc()
        retrieval_ms = (trace.get("timings_ms") or {}).get("retrieval_ms")
        if retrieval_ms is not None:
            self.rag_latency.observe(retrieval_ms / 1000)
        generation = trace.get("generation") or {}
        for hop in generation.get("fallbacks") or []:
            self.llm_fallback.labels(hop.get("from", "?"), hop.get("to", "?")).inc()
        rejected = len(generation.get("rejected_refs") or [])
        if rejected:
            self.citation_rejected.inc(rejected)
        cost = trace.get("cost")
        if cost:
            self._observe_cost(cost)

    def _observe_cost(self, cost: dict) -> None:
        for model, used in (cost.get("by_model") or {}).items():
            for kind in ("prompt", "completion"):
                if used.get(f"{kind}_tokens"):
                    self.llm_tokens.labels(model, kind).inc(used[f"{kind}_tokens"])
        for kind in ("prompt", "completion"):
            self.request_tokens.labels(kind).observe(cost.get(f"{kind}_tokens", 0))
        self.request_cpu.inc(cost.get("cpu_s", 0.0))
        self.request_energy.labels(cost.get("energy_method", "unknown")).inc(cost.get("energy_j", 0.0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
