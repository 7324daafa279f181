"""Compile the query tree to a MongoDB filter document.

Every key in the output is a fixed field name or operator written here; user text only ever
lands in value positions, and every value is checked to be a plain `str`, so a value such as
`{"$where": ...}` or `"$gt"` is compared literally and can never become an operator.

The search values of a resource live in its current document as an array `idx` of small
entries (`{"p": param, "s": system, "c": code}` for tokens; Cosmos DB's layout), so one token
alternative is one `$elemMatch` over that array. `matches` evaluates the same semantics in
memory, for a unit of work's not yet committed writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fhir_server.search.query import AnyOf, Condition, IdIn, TokenMatch
from fhir_server.storage.port import IndexEntry, TokenIndex

# Matches no document: `$or: []` is invalid in MongoDB, so an empty alternative needs this.
_NOTHING: dict[str, Any] = {"id": {"$in": []}}


def compile_where(conditions: Iterable[Condition]) -> dict[str, Any]:
    """AND of all conditions as one filter document; `{}` when there are none."""
    parts = [_compile(condition) for condition in conditions]
    return {"$and": parts} if parts else {}


def index_document(entry: IndexEntry) -> dict[str, Any]:
    """The stored form of one index entry: what `compile_where` filters on."""
    if isinstance(entry, TokenIndex):
        return {
            "p": _text(entry.param),
            "s": _optional_text(entry.system),
            "c": _optional_text(entry.code),
        }
    raise TypeError(f"unsupported index entry {entry!r}")


def matches(
    conditions: Iterable[Condition], resource_id: str, index: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a resource with this id and these stored index entries satisfies the filter
    `compile_where(conditions)` would build (used for buffered, uncommitted writes)."""
    return all(_matches(condition, resource_id, index) for condition in conditions)


def _compile(condition: Condition) -> dict[str, Any]:
    match condition:
        case IdIn(ids=ids):
            return {"id": {"$in": [_text(value) for value in ids]}}
        case TokenMatch(param=param, system=system, code=code):
            element: dict[str, Any] = {"p": _text(param)}
            if system == "":
                element["s"] = None  # no system: null or absent
            elif system is not None:
                element["s"] = _text(system)
            if code is not None:
                element["c"] = _text(code)
            return {"idx": {"$elemMatch": element}}
        case AnyOf(terms=terms):
            alternatives = [_compile(term) for term in terms]
            return {"$or": alternatives} if alternatives else _NOTHING
    raise TypeError(f"unknown condition {condition!r}")


def _matches(condition: Condition, resource_id: str, index: Sequence[Mapping[str, Any]]) -> bool:
    match condition:
        case IdIn(ids=ids):
            return resource_id in ids
        case TokenMatch(param=param, system=system, code=code):
            return any(
                entry.get("p") == param
                and (system is None or entry.get("s") == (system or None))
                and (code is None or entry.get("c") == code)
                for entry in index
            )
        case AnyOf(terms=terms):
            return any(_matches(term, resource_id, index) for term in terms)
    raise TypeError(f"unknown condition {condition!r}")


def _text(value: object) -> str:
    """Only plain strings may reach a filter: a dict or list here could carry operators."""
    if type(value) is not str:
        raise TypeError(f"search value must be str, not {type(value).__name__}")
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)
