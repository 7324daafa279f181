"""Prefix semantics as data: one range comparison, rendered by each engine the same way.

`range_terms(prefix, low, high)` returns the predicate on a stored range [lo, hi] in
disjunctive normal form: a list of alternatives, each a list of (field, operator, value)
with field "lo" or "hi" and operator one of < <= > >=.  `ne` is the one prefix that is a
negation; its alternatives express "not contained" without NOT, so missing values never match.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhir_server.search.query import Prefix

Term = tuple[str, str, Any]

_DAY = timedelta(days=1)
_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _widen(low: Any, high: Any) -> tuple[Any, Any]:
    """`ap`: 10 % of the value for numbers, one day for dates (the spec leaves it open)."""
    if isinstance(low, str):
        lo = datetime.strptime(low, _FORMAT) - _DAY if low > "0001-01-02" else None
        hi = datetime.strptime(high, _FORMAT) + _DAY if high < "9999-12-30" else None
        return (lo.strftime(_FORMAT) if lo else low), (hi.strftime(_FORMAT) if hi else high)
    margin = abs((low + high) / 2) * 0.1
    return low - margin, high + margin


def range_terms(prefix: Prefix, low: Any, high: Any) -> list[list[Term]]:
    contained = [("lo", ">=", low), ("hi", "<=", high)]
    if prefix == "eq":
        return [contained]
    if prefix == "ne":
        return [[("lo", "<", low)], [("hi", ">", high)]]
    if prefix == "gt":
        return [[("hi", ">", high)]]
    if prefix == "lt":
        return [[("lo", "<", low)]]
    if prefix == "ge":
        return [[("hi", ">", high)], contained]
    if prefix == "le":
        return [[("lo", "<", low)], contained]
    if prefix == "sa":
        return [[("lo", ">", high)]]
    if prefix == "eb":
        return [[("hi", "<", low)]]
    wide_low, wide_high = _widen(low, high)  # ap: overlaps the widened range
    return [[("lo", "<=", wide_high), ("hi", ">=", wide_low)]]


def holds(terms: list[list[Term]], lo: Any, hi: Any) -> bool:
    """Evaluate `range_terms` in Python (reference semantics, uncommitted writes)."""
    values = {"lo": lo, "hi": hi}
    compare = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return any(all(compare[op](values[f], v) for f, op, v in alt) for alt in terms)
