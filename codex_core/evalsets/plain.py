"""Evaluation sets, plain questions: what a person would ask, generated from the repository itself.

Users ask "where is a staged index published?", not "Publish staged indexes atomically (#123)". A
confidence model fitted only on mined commit messages (:mod:`.mining`) is calibrated for those and
badly off for plain questions (docs/evaluation.md). ``generate_plain_set`` writes plain where/how
questions from the code at the indexed commit, with the documented code as gold. No LLM is
involved: the rules below are deterministic, and the only randomness (which phrasing a question
gets, which candidates survive the cap) comes from ``seed``.

Files: those ingestion indexes (``files.select_tracked`` + ``content_skip_reason``, masked text as
the index sees it) that are source code a question could be about (``mining.is_source_path``), plus
Markdown files for the ``readme`` kind. Kinds of question, each item's ``source`` being
``plain:<kind>:<path>:<first line>-<last line>`` (lines at the commit in ``meta["head"]``; the
commit is not repeated per item, so a new commit that leaves the questions alone stores no new
version):

* ``docstring`` -- the first sentence of a definition's documentation: a Python docstring, or the
  comment block right above a definition in the other languages (a Go "// Name does ..." loses its
  leading name). A sentence starting with a verb ("Returns the parsed config for a path") becomes
  "How does the code return the parsed config for a path?" (or "Where do we ...", "Which function
  returns ..."); "Whether ..." / "True if ..." become "How does the code decide whether ...?"; a
  noun phrase ("A cache of parsed files") becomes "Where is the code for a cache of parsed files?".
  Gold: the file and the definition.
* ``module`` -- a Python module docstring, the same way ("Which module ...?"). Gold: the file.
* ``readme`` -- a Markdown section (README, docs/) whose text names code in backticks: an
  identifier defined in at most ``MAX_GOLD_FILES`` files, or a source path. Asked by its heading
  ("How does configuration work?"); gold: the named files and definitions. Generic headings
  (installation, usage, license, ...) are skipped.
* ``name`` -- an undocumented function or method whose name has two or more words
  (``retry_with_backoff`` -> "Where does the code retry with backoff?"). Such questions name their
  gold (``lexical_overlap``), so they make up at most ``NAME_SHARE`` of the set.

Sentences are cleaned of markup (``code``, :role:`x`, links), cut at the first ": " or "; ", and
kept only with ``MIN_WORDS``..``MAX_WORDS`` words, no URL, no doctest. The question avoids the
documented identifier where it can (a leading "Name does ..." or "This class ..." is dropped);
whether it still names a gold file or symbol is recorded in ``lexical_overlap``, and the set prefers
items that do not when it is capped. The same question from several definitions (a docstring copied
into two modules) is one item whose gold is all of them (at most ``MAX_GOLD_FILES`` files; more is
too vague to score and is dropped). Every query goes through the secrets masker, like mined ones.
Items are ordered by path and line; ids (``p`` + 11 hex digits) depend on the kind, path and
definition only, so a question keeps its id while the code around it changes.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from codex_core.evalsets.data import PLAIN, EvalItem, EvalSet, _now, _words, lexical_overlap
from codex_core.evalsets.mining import is_source_path
from codex_core.evalsets.registry import _validate_name
from codex_core.files import content_skip_reason, decode, indexed_text, select_tracked
from codex_core.git import head_sha, read_blobs
from codex_core.languages import detect_language
from codex_core.models import Definition
from codex_core.parsing import definitions
from codex_core.secrets import redact

GENERATOR_VERSION = "plain/v1"
DEFAULT_MAX_PLAIN_ITEMS = 600
NAME_SHARE = 0.25
MAX_GOLD_FILES = 3
MIN_WORDS = 3
MAX_WORDS = 28
MARKDOWN_SUFFIXES = (".md", ".markdown")
MAX_MARKDOWN_BYTES = 256 * 1024

# Verbs that open docstrings ("Return ...", "Parses ..."): base forms. A first word that is not one
# of these (nor its third person) is read as the start of a noun phrase.
VERBS = frozenset("""
accept acquire add adjust aggregate allocate allow answer append apply assign attach authenticate authorize
build bump cache calculate call cancel cast check choose clean clear clone close coerce collect combine
commit compare compile compose compress compute concatenate configure connect consume construct contain
convert copy count create decide declare decode decompress decorate define delete deliver denormalize
deny deserialize detach detect determine disable discard dispatch display download draw drop dump embed
emit enable encode encrypt ensure enumerate escape estimate evaluate evict execute expand export expose
extend extract fetch fill filter find finish fire fit flag flatten flush fold format forward freeze gather
generate get group guard guess handle hash hold identify ignore implement import increment index infer
initialise initialize inject insert inspect install instantiate intercept invalidate invoke iterate join
keep launch limit link list listen load locate lock log lookup make manage map mark mask match measure
merge migrate mount move normalise normalize notify open order output override pack pad parse pass patch
pick pin plot poll populate predict prepare preserve print process produce protect provide prune publish
pull push put query queue quote raise rank read rebuild receive record recover redact reduce refresh
register reject release reload remove rename render reorder repair replace report represent request
require rerank reset resolve restore retrieve retry return reuse rewrite route run sample sanitize save
scan schedule score search select send serialize serve set shorten show shuffle sign simulate skip
slice sort spawn split start stop store stream strip subscribe sum summarize swap sync take tell
terminate test throttle time tokenize toggle track train transform translate traverse trigger trim
truncate try turn unpack unquote unregister unwrap update upgrade upload use validate verify visit
wait walk warn watch wrap write yield
""".split())
_DETERMINERS = frozenset({"a", "an", "the", "this", "these", "those", "one", "some", "all", "each", "every"})
_SELF_REFERENCE_RE = re.compile(
    r"^(?:this|the)\s+(?:class|function|method|module|file|helper|type|struct|trait|interface|object|"
    r"decorator|constructor|routine|package)\s+(?:is\s+(?:used\s+to\s+|responsible\s+for\s+)?)?",
    re.I,
)
_HELPER_RE = re.compile(r"^(?:helper|utility|convenience\s+function|shortcut|used|function|method)\s+(?:to|for)\s+",
                        re.I)
_WHETHER_RE = re.compile(r"^(?:returns?\s+)?(?:whether|true\s+(?:if|when|iff)|checks?\s+(?:if|whether))\s+", re.I)
_SKIP_START_RE = re.compile(
    r"^(?:todo|fixme|xxx|hack|note|deprecated|see\b|alias|same\s+as|overrides?\b|implements?\b|inherit|"
    r"tests?\b|example|usage|args?\b|params?\b|parameters|returns?:|raises?:|type:|noqa|pylint|copyright|"
    r"licen[cs]ed?|spdx|generated|auto-generated|internal\s+use|do\s+not\s+use|>>>|:|@|\*|#|-|=)",
    re.I,
)
_ROLE_RE = re.compile(r":[\w:.-]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")  # :func:`name` / :class:`~a.B`
_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`\"'])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.")
_CODE_SPAN_RE = re.compile(r"`([^`\n]+)`")
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_COMMENT_LINE_RE = re.compile(r"^\s*(?:///?!?|/\*\*?|\*/?|--)")
GENERIC_HEADINGS = frozenset("""
about acknowledgements acknowledgments api authors background benchmarks build building changelog changes
commands community compatibility contents contributing contributors copyright credits demo dependencies
deployment development docs documentation download example examples faq features getting-started
glossary help history install installation introduction layout license licence limitations links maintainers
migration motivation news notes options overview prerequisites quickstart quick-start reference
references release releases requirements results roadmap running security see-also set-up setup sponsors status
summary support table-of-contents testing tests todo troubleshooting tutorial usage versioning why
""".split())


@dataclass
class _Candidate:
    kind: str  # docstring | module | readme | name
    path: str  # where the question comes from (the gold file for code kinds)
    start: int
    end: int
    key: str  # kind:path:symbol-or-heading, the stable part of the id
    query: str
    gold: dict[str, list[str]]  # gold file -> gold symbols ("path::Qualified.name") in it


def generate_plain_set(
    repo: Path, *, name: str, repo_name: str, head: str | None = None,
    max_items: int = DEFAULT_MAX_PLAIN_ITEMS, seed: int = 0,
) -> EvalSet:
    """Plain questions about ``repo`` at ``head`` (default HEAD); rules in the module docstring.

    The result is not stored: pass it to ``EvalRegistry.add``/``write``.
    """
    repo = Path(repo)
    commit = head_sha(repo, head or "HEAD")
    entries, _ = select_tracked(repo, commit)
    wanted = [e for e in entries if is_source_path(e.path) or _is_markdown(e.path, e.size)]
    texts: dict[str, str] = {}
    blobs = dict(read_blobs(repo, sorted({e.sha for e in wanted})))
    for entry in sorted(wanted, key=lambda e: e.path):
        data = blobs[entry.sha]
        if content_skip_reason(data, decode(data)[0]) is None:
            texts[entry.path] = indexed_text(data, entry.path)  # masked, exactly as the index holds it

    code = {p: t for p, t in texts.items() if is_source_path(p)}
    defs = {p: definitions(p, detect_language(p), t) for p, t in code.items()}
    candidates: list[_Candidate] = []
    documented: set[tuple[str, str]] = set()
    for path, text in code.items():
        found = list(_docstring_candidates(path, text, defs[path], seed))
        documented.update((c.path, s.rsplit("::", 1)[-1]) for c in found for s in c.gold.get(c.path, []))
        candidates.extend(found)
    for path, text in texts.items():
        if path not in code:
            candidates.extend(_readme_candidates(path, text, defs, seed))
    names = [c for p in sorted(defs) for c in _name_candidates(p, defs[p], documented, seed)]

    items = _select(_merge(candidates), _merge(names), max_items=max_items, seed=seed)
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item.source.split(":", 2)[1]] += 1
    return EvalSet(
        name=_validate_name(name),
        version=None,
        repo=repo_name,
        items=items,
        created_at=_now(),
        meta={
            "generator": GENERATOR_VERSION,
            "head": commit,
            "seed": seed,
            "max_items": max_items,
            "candidates": len(candidates) + len(names),
            "items_by_kind": dict(sorted(counts.items())),
            "items_with_lexical_overlap": sum(1 for i in items if i.lexical_overlap),
        },
    )


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def _is_markdown(path: str, size: int | None) -> bool:
    p = PurePosixPath(path)
    if p.suffix.lower() not in MARKDOWN_SUFFIXES or (size or 0) > MAX_MARKDOWN_BYTES:
        return False
    return "changelog" not in p.name.lower() and not any(part.startswith(".") for part in p.parts[:-1])


def _python_docstrings(text: str) -> tuple[str | None, dict[str, str]]:
    """(module docstring, qualified name -> docstring) of a Python file; nothing when it does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None, {}
    found: dict[str, str] = {}
    stack: list[tuple[ast.AST, tuple[str, ...]]] = [(tree, ())]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualified = (*prefix, child.name)
                doc = ast.get_docstring(child)
                if doc:
                    found[".".join(qualified)] = doc
                stack.append((child, qualified))
            elif not isinstance(child, ast.expr):
                stack.append((child, prefix))  # definitions inside if/try blocks keep their prefix
    return ast.get_docstring(tree), found


def _comment_above(lines: list[str], start_line: int) -> str | None:
    """The comment block directly above 1-based ``start_line`` (annotations in between allowed)."""
    i = start_line - 2
    while i >= 0 and lines[i].strip().startswith(("@", "#[")):
        i -= 1
    block: list[str] = []
    while i >= 0 and _COMMENT_LINE_RE.match(lines[i]):
        block.append(lines[i])
        i -= 1
    if not block:
        return None
    out: list[str] = []
    for line in reversed(block):
        body = _COMMENT_LINE_RE.sub("", line.strip(), count=1).removesuffix("*/").strip()
        if body.startswith("@"):  # JSDoc / Javadoc tags end the description
            break
        out.append(body)
    return "\n".join(out).strip() or None


def _docstring_candidates(path: str, text: str, defs: list[Definition], seed: int) -> list[_Candidate]:
    language = detect_language(path)
    lines = text.splitlines()
    by_symbol = {d.symbol: d for d in defs}
    docs: dict[str, str] = {}
    out: list[_Candidate] = []
    if language == "python":
        module_doc, docs = _python_docstrings(text)
        if module_doc:
            query = _question(module_doc, kind="module", own_names=(PurePosixPath(path).stem,), seed=seed)
            if query:
                out.append(_Candidate("module", path, 1, max(1, len(lines)), f"module:{path}", query, {path: []}))
    else:
        for d in defs:
            comment = _comment_above(lines, d.start_line)
            if comment:
                docs[d.symbol] = comment
    for symbol, doc in sorted(docs.items()):
        d = by_symbol.get(symbol)
        if d is None or (d.name.startswith("__") and d.name.endswith("__")):
            continue  # a definition the index does not know, or __init__ & co (they document the class)
        query = _question(doc, kind=d.kind, own_names=(d.name,), seed=seed)
        if query:
            out.append(_Candidate("docstring", path, d.start_line, d.end_line, f"docstring:{path}:{symbol}", query,
                                  {path: [f"{path}::{symbol}"]}))
    return out


def _readme_candidates(
    path: str, text: str, defs: dict[str, list[Definition]], seed: int
) -> list[_Candidate]:
    by_name: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for file, found in defs.items():
        for d in found:
            by_name[d.name].add((file, d.symbol))
            by_name[d.symbol].add((file, d.symbol))
    files = sorted(defs)
    out: list[_Candidate] = []
    for heading, start, end, body in _sections(text):
        gold: dict[str, set[str]] = defaultdict(set)
        for span in _CODE_SPAN_RE.findall(body):
            for file, symbol in _resolve_span(span.strip(), by_name, files):
                gold[file].update([f"{file}::{symbol}"] if symbol else [])
        if not gold or len(gold) > MAX_GOLD_FILES:
            continue
        topic = _heading_topic(heading)
        if topic is None:
            continue
        rng = _rng(seed, f"readme:{path}:{heading}")
        query = rng.choice((f"How does {topic} work?", f"Where is {topic} handled in the code?",
                            f"Which code implements {topic}?"))
        out.append(_Candidate("readme", path, start, end, f"readme:{path}:{heading}", query,
                              {f: sorted(s) for f, s in gold.items()}))
    return out


def _sections(text: str) -> list[tuple[str, int, int, str]]:
    """(heading, first line, last line, text outside code fences) of each Markdown section."""
    sections: list[tuple[str, int, list[str]]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE_RE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING_RE.match(line)
        if match:
            sections.append((match.group(2), number, []))
        elif sections and not fenced:
            sections[-1][2].append(line)
    out = []
    for i, (heading, start, body) in enumerate(sections):
        end = sections[i + 1][1] - 1 if i + 1 < len(sections) else start + len(body)
        out.append((heading, start, end, "\n".join(body)))
    return out


def _resolve_span(span: str, by_name: dict[str, set[tuple[str, str]]], files: list[str]) -> list[tuple[str, str]]:
    """What a backticked span names: [(file, symbol or "")], or nothing when it is not code or ambiguous."""
    if not span or " " in span.strip("() "):
        return []
    if "/" in span or PurePosixPath(span).suffix and is_source_path(span):
        path = span.strip("./")
        hits = [f for f in files if f == path or f.endswith("/" + path)]
        return [(hits[0], "")] if len(hits) == 1 else []
    name = span.removesuffix("()").replace("::", ".").lstrip("@")
    # A plain lower-case word in backticks is more often a value or an option than a definition.
    if not (span.endswith("()") or "." in name or "_" in name or any(ch.isupper() for ch in name[1:])):
        return []
    for candidate in (name, name.rsplit(".", 1)[-1]):
        hits = by_name.get(candidate)
        if hits and len({f for f, _ in hits}) <= MAX_GOLD_FILES and len(candidate) >= 3:
            return sorted(hits)
    return []


def _heading_topic(heading: str) -> str | None:
    text = _LINK_RE.sub(r"\1", heading).replace("`", "").split(":", 1)[0]
    text = re.sub(r"^\s*(?:\d+[.)]\s*)+", "", text).strip(" .!?-—")
    words = text.split()
    if not 1 <= len(words) <= 8 or "-".join(w.lower() for w in words) in GENERIC_HEADINGS:
        return None
    if not re.search(r"[A-Za-z]{3}", text):
        return None
    return _lower_first(text)


def _name_candidates(path: str, defs: list[Definition], documented: set[tuple[str, str]], seed: int):
    for d in defs:
        if d.kind not in ("function", "method") or d.name.startswith("_") or (path, d.symbol) in documented:
            continue
        words = _words(d.name)
        if len(words) < 2 or words[0] == "test":
            continue
        phrase = " ".join(words)
        rng = _rng(seed, f"name:{path}:{d.symbol}")
        if words[0] in VERBS:
            query = rng.choice((f"Where does the code {phrase}?", f"How do we {phrase}?"))
        else:
            query = rng.choice((f"How does {phrase} work?", f"Where is {phrase} implemented?"))
        yield _Candidate("name", path, d.start_line, d.end_line, f"name:{path}:{d.symbol}", query,
                         {path: [f"{path}::{d.symbol}"]})


# ---------------------------------------------------------------------------------------------
# Sentence -> question
# ---------------------------------------------------------------------------------------------


def first_sentence(doc: str) -> str:
    """The first sentence of the first paragraph: markup and parentheticals removed, cut at ": " or
    "; " (may be '')."""
    paragraph = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    text = " ".join(paragraph.split())
    text = _ROLE_RE.sub(r"\1", text)
    text = _LINK_RE.sub(r"\1", text)
    text = re.sub(r"`+([^`]*)`+", r"\1", text)
    text = re.sub(r"(?<!\w)\*{1,2}([^*]+)\*{1,2}(?!\w)", r"\1", text)
    protected = text
    for i, abbreviation in enumerate(_ABBREVIATIONS):
        protected = protected.replace(abbreviation, f"\0{i}\0")
    sentence = _SENTENCE_END_RE.split(protected, maxsplit=1)[0]
    sentence = re.split(r":\s|;\s|\s--\s|\s—\s", sentence, maxsplit=1)[0]
    for i, abbreviation in enumerate(_ABBREVIATIONS):
        sentence = sentence.replace(f"\0{i}\0", abbreviation)
    # Asides in parentheses are not how people ask; an aside the cut left open is dropped with its tail.
    while (shorter := re.sub(r"\s*\([^()]*\)", "", sentence)) != sentence:
        sentence = shorter
    sentence = sentence.split("(", 1)[0].rstrip(".!:;, ")
    # ... and a preposition it left dangling ("sorted by (start, end)" -> "sorted").
    return re.sub(r"(?:[\s,]+(?:by|of|to|for|with|and|or|in|on|at|from|as|the|a|an|via))+$", "", sentence).strip()


def _lower_first(text: str) -> str:
    """Lower-case the first word unless it is an acronym or an identifier (``HTTP``, ``ConfigParser``)."""
    first, _, rest = text.partition(" ")
    letters = re.sub(r"[-',.;:!?]", "", first)
    if letters.isalpha() and letters[1:] == letters[1:].lower():
        first = first.lower()
    return f"{first} {rest}".strip()


def _base_form(word: str) -> str | None:
    """``word`` (lower case) as a base-form verb from VERBS: "returns" -> "return", "applies" -> "apply"."""
    if word in VERBS:
        return word
    for suffix, replacement in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x"),
                                ("zes", "z"), ("oes", "o"), ("s", "")):
        if word.endswith(suffix) and word[: len(word) - len(suffix)] + replacement in VERBS:
            return word[: len(word) - len(suffix)] + replacement
    return None


def _naive_base(word: str) -> str:
    for suffix, replacement in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(suffix):
            return word[: -len(suffix)] + replacement
    return word[:-1]


def _third_person(verb: str) -> str:
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    return verb + "s"


_KIND_NOUN = {"method": "function", "function": "function", "class": "class", "struct": "type", "interface": "type",
              "trait": "type", "enum": "type", "type": "type", "module": "module"}


def _question(doc: str, *, kind: str, own_names: tuple[str, ...], seed: int) -> str | None:
    """A plain question from a docstring's first sentence, or None when the sentence does not make one.

    The phrasing is drawn by the sentence itself: a docstring copied into two files gives one
    question, whose gold is both.
    """
    sentence = first_sentence(doc)
    rng = _rng(seed, f"{_KIND_NOUN.get(kind, 'code')}:{sentence}")
    if not sentence or _SKIP_START_RE.match(sentence) or "http" in sentence or ">>>" in sentence:
        return None
    # "ConfigParser reads ..." / "This class reads ..." / "Helper to read ...": drop the self-reference.
    words = sentence.split()
    named_itself = len(words) > 2 and words[0].strip(",") in own_names
    if named_itself:  # Go style: what follows the name is a verb, whether or not VERBS knows it
        sentence = " ".join(words[1:])
    sentence = _SELF_REFERENCE_RE.sub("", sentence)
    sentence = _HELPER_RE.sub("", sentence)
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    noun = _KIND_NOUN.get(kind, "code")
    whether = _WHETHER_RE.match(sentence)
    if whether:
        rest = sentence[whether.end():]
        return rng.choice((f"How does the code decide whether {rest}?", f"Where is it checked whether {rest}?"))
    verb = _base_form(words[0].lower())
    if verb is None and named_itself and re.fullmatch(r"[a-z]+s", words[0]):
        verb = _naive_base(words[0])
    if verb is not None:  # "Returns the parsed config" / "Parse a line"
        rest, third = " ".join(words[1:]), _third_person(verb)
        return rng.choice((
            f"How does the code {verb} {rest}?",
            f"Where do we {verb} {rest}?",
            f"Which {noun} {third} {rest}?",
            f"Where is the code that {third} {rest}?",
        ))
    first = words[0].lower()
    if not (first in _DETERMINERS or words[0][:1].isupper()) or first.endswith("ed") or first in _WH_WORDS:
        return None  # "cached by ...", "used internally", "Where the index lives": nothing to ask about
    clause = _clause(words)
    if clause is not None:  # "Each row adds one stage" -> "Where does each row add one stage?"
        return clause
    phrase = _lower_first(sentence)  # a noun phrase: what a function returns, what a class is
    if noun == "function":
        return rng.choice((f"How does the code compute {phrase}?", f"Where does the code get {phrase}?",
                           f"Where is the code for {phrase}?"))
    if noun == "module":
        return rng.choice((f"Which module handles {phrase}?", f"Where is the code for {phrase}?"))
    return rng.choice((f"Where is the code for {phrase}?", f"Which {noun} represents {phrase}?"))


_WH_WORDS = frozenset({"where", "how", "when", "why", "whenever", "wherever"})
_NOT_IN_SUBJECT = frozenset({
    "before", "after", "when", "if", "that", "which", "while", "until", "unless", "because", "whose", "who",
    "where", "so", "than", "not", "and", "or",
})  # fmt: skip


def _clause(words: list[str]) -> str | None:
    """A short subject + third-person verb sentence as a where-question, or None when it is not one."""
    for i, word in enumerate(words[1:5], start=1):
        if word.lower() in _NOT_IN_SUBJECT:
            return None
        lower = word.lower().strip(",")
        if lower in ("is", "are") and i + 1 < len(words) and words[i + 1].lower().endswith(("ed", "en")):
            subject = _lower_first(" ".join(words[:i]))
            return f"Where {lower} {subject} {' '.join(words[i + 1:])}?"
        base = _base_form(lower)
        if base is not None and base != lower and lower.endswith("s"):
            subject = _lower_first(" ".join(words[:i]))
            rest = " ".join(words[i + 1:])
            return f"Where does {subject} {base} {rest}?".replace("  ", " ").replace(" ?", "?")
        if not re.fullmatch(r"[\w'-]+", word):  # punctuation ends the subject: not a simple clause
            return None
    return None


# ---------------------------------------------------------------------------------------------
# Merging, capping, items
# ---------------------------------------------------------------------------------------------


