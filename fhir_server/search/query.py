"""The typed query tree: what a search means, with no knowledge of any engine.

The parser builds it from request parameters; `sql.py` and `mongo.py` compile it. User text
only ever appears here as values, never as field names or operators.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IdIn:
    """`_id=a,b`: the resource's logical id is one of these."""

    ids: tuple[str, ...]


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
class AnyOf:
    """Comma-separated alternatives of one parameter: at least one must match."""

    terms: tuple[IdIn | TokenMatch, ...]


Condition = IdIn | TokenMatch | AnyOf


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search over the current versions of one resource type.

    `where` is a conjunction (parameters repeated or combined with `&`). Results are ordered by
    id; `after` is the keyset position of the previous page, so paging stays stable while data
    changes.
    """

    type: str
    where: tuple[Condition, ...] = ()
    count: int = 20
    after: str | None = None
    total: bool = True
