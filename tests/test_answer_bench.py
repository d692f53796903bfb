"""The answer benchmark's scoring on hand-made answers, and its question file.

The scoring tests use records shaped exactly as ``benchmarks/answer_bench.py`` writes them (no
model, no index: the rubric is a pure function of the record). The question file is checked
against the pinned commits through git when the repositories' mirrors exist on this machine
(``ANSWER_BENCH_REPOS`` or ``/work/locrepos``); CI has none, so that part skips and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS / "answer"))

from score import paired, score_answer, summarize, targets  # noqa: E402

QUESTIONS = BENCHMARKS / "answer" / "questions.jsonl"
HELDOUT = BENCHMARKS / "answer" / "questions_heldout.jsonl"  # written after every prompt/verifier change
HELDOUT2 = BENCHMARKS / "answer" / "questions_heldout2.jsonl"  # written after the held-out run had been read
# Written by a session that saw no retrieval or answer for koa and axum, before the seeded run.
HELDOUT3 = BENCHMARKS / "answer" / "questions_heldout3.jsonl"
# Written by another such session for zustand and jackson-core after the seeded runs of the others.
HELDOUT4 = BENCHMARKS / "answer" / "questions_heldout4.jsonl"
# Written by another such session for commander and viper, two repositories nothing was ever fitted on
# (not in the localization benchmark: benchmarks/answer/repos.json), before any answer on them was read.
HELDOUT5 = BENCHMARKS / "answer" / "questions_heldout5.jsonl"
# Written by four such sessions for structlog, chi, express and anyhow (also only in answer/repos.json), one
# repository each, from the code at the pinned commit alone, before the repositories were ingested here.
HELDOUT6 = BENCHMARKS / "answer" / "questions_heldout6.jsonl"
# Written the same way for attrs, pflag, pino and walkdir, to test the in-file chunk order chosen on the older sets.
HELDOUT7 = BENCHMARKS / "answer" / "questions_heldout7.jsonl"
HELDOUT8 = BENCHMARKS / "answer" / "questions_heldout8.jsonl"
HELDOUT9 = BENCHMARKS / "answer" / "questions_heldout9.jsonl"
SETS = (QUESTIONS, HELDOUT, HELDOUT2, HELDOUT3, HELDOUT4, HELDOUT5, HELDOUT6, HELDOUT7, HELDOUT8, HELDOUT9)
REPOS_JSONS = (BENCHMARKS / "localization" / "repos.json", BENCHMARKS / "answer" / "repos.json")


def _pinned() -> dict[str, str]:
    return {r["name"]: r["commit"] for path in REPOS_JSONS for r in json.loads(path.read_text())["repos"]}
PARSE = """def parse_line(line):
    key, _, value = line.partition("=")
    return key.strip(), value.strip()
"""
HELPER = """def load_config(path):
    return dict(parse_line(l) for l in open(path))
