"""Which declared index drives a query: the `hint` every search and chain lookup carries.

Why a hint: MongoDB's planner races candidate plans on the first documents and may pick
`type_id`, which yields the id order for free, over the selective search-value index, then
walk every resource of the type.  SQLite's plans are pinned the same way (`INDEXED BY`,
CROSS JOIN), and the plan tests hold both engines to the indexes named here.

The choice reads the compiled filter, i.e. what is sent: among the top-level conditions the
most selective kind of match wins (an id list, a reference, a token with a system, ...), and
the index is the one whose keys after `type` and `idx.p` are the fields that match bounds.
A filter with nothing else to drive it (only negations, `_lastUpdated`, `:missing=true`) gets
`type_id`: the type's resources in id order, each condition checked per document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_server.storage.mongo.documents import INDEXES, RESOURCES

# Index names by selectivity, most selective first.
_RANK = [
    "type_id",
    "type_idx_target",
    "type_idx_system",
    "type_idx_exact",
    "type_idx_url",
    "type_idx_code",
    "type_idx_value",
    "type_idx_range",
]
# The index of a bare `{k, p}` element match (a `:missing=false`), by entry kind.
_BY_KIND = {"t": "type_idx_code", "c": "type_idx_code", "x": "type_idx_value",
            "s": "type_idx_value", "u": "type_idx_value", "d": "type_idx_range",
            "n": "type_idx_range", "q": "type_idx_range", "r": "type_idx_target"}  # fmt: skip

RESOURCE_INDEXES: dict[str, list[str]] = {
    options["name"]: [name for name, _ in keys]
    for collection, keys, options in INDEXES
    if collection == RESOURCES
}


def choose_index(filter_: Mapping[str, Any]) -> str | None:
    """The `resources` index for `filter_` (`{type, deleted, $and: [...]}`), or None."""
    parts = [{k: v} for k, v in filter_.items() if k != "$and"]
    parts += list(filter_.get("$and", []))
    found = [index for part in parts if (index := _part_index(part)) is not None]
    if found:
        return min(found, key=_RANK.index)
    return "type_id" if "type" in filter_ else None


def _part_index(part: Mapping[str, Any]) -> str | None:
    if len(part) != 1:  # an implicit AND of several fields: the first that drives
        found = [i for k, v in part.items() if (i := _part_index({k: v})) is not None]
        return min(found, key=_RANK.index) if found else None
    ((key, value),) = part.items()
    if key == "id":
        return "type_id"
    if key == "$and":
        found = [i for p in value if (i := _part_index(p)) is not None]
        return min(found, key=_RANK.index) if found else None
    if key == "$or":  # one index for every branch, or none (a hint cannot serve two)
        branches = {_part_index(branch) for branch in value}
        return branches.pop() if len(branches) == 1 else None
    if key == "idx" and isinstance(value, Mapping) and "$elemMatch" in value:
        return _element_index(value["$elemMatch"])
    return None  # type, deleted, last_updated, $nor, idx $not: no bounds on an index


def _element_index(match: Mapping[str, Any]) -> str | None:
    kind = match.get("k")
    fields = set(match) - {"k", "p"}
    if kind == "t":
        return "type_idx_system" if "s" in fields else "type_idx_code"
    if kind in ("s", "x", "u"):
        return "type_idx_exact" if "e" in fields else "type_idx_value"
    if kind == "r":
        if "i" in fields:
            return "type_idx_target"
        # Only a url: its own index; a local target or url (`$or`): the target index,
        # bounded by the parameter (one hinted index cannot serve both branches).
        return "type_idx_url" if fields == {"u"} else "type_idx_target"
    return _BY_KIND.get(str(kind))
