"""Who may do what on Kafka: the principals and ACLs of a secured deployment, in one place.

Under KRaft's ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``, a principal
may do only what an ACL here allows (the broker's own principal is the one super user):

- each source (``ehr``, ``portal``, ``billing``, ``phone``, ``survey``) writes its raw topic
  ``<prefix>.raw.<source>`` and nothing else, so a source cannot forge another source's events,
  a clean event, an alert or a fact;
- ``loader`` writes every raw topic and nothing else: recordings and replays from an operator's
  machine (``portal-pulse produce``), never handed to a source;
- ``pipeline`` (every worker role) reads the raw topics and reads and writes the internal ones
  (clean, dead letters, alerts, facts, live metrics, the app's changelogs and Faust's own topics)
  in its consumer groups ``<app_id>`` and ``<app_id>-sink``. It creates and configures its topics
  (partition counts, retention) but writes no raw topic.

The compose stack's one-shot ``kafka-setup`` service runs ``python -m portal_pulse.kafka_acls``
as the broker's super user: it creates the SCRAM users (passwords from secret files), the ACLs
and the topics. ``tests/integration/test_kafka_acls.py`` applies the same rules to a native
broker and checks what they refuse.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from portal_pulse.errors import EXIT_UNREACHABLE, UserError
from portal_pulse.settings import SOURCES, Settings

__all__ = [
    "LOADER",
    "PIPELINE",
    "PRINCIPALS",
    "SCRAM_MECHANISM",
    "AclRule",
    "acl_rules",
    "apply",
    "password_file",
    "read_passwords",
]

logger = logging.getLogger(__name__)

PIPELINE = "pipeline"
LOADER = "loader"
# Every principal that gets a SCRAM login (the broker's super user authenticates with PLAIN).
PRINCIPALS = (PIPELINE, LOADER, *SOURCES)
SCRAM_MECHANISM = "SCRAM-SHA-512"
# RFC 7677 asks for at least 4096; the broker refuses fewer.
SCRAM_ITERATIONS = 8192

# What the pipeline does on the topics it owns. READ and WRITE imply DESCRIBE; the configs are
# for retention (portal_pulse.kafka_admin).
_OWNED = ("READ", "WRITE", "CREATE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS")
_RAW_FOR_PIPELINE = ("READ", "CREATE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS")


@dataclass(frozen=True)
class AclRule:
    """One allow rule: ``user`` may do ``operation`` on a resource (``literal`` name or name
    ``prefixed``), from any host."""

    user: str
    resource: str  # "topic" or "group"
    name: str
    operation: str
    pattern: str = "literal"

    def __str__(self) -> str:
        name = f"{self.name}*" if self.pattern == "prefixed" else self.name
        return f"User:{self.user} {self.operation} {self.resource}:{name}"


def acl_rules(settings: Settings) -> list[AclRule]:
    """Every allow rule of a deployment with this topic prefix and app id."""
    names = settings.topics
    rules: list[AclRule] = []
    for source, topic in names.raw.items():
        rules.append(AclRule(source, "topic", topic, "WRITE"))
        rules.append(AclRule(LOADER, "topic", topic, "WRITE"))
        rules += [AclRule(PIPELINE, "topic", topic, op) for op in _RAW_FOR_PIPELINE]
    internal = (names.clean, names.dead_letter, names.alerts, names.responses, names.live_metrics)
    for topic in internal:
        rules += [AclRule(PIPELINE, "topic", topic, op) for op in _OWNED]
    # Changelogs "<app_id>-<table>-changelog", for the groups <app_id> and <app_id>-sink alike.
    rules += [AclRule(PIPELINE, "topic", f"{settings.app_id}-", op, "prefixed") for op in _OWNED]
    # The consumer loop's readers of the changelogs (restore, standby replicas) name groups of
    # their own; they only read assigned partitions and never join or commit.
    groups = (settings.app_id, f"{settings.app_id}-sink")
    groups += (f"{settings.app_id}-restore", f"{settings.app_id}-standby")
    for group in groups:
        rules.append(AclRule(PIPELINE, "group", group, "READ"))
    return rules


def _binding(rule: AclRule):  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return AclBinding(
        ResourceType[rule.resource.upper()],
        rule.name,
        ResourcePatternType[rule.pattern.upper()],
        f"User:{rule.user}",
        "*",
        AclOperation[rule.operation],
        AclPermissionType.ALLOW,
    )


def password_file(directory: Path, user: str) -> Path:
    """Where a principal's password lives: ``<dir>/kafka_<user>_password`` (compose secrets)."""
    return directory / f"kafka_{user}_password"