"""
QUESTION = {
    "id": "q1", "repo": "demo", "kind": "how", "question": "how is a config line parsed?",
    "gold": [{"path": "app/config.py", "start_line": 10, "end_line": 12}],
    "key_terms": ["parse_line", "partition"],
}


def citation(path: str, start: int, end: int, snippet: str, cited: bool) -> dict:
    return {"path": path, "line_start": start, "line_end": end, "symbol": None, "score": 0.5,
            "cited_in_answer": cited, "snippet": snippet}


def record(answer: str, *, cited: tuple[bool, bool] = (True, False), abstained: bool = False,
           model_abstained: bool = False, config: str = "small", latency_ms: float = 1000.0,
           tokens: int = 0) -> dict:
    return {
        "id": "q1", "repo": "demo", "kind": "how", "config": config, "answer": answer,
        "abstained": abstained, "model_abstained": model_abstained, "model": "m", "escalated": False,
        "citations": [citation("app/config.py", 10, 12, PARSE, cited[0]),
                      citation("app/loader.py", 1, 2, HELPER, cited[1])],
        "latency_ms": latency_ms, "tokens": {"total": tokens, "calls": 1 if tokens else 0},
    }


def test_a_supported_answer_citing_the_gold_span_is_correct() -> None:
    scored = score_answer(record("`parse_line` splits at the first `=` with `partition` [app/config.py:10-12]."),
                          QUESTION)
    assert scored.correct and scored.correct_in_words
    assert (scored.citations_supported, scored.citations_unsupported) == (1, 0)
    assert scored.citations_on_gold == 1 and scored.outside_retrieved == []


def test_a_claim_the_cited_lines_do_not_hold_makes_the_answer_wrong() -> None:
    # Cites the gold span, but names a function those lines do not contain.
    scored = score_answer(record("`parse_line` calls `json.loads` on the line [app/config.py:10-12]."), QUESTION)
    assert not scored.correct
    assert (scored.citations_supported, scored.citations_unsupported, scored.contradicted) == (0, 1, 1)


def test_a_sentence_continuing_a_citation_is_checked_against_its_lines() -> None:
    answer = "`parse_line` uses `partition` [app/config.py:10-12]. Then `yaml_load` reads the file."
    scored = score_answer(record(answer), QUESTION)
    assert scored.contradicted == 1 and not scored.correct


def test_key_terms_and_a_gold_file_count_without_the_exact_span() -> None:
    q = {**QUESTION, "gold": [{"path": "app/loader.py", "start_line": 40, "end_line": 50}]}
    answer = "`load_config` calls `parse_line` on every line [app/loader.py:1-2]; partition splits it."
    scored = score_answer(record(answer, cited=(False, True)), q)
    assert not scored.cites_gold_span and scored.cites_gold_file
    assert scored.key_terms_hit == 2 and scored.correct


def test_a_citation_outside_the_retrieved_spans_is_flagged_and_wrong() -> None:
    scored = score_answer(record("`parse_line` is in [app/other.py:1-3] and [app/config.py:10-12]."), QUESTION)
    assert scored.outside_retrieved == ["app/other.py:1-3"]
    assert not scored.correct and scored.citations_unsupported >= 1


def test_an_engine_abstention_cites_nothing_even_when_it_lists_guesses() -> None:
    answer = "I'm not confident enough to answer (confidence 0.10 < 0.35). Best guesses: [app/config.py:10-12]"
    scored = score_answer(record(answer, cited=(False, False), abstained=True), QUESTION)
    assert scored.abstained and not scored.correct
    assert scored.citations_total == 0 and scored.answerable


def test_metrics_per_configuration() -> None:
    good = "`parse_line` uses `partition` [app/config.py:10-12]."
    bad = "`parse_line` calls `json.loads` [app/config.py:10-12]."
    unanswerable = {**QUESTION, "id": "q2", "gold": [{"path": "app/elsewhere.py", "start_line": 1, "end_line": 5}]}
    records = [
        record(good, config="small", latency_ms=1000, tokens=900),
        {**record(bad, config="small", latency_ms=3000, tokens=1100), "id": "q2"},
        record(good, config="escalating", latency_ms=1500, tokens=1200),
        {**record("I don't know.", cited=(False, False), model_abstained=True, config="escalating",
                  latency_ms=2500, tokens=800), "id": "q2"},
    ]
    summary = summarize(records, {"q1": QUESTION, "q2": unanswerable})
    small, esc = summary["small"], summary["escalating"]
    assert (small["correct"], esc["correct"]) == (1, 1)
    assert small["citation_precision"] == 0.5 and esc["citation_precision"] == 1.0
    # The escalating configuration abstained once, on the question retrieval could not answer.
    assert esc["abstained"] == 1 and esc["abstention_precision"] == 1.0 and esc["coverage"] == 0.5
    assert small["abstention_precision"] is None and small["coverage"] == 1.0
    assert small["latency_p50_ms"] == 2000.0 and small["tokens_per_answer"] == 1000.0
    verdict = targets(summary)
    assert verdict["citation_precision"]["small"]["met"] is False
    assert verdict["citation_precision"]["escalating"]["met"] is True
    assert verdict["escalation"]["met"] is False  # equally often correct: not *more* often
    assert verdict["never_cites_unretrieved"]["met"] is True


# ---------------------------------------------------------------- the question file


def _questions(path: Path = QUESTIONS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("path", "at_least", "repos", "per_repo_min"),
                         [(QUESTIONS, 60, 3, 20), (HELDOUT, 30, 2, 15), (HELDOUT2, 30, 2, 15), (HELDOUT3, 30, 2, 15),
                          (HELDOUT4, 30, 2, 15), (HELDOUT5, 30, 2, 15), (HELDOUT6, 60, 4, 15),
                          (HELDOUT7, 60, 4, 15), (HELDOUT8, 60, 4, 15),
                          (HELDOUT9, 60, 4, 15)],
                         ids=["questions", "heldout", "heldout2", "heldout3", "heldout4", "heldout5", "heldout6",
                              "heldout7", "heldout8", "heldout9"])
def test_question_file_is_complete_and_well_formed(path: Path, at_least: int, repos: int, per_repo_min: int) -> None:
    questions = _questions(path)
    assert len(questions) >= at_least
    assert len({q["id"] for q in questions}) == len(questions)
    per_repo = Counter(q["repo"] for q in questions)
    assert len(per_repo) == repos and min(per_repo.values()) >= per_repo_min, per_repo
    # Held out means held out: no repository of one set is in another.
    for other in SETS:
        if other != path:
            assert not {q["repo"] for q in questions} & {q["repo"] for q in _questions(other)}, other.name
    assert set(per_repo) <= set(_pinned())
    for repo in per_repo:
        kinds = Counter(q["kind"] for q in questions if q["repo"] == repo)
        assert set(kinds) == {"where", "how", "why"}, (repo, kinds)
    for q in questions:
        assert q["question"].strip() and q["reference"].strip() and q["key_terms"], q["id"]
        for span in q["gold"]:
            assert 1 <= span["start_line"] <= span["end_line"], q["id"]


def _mirrors() -> Path | None:
    root = Path(os.environ.get("ANSWER_BENCH_REPOS", "/work/locrepos"))
    return root if root.is_dir() else None


@pytest.mark.skipif(_mirrors() is None, reason="the pinned repositories' mirrors are not on this machine "
                                               "(set ANSWER_BENCH_REPOS to a folder of clones named as in repos.json)")
def test_every_gold_span_exists_at_the_pinned_commit() -> None:
    root = _mirrors()
    assert root is not None
    commits = _pinned()
    lengths: dict[tuple[str, str], int] = {}
    questions = [q for path in SETS for q in _questions(path)]
    present = {q["repo"] for q in questions if (root / q["repo"]).exists()}
    if not present:
        pytest.skip(f"no clone of a pinned repository in {root}")
    for q in [q for q in questions if q["repo"] in present]:  # the repositories whose clones are here
        clone = root / q["repo"]
        for span in q["gold"]:
            key = (q["repo"], span["path"])
            if key not in lengths:
                shown = subprocess.run(["git", "-C", str(clone), "show", f"{commits[q['repo']]}:{span['path']}"],
                                       capture_output=True, text=True)
                assert shown.returncode == 0, f"{q['id']}: {span['path']} not at {commits[q['repo']]}: {shown.stderr}"
                lengths[key] = len(shown.stdout.splitlines())
            assert span["end_line"] <= lengths[key], f"{q['id']}: {span} beyond {lengths[key]} lines"


def test_a_seed_pairs_the_configurations_that_share_their_first_call() -> None:
    """With --seed, small and escalating-1.5b send the very same first call (same model entry, same
    seed), so they can differ only where escalating-1.5b escalates; without it no seed is sent."""
    sys.path.insert(0, str(BENCHMARKS))
    from answer_bench import llm_configs

    seeded = llm_configs("http://127.0.0.1:1", 60.0, "http://127.0.0.1:2", seed=7)
    small, escalating = seeded["small"]["models"], seeded["escalating-1.5b"]["models"]
    assert escalating[0] == small[0] and small[0]["seed"] == 7
    assert all(m["seed"] == 7 for c in seeded.values() for m in c["models"])
    assert not any("seed" in m for c in llm_configs("http://127.0.0.1:1", 60.0).values() for m in c["models"])


def test_the_paired_view_counts_what_escalation_changed_and_whether_the_drafts_were_shared() -> None:
    good = "`parse_line` uses `partition` [app/config.py:10-12]."
    bad = "`parse_line` calls `json.loads` [app/config.py:10-12]."
    q2 = {**QUESTION, "id": "q2"}
    escalated = {**record(good, config="escalating-1.5b"), "id": "q2",
                 "fallbacks": [{"from": "draft", "to": "expert", "reason": "verification failed: sentence 1 names x"}]}
    records = [record(good, config="small"), record(good, config="escalating-1.5b"),
               {**record(bad, config="small"), "id": "q2"}, escalated]
    pair = paired(records, {"q1": QUESTION, "q2": q2}, draft="small", escalating="escalating-1.5b")
    assert (pair["questions"], pair["both_correct"], pair["only_escalating_correct"]) == (2, 1, 1)
    assert pair["not_escalated"] == {"identical": 1, "differ": 0}
    assert pair["escalated_by"] == {"the draft failed verification": {"n": 1, "only_escalating_correct": 1,
                                                                      "only_draft_correct": 0}}
    verdict = targets(summarize(records, {"q1": QUESTION, "q2": q2}))
    assert verdict["escalation"]["config"] == "escalating-1.5b"
    assert verdict["escalation"]["correct"] == {"small": 1, "escalating-1.5b": 2}


def test_the_escalation_replay_takes_the_path_the_product_would() -> None:
    """simulate_escalation.py: a draft naming what its cited lines lack fails the lexical check and the
    expert's answer is taken (draft + expert latency); below τ the draft is skipped (expert latency only)."""
    from simulate_escalation import replay

    wrong_draft = record("`parse_line` calls `json.loads` on the line [app/config.py:10-12].", latency_ms=10_000)
    expert = record("`parse_line` splits at the first `=` with `partition` [app/config.py:10-12].",
                    config="expert-1.5b", latency_ms=25_000)
    extractive = record("app/config.py:10-12", config="extractive", latency_ms=1)
    extractive["model"] = "extractive"
    for r in (wrong_draft, expert, extractive):
        r["confidence"] = 0.7
    row = {"small": wrong_draft, "expert-1.5b": expert, "extractive": extractive}
    assert replay([row], {"q1": QUESTION}, tau=0.5) == (1, [35.0], 1)
    assert replay([row], {"q1": QUESTION}, tau=0.8) == (1, [25.0], 1)
    good_draft = {**row, "small": {**expert, "config": "small", "latency_ms": 10_000}}
    assert replay([good_draft], {"q1": QUESTION}, tau=0.5) == (1, [10.0], 0)


