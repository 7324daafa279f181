"""Search semantics in memory, over a resource's index entries: how a unit of work answers
for its own writes without asking the database.

Two uses, one matcher for every engine: MongoDB overlays the buffered writes on what the
database answers, and a search scoped to resources created in the unit of work itself (its
reference targets one of them) needs no database at all (`scoped_to`). The conditions are
those the engines compile, chains and `_has` already resolved (`RefIn`, `IdIn`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from fhir_server.search.query import (
    AnyOf,
    CompositeMatch,
    Condition,
    DateMatch,
    IdIn,
    IndexKind,
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
from fhir_server.search.ranges import holds, range_terms
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


@dataclass(frozen=True, slots=True)
class RefIn:
    """A resolved chain: `param` refers to one of these `target` resources."""

    param: str
    target: str
    ids: frozenset[str]


Resolved = Condition | RefIn

_KINDS: dict[IndexKind, type] = {
    "token": TokenIndex,
    "string": StringIndex,
    "date": DateIndex,
    "number": NumberIndex,
    "quantity": QuantityIndex,
    "reference": ReferenceIndex,
    "uri": UriIndex,
    "composite": CompositeIndex,
}


def matches(
    conditions: Iterable[Resolved],
    resource_id: str,
    index: Sequence[IndexEntry],
    last_updated: str = "",
) -> bool:
    """Whether a resource with this id, index and instant satisfies every condition, as the
    engines' compiled filters decide it."""
    return all(_matches(c, resource_id, index, last_updated) for c in conditions)


def scoped_to(conditions: Iterable[Condition], created: Collection[tuple[str, str]]) -> bool:
    """Whether every match must refer to a resource in `created` (type, id): the conditions
    AND a reference to such targets only, and join no other type. A resource created in a
    unit of work under an id drawn at random is referred to by nothing stored before it, so
    then the unit of work's own writes hold the whole answer."""
    conditions = tuple(conditions)
    if not all(_local(c) for c in conditions):
        return False
    return any(_targets_created(c, created) for c in conditions)


def _local(c: Condition) -> bool:
    match c:
        case Not(term=term):
            return _local(term)
        case AnyOf(terms=terms):
            return all(_local(t) for t in terms)
        case CompositeMatch(parts=parts):
            return all(_local(p) for p in parts)
    return isinstance(
        c,
        IdIn | LastUpdated | TokenMatch | TextMatch | StringMatch | DateMatch | NumberMatch
        | QuantityMatch | ReferenceMatch | UriMatch | Missing,
    )  # fmt: skip


def _targets_created(c: Condition, created: Collection[tuple[str, str]]) -> bool:
    match c:
        case ReferenceMatch(type=target, id=id) if id is not None:
            if target is not None:
                return (target, id) in created
            return any(created_id == id for _, created_id in created)
        case AnyOf(terms=terms):
            return bool(terms) and all(_targets_created(t, created) for t in terms)
    return False


def _of(index: Sequence[IndexEntry], kind: type, param: str) -> list[IndexEntry]:
    return [e for e in index if type(e) is kind and e.param == param]


def _matches(c: Resolved, rid: str, index: Sequence[IndexEntry], last_updated: str) -> bool:
    match c:
        case IdIn(ids=ids):
            return rid in ids
        case LastUpdated(prefix=prefix, low=low, high=high):
            return holds(range_terms(prefix, low, high), last_updated, last_updated)
        case TokenMatch(param=param, system=system, code=code):
            return any(
                (system is None or e.system == (system or None))
                and (code is None or e.code == code)
                for e in _of(index, TokenIndex, param)
            )
        case TextMatch(param=param, value=value):
            return any(e.value.startswith(value) for e in _of(index, TextIndex, param))
        case StringMatch(param=param, value=value, mode=mode):
            found = _of(index, StringIndex, param)
            if mode == "exact":
                return any(e.exact == value for e in found)
            if mode == "contains":
                return any(value in e.value for e in found)
            return any(e.value.startswith(value) for e in found)
        case DateMatch(param=param, prefix=prefix, low=low, high=high):
            terms = range_terms(prefix, low, high)
            return any(holds(terms, e.low, e.high) for e in _of(index, DateIndex, param))
        case NumberMatch(param=param, prefix=prefix, low=low, high=high):
            terms = range_terms(prefix, low, high)
            return any(holds(terms, e.low, e.high) for e in _of(index, NumberIndex, param))
        case QuantityMatch(param=param, prefix=prefix, low=low, high=high, system=s, code=code):
            terms = range_terms(prefix, low, high)
            return any(
                holds(terms, e.low, e.high)
                and (s is None or e.system == s)
                and (code is None or e.code == code or (s is None and e.unit == code))
                for e in _of(index, QuantityIndex, param)
            )
        case ReferenceMatch(param=param, type=target, id=id, url=url):
            return any(
                (id is not None and e.id == id and target in (None, e.type))
                or (url is not None and e.url == url)
                for e in _of(index, ReferenceIndex, param)
            )
        case RefIn(param=param, target=target, ids=ids):
            return any(e.type == target and e.id in ids for e in _of(index, ReferenceIndex, param))
        case UriMatch(param=param, value=value, mode=mode):
            found = _of(index, UriIndex, param)
            if mode == "above":
                return any(value.startswith(e.value) for e in found)
            if mode == "below":
                return any(e.value.startswith(value) for e in found)
            return any(e.value == value for e in found)
        case CompositeMatch(param=param, parts=parts):
            return any(
                all(
                    _matches(part, rid, list(e.parts[i : i + 1]), last_updated)
                    for i, part in enumerate(parts)
                )
                for e in _of(index, CompositeIndex, param)
            )
        case Missing(param=param, kind=kind, missing=missing):
            return bool(_of(index, _KINDS[kind], param)) != missing
        case Not(term=term):
            return not _matches(term, rid, index, last_updated)
        case AnyOf(terms=terms):
            return any(_matches(t, rid, index, last_updated) for t in terms)
    raise TypeError(f"unknown condition {c!r}")
