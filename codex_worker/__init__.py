"""The freshness worker: a long-lived process (``feriactl worker``) that re-indexes local
repositories within seconds of a commit. A process, not a sensor: it runs the ``ingest`` job of the
Definitions, so it sits above ``codex_assets`` and nothing but the CLI imports it."""

from codex_worker.worker import TRIGGER_TAG, FreshnessWorker, WorkerRun

__all__ = ["TRIGGER_TAG", "FreshnessWorker", "WorkerRun"]
