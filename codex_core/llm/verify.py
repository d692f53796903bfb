"""Verify a drafted answer before a user sees it: the check that decides escalation.

A draft passes when (1) it is not a bare "I don't know" while the retrieval evidence is good
(confidence known and at or above τ, ``[verify] escalate_below``) — that is what a small model says when it
fails to read good snippets, and the user would rather have a better model's answer or the evidence
itself; and (2) every sentence that makes a claim about the code — it names an identifier, a
backticked term or a path — cites a retrieved span (its own citation, or the one of the sentence
it continues), and (3) the cited lines support it: each code term the sentence names occurs in the
lines it cites. (3) is the cheap structural entailment check; ``method = "model"`` adds a judgement
by the model on the quoted lines, whose verdict must match ``verdict.schema.json`` (one retry on a
schema error) — off by default: it adds a model call (two on a schema error) to every answer and, measured
with a 0.5B judge, changed no result (docs/llm.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codex_core.llm.citations import CitationCheck, parse_refs
from codex_core.llm.types import ContextChunk

VERDICT_SCHEMA = Path(__file__).with_name("verdict.schema.json")
# A citation right after a full stop closes the sentence before it: no split before "[".
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(*-])|\n+")
_BACKTICKED = re.compile(r"`([^`\n]{1,80})`")
_IDENTIFIER = re.compile(r"\b([A-Za-z_][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+|[a-z]+[A-Z][A-Za-z0-9]*|[A-Za-z_]\w*\(\))")
_PATHLIKE = re.compile(r"\b[\w./-]+\.(?:py|js|ts|go|rs|java|md|toml|yaml|json)\b")
_CITATION = re.compile(r"\[[^\[\]\n]*:\d+[^\[\]\n]*\]")


@dataclass(frozen=True)
class SentenceCheck:
    text: str
    refs: list[str]
    terms: list[str]
    supported: bool
    why: str = ""


@dataclass
class Verdict:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    sentences: list[SentenceCheck] = field(default_factory=list)
    method: str = "lexical"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons), "method": self.method,
                "sentences": [asdict(s) for s in self.sentences]}


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def code_terms(sentence: str) -> list[str]:
    """The terms a sentence says something about: backticked terms, identifiers, file paths."""
    bare = _CITATION.sub(" ", sentence)
    terms = [t.strip("()") for t in _BACKTICKED.findall(bare)]
    unticked = _BACKTICKED.sub(" ", bare)
    paths = _PATHLIKE.findall(unticked)
    # Identifiers from the words, not from inside file names (response_writer.go is a path).
    terms += [t.removesuffix("()") for t in _IDENTIFIER.findall(_PATHLIKE.sub(" ", unticked))]
    terms += paths
    return [t for t in dict.fromkeys(terms) if t and len(t) >= 3]


def _supported(term: str, lines: str, paths: set[str]) -> bool:
    if term in lines or any(term == p or p.endswith("/" + term) for p in paths):
        return True
    # `Foo.bar` / `foo(x)` / `pkg.mod.func`: the last name is the one the lines must hold.
    last = re.split(r"[.(:\s]", term.rstrip(")"))
    return bool(last) and len(last[-1]) >= 3 and last[-1] in lines


def attribute_citations(text: str, shown: list[ContextChunk]) -> tuple[str, list[int]]:
    """Cite for a small model: every sentence that names code terms but cites nothing gets the ref of
    the first shown snippet (highest score first) whose symbol, path and lines hold every term it
    names. A sentence no snippet supports stays uncited, so verification fails it as before.

    Small models write sensible prose but do not copy refs reliably (docs/llm.md, "Prompts that fit
    the model"); the compact prompt asks for prose only and this attaches exact, retrieved spans.
    Returns the text with the refs appended and the 1-based numbers of the sentences attributed."""
    out: list[str] = []
    attributed: list[int] = []
    rest = text
    for number, sentence in enumerate(split_sentences(text), 1):
        at = rest.find(sentence)
        if at < 0:  # split_sentences strips; the sentence is always found in order
            return text, []
        out.append(rest[:at])
        rest = rest[at + len(sentence):]
        terms = code_terms(sentence)
        if terms and not parse_refs(sentence):
            for chunk in shown:
                lines = f"{chunk.symbol or ''}\n{chunk.path}\n{chunk.text}"
                if all(_supported(t, lines, {chunk.path}) for t in terms):
                    end = len(sentence.rstrip(".!?"))
                    sentence = f"{sentence[:end]} [{chunk.ref}]{sentence[end:]}"
                    attributed.append(number)
                    break
        out.append(sentence)
    return "".join(out) + rest, attributed


def verify_answer(check: CitationCheck, contexts: list[ContextChunk], *, confidence: float | None,
                  escalate_below: float) -> Verdict:
    """The lexical/structural verdict on a citation-checked answer (see the module docstring)."""
    if check.abstained and not check.cited:
        if contexts and confidence is not None and confidence >= escalate_below:
            return Verdict(False, [f"said it does not know although the evidence is good (confidence "
                                   f"{confidence:.2f} >= {escalate_below:.2f})"])
        return Verdict(True, ["abstained: the evidence is weak, or its strength unknown"])
    by_ref = {c.ref: c for c in contexts}
    echoed = _echoed_lines(check.text, contexts)
    if echoed:
        return Verdict(False, [f"pastes the snippets back instead of answering ({echoed})"])
    sentences: list[SentenceCheck] = []
    reasons: list[str] = []
    previous_refs: list[str] = []
    for sentence in split_sentences(check.text):
        refs = [r for r in parse_refs(sentence) if r in by_ref]
        terms = code_terms(sentence)
        own = refs or previous_refs  # a sentence without a citation continues the one before it
        if not terms:
            sentences.append(SentenceCheck(sentence, refs, terms, True))
        elif not own:
            sentences.append(SentenceCheck(sentence, refs, terms, False, "makes a claim about the code but cites "
                                                                         "no retrieved span"))
        else:
            # The cited chunk's symbol and path count as its lines: the prompt shows them in its header,
            # and a piece of a long function does not repeat the function's name.
            lines = "\n".join(f"{by_ref[r].symbol or ''}\n{by_ref[r].path}\n{by_ref[r].text}" for r in own)
            paths = {by_ref[r].path for r in own}
            missing = [t for t in terms if not _supported(t, lines, paths)]
            sentences.append(SentenceCheck(sentence, refs, terms, not missing,
                                           f"names {', '.join(missing[:3])}, absent from the cited lines"
                                           if missing else ""))
        if refs:
            previous_refs = refs
    for number, item in enumerate(sentences, 1):
        if not item.supported:
            reasons.append(f"sentence {number} {item.why}: {item.text[:120]!r}")
    return Verdict(not reasons, reasons, sentences)


def _echoed_lines(text: str, contexts: list[ContextChunk]) -> str:
    """"" unless the answer is mostly the snippets' own lines pasted back (≥ 3 lines, more than half
    of the answer's): every line is in the cited code, so the claim check cannot catch it."""
    code = {line.strip() for c in contexts for line in c.text.splitlines() if len(line.strip()) >= 8}
    lines = [line.strip() for line in _CITATION.sub("", text).splitlines() if line.strip()]
    pasted = [line for line in lines if line in code]
    if len(pasted) >= 3 and len(pasted) * 2 > len(lines):
        return f"{len(pasted)} of its {len(lines)} lines are lines of the snippets"
    return ""


def judge_prompt(verdict: Verdict, contexts: list[ContextChunk]) -> list[dict[str, str]]:
    """Ask the model whether the cited lines support each claim; answer as JSON (verdict.schema.json)."""
    by_ref = {c.ref: c for c in contexts}
    claims = []
    for number, sentence in enumerate(verdict.sentences, 1):
        quoted = "\n".join(f"[{r}]\n{by_ref[r].text}" for r in sentence.refs if r in by_ref)
        if quoted:
            claims.append(f"Claim {number}: {_CITATION.sub('', sentence.text).strip()}\nLines:\n{quoted}")
    rules = ('For each claim, say whether the quoted lines support it. Reply with JSON only: '
             '{"unsupported": [<numbers of the claims the lines do not support>], "reason": "<one sentence>"}')
    return [{"role": "system", "content": rules}, {"role": "user", "content": "\n\n".join(claims)}]


def model_judgement(verdict: Verdict, contexts: list[ContextChunk], ask: Callable[[list[dict[str, str]]], str],
                    validate: Callable[[Any], list[str]]) -> Verdict:
    """Entailment judged by the model on the quoted lines, after the lexical check passed. A reply
    that fails the schema twice leaves the lexical verdict standing, with the reason recorded."""
    if not verdict.ok or not any(s.refs for s in verdict.sentences):
        return verdict
    messages = judge_prompt(verdict, contexts)
    problem = ""
    for _ in range(2):
        reply = ask(messages)
        data, problem = _json_object(reply)
        if data is not None:
            errors = validate(data)
            if not errors:
                unsupported = sorted({n for n in data["unsupported"] if 1 <= n <= len(verdict.sentences)})
                if not unsupported:
                    return Verdict(True, [], verdict.sentences, "lexical+model")
                reasons = [f"sentence {n}: the model judged the cited lines do not support it "
                           f"({str(data.get('reason', ''))[:120]})" for n in unsupported]
                return Verdict(False, reasons, verdict.sentences, "lexical+model")
            problem = "; ".join(errors)
        messages = [*messages, {"role": "assistant", "content": reply[:1500]},
                    {"role": "user", "content": f"That reply was rejected: {problem}. Reply with the JSON only."}]
    return Verdict(True, [f"model judgement unusable ({problem}); the lexical check stands"], verdict.sentences,
                   "lexical")


def _json_object(text: str) -> tuple[dict[str, Any] | None, str]:
    cleaned = re.sub(r"```(?:json)?", "", text)
    start, end = cleaned.find("{"), cleaned.rfind("}")
    if start < 0 or end <= start:
        return None, "the reply holds no JSON object"
    try:
        data = json.loads(cleaned[start:end + 1], strict=False)
    except ValueError as exc:
        return None, f"not valid JSON: {exc}"
    return (data, "") if isinstance(data, dict) else (None, "not a JSON object")
