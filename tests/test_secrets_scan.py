"""`feriactl secrets scan`: what ingestion would mask, listed without ever showing a value.

Real git repositories in a temp dir, the real CLI as a subprocess. The secrets are assembled from
pieces so that this file itself holds none (a scan of this project does not list it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codex_core.files import scan_repository
from codex_core.git import RepoRegistry, head_sha
from codex_core.secret_scan import PREVIEW_CHARS, file_findings, scan_secrets
from tests.conftest import commit_all, git

FERIACTL = str(Path(sys.executable).parent / "feriactl")
PASSWORD = "Tr0ub4dor" + "-x9Qz-" + "lamp7"
OLD_PASSWORD = "c0rrect" + "Horse" + "Battery9"
AWS_KEY_ID = "AKIA" + "Z7QW3E5R" + "7T9Y1U3I"
SECRETS = (PASSWORD, OLD_PASSWORD, AWS_KEY_ID)


def feriactl(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODEX_HOME": str(home),
           # a "not a repository" directory must not be found inside some repository above it
           "GIT_CEILING_DIRECTORIES": str(home.parent)}
    return subprocess.run([FERIACTL, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def secret_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """Two commits: the first holds only an older password, the second the current secrets."""
    repo = tmp_path / "leaky"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".env").write_text(f"DB_HOST=localhost\nDB_PASSWORD={OLD_PASSWORD}\n")
    (repo / "README.md").write_text("# Leaky\n\nA project with secrets in it.\n")
    old = commit_all(repo, "first")
    (repo / ".env").write_text(f"# local settings\nDB_HOST=localhost\nDB_PASSWORD={PASSWORD}\n")
    (repo / "app").mkdir()
    (repo / "app" / "settings.py").write_text(
        f'"""Settings."""\n\nREGION = "eu-west-1"\nAWS_ACCESS_KEY_ID = "{AWS_KEY_ID}"\n'
    )
    (repo / "app" / "util.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))  # binary by name
    (repo / "blob.dat").write_bytes(b"header\0" + bytes(range(256)))  # binary by content
    (repo / "empty.txt").write_text("")
    new = commit_all(repo, "second")
    return repo, old, new


def _assert_no_secret(proc: subprocess.CompletedProcess) -> None:
    for secret in SECRETS:
        assert secret not in proc.stdout and secret not in proc.stderr


def test_scan_lists_each_secret_by_file_line_and_rule_never_the_value(secret_repo, tmp_path: Path) -> None:
    repo, _, new = secret_repo
    home = tmp_path / "home"
    proc = feriactl(home, "secrets", "scan", str(repo))
    assert proc.returncode == 0, proc.stderr
    _assert_no_secret(proc)
    lines = proc.stdout.splitlines()
    env_line = next(line for line in lines if line.startswith(".env:3 "))
    aws_line = next(line for line in lines if line.startswith("app/settings.py:4 "))
    assert env_line.split()[1] == "password" and "DB_PASSWORD=«redacted:password»" in env_line
    assert aws_line.split()[1] == "aws_access_key"
    assert 'AWS_ACCESS_KEY_ID = "«redacted:aws_access_key»"' in aws_line
    assert len(lines) == 3  # two findings and the summary
    summary = lines[-1]
    assert summary.startswith("2 findings") and "in 2 files" in summary
    assert "4 files scanned, 3 skipped (binary=2, empty=1)" in summary and new[:12] in summary

    proc = feriactl(home, "secrets", "scan", str(repo), "--json")
    assert proc.returncode == 0, proc.stderr
    _assert_no_secret(proc)
    report = json.loads(proc.stdout)
    assert report["commit"] == new and report["repo"] == str(repo.resolve())
    assert [(f["path"], f["line"], f["rule"]) for f in report["findings"]] == [
        (".env", 3, "password"), ("app/settings.py", 4, "aws_access_key")]
    assert all("«redacted:" in f["preview"] for f in report["findings"])
    assert report["files_scanned"] == 4 and report["files_skipped"] == 3
    assert report["skipped_by_reason"] == {"binary": 2, "empty": 1}
    assert report["findings_by_rule"] == {"aws_access_key": 1, "password": 1}
    assert report["findings_total"] == 2 and report["files_with_findings"] == 2
    assert isinstance(report["masker_version"], int)


def test_scan_of_an_older_commit_and_of_a_registered_name(secret_repo, tmp_path: Path) -> None:
    repo, old, new = secret_repo
    home = tmp_path / "home"
    proc = feriactl(home, "secrets", "scan", str(repo), "--commit", old, "--json")
    assert proc.returncode == 0, proc.stderr
    _assert_no_secret(proc)
    report = json.loads(proc.stdout)
    assert report["commit"] == old
    assert [(f["path"], f["line"], f["rule"]) for f in report["findings"]] == [(".env", 2, "password")]
    assert report["files_scanned"] == 2 and report["files_skipped"] == 0

    RepoRegistry(home / "repos.json").add("leaky", str(repo))
    proc = feriactl(home, "secrets", "scan", "leaky")
    assert proc.returncode == 0, proc.stderr
    _assert_no_secret(proc)
    assert proc.stdout.splitlines()[0].startswith(".env:3 ") and "registered as leaky" in proc.stdout
    by_name = json.loads(feriactl(home, "secrets", "scan", "leaky", "--json", "--commit", "main").stdout)
    assert by_name["registered_as"] == "leaky" and by_name["commit"] == new and by_name["findings_total"] == 2


def test_a_clean_repository_is_a_report_too(tmp_path: Path) -> None:
    repo = tmp_path / "clean"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "main.py").write_text("print('hello')\n")
    commit_all(repo, "clean")
    proc = feriactl(tmp_path / "home", "secrets", "scan", str(repo))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("0 findings in 0 files; 1 file scanned, 0 skipped")


def test_user_errors_exit_2_with_a_readable_message(secret_repo, tmp_path: Path) -> None:
    repo, _, _ = secret_repo
    home = tmp_path / "home"
    plain = tmp_path / "plain"
    plain.mkdir()
    cases = {
        (str(plain),): "is not a git repository",
        (str(tmp_path / "missing"),): "does not exist",
        ("no-such-repo",): "neither a path nor a repository registered",
        ("https://github.com/example/leaky.git",): "clone URL",
        ("git@github.com:example/leaky.git",): "clone URL",
        (str(repo), "--commit", "deadbeef0"): "'deadbeef0' is not a commit",
        (str(repo), "--commit=--output=x"): "is not a commit",
    }
    for args, message in cases.items():
        proc = feriactl(home, "secrets", "scan", *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("feriactl: error: ") and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (repo / "x").exists()


def test_the_command_loads_neither_dagster_nor_torch(secret_repo, tmp_path: Path) -> None:
    repo, _, _ = secret_repo
    code = (
        "import sys; from codex_cli.main import main; rc = main(['secrets', 'scan', sys.argv[1]]);"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'dagster', 'torch', 'fastapi', 'pandas'});"
        "assert rc == 0 and not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(repo)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CODEX_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- scan_secrets / previews, directly


def test_scan_secrets_selects_and_masks_exactly_as_ingestion(fixture_repo: Path) -> None:
    (fixture_repo / "deploy.env").write_text(f"API_TOKEN={PASSWORD}\nregion=eu\n")
    (fixture_repo / "app" / "aws.py").write_text(f'KEY_ID = "{AWS_KEY_ID}"\n')
    commit = commit_all(fixture_repo, "secrets")
    report = scan_secrets(fixture_repo)
    ingested = scan_repository(fixture_repo, head_sha(fixture_repo))
    assert report.commit == commit
    assert report.files_scanned == len(ingested.files)
    assert report.skipped == ingested.skipped and report.skipped_by_reason == ingested.skipped_by_reason
    assert len(report.findings) == sum(f.secrets_masked for f in ingested.files) == 2
    assert {(f.path, f.line, f.rule) for f in report.findings} == {
        ("deploy.env", 1, "assigned_secret"), ("app/aws.py", 1, "aws_access_key")}
    data = report.to_dict()
    assert data["files_skipped"] == len(ingested.skipped) and data["findings_by_rule"] == report.findings_by_rule
    assert not any(secret in json.dumps(data, ensure_ascii=False) for secret in SECRETS)


def test_previews_are_clipped_masked_lines_and_never_show_the_value() -> None:
    long_line = "x = 1  # " + "y" * 400 + f' ; KEY_ID = "{AWS_KEY_ID}" ; ' + "z" * 400
    (finding,) = file_findings("app/long.py", "import os\n" + long_line + "\n")
    assert finding.line == 2 and finding.rule == "aws_access_key"
    assert finding.preview.startswith("…") and finding.preview.endswith("…")
    assert len(finding.preview) <= PREVIEW_CHARS + 2 and '"«redacted:aws_access_key»"' in finding.preview

    # Two secrets on one line: each preview is the whole masked line.
    two = file_findings("a.py", f'A = "{AWS_KEY_ID}"; B = "{AWS_KEY_ID[:-1]}Q"\n')
    assert [f.preview for f in two] == ['A = "«redacted:aws_access_key»"; B = "«redacted:aws_access_key»"'] * 2

    # The password repeats the user name: the masked line would still show it, so only the marker does.
    (same,) = file_findings("db.yaml", "url: postgres://postgres:postgres@db:5432/app\n")
    assert same.rule == "url_credentials" and same.preview == "«redacted:url_credentials»"

    # Terminal control characters never reach the preview.
    (ctl,) = file_findings(".env", f'\tDB_PASSWORD="{PASSWORD}"  \x1b[2J\u202e\n')
    assert ctl.preview == 'DB_PASSWORD="«redacted:password»"  \ufffd[2J\ufffd'
