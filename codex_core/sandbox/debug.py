"""The debug agent: run a failing test in the sandbox, find the suspects, ask a model for a patch,
apply it to a throwaway copy, re-run the test and the linter, and hand back the diff with the
evidence. The user's checkout is never touched: the user applies the diff.

1. The test runs on a copy of the commit (``pytest TEST_ID`` under the ``unit_tests`` policy); a
   test that passes ends here (``not_failing``).
2. Suspects, each a line span read from the commit's git objects: the definitions of what the
   failing lines call (``git grep`` at the commit), the repository's own traceback frames, then the
   retriever's citations for the failure. With no model reachable the agent stops (``diagnosed``).
3. The model answers JSON, ``{"edits": [{"path", "find", "replace"}], "explanation"}`` or
   ``{"diff", "explanation"}``, checked against ``fix.schema.json`` (one retry on a schema error).
4. Edits become a unified diff computed here from the commit's blobs (a model's own diff is used as
   it is), applied with ``git apply --recount`` *inside* the sandbox, on a fresh copy: a copy a test
   has run on may hold symlinks planted to lead a host-side write astray.
5. The test and ruff run again; a second attempt is told why the first failed. Verdict: ``fixed``
   (the test passes, and ruff, where it exists, is clean), ``not_fixed``, ``diagnosed``,
   ``not_failing``.

Nothing read from the repository or printed by a step reaches the model, the report or a log
without secret masking.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import os
import posixpath
import re
import secrets
import shlex
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codex_core.git import GitError, run_git
from codex_core.llm.backends import Backend, BackendError
from codex_core.sandbox.policy import SandboxPolicy
from codex_core.sandbox.report import BLOCKED, FAILED, OK, UNAVAILABLE, ArtifactResult, RunReport, StepResult
from codex_core.sandbox.runner import Sandbox, open_sandbox
from codex_core.sandbox.workdir import resolve_commit
from codex_core.schema import load_schema, validate
from codex_core.secrets import redact

FIX_SCHEMA = Path(__file__).with_name("fix.schema.json")
PATCH_POLICY = SandboxPolicy(name="agent_patch", allowlist=("git",), cpu_quota=30, timeout_sec=60.0,
                             memory_limit=1024**3, max_processes=64)
FIXED, NOT_FIXED, DIAGNOSED, NOT_FAILING = "fixed", "not_fixed", "diagnosed", "not_failing"
SUSPECT_CONTEXT = 8  # lines either side of a traceback frame
MAX_SNIPPET_LINES = 60
_FRAME_RES = (
    re.compile(r'File "/tmp/work/(?P<path>[^"]+)", line (?P<line>\d+)'),  # Python traceback
    re.compile(r"^(?P<path>[\w./-]+\.py):(?P<line>\d+):", re.MULTILINE),  # pytest's short form
)


@dataclass(frozen=True)
class Suspect:
    path: str
    line_start: int
    line_end: int
    snippet: str  # exactly these lines at the commit, secrets masked
    source: str  # "definition" | "traceback" | "retrieval"
    score: float = 0.0
    symbol: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.path}:{self.line_start}-{self.line_end}"


@dataclass(frozen=True)
class Attempt:
    model: str
    status: str  # applied | schema_error | apply_failed | bad_edit | llm_error
    explanation: str = ""
    diff: str = ""
    error: str = ""
    test: StepResult | None = None
    lint: StepResult | None = None
    seconds: float = 0.0


@dataclass
class FixResult:
    test_id: str
    commit: str
    status: str
    reason: str
    before: StepResult
    suspects: list[Suspect] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    diff: str = ""  # the fix, when one was found: ``git apply`` it to the checkout
    model: str | None = None
    duration_sec: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["suspects"] = [{**asdict(s), "ref": s.ref} for s in self.suspects]
        return data

    def to_markdown(self) -> str:
        lines = [f"# Debug agent: `{self.test_id}` — **{self.status}**", "",
                 f"- commit `{self.commit}`; {self.duration_sec:.2f} s; model {self.model or '-'}",
                 f"- {self.reason}", "", "## Before", "",
                 f"`{self.before.command}` → {self.before.verdict} (exit {self.before.exit_code})"]
        lines += _tail(self.before.stdout + self.before.stderr)
        if self.suspects:
            lines += ["", "## Suspects (cited)", ""]
            lines += [f"- `{s.ref}` ({s.source}{f', score {s.score:.3f}' if s.score else ''})" for s in self.suspects]
        for number, attempt in enumerate(self.attempts, 1):
            lines += ["", f"## Attempt {number}: {attempt.status} ({attempt.model}, {attempt.seconds:.1f} s)", ""]
            if attempt.explanation:
                lines.append(f"> {attempt.explanation.strip()[:500]}")
            if attempt.error:
                lines += ["", f"error: {attempt.error}"]
            for label, step in (("test", attempt.test), ("lint", attempt.lint)):
                if step is not None:
                    lines.append(f"- {label}: `{step.command}` → {step.verdict} (exit {step.exit_code})")
        if self.diff:
            lines += ["", "## The fix (apply it with `git apply`)", "", "```diff", self.diff.rstrip("\n"), "```"]
        return "\n".join(lines) + "\n"


def _tail(text: str, count: int = 25) -> list[str]:
    tail = text.rstrip("\n").splitlines()[-count:]
    return ["", "```text", *tail, "```"] if tail else []


def _masked(step: StepResult) -> StepResult:
    return StepResult(step.command, step.status, step.exit_code, step.duration_sec, step.executable, step.reason,
                      redact(step.stdout), redact(step.stderr), step.stdout_truncated, step.stderr_truncated)


class Blobs:
    """Files of one commit, read from git objects (never from a copy a step has run on)."""

    def __init__(self, repo: Path, sha: str) -> None:
        self.repo, self.sha = repo, sha
        self._cache: dict[str, str | None] = {}

    def text(self, path: str) -> str | None:
        if path not in self._cache:
            try:
                mode = run_git(self.repo, "ls-tree", self.sha, "--", path).decode().split(" ", 1)[0]
                data = run_git(self.repo, "show", f"{self.sha}:{path}") if mode in ("100644", "100755") else None
                self._cache[path] = data.decode("utf-8") if data is not None else None
            except (GitError, UnicodeDecodeError):
                self._cache[path] = None
        return self._cache[path]

    def span(self, path: str, start: int, end: int) -> str | None:
        text = self.text(path)
        if text is None:
            return None
        lines = text.splitlines(keepends=True)
        return redact("".join(lines[max(start, 1) - 1:end]), path=path)


def _is_test(path: str) -> bool:
    name = posixpath.basename(path)
    return name.startswith("test_") or name.endswith("_test.py") or "/tests/" in f"/{path}" or name == "conftest.py"


def traceback_suspects(output: str, blobs: Blobs) -> list[Suspect]:
    """The repository's own frames of a failure, deepest first, code under test before tests."""
    seen: dict[str, int] = {}
    for regex in _FRAME_RES:
        for match in regex.finditer(output):
            path = posixpath.normpath(match["path"])
            if path.startswith("../") or blobs.text(path) is None:
                continue
            seen[path] = int(match["line"])  # the last frame of a file is the deepest
    ordered = sorted(seen.items(), key=lambda item: _is_test(item[0]))
    suspects = []
    for path, line in ordered:
        total = len((blobs.text(path) or "").splitlines())
        start, end = max(1, line - SUSPECT_CONTEXT), min(total, line + SUSPECT_CONTEXT)
        suspects.append(Suspect(path, start, end, blobs.span(path, start, end) or "", "traceback"))
    return suspects


