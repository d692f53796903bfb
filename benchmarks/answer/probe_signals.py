"""Which signal tells a wrong draft from a right one? Escalation can only help where it does.

For every draft of the ``small`` configuration in one or more ``raw.jsonl`` (the model answered: not
the engine's abstention, not the extractive fallback), each candidate signal is computed from the
record alone and its AUC against the rubric's verdict is printed (0.5 = no signal; a signal that
works would sit far from it). Nothing is asked of any model; the embedding signals use the product's
own embedder (all-MiniLM-L6-v2 from its PyPI package).

- ``confidence``: the engine's retrieval confidence (what τ thresholds);
- ``cited_rank``: minus the best retrieval rank the draft cites (citing rank 1 scores highest);
- ``question_terms``: the share of the question's tokens (the lexical index's own ``code_tokens``)
  found in the cited snippets — does the cited code speak of what was asked;
- ``q_answer_sim``: cosine of the question and the draft (MiniLM);
- ``cited_vs_best_sim``: cosine of the question and the best cited snippet minus that of the question
  and the best shown snippet (MiniLM; 0 = the draft cites the snippet most like the question);
- ``logprob_mean`` / ``logprob_min``: the draft's token log-probabilities, where the run recorded
  them (``probe_logprobs.py``).

    .venv/bin/python benchmarks/answer/probe_signals.py benchmarks/answer/questions.jsonl \\
        benchmarks/answer/results/tune-seeded/raw.jsonl --logprobs benchmarks/answer/results/probe-logprobs/raw.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from probe_logprobs import auc  # noqa: E402
from score import CITED_NOTHING, first_hop_kind, overlaps_gold, ref_of, score_answer  # noqa: E402

from codex_core.lexical import code_tokens  # noqa: E402

SHOWN = 3  # snippets the compact prompt shows the draft model
SHOWN_LINES = 40
def shown_text(citation: Mapping[str, Any]) -> str:
    lines = citation.get("snippet", "").splitlines()[:SHOWN_LINES]
    return "\n".join([f"{citation['path']} {citation.get('symbol') or ''}", *lines])


def lexical_signals(record: Mapping[str, Any], question: str) -> dict[str, float]:
    citations = record["citations"]
    cited = [i for i, c in enumerate(citations) if c.get("cited_in_answer")]
    asked = set(code_tokens(question))
    held = set().union(*(code_tokens(shown_text(citations[i])) for i in cited)) if cited else set()
    return {"confidence": float(record.get("confidence") or 0.0),
            "cited_rank": -float(min(cited)) if cited else -float(len(citations)),
            "question_terms": len(asked & held) / len(asked) if asked else 0.0}


def embedding_signals(records: Sequence[Mapping[str, Any]], questions: Mapping[str, Mapping[str, Any]]
                      ) -> list[dict[str, float]]:
    from codex_core.embedding import SentenceTransformerEmbedder, packaged_minilm_path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    embedder = SentenceTransformerEmbedder(packaged_minilm_path())
    out = []
    for record in records:
        shown = record["citations"][:SHOWN]
        vectors = embedder.embed([questions[record["id"]]["question"], record["answer"],
                                  *(shown_text(c) for c in shown)])
        question, answer, snippets = vectors[0], vectors[1], vectors[2:]
        similarity = snippets @ question
        cited = [i for i, c in enumerate(shown) if c.get("cited_in_answer")]
        out.append({"q_answer_sim": float(answer @ question),
                    "cited_vs_best_sim": float(max(similarity[cited]) - similarity.max()) if cited else -1.0})
    return out


def gold_position(record: Mapping[str, Any], question: Mapping[str, Any]) -> str:
    """Where the gold span sat among the retrieved snippets: shown to the draft (top 3), retrieved
    but not shown (rank 4-5), only its file retrieved, or nothing of it."""
    spans = [i for i, c in enumerate(record["citations"]) if overlaps_gold(ref_of(c), question["gold"])]
    if spans:
        return "gold span shown (top 3)" if spans[0] < SHOWN else "gold span at rank 4-5"
    files = {g["path"] for g in question["gold"]}
    return "gold file only" if any(c["path"] in files for c in record["citations"]) else "nothing of the gold"


def wrong_answer_sources(paths: Sequence[Path], questions: Mapping[str, Any]) -> dict[str, Counter[str]]:
    """Where the gold span sat for every wrong ``small`` answer, and for every draft ``escalating-1.5b``
    escalated because it cited nothing (what the labelled evidence and the expert were shown)."""
    wrong: Counter[str] = Counter()
    uncited: Counter[str] = Counter()
    for path in paths:
        for record in map(json.loads, path.read_text().splitlines()):
            question = questions.get(record["id"])
            if question is None or record.get("error"):
                continue
            if record["config"] == "small" and not score_answer(record, question).correct:
                wrong[gold_position(record, question)] += 1
            if record["config"] == "escalating-1.5b" and first_hop_kind(record) == CITED_NOTHING:
                uncited[gold_position(record, question)] += 1
    return {"wrong small answers": wrong, "drafts escalated for citing nothing": uncited}


def drafts(paths: Sequence[Path], questions: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        for record in map(json.loads, path.read_text().splitlines()):
            if (record.get("config") == "small" and record["id"] in questions and not record.get("error")
                    and not record.get("abstained") and record.get("model") != "extractive"):
                out.append(record)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", type=Path, nargs="+", help="question files, then raw.jsonl files")
    parser.add_argument("--logprobs", type=Path, default=None, help="a probe_logprobs.py raw.jsonl of the same drafts")
    parser.add_argument("--no-embeddings", action="store_true")
    args = parser.parse_args(argv)
    question_files = [p for p in args.questions if p.name.startswith("questions")]
    raws = [p for p in args.questions if p not in question_files]
    questions = {q["id"]: q for path in question_files for q in map(json.loads, path.read_text().splitlines()) if q}
    records = drafts(raws, questions)
    rows = [{**lexical_signals(r, questions[r["id"]]["question"])} for r in records]
    if not args.no_embeddings:
        for row, extra in zip(rows, embedding_signals(records, questions), strict=True):
            row.update(extra)
    if args.logprobs:
        by_answer = {(r["id"], r["answer"]): next((c["logprobs"] for c in r.get("calls", []) if c.get("logprobs")),
                                                  None)
                     for r in map(json.loads, args.logprobs.read_text().splitlines())}
        for row, record in zip(rows, records, strict=True):
            logprobs = by_answer.get((record["id"], record["answer"]))  # the same draft only (a seeded run)
            if logprobs:
                row |= {"logprob_mean": logprobs["mean"], "logprob_min": logprobs["min"]}
    for what, counts in wrong_answer_sources(raws, questions).items():
        print(f"{what}: {sum(counts.values())} — " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    right = [score_answer(r, questions[r["id"]]).correct for r in records]
    print(f"{len(records)} drafts, {sum(right)} correct by the rubric")
    for name in dict.fromkeys(k for row in rows for k in row):
        pairs = [(row[name], ok) for row, ok in zip(rows, right, strict=True) if name in row]
        value = auc(pairs)
        print(f"  {name:<18} AUC {value:.3f} over {len(pairs)} drafts" if value is not None else f"  {name}: -")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
