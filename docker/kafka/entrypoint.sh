#!/bin/bash
# Wraps the apache/kafka image's start script (/etc/kafka/docker/run): SASL logins from secret
# files, and broker files private to the broker's user.
#
# The broker's own principal `admin` (SASL/PLAIN, the one super user) gets its password from
# PORTAL_PULSE_KAFKA_ADMIN_PASSWORD_FILE. This script writes the JAAS file the broker reads and
# a client properties file for the healthcheck, both 0600, and passes the JAAS file in KAFKA_OPTS.
# Every other principal logs in with SCRAM-SHA-512 users that the `kafka-setup` service creates
# (python -m portal_pulse.kafka_acls), so no other password is known to the broker.
set -euo pipefail

# Everything the broker writes (data: raw events with patient ids; config: passwords) is 0600 in
# 0700 directories.
umask 077

admin_file="${PORTAL_PULSE_KAFKA_ADMIN_PASSWORD_FILE:-/run/secrets/kafka_admin_password}"
config_dir="${PORTAL_PULSE_KAFKA_CONFIG_DIR:-/opt/kafka/config}"
data_dir="${KAFKA_LOG_DIRS:-/var/lib/kafka/data}"

if [[ ! -s "$admin_file" ]]; then
    echo "portal-pulse: the Kafka admin password file $admin_file is missing or empty (see docs/deployment.md)" >&2
    exit 1
fi
# The password is the file's content without its trailing newline (as the kafka-setup service reads it).
password="$(cat "$admin_file")"
password="${password%$'\n'}"
password="${password%$'\r'}"
# It goes between double quotes in a JAAS file: hex or alphanumeric only.
if [[ ! "$password" =~ ^[A-Za-z0-9._~-]+$ ]]; then
    echo "portal-pulse: $admin_file may hold only letters, digits and . _ ~ - (use openssl rand -hex 32)" >&2
    exit 1
fi

# Replaced, never written through: a file or link already there is removed first, and noclobber
# makes bash create the new one exclusively (O_EXCL).
write_private() {
    rm -f -- "$1"
    (set -o noclobber; cat > "$1")
}

jaas="$config_dir/portal-pulse-jaas.conf"
write_private "$jaas" <<JAAS
KafkaServer {
    org.apache.kafka.common.security.plain.PlainLoginModule required
        username="admin" password="$password" user_admin="$password";
    org.apache.kafka.common.security.scram.ScramLoginModule required;
};
JAAS

write_private "$config_dir/portal-pulse-admin.properties" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$password";
PROPS
unset password

# A data volume made by an earlier version (755) is narrowed: only the broker's user enters it.
if [[ -d "$data_dir" ]]; then
    chmod 700 "$data_dir"
fi

export KAFKA_OPTS="${KAFKA_OPTS:+$KAFKA_OPTS }-Djava.security.auth.login.config=$jaas"
exec /etc/kafka/docker/run "$@"
