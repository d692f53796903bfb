"""Evidence of an agent run: every file of a stored run hashed into a manifest signed with the snapshot
key scheme, and every kind of tampering caught and named — by ``RunStore.verify`` and ``feriactl agent
verify``.

Real: a git repository built here, one real bubblewrap run (pytest plus a step that writes a nested
artifact) stored by ``RunStore`` on a temporary CODEX_HOME, ``feriactl`` as a subprocess. Each tamper
case edits its own copy of the stored run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codex_core.home import CodexHome
from codex_core.sandbox import RunReport, RunStore, load_policy, new_run_id, run_recipe
from codex_core.sandbox.evidence import MANIFEST, SIGNATURE
from codex_core.sandbox.recipe import recipe_from_mapping
from codex_core.snapshot import canonical_json, key_fingerprint
from tests.conftest import commit_all, git

HAS_BWRAP = any((Path(d) / "bwrap").exists() for d in os.environ.get("PATH", "").split(os.pathsep) if d)
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap is required: apt-get install bubblewrap")
FERIACTL = str(Path(sys.executable).parent / "feriactl")

KEY = b"agent-evidence-key-0123456789abcdef"
OTHER_KEY = b"someone-elses-key-0123456789abcdef"
SUMMARY = ("import pathlib, sys; pathlib.Path('reports').mkdir(); "
           "pathlib.Path('reports/summary.txt').write_text('1 passed\\n'); print('summary written', file=sys.stderr)")
RECIPE = {
    "name": "evidence-probe",
    "policies": "unit_tests",
    "steps": [{"run": "pytest -q -p no:cacheprovider --junitxml=junit.xml"},
              {"run": f"{shlex.quote(sys.executable)} -c {shlex.quote(SUMMARY)}"}],
    "artifacts": [{"path": "junit.xml"}, {"path": "reports/summary.txt"}],
}
EVERY_FILE = {
    "report.json", "report.md", "logs/step-1.stdout", "logs/step-1.stderr", "logs/step-2.stdout",
    "logs/step-2.stderr", "artifacts/junit.xml", "artifacts/reports/summary.txt",
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, RunReport]:
    """(CODEX_HOME, run id, report) of one real sandbox run stored and signed with KEY."""
    if not HAS_BWRAP:
        pytest.skip("bubblewrap is required: apt-get install bubblewrap")
    root = tmp_path_factory.mktemp("evidence")
    repo = root / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "test_calc.py").write_text("from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    commit_all(repo, "calc with a test")
    recipe = recipe_from_mapping(RECIPE)
    report = run_recipe(repo, "HEAD", recipe, load_policy(recipe.policy), artifacts_dir=root / "artifacts")
    assert report.status == "ok", report.to_markdown()
    run_id = new_run_id()
    RunStore(CodexHome(root / "home"), keys=[KEY]).save(report, run_id=run_id, repo="project",
                                                        artifacts_from=root / "artifacts")
    return root / "home", run_id, report


def copy_of(stored: tuple[Path, str, RunReport], tmp_path: Path) -> tuple[Path, Path, str]:
    """A CODEX_HOME of its own holding a copy of the stored run: (home, run directory, run id)."""
    home, run_id, _ = stored
    run_dir = RunStore(CodexHome(tmp_path / "home")).run_dir(run_id)
    shutil.copytree(RunStore(CodexHome(home)).run_dir(run_id), run_dir)
    return tmp_path / "home", run_dir, run_id


def feriactl(home: Path, *args: str, key: bytes = KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODEX_HOME": str(home), "CODEX_SNAPSHOT_KEY": key.decode()}
    env.pop("CODEX_SNAPSHOT_PREVIOUS_KEYS", None)
    return subprocess.run([FERIACTL, *args], capture_output=True, text=True, timeout=120, env=env)


# --- what a stored run holds ----------------------------------------------------------------------


@needs_bwrap
def test_a_stored_run_hashes_every_file_into_a_signed_manifest(stored) -> None:
    home, run_id, _ = stored
    store = RunStore(CodexHome(home), keys=[KEY])
    run_dir, record = store.run_dir(run_id), store.load(run_id)
    manifest = json.loads((run_dir / MANIFEST).read_bytes())
    assert set(manifest["files"]) == EVERY_FILE
    for rel, entry in manifest["files"].items():
        data = (run_dir / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel
    assert {k: manifest[k] for k in ("run_id", "repo", "recipe", "commit", "status")} == {
        "run_id": run_id, "repo": "project", "recipe": "evidence-probe", "commit": record["commit"], "status": "ok"}
    assert manifest["created_at"] >= record["finished_at"]
    # The stored artifact is the one the sandbox collected, and each step's output is a log file.
    junit = next(a for a in record["artifacts"] if a["path"] == "junit.xml")
    assert manifest["files"]["artifacts/junit.xml"]["sha256"] == junit["sha256"]
    assert record["steps"][0]["logs"] == {"stdout": "logs/step-1.stdout", "stderr": "logs/step-1.stderr"}
    stdout = (run_dir / "logs/step-1.stdout").read_text()
    assert stdout == record["steps"][0]["stdout"] and "1 passed" in stdout
    assert (run_dir / "logs/step-2.stderr").read_text() == "summary written\n"
    signature = json.loads((run_dir / SIGNATURE).read_bytes())
    assert signature["algorithm"] == "HMAC-SHA256" and signature["key_id"] == key_fingerprint(KEY)
    assert record["evidence"] == {"signed": True, "key_id": key_fingerprint(KEY)}

    check = store.verify(run_id)
    assert check.ok and check.signature == "valid" and check.key_id == key_fingerprint(KEY), check.problems
    assert check.files_checked == len(EVERY_FILE) and check.offending == ()


# --- tampering ------------------------------------------------------------------------------------


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only the hash can tell
    path.write_bytes(bytes(data))


def _forge_manifest(run_dir: Path) -> None:
    """Rewrite report.md to say the run failed, and update its size and sha256 in the manifest."""
    report = run_dir / "report.md"
    report.write_text(report.read_text().replace("**ok**", "**failed**"))
    manifest = json.loads((run_dir / MANIFEST).read_bytes())
    manifest["files"]["report.md"] = {"size": report.stat().st_size,
                                      "sha256": hashlib.sha256(report.read_bytes()).hexdigest()}
    (run_dir / MANIFEST).write_bytes(canonical_json(manifest))


def _swap_for_a_symlink(path: Path) -> None:
    twin = path.with_name(path.name + ".twin")  # same bytes, elsewhere
    shutil.move(path, twin)
    path.symlink_to(twin.name)


TAMPERING = {
    "artifact bytes": (lambda d: _flip_a_byte(d / "artifacts/junit.xml"), "modified", "artifacts/junit.xml"),
    "a log file": (lambda d: (d / "logs/step-1.stdout").write_text("all green, trust me\n"), "modified",
                   "logs/step-1.stdout"),
    "report.md": (lambda d: (d / "report.md").write_text((d / "report.md").read_text() + "\nsigned off\n"),
                  "modified", "report.md"),
    "an extra file": (lambda d: (d / "artifacts/backdoor.txt").write_text("x"), "extra", "artifacts/backdoor.txt"),
    "a deleted file": (lambda d: (d / "logs/step-2.stderr").unlink(), "missing", "logs/step-2.stderr"),
    "a symlink": (lambda d: _swap_for_a_symlink(d / "artifacts/reports/summary.txt"), "modified",
                  "artifacts/reports/summary.txt"),
}


@needs_bwrap
@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_with_any_file_is_caught_and_named(stored, tmp_path: Path, case: str) -> None:
    home, run_dir, run_id = copy_of(stored, tmp_path)
    tamper, kind, rel = TAMPERING[case]
    tamper(run_dir)
    check = RunStore(CodexHome(home), keys=[KEY]).verify(run_id)
    assert not check.ok
    assert check.signature == "valid"  # the manifest is intact: the file's own hash gives it away
    assert getattr(check, kind) == (rel,) and rel in check.offending
    extra = {"artifacts/reports/summary.txt.twin"} if case == "a symlink" else set()
    assert set(check.offending) == {rel} | extra
    assert any(p.startswith(f"{rel}: {kind}") for p in check.problems), check.problems


@needs_bwrap
def test_a_forged_manifest_fails_its_signature(stored, tmp_path: Path) -> None:
    home, run_dir, run_id = copy_of(stored, tmp_path)
    _forge_manifest(run_dir)
    check = RunStore(CodexHome(home), keys=[KEY]).verify(run_id)
    assert not check.ok and check.signature == "invalid hmac"
    assert check.offending == (MANIFEST,) and check.modified == ()  # the forgery is self-consistent...
    assert "HMAC mismatch" in check.problems[0]  # ...but not signed

    # An edit that changes nothing but the bytes (reformatting) is an edit too.
    home, run_dir, run_id = copy_of(stored, tmp_path / "reformatted")
    manifest = json.loads((run_dir / MANIFEST).read_bytes())
    (run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    check = RunStore(CodexHome(home), keys=[KEY]).verify(run_id)
    assert not check.ok and check.signature == "valid" and check.modified == (MANIFEST,)


@needs_bwrap
def test_signed_evidence_moved_to_another_run_id_is_not_that_runs(stored, tmp_path: Path) -> None:
    home, run_dir, run_id = copy_of(stored, tmp_path)
    other = new_run_id()
    run_dir.rename(run_dir.with_name(other))
    check = RunStore(CodexHome(home), keys=[KEY]).verify(other)
    assert not check.ok and check.signature == "valid" and check.offending == (MANIFEST,)
    assert f"manifest of run '{run_id}', not of {other}" in check.problems[0]


# --- keys -----------------------------------------------------------------------------------------


@needs_bwrap
def test_a_run_signed_with_one_key_is_refused_under_another(stored) -> None:
    home, run_id, _ = stored
    check = RunStore(CodexHome(home), keys=[OTHER_KEY]).verify(run_id)
    assert not check.ok and check.signature == "unknown key" and check.offending == (SIGNATURE,)
    assert key_fingerprint(KEY) in check.problems[0] and key_fingerprint(OTHER_KEY) in check.problems[0]
    assert check.modified == check.missing == check.extra == ()  # the files themselves are intact

    assert RunStore(CodexHome(home), keys=[]).verify(run_id).signature == "no key"
    rotated = RunStore(CodexHome(home), keys=[OTHER_KEY, KEY]).verify(run_id)  # the retired key still verifies
    assert rotated.ok and rotated.key_id == key_fingerprint(KEY)


@needs_bwrap
def test_without_a_key_the_run_is_stored_unsigned_and_never_verifies(stored, tmp_path: Path) -> None:
    _, _, report = stored
    store = RunStore(CodexHome(tmp_path / "home"), keys=[])
    unsigned_id = new_run_id()
    saved = store.save(report, run_id=unsigned_id, repo="project")
    assert saved["evidence"] == {"signed": False, "key_id": None}
    assert json.loads((store.run_dir(unsigned_id) / SIGNATURE).read_bytes()) == {"algorithm": "none"}
    check = store.verify(unsigned_id)
    assert not check.ok and check.signature == "unsigned" and check.offending == (SIGNATURE,)
    assert "CODEX_SNAPSHOT_KEY" in check.problems[0]
    assert RunStore(CodexHome(tmp_path / "home"), keys=[KEY]).verify(unsigned_id).signature == "unsigned"


# --- the CLI --------------------------------------------------------------------------------------


@needs_bwrap
def test_feriactl_agent_verify_passes_then_fails_after_tampering(stored, tmp_path: Path) -> None:
    home, run_dir, run_id = copy_of(stored, tmp_path)
    shown = feriactl(home, "agent", "show", run_id)
    assert shown.returncode == 0 and f"evidence: signed, key {key_fingerprint(KEY)}" in shown.stdout

    out = feriactl(home, "agent", "verify", run_id)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(f"OK  {run_id}: signature valid (key {key_fingerprint(KEY)}); 8 files match")

    out = feriactl(home, "agent", "verify", run_id, key=OTHER_KEY)
    assert out.returncode == 1 and "signature.json: signed with key" in out.stdout

    _flip_a_byte(run_dir / "artifacts/junit.xml")
    (run_dir / "logs/step-1.stderr").unlink()
    out = feriactl(home, "agent", "verify", run_id)
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == f"FAILED  {run_id}: artifacts/junit.xml, logs/step-1.stderr"
    assert "  artifacts/junit.xml: modified" in out.stdout and "  logs/step-1.stderr: missing" in out.stdout
    data = json.loads(feriactl(home, "agent", "verify", run_id, "--json").stdout)
    assert data["ok"] is False and data["modified"] == ["artifacts/junit.xml"]
    assert data["missing"] == ["logs/step-1.stderr"] and data["signature"] == "valid"


def test_feriactl_agent_verify_of_an_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    for run_id in ("0" * 32, "../../etc"):
        out = feriactl(tmp_path, "agent", "verify", run_id)
        assert out.returncode == 2 and "no agent run" in out.stderr and "Traceback" not in out.stderr
