"""The one parser for integers that come from a request (headers, URLs, query, cursors).

Why not `int()` or `str.isdigit()`: `'²'.isdigit()` is true and `int('²')` fails; `int()` takes
`' 1_0 '`; and 5,000 digits or 20 digits do not fit the engines' 64-bit integers. Accepted:
ASCII digits only, at most `MAX_DIGITS` of them.
"""

from __future__ import annotations

MAX_DIGITS = 18
"""10**18 - 1 fits SQLite's INTEGER and BSON's int64 with room to spare."""
MAX_INT = 10**MAX_DIGITS - 1


def parse_int(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """`text` as a non-negative integer, or None when it is not one we accept."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def bounded_int(value: object) -> int | None:
    """An integer decoded from JSON we issued (a cursor): within range, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT:
        return value
    return None
