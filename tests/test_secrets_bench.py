"""benchmarks/secrets_bench.py end to end on a tiny real repository: outputs written, no secret leaks
into them, files ingestion skips as generated (lockfiles) reported on their own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import commit_all, git

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# Assembled from pieces so that this file itself does not look like it leaks credentials.
PLANTED_TOKEN = "ghp_" + "R8nX2mQ4vL7kP9sT3wY6zB1cD5fG0hJ4aE2u"
PLANTED_PASSWORD = "Hx7" + "-q2Lw9-vT4z"


def _bench_module():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import secrets_bench

    return secrets_bench


def test_secrets_bench_end_to_end(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "demo"
    (repo / "app").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "app" / "settings.py").write_text(
        f'import os\n\nDEBUG = True\nAPI_TOKEN = "{PLANTED_TOKEN}"\nHOME = os.environ["HOME"]\n'
    )
    (repo / "README.md").write_text(
        "# demo\n\nFixed in 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39; request id "
        "123e4567-e89b-12d3-a456-426614174000.\n"
    )
    lockfile = json.dumps({
        "name": "demo", "lockfileVersion": 3,
        "packages": {"node_modules/left-pad": {
            "version": "1.3.0", "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
            "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQm7uCK5RRIfDFyYeUu6iQ0wOrF4p1"
                         "IpoENNAzmKvfXnGQYg==",  # a hash: must not be masked
            "password": PLANTED_PASSWORD,
        }},
    }, indent=2)
    (repo / "package-lock.json").write_text(lockfile)
    password_line = next(i for i, line in enumerate(lockfile.splitlines(), 1) if '"password"' in line)
    commit_all(repo, "demo")

    baseline = tmp_path / "baseline_secrets.py"  # the current masker again: both must find the same
    baseline.write_text("from codex_core.secrets import MASKER_VERSION, mask_secrets  # noqa: F401\n")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"demo": {"app/settings.py:4:github_token": "tp",
                                           f"package-lock.json:{password_line}:password": {"label": "fp"}}}))
    out = tmp_path / "out"

    assert _bench_module().main([str(repo), "--baseline-file", str(baseline), "--out", str(out),
                                 "--repeat", "1", "--labels", str(labels)]) == 0

    rows = [json.loads(line) for line in (out / "demo" / "findings.current.jsonl").read_text().splitlines()]
    assert [(r["set"], r["path"], r["line"], r["kind"]) for r in rows] == [
        ("indexed", "app/settings.py", 4, "github_token"),
        ("generated", "package-lock.json", password_line, "password"),
    ]
    assert all(r["repo"] == "demo" and "«redacted:" in r["preview"] for r in rows)
    current, baseline_rows = (out / "demo" / f"findings.{m}.jsonl" for m in ("current", "baseline"))
    assert current.read_text() == baseline_rows.read_text()
    for written in out.rglob("*"):
        if written.is_file():
            text = written.read_text()
            assert PLANTED_TOKEN not in text and PLANTED_PASSWORD not in text, written

    summary = json.loads((out / "summary.json").read_text())
    (result,) = summary["results"]
    assert result["generated_files"] == ["package-lock.json"]
    indexed, generated = result["findings"]["indexed"]["current"], result["findings"]["generated"]["current"]
    assert indexed["files"] == 2 and indexed["findings"] == 1 and indexed["by_kind"] == {"github_token": 1}
    assert generated["files"] == 1 and generated["by_kind"] == {"password": 1}
    assert indexed["labels"]["precision"] == 1.0 and generated["labels"]["fp"] == 1
    assert indexed["only_here"] == 0 and indexed["only_in_other"] == 0
    assert result["throughput"]["current"]["mib_per_s"] > 0
    assert result["throughput"]["ratio_current_over_baseline"]["mask_min_s"] > 0
    files = [json.loads(line) for line in (out / "demo" / "files.jsonl").read_text().splitlines()]
    assert {f["path"]: f["set"] for f in files} == {"README.md": "indexed", "app/settings.py": "indexed",
                                                    "package-lock.json": "generated"}
    assert "| demo | generated (1 files)" in capsys.readouterr().out
