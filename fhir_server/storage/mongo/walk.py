"""SQLite's date-window walk on MongoDB: the same order, the same keyset positions.

Why: an unsorted search with a date window bounded from above (`search.sql.date_walk`)
comes back latest first on SQLite, each resource once at its latest value inside the window,
ordered (lo, hi, id) descending, pages keyed by that triple.  Users (and the `next` links,
which carry the triple) must get the same from either engine.

MongoDB cannot sort a multikey array by the element a filter matched, so the walk is an
aggregation: the `$match` reads `type_idx_range` between the window's ends (the window's end
bounds `lo`, as SQLite's walk starts there), each matching resource's window values are
unwound, its latest kept, and the page sorted and cut.  The cost follows the window's size,
not the type's; only ids and index entries pass through the pipeline, and the page's
documents are fetched by `_id` at the end.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import error
from fhir_server.search.mongo import compile_where, walk_element, walk_entry
from fhir_server.search.query import DateMatch, SearchQuery
from fhir_server.storage.mongo.budget import Budget
from fhir_server.storage.mongo.documents import VERSION_FIELDS, to_version
from fhir_server.storage.port import Page

WALK_INDEX = "type_idx_range"  # SQLite's walk reads idx_date_0 the same way


def walk_match(query: SearchQuery, walk: DateMatch) -> dict[str, Any]:
    """The search's filter, its walk condition bounded by the window's end."""
    rest = compile_where(c for c in query.where if c is not walk)
    parts = [walk_element(walk), *rest.get("$and", [])]
    return {"type": query.type, "deleted": False, "$and": parts}


async def walk_page(resources: Any, query: SearchQuery, walk: DateMatch, budget: Budget) -> Page:
    match = walk_match(query, walk)
    total = None
    if query.total:
        total = await resources.count_documents(match, maxTimeMS=budget.ms(), hint=WALK_INDEX)
    pipeline: list[dict[str, Any]] = [
        {"$match": match},
        {"$project": {"id": 1, "idx": 1}},
        {"$unwind": "$idx"},
        {"$match": walk_entry(walk)},
        {"$sort": {"idx.lo": -1, "idx.hi": -1, "id": -1}},
        {
            "$group": {  # each resource at its latest value in the window
                "_id": "$_id",
                "id": {"$first": "$id"},
                "lo": {"$first": "$idx.lo"},
                "hi": {"$first": "$idx.hi"},
            }
        },
    ]
    if query.after_key is not None:
        pipeline.append({"$match": _after(query.after_key)})
    pipeline.append({"$sort": {"lo": -1, "hi": -1, "id": -1}})
    offset = query.offset if query.after_key is None else 0
    if offset:
        pipeline.append({"$skip": offset})
    pipeline.append({"$limit": query.count + 1})
    cursor = await resources.aggregate(  # a coroutine in PyMongo async, giving the cursor
        pipeline, hint=WALK_INDEX, maxTimeMS=budget.ms(), allowDiskUse=True
    )
    rows = await cursor.to_list(None)
    page = rows[: query.count]
    found = resources.find({"_id": {"$in": [r["_id"] for r in page]}}, VERSION_FIELDS)
    documents = {d["_id"]: d async for d in found.max_time_ms(budget.ms())}
    # A resource deleted since the pipeline read it is left out, as a later read would.
    items = [to_version(documents[r["_id"]]) for r in page if r["_id"] in documents]
    last_key = [page[-1]["lo"], page[-1]["hi"], page[-1]["id"]] if page else None
    return Page(items, total, has_more=len(rows) > query.count, last_key=last_key, keyed=True)


def _after(last: tuple[Any, ...]) -> dict[str, Any]:
    """Strictly after (lo, hi, id) in the walk's descending order (SQLite's too)."""
    if len(last) != 3 or not all(isinstance(v, str) for v in last):
        raise error(400, "invalid", "'_cursor' is not a paging position", "_cursor")
    lo, hi, id = last
    return {
        "$or": [
            {"lo": {"$lt": lo}},
            {"lo": lo, "hi": {"$lt": hi}},
            {"lo": lo, "hi": hi, "id": {"$lt": id}},
        ]
    }