def _rng(seed: int, key: str) -> random.Random:
    # A string seed is hashed with SHA-512: the same on every run and machine (unlike hash()).
    return random.Random(f"{seed}:{key}")


def _merge(candidates: list[_Candidate]) -> list[_Candidate]:
    """One candidate per distinct question (case-insensitive), gold merged; too vague ones dropped."""
    by_query: dict[str, list[_Candidate]] = defaultdict(list)
    for c in candidates:
        by_query[" ".join(c.query.lower().split())].append(c)
    merged = []
    for group in by_query.values():
        group.sort(key=lambda c: (c.path, c.start, c.key))
        gold: dict[str, set[str]] = defaultdict(set)
        for c in group:
            for file, symbols in c.gold.items():
                gold[file].update(symbols)
        if len(gold) > MAX_GOLD_FILES:
            continue
        first = group[0]
        merged.append(_Candidate(first.kind, first.path, first.start, first.end, first.key, first.query,
                                 {f: sorted(s) for f, s in gold.items()}))
    return merged


def _item(candidate: _Candidate) -> EvalItem:
    gold_files = sorted(candidate.gold)
    gold_symbols = [s for f in gold_files for s in candidate.gold[f]]
    query = redact(candidate.query)
    return EvalItem(
        id="p" + hashlib.sha256(candidate.key.encode("utf-8", "surrogateescape")).hexdigest()[:11],
        query=query,
        gold_files=gold_files,
        gold_symbols=gold_symbols,
        source=f"plain:{candidate.kind}:{candidate.path}:{candidate.start}-{candidate.end}",
        lexical_overlap=lexical_overlap(query, gold_files, gold_symbols),
        style=PLAIN,
    )


