"""The answer benchmark's rubric and metrics: plain functions over one run's raw records.

A record is what ``answer_bench.py`` writes per (question, configuration) to ``raw.jsonl``: the
answer text, every retrieved citation (path, lines, snippet text, whether the answer cites it),
``abstained`` (the engine's) and ``model_abstained`` (the model said "I don't know" and cited
nothing), latency and tokens. Nothing here calls a model or the index, so a run can be re-scored.

Rubric (one answer):

- **abstained** = the engine abstained (retrieval confidence under its threshold) or the model
  said it does not know and cited nothing.
- **citation support** = the product's own lexical verifier (``codex_core.llm.verify``) applied to
  the answer with the retrieved spans as context: a sentence that names code terms (backticked
  text, identifiers with ``_`` or camelCase, ``name()``, paths) is supported when every term occurs
  in the lines it cites (or, without a citation of its own, in those of the sentence it continues).
  Every citation in a supported sentence counts as supported, every one in an unsupported sentence
  as unsupported; citations in sentences that name no code term cannot be judged lexically and are
  counted apart (``unjudged``). Before the check, citations are attributed to the claims they close
  (``attribute_citations``: a citation after the full stop, or at the end of a multi-sentence line,
  backs the sentences before it on that line); the product's verifier only looks backwards.
  ``header_aware=True`` also counts the snippet header the model was shown (path and symbol) as part
  of the cited lines. It corrects two false negatives of the lexical check: a sub-chunk of a long
  function does not contain the function's name, and a file name with ``_`` (``error_store.py``)
  yields an identifier (``error_store``) that no line holds.
  Because this is the verifier the escalating configuration itself
  uses, an independent check is reported beside it: the share of cited spans that overlap a gold span.
- **contradicted** = a sentence that cites (or continues) retrieved lines and names a term they do
  not hold. A claim that cites nothing at all is counted (``uncited_claims``) but does not count as
  contradicted: no cited line speaks against it.
- **echoed** = the answer reproduces the prompt instead of answering: it holds the snippets'
  ``BEGIN/END SNIPPET`` framing, or at least 60 % of its lines (5 or more) are snippet lines verbatim.
  Every such line is "supported" by construction, so neither the verifier nor the citation rules
  catch it; the rubric does.
- **correct** = not abstained AND (a cited span overlaps a gold span OR the answer mentions at least
  half the question's key terms while citing a span in a gold file) AND no sentence contradicted
  AND not echoed.
- **correct in words** (stricter, for reading the first): not abstained, at least half the key terms
  mentioned, a gold file cited, nothing contradicted — an extractive answer that lists the right
  span without saying what it does is correct by the rubric but often not in words.
- **answerable** = retrieval put a gold file among the retrieved citations; abstention precision is
  the share of abstentions on questions that were not answerable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from codex_core.llm.citations import CitationCheck, parse_refs
from codex_core.llm.types import ContextChunk
from codex_core.llm.verify import split_sentences, verify_answer

_CITATION = re.compile(r"\[[^\[\]\n]*:\d+[^\[\]\n]*\]")


def attribute_citations(text: str) -> str:
    """The answer as one claim per line, each carrying the citations that back it.

    The product's verifier splits sentences (``verify.split_sentences``) and lets a sentence without
    a citation continue the one before it. Written answers also cite forwards: "... the handler.
    [a.go:3-9]" makes the citation a sentence of its own, and an extractive line "`Foo` in a.py: Does
    x. Then y [a.py:1-9]" cites at its end. So, on each line, a citation-only fragment joins the
    sentence before it, and sentences without a citation take those of the next cited sentence on
    the same line. Across lines the verifier's own backward rule applies.
    """
    claims: list[str] = []
    for line in text.splitlines():
        merged: list[str] = []
        for sentence in split_sentences(line):
            if merged and not _CITATION.sub("", sentence).strip(" .;,:"):
                merged[-1] = _with_refs(merged[-1], _CITATION.findall(sentence))
            else:
                merged.append(sentence)
        waiting: list[str] = []
        for sentence in merged:
            refs = _CITATION.findall(sentence)
            if refs:
                claims += [_with_refs(w, refs) for w in waiting]
                waiting = []
                claims.append(sentence)
            else:
                waiting.append(sentence)
        claims += waiting
    return "\n".join(claims)


def _with_refs(sentence: str, refs: list[str]) -> str:
    # Before the full stop: the splitter starts a new sentence at "[" after one.
    body = sentence.rstrip()
    end = body[-1] if body and body[-1] in ".!?" else ""
    return f"{body.rstrip('.!?')} {' '.join(refs)}{end}"


_SNIPPET_FRAME = re.compile(r"^\s*(?:BEGIN|END) SNIPPET \d+\b", re.MULTILINE)


def echoes_snippets(text: str, snippets: Iterable[str], *, share: float = 0.6, min_lines: int = 5) -> bool:
    """The answer reproduces the prompt instead of answering: it holds the snippets' BEGIN/END
    framing, or most of its lines (at least ``min_lines``) are lines of the snippets verbatim."""
    if _SNIPPET_FRAME.search(text):
        return True
    known = {line.strip() for snippet in snippets for line in snippet.splitlines() if len(line.strip()) > 8}
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 8]
    return len(lines) >= min_lines and sum(line in known for line in lines) >= share * len(lines)


@dataclass(frozen=True)
class Scored:
    """The rubric's verdict on one answer."""

    abstained: bool
    answerable: bool
    echoed: bool
    correct: bool
    correct_in_words: bool
    cites_gold_span: bool
    cites_gold_file: bool
    key_terms_hit: int
    key_terms_total: int
    citations_supported: int
    citations_unsupported: int
    citations_unjudged: int
    citations_on_gold: int
    citations_total: int
    contradicted: int
    uncited_claims: int
    outside_retrieved: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ref_of(citation: Mapping[str, Any]) -> str:
    return f"{citation['path']}:{citation['line_start']}-{citation['line_end']}"


