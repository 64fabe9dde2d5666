#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d): the
# MLflow server's accounts database, beside its tracking store (cluster/mlflow-server.sh).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${POSTGRES_AUTH_DB:-mlflow_auth}\" OWNER \"$POSTGRES_USER\""
