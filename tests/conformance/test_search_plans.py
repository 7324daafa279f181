"""Every search is index-bound: the SQLite plan never scans an index table.

`SqliteStorage.explain` shows EXPLAIN QUERY PLAN for the SQL a search compiles to.  A plan
line `SCAN idx_…` would mean a full pass over a search-value table; each parameter type,
chains and reverse chains must use an index instead.  MongoDB's filters are checked the other
way round: every field they filter on inside `idx` is the leading part of a declared index;
`test_mongo_plans.py` names, for each of these queries, the index MongoDB must read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.search.mongo import compile_where
from fhir_server.search.parser import parse_search
from fhir_server.storage.mongo.documents import INDEXES, RESOURCES
from fhir_server.storage.sqlite.engine import SqliteStorage

QUERIES = [
    ("Patient", [("identifier", "http://electronichealth.se/identifier/personnummer|1912")]),
    ("Patient", [("family", "berg")]),
    ("Patient", [("name:exact", "Berg")]),
    ("Patient", [("birthdate", "ge1950-01-01"), ("birthdate", "lt1960")]),
    ("Patient", [("gender:missing", "true")]),
    ("Observation", [("value-quantity", "gt100|http://unitsofmeasure.org|mm[Hg]")]),
    ("Observation", [("code:text", "body")]),
    ("CarePlan", [("subject", "Patient/p1")]),
    ("CarePlan", [("subject:Patient.identifier", "urn:x|1")]),
    ("Patient", [("_has:CarePlan:subject:status", "active")]),
    ("Appointment", [("actor", "Organization/o1"), ("_sort", "-date")]),
    ("Observation", [("component-code-value-quantity", "http://loinc.org|8480-6$gt140")]),
    ("StructureDefinition", [("url", "http://sip-fhir.se/fhir/StructureDefinition/x")]),
    ("CarePlan", [("instantiates-canonical", "http://example.org/PlanDefinition/sip")]),
    ("Patient", [("identifier", "http://electronichealth.se/identifier/personnummer|")]),
    ("Patient", [("name:exact", "Åsa")]),
]


@pytest.mark.parametrize(("type", "params"), QUERIES, ids=[str(p) for _, p in QUERIES])
async def test_sqlite_plans_use_indexes(tmp_path: Path, type: str, params: list) -> None:
    storage = SqliteStorage(tmp_path / "plans.sqlite3")
    await storage.open()
    try:
        plan = await storage.explain(parse_search(type, params).query)
    finally:
        await storage.close()
    assert plan, "no plan"
    scans = [line for line in plan if line.startswith("SCAN") and "idx_" in line]
    assert scans == [], plan


def _idx_fields(filter_: object) -> set[str]:
    found: set[str] = set()
    if isinstance(filter_, dict):
        for key, value in filter_.items():
            if key == "$elemMatch" and isinstance(value, dict):
                found |= {f"idx.{k}" for k in value if not k.startswith("$")}
            found |= _idx_fields(value)
    elif isinstance(filter_, list):
        for item in filter_:
            found |= _idx_fields(item)
    return found


DIRECT = [(t, p) for t, p in QUERIES if not any("." in n or "_has" in n for n, _ in p)]


@pytest.mark.parametrize(("type", "params"), DIRECT, ids=[str(p) for _, p in DIRECT])
def test_mongo_filters_lead_with_indexed_fields(type: str, params: list) -> None:
    """(Chains are resolved into id lists before compiling; those filter on `type_id`.)"""
    query = parse_search(type, params).query
    fields = _idx_fields(compile_where(query.where)) - {"idx.k"}
    indexed = {
        tuple(name for name, _ in keys)
        for collection, keys, _ in INDEXES
        if collection == RESOURCES
    }
    assert any(
        keys[:2] == ("type", "idx.p") and any(f in keys for f in fields - {"idx.p"})
        for keys in indexed
    ) or fields == {"idx.p"}, (fields, indexed)


async def test_sqlite_open_brings_indexes_to_the_declared_schema(tmp_path: Path) -> None:
    """An index the schema no longer declares is dropped at open; a changed one is rebuilt."""
    import sqlite3

    from fhir_server.storage.sqlite.schema import declared_indexes

    path = tmp_path / "old.sqlite3"
    storage = SqliteStorage(path)
    await storage.open()
    await storage.close()
    with sqlite3.connect(path) as db:  # an older schema: other indexes than today's
        db.execute("DROP INDEX idx_date_by_owner")
        db.execute("CREATE INDEX idx_date_by_owner ON idx_date (type, id, param)")
        db.execute("CREATE INDEX idx_date_owner ON idx_date (type, id)")
    storage = SqliteStorage(path)
    await storage.open()
    await storage.close()
    with sqlite3.connect(path) as db:
        found = dict(
            db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        )
    assert found == declared_indexes()


async def test_sqlite_walks_a_date_window_down_the_date_index_and_stops_after_a_page(
    tmp_path: Path,
) -> None:
    """An unsorted date window is read in date order from the index (no sort step, no pass
    over the type), so its cost does not grow with the table."""
    storage = SqliteStorage(tmp_path / "walk.sqlite3")
    await storage.open()
    try:
        params = [("date", "ge2026-03-01"), ("date", "lt2026-03-08"), ("status", "booked")]
        plan = await storage.explain(parse_search("Appointment", params).query)
    finally:
        await storage.close()
    assert plan[0].startswith("SEARCH x USING COVERING INDEX idx_date_0"), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan
