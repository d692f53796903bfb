"""A repository's own dependencies: from a wheel cache or an index mirror resolved outside the
sandbox, never from the network inside it. Real wheels built here, a real PEP 503 index served on
loopback (outside the sandbox, which cannot reach it), real pip and bubblewrap."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from codex_core.sandbox import PolicyError, run_recipe
from codex_core.sandbox.policy import policy_from_mapping
from tests.conftest import commit_all, git
from tests.sandbox.support import needs_bwrap, policy, recipe

pytestmark = needs_bwrap
WHEEL = "greeting-1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with one real wheel, ``greeting 1.0``, built offline."""
    src = tmp_path_factory.mktemp("greeting-src")
    (src / "greeting.py").write_text("def hello(name):\n    return f'hello {name}'\n")
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\nbuild-backend = '
                                        '"setuptools.build_meta"\n\n[project]\nname = "greeting"\nversion = "1.0"\n'
                                        '\n[tool.setuptools]\npy-modules = ["greeting"]\n')
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True)
    assert (out / WHEEL).is_file()
    return out


def app_repo(root: Path, requirements: str) -> Path:
    repo = root / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "requirements.txt").write_text(requirements)
    (repo / "test_app.py").write_text("from greeting import hello\n\n\ndef test_hello():\n"
                                      "    assert hello('you') == 'hello you'\n")
    commit_all(repo, "an app that needs greeting")
    return repo


def pytest_with_dependencies():
    return replace(recipe("pytest -q -p no:cacheprovider"), dependencies=("requirements.txt",))


@pytest.fixture()
def mirror(wheels: Path, tmp_path: Path):
    """A PEP 503 simple index on 127.0.0.1, outside the sandbox; records every path asked for."""
    root = tmp_path / "index"
    (root / "simple" / "greeting").mkdir(parents=True)
    (root / "files").mkdir()
    (root / "files" / WHEEL).write_bytes((wheels / WHEEL).read_bytes())
    (root / "simple" / "greeting" / "index.html").write_text(f'<a href="../../files/{WHEEL}">{WHEEL}</a>\n')
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            asked.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", asked
    finally:
        server.shutdown()
        server.server_close()


def test_without_a_wheel_cache_nothing_is_installed_and_the_report_says_why(tmp_path: Path) -> None:
    repo = app_repo(tmp_path, "greeting==1.0\n")
    report = run_recipe(repo, "HEAD", pytest_with_dependencies(), policy())
    assert report.steps[0].status == "skipped" and "names no wheel_cache" in report.steps[0].reason
    assert report.status == "failed" and "No module named 'greeting'" in report.steps[1].stdout


def test_dependencies_come_from_the_wheel_cache_with_no_network(wheels: Path, tmp_path: Path) -> None:
    repo = app_repo(tmp_path, "# runtime\ngreeting==1.0  # the one we need\n")
    report = run_recipe(repo, "HEAD", pytest_with_dependencies(), policy(wheel_cache=str(wheels)))
    assert report.status == "ok", report.to_markdown()
    assert report.steps[0].command.startswith("python -m pip install --no-index --find-links")
    assert "1 passed" in report.steps[1].stdout
    assert [p.name for p in wheels.iterdir()] == [WHEEL]  # the cache is only read


def test_a_mirror_fills_the_cache_outside_the_sandbox(mirror, tmp_path: Path) -> None:
    url, asked = mirror
    cache = tmp_path / "cache"
    repo = app_repo(tmp_path, "greeting>=1.0\n")
    report = run_recipe(repo, "HEAD", pytest_with_dependencies(), policy(wheel_cache=str(cache), index_mirror=url))
    assert report.status == "ok", report.to_markdown()
    assert report.steps[0].command.startswith("pip download --only-binary=:all: --index-url")
    assert (cache / WHEEL).is_file() and any(path.endswith(WHEEL) for path in asked)
    assert "1 passed" in report.steps[2].stdout


def test_a_requirements_file_cannot_redirect_the_download(mirror, tmp_path: Path) -> None:
    url, asked = mirror
    repo = app_repo(tmp_path, "--index-url http://attacker.invalid/simple\ngreeting\n")
    report = run_recipe(repo, "HEAD", pytest_with_dependencies(),
                        policy(wheel_cache=str(tmp_path / "cache"), index_mirror=url))
    assert report.status.startswith("blocked") and "line 1 is not a plain requirement" in report.steps[0].reason
    assert asked == [] and report.steps[1].status == "skipped"  # nothing fetched, nothing run


def test_the_policy_file_names_its_wheel_source_strictly() -> None:
    base = {"allowlist": ["python"]}
    assert policy_from_mapping("t", {**base, "wheel_cache": "/srv/wheels"}).wheel_cache == "/srv/wheels"
    for bad, message in (({"wheel_cache": "wheels"}, "absolute directory"),
                         ({"wheel_cache": "/w", "index_mirror": "ftp://x"}, "http(s) URL"),
                         ({"index_mirror": "https://pypi.internal/simple"}, "index_mirror needs wheel_cache")):
        with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
            policy_from_mapping("t", {**base, **bad})
