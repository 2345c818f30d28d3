"""Text from outside (event fields, headers, YAML keys, exception messages) made safe to print.

A value such as a practice id or a raw header can carry a newline (a forged second log line), an
ANSI escape (rewriting the operator's terminal) or a bidirectional override (text that reads
differently from what it holds). Every log line and every error line escapes them: a control or
format character becomes ``\\xNN`` / ``\\uNNNN``, so the line shows exactly what was received.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

_ESCAPED = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control (Cc), format (Cf), line or paragraph separator (Zl, Zp) and
    unassigned or surrogate character escaped; ``keep_newlines`` leaves ``\\n`` (tracebacks)."""
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(
        _escape(char)
        if char != " "
        and not (keep_newlines and char == "\n")
        and unicodedata.category(char) in _ESCAPED
        else char
        for char in text
    )