def _span(ref: str) -> tuple[str, int, int]:
    path, lines = ref.rsplit(":", 1)
    start, _, end = lines.partition("-")
    return path, int(start), int(end or start)


def overlaps_gold(ref: str, gold: Sequence[Mapping[str, Any]]) -> bool:
    path, start, end = _span(ref)
    return any(g["path"] == path and start <= g["end_line"] and g["start_line"] <= end for g in gold)


def cited_refs(record: Mapping[str, Any]) -> list[str]:
    """What the answer cites: refs written in its text plus the citations flagged as cited, in order."""
    refs = list(dict.fromkeys(parse_refs(record.get("answer") or "")))
    refs += [ref_of(c) for c in record.get("citations", []) if c.get("cited_in_answer") and ref_of(c) not in refs]
    return refs


def mentions(text: str, term: str) -> bool:
    return term.lower() in text.lower()


def score_answer(record: Mapping[str, Any], question: Mapping[str, Any], *, header_aware: bool = False) -> Scored:
    gold = question["gold"]
    gold_files = {g["path"] for g in gold}
    citations = record.get("citations", [])
    retrieved = {ref_of(c): c for c in citations}
    answerable = any(c["path"] in gold_files for c in citations)
    abstained = bool(record.get("abstained") or record.get("model_abstained"))
    text = record.get("answer") or ""
    # An engine abstention lists its best guesses in brackets: they are not claims, so not citations.
    cited = [] if record.get("abstained") else cited_refs(record)
    outside = [r for r in cited if r not in retrieved]

    supported = unsupported = unjudged = contradicted = uncited = 0
    if cited and not abstained:
        contexts = contexts_of(record, header_aware=header_aware)
        check = CitationCheck(text=attribute_citations(text), cited=[r for r in cited if r in retrieved])
        verdict = verify_answer(check, contexts, confidence=None, escalate_below=1.0)
        seen_citation = False
        for sentence in verdict.sentences:
            if sentence.refs:
                seen_citation = True
                if not sentence.terms:
                    unjudged += len(sentence.refs)
                elif sentence.supported:
                    supported += len(sentence.refs)
                else:
                    unsupported += len(sentence.refs)
                    contradicted += 1
            elif sentence.terms and not sentence.supported:
                if seen_citation:
                    contradicted += 1  # continues a cited sentence and names what those lines lack
                else:
                    uncited += 1
        # Refs outside the retrieved set never reach the verifier: each is unsupported by definition.
        unsupported += len(outside)

    key_terms = question.get("key_terms", [])
    hits = sum(mentions(text, t) for t in key_terms) if not abstained else 0
    enough_terms = bool(key_terms) and hits * 2 >= len(key_terms)
    gold_span = any(overlaps_gold(r, gold) for r in cited)
    gold_file = any(_span(r)[0] in gold_files for r in cited)
    echoed = not abstained and echoes_snippets(text, (c.get("snippet", "") for c in citations))
    clean = contradicted == 0 and not outside and not echoed
    correct = not abstained and (gold_span or (enough_terms and gold_file)) and clean
    in_words = not abstained and enough_terms and gold_file and clean
    return Scored(
        abstained=abstained, answerable=answerable, echoed=echoed, correct=correct, correct_in_words=in_words,
        cites_gold_span=gold_span, cites_gold_file=gold_file, key_terms_hit=hits, key_terms_total=len(key_terms),
        citations_supported=supported, citations_unsupported=unsupported, citations_unjudged=unjudged,
        citations_on_gold=sum(overlaps_gold(r, gold) for r in cited), citations_total=len(cited),
        contradicted=contradicted, uncited_claims=uncited, outside_retrieved=outside,
    )


