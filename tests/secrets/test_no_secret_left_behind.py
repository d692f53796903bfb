"""No secret left behind (issue #11), end to end on real parts.

One module-scoped fixture builds a real git repository from the generated corpus
(tests/secrets/corpus.py: every rule family, in the files where it occurs, plus ordinary
look-alikes), ingests it in-process (Dagster with its run storage under CODEX_HOME as feriactl
keeps it, real MiniLM, real qdrant-edge), and then exercises every way text leaves the product:

* ``/v1/query`` (per family, ``top_k`` 50, with and without ``repo``), ``/v1/batch/query``,
  ``/v1/trace/{id}`` of every answer, ``/v1/repos``, ``/v1/health``, ``/metrics``;
* ``feriactl query`` (JSON and human output) and ``feriactl secrets scan`` (JSON and human) as
  subprocesses with ``CODEX_HOME`` pointing at the home, stdout and stderr both;
* a signed snapshot (tar) and a gzip-compressed one, written under ``CODEX_HOME/snapshots``;
* every Python log record at DEBUG while all of this runs, and the access log.

Then every listed secret value must be absent from all of it, and from the BYTES of every file
under CODEX_HOME: raw bytes, plus the decoded content of what may hide text from a byte search
(every string of every Parquet column, every member of tar/gzip/bz2/xz/zip archives recursively,
every value of every table of every SQLite database), plus the index payloads as the reader
serves them and the reader's private index copies (outside CODEX_HOME, in the temp dir). A leak is
reported as ``family/rule path`` and the first four characters of the value, never the value.

The checks are not vacuous: every secret-bearing file is indexed, carries redactions in the stored
catalog, and most of them are cited by the answers that were searched for leaks.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from codex_assets.ingestion import ingestion_assets, ingestion_checks
from codex_core import catalog
from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from codex_core.secrets import REDACTED_PREFIX
from codex_core.snapshot import create_snapshot
from serving.app import create_app
from serving.engine import QueryEngine
from serving.logs import AccessLog
from serving.quotas import quota_config_from_dict
from tests.conftest import commit_all, git
from tests.hostile.test_hostile_inputs import PERMISSIVE_QUOTAS
from tests.secrets.corpus import Sample, build_benign_corpus, build_secret_corpus, write_corpus
from tests.secrets.home_scan import ScanStats, scan_files
from tests.support.ingest import make_resources
from tests.support.llm import closed_port, offline_answerer
from tests.test_cli import FERIACTL, _ignore_sigterm

REPO = "nosecret"
SAMPLES = build_secret_corpus(seed=0)
BENIGN = build_benign_corpus(seed=0)
MIN_CITED_SHARE = 0.8  # of the secret-bearing files, cited by at least one answer searched for leaks

# One question per family, worded like a user hunting for credentials (the corpus's own words).
FAMILY_QUERIES = {
    "cloud": "aws access key id secret access key credentials azure client secret gcp service account",
    "vcs_ci": "github token gitlab runner token ci pipeline trigger sonar login travis drone codecov",
    "registry": "npm auth token registry pypi password docker config auth nuget api key artifactory",
    "chat": "slack bot token webhook url discord telegram twilio sendgrid mailgun api key",
    "payment": "stripe live secret key square access token shopify braintree plaid razorpay",
    "saas": "openai anthropic api key hugging face notebook login token sentry grafana datadog jira",
    "jwt": "service jwt bearer token supabase service role",
    "private_key": "private key BEGIN RSA OPENSSH PGP PuTTY signing key pem",
    "connection_string": "database connection string password postgres mongodb redis jdbc",
    "credential_file": "netrc git credentials machine login password curl user",
    "kubernetes": "kubernetes secret data stringData dockerconfigjson",
    "terraform": "terraform state aws_db_instance password access key secret outputs sensitive",
    "generic": "client_secret api_token signing_key password settings properties env",
}
CLI_QUERIES = [
    ("where are the npm registry auth token and the GCP service account private key id", True),
    ("database passwords and private keys in configuration files", False),
]


# --------------------------------------------------------------------------- leak search


@dataclass(frozen=True)
class Needle:
    sample: Sample
    value: str

    def label(self) -> str:
        return f"{self.sample.id} {self.sample.path} {self.value[:4]}…"


NEEDLES = [Needle(s, v) for s in SAMPLES for v in s.secrets]


def _forms(value: str) -> set[bytes]:
    """The value as bytes, and as it looks inside a JSON string (the event log, payload copies)."""
    return {value.encode(), json.dumps(value)[1:-1].encode()}


_NEEDLE_FORMS = [(needle, _forms(needle.value)) for needle in NEEDLES]


def scrubbed(text: str) -> str:
    """``text`` with every corpus secret cut to its first four characters (for failure messages)."""
    for needle in NEEDLES:
        text = text.replace(needle.value, needle.value[:4] + "…")
    return text


def leaks_in_text(channel: str, text: str) -> list[str]:
    return [f"{n.label()} in {channel}" for n in NEEDLES if n.value in text]


def leaks_in_bytes(where: str, data: bytes) -> list[str]:
    return [f"{n.label()} in {where}" for n, forms in _NEEDLE_FORMS if any(f in data for f in forms)]


def scan_tree(root: Path, label: str, stats: ScanStats, seen: set[str]) -> list[str]:
    """Leaks of the corpus secrets in every file under ``root`` (identical blobs are searched once)."""
    return scan_files(root, label, stats, seen, leaks_in_bytes)


# --------------------------------------------------------------------------- the world


class _Records(logging.Handler):
    """Every record, formatted with its arguments and traceback (what any handler could write)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception as exc:  # a record that cannot be formatted is still worth a line
            self.lines.append(f"unformattable record from {record.name}: {exc}")


