"""What every ``feriactl`` command module shares: the error type, CODEX_HOME set-up and output.

Command modules (``main``, ``snapshot_cmds``, ``serving_cmds``, ``secrets_cmds``) import from here;
``main`` imports the others to build the parser. Nothing outside ``codex_cli`` imports the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from codex_cli.instance import write_instance_yaml
from codex_core.home import CodexHome, default_home
from codex_core.settings import Settings


class CliError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a clear usage error otherwise, not a failed run)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def home() -> CodexHome:
    codex_home = CodexHome(default_home())
    # Dagster resources and child processes read these; set once, absolute.
    os.environ["CODEX_HOME"] = str(codex_home.root)
    os.environ["DAGSTER_HOME"] = str(codex_home.dagster_home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return codex_home


def ensure_instance_dir(home: CodexHome, settings: Settings | None = None) -> Path:
    """DAGSTER_HOME under CODEX_HOME with its dagster.yaml (instance config) written from the project's file
    and the settings: sqlite storage there, or PostgreSQL when ``CODEX_DAGSTER_PG_URL`` is set."""
    write_instance_yaml(home.dagster_home, settings or Settings.from_env())
    return home.dagster_home


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human)


def config_registry(home: CodexHome):
    from codex_core.config_registry import ConfigRegistry
    from codex_core.configs import ConfigStore
    from codex_core.tracking import Tracker

    return ConfigRegistry(Tracker.from_settings(Settings.from_env(), home), ConfigStore(home.configs_dir))


def execute_job(
    job_name: str, partition: str, *, stages: int, show_progress: bool, run_config: dict | None = None,
    tags: dict[str, str] | None = None,
) -> tuple[Any, str, Any]:
    """Run a partitioned job in-process on the CODEX_HOME instance (visible in the Dagster UI):
    (instance, run id, ExecuteInProcessResult)."""
    import dagster as dg

    from codex_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("repos", [partition])
    job = defs().resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    outcome: dict[str, Any] = {}

    def execute() -> None:
        try:
            # The terminal gets the progress bar and the summary; every event stays in the Dagster UI.
            quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            outcome["result"] = job.execute_in_process(
                run_config={**(run_config or {}), **quiet}, instance=instance, partition_key=partition,
                run_id=run_id, tags=tags, raise_on_error=False,
            )
        except Exception as exc:  # surfaced below, after the progress bar is closed
            outcome["error"] = exc

    worker = threading.Thread(target=execute, daemon=True)
    worker.start()
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=stages, desc=f"{job_name} {partition}", unit="stage", file=sys.stderr)
    seen = 0
    while worker.is_alive():
        worker.join(0.5)
        if bar is None:
            continue
        logs = instance.all_logs(run_id)
        done = sum(1 for e in logs if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION")
        bar.update(done - seen)
        seen = done
        messages = [e.user_message for e in logs if e.user_message.startswith("embedded ")]
        if messages:
            bar.set_postfix_str(messages[-1])
    if bar is not None:
        bar.close()
    if "error" in outcome:
        raise outcome["error"]
    return instance, run_id, outcome["result"]
