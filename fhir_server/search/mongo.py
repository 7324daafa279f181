"""Compile the query tree to a MongoDB filter document.

Every key in the output is a fixed field name or operator written here; user text only ever
lands in value positions, and every text value is checked to be a plain `str`, so a value such
as `{"$where": ...}` or `"$gt"` is compared literally and can never become an operator; the
one regular expression (`:contains`) is built with `re.escape`.

The search values of a resource live in its current document as an array `idx` of small typed
entries (Cosmos DB's layout; `k` says the kind), so one alternative is one `$elemMatch` over
that array.  Chains and reverse chains are resolved first (`resolve`), by the engine, into
lists of ids (`search.overlay` evaluates the same semantics in memory).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from fhir_server.search.overlay import RefIn, Resolved
from fhir_server.search.query import (
    AnyOf,
    Chain,
    CompositeMatch,
    Condition,
    DateMatch,
    Has,
    IdIn,
    LastUpdated,
    Missing,
    Not,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    StringMatch,
    TextMatch,
    TokenMatch,
    UriMatch,
)
from fhir_server.search.ranges import range_terms
from fhir_server.storage.port import (
    CompositeIndex,
    DateIndex,
    IndexEntry,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TextIndex,
    TokenIndex,
    UriIndex,
)

# Matches no document: `$or: []` is invalid in MongoDB, so an empty alternative needs this.
_NOTHING: dict[str, Any] = {"id": {"$in": []}}
_TOP = "\U0010ffff"
KINDS = {
    "token": "t",
    "text": "x",
    "string": "s",
    "date": "d",
    "number": "n",
    "quantity": "q",
    "reference": "r",
    "uri": "u",
    "composite": "c",
}
_OPERATORS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}


FindIds = Callable[[str, dict[str, Any]], Awaitable[list[str]]]
FindReferrers = Callable[[str, dict[str, Any], str, str], Awaitable[list[str]]]


def index_document(entry: IndexEntry) -> dict[str, Any]:
    """The stored form of one index entry: what `compile_where` filters on."""
    p = _text(entry.param)
    match entry:
        case CompositeIndex(parts=parts):
            parts_docs = {f"c{i}": index_document(part) for i, part in enumerate(parts)}
            return {"k": "c", "p": p, **parts_docs}
        case TokenIndex(system=system, code=code):
            return {"k": "t", "p": p, "s": _optional(system), "c": _optional(code)}
        case TextIndex(value=value):
            return {"k": "x", "p": p, "v": _text(value)}
        case StringIndex(value=value, exact=exact):
            return {"k": "s", "p": p, "v": _text(value), "e": _text(exact)}
        case DateIndex(low=low, high=high):
            return {"k": "d", "p": p, "lo": _text(low), "hi": _text(high)}
        case NumberIndex(low=low, high=high):
            return {"k": "n", "p": p, "lo": float(low), "hi": float(high)}
        case QuantityIndex(low=low, high=high, system=system, code=code, unit=unit):
            return {
                "k": "q",
                "p": p,
                "lo": float(low),
                "hi": float(high),
                "s": _optional(system),
                "c": _optional(code),
                "un": _optional(unit),
            }
        case ReferenceIndex(type=type, id=id, version=version, url=url):
            return {
                "k": "r",
                "p": p,
                "t": _optional(type),
                "i": _optional(id),
                "ver": _optional(version),
                "u": _optional(url),
            }
        case UriIndex(value=value):
            return {"k": "u", "p": p, "v": _text(value)}
    raise TypeError(f"unsupported index entry {entry!r}")


SORT_VALUE = {"t": ("c", "c"), "s": ("v", "v"), "d": ("lo", "hi"), "n": ("lo", "hi"),
              "q": ("lo", "hi"), "r": ("i", "i"), "u": ("v", "v")}  # fmt: skip


def sort_keys(documents: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per parameter, the lowest and highest value: what `_sort` orders by."""
    keys: dict[str, dict[str, Any]] = {}
    for d in documents:
        fields = SORT_VALUE.get(d["k"])
        if fields is None or not re.fullmatch(r"[A-Za-z0-9_-]+", d["p"]):
            continue
        low, high = d.get(fields[0]), d.get(fields[1])
        if low is None:
            continue
        key = keys.setdefault(d["p"], {"min": low, "max": high})
        key["min"], key["max"] = min(key["min"], low), max(key["max"], high)
    return keys


