#!/usr/bin/env bash
# Run once, when the PostgreSQL volume is first initialised (the image runs /docker-entrypoint-initdb.d/*
# as the superuser POSTGRES_USER). MLflow gets a role of its own that owns its two databases and can
# do nothing else: no superuser, no new roles or databases. The basic-auth app's users and
# permissions live beside the tracking store, in their own database.
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?the mlflow role's password (Secret postgres, key password)}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
REVOKE ALL ON DATABASE mlflow, mlflow_auth FROM PUBLIC;
SQL
