"""Plain questions generated from a real repository: phrasing, gold, style, masking, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codex_core.evalsets import (
    MINED,
    PLAIN,
    EvalItem,
    EvalRegistry,
    EvalSetError,
    EvalSetImportError,
    generate_plain_set,
    parse_jsonl,
)
from codex_core.evalsets.plain import first_sentence
from codex_core.languages import detect_language
from codex_core.parsing import definitions
from codex_core.query_style import question_style
from tests.conftest import commit_all, git

TOKEN = "ghp_" + "1234567890abcdefghij" + "ABCDEFGHIJ123456"

LOADER = f'''"""Loading of layered configuration files."""

import json


class ConfigLoader:
    """Merges the values of several configuration files, later files winning."""

    def __init__(self, paths):
        self.paths = paths

    def load(self):
        """Returns the merged settings as one dictionary."""
        merged = {{}}
        for path in self.paths:
            merged.update(json.loads(open(path).read()))
        return merged

    def refresh_cached_values(self):
        self.cache = self.load()


def is_hidden(path):
    """Whether the file name starts with a dot and is skipped when scanning."""
    return path.rsplit("/", 1)[-1].startswith(".")


def upload(data):
    """Send the archive to the mirror with token {TOKEN} and wait for the reply."""
    return data
'''

RETRY = '''def retry_request(call, attempts=3):
    """Call the function again after a connection error, waiting longer each time."""
    for attempt in range(attempts):
        try:
            return call()
        except ConnectionError:
            if attempt == attempts - 1:
                raise
'''

CART = '''/**
 * Computes the total price of every item in the basket, taxes included.
 * @param {Array} items the basket
 */
export function basketTotal(items) {
  return items.reduce((sum, item) => sum + item.price * (1 + item.tax), 0);
}
'''

HEALTH = '''package server

// HealthHandler answers liveness probes with the running version.
type HealthHandler struct {
	Version string
}
'''

TEST_FILE = '''def test_loader():
    """Checks that the loader merges two files into one dictionary."""
    assert True
'''

README = '''# Settings service

## Installation

Install it with pip; `ConfigLoader` needs nothing else.

## Layered configuration

Every file is read by `ConfigLoader.load()` in order, later files override earlier ones.

```python
ConfigLoader(["a.json"]).load()  # `is_hidden` in a code block does not count
```

## Networking

Requests are retried, see `app/retry.py`.
'''


@pytest.fixture(scope="module")
def plain_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("plain") / "settings"
    for folder in ("app", "web", "server", "tests"):
        (repo / folder).mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text(README)
    (repo / "app" / "loader.py").write_text(LOADER)
    (repo / "app" / "retry.py").write_text(RETRY)
    (repo / "app" / "retry_copy.py").write_text(RETRY)  # a copied docstring: one question, both files gold
    (repo / "web" / "cart.js").write_text(CART)
    (repo / "server" / "health.go").write_text(HEALTH)
    (repo / "tests" / "test_loader.py").write_text(TEST_FILE)
    commit_all(repo, "Initial settings service")
    return repo


def by_kind(items: list[EvalItem], kind: str) -> list[EvalItem]:
    return [i for i in items if i.source.split(":")[1] == kind]


def test_docstrings_become_plain_questions_with_the_documented_code_as_gold(plain_repo: Path) -> None:
    generated = generate_plain_set(plain_repo, name="settings-plain", repo_name="settings")
    items = generated.items
    head = git(plain_repo, "rev-parse", "HEAD")
    assert items and all(i.style == PLAIN for i in items)
    assert all(i.query.endswith("?") and question_style(i.query) == "question" for i in items)
    assert generated.meta["head"] == head and generated.meta["generator"] == "plain/v1"

    # Every gold file is a source file at HEAD and every gold symbol one of its definitions.
    for item in items:
        assert not any(f.startswith("tests/") for f in item.gold_files), item
        for symbol in item.gold_symbols:
            path, _, qualified = symbol.partition("::")
            text = (plain_repo / path).read_text()
            assert path in item.gold_files
            assert qualified in {d.symbol for d in definitions(path, detect_language(path), text)}

    loads = [i for i in by_kind(items, "docstring") if i.gold_symbols == ["app/loader.py::ConfigLoader.load"]]
    assert len(loads) == 1
    load = loads[0]
    assert "merged settings as one dictionary" in load.query
    assert not load.lexical_overlap  # the question does not name ConfigLoader or load
    start, end = (int(n) for n in load.source.split(":")[3].split("-"))
    assert (start, end) == (12, 17)  # the definition's lines in app/loader.py

    whether = next(i for i in items if i.gold_symbols == ["app/loader.py::is_hidden"])
    assert "whether the file name starts with a dot" in whether.query

    # A comment block above a definition documents it in the other languages; Go's leading name goes.
    basket = next(i for i in items if i.gold_files == ["web/cart.js"])
    assert "total price of every item in the basket" in basket.query and "@param" not in basket.query
    health = next(i for i in items if i.gold_files == ["server/health.go"])
    assert "liveness probes" in health.query and "HealthHandler" not in health.query

    # The module docstring asks for the file.
    module = next(i for i in by_kind(items, "module") if i.gold_files == ["app/loader.py"])
    assert "layered configuration files" in module.query and module.gold_symbols == []


def test_copies_merge_readme_sections_and_names(plain_repo: Path) -> None:
    items = generate_plain_set(plain_repo, name="settings-plain", repo_name="settings").items
    retry = [i for i in items if "connection error" in i.query]
    assert len(retry) == 1
    assert retry[0].gold_files == ["app/retry.py", "app/retry_copy.py"]

    readme = by_kind(items, "readme")
    # "Installation" is generic; "Networking" names a path; "Layered configuration" names a method
    # (the span in the code block does not count).
    assert sorted(i.gold_files[0] for i in readme) == ["app/loader.py", "app/retry.py"]
    layered = next(i for i in readme if i.gold_files == ["app/loader.py"])
    assert "layered configuration" in layered.query
    assert layered.gold_symbols == ["app/loader.py::ConfigLoader.load"]
    assert all("installation" not in i.query.lower() for i in readme)

    names = by_kind(items, "name")
    assert [i.gold_symbols for i in names] == [["app/loader.py::ConfigLoader.refresh_cached_values"]]
    assert names[0].lexical_overlap  # a name question names its gold by construction
    assert "refresh cached values" in names[0].query


def test_an_unrelated_commit_leaves_the_items_alone(plain_repo: Path, tmp_path: Path) -> None:
    registry = EvalRegistry(tmp_path / "evals")
    before = registry.add(generate_plain_set(plain_repo, name="settings-plain", repo_name="settings"))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(plain_repo), str(clone))
    (clone / "NOTES.txt").write_text("not code\n")
    commit_all(clone, "Add notes")
    after = generate_plain_set(clone, name="settings-plain", repo_name="settings")
    assert after.meta["head"] != before.meta["head"]
    assert registry.add(after).version == before.version  # same items: no new version


def test_queries_are_masked_deterministic_and_capped(plain_repo: Path) -> None:
    first = generate_plain_set(plain_repo, name="settings-plain", repo_name="settings")
    again = generate_plain_set(plain_repo, name="settings-plain", repo_name="settings")
    assert first.items == again.items
    assert all(TOKEN not in i.query for i in first.items)
    upload = next(i for i in first.items if i.gold_symbols == ["app/loader.py::upload"])
    assert "redacted" in upload.query

    other_seed = generate_plain_set(plain_repo, name="settings-plain", repo_name="settings", seed=7)
    assert {i.id for i in other_seed.items} == {i.id for i in first.items}  # ids do not depend on the phrasing

    capped = generate_plain_set(plain_repo, name="settings-plain", repo_name="settings", max_items=3)
    assert len(capped.items) == 3
    assert not any(i.lexical_overlap for i in capped.items)  # overlap-free questions are kept first
    assert not by_kind(capped.items, "name")


def test_plain_sets_keep_their_style_through_the_registry(plain_repo: Path, tmp_path: Path) -> None:
    generated = generate_plain_set(plain_repo, name="settings-plain", repo_name="settings")
    registry = EvalRegistry(tmp_path / "evals")
    stored = registry.add(generated)
    assert registry.get("settings-plain", stored.version).items == generated.items
    line = json.loads(registry.items_path("settings-plain", stored.version).read_text().splitlines()[0])
    assert line["style"] == PLAIN

    # Items stored before styles existed read back by their source.
    legacy = {"id": "a", "query": "Fix the parser", "gold_files": ["p.py"], "source": "git:abc"}
    assert EvalItem.from_dict(legacy).style == MINED
    assert EvalItem.from_dict({**legacy, "source": "hand"}).style == PLAIN

    # Hand-written questions are plain unless they say otherwise; an unknown style is refused.
    path = tmp_path / "hand.jsonl"
    path.write_text('{"query": "where is the loader?", "gold_files": ["app/loader.py"]}\n'
                    '{"query": "Fix loader merging", "gold_files": ["app/loader.py"], "style": "mined"}\n')
    assert [i.style for i in parse_jsonl(path)] == [PLAIN, MINED]
    path.write_text('{"query": "where?", "gold_files": ["a.py"], "style": "chat"}\n')
    with pytest.raises(EvalSetImportError, match='"style" must be one of'):
        parse_jsonl(path)
    bad = generated.items[0].__class__(**{**generated.items[0].to_dict(), "style": "chat"})
    with pytest.raises(EvalSetError, match="style"):
        registry.add(type(generated)(name="bad", version=None, repo="settings", items=[bad], created_at="now"))


@pytest.mark.parametrize(
    ("doc", "sentence"),
    [
        ("Return the value.\n\nMore text.", "Return the value"),
        ("Read :func:`load` output, e.g. the cache. Then stop.", "Read load output, e.g. the cache"),
        ("Union of spans (sorted by start): used by the masker.", "Union of spans"),
        ("Pick one ``Calibrator`` per repo; the newest wins", "Pick one Calibrator per repo"),
        ("Every definition, sorted by (start_line, -end_line).", "Every definition, sorted"),
    ],
)
def test_first_sentence(doc: str, sentence: str) -> None:
    assert first_sentence(doc) == sentence