def contexts_of(record: Mapping[str, Any], *, header_aware: bool = False) -> list[ContextChunk]:
    """The retrieved spans of a recorded answer as the verifier's contexts (their recorded lines)."""
    return [ContextChunk(repo=record.get("repo", ""), path=c["path"], start_line=c["line_start"],
                         end_line=c["line_end"], symbol=c.get("symbol"), text=_lines(c, header_aware),
                         score=float(c.get("score") or 0.0))
            for c in record.get("citations", [])]


def _lines(citation: Mapping[str, Any], header_aware: bool) -> str:
    snippet = citation.get("snippet", "")
    if not header_aware:
        return snippet
    return "\n".join(filter(None, [citation["path"], citation.get("symbol"), snippet]))


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarize(records: Iterable[Mapping[str, Any]], questions: Mapping[str, Mapping[str, Any]]
              ) -> dict[str, dict[str, Any]]:
    """Per configuration: correctness, citation precision, abstention, latency and tokens."""
    by_config: dict[str, list[tuple[Mapping[str, Any], Scored]]] = {}
    aware: dict[str, list[Scored]] = {}
    errors: dict[str, int] = {}
    for record in records:
        if record.get("error"):  # the query raised: reported, not scored
            errors[record["config"]] = errors.get(record["config"], 0) + 1
            by_config.setdefault(record["config"], [])
            continue
        question = questions[record["id"]]
        by_config.setdefault(record["config"], []).append((record, score_answer(record, question)))
        aware.setdefault(record["config"], []).append(score_answer(record, question, header_aware=True))
    summary: dict[str, dict[str, Any]] = {}
    for config, rows in by_config.items():
        scored = [s for _, s in rows]
        n = len(scored)
        abstained = [s for s in scored if s.abstained]
        judged = sum(s.citations_supported + s.citations_unsupported for s in scored)
        cited = sum(s.citations_total for s in scored)
        latencies = [float(r["latency_ms"]) for r, _ in rows]
        tokens = [int(r.get("tokens", {}).get("total", 0)) for r, _ in rows]
        answered = n - len(abstained)
        summary[config] = {
            "n": n,
            "correct": sum(s.correct for s in scored),
            "correct_rate": _ratio(sum(s.correct for s in scored), n),
            "correct_in_words": sum(s.correct_in_words for s in scored),
            "correct_in_words_rate": _ratio(sum(s.correct_in_words for s in scored), n),
            "correct_of_answered": _ratio(sum(s.correct for s in scored), answered),
            "citations": cited,
            "citations_judged": judged,
            "citations_unjudged": sum(s.citations_unjudged for s in scored),
            "citation_precision": _ratio(sum(s.citations_supported for s in scored), judged),
            "citation_precision_header_aware": _ratio(
                sum(a.citations_supported for a in aware.get(config, [])),
                sum(a.citations_supported + a.citations_unsupported for a in aware.get(config, []))),
            "correct_header_aware": sum(a.correct for a in aware.get(config, [])),
            "citation_gold_overlap": _ratio(sum(s.citations_on_gold for s in scored), cited),
            "contradicted_answers": sum(1 for s in scored if s.contradicted),
            "echoed": sum(s.echoed for s in scored),
            "uncited_claims": sum(s.uncited_claims for s in scored),
            "outside_retrieved": sum(len(s.outside_retrieved) for s in scored),
            # Refs the model wrote that the citation check removed before anyone saw them.
            "refs_removed_by_check": sum(len(r.get("rejected_refs") or []) for r, _ in rows),
            "abstained": len(abstained),
            "abstained_engine": sum(1 for r, _ in rows if r.get("abstained")),
            "abstained_model": sum(1 for r, s in rows if s.abstained and not r.get("abstained")),
            "abstention_precision": _ratio(sum(not s.answerable for s in abstained), len(abstained)),
            "coverage": _ratio(answered, n),
            "unanswerable": sum(not s.answerable for s in scored),
            "abstained_when_unanswerable": _ratio(sum(s.abstained for s in scored if not s.answerable),
                                                  sum(not s.answerable for s in scored)),
            "latency_p50_ms": percentile(latencies, 50),
            "latency_p95_ms": percentile(latencies, 95),
            "tokens_per_answer": round(float(np.mean(tokens)), 1) if tokens else None,
            "tokens_p50": percentile(tokens, 50),
            "model_calls": sum(int(r.get("tokens", {}).get("calls", 0)) for r, _ in rows),
            "answered_by": _count(r.get("model", "") for r, _ in rows),
            "escalated": sum(1 for r, _ in rows if r.get("escalated")),
            "errors": errors.get(config, 0),
        }
    return summary


