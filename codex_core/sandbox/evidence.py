"""Evidence of a stored agent run: every file of its run directory hashed into a signed manifest.

A run directory (``CODEX_HOME/agent/runs/<run_id>/``, written by :class:`~codex_core.sandbox.store.RunStore`)::

    report.json, report.md
    logs/step-<n>.stdout, logs/step-<n>.stderr   every step's output, n from 1 as in report.md
    artifacts/<path>                              the recipe's collected artifacts
    manifest.json     {format, format_version, run_id, repo, recipe, commit, status, created_at,
                       files: {relative path: {size, sha256}}} — every file above, nothing else
    signature.json    HMAC-SHA256 over the canonical manifest: the snapshots' scheme and helpers
                      (:mod:`codex_core.snapshot.signing`), so the same keys sign both

Keys are the snapshots': ``CODEX_SNAPSHOT_KEY`` signs and verifies, ``CODEX_SNAPSHOT_PREVIOUS_KEYS``
verifies runs signed before a rotation, and ``key_id`` is the same fingerprint.

No key configured: snapshots never make an unsigned archive silently (``--unsigned`` is an explicit
opt-in) and refuse to verify one. A run is stored after its sandbox work is done, so refusing to
store it would only lose that work: it is stored with ``{"algorithm": "none"}`` (the snapshots'
unsigned form), its files hashed all the same, and :func:`verify_run` reports it ``unsigned``,
which is never ``ok``.

``manifest.json`` is written as its canonical JSON, byte for byte what the HMAC covers, so any edit
of it — reformatting included — is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codex_core.fsio import file_manifest, write_bytes_atomic, write_text_atomic
from codex_core.sandbox.report import StepResult
from codex_core.snapshot.format import KEY_ENV, PREVIOUS_KEYS_ENV, canonical_json
from codex_core.snapshot.signing import (
    INVALID_HMAC,
    MALFORMED,
    NO_KEY,
    UNKNOWN_KEY,
    UNSIGNED,
    VALID,
    key_fingerprint,
    match_signature,
    sign_manifest,
)

FORMAT = "precision-codex-agent-run"
FORMAT_VERSION = 1
MANIFEST, SIGNATURE, LOGS = "manifest.json", "signature.json", "logs"
MISSING = "missing"  # a signature status beside signing's: manifest.json or signature.json is absent
STREAMS = ("stdout", "stderr")


def log_path(step_number: int, stream: str) -> str:
    """Where step ``step_number`` (from 1)'s ``stream`` is kept, relative to the run directory."""
    return f"{LOGS}/step-{step_number}.{stream}"


def write_logs(run_dir: Path, steps: Sequence[StepResult]) -> list[dict[str, str]]:
    """Write every step's stdout and stderr (empty ones too: a log that is absent was removed);
    return each step's ``{stream: relative path}``."""
    written = []
    for number, step in enumerate(steps, 1):
        paths = {stream: log_path(number, stream) for stream in STREAMS}
        for stream, rel in paths.items():
            write_text_atomic(run_dir / rel, getattr(step, stream))
        written.append(paths)
    return written


def claim(key: bytes | None) -> dict[str, Any]:
    """What ``report.json`` says about the run's evidence, for listings that must not hash anything.
    A claim, covered by the signature like every byte of report.json, but checked only by :func:`verify_run`."""
    return {"signed": key is not None, "key_id": key_fingerprint(key) if key is not None else None}


def seal(run_dir: Path, record: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """Hash every file of ``run_dir`` into ``manifest.json`` and sign it into ``signature.json`` (unsigned
    when ``key`` is None). Call it last: a file written afterwards is an extra file. Returns the manifest."""
    files = {rel: {"size": size, "sha256": sha} for rel, (size, sha) in file_manifest(run_dir).items()
             if rel not in (MANIFEST, SIGNATURE)}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run_id": record["run_id"],
        "repo": record["repo"],
        "recipe": record["recipe"],
        "commit": record["commit"],
        "status": record["status"],
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "files": files,
    }
    write_bytes_atomic(run_dir / MANIFEST, canonical_json(manifest))
    write_bytes_atomic(run_dir / SIGNATURE, canonical_json(sign_manifest(manifest, key)))
    return manifest


@dataclass(frozen=True)
class EvidenceCheck:
    """What :func:`verify_run` found. ``ok`` only when the signature is valid and every file matches."""

    run_id: str
    run_dir: Path
    signature: str  # valid | invalid hmac | unsigned | unknown key | no key | malformed | missing
    key_id: str | None  # valid: the key that signed it; otherwise the key signature.json names, if any
    modified: tuple[str, ...]  # listed in the manifest, different on disk (or no longer a regular file)
    missing: tuple[str, ...]  # listed in the manifest (or manifest.json / signature.json themselves), absent
    extra: tuple[str, ...]  # on disk, not listed in the manifest
    offending: tuple[str, ...]  # every file a finding names, manifest.json and signature.json included
    problems: tuple[str, ...]  # one line per finding: "<file>: what is wrong (and what to do)"
    files_checked: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "run_dir": str(self.run_dir), "ok": self.ok}


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _on_disk(run_dir: Path) -> dict[str, tuple[int, str] | None]:
    """``{relative path: (size, sha256)}`` of every regular file under ``run_dir``; None for anything
    else (a symlink, fifo or device is never evidence). fsio.file_manifest would follow symlinks and
    block on a fifo, so this walks with ``lstat``."""
    found: dict[str, tuple[int, str] | None] = {}
    for dirpath, dirnames, filenames in os.walk(run_dir):  # does not enter symlinked directories
        base = Path(dirpath)
        for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]:
            path = base / name
            rel = path.relative_to(run_dir).as_posix()
            info = path.lstat()
            found[rel] = (info.st_size, _sha256(path)) if stat.S_ISREG(info.st_mode) else None
    return found


