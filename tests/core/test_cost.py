"""A request's cost: CPU seconds (this process, a local model server), and energy, labelled.

CPU is real: the tests burn it and read it back through the same clocks and ``/proc`` files the meter
reads. A local llama-server is stood in for by a real busy Python process with a pid record like
the one `feriactl llm up --detach` writes: what is measured (``/proc/<pid>/stat`` of a recorded,
running pid) is the same for any process, and running a model here would cost minutes of the shared
CPU. There is no GPU here, so the NVML path is exercised with ``FakeGpu``, a typed fake at the NVML
boundary (serving/gpu.py's ``NvmlReader.read_energy`` has the same signature).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codex_core.cost import (
    CPU_ESTIMATE,
    NVML,
    CostMeter,
    EnergyReading,
    LocalModelServers,
    process_cpu_seconds,
)
from codex_core.llm.local_server import ServerRecord, ServerRecords
from codex_core.llm.types import Usage


def burn(seconds: float) -> None:
    """Keep this thread on the CPU for ``seconds`` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class FakeGpu:
    """Typed fake of the NVML boundary (no GPU here): the readings a test sets, in order, or NVML's failure."""

    def __init__(self, *readings: EnergyReading, fail: bool = False):
        self.readings = list(readings)
        self.fail = fail

    def __call__(self) -> EnergyReading:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")
        return self.readings.pop(0)


def test_without_a_gpu_energy_is_cpu_seconds_times_watts_and_says_so() -> None:
    meter = CostMeter(watts_per_core=3.5)
    request = meter.start()
    burn(0.3)
    cost = request.finish()
    assert cost.energy_method == CPU_ESTIMATE and cost.watts_per_core == 3.5
    assert cost.cpu_scope == "process" and not cost.overlapped
    assert cost.cpu_s == cost.process_cpu_s >= 0.3 and cost.thread_cpu_s >= 0.3
    assert cost.energy_j == pytest.approx(cost.cpu_s * 3.5)
    assert request.finish() is cost  # finishing twice does not end the request twice
    block = cost.trace(None)
    assert block["energy_method"] == CPU_ESTIMATE and block["calls"] == 0 and block["cpu"]["model_server_s"] is None


def test_overlapping_requests_count_their_own_thread_only() -> None:
    meter = CostMeter()
    first = meter.start()
    done = threading.Event()
    results = {}

    def other() -> None:
        second = meter.start()
        burn(0.3)
        results["second"] = second.finish()
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    burn(0.1)
    done.wait(10)
    thread.join()
    mine = first.finish()
    # The process ran both requests' work; each counts only its own thread.
    assert mine.overlapped and mine.cpu_scope == "thread" and mine.cpu_s == mine.thread_cpu_s
    assert mine.process_cpu_s >= 0.35 and mine.cpu_s < 0.3
    assert results["second"].overlapped and results["second"].cpu_s >= 0.3
    assert not meter.start().finish().overlapped  # alone again afterwards


def test_a_request_that_raised_does_not_leave_later_ones_overlapped() -> None:
    meter = CostMeter()

    def failing_request() -> None:
        meter.start()
        raise LookupError("unknown repository")

    with pytest.raises(LookupError):
        failing_request()
    assert not meter.start().finish().overlapped


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen]]:
    """A running process that burns CPU, recorded as a detached local model server on a port."""
    argv = [sys.executable, "-c", "while True: pass"]
    process = subprocess.Popen(argv)
    records = ServerRecords(tmp_path / "llm")
    records.write(ServerRecord(pid=process.pid, port=8091, base_url="http://127.0.0.1:8091", model="m.gguf",
                               name="m", argv=argv, log=str(tmp_path / "log"), started_at=time.time()))
    try:
        yield records.directory, process.pid, process
    finally:
        process.kill()
        process.wait()


