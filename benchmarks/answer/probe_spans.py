"""Which part of the file? Where the gold span sits among the served citations, per in-file order.

Every hand-written answer question has a gold file and line span. A file can be cited first and the
answer still be missed, because the citations hold another part of it: the compact prompt shows a
small model the first 3 citations, and the extractive answer lists them. This probe asks every
question once per in-file order (``VARIANTS``: ``RetrievalConfig.in_file_order`` and
``in_file_prose_weight``; retrieval only, no model; the served defaults otherwise, ``top_k`` 5) and
reports, per question set and per repository:

- ``span@1`` / ``span@3`` / ``span@5``: the first citation overlapping a gold span is within the first
  1 / 3 / 5;
- ``file@1``: the first citation's file is a gold file (the in-file order must not change it);
- ``first same``: the first citation is identical under ``fused`` and ``signals`` (it must be: that in-file
  order keeps a file's best chunk by fused score first).

Beside the product's orders, the baseline a competent engineer would try first, ``bm25-probe``:
the ``fused`` retrieval's files with the same number of citations each, every file's chunks (all of
them, its first citation included) ordered by their BM25 score alone (the lexical index's own
scores; computed here; no module penalty, near-duplicate or verification step). The product's
``bm25`` order is that baseline with module-level code times ``module_penalty``, built after the
probe found the baseline ahead of ``signals`` held out; ``bm25+prose`` also scores each chunk times
(1 - 0.5 x its share of comment and docstring lines).

Per question and order, ``raw.jsonl`` keeps the citations (path, lines, symbol, ``via``, in-file score)
and the gold-span position, so two runs can be diffed.

    .venv/bin/python benchmarks/answer/probe_spans.py --home DIR --out DIR \\
        --questions benchmarks/answer/questions*.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from answer_bench import IN_FILE_VARIANTS as VARIANTS  # noqa: E402
from score import overlaps_gold  # noqa: E402

ORDERS = tuple(VARIANTS)
BASELINE = "bm25-probe"
METRICS = ("span@1", "span@3", "span@5", "file@1")


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                out.append({**json.loads(line), "set": path.stem})
    return out


def gold_position(refs: Sequence[str], gold: Sequence[Mapping[str, Any]]) -> int | None:
    """0-based position of the first citation overlapping a gold span, or None."""
    return next((i for i, ref in enumerate(refs) if overlaps_gold(ref, gold)), None)


def bm25_in_file(refs: Sequence[str], corpus: Any, question: str) -> list[str]:
    """``refs`` (one retrieval's citations) with each file's citations replaced by its chunks of
    highest BM25 score, as many as the file had, in the same slots."""
    scores = corpus.lexical.scores(question)
    paths = [ref.rsplit(":", 1)[0] for ref in refs]
    best: dict[str, list[str]] = {}
    for path in dict.fromkeys(paths):
        members = sorted(corpus.by_path.get(path, []), key=lambda i: (
            -(float(scores[i]) if scores is not None else 0.0), corpus.payloads[i]["start_line"]))
        best[path] = [f"{path}:{corpus.payloads[i]['start_line']}-{corpus.payloads[i]['end_line']}" for i in members]
    used: Counter[str] = Counter()
    out = []
    for path in paths:
        out.append(best[path][used[path]])
        used[path] += 1
    return out


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=ORDER:PROSE_WEIGHT`` (``--variant``), e.g. ``bm25-w0.7=bm25:0.7``: an order to try beside
    the named ones (how the prose weights of results/spans9/PLAN.md were compared)."""
    name, _, spec = text.partition("=")
    order, _, weight = spec.partition(":")
    if not name or not order or not weight:
        raise ValueError(f"a variant is NAME=ORDER:PROSE_WEIGHT, got {text!r}")
    return name, {"in_file_order": order, "in_file_prose_weight": float(weight)}


def ask_all(home: Path, questions: Sequence[Mapping[str, Any]],
            variants: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every question once per variant (name -> RetrievalConfig fields), plus ``bm25-probe`` beside
    ``fused``."""
    from answer_bench import build_answerers, copy_home

    from codex_core.home import CodexHome
    from codex_core.retrieval import RetrievalConfig
    from codex_core.settings import Settings
    from serving.engine import QueryEngine

    rows = []
    with tempfile.TemporaryDirectory(prefix="probe-spans-") as scratch:
        copied = copy_home(home, Path(scratch))
        settings = Settings.from_env({**os.environ, "CODEX_SEMANTIC_CACHE": "off"})
        answerer = build_answerers(["extractive"], "http://127.0.0.1:9", 1.0, None, None)["extractive"][0]
        engine = QueryEngine(CodexHome(copied), answerer=answerer, settings=settings)
        try:
            for q in questions:
                for order, fields in variants.items():
                    config = dataclasses.replace(RetrievalConfig(), **fields)
                    result = engine.retrieve(q["question"], repo=q["repo"], top_k=5, config=config).result
                    citations = [{"ref": c.ref, "symbol": c.payload.get("symbol"), "via": c.via,
                                  "in_file": c.raw_scores.get("in_file")} for c in result.candidates]
                    rows.append(row(q, order, citations))
                    if order == "fused":
                        corpus = engine.reader.view.corpora[q["repo"]]
                        baseline = bm25_in_file([c["ref"] for c in citations], corpus, q["question"])
                        rows.append(row(q, BASELINE, [{"ref": ref} for ref in baseline]))
        finally:
            engine.close()
    return rows


def row(q: Mapping[str, Any], order: str, citations: list[dict[str, Any]]) -> dict[str, Any]:
    refs = [c["ref"] for c in citations]
    gold_files = {g["path"] for g in q["gold"]}
    return {"id": q["id"], "set": q["set"], "repo": q["repo"], "kind": q["kind"], "order": order,
            "gold_position": gold_position(refs, q["gold"]),
            "top_file_right": bool(refs) and refs[0].rsplit(":", 1)[0] in gold_files, "citations": citations}


def metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out = Counter({m: 0 for m in METRICS})
    for r in rows:
        pos = r["gold_position"]
        out["span@1"] += pos is not None and pos < 1
        out["span@3"] += pos is not None and pos < 3
        out["span@5"] += pos is not None
        out["file@1"] += bool(r["top_file_right"])
    return dict(out)


def report(rows: Sequence[Mapping[str, Any]], orders: Sequence[str]) -> list[str]:
    groups: dict[str, set[str]] = {"all": {r["id"] for r in rows}}
    for key in ("set", "repo"):
        for value in sorted({r[key] for r in rows}):
            groups[value] = {r["id"] for r in rows if r[key] == value}
    first: dict[str, set[str]] = {}
    for r in rows:
        if r["order"] in ("fused", "signals"):  # the bm25 orders change which chunk leads
            first.setdefault(r["id"], set()).add(r["citations"][0]["ref"] if r["citations"] else "")
    lines = ["| questions | n | order | " + " | ".join(METRICS) + " | first same |",
             "|---|---:|---|" + "---:|" * (len(METRICS) + 1)]
    for name, ids in groups.items():
        same = sum(1 for i in ids if len(first.get(i, ())) <= 1)
        for order in orders:
            m = metrics([r for r in rows if r["id"] in ids and r["order"] == order])
            lines.append(f"| {name} | {len(ids)} | {order} | " + " | ".join(str(m[k]) for k in METRICS)
                         + f" | {same} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="CODEX_HOME with the questions' repositories ingested")
    parser.add_argument("--questions", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ORDER:PROSE_WEIGHT",
                        help="another order to ask, e.g. bm25-w0.7=bm25:0.7 (repeatable)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    try:
        variants = {**{o: VARIANTS[o] for o in args.orders}, **dict(map(parse_variant, args.variant))}
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "raw.jsonl"
    if not args.report_only:
        if args.home is None:
            parser.error("--home is needed unless --report-only")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        repos = set(json.loads((args.home / "repos.json").read_text()))
        questions = [q for q in load(args.questions) if q["repo"] in repos]
        raw.write_text("".join(json.dumps(r) + "\n" for r in ask_all(args.home, questions, variants)))
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    shown = list(dict.fromkeys(r["order"] for r in rows))  # what the run asked, in the order asked
    lines = report(rows, shown)
    (args.out / "report.md").write_text("# Which part of the file: the gold span among the citations\n\n"
                                        + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
