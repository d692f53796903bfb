"""The copy-on-write workdir: a throwaway copy of a repository at a pinned commit, from git objects.

Built with ``git archive`` (tracked files only, no ``.git``, no untracked or ignored files of the
checkout), extracted with tarfile's ``data`` filter, so a member cannot land outside the directory
nor carry device files or setuid bits. The source checkout is only read.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codex_core.git import GitError, git_env, run_git


class WorkdirError(RuntimeError):
    """The commit could not be exported into a workdir."""


def resolve_commit(repo: Path, commit: str) -> str:
    try:
        return run_git(repo, "rev-parse", "--verify", f"{commit}^{{commit}}").decode().strip()
    except GitError as exc:
        raise WorkdirError(f"{commit!r} is not a commit of {repo}: {exc}") from None


def export_commit(repo: Path, sha: str, target: Path) -> None:
    """Stream ``git archive`` of ``sha`` into ``target`` (never the whole archive in memory)."""
    proc = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", sha],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=git_env())
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(target, filter="data")
    except tarfile.TarError as exc:
        proc.kill()
        raise WorkdirError(f"cannot export {sha} of {repo}: {exc}; git said: "
                           f"{proc.stderr.read().decode('utf-8', 'replace').strip()}") from None
    finally:
        proc.stdout.close()
    error = proc.stderr.read().decode("utf-8", "replace").strip()
    if proc.wait() != 0:
        raise WorkdirError(f"git archive {sha} failed in {repo}: {error}")


@contextmanager
def throwaway_workdir(repo: Path, sha: str, scratch: Path | None = None) -> Iterator[Path]:
    """A fresh directory holding ``repo`` at ``sha``; removed when the block ends, whatever happens."""
    base = Path(tempfile.mkdtemp(prefix="codex-sandbox-", dir=scratch))
    try:
        workdir = base / "work"
        workdir.mkdir()
        export_commit(repo, sha, workdir)
        yield workdir
    finally:
        shutil.rmtree(base, ignore_errors=True)
