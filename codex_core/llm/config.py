"""``configs/models.toml``: which models exist, where they are served, and which route uses which.

Base URL of an ``ollama`` model, first match wins:
1. the model's own ``base_url`` in the file (pins that model to one server);
2. ``OLLAMA_HOST`` from the environment;
3. ``[ollama] base_url`` in the file;
4. ``http://127.0.0.1:11434``.
``openai`` models (llama.cpp ``llama-server``, vLLM, ...) always name their ``base_url``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from codex_core.llm.types import ROUTES
from codex_core.strict import check_keys

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
BACKEND_KINDS = ("ollama", "openai")
REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "models.toml"


VERIFY_METHODS = ("lexical", "model", "off")
UNCITED_ROUTES = ("next", "extractive")  # [verify] uncited: where a compact-prompt draft that cited nothing goes
PROMPT_STYLES = ("auto", "standard", "compact")
# "qwen2.5-coder:1.5b", "SmolLM2-135M", "llama3.2:3b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
_SIZE_IN_NAME = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


def params_from_name(name: str) -> float | None:
    """Billions of parameters named in a model's name (``1.5b``, ``135M``), or None."""
    match = _SIZE_IN_NAME.search(name)
    if not match:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2).lower() == "m" else value


class ConfigError(ValueError):
    """models.toml is missing, malformed or inconsistent."""


def normalize_url(url: str, *, default_port: int | None = None) -> str:
    """``host``, ``host:port`` or ``scheme://host[:port][/path]`` -> ``scheme://host:port[/path]``."""
    raw = url.strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port or default_port or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{host}:{port}{path}"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the name sent to the server (Ollama tag, or the served model name)
    backend: str  # "ollama" | "openai"
    base_url: str
    context_window: int  # tokens; the prompt gets at most context_fraction of it
    timeout: float  # seconds for one whole generation
    temperature: float = 0.1
    api_key_env: str | None = None  # openai only: environment variable holding a bearer token
    params_b: float | None = None  # billions of parameters: given, or read from the name ("1.5b", "135m")
    prompt: str = "auto"  # auto (compact when params_b <= [prompt] compact_up_to_b) | standard | compact
    seed: int | None = None  # sampling seed sent with every call: the same prompt gets the same answer
    # At most this many snippets in this model's prompt: for a model later in a chain, an expert shown
    # more than the draft was ([prompt] compact_snippets for the compact prompt, else as many as fit).
    snippets: int | None = None

    @property
    def backend_id(self) -> str:
        """One server = one circuit breaker, shared by every model it serves."""
        return f"{self.backend}@{self.base_url}"