_CALLED = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_NOT_NAMES = frozenset({"assert", "print", "len", "str", "int", "float", "list", "dict", "set", "tuple", "isinstance",
                        "where", "and", "or", "not", "in", "is", "repr", "type", "sorted", "sum", "min", "max"})


def definition_suspects(output: str, blobs: Blobs, limit: int = 3) -> list[Suspect]:
    """Definitions of the functions and classes the failing lines call (``>`` and ``E`` lines of pytest),
    found with ``git grep`` at the commit: the code under test, which a traceback that fails in the
    test itself never shows."""
    names: list[str] = []
    for line in output.splitlines():
        if line.startswith((">", "E ")):
            names += [n for n in _CALLED.findall(line) if n not in _NOT_NAMES and not n.startswith("test")]
    suspects: list[Suspect] = []
    for name in dict.fromkeys(names):
        pattern = rf"^\s*(async\s+)?(def|class)\s+{name}\b"
        try:
            hits = run_git(blobs.repo, "grep", "-n", "-E", pattern, blobs.sha, "--", "*.py").decode()
        except GitError:
            continue  # git grep exits 1 when nothing matches
        for hit in hits.splitlines():
            _, path, line, _ = hit.split(":", 3)
            if _is_test(path):
                continue
            start = int(line)
            source = (blobs.text(path) or "").splitlines()
            end = start
            while end < len(source) and end - start < MAX_SNIPPET_LINES and (
                    not source[end].strip() or source[end].startswith((" ", "\t"))):
                end += 1
            while end > start and not source[end - 1].strip():
                end -= 1
            suspects.append(Suspect(path, start, end, blobs.span(path, start, end) or "", "definition", symbol=name))
            break
        if len(suspects) >= limit:
            break
    return suspects


