"""Where a JSON body nests too deep: the path of its first over-deep value, for a 422 naming the field.

The JSON parsers of the predict path recurse once per level and stop at the interpreter's recursion limit
(msgspec raises RecursionError, pydantic-core a "recursion limit exceeded" error at a byte offset), which
names no field. This scan runs only after such a failure: it tokenises the body with one regular
expression (strings skipped whole, so brackets inside them do not count), keeps the path of object keys
and array indices down to the current value, and stops at the first value nested deeper than the limit.
It is linear in the bytes before that point and never recurses.
"""

from __future__ import annotations

import json
import re

#: Deeper than any valid `/v1/predict` body (a config is an object holding a list: body → configs → 0 →
#: widths → 0 is five levels) and far below the parsers' recursion limits.
MAX_NESTING = 64

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.S)


def too_deep(data: bytes, limit: int = MAX_NESTING) -> list[str | int] | None:
    """The path (keys and indices) of the first container nested more than `limit` levels deep, or None.

    A malformed body gives whatever path was reached (the parser reports malformed JSON itself).
    """
    path: list[str | int] = []
    kinds: list[bytes] = []  # b"{" or b"[" per open container
    key: str | int | None = None
    after_colon = False
    for match in _TOKEN.finditer(data):
        token = match.group()
        if token in (b"{", b"["):
            if kinds:
                path.append(key if key is not None else 0)
            if len(kinds) >= limit:
                return path
            kinds.append(token)
            key = 0 if token == b"[" else None
            after_colon = False
        elif token in (b"}", b"]"):
            if not kinds:
                return None
            kinds.pop()
            key = path.pop() if path else None
        elif token == b",":
            if kinds and kinds[-1] == b"[" and isinstance(key, int):
                key += 1
            after_colon = False
        elif token == b":":
            after_colon = True
        elif kinds and kinds[-1] == b"{" and not after_colon:  # a string in key position
            try:
                key = str(json.loads(token))
            except ValueError:
                key = token.decode("utf-8", "replace").strip('"')
    return None
