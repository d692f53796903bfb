"""Escape attempts a hostile repository could make from inside a step — each must fail, and show.

Every probe is a real step in a real bubblewrap sandbox on a git repository built here. A probe
prints what the kernel answered; the test asserts the refusal (and, where it matters, that nothing
outside changed). No probe sends a packet off this machine: network escapes are in
test_sandbox.py (the host's loopback, and a TEST-NET address that has no route).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import pytest

from codex_core.sandbox import run_recipe
from tests.conftest import commit_all, git
from tests.sandbox.support import needs_bwrap, policy, processes_with, python_step, recipe

pytestmark = needs_bwrap
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def outside(tmp_path: Path):
    """Two directories outside /tmp (the sandbox's /tmp is its own tmpfs anyway): a CODEX_HOME with
    a signing key in it, and a repository whose tracked symlinks point at that CODEX_HOME and at the
    read-only host. Removed afterwards."""
    base = REPO_ROOT / f".escape-probe-{random.getrandbits(40):010x}"
    home = base / "codex-home"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "snapshot.key").write_text("TOP-SECRET-KEY-MATERIAL\n")
    repo = base / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "to_home").symlink_to(home)
    (repo / "to_host").symlink_to(Path(sys.executable).parent)
    sha = commit_all(repo, "a repository with symlinks out of itself")
    try:
        yield repo, sha, home
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(repo: Path, sha: str, code: str, home: Path | None = None, **overrides):
    report = run_recipe(repo, sha, recipe(python_step(code)), policy(**overrides), codex_home=home)
    return report, report.steps[0]


def test_codex_home_the_source_and_the_callers_home_are_not_even_visible(outside) -> None:
    repo, sha, home = outside
    user_home = Path.home()
    code = (
        "import json, os\n"
        "out = {}\n"
        f"for name, path in (('home', {str(home / 'keys' / 'snapshot.key')!r}), "
        f"('source', {str(repo / 'calc.py')!r}), ('user', {str(user_home)!r})):\n"
        "    try:\n"
        "        out[name + '_read'] = open(path).read()[:40] if os.path.isfile(path) else sorted(os.listdir(path))\n"
        "    except OSError as exc:\n"
        "        out[name + '_read'] = type(exc).__name__\n"
        "    try:\n"
        "        target = path if os.path.isfile(path) else os.path.join(path, 'planted')\n"
        "        open(target, 'a').write('x')\n"
        "        out[name + '_write'] = 'written'\n"
        "    except OSError as exc:\n"
        "        out[name + '_write'] = type(exc).__name__ + ': ' + exc.strerror\n"
        "print(json.dumps(out))\n")
    report, step = run(repo, sha, code, home)
    assert report.status == "ok", report.to_markdown()
    seen = json.loads(step.stdout)
    assert seen["home_read"] == "FileNotFoundError" and seen["source_read"] == "FileNotFoundError"
    assert "TOP-SECRET" not in step.stdout + step.stderr
    # An empty tmpfs over the caller's home, where only tool environments are bound back (the
    # interpreter of a pyenv virtualenv, cargo's toolchains), never a dotfile of the user's.
    bound_back = report.sandbox["tools_bound_back"].split(", ")
    for name in seen["user_read"]:
        entry = str(user_home / name)
        assert any(root == entry or root.startswith(f"{entry}/") for root in bound_back), name
    for name in ("home", "source"):
        assert seen[f"{name}_write"].startswith(("FileNotFoundError", "PermissionError", "OSError")), seen
    assert (home / "keys" / "snapshot.key").read_text() == "TOP-SECRET-KEY-MATERIAL\n"
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert not (user_home / "planted").exists()
    hidden = report.sandbox["hidden"]
    for path in (home, repo):  # hidden by a tmpfs of their own, or with the rest of /tmp (a clone under /tmp)
        assert str(path) in hidden or Path("/tmp") in path.parents, (path, hidden)


def test_symlinks_out_of_the_workdir_are_left_out_and_made_ones_lead_nowhere_writable(outside) -> None:
    repo, sha, home = outside
    host = Path(sys.executable).parent
    code = (
        "import json, os\n"
        "out = {'tracked_links': [n for n in ('to_home', 'to_host') if os.path.lexists(n)]}\n"
        f"os.symlink({str(home)!r}, 'made_home'); os.symlink({str(host)!r}, 'made_host')\n"
        "for name, target in (('home', 'made_home/keys/snapshot.key'), ('host', 'made_host/planted-by-sandbox')):\n"
        "    try:\n"
        "        open(target, 'a').write('x'); out[name] = 'written'\n"
        "    except OSError as exc:\n"
        "        out[name] = type(exc).__name__ + ': ' + exc.strerror\n"
        "print(json.dumps(out))\n")
    report, step = run(repo, sha, code, home)
    assert report.status == "ok", report.to_markdown()
    seen = json.loads(step.stdout)
    assert seen["tracked_links"] == []  # links out of the repository never reach the copy...
    left_out = report.sandbox["left_out"]
    assert "to_home: left out, a link out of the repository" in left_out and "to_host" in left_out  # ...and say so
    assert seen["home"].startswith("FileNotFoundError")  # CODEX_HOME is hidden: a link made inside dangles
    assert seen["host"] == "OSError: Read-only file system"
    assert not (host / "planted-by-sandbox").exists()


def test_the_read_only_host_cannot_be_remounted_and_no_capability_is_left(outside) -> None:
    """Started by root, bwrap would keep every capability of the sandbox's user namespace — enough to
    remount the host read-write. The launcher drops them and forbids new user namespaces."""
    repo, sha, home = outside
    target = Path(sys.executable).parent
    code = (
        "import ctypes, ctypes.util, json, os\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
        "out = {'cap_eff': [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]}\n"
        "MS_REMOUNT, MS_BIND = 32, 4096\n"
        f"rc = libc.mount(None, {str(target).encode()!r}, None, MS_REMOUNT | MS_BIND, None)\n"
        "out['remount'] = 'remounted' if rc == 0 else os.strerror(ctypes.get_errno())\n"
        "rc = libc.unshare(0x10000000)  # CLONE_NEWUSER: a way back to capabilities\n"
        "out['new_userns'] = 'created' if rc == 0 else os.strerror(ctypes.get_errno())\n"
        f"try:\n    open({str(target / 'planted-after-remount')!r}, 'w'); out['write'] = 'written'\n"
        "except OSError as exc:\n    out['write'] = exc.strerror\n"
        "print(json.dumps(out))\n")
    report, step = run(repo, sha, code, home)
    assert report.status == "ok", report.to_markdown()
    seen = json.loads(step.stdout)
    assert seen["cap_eff"] == "0000000000000000"
    assert seen["remount"] != "remounted" and seen["new_userns"] != "created", seen
    assert seen["write"] == "Read-only file system"
    assert not (target / "planted-after-remount").exists()


def test_a_fork_bomb_hits_the_process_cap_and_dies_with_the_step(outside) -> None:
    repo, sha, home = outside
    marker = f"bomb{random.getrandbits(32):08x}"  # in every copy's command line (the -c code)
    code = (
        f"import os, time\nmarker = {marker!r}\nfirst = os.getpid()\nrefused = 0\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        refused += 1\n"
        "        if refused == 1 and os.getpid() == first:\n"
        "            print('fork refused', flush=True)\n"
        "        time.sleep(0.01)\n")
    started = time.monotonic()
    report, step = run(repo, sha, code, home, timeout_sec=4.0, max_processes=64)
    assert time.monotonic() - started < 30
    assert report.status == "timeout" and step.exit_code is None
    assert "fork refused" in step.stdout  # the cap bound, long before the host's own limits
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []  # every copy died with the step
    assert os.system("true") == 0  # and the host can still start processes


def test_filling_the_hosts_disk_through_the_workdir_is_stopped(outside) -> None:
    """Files each under the per-file cap, many of them: the copy lives on the host's disk, so the
    runner measures it while the step runs and kills the step past the cap."""
    repo, sha, home = outside
    code = ("import os, time\nos.makedirs('fill')\n"
            "for i in range(10_000):\n"
            "    open(f'fill/{i}.bin', 'wb').write(os.urandom(256 * 1024))\n"
            "    time.sleep(0.001)\n"
            "print('filled it all')\n")
    started = time.monotonic()
    report, step = run(repo, sha, code, home, max_workdir_bytes=16 * 1024**2)
    assert time.monotonic() - started < 20
    assert report.status == "failed" and step.reason.startswith("killed: the workdir grew past max_workdir_bytes")
    assert "filled it all" not in step.stdout

    many = ("import os\nos.makedirs('many')\n"
            "for i in range(100_000):\n"
            "    open(f'many/{i}', 'w').close()\n")
    report, step = run(repo, sha, many, home, max_files=2_000)
    assert report.status == "failed" and "more than max_files (2000 files)" in step.reason