def test_a_recorded_local_model_server_adds_its_cpu_seconds(busy_server) -> None:
    records_dir, pid, _ = busy_server
    # models.toml may spell the same server differently than the record (localhost, a /v1 path).
    servers = LocalModelServers(records_dir, ["http://localhost:8091/v1", "http://10.1.2.3:11434"])
    assert servers() == [pid]
    meter = CostMeter(watts_per_core=2.0, model_server_pids=servers)
    outside_before = process_cpu_seconds(pid)
    request = meter.start()
    inside_before = process_cpu_seconds(pid)
    deadline = time.monotonic() + 30
    # The server works, this process waits (as while a model generates) until the server has used
    # 0.3 s of CPU, however busy the machine is.
    while process_cpu_seconds(pid) - inside_before < 0.3 and time.monotonic() < deadline:
        time.sleep(0.05)
    cost = request.finish()
    outside = process_cpu_seconds(pid) - outside_before
    assert cost.cpu_scope == "process+model-server"
    assert cost.model_server_cpu_s is not None and 0.3 <= cost.model_server_cpu_s <= outside
    assert cost.cpu_s == pytest.approx(cost.process_cpu_s + cost.model_server_cpu_s)
    assert cost.energy_j == pytest.approx(cost.cpu_s * 2.0)


def test_a_server_on_another_port_or_a_dead_pid_is_not_counted(busy_server) -> None:
    records_dir, _, process = busy_server
    assert LocalModelServers(records_dir, ["http://127.0.0.1:8092"])() == []
    servers = LocalModelServers(records_dir, ["http://127.0.0.1:8091"], ttl_s=0.0)
    process.kill()
    process.wait()
    assert servers() == []
    assert process_cpu_seconds(process.pid) is None
    cost = CostMeter(model_server_pids=servers).start().finish()
    assert cost.model_server_cpu_s is None and cost.cpu_scope == "process"


def test_with_a_gpu_energy_is_nvml_counter_difference_or_mean_power_times_wall() -> None:
    counted = CostMeter(gpu_energy=FakeGpu(EnergyReading(1000.0, 80.0), EnergyReading(1012.5, 95.0)))
    cost = counted.start().finish()
    assert (cost.energy_method, cost.energy_j, cost.watts_per_core) == (NVML, 12.5, None)

    # A GPU without an energy counter (before Volta): the power at start and finish, over the wall time.
    powered = CostMeter(gpu_energy=FakeGpu(EnergyReading(None, 100.0), EnergyReading(None, 140.0)))
    request = powered.start()
    time.sleep(0.2)
    cost = request.finish()
    assert cost.energy_method == NVML and cost.energy_j == pytest.approx(120.0 * cost.wall_s)

    missing = CostMeter(gpu_energy=FakeGpu(fail=True)).start().finish()
    assert missing.energy_method == CPU_ESTIMATE


def test_the_trace_block_carries_the_walks_tokens() -> None:
    usage = Usage()
    usage.add("small", prompt_tokens=410, completion_tokens=28, estimated=False, failed=False)
    usage.add("large", prompt_tokens=75, completion_tokens=40, estimated=True, failed=False)
    block = CostMeter().start().finish().trace(usage)
    assert (block["prompt_tokens"], block["completion_tokens"], block["calls"], block["tokens_estimated"]) == (
        485, 68, 2, True)
    assert block["by_model"]["small"]["prompt_tokens"] == 410


def test_a_watts_constant_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="CODEX_CPU_WATTS_PER_CORE"):
        CostMeter(watts_per_core=0)


def test_feriactl_query_text_states_what_the_answer_cost() -> None:
    from codex_core.answer import Answer

    base = {"answer": "x", "citations": [], "confidence": 0.9, "confidence_kind": "calibrated", "abstained": False,
            "model": "m", "route": "small", "index_commit": None, "index_commits": {}, "commits_behind": None,
            "index_freshness": {}, "latency_ms": 12.0, "trace_id": "t"}
    usage = {"prompt_tokens": 900, "completion_tokens": 40, "calls": 2, "tokens_estimated": False,
             "energy_j": 12.34, "energy_method": "estimate:cpu-time"}
    text = Answer.model_validate({**base, "usage": usage}).to_text()
    assert text.endswith("2 model calls  900 prompt + 40 completion tokens  12.3 J (estimate:cpu-time)")
    extractive = Answer.model_validate({**base, "usage": {**usage, "calls": 0}}).to_text()
    assert "model call" not in extractive