def test_the_evidence_replay_answers_as_small_where_a_draft_that_cited_nothing_was_escalated() -> None:
    from simulate_escalation import uncited_to_evidence

    good = "`parse_line` uses `partition` [app/config.py:10-12]."
    bad = "`parse_line` calls `json.loads` [app/config.py:10-12]."

    def escalated(answer: str, reason: str) -> dict:
        return {**record(answer, config="escalating-1.5b"), "fallbacks": [{"from": "d", "to": "e", "reason": reason}]}

    # small answered with the evidence and was right; escalating asked the expert, which was wrong.
    uncited = {"small": record(good), "escalating-1.5b": escalated(bad, "answer cited no retrieved snippet: x")}
    # a draft failing verification: the expert's (right) answer stands in the evidence variant too.
    unsupported = {"small": record(bad), "escalating-1.5b": escalated(good, "verification failed: y")}
    assert uncited_to_evidence([uncited, unsupported], {"q1": QUESTION}) == (1, 1, 2)


def test_the_expert_swap_replay_gives_escalated_drafts_to_the_other_expert_or_the_evidence() -> None:
    """simulate_escalation.swap_expert: a draft escalating-1.5b kept stays; an escalated one takes the other
    expert's recorded answer when it passes the lexical check, else the extractive answer; a skipped
    draft costs only the expert's time."""
    from simulate_escalation import swap_expert

    good = "`parse_line` splits at the first `=` with `partition` [app/config.py:10-12]."
    bad = "`parse_line` calls `json.loads` on the line [app/config.py:10-12]."
    extractive = {**record("app/loader.py:1-2", config="extractive", cited=(False, True), latency_ms=1),
                  "model": "extractive"}

    def row(draft: str, escalating: str, reason: str | None, other: str | None, *, expert_failed: bool = False
            ) -> dict:
        hops = [{"from": "qwen2.5-coder-0.5b", "to": "qwen2.5-coder-1.5b", "reason": reason}] if reason else []
        if expert_failed:  # the 1.5B failed too: the answer is extractive and the record's flag is false
            hops.append({"from": "qwen2.5-coder-1.5b", "to": "extractive", "reason": "verification failed: z"})
        out = {"small": record(draft, latency_ms=10_000), "extractive": extractive,
               "escalating-1.5b": {**(extractive if expert_failed else record(escalating)), "config": "escalating-1.5b",
                                   "escalated": bool(reason) and not expert_failed, "fallbacks": hops}}
        if other is not None:
            out["expert-1.5b-x5"] = {**record(other, config="expert-1.5b-x5", latency_ms=30_000), "confidence": 0.7}
        return out

    kept = row(good, good, None, None)
    fixed = row(bad, bad, "verification failed: x", good)  # the 1.5B got it wrong, the other expert right
    lost = row(bad, good, "verification failed: x", bad)  # the other expert fails the check: the evidence
    skipped = row(good, good, "draft skipped: retrieval confidence 0.30 < τ 0.50", good)
    both_failed = row(bad, "", "verification failed: x", good, expert_failed=True)
    rows = [kept, fixed, lost, skipped, both_failed]
    for r in rows:
        r["small"]["confidence"] = 0.7
    before, after, small_s, swapped_s = swap_expert(rows, {"q1": QUESTION}, "expert-1.5b-x5")
    assert (before, after) == (3, 4)
    assert small_s == [10.0] * 5 and swapped_s == [10.0, 40.0, 40.0, 30.0, 40.0]


