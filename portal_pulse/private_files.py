"""Files and directories that hold PHI or secrets are the worker's user's alone.

The data directory holds chDB's store (pseudonymised events: still PHI), Faust's state, the
broker's data (raw events with MRNs) and keys. ``portal-pulse`` runs under umask 077, so whatever
it creates is 0700 / 0600; a directory made earlier with wider modes (by an older version or by
hand) is narrowed when a worker starts, and the log says so.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from portal_pulse.errors import UserError

__all__ = [
    "PRIVATE_UMASK",
    "UntrustedFile",
    "check_private_dir",
    "make_private_dir",
    "private_dir",
    "read_private",
    "untrusted",
    "write_private",
]

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


class UntrustedFile(UserError):
    """A file or directory that someone else could have written or read (or a link to one)."""


def untrusted(path: Path, problem: str) -> UntrustedFile:
    """The refusal of a file or directory we did not make private ourselves."""
    return UntrustedFile(
        f"{path} {problem}: not trusting it (it must be yours and private); remove it, "
        "then restart the worker, which recreates it"
    )


def _check(path: Path, st: os.stat_result, *, directory: bool) -> None:
    kind = "directory" if directory else "regular file"
    if stat.S_ISLNK(st.st_mode):
        raise untrusted(path, "is a symbolic link")
    if (stat.S_ISDIR if directory else stat.S_ISREG)(st.st_mode) is False:
        raise untrusted(path, f"is not a {kind}")
    if st.st_uid != os.getuid():
        raise untrusted(path, f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})")
    want = 0o700 if directory else 0o600
    mode = stat.S_IMODE(st.st_mode)
    if mode != want:
        raise untrusted(path, f"has mode {mode:04o}, not {want:04o}")


def check_private_dir(path: Path) -> None:
    """``UntrustedFile`` unless ``path`` is a real directory of this user with mode 0700."""
    _check(path, os.lstat(path), directory=True)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) with mode 0700 if missing, then check it."""
    old = os.umask(0o077)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    finally:
        os.umask(old)
    check_private_dir(path)


def write_private(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write ``text`` to ``path`` as a 0600 file: created exclusively, never through a link,
    under a temporary name, then moved into place. Without ``replace`` an existing file is kept
    (returns False): two workers starting together agree on the first one's file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    old = os.umask(0o077)
    try:
        fd = os.open(tmp, flags, 0o600)
    finally:
        os.umask(old)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        if replace:
            os.replace(tmp, path)  # rename replaces a link itself, never its target
            return True
        try:
            os.link(tmp, path)  # fails if the name exists: no overwrite, no race
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def read_private(path: Path, limit: int = 4096) -> str:
    """The text of a worker file, opened without following links and checked once open."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise untrusted(path, "is a symbolic link") from None
        raise UntrustedFile(f"{path} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        _check(path, os.fstat(handle.fileno()), directory=False)
        return handle.read(limit)
