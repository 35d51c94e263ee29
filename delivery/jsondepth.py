"""Nesting depth of JSON text, without recursion (Python's json recurses: deep input raises).

Depth: a scalar is 0, ``{"a": 1}`` and ``[1]`` are 1, ``[[1]]`` is 2. Used by send validation
(bodies) and the gateway (client frames) to refuse deep nesting with a clear error before any
recursive code (json, SQLAlchemy, kombu) sees it.
"""

from __future__ import annotations

import re

# A JSON string (skipped whole, so brackets inside strings do not count) or one bracket.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def too_deep(text: str, limit: int) -> bool:
    """True if ``text`` (JSON or almost) nests arrays/objects deeper than ``limit``.

    Linear; a text with at most ``limit`` brackets needs only two C-level counts."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _TOKEN.finditer(text):
        c = m.group()
        if c == "[" or c == "{":
            depth += 1
            if depth > limit:
                return True
        elif c == "]" or c == "}":
            depth -= 1
    return False
