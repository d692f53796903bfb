"""Which tracked files get indexed, and why the others do not.

Files are read from the git object store at the indexed commit (not the work tree), so what is
indexed is exactly what a citation is later verified against.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from codex_core.git import TreeEntry, ls_tree, read_blobs
from codex_core.languages import detect_language
from codex_core.secrets import MASKER_VERSION, mask_secrets

MAX_FILE_BYTES = 1024 * 1024
MAX_LINE_CHARS = 1000  # a line this long is minified/generated output, not something to cite
MAX_AVG_LINE_CHARS = 200

VENDORED_DIRS = frozenset(
    {"vendor", "vendors", "node_modules", "third_party", "third-party", "bower_components",
     "site-packages", ".venv", "venv", "external", "Pods"}
)
GENERATED_NAMES = frozenset(
    {"package-lock.json", "yarn.lock", "pnpm-lock.yaml", "poetry.lock", "Cargo.lock", "go.sum",
     "uv.lock", "Pipfile.lock", "composer.lock", "Gemfile.lock"}
)
GENERATED_SUFFIXES = (".min.js", ".min.css", ".map", "_pb2.py", "_pb2_grpc.py", ".pb.go", ".pb.cc",
                      ".pb.h", ".generated.ts", ".g.dart")
BINARY_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".pdf", ".zip", ".gz", ".tgz", ".bz2",
     ".xz", ".7z", ".tar", ".jar", ".war", ".class", ".so", ".dll", ".dylib", ".exe", ".bin", ".o",
     ".a", ".pyc", ".whl", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp3", ".mp4", ".mov", ".avi",
     ".wav", ".ogg", ".sqlite", ".db", ".npy", ".npz", ".parquet", ".pkl", ".pt", ".onnx", ".gguf",
     ".safetensors"}
)


class SkipReason:
    SYMLINK_OUTSIDE = "symlink_outside_repo"
    SYMLINK = "symlink"  # points inside the repo: the target is indexed under its own path
    SUBMODULE = "submodule"
    TOO_LARGE = "too_large"
    BINARY = "binary"
    VENDORED = "vendored"
    GENERATED = "generated"
    MINIFIED = "minified"
    EMPTY = "empty"
    UNDECODABLE_PATH = "undecodable_path"  # a file name that is not UTF-8 cannot be cited or stored


@dataclass(frozen=True)
class SourceFile:
    path: str
    language: str
    size: int
    blob_sha: str
    text: str  # as indexed: decoded, secrets masked (line structure unchanged)
    lines: int
    decoded_with_replacement: bool
    secrets_masked: int = 0
    # The masker version ``text`` was masked with, stored with the file: a catalog written before
    # this field existed was masked by version 1, and an upgrade must not take its text for current.
    masker_version: int = 1

    @property
    def content_key(self) -> str:
        """What a stage's output from this file depends on: its blob and the masker's rules."""
        return f"{self.blob_sha}:m{self.masker_version}"


@dataclass
class FileScan:
    commit: str
    files: list[SourceFile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    reused: int = 0  # files taken over unchanged from a previous scan

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(self.skipped.values()).items()))


def symlink_skip_reason(target: str, link_path: str) -> str:
    if target.startswith("/"):
        return SkipReason.SYMLINK_OUTSIDE
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
    if resolved == ".." or resolved.startswith("../"):
        return SkipReason.SYMLINK_OUTSIDE
    return SkipReason.SYMLINK


def path_skip_reason(entry: TreeEntry, max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Why a tree entry is not indexed, judged from its path, type and size alone (None: read it)."""
    try:
        entry.path.encode("utf-8")
    except UnicodeEncodeError:
        return SkipReason.UNDECODABLE_PATH
    p = PurePosixPath(entry.path)
    if entry.type == "commit":
        return SkipReason.SUBMODULE
    if any(part in VENDORED_DIRS for part in p.parts[:-1]):
        return SkipReason.VENDORED
    if p.name in GENERATED_NAMES or p.name.endswith(GENERATED_SUFFIXES):
        return SkipReason.GENERATED
    if p.suffix.lower() in BINARY_SUFFIXES:
        return SkipReason.BINARY
    if entry.size is not None and entry.size > max_bytes:
        return SkipReason.TOO_LARGE
    if entry.size == 0:
        return SkipReason.EMPTY
    return None


