"""benchmarks/semantic_cache_bench.py: the committed results are what the committed pairs measure, with
the real MiniLM embedder; malformed pairs are refused with the pair named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import semantic_cache_bench

    return semantic_cache_bench


def test_the_committed_results_are_reproduced(tmp_path: Path) -> None:
    bench = _bench()
    results = tmp_path / "results.json"
    assert bench.main(["--out", str(tmp_path / "raw"), "--results", str(results)]) == 0
    measured = json.loads(results.read_text())
    committed = json.loads((BENCHMARKS / "semantic_cache" / "results.json").read_text())
    for key in ("threshold", "pairs", "pairs_by_variant", "within_repo_pairs", "recommendation"):
        assert measured[key] == committed[key], key
    for split in ("tune", "held_out"):
        for key in ("hit_rate", "hit_rate_by_variant", "false_hit_rate", "within_repo_false_hit_rate", "simulation"):
            assert measured[split][key] == committed[split][key], (split, key)
    raw = [json.loads(line) for line in (tmp_path / "raw" / "pairs.jsonl").read_text().splitlines()]
    assert len(raw) == sum(committed["pairs"].values()) and all(-1.0 <= r["similarity"] <= 1.0 for r in raw)


def test_malformed_pairs_are_refused_naming_the_pair() -> None:
    bench = _bench()
    pairs = bench.load_pairs()
    paraphrase = next(p for p in pairs if p["label"] == "paraphrase")
    broken = {**paraphrase, "gold_b": [{"path": "elsewhere.py", "start_line": 1, "end_line": 2}]}
    with pytest.raises(ValueError, match=f"pair '{paraphrase['id']}'.*same gold spans"):
        bench.check_pairs([broken])
    negative = next(p for p in pairs if p["label"] == "different" and p["variant"] == "minimal")
    with pytest.raises(ValueError, match="must not have the same gold spans"):
        bench.check_pairs([{**negative, "gold_b": negative["gold_a"]}])
    with pytest.raises(ValueError, match="in no split"):
        bench.check_pairs([{**negative, "repo": "jsoup"}])
