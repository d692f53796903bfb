"""DAGSTER_HOME/dagster.yaml: the project's ``dagster.yaml`` plus the storage the settings choose.

Without ``CODEX_DAGSTER_PG_URL`` run, event-log and schedule storage stay Dagster's sqlite files under
DAGSTER_HOME. With it they are that PostgreSQL database (``dagster-postgres``). The file only names
the variable (``postgres_url: {env: CODEX_DAGSTER_PG_URL}``): the URL and its password are never
written to disk, and every Dagster process — webserver, daemon, run workers, ``feriactl`` and the
freshness worker — reads it from its own environment. The run queue (``QueuedRunCoordinator``, one
run per repository) comes from the project file either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from codex_core.settings import Settings

PROJECT_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"
FALLBACK: dict[str, Any] = {"telemetry": {"enabled": False}}
PG_URL_ENV = "CODEX_DAGSTER_PG_URL"
HEADER = (
    "# Written by feriactl from {source} and the settings (CODEX_DAGSTER_PG_URL: {storage}).\n"
    "# Edit those instead: this file is rewritten whenever they change.\n"
)


def instance_config(settings: Settings, project_yaml: Path = PROJECT_YAML) -> dict[str, Any]:
    """The instance config for ``settings``: the project file, with PostgreSQL storage when it is set."""
    config = yaml.safe_load(project_yaml.read_text()) if project_yaml.exists() else dict(FALLBACK)
    if settings.dagster_pg_url is not None:  # its form is checked by Settings
        config["storage"] = {"postgres": {"postgres_url": {"env": PG_URL_ENV}}}
    return config


def render_instance_yaml(settings: Settings, project_yaml: Path = PROJECT_YAML) -> str:
    storage = "set, PostgreSQL storage" if settings.dagster_pg_url is not None else "unset, sqlite storage"
    body = yaml.safe_dump(instance_config(settings, project_yaml), sort_keys=False, default_flow_style=False)
    return HEADER.format(source=project_yaml.name, storage=storage) + body


def write_instance_yaml(dagster_home: Path, settings: Settings, project_yaml: Path = PROJECT_YAML) -> Path:
    """Write DAGSTER_HOME/dagster.yaml for ``settings`` when its text differs from what is there."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    text = render_instance_yaml(settings, project_yaml)
    if not target.exists() or target.read_text() != text:
        tmp = target.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(target)  # a Dagster process starting meanwhile reads the old file or the new, never half
    return target