async def resolve(
    conditions: Sequence[Condition], type: str, find_ids: FindIds, find_referrers: FindReferrers
) -> list[Resolved]:
    """Replace chains on a search of `type` by the ids they reach, recursively (each inner
    search is one query)."""
    return [await _resolve(c, type, find_ids, find_referrers) for c in conditions]


async def _resolve(
    c: Condition, type: str, find_ids: FindIds, find_referrers: FindReferrers
) -> Resolved:
    match c:
        case Chain(param=param, target=target, where=where):
            inner = await resolve(where, target, find_ids, find_referrers)
            ids = await find_ids(target, compile_where(inner))
            return RefIn(param, target, frozenset(ids))
        case Has(source=source, param=param, where=where):
            inner = await resolve(where, source, find_ids, find_referrers)
            targets = await find_referrers(source, compile_where(inner), param, type)
            return IdIn(tuple(sorted(set(targets))))
        case Not(term=term):
            return Not(await _resolve(term, type, find_ids, find_referrers))  # type: ignore[arg-type]
        case AnyOf(terms=terms):
            resolved = [await _resolve(t, type, find_ids, find_referrers) for t in terms]
            return AnyOf(tuple(resolved))  # type: ignore[arg-type]
    return c


def compile_where(conditions: Iterable[Resolved]) -> dict[str, Any]:
    """AND of all (resolved) conditions as one filter document; `{}` when there are none."""
    parts = [_compile(condition) for condition in conditions]
    return {"$and": parts} if parts else {}


def _ranges(prefix: Any, low: Any, high: Any, lo: str = "lo", hi: str = "hi") -> dict[str, Any]:
    """`range_terms` as a filter on the fields `lo`/`hi` (the same field when a single value)."""
    fields = {"lo": lo, "hi": hi}
    alternatives = []
    for alternative in range_terms(prefix, low, high):
        conditions: dict[str, dict[str, Any]] = {}
        for f, op, v in alternative:
            conditions.setdefault(fields[f], {})[_OPERATORS[op]] = v
        alternatives.append(conditions)
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


def _element(kind: str, param: str, **fields: Any) -> dict[str, Any]:
    return {"idx": {"$elemMatch": {"k": kind, "p": _text(param), **fields}}}


