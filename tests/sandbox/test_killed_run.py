"""A run killed half-way (SIGKILL: no cleanup of its own) leaves nothing listed, nothing running,
and no copy behind once the next run has started; the next run works."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from codex_core.home import CodexHome
from codex_core.sandbox import RunStore, run_recipe
from tests.conftest import commit_all, git
from tests.sandbox.support import needs_bwrap, policy, processes_with, python_step, recipe

RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from codex_core.home import CodexHome
    from codex_core.sandbox import RunStore, new_run_id, run_recipe
    from tests.sandbox.support import policy, python_step, recipe

    repo, scratch, home, reversed_marker = sys.argv[1:5]
    marker = reversed_marker[::-1]  # so that only the sandboxed step's command line holds the marker
    step = python_step(f"import time\\nmarker = {marker!r}\\nprint('started', flush=True)\\ntime.sleep(120)")
    report = run_recipe(repo, "HEAD", recipe(step), policy(), scratch=Path(scratch), codex_home=home)
    RunStore(CodexHome(home)).save(report, run_id=new_run_id(), repo="calc")
""")


@needs_bwrap
def test_a_killed_run_leaves_nothing_half_written_and_the_next_run_works(tmp_path: Path) -> None:
    repo = tmp_path / "calc"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    commit_all(repo, "calc")
    scratch, home = tmp_path / "scratch", tmp_path / "home"
    scratch.mkdir()
    marker = f"killed{random.getrandbits(32):08x}"

    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(repo), str(scratch), str(home), marker[::-1]],
                            cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    deadline = time.monotonic() + 60
    while not processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker), "the sandboxed step never started"
    os.kill(proc.pid, signal.SIGKILL)  # the runner only: no chance to clean up
    proc.wait()

    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []  # the step died with its runner (--die-with-parent)
    store = RunStore(CodexHome(home))
    assert store.list() == []  # no run, half-written or otherwise
    left = [p.name for p in scratch.iterdir()]
    assert len(left) == 1 and left[0].startswith(f"codex-sandbox-{proc.pid}-")  # the copy it could not remove

    report = run_recipe(repo, "HEAD", recipe(python_step("print('fine')")), policy(), scratch=scratch,
                        codex_home=home)
    assert report.status == "ok" and report.steps[0].stdout == "fine\n"
    assert list(scratch.iterdir()) == []  # the next run swept the dead run's copy, then removed its own
