"""An error's fingerprint: what groups dead letters that failed the same way.

Its type, its message with the parts that vary from task to task replaced (numbers, hex ids,
quoted values), and the top frame of its traceback (the file and function that raised). Two
`KeyError: 'user-41'` raised at the same line of `billing.charge` share one; the same error raised
elsewhere does not.
"""

from __future__ import annotations

import hashlib
import re

_VARYING = re.compile(r"""'[^']*'|"[^"]*"|\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{8,}\b|\d+(?:\.\d+)?""")
_FRAME = re.compile(r'^\s*File "([^"]*)", line \d+, in (.+)$', re.MULTILINE)


def normalised(message: str) -> str:
    """`message` with what varies between occurrences replaced by `…` (then its first 500
    characters: cut first, two messages whose varying parts differ in length would differ)."""
    return _VARYING.sub("…", message[:20_000])[:500]


def top_frame(traceback: str | None) -> str:
    """`file:function` of the innermost frame (where it was raised), or "" without a traceback."""
    frames = _FRAME.findall(traceback or "")
    if not frames:
        return ""
    path, function = frames[-1]
    return f"{path.rsplit('/', 1)[-1]}:{function.strip()}"


def fingerprint(error_type: str | None, message: str | None, traceback: str | None) -> str:
    """12 hex digits naming the group of errors alike (type, normalised message, top frame)."""
    text = f"{error_type or ''}\0{normalised(message or '')}\0{top_frame(traceback)}"
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