def _compile(condition: Resolved) -> dict[str, Any]:
    match condition:
        case IdIn(ids=ids):
            return {"id": {"$in": [_text(value) for value in ids]}}
        case LastUpdated(prefix=prefix, low=low, high=high):
            return _ranges(prefix, _text(low), _text(high), "last_updated", "last_updated")
        case TokenMatch(param=param, system=system, code=code):
            fields: dict[str, Any] = {}
            if system == "":
                fields["s"] = None  # no system: null or absent
            elif system is not None:
                fields["s"] = _text(system)
            if code is not None:
                fields["c"] = _text(code)
            return _element("t", param, **fields)
        case TextMatch(param=param, value=value):
            return _element("x", param, v={"$gte": _text(value), "$lt": value + _TOP})
        case StringMatch(param=param, value=value, mode=mode):
            if mode == "exact":
                return _element("s", param, e=_text(value))
            if mode == "contains":
                return _element("s", param, v={"$regex": re.escape(_text(value))})
            return _element("s", param, v={"$gte": _text(value), "$lt": value + _TOP})
        case DateMatch(param=param, prefix=prefix, low=low, high=high):
            return _element("d", param, **_ranges(prefix, _text(low), _text(high)))
        case NumberMatch(param=param, prefix=prefix, low=low, high=high):
            return _element("n", param, **_ranges(prefix, float(low), float(high)))
        case QuantityMatch(param=param, prefix=prefix, low=low, high=high, system=s, code=c):
            fields = dict(_ranges(prefix, float(low), float(high)))
            if s is not None:
                fields["s"] = _text(s)
            if c is not None and s is not None:
                fields["c"] = _text(c)
            elif c is not None:
                unit_or_code = [{"c": _text(c)}, {"un": _text(c)}]
                fields = (
                    {"$and": [fields, {"$or": unit_or_code}]} if fields else {"$or": unit_or_code}
                )
            return _element("q", param, **fields)
        case ReferenceMatch(param=param, type=target, id=id, url=url):
            local: dict[str, Any] = {}
            if id is not None:
                local["i"] = _text(id)
                if target is not None:
                    local["t"] = _text(target)
            if url is None:
                return _element("r", param, **local)
            by_url = {"u": _text(url)}
            return _element("r", param, **({"$or": [local, by_url]} if local else by_url))
        case RefIn(param=param, target=target, ids=ids):
            return _element("r", param, t=_text(target), i={"$in": sorted(ids)})
        case UriMatch(param=param, value=value, mode=mode):
            value = _text(value)
            if mode == "above":
                return _element(
                    "u", param, v={"$in": [value[:i] for i in range(1, len(value) + 1)]}
                )
            if mode == "below":
                return _element("u", param, v={"$gte": value, "$lt": value + _TOP})
            return _element("u", param, v=value)
        case CompositeMatch(param=param, parts=parts):
            inner = [
                _prefixed(_compile(part)["idx"]["$elemMatch"], f"c{i}.")
                for i, part in enumerate(parts)
            ]
            return _element("c", param, **{"$and": inner})
        case Missing(param=param, kind=kind, missing=missing):
            present = _element(KINDS[kind], param)
            return {"idx": {"$not": present["idx"]}} if missing else present
        case Not(term=term):
            return {"$nor": [_compile(term)]}
        case AnyOf(terms=terms):
            alternatives = [_compile(term) for term in terms]
            return {"$or": alternatives} if alternatives else _NOTHING
    raise TypeError(f"unknown condition {condition!r}")


def _prefixed(filter_: Any, prefix: str) -> Any:
    """A part's `$elemMatch` body moved under `c{i}.` (operators keep their place)."""
    if isinstance(filter_, list):
        return [_prefixed(f, prefix) for f in filter_]
    if not isinstance(filter_, dict):
        return filter_
    return {
        (k if k.startswith("$") else prefix + k): (_prefixed(v, prefix) if k.startswith("$") else v)
        for k, v in filter_.items()
    }


def _text(value: object) -> str:
    """Only plain strings may reach a filter: a dict or list here could carry operators."""
    if type(value) is not str:
        raise TypeError(f"search value must be str, not {type(value).__name__}")
    return value


def _optional(value: object) -> str | None:
    return None if value is None else _text(value)


_TOP_OF_WINDOW = {"eq": ("$lte", "high"), "le": ("$lte", "high"), "lt": ("$lt", "low"),
                  "eb": ("$lt", "low")}  # fmt: skip


def walk_element(walk: DateMatch) -> dict[str, Any]:
    """The walk condition's filter with the window's top as a bound on `lo` (implied by the
    condition, so it matches the same resources): the range index is then read between
    the window's ends, not from its start to the end of the parameter's values."""
    element = _compile(walk)
    body = element["idx"]["$elemMatch"]
    top = _TOP_OF_WINDOW.get(walk.prefix)
    if top is not None:
        body["lo"] = {**body.get("lo", {}), top[0]: walk.low if top[1] == "low" else walk.high}
    return element


def walk_entry(walk: DateMatch) -> dict[str, Any]:
    """The same condition on one unwound `idx` entry: which of a resource's values are in
    the window (its place in the walk is the latest of them)."""
    ranges = _ranges(walk.prefix, _text(walk.low), _text(walk.high), "idx.lo", "idx.hi")
    return {"idx.k": "d", "idx.p": _text(walk.param), **ranges}
