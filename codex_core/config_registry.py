"""Answer configs in MLflow's model registry, with the aliases ``champion`` and ``challenger``.

Each registered version carries its config JSON as an artifact and the content-addressed id as a
tag; the JSON itself also lives in the local :class:`ConfigStore` so serving never needs MLflow.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from codex_core.configs import AnswerConfig, ConfigStore
from codex_core.tracking import Tracker

REGISTERED_MODEL = "precision-codex-answer-config"
EXPERIMENT = "precision-codex-configs"
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class RegisteredConfig:
    version: int
    config_id: str
    config: AnswerConfig


class ConfigRegistry:
    def __init__(self, tracker: Tracker, store: ConfigStore):
        self.tracker = tracker
        self.store = store
        self._client = tracker.client

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(REGISTERED_MODEL)
        except MlflowException:
            self._client.create_registered_model(
                REGISTERED_MODEL, description="Retrieval/answer configurations of Precision Codex"
            )

    def register(self, config: AnswerConfig, *, alias: str | None = None) -> RegisteredConfig:
        """A new model version for ``config`` (or the existing one with the same id), optionally aliased."""
        self._ensure_model()
        config_id = self.store.save(config)
        existing = self._client.search_model_versions(f"name='{REGISTERED_MODEL}' and tag.config_id='{config_id}'")
        if existing:
            version = int(existing[0].version)
        else:
            with self.tracker.run(EXPERIMENT, f"config {config_id}", {"config_id": config_id}) as run:
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "config.json"
                    path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
                    run.log_artifact(path, "config")
                source = f"{self._client.get_run(run.run_id).info.artifact_uri}/config"
            created = self._client.create_model_version(
                REGISTERED_MODEL, source, run_id=run.run_id, tags={"config_id": config_id},
                description=config.description or None,
            )
            version = int(created.version)
        if alias:
            self._client.set_registered_model_alias(REGISTERED_MODEL, alias, str(version))
        return RegisteredConfig(version, config_id, config)

    def by_alias(self, alias: str) -> RegisteredConfig | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(REGISTERED_MODEL, alias)
        except MlflowException:
            return None
        config_id = mv.tags["config_id"]
        return RegisteredConfig(int(mv.version), config_id, self.store.load(config_id))

    def promote(self, challenger: RegisteredConfig) -> None:
        """The challenger becomes champion; the challenger alias is cleared."""
        self._client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, str(challenger.version))
        self._client.delete_registered_model_alias(REGISTERED_MODEL, CHALLENGER)

    def reject(self) -> None:
        self._client.delete_registered_model_alias(REGISTERED_MODEL, CHALLENGER)