def test_a_citation_closing_a_line_backs_every_sentence_before_it_on_that_line() -> None:
    answer = ("- `load_config` in app/loader.py lines 1–2: Reads the file. Calls `parse_line`. [app/loader.py:1-2]\n"
              "`parse_line` splits with `partition`. [app/config.py:10-12]")
    scored = score_answer(record(answer, cited=(True, True)), QUESTION)
    assert (scored.citations_unsupported, scored.citations_unjudged, scored.uncited_claims) == (0, 0, 0)
    assert scored.citations_supported == 3 and scored.correct


def test_the_symbol_and_file_name_of_a_cited_chunk_count_as_its_lines() -> None:
    """The run-time verifier failed these two true statements (the chunk's symbol, a file name read
    as an identifier); the revised product verifier and the bench's header-aware variant agree."""
    rec = record("- `ConfigParser` in app/config.py lines 10–12 [app/config.py:10-12]")
    rec["citations"][0]["symbol"] = "ConfigParser"
    assert score_answer(rec, QUESTION).citations_supported == 1
    assert score_answer(rec, QUESTION, header_aware=True).citations_supported == 1
    rec = record("- `load_config` in app/loader_util.py [app/loader_util.py:1-2]", cited=(False, True))
    rec["citations"][1]["path"] = "app/loader_util.py"
    assert score_answer(rec, QUESTION).citations_supported == 1
    assert score_answer(rec, QUESTION, header_aware=True).citations_supported == 1


