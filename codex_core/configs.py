"""Versioned retrieval/answer configurations: what champion, challenger and canary refer to.

A config is immutable and content-addressed: its id is a hash of its canonical JSON. Configs are
stored under ``CODEX_HOME/configs/<id>.json``; the MLflow model registry (``registry.py``) holds
which id is ``champion`` and which is ``challenger``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core.embedding import DEFAULT_MODEL_ID
from codex_core.fsio import write_json_atomic
from codex_core.retrieval import RetrievalConfig
from codex_core.strict import check_keys

CONFIG_ID_LENGTH = 12
# Fields an AnswerConfig once had that nothing read (the reranker comes from CODEX_RERANKER_PATH, the
# router from configs/models.toml, the calibrator is always the repository's newest): retired, with
# the only value any stored config had.
_RETIRED: dict[str, Any] = {"reranker": None, "router_policy": "configs/models.toml", "calibrator": "current"}
# Retrieval fields added after configs were first stored, with the value that does what configs
# did before them: at that value a field stays out of the id, so every existing id still names the
# same behaviour (a stored config without the field loads with that value).
_ADDED_RETRIEVAL: dict[str, Any] = {"file_lexical_weight": 0.0, "file_lexical_k": 50, "learned_ranker": True,
                                   "global_ranker": False, "in_file_order": "fused", "in_file_prose_weight": 0.0}


@dataclass(frozen=True)
class AnswerConfig:
    """Everything that decides an answer, besides the code itself."""

    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    embedder: str = DEFAULT_MODEL_ID
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerConfig:
        """A config from its JSON; an unknown key (a typo) is a ``ValueError`` naming it. Keys of
        fields that no code ever read (``_RETIRED``) are accepted from stored configs and ignored."""
        data = {k: v for k, v in data.items() if k not in _RETIRED}
        check_keys(data, [f.name for f in fields(cls)], "answer config")
        check_keys(data.get("retrieval") or {}, [f.name for f in fields(RetrievalConfig)], "answer config retrieval")
        # A stored config means what it meant when it was stored: a field added since takes the value
        # that does what configs did before it (not today's default), so its behaviour and id stay.
        retrieval = RetrievalConfig(**{**_ADDED_RETRIEVAL, **(data.get("retrieval") or {})})
        rest = {f.name: data[f.name] for f in fields(cls) if f.name in data and f.name != "retrieval"}
        return cls(retrieval=retrieval, **rest)

    @property
    def config_id(self) -> str:
        # The retired fields keep their one value in the hash, so every id stays what it was (stored
        # configs, MLflow versions, canary state and the served champion keep pointing at them).
        canonical = {**_RETIRED, **{k: v for k, v in self.to_dict().items() if k != "description"}}
        canonical["retrieval"] = {
            k: v for k, v in canonical["retrieval"].items() if not (k in _ADDED_RETRIEVAL and v == _ADDED_RETRIEVAL[k])
        }
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:CONFIG_ID_LENGTH]


class ConfigStore:
    def __init__(self, root: Path):
        self.root = root

    def save(self, config: AnswerConfig) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{config.config_id}.json"
        if not path.exists():
            write_json_atomic(path, config.to_dict(), indent=2, sort_keys=True)
        return config.config_id

    def load(self, config_id: str) -> AnswerConfig:
        if not config_id.isalnum() or len(config_id) != CONFIG_ID_LENGTH:
            raise ValueError(f"invalid config id {config_id!r}: expected {CONFIG_ID_LENGTH} hex characters")
        path = self.root / f"{config_id}.json"
        if not path.exists():
            raise KeyError(f"no config {config_id!r} under {self.root} (list them: feriactl config list)")
        return AnswerConfig.from_dict(json.loads(path.read_text()))

    @property
    def served_path(self) -> Path:
        """Which config serving answers with, mirrored from the MLflow ``champion`` alias by
        ``ChampionService`` (a subdirectory: ``list`` reads only the configs themselves)."""
        return self.root / "served" / "champion.json"

    def serve(self, config_id: str, version: int) -> None:
        self.served_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.served_path, {"config_id": config_id, "version": version,
                                             "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")})

    def served(self) -> str | None:
        """The champion config id (None: none promoted yet, the built-in default serves)."""
        try:
            data = json.loads(self.served_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        config_id = data.get("config_id") if isinstance(data, dict) else None
        return config_id if isinstance(config_id, str) else None

    def served_retrieval(self) -> tuple[str | None, RetrievalConfig]:
        """The served config's id and retrieval (None and the built-in default when none is promoted);
        ``KeyError``/``ValueError`` when the served config is missing or unreadable."""
        served = self.served()
        return served, self.load(served).retrieval if served else RetrievalConfig()

    def list(self) -> dict[str, AnswerConfig]:
        return {p.stem: AnswerConfig.from_dict(json.loads(p.read_text())) for p in sorted(self.root.glob("*.json"))}