def content_skip_reason(data: bytes, text: str) -> str | None:
    """Why a file read from git is not indexed after all (binary, empty, generated, minified); None: index it."""
    if b"\0" in data[:8192]:
        return SkipReason.BINARY
    if not text.strip():
        return SkipReason.EMPTY
    head = text[:2048]
    if "Code generated" in head and "DO NOT EDIT" in head or "@generated" in head[:400]:
        return SkipReason.GENERATED
    lines = text.split("\n")
    if max(map(len, lines)) > MAX_LINE_CHARS and len(text) / len(lines) > MAX_AVG_LINE_CHARS:
        return SkipReason.MINIFIED
    if any(len(line) > 20 * MAX_LINE_CHARS for line in lines):
        return SkipReason.MINIFIED
    return None


def indexed_text(data: bytes, path: str) -> str:
    """A file exactly as the index sees it (decoded, secrets masked): citations are verified against this."""
    return mask_secrets(decode(data)[0], path=path)[0]


def decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 with replacement (never raises); the flag says whether anything was replaced."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def select_tracked(
    repo: Path | str, commit: str, *, max_bytes: int = MAX_FILE_BYTES
) -> tuple[list[TreeEntry], dict[str, str]]:
    """The first, path-level half of file selection at ``commit``.

    Returns the entries worth reading (in ``ls-tree`` order) and every other tracked path with its
    reason (``path_skip_reason``, and symlinks, whose targets are read to tell inside from outside).
    A file read afterwards may still be skipped by ``content_skip_reason``.
    """
    entries: list[TreeEntry] = []
    symlinks: list[TreeEntry] = []
    skipped: dict[str, str] = {}
    for entry in ls_tree(repo, commit):
        if entry.is_symlink:
            symlinks.append(entry)
            continue
        reason = path_skip_reason(entry, max_bytes)
        if reason:
            skipped[entry.path] = reason
        else:
            entries.append(entry)
    link_targets = dict(read_blobs(repo, sorted({e.sha for e in symlinks})))
    for entry in symlinks:
        target = link_targets[entry.sha].decode("utf-8", "replace")
        skipped[entry.path] = symlink_skip_reason(target, entry.path)
    return entries, skipped


def scan_repository(
    repo: Path, commit: str, *, max_bytes: int = MAX_FILE_BYTES, previous: Sequence[SourceFile] = ()
) -> FileScan:
    """Tracked files at ``commit``: those worth indexing, and every other one with its reason.

    ``previous`` (the files of an earlier scan) are reused for paths whose blob and masking rules
    are unchanged: only new or changed blobs are read, decoded and masked.
    """
    scan = FileScan(commit=commit)
    current_rules = f"m{MASKER_VERSION}"
    reusable = {(f.path, f.content_key): f for f in previous if f.content_key.endswith(current_rules)}
    entries, skipped = select_tracked(repo, commit, max_bytes=max_bytes)
    scan.skipped.update(skipped)
    reused = {e.path: reusable[(e.path, f"{e.sha}:{current_rules}")] for e in entries
              if (e.path, f"{e.sha}:{current_rules}") in reusable}
    blobs = dict(read_blobs(repo, sorted({e.sha for e in entries if e.path not in reused})))
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.path in reused:
            scan.files.append(reused[entry.path])
            scan.reused += 1
            continue
        data = blobs[entry.sha]
        text, replaced = decode(data)
        reason = content_skip_reason(data, text)
        if reason:
            scan.skipped[entry.path] = reason
            continue
        text, findings = mask_secrets(text, path=entry.path)
        scan.files.append(
            SourceFile(
                path=entry.path,
                language=detect_language(entry.path),
                size=len(data),
                blob_sha=entry.sha,
                text=text,
                lines=text.count("\n") + 1,
                decoded_with_replacement=replaced,
                secrets_masked=len(findings),
                masker_version=MASKER_VERSION,
            )
        )
    return scan