def failure_query(test_id: str, output: str) -> str:
    """What to ask the retriever: the test's name and the assertion lines of its failure."""
    name = test_id.split("::")[-1].replace("_", " ")
    errors = [line.strip("E ").strip() for line in output.splitlines() if line.startswith("E ")][:4]
    return redact(" ".join([name, *errors]))[:400]


def _validate_edits(data: dict[str, Any]) -> str | None:
    if ("edits" in data) == ("diff" in data):
        return "give exactly one of 'edits' or 'diff'"
    return None


def parse_reply(text: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The JSON object of a model's reply (fences and chatter around it ignored), checked."""
    cleaned = re.sub(r"```(?:json)?", "", text)
    start, end = cleaned.find("{"), cleaned.rfind("}")
    if start < 0 or end <= start:
        return None, "the reply holds no JSON object"
    try:
        data = json.loads(cleaned[start:end + 1], strict=False)  # small models put raw newlines in strings
    except ValueError as exc:
        return None, f"the reply is not valid JSON: {exc}"
    problems = validate(data, schema)
    if not problems and isinstance(data, dict):
        problem = _validate_edits(data)
        problems = [problem] if problem else []
    return (None, "; ".join(problems)) if problems else (data, "")


def _safe_path(path: str) -> str | None:
    normal = posixpath.normpath(path.strip().removeprefix("a/").removeprefix("b/"))
    if not normal or normal.startswith(("/", "../")) or normal == ".." or "\x00" in normal:
        return None
    return normal


def edits_to_diff(edits: Sequence[dict[str, str]], blobs: Blobs) -> tuple[str, str]:
    """A unified diff (git style, a/ b/ prefixes) from find/replace edits on the commit's files."""
    changed: dict[str, str] = {}
    for number, edit in enumerate(edits, 1):
        path = _safe_path(edit["path"])
        original = changed.get(path) if path else None
        if path is not None and original is None:
            original = blobs.text(path)
        if path is None or original is None:
            return "", f"edit {number}: {edit['path']!r} is not a text file of the repository at this commit"
        find = edit["find"]
        count = original.count(find) if find else 0
        if count != 1:
            stripped = "\n".join(line.rstrip() for line in original.split("\n"))
            target = "\n".join(line.rstrip() for line in find.split("\n"))
            if find and stripped.count(target) == 1:
                original, find = stripped, target
            else:
                where = "does not occur" if count == 0 else f"occurs {count} times"
                return "", f"edit {number}: the 'find' text {where} in {path} (it must occur exactly once)"
        changed[path] = original.replace(find, edit["replace"], 1)
    chunks = []
    for path, new in changed.items():
        old = blobs.text(path) or ""
        chunks += difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                       f"a/{path}", f"b/{path}")
    diff = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in chunks)
    return (diff, "") if diff else ("", "the edits change nothing")


def diff_paths(diff: str) -> list[str]:
    paths = []
    for line in diff.splitlines():
        if line.startswith("+++ ") and not line.startswith("+++ /dev/null"):
            path = _safe_path(line[4:].split("\t")[0])
            if path and path not in paths:
                paths.append(path)
    return paths