def test_an_answer_that_echoes_the_prompt_is_not_correct() -> None:
    echo = ("BEGIN SNIPPET 1 f011c3c440 ref=[app/config.py:10-12] symbol=parse_line\n```python\n" + PARSE
            + "```\nEND SNIPPET 1 f011c3c440")
    scored = score_answer(record(echo), QUESTION)
    assert scored.echoed and scored.cites_gold_span and not scored.correct
    assert not score_answer(record("`parse_line` uses `partition` [app/config.py:10-12]."), QUESTION).echoed


def test_signal_probe_measures_separation_and_what_the_cited_code_speaks_of() -> None:
    """probe_signals.py / probe_logprobs.py: AUC of a signal against the rubric (0.5 = no signal), and
    the lexical signals of one recorded draft."""
    from probe_logprobs import auc, summarize
    from probe_signals import gold_position, lexical_signals

    assert auc([(0.9, True), (0.1, False)]) == 1.0 and auc([(0.1, True), (0.9, False)]) == 0.0
    assert auc([(0.5, True), (0.5, False)]) == 0.5 and auc([(0.5, True)]) is None
    assert summarize([-0.1, -2.0, -0.3]) == {"mean": pytest.approx(-0.8), "min": -2.0, "p10": -2.0, "n": 3}
    asked = "how is a config line parsed into a dict?"
    first = {**record("`parse_line` uses `partition` [app/config.py:10-12].", cited=(True, False)), "confidence": 0.7}
    second = {**first, **record("`load_config` builds a dict [app/loader.py:1-2].", cited=(False, True))}
    # app/config.py holds config (its path), line and parse, not dict; app/loader.py all four.
    assert lexical_signals(first, asked) == {"confidence": 0.7, "cited_rank": 0.0, "question_terms": 0.75}
    assert lexical_signals(second, asked) == {"confidence": 0.7, "cited_rank": -1.0, "question_terms": 1.0}
    # The gold span (app/config.py:10-12) is the first retrieved snippet; without it only another file.
    assert gold_position(first, QUESTION) == "gold span shown (top 3)"
    elsewhere = {**QUESTION, "gold": [{"path": "app/config.py", "start_line": 40, "end_line": 50}]}
    assert gold_position(first, elsewhere) == "gold file only"
    assert gold_position(first, {**QUESTION, "gold": [{"path": "lib/x.py", "start_line": 1, "end_line": 2}]}) \
        == "nothing of the gold"


