"""`feriactl simulate`: a real query API started on loopback, driven at two QPS levels; CSV + PNG written."""

from __future__ import annotations

import csv
import json

import yaml

from serving.loadgen import _queue_sequence, parse_mix
from tests.serving.conftest import copy_home, run_cli


def test_mix_is_interleaved_with_the_requested_shares() -> None:
    mix = parse_mix("fast=80,batch=20")
    assert mix == {"fast": 0.8, "batch": 0.2}
    sequence = _queue_sequence(mix, 50)
    assert sequence.count("batch") == 10 and "batch" in sequence[:5]


def test_simulate_starts_a_server_and_only_throttles_above_capacity(corpus, tmp_path, monkeypatch) -> None:
    home, _ = copy_home(corpus, tmp_path)
    quotas = tmp_path / "quotas.yaml"
    quotas.write_text(yaml.safe_dump({
        "queues": {"fast": {"concurrency": 2, "max_waiting": 4, "max_wait_s": 1.0},
                   "batch": {"concurrency": 1, "max_waiting": 2, "max_wait_s": 2.0}},
        # One simulated tenant at 3 queries/s: the 2 QPS level fits, the 8 QPS level must be refused in part.
        "defaults": {"max_inflight": 8, "fast": {"rate": 3, "burst": 3, "max_inflight": 6},
                     "batch": {"rate": 3, "burst": 3, "max_inflight": 2}},
    }))
    monkeypatch.setenv("CODEX_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("CODEX_QUOTAS_CONFIG", str(quotas))
    out = tmp_path / "sim"
    code, printed = run_cli("simulate", "--qps", "4", "--sweep", "2,8", "--duration", "2", "--mix", "fast=100",
                            "--tenants", "1", "--extractive", "--out", str(out), "--json")
    assert code == 0
    summary = json.loads(printed)
    rows = list(csv.DictReader((out / "simulate.csv").open()))
    assert [float(r["qps_target"]) for r in rows] == [2.0, 8.0]
    low, high = rows
    assert int(low["ok"]) == int(low["sent"]) == 4 and int(low["throttled_429"]) == 0
    assert int(high["throttled_429"]) > 0 and int(high["ok"]) > 0
    assert int(high["errors_5xx"]) == int(high["transport_errors"]) == 0
    # Admitted requests stay bounded inside the server (wait <= 1 s + service), whatever else runs on the machine.
    assert float(high["server_p95_ms"]) <= 1500
    assert summary["max_sustainable_qps"] == 2.0
    assert (out / "simulate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    api_log = (out / "api.log").read_text()
    assert '"throttle": "rate"' in api_log  # the server's own JSON access log of the run