def _read_json(path: Path) -> tuple[bytes | None, Any]:
    """(raw bytes, parsed) of a JSON file; (None, None) when absent, (bytes, None) when not JSON or not a
    regular file (a symlink could point anywhere, a fifo would block)."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return b"", None
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        return raw, json.loads(raw)
    except ValueError:
        return raw, None


def _signature_problem(status: str, named: str | None, keys: Sequence[bytes]) -> tuple[str, str]:
    """(the file to blame, what is wrong) for a signature that is not valid."""
    given = ", ".join(key_fingerprint(k) for k in keys)
    return {
        INVALID_HMAC: (MANIFEST, f"HMAC mismatch — it (or {SIGNATURE}) was modified after it was signed"),
        UNSIGNED: (SIGNATURE, f"unsigned — the run was stored without {KEY_ENV}, so its hashes prove nothing "
                              f"about who wrote them (set {KEY_ENV} before running agents)"),
        UNKNOWN_KEY: (SIGNATURE, f"signed with key {named}, not with the key(s) given ({given}): set {KEY_ENV} to "
                                 f"the key that signed it (after a rotation, list old keys in {PREVIOUS_KEYS_ENV})"),
        NO_KEY: (SIGNATURE, f"signed with key {named} but no key is configured: set {KEY_ENV}"),
        MALFORMED: (SIGNATURE, "not a signature this version understands (unknown algorithm, or no hmac)"),
        MISSING: (SIGNATURE, f"missing — nothing vouches for {MANIFEST}"),
    }[status]


def verify_run(run_dir: Path, keys: Sequence[bytes], *, run_id: str | None = None) -> EvidenceCheck:
    """Check ``run_dir`` against its signed manifest: the signature under ``keys`` (current key first,
    then retired ones), then every file's size and sha256, and that no file was added or removed.

    ``run_id`` (default: the directory's name) must be the manifest's: a signed manifest moved over
    from another run is not this run's evidence. Never raises for a tampered run; reports it.
    """
    run_dir = Path(run_dir)
    run_id = run_id or run_dir.name
    keys = list(keys)
    found: dict[str, list[str]] = {"modified": [], "missing": [], "extra": []}
    problems: list[tuple[str, str]] = []

    def flag(rel: str, problem: str, kind: str | None = None) -> None:
        problems.append((rel, problem))
        if kind is not None and rel not in found[kind]:
            found[kind].append(rel)

    def result(status: str, key_id: str | None, files_checked: int) -> EvidenceCheck:
        return EvidenceCheck(
            run_id=run_id, run_dir=run_dir, signature=status, key_id=key_id,
            modified=tuple(sorted(found["modified"])), missing=tuple(sorted(found["missing"])),
            extra=tuple(sorted(found["extra"])), offending=tuple(sorted({rel for rel, _ in problems})),
            problems=tuple(f"{rel}: {problem}" for rel, problem in problems), files_checked=files_checked,
        )

    raw, manifest = _read_json(run_dir / MANIFEST)
    if raw is None:
        flag(MANIFEST, "missing — the run cannot be checked (stored before agent runs were signed?)", "missing")
        return result(MISSING, None, 0)
    is_manifest = isinstance(manifest, dict) and manifest.get("format") == FORMAT
    if not is_manifest or not isinstance(manifest.get("files"), dict):
        flag(MANIFEST, f"modified — not a {FORMAT} manifest (not JSON, or no files table)", "modified")
        return result(MALFORMED, None, 0)

    signature_raw, signature = _read_json(run_dir / SIGNATURE)
    if signature_raw is None:
        status, key_id = MISSING, None
    elif not isinstance(signature, dict):
        status, key_id = MALFORMED, None
    else:
        match = match_signature(manifest, signature, keys)
        status, key_id = match.status, match.key_id
    if status != VALID:
        rel, problem = _signature_problem(status, key_id, keys)
        flag(rel, problem, {MISSING: "missing", MALFORMED: "modified"}.get(status))
    if raw != canonical_json(manifest):
        flag(MANIFEST, "modified — it is no longer byte for byte the manifest that was signed", "modified")
    if manifest.get("run_id") != run_id:
        flag(MANIFEST, f"it is the manifest of run {manifest.get('run_id')!r}, not of {run_id}")

    listed: dict[str, Any] = manifest["files"]
    on_disk = _on_disk(run_dir)
    for rel in sorted(listed):
        entry = listed[rel] if isinstance(listed[rel], dict) else {}
        if rel not in on_disk:
            flag(rel, f"missing — listed in {MANIFEST}, gone from the run directory", "missing")
            continue
        actual = on_disk[rel]
        if actual is None:
            flag(rel, "modified — no longer a regular file", "modified")
        elif actual != (entry.get("size"), entry.get("sha256")):
            flag(rel, f"modified — {actual[0]} bytes, sha256 {actual[1][:16]}…; {MANIFEST} lists "
                      f"{entry.get('size')} bytes, sha256 {str(entry.get('sha256'))[:16]}…", "modified")
    for rel in sorted(set(on_disk) - set(listed) - {MANIFEST, SIGNATURE}):
        flag(rel, f"extra — added to the run directory, not listed in {MANIFEST}", "extra")
    return result(status, key_id, len(listed))
