"""MongoDB's index plans for the searches whose SQLite plans `test_search_plans` checks.

Each query names the index the MongoDB engine must read.  Two ways to hold it to that:

* on the mongomock double (always): the double records every read the engine sends; each
  search read must carry a `hint` naming the expected declared index, and its filter must
  bound that index's leading keys (`type` by equality, then `idx.p` and the next keys inside
  one `$elemMatch`), so a real planner given the hint gets tight bounds, not a full scan;
* on a real server (only when FHIR_TEST_MONGODB_URI is set; otherwise reported as skipped,
  with that reason): `explain()`'s winning plan is an IXSCAN of that index, no COLLSCAN.

And the date-window walk: both engines return a window's matches in the same order
((lo, hi, id) descending) and page it with the same keyset positions.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search.parser import parse_search
from fhir_server.storage.mongo import MongoStorage
from fhir_server.storage.mongo.documents import INDEXES, RESOURCES
from fhir_server.storage.port import AccessFilter, DateIndex, ResourceVersion, Storage
from tests.conformance.test_search_plans import QUERIES
from tests.engines import MONGODB_URI
from tests.mongo_double import MongoDouble, Query

ALL = AccessFilter()
WALK = [("date", "ge2026-03-01"), ("date", "lt2026-03-08"), ("status", "booked")]

# Query id -> (resource type read, index it must use) for each read the search makes, and
# how many leading keys of that index the filter bounds.  Chains read their targets first.
EXPECTED: dict[str, list[tuple[str, str, int]]] = {
    str(QUERIES[0][1]): [("Patient", "type_idx_system", 4)],
    str(QUERIES[1][1]): [("Patient", "type_idx_value", 3)],
    str(QUERIES[2][1]): [("Patient", "type_idx_exact", 3)],
    str(QUERIES[3][1]): [("Patient", "type_idx_range", 3)],  # a date window: the walk
    str(QUERIES[4][1]): [("Patient", "type_id", 1)],  # `:missing=true`: nothing to bound
    str(QUERIES[5][1]): [("Observation", "type_idx_range", 2)],  # gt: `hi` only
    str(QUERIES[6][1]): [("Observation", "type_idx_value", 3)],
    str(QUERIES[7][1]): [("CarePlan", "type_idx_target", 4)],
    str(QUERIES[8][1]): [("Patient", "type_idx_system", 4), ("CarePlan", "type_idx_target", 4)],
    str(QUERIES[9][1]): [("CarePlan", "type_idx_code", 3), ("Patient", "type_id", 2)],
    str(QUERIES[10][1]): [("Appointment", "type_idx_target", 4)],
    str(QUERIES[11][1]): [("Observation", "type_idx_code", 2)],  # composite: by parameter
    str(QUERIES[12][1]): [("StructureDefinition", "type_idx_value", 3)],
    str(QUERIES[13][1]): [("CarePlan", "type_idx_target", 2)],  # target or url: `$or`
    str(QUERIES[14][1]): [("Patient", "type_idx_system", 3)],
    str(QUERIES[15][1]): [("Patient", "type_idx_exact", 3)],
    str(WALK): [("Appointment", "type_idx_range", 3)],
}
CASES = [*QUERIES, ("Appointment", WALK)]
KEYS = {o["name"]: [n for n, _ in keys] for c, keys, o in INDEXES if c == RESOURCES}


def test_every_sqlite_plan_query_has_a_mongo_expectation() -> None:
    assert set(EXPECTED) == {str(params) for _, params in CASES}
    assert {index for reads in EXPECTED.values() for _, index, _ in reads} <= set(KEYS)


@pytest.fixture
def double() -> MongoDouble:
    return MongoDouble()


@pytest.fixture
async def mocked(double: MongoDouble) -> AsyncIterator[MongoStorage]:
    storage = MongoStorage.from_client(double, f"fhir_plans_{uuid.uuid4().hex[:8]}")
    await storage.open()
    yield storage
    await storage.close()


def _conjuncts(filter_: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key, value in filter_.items():
        if key == "$and":
            for part in value:
                yield from _conjuncts(part)
        else:
            yield {key: value}


def _bounded(filter_: dict[str, Any], keys: list[str]) -> int:
    """How many leading keys of an index the filter bounds: top-level fields by themselves,
    `idx.*` keys only together, inside one `$elemMatch` (multikey bounds compound only
    there)."""
    parts = list(_conjuncts(filter_))
    top = {k for part in parts for k in part if not k.startswith("$") and k != "idx"}
    elements = [
        p["idx"]["$elemMatch"]
        for p in parts
        if isinstance(p.get("idx"), dict) and "$elemMatch" in p["idx"]
    ]
    best = 0
    for element in elements or [{}]:
        n = 0
        for key in keys:
            inner = key.removeprefix("idx.") if key.startswith("idx.") else None
            if (inner is None and key in top) or (inner is not None and inner in element):
                n += 1
            else:
                break
        best = max(best, n)
    return best


def _search_reads(double: MongoDouble) -> list[Query]:
    """The reads of `resources` by type (the walk's last step fetches its page by `_id`)."""
    return [
        q
        for q in double.queries
        if q.collection == RESOURCES and isinstance(q.filter, dict) and "type" in q.filter
    ]


@pytest.mark.parametrize(("type", "params"), CASES, ids=[str(p) for _, p in CASES])
async def test_mongo_reads_hint_the_expected_index_and_bound_its_keys(
    mocked: MongoStorage, double: MongoDouble, type: str, params: list
) -> None:
    """On the double: what the engine sends, read by read (count, page, chain lookups)."""
    double.queries.clear()
    await mocked.search(parse_search(type, params).query, ALL)
    reads = _search_reads(double)
    assert reads, double.queries
    expected = EXPECTED[str(params)]
    assert {(q.filter["type"], q.hint) for q in reads} == {(t, i) for t, i, _ in expected}
    depth = {(t, i): d for t, i, d in expected}
    for q in reads:
        assert q.hint in KEYS, q
        bounded = _bounded(q.filter, KEYS[q.hint])
        assert bounded >= depth[(q.filter["type"], q.hint)], (q, KEYS[q.hint])
    others = [q for q in double.queries if q.collection == RESOURCES and q not in reads]
    assert all(set(q.filter) == {"_id"} for q in others), others  # by primary key only


def _stages(plan: Any) -> Iterator[dict[str, Any]]:
    if isinstance(plan, dict):
        if "stage" in plan:
            yield plan
        for value in plan.values():
            yield from _stages(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _stages(item)


@pytest.mark.skipif(not MONGODB_URI, reason="real-server explain(): set FHIR_TEST_MONGODB_URI")
@pytest.mark.parametrize(("type", "params"), CASES, ids=[str(p) for _, p in CASES])
async def test_real_server_explain_wins_with_an_ixscan_of_the_expected_index(
    type: str, params: list
) -> None:
    """Only against a real server: `explain()` of the page query the engine sends."""
    assert MONGODB_URI is not None
    storage = MongoStorage(MONGODB_URI, f"fhir_plans_{uuid.uuid4().hex[:8]}")
    await storage.open()
    try:
        explained = await storage.explain(parse_search(type, params).query)
        await storage.client.drop_database(storage.db.name)
    finally:
        await storage.close()
    winning = explained["queryPlanner"]["winningPlan"]
    stages = list(_stages(winning))
    _, index, _ = EXPECTED[str(params)][-1]  # the outer search's read comes last
    assert not [s for s in stages if s["stage"] == "COLLSCAN"], winning
    assert [s for s in stages if s["stage"] == "IXSCAN" and s.get("indexName") == index], winning


# -- the date-window walk: the same order on both engines -----------------------------------


def _day(day: str) -> DateIndex:
    return DateIndex("date", f"{day}T00:00:00.000000Z", f"{day}T23:59:59.999999Z")


async def test_a_date_window_pages_in_the_same_order_on_every_engine(storage: Storage) -> None:
    """Latest value in the window first, ties by id descending; a resource once, at its
    latest value inside the window (values outside do not move it)."""
    days = {
        "a": ["2026-03-02", "2026-03-05"],
        "b": ["2026-03-05"],
        "c": ["2026-02-01"],  # outside
        "d": ["2026-03-01", "2026-04-01"],  # its April value is outside the window
        "e": ["2026-03-07"],
        "f": ["2026-03-03"],
    }
    for id, values in days.items():
        body = f'{{"resourceType":"Appointment","id":"{id}"}}'.encode()
        version = ResourceVersion("Appointment", id, 1, "2026-01-01T00:00:00.000000Z", "POST", body)
        async with storage.unit_of_work() as unit:
            await unit.put(version, [_day(d) for d in values])
    window = [("date", "ge2026-03-01"), ("date", "lt2026-03-08"), ("_count", "2")]
    query = parse_search("Appointment", window).query
    pages: list[list[str]] = []
    keys: list[Any] = []
    while True:
        page = await storage.search(query, ALL)
        assert page.keyed and page.total == 5
        pages.append([v.id for v in page.items])
        keys.append(page.last_key)
        if not page.has_more:
            break
        query = dataclasses.replace(query, after_key=tuple(page.last_key or ()), offset=0)
    assert pages == [["e", "b"], ["a", "f"], ["d"]]
    assert keys[0] == ["2026-03-05T00:00:00.000000Z", "2026-03-05T23:59:59.999999Z", "b"]


async def test_the_mongo_walk_reads_the_range_index_between_the_windows_ends(
    mocked: MongoStorage, double: MongoDouble, tmp_path: Path
) -> None:
    """The walk's `$match` bounds `lo` from above by the window's end (SQLite's walk starts
    there too), so the range index is not read to the end of the parameter's values."""
    double.queries.clear()
    await mocked.search(parse_search("Appointment", WALK).query, ALL)
    (walk,) = [q for q in double.queries if q.operation == "aggregate"]
    assert walk.hint == "type_idx_range"
    bounds = [
        p["idx"]["$elemMatch"]["lo"]
        for p in _conjuncts(walk.filter)
        if "idx" in p and "lo" in p["idx"].get("$elemMatch", {})
    ]
    assert {"$lt": "2026-03-08T00:00:00.000000Z"} in bounds, walk.filter