def write_new(workdir: Path, text: str) -> str:
    """A new file in the copy, never through a link a step may have planted (O_EXCL | O_NOFOLLOW)."""
    name = f".codex-fix-{secrets.token_hex(8)}.patch"
    fd = os.open(workdir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return name


def build_prompt(test_id: str, before: StepResult, suspects: Sequence[Suspect], feedback: str = "") -> list[dict]:
    rules = (
        "You fix a failing test by changing the code under test, never the test. Reply with one JSON "
        "object and nothing else, with at least one edit. Each edit replaces the exact line(s) 'find', "
        "copied from the code shown, with 'replace'. Example:\n"
        '{"edits": [{"path": "calc.py", "find": "    return a - b", "replace": "    return a + b"}], '
        '"explanation": "add() subtracted instead of adding."}'
    )
    code = "\n\n".join(f"File {s.ref}:\n```\n{s.snippet}```" for s in suspects)
    output = "\n".join((before.stdout + before.stderr).rstrip("\n").splitlines()[-40:])
    user = f"Failing test: {test_id}\n\nTest output:\n```\n{redact(output)}\n```\n\nCode:\n{code}"
    if feedback:
        user += f"\n\nYour previous fix did not work: {feedback}\nTry a different change."
    return [{"role": "system", "content": rules}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Model:
    """The model the agent asks: a backend, the name it serves, and the patch style it can manage.

    ``json``: edits or a diff as a schema-checked JSON object (models that follow formats).
    ``rewrite``: the whole corrected function in a code block, for small models (≤ ~1.5B parameters
    here), which copy a JSON example back or edit the test instead — measured on Qwen2.5-Coder-0.5B.
    """

    backend: Backend
    name: str
    context_window: int = 4096
    timeout: float = 180.0
    style: str = "json"  # json | rewrite


def fix_failing_test(
    repo: Path | str, test_id: str, *, commit: str = "HEAD", test_policy: SandboxPolicy,
    lint_policy: SandboxPolicy | None = None, model: Model | None = None, no_model_reason: str = "",
    retrieve: Callable[[str], list[Suspect]] | None = None, tools_path: str | None = None,
    codex_home: Path | str | None = None, attempts: int = 2, max_suspects: int = 4,
) -> FixResult:
    """Run the debug agent (see the module docstring). Raises SandboxUnavailable / WorkdirError only
    for what keeps the test from running at all."""
    if not test_id.strip() or test_id.startswith("-") or "\n" in test_id:
        raise ValueError(f"{test_id!r} is not a test id: give a pytest node id such as tests/test_calc.py::test_add")
    started = time.monotonic()
    repo = Path(repo).resolve()
    sha = resolve_commit(repo, commit)
    blobs = Blobs(repo, sha)
    test_cmd = f"pytest -q -p no:cacheprovider -x {shlex.quote(test_id)}"
    sandbox_args = {"tools_path": tools_path, "codex_home": codex_home}
    with open_sandbox(repo, sha, test_policy, **sandbox_args) as sandbox:
        before = _masked(sandbox.run(test_cmd))

    def result(status: str, reason: str, **more: Any) -> FixResult:
        return FixResult(test_id, sha, status, reason, before, duration_sec=round(time.monotonic() - started, 3),
                         **more)

    if before.status == OK:
        return result(NOT_FAILING, "the test passes at this commit: nothing to fix")
    if before.status in (BLOCKED, UNAVAILABLE):
        return result(before.status, f"the test could not run: {before.reason}")

    output = before.stdout + before.stderr
    suspects = definition_suspects(output, blobs)
    known = {s.path for s in suspects}
    for found in traceback_suspects(output, blobs) + (retrieve(failure_query(test_id, output)) if retrieve else []):
        if found.path not in known and (found.source == "traceback" or not _is_test(found.path)):
            suspects.append(found)
            known.add(found.path)
    suspects = suspects[:max_suspects]
    if model is None:
        return result(DIAGNOSED, f"no LLM reachable ({no_model_reason or 'none configured'}): stopped after the "
                                 "diagnosis — the failing test and the cited suspects", suspects=suspects)

    schema = load_schema(FIX_SCHEMA)
    done: list[Attempt] = []
    feedback = ""
    for _ in range(attempts):
        attempt = _attempt(repo, sha, test_id, test_cmd, before, suspects, feedback, model, schema, blobs,
                           test_policy, lint_policy, sandbox_args)
        done.append(attempt)
        if attempt.status == "applied" and attempt.test is not None and attempt.test.status == OK and (
                attempt.lint is None or attempt.lint.status in (OK, UNAVAILABLE)):
            return result(FIXED, "the test passes with the patch applied to a copy" + (
                          "; ruff is clean on the changed files" if attempt.lint and attempt.lint.status == OK
                          else ""), suspects=suspects, attempts=done, diff=attempt.diff, model=model.name)
        feedback = attempt.error or _failure_note(attempt)
    return result(NOT_FIXED, f"no patch made the test pass in {len(done)} attempt(s); the diagnosis stands",
                  suspects=suspects, attempts=done, model=model.name)


def _failure_note(attempt: Attempt) -> str:
    for step in (attempt.test, attempt.lint):
        if step is not None and step.status != OK:
            errors = [line for line in (step.stdout + step.stderr).splitlines() if line.startswith(("E ", "F"))]
            return f"`{step.command}` {step.status}: " + " / ".join(errors[:3])
    return attempt.status


def _ask(model: Model, messages: list[dict], schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """One request, and one retry that quotes the schema problem."""
    problem = ""
    for _ in range(2):
        try:
            reply = model.backend.chat(model.name, messages, max_tokens=700, temperature=0.1,
                                       context_window=model.context_window, timeout=model.timeout)
        except BackendError as exc:
            return None, f"llm_error: {exc}"
        data, problem = parse_reply(reply.content, schema)
        if data is not None:
            return data, ""
        retry = f"That reply was rejected: {problem}. Reply with the JSON object only."
        messages = [*messages, {"role": "assistant", "content": reply.content[:2000]},
                    {"role": "user", "content": retry}]
    return None, f"schema_error: {problem}"


_EXPECTATION = re.compile(r"^E\s+assert (?P<actual>.+?) == (?P<expected>.+)$", re.MULTILINE)
_WHERE = re.compile(r"^E\s+\+\s+where (?P<actual>.+?) = (?P<call>.+)$", re.MULTILINE)
_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(?P<code>.*?)```", re.DOTALL)


def expectation(output: str) -> str:
    """``add(2, 3) returns -1, but the test expects 5.`` from pytest's assertion rewriting, or ""."""
    assertion, where = _EXPECTATION.search(output), _WHERE.search(output)
    if assertion is None:
        return ""
    if where is not None and where["actual"] == assertion["actual"]:
        return f"{where['call']} returns {assertion['actual']}, but the test expects {assertion['expected']}."
    return f"The test got {assertion['actual']} where it expects {assertion['expected']}."


def rewrite_prompt(target: Suspect, before: StepResult, feedback: str = "") -> list[dict]:
    """The small-model prompt: one function, what it does wrong, and a code block to answer with."""
    output = before.stdout + before.stderr
    observed = expectation(output) or "Test output:\n" + "\n".join(output.rstrip("\n").splitlines()[-15:])
    user = (f"This Python function has a bug:\n```python\n{target.snippet}```\n{observed}\n"
            "Rewrite the function so that the test passes. Reply with the corrected function only, "
            "in one ```python block.")
    if feedback:
        user += f"\nA previous rewrite did not work: {feedback}"
    return [{"role": "user", "content": user}]


def rewrite_to_diff(reply: str, target: Suspect, blobs: Blobs) -> tuple[str, str]:
    """The model's rewritten function put in place of ``target``'s lines, as a unified diff."""
    match = _CODE_BLOCK.search(reply)
    code = (match["code"] if match else reply).strip("\n")
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError as exc:
        return "", f"the rewritten function does not parse: {exc.msg} (line {exc.lineno})"
    names = [node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef |
                                                                     ast.ClassDef)]
    if target.symbol not in names:
        return "", f"the reply does not define {target.symbol}()"
    original = blobs.text(target.path) or ""
    lines = original.splitlines(keepends=True)
    indent = re.match(r"\s*", lines[target.line_start - 1]).group(0)
    body = textwrap.indent(textwrap.dedent(code), indent) + "\n"
    new = "".join(lines[:target.line_start - 1]) + body + "".join(lines[target.line_end:])
    diff = "".join(difflib.unified_diff(original.splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"a/{target.path}", f"b/{target.path}"))
    return (diff, "") if diff else ("", "the rewrite changes nothing")


def _attempt(repo: Path, sha: str, test_id: str, test_cmd: str, before: StepResult, suspects: list[Suspect],
             feedback: str, model: Model, schema: dict[str, Any], blobs: Blobs, test_policy: SandboxPolicy,
             lint_policy: SandboxPolicy | None, sandbox_args: dict[str, Any]) -> Attempt:
    started = time.monotonic()

    def attempt(status: str, **more: Any) -> Attempt:
        return Attempt(model.name, status, seconds=round(time.monotonic() - started, 2), **more)

    target = next((s for s in suspects if s.source == "definition"), None)
    if model.style == "rewrite" and target is not None:
        try:
            reply = model.backend.chat(model.name, rewrite_prompt(target, before, feedback), max_tokens=700,
                                       temperature=0.7 if feedback else 0.1,  # a retry samples more widely
                                       context_window=model.context_window, timeout=model.timeout)
        except BackendError as exc:
            return attempt("llm_error", error=redact(str(exc)))
        explanation = f"rewrote {target.symbol}() ({target.ref})"
        diff, problem = rewrite_to_diff(reply.content, target, blobs)
        if problem:
            return attempt("bad_edit", explanation=explanation, error=problem)
    else:
        data, error = _ask(model, build_prompt(test_id, before, suspects, feedback), schema)
        if data is None:
            kind, _, message = error.partition(": ")
            return attempt(kind, error=redact(message))
        explanation = redact(str(data.get("explanation", "")))
        if "edits" in data:
            diff, problem = edits_to_diff(data["edits"], blobs)
            if problem:
                return attempt("bad_edit", explanation=explanation, error=problem)
        else:
            diff = data["diff"] if data["diff"].endswith("\n") else data["diff"] + "\n"
    paths = diff_paths(diff)
    if not paths or any(_is_test(p) for p in paths):
        return attempt("bad_edit", explanation=explanation, diff=redact(diff),
                       error="the patch must change code under test, not the test" if paths else "no file changed")
    applied, test, lint = try_patch(repo, sha, diff, test_cmd, test_policy, lint_policy, **sandbox_args)
    if applied.status != OK:
        return attempt("apply_failed", explanation=explanation, diff=redact(diff),
                       error=redact((applied.stderr or applied.reason).strip()[:500]))
    return attempt("applied", explanation=explanation, diff=redact(diff), test=test, lint=lint)


def try_patch(repo: Path, sha: str, diff: str, test_cmd: str, test_policy: SandboxPolicy,
              lint_policy: SandboxPolicy | None = None, **sandbox_args: Any,
              ) -> tuple[StepResult, StepResult | None, StepResult | None]:
    """Apply ``diff`` to a fresh copy of ``sha`` inside the sandbox, then run the test and ruff on the
    changed Python files: (apply, test, lint); test and lint are None when the patch did not apply."""
    with open_sandbox(repo, sha, test_policy, **sandbox_args) as sandbox:
        patch = write_new(sandbox.workdir, diff)
        applied = sandbox.run(f"git apply --recount --whitespace=nowarn {patch}", PATCH_POLICY)
        (sandbox.workdir / patch).unlink()
        if applied.status != OK:
            return applied, None, None
        test = _masked(sandbox.run(test_cmd))
        lint = _lint(sandbox, lint_policy, [p for p in diff_paths(diff) if p.endswith(".py")])
    return applied, test, lint


def _lint(sandbox: Sandbox, policy: SandboxPolicy | None, paths: list[str]) -> StepResult | None:
    if policy is None or not paths:
        return None
    step = sandbox.run("ruff check --no-cache " + " ".join(shlex.quote(p) for p in paths), policy)
    return _masked(step) if step.status in (OK, FAILED) else step


def resolve_model(candidates: Sequence[Model], timeout: float = 2.0) -> tuple[Model | None, str]:
    """The first candidate whose server answers and serves its model name; else why none did."""
    tried = []
    for candidate in candidates:
        try:
            served = candidate.backend.list_models(timeout)
        except BackendError as exc:
            tried.append(f"{candidate.name}: {exc}")
            continue
        if served and candidate.name not in served and not any(candidate.name in s for s in served):
            tried.append(f"{candidate.name}: not served (serving {', '.join(served[:3])})")
            continue
        return candidate, ""
    return None, "; ".join(tried) or "no model configured"


def fix_report(result: FixResult, repo_path: Path | str, started_at: str) -> tuple[RunReport, dict[str, str]]:
    """The fix as a stored run: its steps (the test before, each attempt's test and lint) and its
    files (``fix.diff`` when one was found, ``fix.json``) — kept and signed like any agent run."""
    steps = [result.before] + [s for a in result.attempts for s in (a.test, a.lint) if s is not None]
    files = {"fix.json": json.dumps(result.to_dict(), indent=2, default=str) + "\n"}
    if result.diff:
        files["fix.diff"] = result.diff
    artifacts = tuple(ArtifactResult(name, "collected", size=len(text.encode()),
                                     sha256=hashlib.sha256(text.encode()).hexdigest()) for name, text in files.items())
    status = OK if result.status == FIXED else result.status
    report = RunReport("fix", "unit_tests", str(repo_path), result.commit, status, tuple(steps), artifacts,
                       result.duration_sec, started_at, {"agent": "debug", "test": result.test_id})
    return report, files
