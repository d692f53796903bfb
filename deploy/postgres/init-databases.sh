#!/bin/sh
# One database and one owner per service on the shared PostgreSQL: `dagster` (runs, event logs,
# schedules) and `mlflow` (experiments, runs, the model registry that holds the champion alias).
# The official postgres image runs this once, on an empty data directory, as POSTGRES_USER.
# Passwords come from the environment (deploy/.env); none is written here.
set -eu

create() {
  # $1 = role and database name, $2 = its password
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-postgres}" \
       --set=name="$1" --set=password="$2" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \gexec
SQL
}

create dagster "${DAGSTER_DB_PASSWORD:?set DAGSTER_DB_PASSWORD in deploy/.env}"
create mlflow "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in deploy/.env}"
