# Two commands do all set-up on a fresh machine:
#   make run    venv + install, ingest a repository (default: this one), start the Dagster UI
#   make test   venv + install, lint, whole test suite (what .ci/run calls)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .sandbox-tools
REPO ?= .
NAME ?= precision-codex
export CODEX_HOME ?= $(CURDIR)/.codex
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install run test lint bench clean sandbox-tools

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: with no torch installed, pip would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/feriactl ingest $(REPO) --name $(NAME)
	$(BIN)/feriactl up

lint: install
	$(BIN)/ruff check .

# The sandbox runs recipes under bubblewrap (Debian package); without it those tests skip and say so.
# The recipe tools (pytest, coverage, ruff, mypy, bandit, sphinx, uv) live in their own environment,
# re-made from scratch when configs/sandbox-tools.txt changes; a failed install stops the build.
$(TOOLS)/.installed: configs/sandbox-tools.txt
	rm -rf $(TOOLS)
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q -r configs/sandbox-tools.txt \
	  || { echo "the sandbox tools environment $(TOOLS)/ could not be installed from configs/sandbox-tools.txt (pip's error is above)"; exit 1; }
	touch $@

sandbox-tools: $(TOOLS)/.installed
	@command -v bwrap >/dev/null 2>&1 || apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; } \
	  || echo "bubblewrap could not be installed: the sandbox tests will skip"

test: install lint sandbox-tools
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/ingest_bench.py $(REPO)

clean:
	rm -rf $(VENV) $(TOOLS) .codex