def _count(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def targets(summary: Mapping[str, Mapping[str, Any]], *, draft: str = "small", escalating: str | None = None,
            precision_floor: float = 0.95, latency_factor: float = 2.0) -> dict[str, Any]:
    """Issue #16's targets, each with the numbers that decide it. ``escalating``: default the
    configuration named ``escalating``, else the first whose name starts with it (``escalating-1.5b``)."""
    if escalating is None:
        escalating = "escalating" if "escalating" in summary else next(
            (c for c in summary if c.startswith("escalating")), "escalating")
    out: dict[str, Any] = {
        "citation_precision": {
            c: {"value": s["citation_precision"],
                "met": s["citation_precision"] is not None and s["citation_precision"] >= precision_floor}
            for c, s in summary.items()},
        "never_cites_unretrieved": {"outside_retrieved": sum(s["outside_retrieved"] for s in summary.values()),
                                    "met": all(s["outside_retrieved"] == 0 for s in summary.values())},
    }
    if draft in summary and escalating in summary:
        small, esc = summary[draft], summary[escalating]
        ratio = (esc["latency_p50_ms"] / small["latency_p50_ms"]) if small["latency_p50_ms"] else None
        out["escalation"] = {
            "config": escalating,
            "correct": {draft: small["correct"], escalating: esc["correct"]},
            "p50_ratio": round(ratio, 2) if ratio is not None else None,
            "met": esc["correct"] > small["correct"] and ratio is not None and ratio <= latency_factor,
        }
    return out


CITED_NOTHING, FAILED_VERIFICATION, SKIPPED = (
    "the draft cited nothing", "the draft failed verification", "the draft was skipped (confidence < τ)")


def hop_kind(reason: str) -> str:
    """Why the escalating configuration left its draft (the first hop's reason, as the answerer words it)."""
    for prefix, kind in (("answer cited no retrieved snippet", CITED_NOTHING),
                         ("verification failed", FAILED_VERIFICATION),
                         ("draft skipped", SKIPPED)):
        if reason.startswith(prefix):
            return kind
    return "other"


def first_hop_kind(record: Mapping[str, Any]) -> str | None:
    """``hop_kind`` of a recorded answer's first hop; None when the draft answered."""
    hops = record.get("fallbacks") or []
    return hop_kind(str(hops[0].get("reason", ""))) if hops else None


def escalated(record: Mapping[str, Any]) -> bool:
    """The draft went to the next model: its first hop names one. (``escalated`` in the record says a
    later model *answered*; it is false when the expert failed too and the answer is extractive.)"""
    hops = record.get("fallbacks") or []
    return bool(hops) and hops[0].get("to") not in ("extractive", hops[0].get("from"))


def paired(records: Iterable[Mapping[str, Any]], questions: Mapping[str, Mapping[str, Any]], *, draft: str,
           escalating: str) -> dict[str, Any]:
    """The two configurations question by question. When both send the same first call with the same
    seed (``answer_bench.py --seed``), an answer the escalating one did not escalate is the draft
    configuration's own answer (``not_escalated.identical``), so they differ only where it escalated:
    ``escalated_by`` says, per reason, how often that turned a wrong answer right or a right one wrong."""
    by_id: dict[str, dict[str, Mapping[str, Any]]] = {}
    for record in records:
        if not record.get("error"):
            by_id.setdefault(record["id"], {})[record["config"]] = record
    out: dict[str, Any] = {"draft": draft, "escalating": escalating, "questions": 0, "both_correct": 0,
                           "only_draft_correct": 0, "only_escalating_correct": 0, "neither": 0,
                           "not_escalated": {"identical": 0, "differ": 0}, "escalated_by": {}}
    for qid, rows in sorted(by_id.items()):
        if draft not in rows or escalating not in rows:
            continue
        first, second = rows[draft], rows[escalating]
        right = (score_answer(first, questions[qid]).correct, score_answer(second, questions[qid]).correct)
        out["questions"] += 1
        out[{(True, True): "both_correct", (True, False): "only_draft_correct",
             (False, True): "only_escalating_correct", (False, False): "neither"}[right]] += 1
        kind = first_hop_kind(second)
        if kind is not None:
            row = out["escalated_by"].setdefault(kind, {"n": 0, "only_escalating_correct": 0,
                                                        "only_draft_correct": 0})
            row["n"] += 1
            if right == (False, True):
                row["only_escalating_correct"] += 1
            elif right == (True, False):
                row["only_draft_correct"] += 1
        else:
            out["not_escalated"]["identical" if first.get("answer") == second.get("answer") else "differ"] += 1
    return out
