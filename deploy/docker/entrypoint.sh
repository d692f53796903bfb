#!/bin/sh
# The processes of one Precision Codex image (see the Dockerfile). Each `exec`s, so tini's signals
# reach the process itself and a SIGTERM stops it cleanly.
set -eu

PORT="${PORT:-}"
cmd="${1:-serving}"
[ "$#" -gt 0 ] && shift

case "$cmd" in
  serving)
    # One thread per query embedding, as `feriactl serve` sets it (docs/benchmarks.md §2: with two,
    # OpenMP's spinning threads slow the search that follows). Only here: ingestion runs embed
    # batches and want every core. The app writes its own JSON access line, so uvicorn's is off.
    # The state under CODEX_HOME is shared by every replica (tenants, kill-switch, canary).
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    exec uvicorn serving.app:create_app --factory --host 0.0.0.0 --port "${PORT:-8000}" \
      --no-access-log --timeout-graceful-shutdown 20 "$@"
    ;;
  code-location)
    # The Dagster code location: definitions are loaded once here; the webserver and the daemon
    # talk to it over gRPC, and the runs it launches (DefaultRunLauncher in compose, a Kubernetes
    # Job per run with the K8sRunLauncher) run this same image.
    exec dagster api grpc --module-name codex_assets.definitions --working-directory /app \
      --host 0.0.0.0 --port "${PORT:-4000}" "$@"
    ;;
  webserver)
    exec dagster-webserver --host 0.0.0.0 --port "${PORT:-3000}" \
      --workspace "${DAGSTER_WORKSPACE:-/opt/dagster/home/workspace.yaml}" "$@"
    ;;
  daemon)
    exec dagster-daemon run --workspace "${DAGSTER_WORKSPACE:-/opt/dagster/home/workspace.yaml}" "$@"
    ;;
  mlflow)
    # Backend store and artifact destination come from the environment (deploy/compose.yaml).
    exec mlflow server --host 0.0.0.0 --port "${PORT:-5000}" \
      --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql+psycopg2://...)}" \
      --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/var/lib/mlflow/artifacts}" \
      --serve-artifacts --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:*}" \
      --workers "${MLFLOW_WORKERS:-2}" "$@"
    ;;
  feriactl)
    exec feriactl "$@"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
