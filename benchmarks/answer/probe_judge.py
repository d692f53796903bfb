"""Can a model judge a draft? Ask it, for each recorded small-configuration draft, whether the cited code
answers the question, and keep its raw verdict beside the draft's rubric score.

Made ``results/probe-1.5b-judge/raw.jsonl`` (Qwen2.5-Coder-1.5B-Instruct on a llama-server, the
tuning questions' drafts of ``results/compact``; stopped after 14 drafts: 14 "yes", 9 of them on
wrong drafts). One line per draft: id, the draft's rubric score, the reply, seconds, prompt tokens.

    .venv/bin/python benchmarks/answer/probe_judge.py --url http://127.0.0.1:8097 \\
        --raw benchmarks/answer/results/compact/raw.jsonl --questions benchmarks/answer/questions.jsonl \\
        --out /tmp/judge.jsonl [--limit 14]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from score import cited_refs, ref_of, score_answer  # noqa: E402

from codex_core.llm.backends import make_backend  # noqa: E402

SYSTEM = 'You check answers about code. Reply with JSON only: {"verdict": "yes"} or {"verdict": "no"}.'


def judge_messages(record: dict) -> list[dict[str, str]]:
    by_ref = {ref_of(c): c for c in record["citations"]}
    quoted = "\n\n".join(f"{c['path']}:{c['line_start']}-{c['line_end']}\n{c['snippet']}"
                         for c in (by_ref[r] for r in cited_refs(record) if r in by_ref))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Question: {record['question']}\n\nProposed answer: {record['answer']}\n\n"
                                        f"The code the answer cites:\n{quoted}\n\nDoes the cited code answer the "
                                        "question, as the proposed answer says? yes or no."}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--questions", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    questions = {q["id"]: q for q in map(json.loads, args.questions.read_text().splitlines())}
    backend = make_backend("openai", args.url, connect_timeout=1.0)
    drafts = [r for r in map(json.loads, args.raw.read_text().splitlines())
              if r["config"] == "small" and r["model"] != "extractive" and not r["abstained"] and r["id"] in questions]
    with args.out.open("w") as out:
        for record in drafts[: args.limit]:
            started = time.perf_counter()
            reply = backend.chat("judge", judge_messages(record), max_tokens=12, temperature=0.0,
                                 context_window=4096, timeout=120)
            out.write(json.dumps({"id": record["id"], "correct": score_answer(record, questions[record["id"]]).correct,
                                  "reply": reply.content, "seconds": round(time.perf_counter() - started, 2),
                                  "pt": reply.prompt_tokens}) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