def read_passwords(directory: Path, users: Iterable[str] = PRINCIPALS) -> dict[str, str]:
    """Each principal's password from its file (trailing newline dropped); a missing or empty
    file is a ``UserError`` that names it."""
    passwords: dict[str, str] = {}
    for user in users:
        path = password_file(directory, user)
        try:
            text = path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise UserError(f"cannot read the Kafka password of {user}: {exc}") from None
        if not text:
            raise UserError(f"{path} is empty: it must hold the Kafka password of {user}")
        passwords[user] = text
    return passwords


def apply(settings: Settings, bootstrap: str, passwords: dict[str, str]) -> None:
    """As a super user: upsert the SCRAM users, add the ACLs of ``acl_rules``, remove any other
    ACL of these principals (a renamed prefix, a dropped source), then create the topics."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from portal_pulse.kafka_admin import ensure_topics

    admin = AdminClient({"bootstrap.servers": bootstrap, **settings.kafka_client_config()})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in sorted(passwords.items())
    ]
    for user, fut in admin.alter_user_scram_credentials(upserts).items():
        fut.result()
        logger.info("SCRAM login of %s set", user)

    wanted = [_binding(rule) for rule in acl_rules(settings)]
    for fut in admin.create_acls(wanted).values():
        fut.result()
    every = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    managed = {f"User:{user}" for user in PRINCIPALS}
    keep = set(wanted)
    stale = [
        b for b in admin.describe_acls(every).result() if b.principal in managed and b not in keep
    ]
    if stale:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in stale
        ]
        for fut in admin.delete_acls(filters).values():
            fut.result()
        logger.info("removed %d ACLs no longer wanted", len(stale))
    logger.info("%d ACLs in place for %s", len(wanted), ", ".join(sorted(managed)))
    ensure_topics(settings, bootstrap)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m portal_pulse.kafka_acls``: apply (or ``--print``) the rules. Connects with the
    ``PORTAL_PULSE_KAFKA_*`` settings, which must name the broker's super user."""
    parser = argparse.ArgumentParser(
        prog="python -m portal_pulse.kafka_acls",
        description="Create the Kafka users, ACLs and topics of a secured deployment.",
    )
    parser.add_argument(
        "--passwords-dir",
        type=Path,
        default=Path("/run/secrets"),
        help="directory of the files kafka_<user>_password (default: /run/secrets)",
    )
    parser.add_argument(
        "--print", action="store_true", help="print the ACLs and exit, without connecting"
    )
    args = parser.parse_args(argv)
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        if args.print:
            for rule in acl_rules(settings):
                print(rule)
            return 0
        if not settings.kafka_bootstrap_servers:
            raise UserError("KAFKA_BOOTSTRAP_SERVERS is not set")
        passwords = read_passwords(args.passwords_dir)
        from portal_pulse.broker import check_kafka

        check_kafka(settings.kafka_bootstrap_servers, settings.kafka_client_config(), 60.0)
        apply(settings, settings.kafka_bootstrap_servers, passwords)
    except UserError as exc:
        print(f"kafka_acls: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # the broker refused: one line, not a traceback
        print(f"kafka_acls: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
