"""The copy-on-write workdir: a throwaway copy of a repository at a pinned commit, from git objects.

Built with ``git archive`` (tracked files only, no ``.git``, no untracked or ignored files of the
checkout), extracted with tarfile's ``data`` filter, so a member cannot land outside the directory
nor carry device files or setuid bits; a tracked symlink that leaves the repository is left out of
the copy, with the reason in the report. The source checkout is only read. A copy lives in
``codex-sandbox-<pid>-*`` under the temporary directory; one whose process was killed before its
cleanup is removed by the next run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from codex_core.git import GitError, git_env, run_git

PREFIX = "codex-sandbox-"  # then the owning process id: codex-sandbox-<pid>-<random>


class WorkdirError(RuntimeError):
    """The commit could not be exported into a workdir."""


def resolve_commit(repo: Path, commit: str) -> str:
    try:
        return run_git(repo, "rev-parse", "--verify", f"{commit}^{{commit}}").decode().strip()
    except GitError as exc:
        raise WorkdirError(f"{commit!r} is not a commit of {repo}: {exc}") from None


def _member_filter(skipped: list[str]) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    """tarfile's ``data`` filter, except that a symlink leaving the repository (absolute, or ``..``
    past its root) is left out of the copy with a reason instead of failing the whole export."""

    def keep(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        try:
            return tarfile.data_filter(member, dest)
        except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError) as exc:
            skipped.append(f"{member.name}: left out, a link out of the repository ({exc})")
            return None

    return keep


def export_commit(repo: Path, sha: str, target: Path) -> list[str]:
    """Stream ``git archive`` of ``sha`` into ``target`` (never the whole archive in memory); return
    the members left out, each with its reason."""
    skipped: list[str] = []
    proc = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", sha],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=git_env())
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(target, filter=_member_filter(skipped))
        # tarfile stops at the end-of-archive marker, but git still writes the record's zero padding:
        # closing the pipe first kills git with SIGPIPE, a spurious "git archive failed" (1 run in 6).
        while proc.stdout.read(65536):
            pass
    except tarfile.TarError as exc:
        proc.kill()
        raise WorkdirError(f"cannot export {sha} of {repo}: {exc}; git said: "
                           f"{proc.stderr.read().decode('utf-8', 'replace').strip()}") from None
    finally:
        proc.stdout.close()
    error = proc.stderr.read().decode("utf-8", "replace").strip()
    if proc.wait() != 0:
        raise WorkdirError(f"git archive {sha} failed in {repo}: {error}")
    return skipped


@dataclass(frozen=True)
class Workdir:
    path: Path
    skipped: tuple[str, ...] = ()  # members of the commit left out of the copy, with the reason


def sweep_stale(base: Path) -> list[Path]:
    """Remove the copies that runs killed before their cleanup left behind (their process is gone)."""
    removed = []
    for entry in base.glob(f"{PREFIX}*-*"):
        pid = entry.name[len(PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not entry.is_dir() or Path(f"/proc/{pid}").exists():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


@contextmanager
def throwaway_workdir(repo: Path, sha: str, scratch: Path | None = None) -> Iterator[Workdir]:
    """A fresh directory holding ``repo`` at ``sha``; removed when the block ends, whatever happens
    (and by the next run's sweep when the process was killed before it could)."""
    parent = Path(scratch or tempfile.gettempdir())
    sweep_stale(parent)
    base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
    try:
        workdir = base / "work"
        workdir.mkdir()
        skipped = export_commit(repo, sha, workdir)
        yield Workdir(workdir, tuple(skipped))
    finally:
        shutil.rmtree(base, ignore_errors=True)
