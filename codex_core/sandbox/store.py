"""Where finished sandbox runs are kept: ``CODEX_HOME/agent/runs/<run_id>/``.

Each run directory holds ``report.json`` (``RunReport.to_dict()`` plus the repository name, recipe,
commit, tenant, start and finish, and which key signs its evidence), ``report.md`` (what
``feriactl agent show`` prints), every step's output under ``logs/`` (each step's ``logs`` names its
two files), the recipe's collected artifacts under ``artifacts/`` (their ``stored_at`` is relative
to the run directory), and the run's evidence: ``manifest.json`` hashing every one of those files
and ``signature.json`` signing it with the snapshots' key (:mod:`codex_core.sandbox.evidence`;
:meth:`RunStore.verify` checks it).

A run is written into a hidden staging directory (``.<run_id>.partial``), every file atomically,
sealed (manifest and signature) there, and renamed into place last: a reader (and ``list``) sees a
complete, sealed run or none, and a run killed half-way leaves only a staging directory that
nothing lists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codex_core.fsio import fsync_dir, write_json_atomic, write_text_atomic
from codex_core.home import CodexHome
from codex_core.sandbox.report import RunReport

if TYPE_CHECKING:
    from codex_core.sandbox.evidence import EvidenceCheck

REPORT_JSON, REPORT_MD, ARTIFACTS = "report.json", "report.md", "artifacts"
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def new_run_id() -> str:
    return uuid.uuid4().hex


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _markdown(report: RunReport, record: dict[str, Any], markdown: str | None = None) -> str:
    """The report's Markdown with who/what/when of the stored run under its title."""
    title, _, rest = (markdown or report.to_markdown()).partition("\n\n")
    tenant = f" · tenant `{record['tenant']}`" if record.get("tenant") else ""
    header = [
        f"- run `{record['run_id']}` · repository `{record['repo']}`{tenant}",
        f"- finished {record['finished_at']}",
    ]
    return f"{title}\n\n" + "\n".join(header) + "\n" + rest


class RunStore:
    """Sandbox runs under ``CODEX_HOME/agent/runs``: save one, list them newest first, load one by id,
    verify its evidence.

    ``keys``: the signing key first, then keys retired by a rotation (verification only). None reads
    ``CODEX_SNAPSHOT_KEY`` and ``CODEX_SNAPSHOT_PREVIOUS_KEYS`` through the settings when a run is saved
    or verified (never at construction), like the snapshot commands do.
    """

    def __init__(self, home: CodexHome, *, keys: Sequence[bytes | str] | None = None):
        self.root = home.agent_dir / "runs"
        self._keys = keys

    def keys(self) -> list[bytes]:
        from codex_core.snapshot.signing import as_keys, keys_from_env

        return keys_from_env() if self._keys is None else as_keys(list(self._keys))

    def run_dir(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or RUN_ID_RE.fullmatch(run_id) is None:
            raise KeyError(f"no agent run {run_id!r}: a run id is 32 hex digits (`feriactl agent runs` lists them)")
        return self.root / run_id

    def save(self, report: RunReport, *, run_id: str, repo: str, tenant: str = "", requested_commit: str = "",
             started_at: str = "", finished_at: str = "", artifacts_from: Path | None = None,
             dagster_run_id: str = "", extra: dict[str, Any] | None = None,
             markdown: str | None = None) -> dict[str, Any]:
        """Write the run (report.json, report.md, step logs, artifacts copied from ``artifacts_from``) and
        its signed manifest; return its record. Unsigned (and so never verified) when no key is configured.
        ``extra`` adds fields to the record and ``markdown`` replaces the report's own Markdown (the
        debug agent's run keeps its diagnosis and diff in both)."""
        # Late import: codex_core.snapshot pulls in pandas, and `import codex_core.sandbox` stays light.
        from codex_core.sandbox.evidence import claim, seal, write_logs

        final = self.run_dir(run_id)
        if final.exists():
            raise FileExistsError(f"agent run {run_id} is already stored at {final}")
        keys = self.keys()  # a misconfigured key fails here, before anything is written
        key = keys[0] if keys else None
        staging = self.root / f".{run_id}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            data = report.to_dict()
            data["artifacts"] = [dict(art) for art in data["artifacts"]]  # as it reads back from JSON
            for step, logs in zip(data["steps"], write_logs(staging, report.steps), strict=True):
                step["logs"] = logs
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
                "evidence": claim(key),
                **(extra or {}),
            }
            write_json_atomic(staging / REPORT_JSON, record)
            write_text_atomic(staging / REPORT_MD, _markdown(report, record, markdown))
            seal(staging, record, key)
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

    def verify(self, run_id: str) -> EvidenceCheck:
        """Check a stored run against its signed manifest (:func:`codex_core.sandbox.evidence.verify_run`)."""
        from codex_core.sandbox.evidence import verify_run

        run_dir = self.run_dir(run_id)
        if not run_dir.is_dir():
            raise KeyError(f"no agent run {run_id!r} under {self.root} (`feriactl agent runs` lists them)")
        return verify_run(run_dir, self.keys(), run_id=run_id)

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
