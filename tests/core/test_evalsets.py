"""Eval sets: mining a real git history, the immutable versioned registry, JSONL import/export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codex_core.evalsets import (
    EvalItem,
    EvalRegistry,
    EvalSet,
    EvalSetError,
    EvalSetExistsError,
    EvalSetImportError,
    _Commit,
    _message_reason,
    clean_message,
    lexical_overlap,
    mine_eval_set,
)
from tests.support.history import HistoryBuilder

# ---------------------------------------------------------------------------------------------
# A repository whose history holds one commit of every kind the miner must keep or reject.
# ---------------------------------------------------------------------------------------------

CONFIG_PARSER = '''"""Parsing of configuration lines."""

import re

KEY_VALUE = re.compile(r"^(\\w+)\\s*=\\s*(.*)$")


class ConfigParser:
    """Reads key = value lines into a dictionary."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.values: dict[str, str] = {}

    def parse_line(self, line: str) -> None:
        match = KEY_VALUE.match(line.strip())
        if match is None:
            return
        self.values[match.group(1)] = match.group(2)

    def parse(self, text: str) -> dict[str, str]:
        for line in text.splitlines():
            self.parse_line(line)
        return self.values
'''

RETRY = '''import time


def retry_with_backoff(fn, attempts: int = 5, base_delay: float = 0.1):
    """Call fn until it succeeds, sleeping longer betwen failed attempts."""
    for attempt in range(attempts):
        try:
            return fn()
        except ConnectionError:
            if attempt == attempts - 1:
                raise
            time.sleep(base_delay * (2 ** attempt))
'''

REPORT = '''"""Weekly report rendering."""


def weekly_report(rows):
    lines = ["Weekly report"]
    for row in rows:
        lines.append(f"{row['name']}: {row['count']}")
    return "\\n".join(lines)
'''

UTIL = '''def chunked(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]
'''

NET = '''def fetch(url, session):
    return session.get(url, timeout=10).text
'''

LEGACY = '''def read_legacy(path):
    with open(path, "rb") as fh:
        return fh.read()
'''

TEST_PARSER = '''from app.config_parser import ConfigParser


def test_parse():
    assert ConfigParser().parse("a = 1") == {"a": "1"}
