"""What τ (``[verify] escalate_below``) and the expert are worth, replayed from recorded answers.

Reads a ``raw.jsonl`` of ``answer_bench.py`` holding, for the same questions, the ``small``,
``expert-1.5b`` and ``extractive`` configurations, and replays draft -> verify -> expert -> extractive
without asking any model: below τ the draft is skipped and the expert answers; otherwise the small
model's recorded answer is the draft, checked by the product's lexical verifier
(``codex_core.llm.verify.verify_answer``) on the retrieved lines; a failed draft goes to the expert's
recorded answer, and an expert answer that fails the same check to the extractive one. Latency is
the sum of the recorded calls on the path taken. Use it on the tuning questions only: a τ chosen
here is then measured for real on held-out questions (docs/benchmarks.md §5).

Given a *seeded* run of ``small`` and ``escalating-1.5b`` (``answer_bench.py --seed``), it also gives
the correct answers of ``escalating-1.5b-evidence`` (``[verify] uncited = "extractive"``) without
asking anything: its draft is the same call, so where ``escalating-1.5b`` escalated a draft that
cited nothing it answers as ``small`` did (that draft, then the extractive answer); elsewhere it
answers as ``escalating-1.5b``. Given also ``expert-1.5b-x5`` (or another ``expert-1.5b-*``) asked alone with
the same seed on the questions ``escalating-1.5b`` escalated, it replays ``escalating-1.5b`` with that
expert in the 1.5B's place (``swap_expert``).

    .venv/bin/python benchmarks/answer/simulate_escalation.py benchmarks/answer/questions.jsonl \\
        benchmarks/answer/results/tune-tau/raw.jsonl
    .venv/bin/python benchmarks/answer/simulate_escalation.py benchmarks/answer/questions_heldout3.jsonl \\
        benchmarks/answer/results/heldout3-seeded/raw.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from score import (  # noqa: E402
    CITED_NOTHING,
    SKIPPED,
    cited_refs,
    contexts_of,
    escalated,
    first_hop_kind,
    score_answer,
)

from codex_core.llm.citations import CitationCheck  # noqa: E402
from codex_core.llm.verify import verify_answer  # noqa: E402

TAUS = (0.0, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1.01)
NEEDED = {"small", "expert-1.5b", "extractive"}


def passes(record: Mapping[str, Any]) -> bool:
    """The product's lexical verdict on a recorded model answer (an extractive one never passes)."""
    if record.get("error") or record["model"] == "extractive":
        return False
    contexts = contexts_of(record)
    check = CitationCheck(text=record["answer"], cited=cited_refs(record),
                          abstained=bool(record.get("model_abstained")))
    return verify_answer(check, contexts, confidence=record["confidence"], escalate_below=0.5).ok


def replay(rows: list[dict[str, dict[str, Any]]], questions: Mapping[str, Mapping[str, Any]], tau: float
           ) -> tuple[int, list[float], int]:
    """(correct, latency per question in s, expert asked) for draft -> verify -> expert -> extractive."""
    correct, latencies, asked = 0, [], 0
    for by_config in rows:
        small, expert, extractive = by_config["small"], by_config["expert-1.5b"], by_config["extractive"]
        seconds = small["latency_ms"] / 1000
        if small["abstained"]:  # the engine abstained: no model is asked in any configuration
            chosen = small
        elif (small["confidence"] or 0.0) < tau:
            seconds, asked = expert["latency_ms"] / 1000, asked + 1
            chosen = expert if passes(expert) else extractive
        elif passes(small):
            chosen = small
        else:
            seconds, asked = seconds + expert["latency_ms"] / 1000, asked + 1
            chosen = expert if passes(expert) else extractive
        correct += score_answer(chosen, questions[chosen["id"]]).correct
        latencies.append(seconds)
    return correct, latencies, asked


def uncited_to_evidence(rows: list[dict[str, dict[str, Any]]], questions: Mapping[str, Mapping[str, Any]]
                        ) -> tuple[int, int, int]:
    """(small, escalating-1.5b, escalating-1.5b-evidence) correct answers, from a seeded run of the first two."""
    small = escalating = evidence = 0
    for by_config in rows:
        draft, chained = by_config["small"], by_config["escalating-1.5b"]
        right = (score_answer(draft, questions[draft["id"]]).correct,
                 score_answer(chained, questions[chained["id"]]).correct)
        cited_nothing = first_hop_kind(chained) == CITED_NOTHING
        small, escalating = small + right[0], escalating + right[1]
        evidence += right[0] if cited_nothing else right[1]
    return small, escalating, evidence


