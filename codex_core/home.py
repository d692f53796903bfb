"""Where state lives. Everything is under one directory, ``CODEX_HOME`` (default ``./.codex``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# The one rule for every name that becomes a directory, a partition key, a collection alias or a
# URL path segment: repositories, tenants, eval sets. 1-64 characters, no leading dot or dash.
NAME_RULE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
NAME_PATTERN = re.compile(NAME_RULE)
REPO_NAME_RE = re.compile(f"^{NAME_RULE}$")  # anchored form, for pydantic ``pattern=`` and ``re.match``


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None and ".." not in name


def validate_repo_name(name: str, *, what: str = "repository", hint: str = " (pass --name to choose one)") -> str:
    """Repo names become directory names and partition keys: keep them boring."""
    if not is_valid_name(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use 1-64 characters from [A-Za-z0-9._-], "
            f"starting with a letter or digit{hint}"
        )
    return name


def default_home() -> Path:
    return Path(os.environ.get("CODEX_HOME", ".codex")).expanduser().resolve()


@dataclass(frozen=True)
class CodexHome:
    root: Path

    @classmethod
    def from_env(cls) -> CodexHome:
        return cls(default_home())

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def embedding_cache_path(self) -> Path:
        return self.root / "embeddings" / "cache.sqlite"

    @property
    def registry_path(self) -> Path:
        return self.root / "repos.json"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow" / "mlflow.db"

    @property
    def postgres_dir(self) -> Path:
        """``feriactl up --profile scale``'s PostgreSQL: ``data/`` (the cluster) and ``password`` (0600)."""
        return self.root / "postgres"

    def repo_dir(self, name: str) -> Path:
        return self.root / "repos" / validate_repo_name(name)

    def checkout_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "checkout"

    def graph_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "graph"

    @property
    def evals_dir(self) -> Path:
        return self.root / "evals"

    def eval_results_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "eval"

    def calibration_dir(self, name: str) -> Path:
        return self.repo_dir(name) / "calibration"

    def ranker_path(self, name: str) -> Path:
        """The repository's published learned file ranker (``codex_core.ranker``); absent = hand-set order."""
        return self.repo_dir(name) / "ranker" / "current.json"

    @property
    def configs_dir(self) -> Path:
        return self.root / "configs"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def agent_dir(self) -> Path:
        """Sandbox agent state: one directory per run under ``runs/`` (``codex_core.sandbox.store``)."""
        return self.root / "agent"

    @property
    def models_dir(self) -> Path:
        """Model files assembled from packaged parts (``codex_core.llm.local_server``)."""
        return self.root / "models"

    @property
    def llm_dir(self) -> Path:
        """Local model servers started detached: pid records and logs (``codex_core.llm.local_server``)."""
        return self.root / "llm"

    @property
    def serving_state_dir(self) -> Path:
        """Files the operator writes and serving reads: canary.json, kill_switch.json, tenants."""
        return self.root / "serving"
