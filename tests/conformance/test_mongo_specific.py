"""MongoDB-engine specifics: leases, buffered units of work, the fallback commit, the compiler.

The shared port tests run on every engine elsewhere; these construct the engine directly on
the mongomock double (`tests/mongo_double.py`, a standalone server to the engine: always the
non-transactional fallback path).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_server.search.mongo import compile_where
from fhir_server.search.overlay import matches
from fhir_server.search.query import AnyOf, Condition, IdIn, SearchQuery, TokenMatch
from fhir_server.storage.mongo import MongoStorage
from fhir_server.storage.mongo.documents import history_document
from fhir_server.storage.mongo.locks import acquire_lease
from fhir_server.storage.port import (
    AccessFilter,
    HistoryCursor,
    HistoryQuery,
    LockTimeout,
    ResourceVersion,
    TokenIndex,
    VersionConflict,
)
from tests.mongo_double import MongoDouble

ALL = AccessFilter()
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def _clock() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield (BASE + timedelta(milliseconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def mock_client() -> MongoDouble:
    return MongoDouble()


@pytest.fixture
def database() -> str:
    return f"fhir_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def mongo(mock_client: MongoDouble, database: str) -> AsyncIterator[MongoStorage]:
    storage = MongoStorage.from_client(mock_client, database)
    await storage.open()
    yield storage
    await storage.close()


@pytest.fixture
def now() -> Iterator[str]:
    return _clock()


def version(
    type: str, id: str, number: int, when: str, *, deleted: bool = False
) -> ResourceVersion:
    body = None if deleted else f'{{"resourceType":"{type}","id":"{id}","v":{number}}}'.encode()
    method = "DELETE" if deleted else ("POST" if number == 1 else "PUT")
    return ResourceVersion(type, id, number, when, method, body)


def token(code: str, system: str | None = "urn:sys") -> list[TokenIndex]:
    return [TokenIndex("identifier", system, code)]


async def put(
    storage: MongoStorage, v: ResourceVersion, index: list[TokenIndex] | None = None
) -> None:
    async with storage.unit_of_work() as unit:
        await unit.put(v, index or [])


# --- basics -----------------------------------------------------------------------------------


async def test_open_is_idempotent_and_uses_fallback_on_mongomock(mongo: MongoStorage) -> None:
    await mongo.open()
    assert mongo.name == "mongo"
    assert mongo.transactions is False


async def test_round_trip(mongo: MongoStorage, now: Iterator[str]) -> None:
    v1, v2 = version("Patient", "p1", 1, next(now)), version("Patient", "p1", 2, next(now))
    v3 = version("Patient", "p1", 3, next(now), deleted=True)
    for v in (v1, v2, v3):
        await put(mongo, v, token("a"))

    assert await mongo.read("Patient", "p1", ALL) == v3
    assert await mongo.vread("Patient", "p1", 1, ALL) == v1
    got = await mongo.vread("Patient", "p1", 2, ALL)
    assert got == v2 and isinstance(got.json, bytes)
    assert await mongo.vread("Patient", "p1", 4, ALL) is None
    assert await mongo.read("Patient", "nope", ALL) is None

    page = await mongo.history(HistoryQuery(type="Patient", id="p1"), ALL)
    assert page.items == [v3, v2, v1] and page.total == 3 and not page.has_more
    # A deleted resource is not searchable and keeps no index values.
    assert (await mongo.search(SearchQuery("Patient"), ALL)).items == []
    current = await mongo.resources_col.find_one({"_id": "Patient/p1"})
    assert current["deleted"] is True and current["idx"] == [] and current["json"] is None


async def test_version_conflict_on_existing_version(
    mongo: MongoStorage, now: Iterator[str]
) -> None:
    await put(mongo, version("Patient", "p1", 1, next(now)))
    with pytest.raises(VersionConflict):
        await put(mongo, version("Patient", "p1", 1, next(now)))
    async with mongo.unit_of_work() as unit:
        await unit.put(version("Patient", "p1", 2, next(now)), [])
        with pytest.raises(VersionConflict):  # twice in one unit of work
            await unit.put(version("Patient", "p1", 2, next(now)), [])
    assert (await mongo.read("Patient", "p1", ALL)).version == 2


async def test_racing_writers_one_wins_at_commit(mongo: MongoStorage, now: Iterator[str]) -> None:
    """Both buffer version 1 (no conflict visible yet); the second commit must fail, and
    before writing anything (its other resource stays unwritten)."""
    first, second = version("Patient", "p1", 1, next(now)), version("Patient", "p1", 1, next(now))
    other = version("Patient", "p2", 1, next(now))
    scope_a, scope_b = mongo.unit_of_work(), mongo.unit_of_work()
    a, b = await scope_a.__aenter__(), await scope_b.__aenter__()
    await a.put(first, [])
    await b.put(other, [])
    await b.put(second, [])  # a has not committed: nothing to see yet
    await scope_a.__aexit__(None, None, None)
    with pytest.raises(VersionConflict):
        await scope_b.__aexit__(None, None, None)
    assert await mongo.read("Patient", "p1", ALL) == first
    assert await mongo.read("Patient", "p2", ALL) is None
    assert await mongo.history_col.count_documents({}) == 1


# --- units of work ----------------------------------------------------------------------------


async def test_rollback_leaves_nothing(mongo: MongoStorage, now: Iterator[str]) -> None:
    with pytest.raises(RuntimeError):
        async with mongo.unit_of_work() as unit:
            await unit.lock("Patient?identifier=urn:sys|a")
            await unit.put(version("Patient", "p1", 1, next(now)), token("a"))
            await unit.put(version("Observation", "o1", 1, next(now)), [])
            raise RuntimeError("boom")
    assert await mongo.history_col.count_documents({}) == 0
    assert await mongo.resources_col.count_documents({}) == 0
    assert await mongo.locks_col.count_documents({}) == 0
    assert await mongo.read("Patient", "p1", ALL) is None


async def test_buffered_writes_are_visible_inside_the_unit(
    mongo: MongoStorage, now: Iterator[str]
) -> None:
    await put(mongo, version("Patient", "old", 1, next(now)), token("a"))
    await put(mongo, version("Patient", "gone", 1, next(now)), token("a"))
    query = SearchQuery("Patient", where=(TokenMatch("identifier", "urn:sys", "a"),))

    async with mongo.unit_of_work() as unit:
        new = version("Patient", "new", 1, next(now))
        await unit.put(new, token("a"))
        assert await unit.current("Patient", "new") == new
        assert await mongo.read("Patient", "new", ALL) is None  # not committed yet
        await unit.put(version("Patient", "gone", 2, next(now), deleted=True), [])
        assert (await unit.current("Patient", "gone")).deleted
        changed = version("Patient", "old", 2, next(now))
        await unit.put(changed, token("b"))  # no longer matches
        assert [v.id for v in await unit.find(query, ALL)] == ["new"]
        other = SearchQuery("Patient", where=(TokenMatch("identifier", None, "b"),))
        assert await unit.find(other, ALL) == [changed]

    assert [v.id for v in (await mongo.search(query, ALL)).items] == ["new"]


async def test_unit_of_work_cannot_be_used_after_it_ended(
    mongo: MongoStorage, now: Iterator[str]
) -> None:
    async with mongo.unit_of_work() as unit:
        pass
    with pytest.raises(Exception, match="ended"):
        await unit.put(version("Patient", "p1", 1, next(now)), [])


# --- locks ------------------------------------------------------------------------------------


async def _create_if_absent(storage: MongoStorage, code: str, when: str, *, lock: bool) -> None:
    query = SearchQuery("Patient", where=(TokenMatch("identifier", "urn:sys", code),))
    async with storage.unit_of_work() as unit:
        if lock:
            await unit.lock(f"Patient?identifier=urn:sys|{code}")
        found = await unit.find(query, ALL)
        await asyncio.sleep(0)  # let every other task run its find, as a slow request would
        if not found:
            await unit.put(version("Patient", uuid.uuid4().hex, 1, when), token(code))


async def test_concurrent_conditional_creates_serialise(
    mock_client: MongoDouble, database: str, now: Iterator[str]
) -> None:
    """20 tasks on two storage objects (two "processes": separate in-process locks, shared
    leases) make exactly one resource; without the lock they make many."""
    a, b = (
        MongoStorage.from_client(mock_client, database),
        MongoStorage.from_client(mock_client, database),
    )
    await a.open()
    await b.open()
    await asyncio.gather(
        *(_create_if_absent(a if i % 2 else b, "x", next(now), lock=True) for i in range(20))
    )
    assert await a.resources_col.count_documents({"type": "Patient"}) == 1
    assert await a.locks_col.count_documents({}) == 0

    await asyncio.gather(*(_create_if_absent(a, "y", next(now), lock=False) for _ in range(5)))
    query = SearchQuery("Patient", where=(TokenMatch("identifier", None, "y"),))
    assert (await a.search(query, ALL)).total == 5  # the test would notice a missing lock


async def test_lease_blocks_other_process_until_released(
    mock_client: MongoDouble, database: str
) -> None:
    a = MongoStorage.from_client(mock_client, database)
    b = MongoStorage.from_client(mock_client, database, lock_timeout=0.1)
    await a.open()
    await b.open()
    async with a.unit_of_work() as holder:
        await holder.lock("k")
        await holder.lock("k")  # reentrant
        with pytest.raises(LockTimeout):
            async with b.unit_of_work() as waiter:
                await waiter.lock("k")
        async with b.unit_of_work() as other:
            await other.lock("another key")
    async with b.unit_of_work() as waiter:
        await waiter.lock("k")


async def test_in_process_lock_times_out(mongo: MongoStorage) -> None:
    mongo.lock_timeout = 0.05
    async with mongo.unit_of_work() as holder:
        await holder.lock("k")
        with pytest.raises(LockTimeout):
            async with mongo.unit_of_work() as waiter:
                await waiter.lock("k")
    assert mongo.key_locks._entries == {}


async def test_expired_lease_of_a_dead_holder_is_taken_over(
    mock_client: MongoDouble, database: str
) -> None:
    dead = MongoStorage.from_client(mock_client, database)
    await dead.open()
    await acquire_lease(dead.locks_col, "k", "dead-owner", lease_seconds=0.05, timeout=1)
    alive = MongoStorage.from_client(mock_client, database, lock_timeout=2)
    async with alive.unit_of_work() as unit:
        await unit.lock("k")
        lease = await alive.locks_col.find_one({})
        assert lease["owner"] != "dead-owner"


# --- fallback commit repair -------------------------------------------------------------------


async def test_crash_between_history_and_current_is_repaired(
    mongo: MongoStorage, now: Iterator[str]
) -> None:
    await put(mongo, version("Patient", "p1", 1, next(now)), token("a"))
    orphan = version("Patient", "p1", 2, next(now))
    await mongo.history_col.insert_one(
        history_document(orphan)
    )  # crashed before the current update

    assert await mongo.read("Patient", "p1", ALL) == orphan
    async with mongo.unit_of_work() as unit:
        assert await unit.current("Patient", "p1") == orphan
        await unit.put(version("Patient", "p1", 3, next(now)), token("c"))
    current = await mongo.resources_col.find_one({"_id": "Patient/p1"})
    assert current["version"] == 3 and current["idx"][0]["c"] == "c"


# --- history paging ---------------------------------------------------------------------------


async def test_history_keyset_paging_is_stable_under_writes(
    mongo: MongoStorage, now: Iterator[str]
) -> None:
    ids = ["a", "b", "c"]
    for n in range(1, 4):
        for id in ids:
            await put(mongo, version("Patient", id, n, next(now)))
    await put(mongo, version("Observation", "o", 1, next(now)))
    expected = {(v["type"], v["id"], v["version"]) async for v in mongo.history_col.find({})}

    seen: list[tuple[str, str, int]] = []
    cursor: HistoryCursor | None = None
    next_version = 4
    totals = []
    while True:
        page = await mongo.history(HistoryQuery(count=4, before=cursor), ALL)
        totals.append(page.total)
        seen += [(v.type, v.id, v.version) for v in page.items]
        for id in ids:  # newer versions arrive between page fetches
            await put(mongo, version("Patient", id, next_version, next(now)))
        next_version += 1
        if not page.has_more:
            break
        last = page.items[-1]
        cursor = HistoryCursor(last.last_updated, last.type, last.id, last.version)

    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert totals[0] == 10 and totals[1] == 13  # total ignores the cursor


async def test_history_order_and_since(mongo: MongoStorage) -> None:
    same = "2024-01-01T00:00:00.000000Z"
    for type, id in [("A", "1"), ("B", "1"), ("B", "2")]:
        await put(mongo, version(type, id, 1, same))
    await put(mongo, version("A", "1", 2, "2024-01-01T00:00:01.000000Z"))
    page = await mongo.history(HistoryQuery(), ALL)
    assert [(v.type, v.id, v.version) for v in page.items] == [
        ("A", "1", 2),
        ("B", "2", 1),
        ("B", "1", 1),
        ("A", "1", 1),
    ]
    since = await mongo.history(HistoryQuery(since="2024-01-01T00:00:01.000000Z"), ALL)
    assert since.total == 1 and len(since.items) == 1
    typed = await mongo.history(HistoryQuery(type="B", count=1), ALL)
    assert typed.total == 2 and typed.has_more and typed.items[0].id == "2"


# --- search and access ------------------------------------------------------------------------


async def test_search_paging(mongo: MongoStorage, now: Iterator[str]) -> None:
    for id in ["e", "a", "d", "c", "b"]:
        await put(mongo, version("Patient", id, 1, next(now)))
    page = await mongo.search(SearchQuery("Patient", count=2, after="a"), ALL)
    assert [v.id for v in page.items] == ["b", "c"] and page.total == 5 and page.has_more
    last = await mongo.search(SearchQuery("Patient", count=2, after="c", total=False), ALL)
    assert [v.id for v in last.items] == ["d", "e"] and last.total is None and not last.has_more
    counted = await mongo.search(SearchQuery("Patient", count=0), ALL)
    assert counted.items == [] and counted.total == 5 and counted.has_more


async def test_access_filter_hides_types(mongo: MongoStorage, now: Iterator[str]) -> None:
    await put(mongo, version("Patient", "p", 1, next(now)))
    await put(mongo, version("Observation", "o", 1, next(now)))
    only_obs = AccessFilter(frozenset({"Observation"}))
    assert await mongo.read("Patient", "p", only_obs) is None
    assert await mongo.vread("Patient", "p", 1, only_obs) is None
    assert (await mongo.read("Observation", "o", only_obs)) is not None
    page = await mongo.search(SearchQuery("Patient"), only_obs)
    assert page.items == [] and page.total == 0
    system = await mongo.history(HistoryQuery(), only_obs)
    assert [v.type for v in system.items] == ["Observation"] and system.total == 1
    assert (await mongo.history(HistoryQuery(type="Patient"), only_obs)).total == 0
    async with mongo.unit_of_work() as unit:
        assert await unit.find(SearchQuery("Patient"), only_obs) == []


# --- compiler ---------------------------------------------------------------------------------

FIXED_KEYS = {"$and", "$or", "$in", "$elemMatch", "id", "idx", "k", "p", "s", "c"}
HOSTILE = ['{"$where": "1"}', "$gt", "$where", "$ne", "a.b", "$or", "", "{}"]


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in _keys(value)}
    if isinstance(node, list):
        return {k for value in node for k in _keys(value)}
    return set()


def _values(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [v for value in node.values() for v in _values(value)]
    if isinstance(node, list):
        return [v for value in node for v in _values(value)]
    return [node]


def test_compiler_shapes() -> None:
    assert compile_where([]) == {}
    assert compile_where([IdIn(("a", "b"))]) == {"$and": [{"id": {"$in": ["a", "b"]}}]}
    where = [
        AnyOf(
            (
                TokenMatch("code", None, "x"),
                TokenMatch("code", "", "x"),
                TokenMatch("code", "urn:s", None),
            )
        )
    ]
    assert compile_where(where) == {
        "$and": [
            {
                "$or": [
                    {"idx": {"$elemMatch": {"k": "t", "p": "code", "c": "x"}}},
                    {"idx": {"$elemMatch": {"k": "t", "p": "code", "s": None, "c": "x"}}},
                    {"idx": {"$elemMatch": {"k": "t", "p": "code", "s": "urn:s"}}},
                ]
            }
        ]
    }
    assert compile_where([AnyOf(())]) == {"$and": [{"id": {"$in": []}}]}


@pytest.mark.parametrize("text", HOSTILE)
def test_compiler_keeps_user_text_as_values(text: str) -> None:
    where = [
        IdIn((text,)),
        AnyOf((TokenMatch(text, text, text), TokenMatch("code", "", text))),
        TokenMatch("code", text, None),
    ]
    compiled = compile_where(where)
    assert _keys(compiled) <= FIXED_KEYS
    assert all(v is None or isinstance(v, str) for v in _values(compiled))


@pytest.mark.parametrize(
    "bad",
    [
        TokenMatch("code", None, {"$gt": ""}),  # type: ignore[arg-type]
        TokenMatch("code", ["x"], "a"),  # type: ignore[arg-type]
        IdIn(({"$ne": None},)),  # type: ignore[arg-type]
        TokenMatch(1, None, "a"),  # type: ignore[arg-type]
    ],
)
def test_compiler_rejects_non_string_values(bad: Condition) -> None:
    with pytest.raises(TypeError):
        compile_where([bad])


async def test_hostile_values_match_only_literally(mongo: MongoStorage, now: Iterator[str]) -> None:
    await put(mongo, version("Patient", "plain", 1, next(now)), token("a"))
    await put(mongo, version("Patient", "weird", 1, next(now)), token("$gt", "$where"))
    for text in HOSTILE:
        query = SearchQuery("Patient", where=(TokenMatch("identifier", text, text),))
        page = await mongo.search(query, ALL)
        assert page.items == [] and page.total == 0
    hit = SearchQuery("Patient", where=(TokenMatch("identifier", "$where", "$gt"),))
    assert [v.id for v in (await mongo.search(hit, ALL)).items] == ["weird"]


QUERIES: list[tuple[Condition, ...]] = [
    (),
    (IdIn(("p1", "p3")),),
    (TokenMatch("identifier", None, "a"),),
    (TokenMatch("identifier", "", "a"),),
    (TokenMatch("identifier", "urn:sys", None),),
    (TokenMatch("identifier", "urn:other", "a"),),
    (AnyOf((TokenMatch("identifier", None, "b"), IdIn(("p1",)))),),
    (IdIn(("p1", "p2")), TokenMatch("identifier", "urn:sys", "a")),
    (AnyOf(()),),
]


@pytest.mark.parametrize("where", QUERIES)
async def test_in_memory_matching_agrees_with_the_database(
    mongo: MongoStorage, now: Iterator[str], where: tuple[Condition, ...]
) -> None:
    """The unit of work's overlay (`matches`) must select what the compiled filter selects."""
    fixtures = {
        "p1": token("a"),
        "p2": token("a", None),
        "p3": [*token("b"), *token("a", "urn:other")],
        "p4": [],
    }
    for id, index in fixtures.items():
        await put(mongo, version("Patient", id, 1, next(now)), index)
    in_db = {v.id for v in (await mongo.search(SearchQuery("Patient", where), ALL)).items}
    in_memory = {id for id, index in fixtures.items() if matches(where, id, index)}
    assert in_db == in_memory
