#!/bin/bash
# Wraps the image's /entrypoint.sh: hands the BI user's password (a secret file) to ClickHouse.
#
# The image itself reads CLICKHOUSE_PASSWORD_FILE for the writer user (CLICKHOUSE_USER). The
# read-only BI user (bi-readonly-user.xml) takes the SHA-256 of its password from the environment
# variable CLICKHOUSE_BI_PASSWORD_SHA256, computed here from CLICKHOUSE_BI_PASSWORD_FILE, so the
# password itself appears in no file or variable of the container.
set -euo pipefail

bi_file="${CLICKHOUSE_BI_PASSWORD_FILE:-/run/secrets/bi_password}"
if [[ ! -s "$bi_file" ]]; then
    echo "portal-pulse: the BI password file $bi_file is missing or empty (see docs/deployment.md)" >&2
    exit 1
fi
# The password is the file's content without its trailing newline (as Grafana and the worker read it).
password="$(cat "$bi_file")"
CLICKHOUSE_BI_PASSWORD_SHA256="$(printf '%s' "$password" | sha256sum | cut -d' ' -f1)"
unset password
export CLICKHOUSE_BI_PASSWORD_SHA256

exec /entrypoint.sh "$@"