def _normal(query: str) -> str:
    return " ".join(query.lower().split())


def _select(
    documented: list[_Candidate], named: list[_Candidate], *, max_items: int, seed: int
) -> list[EvalItem]:
    """At most ``max_items``: questions without lexical overlap first, then a seeded draw; name
    questions at most ``NAME_SHARE`` of the result (all of it when the code documents nothing)."""
    def draw(candidate: _Candidate) -> str:
        return hashlib.sha256(f"{seed}:{candidate.key}".encode("utf-8", "surrogateescape")).hexdigest()

    asked = {_normal(c.query) for c in documented}
    docs = [(c, _item(c)) for c in documented]
    docs.sort(key=lambda ci: (ci[1].lexical_overlap, draw(ci[0])))
    docs = docs[:max_items]
    names = sorted(((c, _item(c)) for c in named if _normal(c.query) not in asked), key=lambda ci: draw(ci[0]))
    room = max_items - len(docs)
    if docs:
        room = min(room, int(len(docs) * NAME_SHARE / (1 - NAME_SHARE)))
    chosen = docs + names[: max(room, 0)]
    chosen.sort(key=lambda ci: (ci[0].path, ci[0].start, ci[0].key))
    items: dict[str, EvalItem] = {}
    for _, item in chosen:
        items.setdefault(item.id, item)
    return list(items.values())
