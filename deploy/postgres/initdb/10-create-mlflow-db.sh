#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume
# (/docker-entrypoint-initdb.d). $POSTGRES_DB (Dagster + AstrID tables) is created by the
# image itself; this adds the second database, for the MLflow tracking server, owned by
# the same role. Idempotent. No `set -u`/`exit`: the image may source this file.
set -e

mlflow_db="${MLFLOW_DB:-mlflow}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=mlflow_db="$mlflow_db" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'mlflow_db', current_user)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'mlflow_db')\gexec
SQL
