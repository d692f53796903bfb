"""Warm freshness worker: re-indexes a local repository within seconds of a commit.

`git_head_sensor` ticks every 30 s, and the run it requests starts in a fresh process that must
import the code location and load the embedding model (8-10 s here) before it can embed the
changed chunk. This worker is one long-lived process (`feriactl worker`, started by `feriactl
up`) that keeps the model loaded, reads the HEAD of every registered *local* repository every
``interval_s`` seconds, and runs the same `ingest` job in its own process for each repository
whose HEAD is not the published commit. The runs are recorded on the CODEX_HOME Dagster instance,
so they show in the Dagster UI like any other run (tag ``codex/trigger=freshness-worker``).

While the worker's heartbeat (``CODEX_HOME/freshness_worker.json``) is fresh, the sensor leaves
local repositories to it (URL sources stay with the sensor: fetching them every second would
hammer the remote); when the worker stops, the sensor takes over on its next tick. A repository
with a run of its partition queued or in progress is skipped (one writer per repository).

A worker killed mid-run (SIGKILL, OOM) cannot mark its run finished: the run would stay STARTED and
hold the repository for good, against this worker and the daemon's run queue alike. Each run is
tagged with the worker that runs it (``codex/worker``: host and pid), and a worker starting up marks
the runs of this host's dead workers failed; the repository is then re-indexed from where the caches
stand (embeddings and point ids are content-keyed: nothing is lost or duplicated).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import dagster as dg

from codex_core import published
from codex_core.git import GitError, RepoRegistry, head_sha, is_url
from codex_core.home import CodexHome
from codex_core.liveness import pid_alive

logger = logging.getLogger(__name__)

TRIGGER_TAG = "codex/trigger"
WORKER_TAG = "codex/worker"  # "host:pid" of the worker process that ran it
# Runs that hold (or are about to hold) the repository's writer role. NOT_STARTED is left out:
# a run whose launch failed stays in it forever and must not block freshness.
_ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@dataclass
class WorkerRun:
    repo: str
    commit: str
    run_id: str
    success: bool
    seconds: float


class FreshnessWorker:
    def __init__(self, home: CodexHome, instance: dg.DagsterInstance, *, interval_s: float = 1.0) -> None:
        from codex_assets.definitions import defs

        self.home = home
        self.instance = instance
        self.interval_s = interval_s
        self.job = defs().resolve_job_def("ingest")
        self._failed: set[tuple[str, str]] = set()  # (repo, commit) whose run failed: not retried in a loop

    def warm(self) -> None:
        """Load the embedding model, then run the ingestion pipeline once on a throwaway one-file
        repository (temp CODEX_HOME, ephemeral instance): the first real commit then pays neither
        the model load nor the first-run costs of the engines (measured: 3.3 s at 21k chunks)."""
        import subprocess
        import tempfile
        from pathlib import Path

        from codex_assets.ingestion import ingestion_assets, ingestion_checks
        from codex_resources import (
            CodexHomeResource,
            EmbeddedVectorStoreResource,
            EmbedderResource,
            build_resources,
        )

        configured: EmbedderResource = build_resources()["embedder"]
        configured.get_embedder().embed(["warm up"])
        with tempfile.TemporaryDirectory(prefix="codex-warmup-") as tmp:
            repo, home = Path(tmp) / "repo", CodexHome(Path(tmp) / "home")
            repo.mkdir()
            (repo / "warmup.py").write_text('def warm_up():\n    """Exercise every stage once."""\n    return 1\n')
            env = {**os.environ, "GIT_AUTHOR_NAME": "codex", "GIT_AUTHOR_EMAIL": "codex@localhost",
                   "GIT_COMMITTER_NAME": "codex", "GIT_COMMITTER_EMAIL": "codex@localhost"}
            for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "warm up"]):
                subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)
            RepoRegistry(home.registry_path).add("warmup", str(repo))
            instance = dg.DagsterInstance.ephemeral()
            instance.add_dynamic_partitions("repos", ["warmup"])
            codex_home = CodexHomeResource(root=str(home.root))
            embedder = EmbedderResource(codex_home=codex_home, model_path=configured.model_path,
                                        model_id=configured.model_id, device=configured.device)
            dg.materialize(
                [*ingestion_assets, *ingestion_checks], instance=instance, partition_key="warmup",
                resources={"codex_home": codex_home, "embedder": embedder,
                           "vector_store": EmbeddedVectorStoreResource(codex_home=codex_home)},
            )

    def beat(self) -> None:
        published.beat(self.home, self.interval_s)

    def stop_beating(self) -> None:
        published.stop_beating(self.home)

    def pending(self) -> list[tuple[str, str]]:
        """(repo, HEAD) of local repositories whose HEAD is not what serving publishes (index and graph)."""
        due = []
        for name, entry in sorted(RepoRegistry(self.home.registry_path).all().items()):
            if is_url(entry.source):
                continue
            try:
                sha = head_sha(entry.source)
            except GitError as exc:
                logger.warning("%s: cannot read HEAD (%s); will retry", name, exc)
                continue
            # A run stopped after publishing but before the graph was repaired counts as not done.
            done = sha == published.published_commit(self.home, name) == published.graph_commit(self.home, name)
            if not done and (name, sha) not in self._failed:
                due.append((name, sha))
        return due

    def _busy(self, repo: str) -> bool:
        """An ingest run of ``repo`` is queued or running (one writer per repository). Other runs, such
        as an evaluation, read a published copy: a new commit need not wait for them."""
        runs = self.instance.get_runs(
            dg.RunsFilter(job_name=self.job.name, statuses=_ACTIVE, tags={"dagster/partition": repo}), limit=1
        )
        return bool(runs)

    def reap_orphaned_runs(self) -> list[str]:
        """Mark failed the worker runs of this host whose process is gone; their run ids."""
        host = socket.gethostname()
        reaped = []
        runs = self.instance.get_runs(
            dg.RunsFilter(job_name=self.job.name, statuses=_ACTIVE, tags={TRIGGER_TAG: "freshness-worker"})
        )
        for run in runs:
            owner_host, _, pid = run.tags.get(WORKER_TAG, "").rpartition(":")
            if owner_host != host or not pid.isdigit() or pid_alive(int(pid)):
                continue  # another machine's, or its worker still runs it
            self.instance.report_run_failed(
                run, message=f"the freshness worker that ran it (pid {pid} on {host}) is gone; "
                             "a worker re-indexes the repository from where it stopped",
            )
            logger.warning("%s: run %s of a dead worker (pid %s) marked failed", run.tags.get("codex/repo"),
                           run.run_id, pid)
            reaped.append(run.run_id)
        return reaped

    def tick(self) -> list[WorkerRun]:
        """One pass: beat, then run the ingest job for every repository whose HEAD moved."""
        self.beat()
        done = []
        for repo, sha in self.pending():
            if self._busy(repo):
                logger.info("%s: a run of this repository is in progress; waiting for it", repo)
                continue
            if not self.instance.has_dynamic_partition("repos", repo):
                self.instance.add_dynamic_partitions("repos", [repo])
            started = time.perf_counter()
            result = self.job.execute_in_process(
                instance=self.instance, partition_key=repo, raise_on_error=False,
                tags={TRIGGER_TAG: "freshness-worker", "codex/repo": repo, "codex/commit": sha,
                      WORKER_TAG: f"{socket.gethostname()}:{os.getpid()}",
                      # This worker retries on its next tick; the daemon cannot re-execute an in-process run.
                      "dagster/max_retries": "0"},
            )
            run = WorkerRun(repo, sha, result.run_id, result.success, time.perf_counter() - started)
            if not run.success:
                self._failed.add((repo, sha))  # the next commit (or the sensor) tries again
                logger.error("%s@%s: ingest run %s failed; see the Dagster UI", repo, sha[:12], run.run_id)
            else:
                logger.info("%s@%s indexed in %.1f s (run %s)", repo, sha[:12], run.seconds, run.run_id)
            done.append(run)
            self.beat()
        return done

    def run_forever(self, stop: threading.Event) -> None:
        try:
            self.reap_orphaned_runs()
        except Exception:  # the next start tries again; freshness itself does not depend on it
            logger.exception("could not check for runs left by a dead freshness worker")
        try:
            self.warm()
        except Exception:  # only an optimization: the worker still works, the first commit is slower
            logger.exception("freshness worker warm-up failed; continuing without it")
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # a bad tick must not end freshness for every repository
                    logger.exception("freshness worker tick failed; retrying")
                stop.wait(self.interval_s)
        finally:
            self.stop_beating()
