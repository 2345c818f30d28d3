"""Errors a user can fix: the CLI prints them as one or two lines and exits non-zero.

Anything else that escapes a command is a bug; the CLI still prints one line for it, and the
traceback only with ``--debug`` or ``PORTAL_PULSE_DEBUG=1``.
"""

from __future__ import annotations

__all__ = ["EXIT_NO_DATA", "EXIT_UNREACHABLE", "EXIT_USAGE", "UserError"]

EXIT_USAGE = 2  # a bad option, file, URL or practices file (argparse uses 2 as well)
EXIT_UNREACHABLE = 3  # Kafka or ClickHouse did not answer
EXIT_NO_DATA = 4  # the database holds no tables, or nothing for that practice or month


class UserError(Exception):
    """What went wrong and what to do, in at most two lines; ``exit_code`` as above."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
