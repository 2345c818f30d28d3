#!/bin/bash
# Wraps the image's /entrypoint.sh: hands Portal Pulse's ClickHouse passwords (secret files) to
# the server. users.xml takes each user's SHA-256 from an environment variable computed here, so
# no password appears in a file or variable of the container. The image's own user set-up is off
# (CLICKHOUSE_SKIP_USER_SETUP=1): users.xml defines every user.
set -euo pipefail

# user file variable (compose.yaml) -> hash variable (users.xml)
hash_password() {
    local user="$1" file="$2" target="$3" password
    if [[ ! -s "$file" ]]; then
        echo "portal-pulse: the password file of ClickHouse user $user, $file, is missing or empty (see docs/deployment.md)" >&2
        exit 1
    fi
    # The password is the file's content without its trailing newline (as the clients read it).
    password="$(cat "$file")"
    printf -v "$target" '%s' "$(printf '%s' "$password" | sha256sum | cut -d' ' -f1)"
    unset password
    export "${target?}"
}

hash_password pulse_admin "${CLICKHOUSE_ADMIN_PASSWORD_FILE:-/run/secrets/clickhouse_admin_password}" CLICKHOUSE_ADMIN_PASSWORD_SHA256
hash_password pulse "${CLICKHOUSE_WRITER_PASSWORD_FILE:-/run/secrets/clickhouse_password}" CLICKHOUSE_WRITER_PASSWORD_SHA256
hash_password bi "${CLICKHOUSE_BI_PASSWORD_FILE:-/run/secrets/bi_password}" CLICKHOUSE_BI_PASSWORD_SHA256

exec /entrypoint.sh "$@"
