"""Is the escalating configuration correct more often than the small one, over several seeded runs?

Each run's ``raw.jsonl`` holds both configurations' answers to the same questions, seeded so they
differ only where the escalating one escalated (``answer_bench.py --seed``). Per run and in total this
prints the correct counts and the discordant pairs (only one of the two correct), and an exact
two-sided sign test on those pairs: how likely a split at least this uneven is if escalation turned
answers right and wrong equally often. Runs of the same questions (e.g. one set under two in-file
orders) are not independent: pass one of them.

    .venv/bin/python benchmarks/answer/paired_totals.py benchmarks/answer/results/heldout8 ... \\
        --draft small --escalating escalating-1.5b-evidence
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from math import comb
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from score import paired  # noqa: E402


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p of ``wins`` vs ``losses`` discordant pairs at p = 0.5 (1.0 with none)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(max(wins, losses), n + 1)) / 2**n
    return min(1.0, 2 * tail)


def questions_by_id(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                q = json.loads(line)
                out[q["id"]] = q
    return out


def totals(runs: Mapping[str, Sequence[Mapping[str, Any]]], questions: Mapping[str, Mapping[str, Any]], *,
           draft: str, escalating: str) -> list[dict[str, Any]]:
    """One row per run and a last row "total": questions, correct per configuration, discordant pairs, p."""
    rows = []
    for name, records in runs.items():
        pair = paired(records, questions, draft=draft, escalating=escalating)
        rows.append({"run": name, "questions": pair["questions"],
                     draft: pair["both_correct"] + pair["only_draft_correct"],
                     escalating: pair["both_correct"] + pair["only_escalating_correct"],
                     "only_escalating": pair["only_escalating_correct"], "only_draft": pair["only_draft_correct"]})
    total = {"run": "total", **{k: sum(r[k] for r in rows) for k in
                                ("questions", draft, escalating, "only_escalating", "only_draft")}}
    for row in [*rows, total]:
        row["p"] = round(sign_test(row["only_escalating"], row["only_draft"]), 4)
    return [*rows, total]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="result directories with a raw.jsonl")
    parser.add_argument("--draft", default="small")
    parser.add_argument("--escalating", default="escalating-1.5b-evidence")
    args = parser.parse_args(argv)
    questions = questions_by_id(sorted(HERE.glob("questions*.jsonl")))
    runs = {run.name: [json.loads(line) for line in (run / "raw.jsonl").read_text().splitlines() if line.strip()]
            for run in args.runs}
    rows = totals(runs, questions, draft=args.draft, escalating=args.escalating)
    print(f"| run | questions | {args.draft} | {args.escalating} | only {args.escalating} | only {args.draft} "
          "| sign test p |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['questions']} | {r[args.draft]} | {r[args.escalating]} | {r['only_escalating']} "
              f"| {r['only_draft']} | {r['p']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