def swap_expert(rows: list[dict[str, dict[str, Any]]], questions: Mapping[str, Mapping[str, Any]],
                expert: str) -> tuple[int, int, list[float], list[float]]:
    """(escalating-1.5b correct, correct with ``expert`` in its place, small's latencies, the swapped
    chain's latencies), from a seeded run of ``small``, ``escalating-1.5b`` and ``extractive`` plus
    ``expert`` asked alone (same seed) on the questions escalating-1.5b escalated. The draft is the
    same call, so a draft it kept stays; an escalated one goes to ``expert``'s recorded answer, or to
    the extractive one when that answer fails the same lexical check."""
    before = after = 0
    small_s, swapped_s = [], []
    for by_config in rows:
        draft, escalating = by_config["small"], by_config["escalating-1.5b"]
        before += score_answer(escalating, questions[escalating["id"]]).correct
        seconds = draft["latency_ms"] / 1000
        chosen = escalating
        if escalated(escalating):
            other = by_config[expert]
            seconds = (0.0 if first_hop_kind(escalating) == SKIPPED else seconds) + other["latency_ms"] / 1000
            chosen = other if passes(other) else by_config["extractive"]
        after += score_answer(chosen, questions[chosen["id"]]).correct
        small_s.append(draft["latency_ms"] / 1000)
        swapped_s.append(seconds)
    return before, after, small_s, swapped_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", type=Path)
    parser.add_argument("raw", type=Path, nargs="+")
    args = parser.parse_args(argv)
    questions = {q["id"]: q for q in map(json.loads, args.questions.read_text().splitlines()) if q}
    by_id: dict[str, dict[str, dict[str, Any]]] = {}
    for raw in args.raw:
        for line in raw.read_text().splitlines():
            record = json.loads(line)
            if record["id"] in questions:
                by_id.setdefault(record["id"], {})[record["config"]] = record
    seeded = [r for r in by_id.values() if {"small", "escalating-1.5b"} <= set(r)]
    if seeded:
        small, escalating, evidence = uncited_to_evidence(seeded, questions)
        print(f"{len(seeded)} questions (a seeded run): small {small}, escalating-1.5b {escalating}, "
              f"escalating-1.5b-evidence {evidence} (replayed)")
    for expert in sorted({c for r in by_id.values() for c in r} - NEEDED - {"escalating-1.5b"}):
        if not expert.startswith("expert-1.5b-"):
            continue
        paired = [r for r in seeded if "extractive" in r and (expert in r or not escalated(r["escalating-1.5b"]))]
        if len(paired) < len(seeded):
            print(f"  {expert}: {len(seeded) - len(paired)} escalated questions lack its answer: not replayed")
            continue
        before, after, small_s, swapped_s = swap_expert(paired, questions, expert)
        p50, small_p50 = statistics.median(swapped_s), statistics.median(small_s)
        print(f"  escalating-1.5b with {expert} as the expert: correct {after} (escalating-1.5b {before}); "
              f"P50 {p50:.1f} s = {p50 / small_p50:.2f}x small's (latency: the recorded calls on the path taken)")
    rows = [r for r in by_id.values() if NEEDED <= set(r)]
    if not rows:
        return 0
    small_p50 = statistics.median(r["small"]["latency_ms"] / 1000 for r in rows)
    print(f"{len(rows)} questions with {', '.join(sorted(NEEDED))} recorded")
    for config in sorted(NEEDED):
        right = sum(score_answer(r[config], questions[r[config]["id"]]).correct for r in rows)
        p50 = statistics.median(r[config]["latency_ms"] / 1000 for r in rows)
        print(f"  {config:<12} correct {right:3d}   P50 {p50:5.1f} s")
    print("draft -> verify -> expert -> extractive, replayed:")
    for tau in TAUS:
        right, latencies, asked = replay(rows, questions, tau)
        p50 = statistics.median(latencies)
        print(f"  τ {tau:4.2f}: correct {right:3d}   P50 {p50:5.1f} s ({p50 / small_p50:.2f}x small)   "
              f"expert asked {asked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
