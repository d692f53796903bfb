"""Where finished sandbox runs are kept: ``CODEX_HOME/agent/runs/<run_id>/``.

Each run directory holds ``report.json`` (``RunReport.to_dict()`` plus the repository name, recipe,
commit, tenant, start and finish), ``report.md`` (what ``feriactl agent show`` prints) and the
recipe's collected artifacts under ``artifacts/`` (their ``stored_at`` is relative to the run
directory). A run is written into a hidden staging directory (``.<run_id>.partial``), every file
atomically, and renamed into place last: a reader (and ``list``) sees a complete run or none, and
a run killed half-way leaves only a staging directory that nothing lists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core.fsio import fsync_dir, write_json_atomic, write_text_atomic
from codex_core.home import CodexHome
from codex_core.sandbox.report import RunReport

REPORT_JSON, REPORT_MD, ARTIFACTS = "report.json", "report.md", "artifacts"
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def new_run_id() -> str:
    return uuid.uuid4().hex


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _markdown(report: RunReport, record: dict[str, Any]) -> str:
    """The report's Markdown with who/what/when of the stored run under its title."""
    title, _, rest = report.to_markdown().partition("\n\n")
    tenant = f" · tenant `{record['tenant']}`" if record.get("tenant") else ""
    header = [
        f"- run `{record['run_id']}` · repository `{record['repo']}`{tenant}",
        f"- finished {record['finished_at']}",
    ]
    return f"{title}\n\n" + "\n".join(header) + "\n" + rest


class RunStore:
    """Sandbox runs under ``CODEX_HOME/agent/runs``: save one, list them newest first, load one by id."""

    def __init__(self, home: CodexHome):
        self.root = home.agent_dir / "runs"

    def run_dir(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or RUN_ID_RE.fullmatch(run_id) is None:
            raise KeyError(f"no agent run {run_id!r}: a run id is 32 hex digits (`feriactl agent runs` lists them)")
        return self.root / run_id

    def save(self, report: RunReport, *, run_id: str, repo: str, tenant: str = "", requested_commit: str = "",
             started_at: str = "", finished_at: str = "", artifacts_from: Path | None = None,
             dagster_run_id: str = "") -> dict[str, Any]:
        """Write the run (report.json, report.md, artifacts copied from ``artifacts_from``); return its record."""
        final = self.run_dir(run_id)
        if final.exists():
            raise FileExistsError(f"agent run {run_id} is already stored at {final}")
        staging = self.root / f".{run_id}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            data = report.to_dict()
            data["artifacts"] = [dict(art) for art in data["artifacts"]]  # as it reads back from JSON
            for art in data["artifacts"]:
                source = artifacts_from / art["path"] if artifacts_from is not None else None
                if art["status"] == "collected" and source is not None and source.is_file():
                    target = staging / ARTIFACTS / art["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                    art["stored_at"] = f"{ARTIFACTS}/{art['path']}"
                else:
                    art["stored_at"] = None
            record = {
                **data,
                "run_id": run_id,
                "repo": repo,
                "repo_path": report.repo,
                "recipe": report.recipe,
                "commit": report.commit,
                "requested_commit": requested_commit or None,
                "tenant": tenant or None,
                "started_at": started_at or report.started_at,
                "finished_at": finished_at or now_iso(),
                "dagster_run_id": dagster_run_id or None,
            }
            write_json_atomic(staging / REPORT_JSON, record)
            write_text_atomic(staging / REPORT_MD, _markdown(report, record))
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.root)
        return record

    def load(self, run_id: str) -> dict[str, Any]:
        path = self.run_dir(run_id) / REPORT_JSON
        if not path.is_file():
            raise KeyError(f"no agent run {run_id!r} under {self.root} (`feriactl agent runs` lists them)")
        return json.loads(path.read_text())

    def markdown(self, run_id: str) -> str:
        self.load(run_id)  # the same clear error for an unknown id
        return (self.run_dir(run_id) / REPORT_MD).read_text()

    def list(self) -> list[dict[str, Any]]:
        """Every stored run's record, newest first (by finish time, then start time)."""
        if not self.root.is_dir():
            return []
        records = []
        for entry in self.root.iterdir():
            if RUN_ID_RE.fullmatch(entry.name) is None or not (entry / REPORT_JSON).is_file():
                continue  # staging directories of unfinished runs, strays
            try:
                records.append(json.loads((entry / REPORT_JSON).read_text()))
            except (OSError, ValueError):
                continue
        return sorted(records, key=lambda r: (r.get("finished_at") or "", r.get("started_at") or ""), reverse=True)