@dataclass(frozen=True)
class LLMConfig:
    models: dict[str, ModelSpec]
    routes: dict[str, tuple[str, ...]]  # route -> ordered model chain
    small_below: float = 0.35  # difficulty < small_below -> small
    large_from: float = 0.65  # difficulty >= large_from -> large; medium in between
    connect_timeout: float = 0.3
    failure_threshold: int = 2  # consecutive transport failures that open a backend's circuit
    cooldown_seconds: float = 30.0  # open -> half-open after this long
    health_timeout: float = 0.8  # budget for the whole health() call
    context_fraction: float = 0.6  # prompt share of the context window; the rest is for the answer
    extractive_snippets: int = 3
    verify_method: str = "lexical"  # lexical | model | off: how a draft is verified before it is returned
    escalate_below: float = 0.5  # τ: retrieval confidence under which the draft model is skipped
    # A compact-prompt answer naming nothing the shown snippets hold: "next" asks the next model of the
    # chain (shown the same snippets), "extractive" answers with those snippets, labelled (docs/llm.md).
    uncited: str = "next"
    compact_up_to_b: float = 2.0  # models this small (billions of parameters) get the compact prompt
    compact_snippets: int = 3  # the compact prompt shows at most this many snippets ...
    compact_snippet_lines: int = 40  # ... each cut to this many leading lines
    consistency_samples: int = 1  # self-consistency: samples of the first model asked (1 = off)
    consistency_temperature: float = 0.7  # temperature of samples 2..n
    consistency_min_agreement: float = 0.5  # below this share of agreeing samples the draft escalates
    source: str = "<built in code>"
    env_api_keys: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for route, chain in self.routes.items():
            if route not in ROUTES:
                raise ConfigError(f"unknown route {route!r} in {self.source}: use one of {ROUTES}")
            for name in chain:
                if name not in self.models:
                    raise ConfigError(
                        f"route {route!r} in {self.source} names model {name!r}, which has no [[models]] "
                        f"entry; known models: {sorted(self.models)}"
                    )
        if not 0.0 <= self.small_below <= self.large_from <= 1.0:
            raise ConfigError(
                f"router thresholds in {self.source} must satisfy 0 <= small_below <= large_from <= 1, "
                f"got small_below={self.small_below}, large_from={self.large_from}"
            )
        if self.verify_method not in VERIFY_METHODS:
            raise ConfigError(f"[verify] method in {self.source} must be one of {VERIFY_METHODS}, "
                              f"got {self.verify_method!r}")
        if self.uncited not in UNCITED_ROUTES:
            raise ConfigError(f"[verify] uncited in {self.source} must be one of {UNCITED_ROUTES}, "
                              f"got {self.uncited!r}")
        if not 0.0 <= self.escalate_below <= 1.0:
            raise ConfigError(f"[verify] escalate_below in {self.source} must be within [0, 1], "
                              f"got {self.escalate_below}")
        for spec in self.models.values():
            if spec.prompt not in PROMPT_STYLES:
                raise ConfigError(f"model {spec.name!r} in {self.source} has prompt = {spec.prompt!r}; use one of "
                                  f"{PROMPT_STYLES}")
        if not 1 <= self.consistency_samples <= 9:
            raise ConfigError(f"[consistency] samples in {self.source} must be within [1, 9], "
                              f"got {self.consistency_samples}")
        if not 0.0 <= self.consistency_min_agreement <= 1.0 or not 0.0 <= self.consistency_temperature <= 2.0:
            raise ConfigError(f"[consistency] min_agreement must be within [0, 1] and temperature within [0, 2] "
                              f"in {self.source}")
        if self.compact_snippets < 1 or self.compact_snippet_lines < 3:
            raise ConfigError(f"[prompt] compact_snippets must be >= 1 and compact_snippet_lines >= 3 in {self.source}")
        if not 0.1 <= self.context_fraction <= 0.6:
            raise ConfigError(
                f"context_fraction in {self.source} must be within [0.1, 0.6] so that at least 40% of "
                f"the window stays free for the answer, got {self.context_fraction}"
            )

    def prompt_style(self, spec: ModelSpec) -> str:
        """``standard`` or ``compact`` for ``spec``: its own ``prompt``, else by its size."""
        if spec.prompt != "auto":
            return spec.prompt
        return "compact" if spec.params_b is not None and spec.params_b <= self.compact_up_to_b else "standard"

    def max_snippets(self, spec: ModelSpec) -> int | None:
        """Snippets ``spec``'s prompt shows at most: its own ``snippets``, else ``[prompt]
        compact_snippets`` for the compact prompt; ``None``: as many as its context window holds."""
        if spec.snippets is not None:
            return spec.snippets
        return self.compact_snippets if self.prompt_style(spec) == "compact" else None

    def chain(self, route: str) -> list[ModelSpec]:
        return [self.models[name] for name in self.routes.get(route, ())]

    def api_key(self, spec: ModelSpec) -> str | None:
        return self.env_api_keys.get(spec.api_key_env) if spec.api_key_env else None


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env["CODEX_MODELS_CONFIG"]) if env.get("CODEX_MODELS_CONFIG") else REPO_CONFIG