'''


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    b = HistoryBuilder(tmp_path_factory.mktemp("mine") / "project")
    shas: dict[str, str] = {}
    b.write("app/__init__.py", '__version__ = "1.1.0"\n')
    b.write("app/config_parser.py", CONFIG_PARSER)
    b.write("app/retry.py", RETRY)
    b.write("app/report.py", REPORT)
    b.write("app/util.py", UTIL)
    b.write("app/net.py", NET)
    b.write("app/legacy_io.py", LEGACY)
    b.write("tests/test_config_parser.py", TEST_PARSER)
    b.write("README.md", "# Project\n")
    b.write("requirements.txt", "requests==2.0\n")
    shas["initial"] = b.commit("Initial commit")

    b.edit(
        "app/config_parser.py",
        "        if match is None:\n            return\n",
        "        if match is None:\n            if self.strict:\n"
        '                raise ValueError(f"not a key = value line: {line!r}")\n            return\n',
    )
    shas["strict"] = b.commit(
        "Raise ValueError for malformed lines in strict mode\n\n"
        "Malformed lines were silently ignored even in strict mode.\n\n"
        "Co-authored-by: Someone Else <someone@example.com>"
    )

    b.edit("app/retry.py", "        except ConnectionError:\n", "        except (ConnectionError, TimeoutError):\n")
    b.write("tests/test_retry.py", "def test_retry():\n    pass\n")
    shas["timeouts"] = b.commit(
        "Retry on timeouts as well as connection errors (#12)\n\nSigned-off-by: Dev Eloper <dev@example.com>"
    )

    b.edit(
        "app/report.py",
        '    return "\\n".join(lines)\n',
        '    return "\\n".join(lines)\n\n\ndef summary_line(rows):\n'
        '    total = sum(row["count"] for row in rows)\n    return f"Total: {total}"\n',
    )
    shas["summary"] = b.commit("Add a summary line to the weekly report output")

    b.git("checkout", "-q", "-b", "comments")
    b.edit(
        "app/config_parser.py",
        "        for line in text.splitlines():\n",
        "        for line in text.splitlines():\n"
        '            if line.lstrip().startswith("#"):\n                continue\n',
    )
    shas["comments"] = b.commit("Skip comment lines starting with a hash sign when parsing config text")
    b.git("checkout", "-q", "main")
    b.git("merge", "-q", "--no-ff", "comments", "-m", "Merge branch 'comments' into main")
    shas["merge"] = b.git("rev-parse", "HEAD")

    logged = '            print("attempt", attempt)\n            return fn()\n'
    b.edit("app/retry.py", "            return fn()\n", logged)
    shas["reverted"] = b.commit("Log every retry attempt at debug level for diagnosis")
    b.git("revert", "--no-edit", "HEAD")
    shas["revert"] = b.git("rev-parse", "HEAD")

    b.write("requirements.txt", "requests==2.1\n")
    shas["bump"] = b.commit("Bump requests from 2.0 to 2.1")

    b.edit("app/retry.py", "betwen", "between")
    shas["typo"] = b.commit("Fix typo in the retry helper docstring")

    b.edit("app/report.py", '    lines = ["Weekly report"]\n', '    lines = [ "Weekly report" ]   \n')
    b.edit("app/report.py", "    for row in rows:\n", "    for row in  rows:\n")
    shas["whitespace"] = b.commit("Tidy up the layout of the report module")

    for path in ("app/config_parser.py", "app/retry.py", "app/report.py", "app/util.py", "app/net.py"):
        b.write(path, "import logging\n" + (b.repo / path).read_text())
    shas["five_files"] = b.commit("Use the shared logger in every module of the app")

    b.write("tests/test_config_parser.py", TEST_PARSER + "\n\ndef test_strict():\n    pass\n")
    shas["tests_only"] = b.commit("Cover strict mode parsing with more test cases")

    b.edit("app/legacy_io.py", "        return fh.read()\n", "        data = fh.read()\n    return data\n")
    shas["legacy_change"] = b.commit("Add checksum validation to the legacy reader")
    (b.repo / "app/legacy_io.py").unlink()
    shas["legacy_delete"] = b.commit("Remove the legacy reader which nobody uses anymore")

    b.write("requirements.txt", "requests==2.1\nhttpx==0.27\n")
    b.edit("app/net.py", "timeout=10", "timeout=30")
    shas["dependabot"] = b.commit(
        "Update the pinned version of the http client library",
        author=("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com"),
    )

    b.edit("app/util.py", "def chunked(items, size):\n", "def chunked(items, size):\n    size = max(1, size)\n")
    shas["bot"] = b.commit(
        "Regenerate the API client from the schema",
        author=("github-actions[bot]", "41898282+github-actions[bot]@users.noreply.github.com"),
    )

    b.write("app/retry.py", (b.repo / "app/retry.py").read_text() + "\n")
    b.edit("app/retry.py", "import time\n", "import time\n\n")
    shas["black"] = b.commit("Reformat the code with black")

    b.edit(
        "app/report.py",
        '    lines = [ "Weekly report" ]   \n',
        '    lines = ["Weekly report"] if rows else ["Weekly report: no activity"]\n',
    )
    shas["empty_weeks"] = b.commit("fix(report): Handle empty weeks in the weekly report GH-34 [skip ci]")

    b.write("app/__init__.py", '__version__ = "1.2.0"\n')
    shas["release"] = b.commit("Release 1.2.0")
    return b.repo, shas


EXPECTED_ITEMS = [  # newest first
    (
        "empty_weeks",
        "Handle empty weeks in the weekly report",
        ["app/report.py"],
        ["app/report.py::weekly_report"],
        True,
    ),
    (
        "comments",
        "Skip comment lines starting with a hash sign when parsing config text",
        ["app/config_parser.py"],
        # A pure addition inside parse(): the symbol comes from the new version.
        ["app/config_parser.py::ConfigParser.parse"],
        False,
    ),
    (
        "summary",
        "Add a summary line to the weekly report output",
        ["app/report.py"],
        # A new function: no parent symbol exists, the new version names it.
        ["app/report.py::summary_line"],
        True,
    ),
    (
        "timeouts",
        "Retry on timeouts as well as connection errors",
        ["app/retry.py"],  # tests/test_retry.py changed too but is a test
        ["app/retry.py::retry_with_backoff"],
        True,  # "Retry" names the file app/retry.py
    ),
    (
        "strict",
        "Raise ValueError for malformed lines in strict mode "
        "Malformed lines were silently ignored even in strict mode.",
        ["app/config_parser.py"],
        # Innermost symbol only: the method, not also the class around it.
        ["app/config_parser.py::ConfigParser.parse_line"],
        False,
    ),
]

EXPECTED_EXCLUSIONS = {
    "initial": "too_short",
    "merge": "merge",
    "reverted": "reverted",
    "revert": "revert",
    "bump": "dependency",
    "typo": "typo",
    "whitespace": "whitespace_only",
    "five_files": "too_many_source_files",
    "tests_only": "no_source_files",
    "legacy_change": "gold_files_deleted",
    "legacy_delete": "gold_files_deleted",
    "dependabot": "dependency",
    "bot": "bot",
    "black": "formatting",
    "release": "release",
}


def test_miner_keeps_exactly_the_good_commits_with_their_gold(history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    evalset = mine_eval_set(repo, name="project-history", repo_name="project")

    got = [(i.id, i.query, i.gold_files, i.gold_symbols, i.lexical_overlap) for i in evalset.items]
    want = [(shas[key][:12], query, files, symbols, overlap) for key, query, files, symbols, overlap in EXPECTED_ITEMS]
    assert got == want
    assert [i.source for i in evalset.items] == [f"git:{shas[key]}" for key, *_ in EXPECTED_ITEMS]

    expected_counts: dict[str, int] = {}
    for reason in EXPECTED_EXCLUSIONS.values():
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    assert evalset.meta["excluded_by_reason"] == expected_counts
    assert evalset.meta["commits_scanned"] == len(EXPECTED_ITEMS) + len(EXPECTED_EXCLUSIONS)
    assert evalset.meta["head"] == shas["release"]
    assert evalset.version is None and evalset.repo == "project"


def test_miner_is_deterministic_and_respects_head_and_max_items(history: tuple[Path, dict[str, str]]) -> None:
    repo, shas = history
    first = mine_eval_set(repo, name="h", repo_name="project")
    second = mine_eval_set(repo, name="h", repo_name="project")
    assert first.items == second.items

    capped = mine_eval_set(repo, name="h", repo_name="project", max_items=2)
    assert [i.id for i in capped.items] == [shas["empty_weeks"][:12], shas["comments"][:12]]

    # Mining at an older head sees only what was reachable (and existing) then.
    old = mine_eval_set(repo, name="h", repo_name="project", head=shas["summary"])
    assert [i.id for i in old.items] == [shas[k][:12] for k in ("summary", "timeouts", "strict")]
    assert old.meta["head"] == shas["summary"]


def test_gold_symbols_must_still_exist_at_head(tmp_path: Path) -> None:
    b = HistoryBuilder(tmp_path / "renamed")
    b.write("lib/shapes.py", "def area(w, h):\n    return w * h\n\n\ndef perimeter(w, h):\n    return 2 * w + 2 * h\n")
    b.commit("Initial commit")
    b.edit("lib/shapes.py", "    return w * h\n", "    return abs(w * h)\n")
    b.edit("lib/shapes.py", "    return 2 * w + 2 * h\n", "    return 2 * (abs(w) + abs(h))\n")
    change = b.commit("Make area and perimeter work with negative sizes")
    b.edit("lib/shapes.py", "def area(", "def rectangle_area(")
    b.commit("Rename area to rectangle_area for clarity")
    b.write("lib/circle.py", "import math\n\n\nclass Circle:\n    def area(self, r):\n        return math.pi * r * r\n")
    added = b.commit("Add a module for circle geometry")

    items = {i.id: i for i in mine_eval_set(b.repo, name="s", repo_name="s").items}
    # A new file: the innermost definition of each added line, from the new version ("class
    # Circle:" itself lies in Circle but outside its method).
    assert items[added[:12]].gold_symbols == ["lib/circle.py::Circle", "lib/circle.py::Circle.area"]
    # area() no longer exists by that name at HEAD; perimeter() does.
    assert items[change[:12]].gold_symbols == ["lib/shapes.py::perimeter"]
    assert items[change[:12]].gold_files == ["lib/shapes.py"]


@pytest.mark.parametrize(
    ("message", "query"),
    [
        ("Fix crash on empty input (#123)", "Fix crash on empty input"),
        ("Handle unicode keys, fixes #45\n\nSigned-off-by: A <a@b.c>", "Handle unicode keys"),
        ("feat(cli)!: add a --json flag to status GH-9", "add a --json flag to status"),
        ("[skip ci] Speed up the tokenizer loop", "Speed up the tokenizer loop"),
        (
            "Cache parsed trees\n\nParsing dominated the profile.\n\nReviewed-by: X <x@y.z>\nChange-Id: I123",
            "Cache parsed trees Parsing dominated the profile.",
        ),
        (
            "Squash of work\n\n* first change\n* second change",
            "Squash of work",
        ),
        ("Bug: parser crashes on empty input", "Bug: parser crashes on empty input"),
    ],
)
def test_clean_message(message: str, query: str) -> None:
    assert clean_message(message) == query


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        # Kept: these name code behaviour even though they contain a formatting-ish word.
        ("Fix date format parsing in the log reader", None),
        ("Strip trailing whitespace from keys in the parser", None),
        ("Fix formatting issue when last line of docstring is blank", None),
        ("Release the lock before sleeping between retries", None),
        ("Treat black-listed hosts as unreachable in the client", None),
        # Rejected.
        ("Fix formatting", "formatting"),
        ("apply black", "formatting"),
        ("style: reorder imports in the cli module", "formatting"),
        ("Remove trailing whitespace", "formatting"),
        ("Fix typos in comments", "typo"),
        ("Bump the github-actions group with 3 updates", "dependency"),
        ("chore(deps): update all non-major dependencies", "dependency"),
        ("Release version 8.3.0", "release"),
        ("Bump version to 2.1.0", "release"),
        ("v1.4.2", "release"),
        ("Revert \"Use a faster tokenizer for every language\"", "revert"),
    ],
)
def test_message_rules(subject: str, reason: str | None) -> None:
    commit = _Commit("0" * 40, ("1" * 40,), "Dev <dev@example.com>", subject, ())
    assert _message_reason(commit, clean_message(subject), set()) == reason


def test_lexical_overlap_variants() -> None:
    files = ["app/config_parser.py"]
    for query in (
        "where is config_parser.py",
        "what does ConfigParser do",
        "how does the config parser work",
        "configparser behaviour",
        "the CONFIG-PARSER module",
    ):
        assert lexical_overlap(query, files, []), query
    assert not lexical_overlap("how are settings read from disk", files, [])
    assert lexical_overlap("who calls parseLine", files, ["app/config_parser.py::ConfigParser.parse_line"])
    assert not lexical_overlap("who reads a line", files, ["app/config_parser.py::ConfigParser.parse_line"])
    # __init__ names no concept; the package directory is not the file name.
    assert not lexical_overlap("init the app", ["app/__init__.py"], [])


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def _item(i: int, query: str = "where is the retry loop") -> EvalItem:
    return EvalItem(
        id=f"q{i}",
        query=f"{query} {i}",
        gold_files=["app/retry.py"],
        gold_symbols=["app/retry.py::retry_with_backoff"],
        source="hand",
        lexical_overlap=True,
    )


def _set(items: list[EvalItem], version: int | None = None, name: str = "hand") -> EvalSet:
    return EvalSet(name=name, version=version, repo="project", items=items, created_at="2024-01-01T00:00:00+00:00")


def test_registry_versions_are_immutable(tmp_path: Path) -> None:
    registry = EvalRegistry(tmp_path / "evals")
    assert registry.next_version("hand") == 1
    path = registry.write(_set([_item(1), _item(2)], version=1))
    assert path == tmp_path / "evals" / "hand" / "v1.jsonl"
    manifest = json.loads((tmp_path / "evals" / "hand" / "v1.manifest.json").read_text())
    assert manifest["n_items"] == 2 and len(manifest["items_sha256"]) == 64

    before = path.stat().st_mtime_ns
    assert registry.write(_set([_item(1), _item(2)], version=1)) == path  # identical: a no-op
    assert path.stat().st_mtime_ns == before

    with pytest.raises(EvalSetExistsError, match=r"'hand' v1 already exists with different items.*next is v2"):
        registry.write(_set([_item(1), _item(3)], version=1))
    assert registry.get("hand", 1).items == [_item(1), _item(2)]

    # Unversioned writes: same items as the latest -> that version; new items -> the next one.
    assert registry.add(_set([_item(1), _item(2)])).version == 1
    assert registry.add(_set([_item(3)])).version == 2
    assert registry.next_version("hand") == 3 and registry.latest_version("hand") == 2
    assert registry.latest_version("other") is None
    assert registry.get("hand").version == 2 and registry.get("hand").items == [_item(3)]
    assert [(s.name, s.version, s.n_items) for s in registry.list()] == [("hand", 1, 2), ("hand", 2, 1)]

    with pytest.raises(KeyError, match="known versions: \\[1, 2\\]"):
        registry.get("hand", 7)
    with pytest.raises(KeyError, match="does not exist"):
        registry.get("nothing")
    with pytest.raises(EvalSetError, match="invalid eval set name"):
        registry.write(_set([_item(1)], name="../escape"))


def test_registry_detects_a_modified_items_file(tmp_path: Path) -> None:
    registry = EvalRegistry(tmp_path)
    path = registry.write(_set([_item(1)], version=1))
    path.write_text(path.read_text().replace("retry loop", "backoff loop"))
    with pytest.raises(EvalSetError, match="modified after it was written"):
        registry.get("hand", 1)


def test_import_reports_every_bad_line_and_imports_nothing(tmp_path: Path) -> None:
    source = tmp_path / "queries.jsonl"
    lines = [
        json.dumps({"query": "where is the retry loop", "gold_files": ["app/retry.py"], "id": "a"}),
        '{"query": "broken", ',
        json.dumps({"query": "no gold"}),
        json.dumps({"query": "bad symbol", "gold_files": ["a.py"], "gold_symbols": ["retry_with_backoff"]}),
        "",
        json.dumps({"query": "again", "gold_files": ["app/retry.py"], "id": "a"}),
        json.dumps({"query": "typo key", "gold_file": ["a.py"]}),
        json.dumps(["not", "an", "object"]),
    ]
    source.write_text("\n".join(lines) + "\n")
    registry = EvalRegistry(tmp_path / "evals")
    with pytest.raises(EvalSetImportError) as excinfo:
        registry.import_jsonl(source, name="hand", repo="project")
    assert [line for line, _ in excinfo.value.errors] == [2, 3, 4, 6, 7, 8]
    message = str(excinfo.value)
    assert f"{source}:2: not valid JSON" in message
    assert f"{source}:3: \"gold_files\" must be a non-empty list" in message
    assert f"{source}:6: duplicate id 'a' (first on line 1)" in message
    assert "unknown key(s) ['gold_file']" in message
    assert registry.versions("hand") == []


def test_import_export_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "queries.jsonl"
    source.write_text(
        json.dumps(
            {
                "query": "Where does ConfigParser reject bad lines?",
                "gold_files": ["app/config_parser.py"],
                "gold_symbols": ["app/config_parser.py::ConfigParser.parse_line"],
            }
        )
        + "\n"
        + json.dumps({"query": "how are failed calls retried", "gold_files": ["app/retry.py"], "id": "retry"})
        + "\n"
    )
    registry = EvalRegistry(tmp_path / "evals")
    imported = registry.import_jsonl(source, name="hand", repo="project")
    assert imported.version == 1
    assert [i.lexical_overlap for i in imported.items] == [True, False]
    assert (imported.items[1].id, imported.items[1].gold_symbols, imported.items[1].source) == ("retry", [], "hand")
    assert len(imported.items[0].id) == 12

    # Importing the same file again does not create a version.
    assert registry.import_jsonl(source, name="hand", repo="project").version == 1

    exported = registry.export_jsonl("hand", 1, tmp_path / "out.jsonl")
    again = registry.import_jsonl(exported, name="copy", repo="project")
    assert again.items == imported.items
    assert exported.read_bytes() == registry.items_path("hand", 1).read_bytes()


def test_mined_set_round_trips_through_the_registry(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo, _ = history
    registry = EvalRegistry(tmp_path / "evals")
    mined = mine_eval_set(repo, name="project-history", repo_name="project")
    stored = registry.add(mined)
    assert stored.version == 1
    # Re-mining an unchanged repository is idempotent.
    assert registry.add(mine_eval_set(repo, name="project-history", repo_name="project")).version == 1
    loaded = registry.get("project-history")
    assert loaded.items == mined.items
    assert loaded.meta["excluded_by_reason"] == mined.meta["excluded_by_reason"]