def test_calibration_probe_labels_the_top_file_and_counts_wrong_abstentions(tmp_path: Path) -> None:
    """probe_calibration.py: the label is what a calibrator predicts (the first cited file is a gold
    file); an abstention is right only where that file was wrong; the refitted variants read what
    their names say, from the repository's own stored eval features."""
    import numpy as np
    import pandas as pd
    from probe_calibration import STYLE_FEATURES, feature_shift, metrics, refit_variants, top_file_right

    gold = [{"path": "app/config.py", "start_line": 10, "end_line": 12}]
    assert top_file_right([{"path": "app/config.py"}, {"path": "x.py"}], gold)
    assert not top_file_right([{"path": "x.py"}, {"path": "app/config.py"}], gold) and not top_file_right([], gold)

    def row(label: bool, confidence: float) -> dict:
        return {"repo": "demo", "label": label, "confidence": {"published": confidence}, "tau": {"published": 0.5}}

    rows = [row(True, 0.9), row(True, 0.8), row(False, 0.7), row(True, 0.3), row(False, 0.2)]
    m = metrics(rows, "published")
    assert (m["n"], m["top1_right"], m["abstained"], m["abstained_wrong_top"]) == (5, 3, 2, 1)
    assert m["abstention_precision"] == 0.5 and m["answered_precision"] == pytest.approx(0.667, abs=1e-3)
    assert m["auc"] == pytest.approx(5 / 6, abs=1e-3)  # 5 of the 6 right/wrong pairs ordered right

    rng = np.random.default_rng(0)
    n = 120
    lexical = rng.uniform(0, 10, n)
    frame = pd.DataFrame({
        "id": [f"q{i}" for i in range(n)], "style": ["plain" if i % 3 == 0 else "mined" for i in range(n)],
        "query": [("where is the thing " * (1 + i % 4)).strip() + "?" for i in range(n)],
        "label": (lexical + rng.normal(0, 2, n) > 5).astype(int), "heuristic": 0.5, "ndcg_at_5": 0.5,
        "top_score": rng.uniform(0, 0.05, n), "margin": rng.uniform(0, 0.02, n), "agreement": 2.0,
        "top_dense_cosine": rng.uniform(0.2, 0.7, n), "top_lexical": lexical, "verified_fraction": 1.0,
        "citations": 20, "file_share": 0.5, "file_margin": 0.1, "distinct_files_top10": 4,
        "top_file_dense_rr": 1.0, "top_file_lexical_rr": 1.0,
    })
    frame.to_parquet(tmp_path / "calibration_features.parquet")
    variants = refit_variants(tmp_path)
    assert set(variants) == {"refit", "no-style", "plain-only", "mined-only"}
    assert not set(STYLE_FEATURES) & set(variants["no-style"].feature_names)
    assert variants["plain-only"].n_samples < n / 3  # the plain items of the fit side only
    assert n / 3 < variants["mined-only"].n_samples < 2 * n / 3
    assert all(0.0 <= v.tau <= 1.0 for v in variants.values())

    # The served features against a calibrator's fit: the citation count of a schema-2 calibrator
    # (fitted near 20, served 5) is the feature furthest away, in its own standard deviations.
    (tmp_path / "demo.json").write_text(json.dumps({
        "feature_names": ["top_dense_cosine", "citations", "query_length"],
        "means": [0.5, 19.9, 10.0], "stds": [0.2, 0.5, 4.0]}))
    served = [{"repo": "demo", "features": {"top_dense_cosine": 0.6, "citations": 5.0}}] * 3
    assert feature_shift(served, tmp_path)[-1] == "| demo | citations | 19.90 ± 0.50 | 5.00 | -29.8 |"