@dataclass
class World:
    root: Path
    home: Path
    repo: Path
    commit: str
    channels: dict[str, str]  # where text left the product -> that text
    cited: set[str]  # paths cited by the API answers
    cli: dict[str, subprocess.CompletedProcess]
    payloads: list[dict]
    reader_copies: list[Path]
    snapshots: list[Path]
    seconds: dict[str, float]


def _cli_env(home: Path) -> dict[str, str]:
    return {**os.environ, "CODEX_HOME": str(home), "OLLAMA_HOST": f"http://127.0.0.1:{closed_port()}"}


def _start_cli(home: Path, *args: str) -> subprocess.Popen:
    """``feriactl`` as tests/test_cli.py runs it (SIGTERM ignored by the parent, as job runners do)."""
    return subprocess.Popen([FERIACTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_cli_env(home), preexec_fn=_ignore_sigterm)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _build_repo(root: Path) -> tuple[Path, str]:
    repo = root / "corpus"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_corpus(repo, SAMPLES)
    write_corpus(repo, BENIGN)
    return repo, commit_all(repo, "Service configuration, deployment files and helpers")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    root = tmp_path_factory.mktemp("no-secret-left-behind")
    repo, commit = _build_repo(root)
    home = root / "home"
    RepoRegistry(home / "repos.json").add(REPO, str(repo))

    records = _Records()
    root_logger = logging.getLogger()
    previous_level = root_logger.level
    root_logger.addHandler(records)
    root_logger.setLevel(logging.DEBUG)
    engine = None
    instance = None
    try:
        # The run storage lives under CODEX_HOME, as with feriactl (DAGSTER_HOME = CODEX_HOME/dagster):
        # event logs with every materialization's metadata are part of what is scanned.
        (home / "dagster").mkdir(parents=True)
        instance = dg.DagsterInstance.local_temp(tempdir=str(home / "dagster"))
        instance.add_dynamic_partitions("repos", [REPO])
        result = dg.materialize([*ingestion_assets, *ingestion_checks], instance=instance,
                                resources=make_resources(home), partition_key=REPO)
        assert result.success, "ingesting the secret corpus must succeed"
        seconds["ingest"] = time.perf_counter() - started

        mark = time.perf_counter()
        cli_procs = {
            "feriactl query --json": _start_cli(home, "query", CLI_QUERIES[0][0], "--repo", REPO, "--top-k", "50",
                                                "--json"),
            "feriactl query": _start_cli(home, "query", CLI_QUERIES[1][0], "--top-k", "50"),
        }

        engine = QueryEngine(CodexHome(home), answerer=offline_answerer(), abstain_below=0.0)
        stream = io.StringIO()
        access_logger = logging.getLogger(f"codex.serving.access.nosecret.{id(stream)}")
        access_logger.handlers[:] = [logging.StreamHandler(stream)]
        access_logger.setLevel(logging.INFO)
        access_logger.propagate = False
        app = create_app(lambda: engine, state_dir=root / "state", quotas=quota_config_from_dict(PERMISSIVE_QUOTAS),
                         access_log=AccessLog(access_logger), env={})
        channels: dict[str, str] = {}
        cited: set[str] = set()
        with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
            for family, query in FAMILY_QUERIES.items():
                for scope, payload in (("repo", {"query": query, "repo": REPO, "top_k": 50}),
                                       ("all", {"query": query, "top_k": 20})):
                    response = client.post("/v1/query", json=payload)
                    assert response.status_code == 200, response.status_code
                    body = response.json()
                    channels[f"/v1/query {family} ({scope})"] = response.text
                    cited.update(c["path"] for c in body["citations"])
                    trace = client.get(f"/v1/trace/{body['trace_id']}")
                    channels[f"/v1/trace {family} ({scope})"] = trace.text
            batch = client.post("/v1/batch/query", json={"queries": [
                {"query": f"{sample.path} {sample.rule.replace('_', ' ')}", "repo": REPO, "top_k": 10}
                for sample in SAMPLES[::4]][:32]})
            assert batch.status_code == 200, batch.status_code
            channels["/v1/batch/query"] = batch.text
            for item in batch.json()["results"]:
                cited.update(c["path"] for c in item.get("citations", []))
                if "trace_id" in item:
                    channels[f"/v1/trace batch {item['trace_id']}"] = client.get(f"/v1/trace/{item['trace_id']}").text
            for path in ("/v1/repos", "/v1/health", "/metrics"):
                response = client.get(path)
                if response.status_code != 404:
                    channels[path] = response.text
        channels["access log"] = stream.getvalue()
        seconds["api"] = time.perf_counter() - mark

        mark = time.perf_counter()
        snapshots = []
        key = secrets.token_hex(32)
        for compression in ("none", "gz"):
            info = create_snapshot(CodexHome(home), REPO, key=key, out_dir=CodexHome(home).snapshots_dir / REPO,
                                   compression=compression)
            snapshots.append(Path(info.path))
        seconds["snapshot"] = time.perf_counter() - mark

        mark = time.perf_counter()
        cli_procs["feriactl secrets scan --json"] = _start_cli(home, "secrets", "scan", REPO, "--json")
        cli_procs["feriactl secrets scan"] = _start_cli(home, "secrets", "scan", REPO)
        cli = {name: _finish(proc) for name, proc in cli_procs.items()}
        for name, proc in cli.items():
            channels[f"{name} (stdout)"] = proc.stdout
            channels[f"{name} (stderr)"] = proc.stderr
        seconds["cli (after the API)"] = time.perf_counter() - mark

        payloads = list(engine.reader.refresh(True).corpora[REPO].payloads)
        reader_dir = getattr(engine.reader.index, "reader_dir", None)
        copies = sorted(p for p in Path(reader_dir).glob(f"*-{REPO}-*") if p.is_dir()) if reader_dir else []
        channels["python logs (DEBUG)"] = "\n".join(records.lines)
        seconds["fixture total"] = time.perf_counter() - started
        yield World(root, home, repo, commit, channels, cited, cli, payloads, copies, snapshots, seconds)
    finally:
        root_logger.removeHandler(records)
        root_logger.setLevel(previous_level)
        if engine is not None:
            engine.close()
        if instance is not None:
            instance.dispose()


# --------------------------------------------------------------------------- not vacuous


def _stored_files(home: Path) -> dict[str, str]:
    return {f.path: f.text for f in catalog.read_files(home / "repos" / REPO)}


def test_every_secret_file_is_indexed_and_masked_in_the_catalog(world: World) -> None:
    stored = _stored_files(world.home)
    skipped = json.loads((world.home / "repos" / REPO / "skipped.json").read_text())["skipped"]
    missing = [s.path for s in SAMPLES if s.path not in stored]
    assert not missing, f"secret-bearing files not indexed ({ {p: skipped.get(p) for p in missing} })"
    # Enough masking happened for the leak checks below to mean something (a file stored without any
    # redaction is a leak, and those checks name it).
    redactions = sum(stored[s.path].count(REDACTED_PREFIX) for s in SAMPLES)
    files_masked = sum(REDACTED_PREFIX in stored[s.path] for s in SAMPLES)
    print(f"\ncatalog: {redactions} redactions in {files_masked}/{len(SAMPLES)} secret-bearing files")
    assert redactions >= len(SAMPLES), f"only {redactions} redactions for {len(SAMPLES)} secret-bearing files"
    assert files_masked >= 0.9 * len(SAMPLES), f"only {files_masked}/{len(SAMPLES)} secret files hold a redaction"
    indexed_paths = {p["path"] for p in world.payloads}
    assert {s.path for s in SAMPLES} <= indexed_paths, "every secret-bearing file must be in the served index"


def test_answers_searched_for_leaks_cite_the_secret_files(world: World) -> None:
    paths = {s.path for s in SAMPLES}
    share = len(paths & world.cited) / len(paths)
    uncited = sorted(paths - world.cited)
    print(f"\ncited by the API answers: {len(paths & world.cited)}/{len(paths)} secret files ({share:.0%}); "
          f"never cited: {uncited}")
    assert share >= MIN_CITED_SHARE, f"only {share:.0%} of the secret files were cited: {uncited}"
    answer = json.loads(world.cli["feriactl query --json"].stdout)
    assert {c["path"] for c in answer["citations"]} & paths, "the CLI answer cites no secret file"
    human = world.cli["feriactl query"].stdout
    assert sum(s.path in human for s in SAMPLES) >= 5, "the CLI's human answer shows too few secret files"
    scan = json.loads(world.cli["feriactl secrets scan --json"].stdout)
    scanned = {f["path"] for f in scan["findings"]}
    assert len(scanned & paths) >= 0.9 * len(paths), f"secrets scan found only {len(scanned & paths)} files"


def test_cli_commands_succeed(world: World) -> None:
    failed = {name: (proc.returncode, scrubbed(proc.stderr)[-800:]) for name, proc in world.cli.items()
              if proc.returncode}
    assert not failed, failed


# --------------------------------------------------------------------------- no leak anywhere


def _assert_no_leaks(leaks: list[str], where: str) -> None:
    assert not leaks, f"{len(leaks)} secret occurrences in {where}:\n" + "\n".join(sorted(leaks)[:200])


def test_no_secret_in_api_answers_traces_and_batch(world: World) -> None:
    api = {k: v for k, v in world.channels.items() if k.startswith("/")}
    assert len(api) >= 2 * len(FAMILY_QUERIES) * 2
    _assert_no_leaks([leak for k, v in api.items() for leak in leaks_in_text(k, v)], "API responses")


def test_no_secret_in_cli_output(world: World) -> None:
    cli = {k: v for k, v in world.channels.items() if k.startswith("feriactl")}
    _assert_no_leaks([leak for k, v in cli.items() for leak in leaks_in_text(k, v)], "feriactl output")


def test_no_secret_in_logs(world: World) -> None:
    logs = {k: world.channels[k] for k in ("python logs (DEBUG)", "access log")}
    assert logs["access log"].count("\n") >= len(FAMILY_QUERIES), "the access log saw the queries"
    _assert_no_leaks([leak for k, v in logs.items() for leak in leaks_in_text(k, v)], "logs")


def test_no_secret_in_index_payloads(world: World) -> None:
    text = "\n".join(json.dumps(p, ensure_ascii=False) for p in world.payloads)
    leaks = leaks_in_text("served index payloads", text)
    stats, seen = ScanStats(), set()
    for copy in world.reader_copies:  # outside CODEX_HOME: the reader's private index copies
        leaks += scan_tree(copy, f"reader copy {copy.name}", stats, seen)
    _assert_no_leaks(leaks, "index payloads")


def test_no_secret_in_codex_home_bytes(world: World) -> None:
    started = time.perf_counter()
    stats, seen = ScanStats(), set()
    leaks = scan_tree(world.home, "CODEX_HOME", stats, seen)
    elapsed = time.perf_counter() - started
    print(f"\nscanned CODEX_HOME: {stats.files} files, {stats.bytes / 2**20:.1f} MiB, {stats.blobs} distinct blobs "
          f"({stats.duplicates} duplicates), decoded {stats.decoded}, {elapsed:.1f} s; "
          f"fixture {', '.join(f'{k} {v:.1f} s' for k, v in world.seconds.items())}")
    # What must have been there to scan: catalogs, the event log, the embedding cache, both snapshots.
    assert stats.decoded.get("parquet", 0) >= 3 and stats.decoded.get("sqlite", 0) >= 2, stats.decoded
    assert stats.decoded.get("tar", 0) >= 2 and stats.decoded.get("gzip", 0) >= 1, stats.decoded
    assert all(p.is_relative_to(world.home) and p.exists() for p in world.snapshots)
    assert not stats.unreadable, f"containers that could not be searched: {stats.unreadable}"
    _assert_no_leaks(leaks, "CODEX_HOME")



# --------------------------------------------------------------------------- beyond file text


def test_commit_messages_mined_into_eval_sets_hold_no_secret(tmp_path: Path) -> None:
    """Not file text, but text the product stores: ``feriactl eval run`` mines commit messages into
    eval-set queries (written under CODEX_HOME/evals, logged with every evaluation). A credential
    pasted into a commit message must not be stored verbatim either."""
    from codex_core.evalsets import mine_eval_set

    by_id = {s.id: s for s in SAMPLES}
    planted = [by_id["vcs_ci/github_pat_classic"], by_id["payment/stripe_secret_key"]]
    repo = tmp_path / "history"
    (repo / "app").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "app" / "release.py").write_text("def upload(path):\n    return path\n")
    commit_all(repo, "Add the release upload helper")
    (repo / "app" / "release.py").write_text("def upload(path):\n    return path.strip()\n")
    commit_all(repo, f"Upload releases with the new deploy token {planted[0].secrets[0]}\n\n"
                     f"The previous billing key {planted[1].secrets[0]} was rotated out.")
    evalset = mine_eval_set(repo, name="history-mined", repo_name="history")
    assert evalset.items, "the commit must be mined, or this proves nothing"
    stored = "\n".join(f"{item.query}\n{item.gold_files}\n{item.gold_symbols}" for item in evalset.items)
    leaks = [f"{s.id} {s.secrets[0][:4]}… in an eval-set query" for s in planted if s.secrets[0] in stored]
    _assert_no_leaks(leaks, "mined eval sets")
