"""What ingestion would mask in a repository, listed before it is indexed (``feriactl secrets scan``).

The files are selected exactly as ingestion selects them (``codex_core.files``: same tracked files
at the same commit, same skip rules, same decoding) and masked with the same ``mask_secrets(text,
path=path)`` call, so the report lists what the index would hold as ``«redacted:<kind>»``.

A finding never carries the secret: its preview is the MASKED line (stripped, clipped around the
redaction), checked before it is returned to hold the redaction marker and not the masked value.
Framework-free (no dagster, no fastapi): the CLI command stays instant.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codex_core.files import MAX_FILE_BYTES, content_skip_reason, decode, select_tracked
from codex_core.git import GitError, TreeEntry, head_sha, read_blobs
from codex_core.secrets import MASKER_VERSION, mask_secrets

# The masker's documented output format: each secret becomes «redacted:<kind>».
REDACTED_PREFIX = "«redacted:"
PREVIEW_CHARS = 160  # the clipped preview's width, without the "…" that mark a cut
ELLIPSIS = "…"
_MARKER = re.compile(re.escape(REDACTED_PREFIX) + r"[A-Za-z0-9_.-]+»")


def redaction(kind: str) -> str:
    return f"{REDACTED_PREFIX}{kind}»"


@dataclass(frozen=True)
class SecretScanFinding:
    """One masked span: where it is and what kind, with the masked line as context (never the value)."""

    path: str
    line: int  # 1-based
    rule: str  # SecretFinding.kind
    preview: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SecretScanReport:
    repo: str
    commit: str
    masker_version: int
    files_scanned: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason, as ingestion skips it
    findings: list[SecretScanFinding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files_skipped(self) -> int:
        return len(self.skipped)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(self.skipped.values()).items()))

    @property
    def findings_by_rule(self) -> dict[str, int]:
        return dict(sorted(Counter(f.rule for f in self.findings).items()))

    @property
    def files_with_findings(self) -> int:
        return len({f.path for f in self.findings})

    def to_dict(self) -> dict:
        return {
            "repo": self.repo,
            "commit": self.commit,
            "masker_version": self.masker_version,
            "files_scanned": self.files_scanned,
            "files_skipped": self.files_skipped,
            "skipped_by_reason": self.skipped_by_reason,
            "findings_total": len(self.findings),
            "files_with_findings": self.files_with_findings,
            "findings_by_rule": self.findings_by_rule,
            "findings": [f.to_dict() for f in self.findings],
            "seconds": round(self.seconds, 3),
        }


def resolve_commit(repo: Path | str, ref: str | None = None) -> str:
    """The full sha of ``ref`` (default HEAD) in ``repo``, or a GitError a user can act on."""
    ref = ref or "HEAD"
    if ref.startswith("-"):  # never let a "commit" become a git option
        raise GitError(f"{ref!r} is not a commit in {repo}")
    try:
        return head_sha(repo, ref)
    except GitError:
        if ref == "HEAD":
            raise GitError(f"{repo} has no commit at HEAD yet (commit first)") from None
        raise GitError(f"{ref!r} is not a commit in {repo} (a sha, branch or tag is expected)") from None


def scan_secrets(repo: Path, commit: str | None = None, *, max_bytes: int = MAX_FILE_BYTES) -> SecretScanReport:
    """Every secret ingestion would mask in the tracked files of ``repo`` at ``commit`` (default HEAD).

    ``repo`` is a git work tree (or any directory git accepts with ``-C``). Reads the git object
    store, not the work tree: uncommitted changes are not scanned, as they are not indexed.
    """
    started = time.perf_counter()
    sha = resolve_commit(repo, commit)
    report = SecretScanReport(repo=str(repo), commit=sha, masker_version=MASKER_VERSION)
    entries, skipped = select_tracked(repo, sha, max_bytes=max_bytes)
    report.skipped.update(skipped)
    by_blob: dict[str, list[TreeEntry]] = defaultdict(list)
    for entry in entries:
        by_blob[entry.sha].append(entry)
    # Streamed one blob at a time: a large repository is never held in memory at once.
    for blob_sha, data in read_blobs(repo, sorted(by_blob)):
        text, _ = decode(data)
        reason = content_skip_reason(data, text)
        for entry in by_blob[blob_sha]:
            if reason:
                report.skipped[entry.path] = reason
                continue
            report.files_scanned += 1
            report.findings.extend(file_findings(entry.path, text))
    report.findings.sort(key=lambda f: (f.path, f.line))
    report.skipped = dict(sorted(report.skipped.items()))
    report.seconds = time.perf_counter() - started
    return report


def file_findings(path: str, text: str) -> list[SecretScanFinding]:
    """``mask_secrets(text, path=path)`` as findings with masked-line previews."""
    masked, found = mask_secrets(text, path=path)
    if not found:
        return []
    original_lines = text.split("\n")
    masked_lines = masked.split("\n")
    shift: dict[int, int] = defaultdict(int)  # per line: how far earlier redactions moved the columns
    results = []
    for finding in sorted(found, key=lambda f: (f.line, f.start_col)):
        marker = redaction(finding.kind)
        masked_line = masked_lines[finding.line - 1]
        start = finding.start_col + shift[finding.line]
        shift[finding.line] += len(marker) - (finding.end_col - finding.start_col)
        if masked_line[start:start + len(marker)] != marker:  # not where the columns say: find it
            start = masked_line.find(marker)
        secret = original_lines[finding.line - 1][finding.start_col:finding.end_col]
        results.append(SecretScanFinding(path, finding.line, finding.kind,
                                         safe_preview(masked_line, start, marker, secret)))
    return results


def safe_preview(masked_line: str, start: int, marker: str, secret: str) -> str:
    """The masked line around the redaction at ``start``, or the bare marker when that line would
    show the secret anyway (it repeats the value outside the masked span, e.g. a password equal
    to the user name in ``postgres://postgres:postgres@db``). Checked, never assumed."""
    preview = _printable(_clip(masked_line, start, start + len(marker))) if start >= 0 else marker
    if marker not in preview or _shows(preview, secret):
        preview = marker
    if REDACTED_PREFIX not in preview or _shows(preview, secret):
        raise AssertionError("a secret scan preview must show the redaction, never the secret")
    return preview


def _shows(preview: str, secret: str) -> bool:
    """Whether ``secret`` occurs in ``preview`` outside its redaction markers (a value short enough to
    be part of ``«redacted:password»`` itself does not count: the marker reveals nothing)."""
    if not secret:
        return False
    outside = _MARKER.sub("\0", preview)
    return secret in outside or _printable(secret) in outside


def _clip(line: str, start: int, end: int, width: int = PREVIEW_CHARS) -> str:
    lead = len(line) - len(line.lstrip())
    text = line.strip()
    start, end = max(start - lead, 0), max(end - lead, 0)
    if len(text) <= width:
        return text
    lo = max(0, start - max(width - (end - start), 0) // 2)
    hi = min(len(text), max(lo + width, end))
    lo = max(0, min(lo, hi - width))
    return (ELLIPSIS if lo > 0 else "") + text[lo:hi] + (ELLIPSIS if hi < len(text) else "")


def _printable(text: str) -> str:
    """No terminal control sequences, bidi overrides or line breaks in a one-line preview."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else (" " if c == "\t" else "\ufffd") for c in text)


__all__ = ["SecretScanFinding", "SecretScanReport", "file_findings", "resolve_commit", "safe_preview",
           "scan_secrets"]