def test_span_probe_counts_where_the_gold_span_sits_and_whether_the_first_citation_moved() -> None:
    """probe_spans.py: the position of the first citation overlapping a gold span (a citation of the
    gold file elsewhere does not count), and per order the counts a reader compares."""
    from probe_spans import gold_position, metrics, parse_variant, report

    assert parse_variant("bm25-w0.7=bm25:0.7") == ("bm25-w0.7", {"in_file_order": "bm25", "in_file_prose_weight": 0.7})
    with pytest.raises(ValueError, match="NAME=ORDER:PROSE_WEIGHT"):
        parse_variant("bm25:0.7")

    gold = [{"path": "app/config.py", "start_line": 10, "end_line": 12}]
    assert gold_position(["app/config.py:40-60", "x.py:1-5", "app/config.py:12-20"], gold) == 2
    assert gold_position(["app/config.py:13-30"], gold) is None and gold_position([], gold) is None

    def row(qid: str, order: str, position: int | None, first: str) -> dict:
        return {"id": qid, "set": "s", "repo": "demo", "order": order, "gold_position": position,
                "top_file_right": first.startswith("app/"), "citations": [{"ref": first}]}

    rows = [row("q1", "fused", None, "app/config.py:40-60"), row("q1", "signals", 1, "app/config.py:40-60"),
            row("q2", "fused", 0, "app/config.py:10-12"), row("q2", "signals", 0, "app/config.py:10-12"),
            row("q3", "fused", 4, "x.py:1-5"), row("q3", "signals", 2, "y.py:1-5")]
    assert metrics([r for r in rows if r["order"] == "fused"]) == {"span@1": 1, "span@3": 1, "span@5": 2, "file@1": 2}
    assert metrics([r for r in rows if r["order"] == "signals"]) == {"span@1": 1, "span@3": 3, "span@5": 3,
                                                                     "file@1": 2}
    table = report(rows, ["fused", "signals"])
    assert "| all | 3 | signals | 1 | 3 | 3 | 2 | 2 |" in table  # q3's first citation moved: 2 of 3 the same


def test_paired_totals_sum_the_runs_and_test_the_discordant_pairs() -> None:
    """paired_totals.py: correct counts per run and in total, and an exact two-sided sign test on the
    questions only one configuration got right (6 against 1 is p = 16/128 = 0.125)."""
    from paired_totals import sign_test, totals

    assert sign_test(6, 1) == pytest.approx(0.125) and sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert sign_test(0, 5) == pytest.approx(0.0625)
    good = "`parse_line` uses `partition` [app/config.py:10-12]."
    bad = "`parse_line` calls `json.loads` [app/config.py:10-12]."
    q2 = {**QUESTION, "id": "q2"}
    run_a = [record(good, config="small"), record(good, config="escalating-1.5b-evidence"),
             {**record(bad, config="small"), "id": "q2"},
             {**record(good, config="escalating-1.5b-evidence"), "id": "q2"}]
    run_b = [record(good, config="small"), record(bad, config="escalating-1.5b-evidence")]
    rows = totals({"a": run_a, "b": run_b}, {"q1": QUESTION, "q2": q2}, draft="small",
                  escalating="escalating-1.5b-evidence")
    assert [(r["run"], r["questions"], r["small"], r["escalating-1.5b-evidence"]) for r in rows] == [
        ("a", 2, 1, 2), ("b", 1, 1, 0), ("total", 3, 2, 2)]
    assert (rows[-1]["only_escalating"], rows[-1]["only_draft"], rows[-1]["p"]) == (1, 1, 1.0)