def load_config(path: Path | None = None, *, env: Mapping[str, str] = os.environ) -> LLMConfig:
    path = path or default_config_path(env)
    if not path.is_file():
        raise ConfigError(
            f"model configuration {path} not found: create it (see configs/models.toml in the "
            "repository) or point CODEX_MODELS_CONFIG at one"
        )
    with path.open("rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return config_from_dict(data, env=env, source=str(path))


_MODEL_KEYS = ("name", "backend", "base_url", "context_window", "timeout", "temperature", "api_key_env", "params_b",
               "prompt", "seed", "snippets")


def config_from_dict(
    data: Mapping[str, Any], *, env: Mapping[str, str] = os.environ, source: str = "<dict>"
) -> LLMConfig:
    check_keys(data, ("ollama", "models", "routes", "router", "resilience", "prompt", "verify", "consistency"), source,
               ConfigError)
    check_keys(data.get("consistency") or {}, ("samples", "temperature", "min_agreement"), f"{source} [consistency]",
               ConfigError)
    check_keys(data.get("verify") or {}, ("method", "escalate_below", "uncited"), f"{source} [verify]", ConfigError)
    check_keys(data.get("ollama") or {}, ("base_url",), f"{source} [ollama]", ConfigError)
    check_keys(data.get("router") or {}, ("small_below", "large_from"), f"{source} [router]", ConfigError)
    check_keys(data.get("resilience") or {}, ("connect_timeout", "failure_threshold", "cooldown_seconds",
                                               "health_timeout"), f"{source} [resilience]", ConfigError)
    check_keys(data.get("prompt") or {}, ("context_fraction", "extractive_snippets", "compact_up_to_b",
                                           "compact_snippets", "compact_snippet_lines"), f"{source} [prompt]",
               ConfigError)
    for route, spec in (data.get("routes") or {}).items():
        check_keys(spec or {}, ("chain",), f"{source} [routes.{route}]", ConfigError)
    ollama_default = normalize_url(
        env.get("OLLAMA_HOST") or (data.get("ollama") or {}).get("base_url") or DEFAULT_OLLAMA_URL,
        default_port=11434,
    )
    models: dict[str, ModelSpec] = {}
    for entry in data.get("models") or []:
        name = entry.get("name")
        kind = entry.get("backend", "ollama")
        if not name:
            raise ConfigError(f"a [[models]] entry in {source} has no name")
        check_keys(entry, _MODEL_KEYS, f"{source} [[models]] {name!r}", ConfigError)
        if name in models:
            raise ConfigError(f"model {name!r} is listed twice in {source}")
        if kind not in BACKEND_KINDS:
            raise ConfigError(f"model {name!r} in {source} has backend {kind!r}; use one of {BACKEND_KINDS}")
        if kind == "ollama":
            base_url = normalize_url(entry["base_url"], default_port=11434) if entry.get("base_url") else ollama_default
        else:
            if not entry.get("base_url"):
                raise ConfigError(
                    f"model {name!r} in {source} uses backend 'openai' but has no base_url "
                    "(e.g. base_url = \"http://127.0.0.1:8080\" for llama-server)"
                )
            base_url = normalize_url(entry["base_url"])
            if base_url.endswith("/v1"):  # we append /v1/chat/completions ourselves
                base_url = base_url[: -len("/v1")]
        models[name] = ModelSpec(
            name=name,
            backend=kind,
            base_url=base_url,
            context_window=int(entry.get("context_window", 4096)),
            timeout=float(entry.get("timeout", 60.0)),
            temperature=float(entry.get("temperature", 0.1)),
            api_key_env=entry.get("api_key_env") or None,
            params_b=float(entry["params_b"]) if entry.get("params_b") is not None else params_from_name(name),
            prompt=str(entry.get("prompt", "auto")),
            seed=_optional_int(entry.get("seed"), "seed", 0, name, source),
            snippets=_optional_int(entry.get("snippets"), "snippets", 1, name, source),
        )
    routes = {route: tuple((spec or {}).get("chain") or ()) for route, spec in (data.get("routes") or {}).items()}
    router = data.get("router") or {}
    resilience = data.get("resilience") or {}
    prompt = data.get("prompt") or {}
    api_keys = {m.api_key_env: env[m.api_key_env] for m in models.values() if m.api_key_env and env.get(m.api_key_env)}
    return LLMConfig(
        models=models,
        routes=routes,
        small_below=float(router.get("small_below", 0.35)),
        large_from=float(router.get("large_from", 0.65)),
        connect_timeout=float(resilience.get("connect_timeout", 0.3)),
        failure_threshold=int(resilience.get("failure_threshold", 2)),
        cooldown_seconds=float(resilience.get("cooldown_seconds", 30.0)),
        health_timeout=float(resilience.get("health_timeout", 0.8)),
        context_fraction=float(prompt.get("context_fraction", 0.6)),
        extractive_snippets=int(prompt.get("extractive_snippets", 3)),
        compact_up_to_b=float(prompt.get("compact_up_to_b", 2.0)),
        compact_snippets=int(prompt.get("compact_snippets", 3)),
        compact_snippet_lines=int(prompt.get("compact_snippet_lines", 40)),
        consistency_samples=int((data.get("consistency") or {}).get("samples", 1)),
        consistency_temperature=float((data.get("consistency") or {}).get("temperature", 0.7)),
        consistency_min_agreement=float((data.get("consistency") or {}).get("min_agreement", 0.5)),
        verify_method=str((data.get("verify") or {}).get("method", "lexical")),
        escalate_below=float((data.get("verify") or {}).get("escalate_below", 0.5)),
        uncited=str((data.get("verify") or {}).get("uncited", "next")),
        source=source,
        env_api_keys=api_keys,
    )


def _optional_int(value: Any, key: str, minimum: int, name: str, source: str) -> int | None:
    """A model's ``seed`` (>= 0) or ``snippets`` (>= 1): an integer (bool is not one), or absent for the
    default (the server's own random seed; the [prompt] snippet count)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        raise ConfigError(f"model {name!r} in {source} has {key} {value!r}; use {kind}")
    return value
