#!/bin/sh
# The team's MLflow server, with accounts: `mlflow server --app-name basic-auth`, its tracking
# store and its accounts database side by side (PostgreSQL in docker-compose.yml), its artifacts
# under --artifacts-destination. Run by the compose file's `mlflow` service, and natively by the
# tests. Every secret comes from the environment (docker compose reads .env):
#
#   MLFLOW_BACKEND_STORE_URI        the tracking store (runs, metrics)
#   MLFLOW_AUTH_DATABASE_URI        accounts and their permissions
#   MLFLOW_AUTH_ADMIN_PASSWORD      the admin's first password (MLflow reads it when it creates the
#                                   admin, once; rotate it afterwards, docs/clusters.md)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  signs the UI's sessions and CSRF tokens (MLflow reads it)
#   MLFLOW_ARTIFACTS_DESTINATION    where artifacts go: a path, or s3://bucket/prefix (with AWS_*
#                                   credentials and, for an S3-compatible server, MLFLOW_S3_ENDPOINT_URL)
#   MLFLOW_AUTH_DEFAULT_PERMISSION  what a user may do on experiments not granted to them:
#                                   NO_PERMISSIONS by default (a user sees their own experiments
#                                   and those granted to them; an admin grants the team's)
#   MLFLOW_HOST, MLFLOW_PORT, MLFLOW_WORKERS   where it listens (default 0.0.0.0:5000, 2 workers)
#   MLFLOW_AUTH_CACHE_SECONDS       how long a worker trusts a checked password (default 60; 0: never).
#                                   Checking one costs a key derivation (~0.3 s of a core here), on
#                                   every request without it; a changed password is refused at once
#                                   by the worker that changed it, by the others within this time
#
# MLflow reads the accounts database's URI, which holds a password, only from a config file: it is
# written here, in a directory only this user can read, at every start; never into the image.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY (a long random string)}"
# Compose passes the optional ones empty when .env leaves them out: empty is unset, not "".
for name in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION MLFLOW_S3_ENDPOINT_URL; do
  eval "[ -n \"\${$name:-}\" ] || unset $name"
done
config_dir=$(mktemp -d)
chmod 700 "$config_dir"
# configparser reads % as interpolation: a password with %-escapes in the URI must stay as it is.
database_uri=$(printf '%s' "$MLFLOW_AUTH_DATABASE_URI" | sed 's/%/%%/g')
umask 077
cat > "$config_dir/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-NO_PERMISSIONS}
database_uri = $database_uri
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_SECONDS:-60}
INI
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
exec mlflow server --app-name basic-auth --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "${MLFLOW_PORT:-5000}" --workers "${MLFLOW_WORKERS:-2}" "$@"
