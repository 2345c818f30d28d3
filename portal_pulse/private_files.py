"""Files and directories that hold PHI or secrets are the worker's user's alone.

The data directory holds chDB's store (pseudonymised events: still PHI), Faust's state, the
broker's data (raw events with MRNs) and keys. ``portal-pulse`` runs under umask 077, so whatever
it creates is 0700 / 0600; a directory made earlier with wider modes (by an older version or by
hand) is narrowed when a worker starts, and the log says so.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from portal_pulse.errors import UserError

__all__ = ["PRIVATE_UMASK", "private_dir"]

PRIVATE_UMASK = 0o077
logger = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter: created 0700, or narrowed to it.

    A link or a directory owned by another user is refused (a ``UserError``): narrowing someone
    else's directory, or the one a link points at, is not ours to do.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path} is not a directory (a link?); use a plain directory")
    if info.st_uid != os.geteuid():
        raise UserError(
            f"{path} belongs to uid {info.st_uid}, not to this user ({os.geteuid()}); "
            "give the worker a data directory of its own"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700, follow_symlinks=False)
        logger.warning(
            "narrowed %s from %o to 700: it holds PHI and keys", path, stat.S_IMODE(info.st_mode)
        )
    return path
