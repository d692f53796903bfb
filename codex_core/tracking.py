"""MLflow tracking through an explicit ``MlflowClient``: no global active run, no state shared between runs.

``Tracker.from_settings`` is the one way an entry point gets its tracker:

- embedded default: ``sqlite:///<CODEX_HOME>/mlflow/mlflow.db`` with file artifacts beside it;
- ``MLFLOW_TRACKING_URI=postgresql+psycopg2://…`` (any SQLAlchemy database): the same, on that database;
  artifacts stay under ``CODEX_HOME/mlflow/artifacts``;
- ``MLFLOW_TRACKING_URI=http(s)://…``: a tracking server; artifacts follow the server, which is its own UI.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from codex_core.home import CodexHome
from codex_core.settings import Settings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class TrackedRun:
    def __init__(self, client, run_id: str, experiment_id: str, ui_url: str | None):
        self._client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.url = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if ui_url else None

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        for start in range(0, len(items), 500):
            self._client.log_batch(self.run_id, metrics=items[start : start + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self._client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def log_json(self, data: Any, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / name
            target.write_text(json.dumps(data, indent=2, default=str))
            self.log_artifact(target, artifact_path)


class Tracker:
    def __init__(self, tracking_uri: str, *, artifact_root: Path | None = None, ui_url: str | None = None):
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.ui_url = ui_url
        self._client = MlflowClient(tracking_uri=tracking_uri)

    @classmethod
    def embedded(cls, db_path: Path, *, ui_url: str | None = None) -> Tracker:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{db_path}", artifact_root=db_path.parent / "artifacts", ui_url=ui_url)

    @classmethod
    def from_settings(cls, settings: Settings, home: CodexHome, *, ui_url: str | None = None) -> Tracker:
        """The tracker of ``MLFLOW_TRACKING_URI`` (see the module docstring), else the embedded sqlite."""
        uri = settings.mlflow_uri
        if not uri:
            return cls.embedded(home.mlflow_db, ui_url=ui_url)
        if is_tracking_server(uri):
            return cls(uri, ui_url=uri)
        # A database the clients write directly: without an explicit root, MLflow would put each
        # new experiment's artifacts in ./mlruns of whatever directory the process started in.
        return cls(uri, artifact_root=home.mlflow_db.parent / "artifacts", ui_url=ui_url)

    @property
    def client(self):
        return self._client

    def experiment_id(self, name: str) -> str:
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (self.artifact_root / name).as_uri() if self.artifact_root else None
        return self._client.create_experiment(name, artifact_location=location)

    @contextmanager
    def run(self, experiment: str, run_name: str, tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        experiment_id = self.experiment_id(experiment)
        created = self._client.create_run(
            experiment_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()}
        )
        run = TrackedRun(self._client, created.info.run_id, experiment_id, self.ui_url)
        try:
            yield run
        except BaseException:
            self._client.set_terminated(run.run_id, status="FAILED")
            raise
        self._client.set_terminated(run.run_id, status="FINISHED")

    def runs(self, experiment: str, filter_string: str = "", max_results: int = 100):
        found = self._client.get_experiment_by_name(experiment)
        if found is None:
            return []
        return self._client.search_runs(
            [found.experiment_id], filter_string=filter_string, max_results=max_results,
            order_by=["attributes.start_time DESC"],
        )


def is_tracking_server(uri: str) -> bool:
    """``uri`` names an MLflow tracking server (``http(s)://``), not a database the client opens itself."""
    return urlsplit(uri).scheme.lower() in ("http", "https")
