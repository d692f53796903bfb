"""Is the draft model's own certainty a signal for escalating? Its token log-probabilities, probed.

Runs ``answer_bench.py`` (same arguments) with every non-streaming OpenAI-compatible chat call also
asking for ``logprobs``; each recorded call gets ``logprobs: {mean, min, p10, n}`` over its completion
tokens. With ``--seed`` the answers are the very ones of an earlier seeded run (asking for logprobs does
not change what is sampled: the 67 tuning drafts came back identical to ``results/tune-seeded``).
``--analyze QUESTIONS RAW`` then says how well each statistic separates right drafts from wrong
ones (AUC: 0.5 = no signal).

Made ``results/probe-logprobs/`` on the 67 tuning questions (the ``small`` configuration, seed 7):
AUC 0.52 (mean), 0.54 (min), 0.51 (10th percentile) — no signal, so no escalation on it was built.

    .venv/bin/python benchmarks/answer/probe_logprobs.py --home DIR --repos marshmallow,gin,ky \\
        --configs small --llm-url http://127.0.0.1:8096 --seed 7 --label probe-logprobs
    .venv/bin/python benchmarks/answer/probe_logprobs.py --analyze benchmarks/answer/questions.jsonl \\
        benchmarks/answer/results/probe-logprobs/raw.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from score import score_answer  # noqa: E402

STATISTICS = ("mean", "min", "p10")


def summarize(logprobs: list[float]) -> dict[str, Any] | None:
    if not logprobs:
        return None
    ordered = sorted(logprobs)
    return {"mean": statistics.fmean(logprobs), "min": ordered[0], "p10": ordered[len(ordered) // 10],
            "n": len(logprobs)}


def auc(pairs: list[tuple[float, bool]]) -> float | None:
    """P(a right draft's value > a wrong one's), ties counting half."""
    right = [v for v, ok in pairs if ok]
    wrong = [v for v, ok in pairs if not ok]
    if not right or not wrong:
        return None
    return sum((r > w) + 0.5 * (r == w) for r in right for w in wrong) / (len(right) * len(wrong))


def analyze(questions_path: Path, raw: Path) -> dict[str, Any]:
    questions = {q["id"]: q for q in map(json.loads, questions_path.read_text().splitlines()) if q}
    rows = []
    for record in map(json.loads, raw.read_text().splitlines()):
        first = next((c["logprobs"] for c in record.get("calls", []) if c.get("logprobs")), None)
        if first is not None and record["id"] in questions:
            rows.append((first, score_answer(record, questions[record["id"]]).correct))
    return {"drafts": len(rows), "correct": sum(ok for _, ok in rows),
            **{f"auc_{name}": auc([(lp[name], ok) for lp, ok in rows]) for name in STATISTICS}}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--analyze"]:
        print(json.dumps(analyze(Path(argv[1]), Path(argv[2])), indent=1))
        return 0
    import answer_bench

    from codex_core.llm import backends

    last: dict[str, Any] = {}
    request = backends.OpenAICompatibleBackend._request

    def with_logprobs(self: Any, method: str, url: str, timeout: float, *, json: dict[str, Any] | None = None) -> Any:
        asked = json is not None and url.endswith("/chat/completions") and not json.get("stream")
        response = request(self, method, url, timeout, json={**json, "logprobs": True} if asked and json else json)
        if asked:
            try:
                tokens = response.json()["choices"][0].get("logprobs", {}).get("content") or []
                last["logprobs"] = summarize([t["logprob"] for t in tokens])
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                last["logprobs"] = None
        return response

    chat = answer_bench.CountingBackend.chat

    def counted(self: Any, model: str, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        last.pop("logprobs", None)
        reply = chat(self, model, messages, **kwargs)
        self.calls[-1]["logprobs"] = last.get("logprobs")
        return reply

    backends.OpenAICompatibleBackend._request = with_logprobs  # type: ignore[method-assign]
    answer_bench.CountingBackend.chat = counted  # type: ignore[method-assign]
    return answer_bench.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
