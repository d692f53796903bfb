"""Thin, explicit wrappers over the git command line (no GitPython: fewer surprises, faster)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from codex_core.fsio import write_json_atomic
from codex_core.home import validate_repo_name


class GitError(RuntimeError):
    pass


def git_env() -> dict[str, str]:
    """The environment git runs with: never prompt for credentials, stable (C) messages.

    Read at call time, not import time, so a changed environment (tests, CLI) is honoured.
    """
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
_URL_RE = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:")


def run_git(repo: Path | str, *args: str, input: bytes | None = None, timeout: float = 600) -> bytes:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=input,
        capture_output=True,
        env=git_env(),
        timeout=timeout,
    )
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise GitError(f"git {' '.join(args[:3])} failed in {repo}: {err}")
    return proc.stdout


def is_url(source: str) -> bool:
    return bool(_URL_RE.match(source))


def head_sha(repo: Path | str, ref: str = "HEAD") -> str:
    return run_git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()


def remote_head_sha(url: str) -> str:
    """HEAD of a remote without cloning (for sensors: refs only)."""
    out = subprocess.run(
        ["git", "ls-remote", url, "HEAD"], capture_output=True, env=git_env(), timeout=60
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise GitError(f"git ls-remote {url} failed: {out.stderr.decode('utf-8', 'replace').strip()}")
    return out.stdout.split()[0].decode()


def local_worktree(source: str | Path) -> Path:
    """The top of the git work tree at or above a local path (clear errors when there is none)."""
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise GitError(f"repository path {path} does not exist")
    try:
        top = run_git(path, "rev-parse", "--show-toplevel").decode().strip()
    except GitError as exc:
        raise GitError(f"{path} is not a git repository (run `git init` and commit first)") from exc
    return Path(top)


def open_or_clone(source: str, checkout: Path) -> Path:
    """A local git work tree for ``source``: the path itself, or a clone kept up to date."""
    if not is_url(source):
        return local_worktree(source)
    if (checkout / ".git").exists():
        run_git(checkout, "fetch", "--quiet", "--depth", "1", "origin", "HEAD")
        run_git(checkout, "reset", "--quiet", "--hard", "FETCH_HEAD")
        return checkout
    checkout.parent.mkdir(parents=True, exist_ok=True)
    # Clone into a temporary sibling and rename, so a killed clone never looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=checkout.parent))
    run_git(tmp.parent, "clone", "--quiet", "--depth", "1", source, str(tmp / "repo"))
    os.replace(tmp / "repo", checkout)
    tmp.rmdir()
    return checkout


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    type: str
    sha: str
    size: int | None
    path: str

    @property
    def is_symlink(self) -> bool:
        return self.mode == "120000"


def ls_tree(repo: Path | str, commit: str) -> list[TreeEntry]:
    """Every entry tracked at ``commit`` (recursive), with blob sizes."""
    out = run_git(repo, "ls-tree", "-r", "-z", "--long", "--full-tree", commit)
    entries = []
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, typ, sha, size = meta.decode().split(maxsplit=3)
        entries.append(
            TreeEntry(
                mode=mode,
                type=typ,
                sha=sha,
                size=None if size.strip() == "-" else int(size),
                path=raw_path.decode("utf-8", "surrogateescape"),
            )
        )
    return entries


def read_blobs(repo: Path | str, shas: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Contents of blobs by sha, streamed through one ``git cat-file --batch`` process."""
    shas = list(shas)
    if not shas:
        return
    proc = subprocess.Popen(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=git_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for sha in shas:
            proc.stdin.write(sha.encode() + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) < 3 or header[1] == b"missing":
                raise GitError(f"blob {sha} is missing from {repo}")
            size = int(header[2])
            data = proc.stdout.read(size)
            proc.stdout.read(1)  # trailing newline
            yield sha, data
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def show_file(repo: Path | str, commit: str, path: str) -> bytes:
    return run_git(repo, "show", f"{commit}:{path}")


def commit_times(repo: Path | str, shas: Iterable[str]) -> dict[str, int]:
    """Committer time (unix seconds, ``%ct``) of each commit ``repo`` holds; the ones it does not
    hold (a rewritten history, a shallow clone) are left out instead of failing the whole lookup."""
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    # One line per input: "<full sha> commit <size>", or "<input> missing".
    checked = run_git(repo, "cat-file", "--batch-check", input="".join(f"{s}\n" for s in wanted).encode())
    full_of = {s: line.split()[0] for s, line in zip(wanted, checked.decode().splitlines(), strict=True)
               if line.split()[1:2] == ["commit"]}
    if not full_of:
        return {}
    out = run_git(repo, "log", "--no-walk=unsorted", "--stdin", "--format=%H %ct",
                  input="".join(f"{full}\n" for full in full_of.values()).encode())
    times = {full: int(ct) for full, ct in (line.split() for line in out.decode().splitlines() if line.strip())}
    return {s: times[full] for s, full in full_of.items() if full in times}


@dataclass(frozen=True)
class RepoEntry:
    name: str
    source: str
    added_at: str


class RepoRegistry:
    """Repositories known to Codex (``repos.json`` under CODEX_HOME): name -> source path or URL."""

    def __init__(self, path: Path):
        self.path = path

    def all(self) -> dict[str, RepoEntry]:
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        return {name: RepoEntry(name=name, **entry) for name, entry in raw.items()}

    def get(self, name: str) -> RepoEntry:
        entries = self.all()
        if name not in entries:
            raise KeyError(f"repository {name!r} is not registered (feriactl ingest PATH --name {name})")
        return entries[name]

    def add(self, name: str, source: str) -> RepoEntry:
        validate_repo_name(name)
        if not is_url(source):
            source = str(Path(source).expanduser().resolve())
        entries = {n: {"source": e.source, "added_at": e.added_at} for n, e in self.all().items()}
        prior = entries.get(name)
        added_at = prior["added_at"] if prior else datetime.now(UTC).isoformat(timespec="seconds")
        entries[name] = {"source": source, "added_at": added_at}
        write_json_atomic(self.path, entries, indent=2, sort_keys=True)
        return RepoEntry(name=name, source=source, added_at=added_at)


def default_repo_name(source: str) -> str:
    base = source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if base.endswith(".git"):
        base = base[:-4]
    if not is_url(source):
        base = Path(source).expanduser().resolve().name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", base).strip(".-") or "repo"
    return validate_repo_name(cleaned[:64])
