"""The typed query tree: what a search means, with no knowledge of any engine.

The parser builds it from request parameters; `sql.py` and `mongo.py` compile it, and
`evaluate.py` is the same semantics in Python (for a unit of work's uncommitted writes and as
the reference the engines are tested against).  User text only ever appears here as values,
never as field names or operators.

Ranges: dates are fixed-width UTC texts, numbers floats.  A prefix compares the search
value's range [low, high] with a stored range [lo, hi] as the FHIR R4 search page says:
eq: low <= lo and hi <= high; ne: not eq; gt: hi > high; lt: lo < low; ge: gt or eq;
le: lt or eq; sa: lo > high; eb: hi < low; ap: the ranges overlap once the search range is
widened by 10 % of the value (a day for dates).  A resource matches if one of its values does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
PREFIXES: tuple[Prefix, ...] = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True, slots=True)
class IdIn:
    """`_id=a,b`: the resource's logical id is one of these."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LastUpdated:
    """`_lastUpdated`: the current version's instant against a range (prefix semantics)."""

    prefix: Prefix
    low: str
    high: str


@dataclass(frozen=True, slots=True)
class TokenMatch:
    """One token alternative: `code`, `system|code`, `|code` (no system) or `system|`.

    `system=None` means any system; `system=""` means the value has no system;
    `code=None` means any code in `system`.
    """

    param: str
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TextMatch:
    """`:text` on a token: the folded display/text starts with `value` (already folded)."""

    param: str
    value: str


@dataclass(frozen=True, slots=True)
class StringMatch:
    """A string: `start` (default: folded prefix), `exact` (as written), `contains` (folded)."""

    param: str
    value: str
    mode: Literal["start", "exact", "contains"]


@dataclass(frozen=True, slots=True)
class DateMatch:
    param: str
    prefix: Prefix
    low: str
    high: str


@dataclass(frozen=True, slots=True)
class NumberMatch:
    param: str
    prefix: Prefix
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityMatch:
    """A quantity: the number semantics plus system and code (code may match the unit)."""

    param: str
    prefix: Prefix
    low: float
    high: float
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceMatch:
    """A reference: a local target (type may be None: any allowed type) or a url."""

    param: str
    type: str | None
    id: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class UriMatch:
    """A uri: exact, or `above` (stored is a prefix of value) / `below` (value a prefix)."""

    param: str
    value: str
    mode: Literal["exact", "above", "below"]


@dataclass(frozen=True, slots=True)
class CompositeMatch:
    """`a$b`: one composite entry whose part i matches `parts[i]` (their `param` is `#`)."""

    param: str
    parts: tuple[Condition, ...]


IndexKind = Literal[
    "token", "string", "date", "number", "quantity", "reference", "uri", "composite"
]


@dataclass(frozen=True, slots=True)
class Missing:
    """`:missing=true|false`: whether the resource has no value for `param` at all."""

    param: str
    kind: IndexKind
    missing: bool


@dataclass(frozen=True, slots=True)
class Not:
    """`:not` (and `ne`): no value of the parameter matches; resources without one match."""

    term: Condition


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Comma-separated alternatives of one parameter: at least one must match."""

    terms: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    """`subject:Patient.name=x`: `param` references a `target` resource matching `where`."""

    param: str
    target: str
    where: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Has:
    """`_has:Observation:subject:code=x`: a `source` resource whose `param` points here matches."""

    source: str
    param: str
    where: tuple[Condition, ...]


Condition = (
    IdIn
    | LastUpdated
    | TokenMatch
    | TextMatch
    | StringMatch
    | DateMatch
    | NumberMatch
    | QuantityMatch
    | ReferenceMatch
    | UriMatch
    | CompositeMatch
    | Missing
    | Not
    | AnyOf
    | Chain
    | Has
)


@dataclass(frozen=True, slots=True)
class SortKey:
    """`_sort`: a parameter (or `_id`, `_lastUpdated`), descending if written `-name`."""

    param: str
    kind: IndexKind | Literal["id", "lastUpdated"]
    descending: bool


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search over the current versions of one resource type.

    `where` is a conjunction (parameters repeated or combined with `&`).  Without `sort`,
    results are ordered by id and `after` is the last id of the previous page, or `before`
    the first id of the next one (keyset paging, stable while data changes); with `sort`,
    `after_key` (the last sort values) or `offset` pages through the sorted result.  An
    engine may answer an unsorted search in another stable order (SQLite walks a bounded date
    window in date order); it then marks the page `keyed`, and paging works as when sorted.
    """

    type: str
    where: tuple[Condition, ...] = ()
    count: int = 20
    after: str | None = None
    before: str | None = None  # keyset backwards: the page that ends just before this id
    total: bool = True
    sort: tuple[SortKey, ...] = ()
    offset: int = 0
    # Sorted keyset position: the previous page's last sort values and id.
    after_key: tuple[Any, ...] | None = None
    # Results must come in id order (system search pages across types by (type, id)).
    id_order: bool = False


def terms(condition: Condition) -> int:
    """How many leaf matches a condition expands to: what the engines compile and run.

    Why: a search's cost grows with this count (each leaf is a subquery on SQLite, an
    `$elemMatch` on MongoDB; a chain or `_has` multiplies its inner leaves by the target
    types it fans out to), so the parser caps it before any engine sees the tree.  An `_id`
    list is one leaf (one JSON parameter, one `$in`).
    """
    match condition:
        case AnyOf(terms=alternatives):
            return sum(terms(t) for t in alternatives)
        case Chain(where=where) | Has(where=where):
            return 1 + sum(terms(c) for c in where)
        case Not(term=term):
            return terms(term)
        case CompositeMatch(parts=parts):
            return len(parts)
    return 1
